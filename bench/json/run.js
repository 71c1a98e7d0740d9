'use strict'
// JSON micro-benchmark: V8's JSON.parse / JSON.stringify against serde_json + napi-rs object
// building, for the product's message shapes. See README.md.
//
//   node bench/json/run.js [--runs=7] [--ms=200]
//
// One thread, one variant at a time. Builds bench/json/native (cargo build --release) when its
// .node is missing or older than its sources.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { isStale } = require('../stale')
const assert = require('node:assert')
const { performance } = require('node:perf_hooks')

const HERE = __dirname
const NATIVE_DIR = path.join(HERE, 'native')
const NATIVE_NODE = path.join(NATIVE_DIR, 'bench_json.node')
const RESULTS = path.join(HERE, 'results.json')

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const m = a.match(/^--(\w+)=(\d+)$/)
    if (!m) throw new Error(`unknown argument ${a}; usage: node bench/json/run.js [--runs=7] [--ms=200]`)
    return [m[1], Number(m[2])]
  }),
)
const RUNS = args.runs || 7
const RUN_MS = args.ms || 200

const log = (...a) => console.error(...a)

// --- build ---------------------------------------------------------------------------------

function ensureNative() {
  const sources = ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs'].map((f) => path.join(NATIVE_DIR, f))
  if (!isStale(NATIVE_NODE, sources)) return
  log('building bench/json/native (cargo build --release --manifest-path bench/json/native/Cargo.toml)...')
  const started = Date.now()
  const target = path.join(NATIVE_DIR, 'target')
  const result = spawnSync('cargo', ['build', '--release', '--manifest-path', path.join(NATIVE_DIR, 'Cargo.toml')], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: target },
  })
  if (result.status !== 0) throw new Error(`building bench/json/native failed (exit ${result.status})`)
  const lib = { linux: 'libbench_json.so', darwin: 'libbench_json.dylib', win32: 'bench_json.dll' }[process.platform]
  fs.copyFileSync(path.join(target, 'release', lib), NATIVE_NODE) // a fresh mtime
  log(`built in ${((Date.now() - started) / 1000).toFixed(1)} s`)
}

// --- messages ------------------------------------------------------------------------------

const now = () => performance.timeOrigin + performance.now()
const K = 256 // distinct messages per shape, cycled through (seq and t differ, as in a stream)

/** bench/clients/common.js padFor: a pad that makes JSON.stringify({ seq, t, pad }) ~size bytes. */
function padFor(size, n) {
  const base = JSON.stringify({ seq: n, t: now(), pad: '' }).length
  return 'x'.repeat(Math.max(0, size - base))
}

function benchMessages(size) {
  const pad = padFor(size, 1000) // as the clients: one pad for the run, sized at a typical seq
  return Array.from({ length: K }, (_, i) => ({ seq: 1000 + i, t: now() + i * 0.137, pad }))
}

/** A device-shadow-like document: numbers, booleans, strings, nested objects, arrays. */
function iotMessages() {
  return Array.from({ length: K }, (_, i) => ({
    state: {
      reported: {
        temperature: 21.5 + (i % 40) / 10,
        humidity: 40 + (i % 17) * 0.5,
        battery: 100 - (i % 60),
        online: i % 7 !== 0,
        firmware: '2.4.1',
        location: { lat: 52.52 + i / 1e4, lon: 13.405 - i / 1e4 },
        relays: [i % 2 === 0, i % 3 === 0, false, true],
        readings: [20.1 + i / 100, 20.4, 20.9, 21.2],
      },
      desired: { interval: 30, mode: 'eco' },
    },
    version: 4000 + i,
    timestamp: 1717000000 + i,
    deviceId: `sensor-${String(i).padStart(4, '0')}`,
  }))
}

/** ~4 KB of many small fields (not one long string): a gateway's batch of 13 such documents. */
function iotBatchMessages() {
  const docs = iotMessages()
  return Array.from({ length: K }, (_, i) => ({
    gateway: 'gw-berlin-01',
    seq: i,
    items: Array.from({ length: 13 }, (_, k) => docs[(i + k) & (K - 1)]),
  }))
}

/** The messages' JSON one after another in one Buffer, as a delivered batch holds them. */
function batchOf(messages) {
  const texts = messages.map((m) => JSON.stringify(m))
  const buf = Buffer.alloc(texts.reduce((n, t) => n + Buffer.byteLength(t), 0) + 64)
  const starts = new Uint32Array(texts.length)
  const ends = new Uint32Array(texts.length)
  let at = 32 // not at the start: a slice of a larger buffer
  texts.forEach((t, i) => {
    starts[i] = at
    at += buf.write(t, at)
    ends[i] = at
  })
  return { buf, starts, ends, bytes: Buffer.byteLength(texts[0]) }
}

// --- variants: each its own loop (monomorphic call sites), each result kept ------------------

const keep = new Array(K).fill(null) // results stay reachable, so none of the work can be dropped

// Each variant is its own loop on purpose: one shared loop calling a function argument would
// make the call site polymorphic and time V8's dispatch instead of the JSON work.
function variants(native) {
  const rx = {
    'JS JSON.parse(buf.toString(utf8, start, end))': (iters, d) => {
      const { buf, starts, ends } = d
      let n = 0
      for (let i = 0; i < iters; i++) {
        const j = i & (K - 1)
        const o = JSON.parse(buf.toString('utf8', starts[j], ends[j]))
        keep[j] = o
        n += o === null ? 0 : 1
      }
      return n
    },
    'native serde_json::from_slice -> Value -> napi': (iters, d) => {
      const { buf, starts, ends } = d
      const parse = native.parseJson
      let n = 0
      for (let i = 0; i < iters; i++) {
        const j = i & (K - 1)
        const o = parse(buf, starts[j], ends[j])
        keep[j] = o
        n += o === null ? 0 : 1
      }
      return n
    },
    'native serde_json Visitor -> napi (no Value)': (iters, d) => {
      const { buf, starts, ends } = d
      const parse = native.parseJsonDirect
      let n = 0
      for (let i = 0; i < iters; i++) {
        const j = i & (K - 1)
        const o = parse(buf, starts[j], ends[j])
        keep[j] = o
        n += o === null ? 0 : 1
      }
      return n
    },
    '(floor) native call that only reads the Buffer': (iters, d) => {
      const { buf, starts, ends } = d
      const noop = native.noop
      let n = 0
      for (let i = 0; i < iters; i++) {
        const j = i & (K - 1)
        n += noop(buf, starts[j], ends[j])
      }
      return n
    },
  }
  const tx = {
    'JS buf.write(JSON.stringify(obj), offset)': (iters, d) => {
      const { objs, out, limit } = d
      let off = 0
      let n = 0
      for (let i = 0; i < iters; i++) {
        const w = out.write(JSON.stringify(objs[i & (K - 1)]), off)
        n += w
        off += w
        if (off > limit) off = 0
      }
      return n
    },
    'native napi -> Value -> serde_json::to_vec -> new Buffer': (iters, d) => {
      const { objs } = d
      const stringify = native.stringifyJson
      let n = 0
      for (let i = 0; i < iters; i++) {
        const j = i & (K - 1)
        const b = stringify(objs[j])
        keep[j] = b
        n += b.length
      }
      return n
    },
    'native napi -> Value -> serde_json::to_writer(buf, offset)': (iters, d) => {
      const { objs, out, limit } = d
      const into = native.stringifyJsonInto
      let off = 0
      let n = 0
      for (let i = 0; i < iters; i++) {
        const w = into(objs[i & (K - 1)], out, off)
        n += w
        off += w
        if (off > limit) off = 0
      }
      return n
    },
  }
  return { rx, tx }
}

// --- measuring -----------------------------------------------------------------------------

let checksum = 0

function timeRun(fn, data, iters) {
  const t0 = process.hrtime.bigint()
  checksum += fn(iters, data)
  const t1 = process.hrtime.bigint()
  return Number(t1 - t0)
}

/** Iterations for one run of about RUN_MS (this also warms the variant up). */
function calibrate(fn, data) {
  let iters = 64
  for (;;) {
    const ns = timeRun(fn, data, iters)
    if (ns >= 50e6) return Math.ceil((iters * RUN_MS * 1e6) / ns)
    iters *= ns < 5e6 ? 8 : 2
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** The variants of one group, runs interleaved (round-robin, rotating order) against drift. */
function measureGroup(group, data) {
  const names = Object.keys(group)
  const iters = {}
  for (const name of names) {
    iters[name] = calibrate(group[name], data)
    timeRun(group[name], data, iters[name]) // one full warm-up run
  }
  const samples = Object.fromEntries(names.map((n) => [n, []]))
  for (let r = 0; r < RUNS; r++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(r + k) % names.length]
      samples[name].push(timeRun(group[name], data, iters[name]) / iters[name])
    }
  }
  return names.map((name) => {
    const ns = samples[name]
    return { variant: name, nsPerOp: median(ns), min: Math.min(...ns), max: Math.max(...ns), runs: ns, itersPerRun: iters[name] }
  })
}

// --- checks: every variant gives the same values ---------------------------------------------

function check(native, shape, messages, batch) {
  let differs = null
  for (let j = 0; j < K; j += 7) {
    const expected = JSON.parse(batch.buf.toString('utf8', batch.starts[j], batch.ends[j]))
    assert.deepStrictEqual(native.parseJson(batch.buf, batch.starts[j], batch.ends[j]), expected, `${shape}: parseJson`)
    assert.deepStrictEqual(native.parseJsonDirect(batch.buf, batch.starts[j], batch.ends[j]), expected, `${shape}: parseJsonDirect`)
    assert.deepStrictEqual(Object.keys(native.parseJsonDirect(batch.buf, batch.starts[j], batch.ends[j])), Object.keys(expected))
    assert.deepStrictEqual(Object.keys(native.parseJson(batch.buf, batch.starts[j], batch.ends[j])), Object.keys(expected))
    const text = JSON.stringify(messages[j])
    const bytes = native.stringifyJson(messages[j])
    assert.deepStrictEqual(JSON.parse(bytes.toString('utf8')), messages[j], `${shape}: stringifyJson`)
    const out = Buffer.alloc(bytes.length + 10)
    assert.strictEqual(native.stringifyJsonInto(messages[j], out, 10), bytes.length)
    assert.ok(out.subarray(10).equals(bytes), `${shape}: stringifyJsonInto`)
    // Same values; the text may differ in number formatting (serde_json writes 1717000000 read
    // from JS as 1717000000.0, since napi-rs reads integers above 2^32 as f64).
    if (!differs && bytes.toString('utf8') !== text) differs = { js: text, native: bytes.toString('utf8') }
  }
  return differs ? { sameText: false, example: differs } : { sameText: true }
}

// --- main ----------------------------------------------------------------------------------

function firstLine(command, argv) {
  const r = spawnSync(command, argv, { encoding: 'utf8' })
  return r.status === 0 ? (r.stdout || '').trim().split('\n')[0] : null
}

function lockedVersion(name) {
  const lock = fs.readFileSync(path.join(NATIVE_DIR, 'Cargo.lock'), 'utf8')
  return (lock.match(new RegExp(`name = "${name}"\\nversion = "([^"]+)"`)) || [])[1] || null
}

function main() {
  ensureNative()
  const native = require(NATIVE_NODE)
  const { rx, tx } = variants(native)
  const shapes = [
    { shape: 'bench {seq,t,pad} ~64 B', messages: benchMessages(64) },
    { shape: 'bench {seq,t,pad} ~4096 B', messages: benchMessages(4096) },
    { shape: 'IoT shadow-like doc ~300 B', messages: iotMessages() },
    { shape: 'IoT batch, 13 such docs ~4 KB', messages: iotBatchMessages() },
  ]
  const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m) || [])[1] || os.cpus()[0]?.model
  const machine = {
    cpu,
    cpus: os.cpus().length,
    node: process.version,
    v8: process.versions.v8,
    rustc: firstLine('rustc', ['--version']),
    napi: lockedVersion('napi'),
    serde_json: `${lockedVersion('serde_json')} (preserve_order, float_roundtrip)`,
  }
  log(`${machine.cpu}, node ${machine.node}, ${machine.rustc}, napi ${machine.napi}, serde_json ${machine.serde_json}`)
  log(`${RUNS} runs of ~${RUN_MS} ms per variant, median ns/op\n`)

  const results = []
  for (const { shape, messages } of shapes) {
    const batch = batchOf(messages)
    const out = Buffer.alloc(1 << 20)
    const data = { ...batch, objs: messages, out, limit: out.length - 2 * batch.bytes - 1024 }
    const checked = check(native, shape, messages, batch)
    for (const [side, group] of [['receive', rx], ['send', tx]]) {
      const rows = measureGroup(group, data)
      const js = rows[0].nsPerOp
      for (const row of rows) row.vsJs = row.nsPerOp / js
      results.push({ shape, bytes: batch.bytes, side, sameText: checked.sameText, rows })
      print(shape, batch.bytes, side, rows)
    }
    if (!checked.sameText) log(`  note: same values, different text, e.g. JS ${checked.example.js.slice(0, 80)}... vs native ${checked.example.native.slice(0, 80)}...\n`)
  }
  fs.writeFileSync(RESULTS, `${JSON.stringify({ date: new Date().toISOString(), machine, runs: RUNS, runMs: RUN_MS, checksum, results }, null, 2)}\n`)
  log(`wrote ${path.relative(process.cwd(), RESULTS)}`)
}

function print(shape, bytes, side, rows) {
  log(`${shape} (${bytes} B), ${side}`)
  for (const r of rows) {
    const spread = `${r.min.toFixed(0)}..${r.max.toFixed(0)}`
    const rel = r.vsJs === 1 ? '(baseline)' : `${r.vsJs.toFixed(2)}x JS`
    log(`  ${r.variant.padEnd(58)} ${r.nsPerOp.toFixed(0).padStart(7)} ns/op  [${spread.padStart(11)}]  ${rel}`)
  }
  log('')
}

main()
