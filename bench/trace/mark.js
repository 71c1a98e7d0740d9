'use strict'
// Preloaded (`node -r`) into a paced run of the instrumented build: the JS side's step marks,
// in the clock Rust's use (CLOCK_MONOTONIC, via process.hrtime), and at exit both sides' marks
// written to $TRACE_OUT as { js: [step, ns, …], rust: [step, ns, …] }.

const fs = require('node:fs')
const path = require('node:path')

const marks = new Float64Array(2_000_000)
let length = 0
globalThis.__mark = (step) => {
  if (length < marks.length) {
    marks[length++] = step
    marks[length++] = Number(process.hrtime.bigint())
  }
}

const exit = process.exit
process.exit = (code) => {
  // The bench client's working directory is the instrumented worktree.
  const { traceTake } = require(path.join(process.cwd(), 'binding.js'))
  fs.writeFileSync(process.env.TRACE_OUT, JSON.stringify({ js: Array.from(marks.subarray(0, length)), rust: traceTake() }))
  exit(code)
}
