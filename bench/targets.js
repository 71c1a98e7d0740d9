'use strict'
// Issue 5's targets, judged on one run's medians, so that each run says for itself which it met
// (the README's targets table gathers them over runs).

const times = (x) => `${x.toFixed(2)}×`
const percent = (x) => `${(x * 100).toFixed(1)} %`
const ms = (x) => `${x.toFixed(3)} ms`
const mb = (x) => `${x.toFixed(1)} MB`

/**
 * `summary`: run.js's summary (per case id, per client: medians; `ratios` per case). `cases`:
 * the cases that ran. Returns `[{ target, figures, met }]`; `met` is null where the run lacks
 * what the target needs (a case or client left out) or is not the run the issue describes
 * (`--quick` sends a tenth of the messages).
 */
function judgeTargets(summary, cases, { quick = false } = {}) {
  const ran = new Set(cases.map((c) => c.id))
  const ratio = (key) => (id) => summary[id]?.ratios?.[key] ?? null
  const ours = (field) => (id) => summary[id]?.ours?.[field]?.median ?? null
  const judge = (target, ids, value, format, pass) => {
    const values = ids.map((id) => [id, ran.has(id) ? value(id) : null])
    if (quick || values.length === 0 || values.some(([, v]) => v === null)) {
      return { target, figures: quick ? 'a --quick run sends a tenth of the messages' : 'not measured in this run', met: null }
    }
    return { target, figures: values.map(([id, v]) => `${id} ${format(v)}`).join(', '), met: values.every(([, v]) => pass(v)) }
  }
  return [
    judge('delivered ≥ 5× MQTT.js at QoS 0 64 B', ['qos0-64'], ratio('oursOverMqttJs'), times, (v) => v >= 5),
    judge('delivered ≥ 2× MQTT.js at QoS 0 4 KiB and at QoS 1', ['qos0-4k', 'qos1-64', 'qos1-4k'], ratio('oursOverMqttJs'), times, (v) => v >= 2),
    judge('delivered ≥ 90 % of the Rust ceiling in every case', ['qos0-64', 'qos0-4k', 'qos1-64', 'qos1-4k'], ratio('oursOverCeiling'), percent, (v) => v >= 0.9),
    judge('p50 of the paced runs ≤ 0.3 ms', ['paced-64', 'paced-4k'], ours('p50Ms'), ms, (v) => v <= 0.3),
    judge('RSS once connected ≤ 45 MB', [...ran], ours('rssConnectedMB'), mb, (v) => v <= 45),
    judge('peak RSS of the 50,000 × 4 KiB burst ≤ 150 MB', ['qos0-4k'], ours('rssPeakMB'), mb, (v) => v <= 150),
  ]
}

/** The verdicts as lines for the terminal. */
function targetLines(verdicts) {
  const word = (met) => (met === null ? 'not judged' : met ? 'met' : 'MISSED')
  return ["Issue 5's targets, on this run's medians:", ...verdicts.map((v) => `- ${word(v.met)}: ${v.target} (${v.figures})`)]
}

module.exports = { judgeTargets, targetLines }
