'use strict'
// What the two JS clients share: arguments, the message shape, the burst and paced drivers,
// the delivery bookkeeping and the one JSON line of output. Each client supplies only
// connect / publish / close; the work per message (JSON encode on publish, JSON parse on
// receipt) is each client's own, as its users would have it.

const fs = require('node:fs')
const { performance } = require('node:perf_hooks')

const now = () => performance.timeOrigin + performance.now()

function parseArgs() {
  const spec = JSON.parse(process.argv[2] || '{}')
  const { url, qos = 0, size = 64, n = 1000, mode = 'burst', rate = 1000, timeoutSec = 60, warmup = 0 } = spec
  if (!url) throw new Error('usage: node client.js \'{"url":"ws://...","qos":0,"size":64,"n":1000,"mode":"burst"}\'')
  return { url, qos, size, n, mode, rate, timeoutSec, warmup }
}

/** A `pad` string that makes JSON.stringify({ seq, t, pad }) about `size` bytes. */
function padFor(size, n) {
  const base = JSON.stringify({ seq: n, t: now(), pad: '' }).length
  return 'x'.repeat(Math.max(0, size - base))
}

function statusMB(field) {
  try {
    const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))
    return m ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * q) - 1))]
}

/**
 * Delivery bookkeeping: `onMessage(message)` with the parsed `{ seq, t }`; `all` resolves when
 * every seq below n arrived, `warmedUp` when the `warmup` ones from n on did (as in the ceiling,
 * warm-up messages are told apart by their seq, and do not count in the figures).
 */
function receiver(n, paced, warmup) {
  const seen = new Uint8Array(n)
  const latencies = paced ? new Float64Array(n) : null
  const r = { received: 0, unique: 0, lastAt: 0, latencyCount: 0, resolveAll: null, foreign: 0, warmed: 0, resolveWarmedUp: null }
  r.all = new Promise((resolve) => {
    r.resolveAll = resolve
  })
  r.warmedUp = new Promise((resolve) => {
    r.resolveWarmedUp = resolve
  })
  r.onMessage = (message) => {
    const at = now()
    const seq = message && message.seq
    if (seq >= n && seq < n + warmup) {
      if (++r.warmed === warmup) r.resolveWarmedUp()
      return
    }
    r.received++
    r.lastAt = at
    if (typeof seq !== 'number' || seq < 0 || seq >= n) {
      r.foreign++
      return
    }
    if (seen[seq] === 0) {
      seen[seq] = 1
      r.unique++
      if (paced) latencies[r.latencyCount++] = at - message.t
      if (r.unique === n) r.resolveAll()
    }
  }
  r.latencies = () => (paced ? Array.from(latencies.subarray(0, r.latencyCount)).sort((a, b) => a - b) : [])
  return r
}

// The paced runs' clock, in a process of its own. Node's timers have a resolution of 1 ms, and
// a 1 ms timer fires 1-2 ms later (1.4 ms on average here): a driver on setTimeout catches up
// by sending two messages at once, about half of them, and each then waits for the other. This
// process sleeps until each message is due (Atomics.wait takes fractional milliseconds) and
// writes one byte for it, so the client publishes one message per turn, 1 ms apart, as the
// ceiling's metronome thread has it publish; its CPU and memory are not the client's.
const METRONOME = `
const fs = require('node:fs')
const [n, rate] = process.argv.slice(1).map(Number)
const sleeper = new Int32Array(new SharedArrayBuffer(4))
const tick = Buffer.from('.')
fs.writeSync(1, 'r')
fs.readSync(0, Buffer.alloc(1))
const start = performance.now()
for (let k = 0; k < n; k++) {
  const wait = start + (k * 1000) / rate - performance.now()
  if (wait > 0) Atomics.wait(sleeper, 0, 0, wait)
  fs.writeSync(1, tick)
}`

/**
 * Starts the metronome; resolves, once it is ready, to `start(tick)`, which calls `tick` n
 * times, `rate` times a second, and resolves after the last.
 */
async function metronome(n, rate) {
  // Required here, after "RSS once connected" was taken: child_process alone adds 2.4 MB to it.
  const { spawn } = require('node:child_process')
  const { once } = require('node:events')
  const child = spawn(process.execPath, ['-e', METRONOME, String(n), String(rate)], { stdio: ['pipe', 'pipe', 'inherit'] })
  await once(child.stdout, 'data') // ready; it sends nothing more until told to start
  return (tick) =>
    new Promise((resolve, reject) => {
      let ticks = 0
      child.stdout.on('data', (chunk) => {
        for (let i = 0; i < chunk.length && ticks < n; i++, ticks++) tick()
        if (ticks === n) resolve()
      })
      // 'close' comes after the last of its output was read ('exit' may come before).
      child.on('close', (code) => reject(new Error(`the metronome stopped (exit code ${code}) after ${ticks} of ${n} ticks`)))
      child.stdin.end('g')
    })
}

/** Publishes seq first..end-1 in one synchronous loop; returns what each `publish` returned. */
function burst(client, first, end, pad) {
  const settles = []
  for (let seq = first; seq < end; seq++) settles.push(client.publish(seq, { seq, t: now(), pad }))
  return settles
}

/**
 * Runs one case with a client: { connect(), publish(seq, message) → settles later (promise or
 * undefined), close(), extra?() }. Prints the JSON line and exits.
 */
async function runCase(name, client) {
  const args = parseArgs()
  const { n, qos, size, mode, rate, timeoutSec, warmup } = args
  const paced = mode === 'paced'
  const startedAt = now()
  const topic = `bench/${name.replace(/\W/g, '')}/${process.pid}/${Date.now()}`
  const r = receiver(n, paced, warmup)
  const errors = []
  await client.connect({ ...args, topic, onMessage: r.onMessage, onError: (e) => errors.push(e) })
  const rssConnectedMB = process.memoryUsage.rss() / 1048576
  const pad = padFor(size, n)
  if (warmup > 0) {
    // A first burst, not measured, so that V8 has compiled the hot paths (see bench/README.md).
    const warmed = burst(client, n, n + warmup, pad)
    await Promise.race([Promise.all([r.warmedUp, ...warmed]), new Promise((_, reject) => setTimeout(reject, timeoutSec * 1000, new Error('the warm-up timed out')).unref())])
  }

  let settles = []
  const startTicks = paced ? await metronome(n, rate) : null
  const cpu0 = process.cpuUsage()
  const t0 = now()
  if (paced) {
    let sent = 0
    await startTicks(() => {
      const seq = sent++
      settles.push(client.publish(seq, { seq, t: now(), pad }))
    })
  } else {
    settles = burst(client, 0, n, pad)
  }
  const acceptedAt = now()

  let timer
  await Promise.race([r.all, new Promise((resolve) => (timer = setTimeout(resolve, timeoutSec * 1000)))])
  clearTimeout(timer)
  const endAt = now()
  const cpu = process.cpuUsage(cpu0)

  // Publish completions (QoS 1: PUBACK). They do not hold up the delivery figures.
  let publishErrors = 0
  let publishUnsettled = 0
  const promises = settles.filter((p) => p && typeof p.then === 'function')
  if (promises.length > 0) {
    let settled = 0
    const counted = promises.map((p) =>
      p.then(
        () => settled++,
        (error) => {
          settled++
          publishErrors++
          if (errors.length < 5) errors.push(error)
        },
      ),
    )
    await Promise.race([Promise.all(counted), new Promise((resolve) => (timer = setTimeout(resolve, 10000)))])
    clearTimeout(timer)
    publishUnsettled = promises.length - settled
  }
  const extra = client.extra ? client.extra() : undefined

  const closeStarted = now()
  let closeTimedOut = false
  await Promise.race([
    Promise.resolve(client.close()).catch((e) => errors.push(e)),
    new Promise((resolve) => (timer = setTimeout(() => resolve((closeTimedOut = true)), 10000))),
  ])
  clearTimeout(timer)
  const closeSec = (now() - closeStarted) / 1000

  const latencies = r.latencies()
  const round = (x, d = 3) => (x === null || x === undefined ? null : Math.round(x * 10 ** d) / 10 ** d)
  const result = {
    client: name,
    qos,
    size,
    n,
    mode,
    acceptedPerSec: round(n / ((acceptedAt - t0) / 1000), 0),
    deliveredPerSec: r.unique > 0 ? round(r.unique / ((r.lastAt - t0) / 1000), 0) : 0,
    lost: n - r.unique,
    duplicated: r.received - r.unique - r.foreign,
    p50Ms: paced ? round(percentile(latencies, 0.5), 4) : null,
    p99Ms: paced ? round(percentile(latencies, 0.99), 4) : null,
    rssConnectedMB: round(rssConnectedMB, 1),
    rssPeakMB: round(statusMB('VmHWM'), 1),
    cpuSec: round((cpu.user + cpu.system) / 1e6),
    wallSec: round((endAt - t0) / 1000),
    errors: errors.length + publishErrors,
    publishErrors,
    publishUnsettled,
    closeSec: round(closeSec),
    closeTimedOut,
    setupSec: round((t0 - startedAt) / 1000),
    errorSamples: errors.slice(0, 3).map((e) => `${(e && e.code) || ''} ${(e && e.message) || String(e)}`.trim()),
    extra,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
  process.exit(0)
}

function main(name, client) {
  runCase(name, client).catch((error) => {
    process.stderr.write(`${name}: ${error && error.stack ? error.stack : error}\n`)
    process.exit(1)
  })
}

module.exports = { main, now }
