'use strict'
// npm run bench:trace [-- --size 4096] [-- --reps 3]
//
// Where one message's latency goes, step by step. Builds an instrumented copy of HEAD
// (latency.patch: a mark in CLOCK_MONOTONIC nanoseconds at each step, in lib/, in Rust and in the
// vendored rumqttc), runs the bench's paced case with it (3,000 QoS 0 messages at 1,000/s) against
// the bench's broker, and prints the median of each step per run. The copy is a git worktree in a
// temporary directory, removed afterwards; its build goes to target/trace. Uncommitted changes are
// not in it, and latency.patch must still apply to HEAD.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync, spawnSync } = require('node:child_process')
const { ensureMosquitto, startBroker } = require('../mosquitto')
const { stepTable } = require('./steps')

const ROOT = path.join(__dirname, '..', '..')

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : fallback
}

function instrumentedCopy() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-trace-'))
  execFileSync('git', ['worktree', 'add', '--detach', dir, 'HEAD'], { cwd: ROOT, stdio: 'ignore' })
  return dir
}

async function main() {
  const size = option('size', 64)
  const reps = option('reps', 3)
  const { bin } = await ensureMosquitto()
  const dir = instrumentedCopy()
  try {
    execFileSync('git', ['apply', path.join(__dirname, 'latency.patch')], { cwd: dir, stdio: 'inherit' })
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'))
    console.log('building the instrumented addon (target/trace)…')
    execFileSync('npm', ['run', '--silent', 'build'], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, CARGO_TARGET_DIR: path.join(ROOT, 'target', 'trace') },
    })
    const traces = []
    for (let rep = 1; rep <= reps; rep++) {
      const broker = await startBroker(bin)
      const out = path.join(dir, `trace-${rep}.json`)
      try {
        const spec = { url: broker.wsUrl, qos: 0, size, n: 3000, mode: 'paced' }
        const run = spawnSync(process.execPath, ['-r', path.join(__dirname, 'mark.js'), 'bench/clients/native.js', JSON.stringify(spec)], {
          cwd: dir,
          env: { ...process.env, TRACE_OUT: out },
          encoding: 'utf8',
        })
        if (run.status !== 0) throw new Error(`the paced run failed: ${run.stderr}`)
        console.log(`run ${rep}: p50 ${JSON.parse(run.stdout).p50Ms} ms (with the marks)`)
      } finally {
        await broker.stop()
      }
      traces.push(JSON.parse(fs.readFileSync(out, 'utf8')))
    }
    console.log(`\nQoS 0, ${size} B, paced at 1,000/s: medians per step\n`)
    console.log(stepTable(traces))
  } finally {
    execFileSync('git', ['worktree', 'remove', '--force', dir], { cwd: ROOT, stdio: 'ignore' })
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error)
  process.exit(1)
})
