'use strict'
// The median time of each step of a message's path, from the marks that bench/trace/mark.js
// wrote. Only messages whose path did not overlap the next publish count. The path forks: the
// first publish of a tick is handed over inside publish(), and tokio may take and write it on the
// other core while JS is still in publishBatch, so the tokio steps count from publishBatch's
// entry rather than from JS's return.

/** The steps in order: the mark latency.patch sets, where, and the step it counts from (the one before it unless named). */
const STEPS = [
  [20, 'publish() called', 'JS'],
  [30, 'message encoded', 'JS'],
  [33, 'queued in a segment, hand-over starts', 'JS'],
  [34, "publishBatch's arguments built", 'JS'],
  [1, 'publishBatch entered (Rust)', 'JS'],
  [2, 'publishBatch done (Rust)', 'JS'],
  [35, 'back in JS', 'JS'],
  [3, 'rumqttc takes the request (from the entry)', 'tokio', 1],
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

/** Per step, the index of the step it counts from. */
const FROM = STEPS.map(([, , , after], s) => (after === undefined ? s - 1 : STEPS.findIndex(([mark]) => mark === after)))

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

/** Per step (from the one it counts from), the median in µs over the messages of one trace file. */
function stepMedians({ js, rust }) {
  const marks = []
  for (const list of [js, rust]) for (let i = 0; i < list.length; i += 2) marks.push([list[i], list[i + 1]])
  marks.sort((a, b) => a[1] - b[1])
  const durations = STEPS.map(() => [])
  const totals = []
  // The first few messages warm up.
  const starts = marks.flatMap((mark, i) => (mark[0] === 20 ? [i] : [])).slice(5)
  starts.push(marks.length)
  for (let m = 0; m + 1 < starts.length; m++) {
    const [start, next] = [starts[m], starts[m + 1]]
    // Where each step's mark is: its first one after the step it counts from, before the next publish.
    const at = [start]
    for (let s = 1; s < STEPS.length; s++) {
      let i = at[FROM[s]] + 1
      while (i < next && marks[i][0] !== STEPS[s][0]) i++
      if (i === next) break
      at.push(i)
    }
    if (at.length < STEPS.length) continue
    for (let s = 1; s < STEPS.length; s++) durations[s].push((marks[at[s]][1] - marks[at[FROM[s]]][1]) / 1000)
    totals.push((marks[at[STEPS.length - 1]][1] - marks[start][1]) / 1000)
  }
  return { count: totals.length, steps: durations.slice(1).map(median), total: median(totals) }
}

/** The table for several runs, one column per run. */
function stepTable(traces) {
  const runs = traces.map(stepMedians)
  const lines = [`${'step (µs since the previous one)'.padEnd(46)}${'marked on'.padEnd(10)}${runs.map((_, i) => `run ${i + 1}`.padStart(9)).join('')}`]
  for (let s = 1; s < STEPS.length; s++) {
    lines.push(`${STEPS[s][1].padEnd(46)}${STEPS[s][2].padEnd(10)}${runs.map((r) => r.steps[s - 1].toFixed(1).padStart(9)).join('')}`)
  }
  lines.push(`${'total, publish() to the callback returning'.padEnd(56)}${runs.map((r) => r.total.toFixed(1).padStart(9)).join('')}`)
  lines.push(`${'messages counted'.padEnd(56)}${runs.map((r) => String(r.count).padStart(9)).join('')}`)
  return lines.join('\n')
}

module.exports = { stepTable }
