'use strict'
// The median time of each step of a message's path, from the marks that bench/trace/mark.js
// wrote. Only messages whose path did not overlap the next publish count.

/** The steps in order: the mark latency.patch sets, and where. */
const STEPS = [
  [20, 'publish() called', 'JS'],
  [30, 'message encoded', 'JS'],
  [31, 'queued in a segment', 'JS'],
  [32, 'publish() returns', 'JS'],
  [33, 'segment hand-over (microtask)', 'JS'],
  [34, "publishBatch's arguments built", 'JS'],
  [1, 'publishBatch entered (Rust)', 'JS'],
  [2, 'publishBatch done (Rust)', 'JS'],
  [35, 'back in JS', 'JS'],
  [3, 'rumqttc takes the request', 'tokio'],
  [4, 'written and flushed', 'tokio'],
  [5, 'subscriber reads the message', 'tokio'],
  [6, 'ThreadsafeFunction called', 'tokio'],
  [8, 'JS thread: packing starts', 'JS'],
  [10, 'packing done', 'JS'],
  [21, 'JS callback entered', 'JS'],
  [23, 'observer called', 'JS'],
  [24, 'observer returned', 'JS'],
  [25, 'JS callback returns', 'JS'],
]

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

/** Per step (from the previous one), the median in µs over the messages of one trace file. */
function stepMedians({ js, rust }) {
  const marks = []
  for (const list of [js, rust]) for (let i = 0; i < list.length; i += 2) marks.push([list[i], list[i + 1]])
  marks.sort((a, b) => a[1] - b[1])
  const durations = STEPS.map(() => [])
  const totals = []
  // The first few messages warm up.
  const starts = marks.flatMap((mark, i) => (mark[0] === 20 ? [i] : [])).slice(5)
  for (const start of starts) {
    let i = start
    const times = [marks[start][1]]
    for (const [step] of STEPS.slice(1)) {
      while (i < marks.length && marks[i][0] !== step) i++
      if (i === marks.length) break
      times.push(marks[i][1])
    }
    if (times.length < STEPS.length) continue
    if (marks.slice(start + 1, i).some((mark) => mark[0] === 20)) continue
    for (let s = 1; s < STEPS.length; s++) durations[s].push((times[s] - times[s - 1]) / 1000)
    totals.push((times[times.length - 1] - times[0]) / 1000)
  }
  return { count: totals.length, steps: durations.slice(1).map(median), total: median(totals) }
}

/** The table for several runs, one column per run. */
function stepTable(traces) {
  const runs = traces.map(stepMedians)
  const lines = [`${'step (µs since the previous mark)'.padEnd(46)}${'marked on'.padEnd(10)}${runs.map((_, i) => `run ${i + 1}`.padStart(9)).join('')}`]
  for (let s = 1; s < STEPS.length; s++) {
    lines.push(`${STEPS[s][1].padEnd(46)}${STEPS[s][2].padEnd(10)}${runs.map((r) => r.steps[s - 1].toFixed(1).padStart(9)).join('')}`)
  }
  lines.push(`${'total, publish() to the callback returning'.padEnd(56)}${runs.map((r) => r.total.toFixed(1).padStart(9)).join('')}`)
  lines.push(`${'messages counted'.padEnd(56)}${runs.map((r) => String(r.count).padStart(9)).join('')}`)
  return lines.join('\n')
}

module.exports = { stepTable }
