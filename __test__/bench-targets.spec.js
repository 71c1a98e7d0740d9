'use strict'
// `npm run bench` ends with issue 5's targets judged on the run's own medians (bench/targets.js).
const test = require('ava')
const { judgeTargets, targetLines } = require('../bench/targets.js')

const CASES = ['qos0-64', 'qos0-4k', 'qos1-64', 'qos1-4k', 'paced-64', 'paced-4k'].map((id) => ({ id }))

/** A summary as run.js makes it, with every target met unless `change` says otherwise. */
function summary(change = {}) {
  const s = {}
  for (const { id } of CASES) {
    const paced = id.startsWith('paced')
    s[id] = {
      ours: { rssConnectedMB: { median: 44 }, rssPeakMB: { median: 124 }, p50Ms: { median: paced ? 0.2 : null } },
      ratios: paced ? { oursOverMqttJs: null, oursOverCeiling: null } : { oursOverMqttJs: 4, oursOverCeiling: 1.0 },
    }
  }
  s['qos0-64'].ratios.oursOverMqttJs = 9
  for (const [id, patch] of Object.entries(change)) {
    Object.assign(s[id].ratios, patch.ratios)
    for (const [field, median] of Object.entries(patch.ours || {})) s[id].ours[field] = { median }
  }
  return s
}

const byTarget = (verdicts) => Object.fromEntries(verdicts.map((v) => [v.target, v]))

test('a run that meets every target says so for each of the six', (t) => {
  const verdicts = judgeTargets(summary(), CASES)
  t.is(verdicts.length, 6)
  t.deepEqual(
    verdicts.filter((v) => v.met !== true).map((v) => v.target),
    [],
  )
})

test('a case under 90 % of the ceiling misses that target only, and the figures name it', (t) => {
  const verdicts = byTarget(judgeTargets(summary({ 'qos0-4k': { ratios: { oursOverCeiling: 0.899 } } }), CASES))
  const ceiling = verdicts['delivered ≥ 90 % of the Rust ceiling in every case']
  t.false(ceiling.met)
  t.regex(ceiling.figures, /qos0-4k 89\.9 %/)
  t.is(Object.values(verdicts).filter((v) => v.met === false).length, 1)
  t.true(judgeTargets(summary({ 'qos0-4k': { ratios: { oursOverCeiling: 0.9 } } }), CASES).every((v) => v.met), 'exactly 90 % is met')
})

test('each bound is judged: MQTT.js ratios, paced p50, RSS once connected, the 4 KiB peak', (t) => {
  const missed = (change) =>
    judgeTargets(summary(change), CASES)
      .filter((v) => v.met === false)
      .map((v) => v.target)
  t.deepEqual(missed({ 'qos0-64': { ratios: { oursOverMqttJs: 4.99 } } }), ['delivered ≥ 5× MQTT.js at QoS 0 64 B'])
  t.deepEqual(missed({ 'qos1-4k': { ratios: { oursOverMqttJs: 1.99 } } }), ['delivered ≥ 2× MQTT.js at QoS 0 4 KiB and at QoS 1'])
  t.deepEqual(missed({ 'paced-4k': { ours: { p50Ms: 0.301 } } }), ['p50 of the paced runs ≤ 0.3 ms'])
  t.deepEqual(missed({ 'paced-64': { ours: { p50Ms: 0.3 } } }), [])
  t.deepEqual(missed({ 'qos1-64': { ours: { rssConnectedMB: 45.1 } } }), ['RSS once connected ≤ 45 MB'])
  t.deepEqual(missed({ 'qos0-4k': { ours: { rssPeakMB: 150.1 } } }), ['peak RSS of the 50,000 × 4 KiB burst ≤ 150 MB'])
})

test('targets whose cases or clients did not run, and a --quick run, are not judged', (t) => {
  const some = byTarget(judgeTargets(summary(), CASES.slice(0, 2)))
  t.is(some['delivered ≥ 5× MQTT.js at QoS 0 64 B'].met, true)
  t.is(some['delivered ≥ 90 % of the Rust ceiling in every case'].met, null)
  t.is(some['p50 of the paced runs ≤ 0.3 ms'].met, null)
  // Without MQTT.js (--clients ours,'rust ceiling') its ratio is null.
  const withoutMqttJs = summary()
  for (const { id } of CASES) withoutMqttJs[id].ratios.oursOverMqttJs = null
  t.is(byTarget(judgeTargets(withoutMqttJs, CASES))['delivered ≥ 5× MQTT.js at QoS 0 64 B'].met, null)
  const quick = judgeTargets(summary(), CASES, { quick: true })
  t.true(quick.every((v) => v.met === null && /--quick/.test(v.figures)))
  t.regex(targetLines(quick).join('\n'), /not judged: delivered ≥ 5×/)
})
