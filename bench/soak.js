'use strict'
// A soak test: one process runs a realistic mixed workload through the public API for a long
// time and samples its own memory and handles, to find what grows. Not part of `npm test`.
//
//   node bench/soak.js [--minutes 10] [--restart-every 60] [--rate 3000] [--sample-every 10]
//                      [--warmup <minutes>] [--json <file>] [--snapshots <dir>]
//
// --json writes every sample and total; --snapshots writes V8 heap snapshots at the end of the
// warm-up and at the end of the run (before closing), to compare in Chrome DevTools when
// heapUsed grows.
//
// It starts Debian's mosquitto on loopback (__test__/helpers/mosquitto.js: a websockets and an
// MQTT listener on free ports) and stops it on every exit (end, failure, Ctrl-C; the helper's
// watchdog kills it if this process dies). It respawns itself with --expose-gc when needed.
// The workload, all at once, for the whole run:
//   - streams: instance A (mqtt://) publishes QoS 0 and QoS 1 JSON to topics it is subscribed to
//     (--rate msg/s in all, 80 % on A), instance B (ws://, keepAlive 5 s) a QoS 1 stream; every
//     sequence number is checked: lost (publish resolved, never arrived), duplicated, unsettled
//     (no answer within 30 s); losses within a broker restart's window are counted apart;
//   - subscription churn: instance C keeps 200 observers on filters that are never reused
//     (exact, +, # and leading +) or shared, each replaced after 1-6 s: ready, a QoS 1 probe
//     that must arrive, unsubscribe (1 in 10 before its SUBACK); instance E runs `for await`
//     loops that fall behind (hold-back) and are broken out of early, or fail (invalid filter);
//   - instance churn: two loops making instances over ws:// and mqtt:// and closing them: never
//     connected (closed, or dropped for the GC), round trips, closed in the middle of a burst of
//     publishes, dropped after a publish, pointed at a port that resets every connection
//     (reconnect loop, offline queue full), reconnect: false, cleanSession: false with a will, a `for await`
//     loop ended by close(); the older singleton surface (addPluggable/removePluggable);
//   - the broker killed every --restart-every s (SIGTERM and SIGKILL in turn, down 0-3 s) and
//     started again on the same ports;
//   - errors on purpose: invalid topics and filters, a bad qos, an unencodable message, observer
//     callbacks that throw or reject, payloads that are not JSON; each must come back with its code.
// Every --sample-every s, after a forced GC: RSS (and RssAnon, and RssAnon less V8's heapTotal:
// the anonymous memory outside V8, malloc's), V8 heapUsed, external and
// arrayBuffers, process.getActiveResourcesInfo(), open fds (/proc/self/fd), threads
// (/proc/self/task), instances alive (made minus collected), CPU and event-loop delay.
//
// Reading the output: a progress line per sample on stderr, then on stdout a table of samples,
// the trends after the warm-up (default 20 % of the run, 1-10 min), the workload's totals, and
// the state after everything was closed compared with the state before the workload. For each
// metric the trend gives the least-squares slope per hour with its r², and the Theil-Sen slope
// (the median of the slopes between every two samples: a spike or a restart does not move it).
// A metric is flagged GROWS when its Theil-Sen slope is over the metric's threshold AND the fit
// says the rise is steady (r² >= 0.5); a slope over the threshold with a poor fit is shown as
// "noisy", to be watched on a longer run. Short runs extrapolate: 1 MB over an 8-minute window
// is 7.5 MB/h, and on this machine malloc's memory (RSS outside V8) rises for the first ~10 min
// before it levels off: a 10-minute run judges handles, threads and V8's heap well, RSS only
// roughly (run 2 of bench/FINDINGS.md "Soak runs" flagged its warm-up); use --minutes 30 or
// more for RSS. Exit code 0: nothing flagged; 2: growth flagged; 3: workload problems (losses
// outside restarts, unsettled promises, unexpected errors, handles left after close); 1: failure.
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { spawn, execFileSync } = require('node:child_process')
const { monitorEventLoopDelay } = require('node:perf_hooks')

// ------------------------------------------------------------------------------- arguments

function parseArgs(argv) {
  const args = { minutes: 10, restartEvery: 60, rate: 3000, sampleEvery: 10, warmup: null, json: null, snapshots: null }
  const names = { '--minutes': 'minutes', '--restart-every': 'restartEvery', '--rate': 'rate', '--sample-every': 'sampleEvery', '--warmup': 'warmup', '--json': 'json', '--snapshots': 'snapshots' }
  const paths = ['json', 'snapshots']
  for (let i = 0; i < argv.length; i++) {
    const key = names[argv[i]]
    if (!key || i + 1 >= argv.length) {
      console.error(`usage: node bench/soak.js [--minutes N] [--restart-every S] [--rate MSG_PER_S] [--sample-every S] [--warmup MIN] [--json FILE] [--snapshots DIR]\n(unknown or incomplete argument ${argv[i]})`)
      process.exit(1)
    }
    const value = argv[++i]
    args[key] = paths.includes(key) ? value : Number(value)
    if (!paths.includes(key) && !(args[key] >= 0)) {
      console.error(`${argv[i - 1]} must be a number >= 0`)
      process.exit(1)
    }
  }
  if (args.warmup === null) args.warmup = Math.min(10, Math.max(1, args.minutes * 0.2))
  return args
}

const ARGS = parseArgs(process.argv.slice(2))

// Run with --expose-gc (heapUsed after a forced GC) and without printed warnings (the run counts
// them instead: the provoked errors make some): respawn if this Node was not started so.
if (typeof global.gc !== 'function') {
  const child = spawn(process.execPath, ['--expose-gc', '--no-warnings', __filename, ...process.argv.slice(2)], { stdio: 'inherit' })
  // Ctrl-C reaches both processes (one process group); a signal sent to this one alone is passed on.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    })
  }
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + (os.constants.signals[signal] || 0) : 1)))
  return
}

const { startMosquitto } = require('../__test__/helpers/mosquitto.js')
const { PubSub, Hub, MqttOverWSProvider, CONNECTION_STATE_CHANGE } = require('../mqtt.js')

// ---------------------------------------------------------------------------------- helpers

const T0 = Date.now()
const sinceStart = () => Date.now() - T0
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const rand = (n) => Math.floor(Math.random() * n)
const pick = (list) => list[rand(list.length)]
const MB = 1024 * 1024
const clock = (ms) => {
  const s = Math.round(ms / 1000)
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`
}

let running = true
/** The pauses under way, woken when the run stops. */
const pauses = new Set()
function requestStop() {
  running = false
  for (const wake of pauses) wake()
  pauses.clear()
}

/** `promise` or 'timeout' after `ms`, without leaving a timer behind. */
function within(promise, ms) {
  let timer
  return Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms, 'timeout')))]).finally(() => clearTimeout(timer))
}

/**
 * A sleep that ends early when the run stops: 'timeout' after `ms`, undefined if stopped. (Not a
 * race with one "stopped" promise: each race would add a reaction to it, kept until it settles,
 * and the harness's own heap would grow all run long.)
 */
function pause(ms) {
  if (!running) return Promise.resolve(undefined)
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer)
      resolve(undefined)
    }
    const timer = setTimeout(() => {
      pauses.delete(wake)
      resolve('timeout')
    }, ms)
    pauses.add(wake)
  })
}

/** Totals; every counter bounded to a number, lists to a few entries. */
const T = {
  instancesMade: 0,
  instancesClosed: 0,
  instancesDropped: 0,
  instancesCollected: 0,
  restarts: 0,
  restartFailures: 0,
  stateChanges: 0,
  hubEvents: 0,
  hubListens: 0,
  disrupted: 0,
  callbackErrors: 0,
  invalidPayloads: 0,
  warnings: new Map(),
  provoked: { ok: 0, unexpected: 0 },
  variants: new Map(),
  problems: [],
  problemCount: 0,
}

function problem(text) {
  T.problemCount++
  if (T.problems.length < 20) T.problems.push(`[${clock(sinceStart())}] ${text}`)
}

function countVariant(name, outcome = 'runs') {
  let entry = T.variants.get(name)
  if (!entry) T.variants.set(name, (entry = { runs: 0, failed: 0, timeouts: 0 }))
  entry[outcome]++
}

process.on('warning', (warning) => {
  // Numbers (ports, delays) and stacks left out: one key per kind of warning.
  const key = `${warning.name}: ${String(warning.message).split('\n')[0].replace(/\d+/g, 'N').slice(0, 160)}`
  if (T.warnings.size < 30 || T.warnings.has(key)) T.warnings.set(key, (T.warnings.get(key) || 0) + 1)
})

/** Errors that reached observers of the churn, by where and code. */
const observerErrors = {}
/** An observer's `error`: counted, and a problem unless its code is `expected`. */
function observerFailed(where, expected = []) {
  return (error) => {
    const key = `${where} → ${error.code}`
    observerErrors[key] = (observerErrors[key] || 0) + 1
    if (!expected.includes(error.code)) problem(`${where}: observer error ${error.code}: ${error.message}`)
  }
}

const collected = new FinalizationRegistry(() => T.instancesCollected++)

/** A new instance, counted and watched for collection. */
function makeInstance(options) {
  const instance = new PubSub(options)
  T.instancesMade++
  collected.register(instance, 0)
  return instance
}

async function closeInstance(instance) {
  const result = await within(instance.close(), 15_000)
  if (result === 'timeout') problem('close() did not settle within 15 s')
  else T.instancesClosed++
}

// ------------------------------------------------------------------------ broker and restarts

let broker = null
let deadPort = 0
/** { killAt, upAt } in ms since start; upAt Infinity while down. */
const restarts = []

function nearRestart(t) {
  for (let i = restarts.length - 1; i >= 0; i--) {
    const r = restarts[i]
    if (t >= r.killAt - 2_000 && t <= r.upAt + 10_000) return true
    if (r.upAt + 10_000 < t) break
  }
  return false
}

async function restartLoop() {
  let kind = 0
  for (;;) {
    const every = ARGS.restartEvery * 1000
    if (every <= 0) return
    if ((await pause(every * (0.85 + Math.random() * 0.3))) !== 'timeout') return
    const signal = kind++ % 2 === 0 ? 'SIGTERM' : 'SIGKILL'
    const entry = { killAt: sinceStart(), upAt: Infinity }
    restarts.push(entry)
    try {
      await broker.restart({ signal, downMs: rand(3_000) })
      T.restarts++
    } catch (error) {
      T.restartFailures++
      problem(`broker restart failed: ${error.message.split('\n')[0]}`)
      try {
        await broker.start()
      } catch {}
    }
    entry.upAt = sinceStart()
  }
}

// ----------------------------------------------------------------- streams: lost and duplicated

const RING_BITS = 18
const RING = 1 << RING_BITS
const MASK = RING - 1
/** A sequence number is judged this long after its publish. */
const JUDGE_AFTER_MS = 30_000
const RESOLVED = 1
const REJECTED = 2

/**
 * Sequence numbers published on one topic at one QoS, and what came back, in fixed-size rings
 * (the accounting must not grow itself): each number is judged JUDGE_AFTER_MS after its publish.
 */
class Stream {
  constructor(name, pubsub, topic, qos, rate) {
    Object.assign(this, { name, pubsub, topic, qos, rate })
    this.state = new Uint8Array(RING)
    this.received = new Uint8Array(RING)
    this.publishedAt = new Uint32Array(RING)
    this.next = 0
    this.judged = 0
    this.base = sinceStart()
    this.baseSeq = 0
    this.t = { published: 0, resolved: 0, rejected: 0, rejectedBy: {}, received: 0, lost: 0, lostNearRestart: 0, dup: 0, dupNearRestart: 0, unsettled: 0, rejectedArrived: 0, late: 0, bogus: 0, behind: 0, ringFull: 0 }
    this.pad = 'x'.repeat(100)
    this.bigPad = 'y'.repeat(16 * 1024)
  }

  /** Publishes what the rate says is due by now. */
  tick() {
    const now = sinceStart()
    let due = Math.floor(((now - this.base) * this.rate) / 1000) + this.baseSeq - this.next
    if (due > this.rate) {
      // Over a second behind (the event loop was busy): start counting again from now.
      this.t.behind++
      this.base = now
      this.baseSeq = this.next
      due = 0
    }
    for (let k = 0; k < due; k++) {
      if (this.next - this.judged >= RING - 1) {
        this.t.ringFull++
        return
      }
      this.publishOne(now)
    }
  }

  publishOne(now) {
    const seq = this.next++
    const slot = seq & MASK
    this.state[slot] = 0
    this.received[slot] = 0
    this.publishedAt[slot] = now
    this.t.published++
    // One message in 500 is 16 KiB: read and write buffers grow, and should not stay grown.
    const message = { s: seq, p: seq % 500 === 499 ? this.bigPad : this.pad }
    this.pubsub.publish(this.topic, message, { qos: this.qos }).then(
      () => {
        this.t.resolved++
        if (seq >= this.judged) this.state[slot] |= RESOLVED
      },
      (error) => {
        this.t.rejected++
        this.t.rejectedBy[error.code] = (this.t.rejectedBy[error.code] || 0) + 1
        if (seq >= this.judged) this.state[slot] |= REJECTED
      },
    )
  }

  onMessage(message) {
    this.t.received++
    const seq = message && message.s
    if (!Number.isInteger(seq) || seq < 0 || seq >= this.next) this.t.bogus++
    else if (seq < this.judged) this.t.late++
    else if (this.received[seq & MASK] < 255) this.received[seq & MASK]++
  }

  /** Judges the numbers published over JUDGE_AFTER_MS ago (all of them at the end: `all`). */
  judge(all = false) {
    const before = sinceStart() - JUDGE_AFTER_MS
    while (this.judged < this.next) {
      const slot = this.judged & MASK
      const at = this.publishedAt[slot]
      if (!all && at > before) break
      const state = this.state[slot]
      const received = this.received[slot]
      const near = nearRestart(at)
      if (state === 0) this.t.unsettled++
      else if (state & RESOLVED && received === 0) near ? this.t.lostNearRestart++ : this.t.lost++
      if (state & REJECTED && received > 0) this.t.rejectedArrived++
      if (received > 1) near ? this.t.dupNearRestart++ : this.t.dup++
      this.judged++
    }
  }
}

// ------------------------------------------------------------------------ subscription churn

let filterSeq = 0

/** A filter never used before (or one of 16 shared ones) and a topic it matches. */
function churnFilter() {
  const n = ++filterSeq
  switch (n % 6) {
    case 0:
      return { n, filters: [`soak/c/u/${n}`], topic: `soak/c/u/${n}` }
    case 1:
      return { n, filters: [`soak/c/u/${n}/+`], topic: `soak/c/u/${n}/x` }
    case 2:
      return { n, filters: [`soak/c/u/${n}/#`, `soak/c/v/${n}`], topic: `soak/c/u/${n}/x/y` }
    case 3:
      return { n, filters: [`soak/c/+/${n}`], topic: `soak/c/z/${n}` }
    case 4:
      return { n, filters: [`+/c/w/${n}`, `soak/c/x/${n}/#`], topic: `soak/c/w/${n}` }
    default:
      return { n, filters: [`soak/c/shared/${n % 16}/#`], topic: `soak/c/shared/${n % 16}/${n}` }
  }
}

const churnTotals = { observers: 0, earlyUnsubscribed: 0, readyRejectedClosed: 0, readyOk: 0, readyTimeout: 0, probes: 0, probeArrived: 0, probeMissed: 0, probeMissedNearRestart: 0, probeDup: 0, probeRejected: 0 }

/** One slot of the pool: an observer after another, each living 1-6 s. */
async function poolSlot(pubsub) {
  while (running) {
    const { n, filters, topic } = churnFilter()
    churnTotals.observers++
    let got = 0
    const subscription = pubsub.subscribe(filters, { qos: 1 }).subscribe({
      next: (message) => {
        if (message.n === n) got++
      },
      error: (error) => problem(`pool observer of ${filters} failed: ${error.code} ${error.message}`),
    })
    if (Math.random() < 0.1) {
      churnTotals.earlyUnsubscribed++
      subscription.unsubscribe()
      const outcome = await subscription.ready.then(
        () => 'resolved',
        (error) => error.code,
      )
      if (outcome === 'ERR_CLOSED') churnTotals.readyRejectedClosed++
      else problem(`ready of an observer unsubscribed at once: ${outcome}, not ERR_CLOSED`)
      await pause(100)
      continue
    }
    const ready = await within(subscription.ready.then(() => 'ok', (error) => error.code), 30_000)
    if (ready !== 'ok') {
      if (ready === 'timeout') churnTotals.readyTimeout++
      else if (running) problem(`pool ready: ${ready}`)
      subscription.unsubscribe()
      continue
    }
    churnTotals.readyOk++
    churnTotals.probes++
    const probeAt = sinceStart()
    const probe = await pubsub.publish(topic, { n }, { qos: 1 }).then(() => 'ok', (error) => error.code)
    await pause(1_000 + rand(5_000))
    subscription.unsubscribe()
    if (probe !== 'ok') {
      churnTotals.probeRejected++
      if (running && probe !== 'ERR_CLOSED') problem(`pool probe rejected: ${probe}`)
    } else if (got === 0) {
      if (nearRestart(probeAt) || nearRestart(sinceStart())) churnTotals.probeMissedNearRestart++
      else if (running) {
        churnTotals.probeMissed++
        problem(`probe on ${topic} for ${filters} published, never arrived`)
      }
    } else {
      churnTotals.probeArrived++
      if (got > 1) churnTotals.probeDup++
    }
  }
}

const iterTotals = { loops: 0, messages: 0, brokenEarly: 0, heldBack: 0, timedOut: 0, failedAsExpected: 0 }

/**
 * `for await` loops on instance E: each subscribes, gets a burst of QoS 0 messages it takes
 * slowly (past 256 buffered, the connection is held back), and breaks out at a random point;
 * one in ten iterates an invalid filter and must throw ERR_INVALID_TOPIC.
 */
async function iteratorLoop(pubsub) {
  let round = 0
  while (running) {
    round++
    iterTotals.loops++
    if (round % 10 === 0) {
      try {
        for await (const message of pubsub.subscribe('soak/e/#/bad')) void message
        problem('for await over an invalid filter ended without an error')
      } catch (error) {
        if (error.code === 'ERR_INVALID_TOPIC') iterTotals.failedAsExpected++
        else problem(`for await over an invalid filter threw ${error.code}`)
      }
      continue
    }
    const topic = `soak/e/${round}`
    // A plain observer first, for its `ready`: the loop's own subscription then joins a filter
    // the broker has acknowledged.
    const guard = pubsub.subscribe(topic).subscribe({ next() {}, error: observerFailed('for await guard') })
    if ((await within(guard.ready.then(() => 'ok', (error) => error.code), 30_000)) !== 'ok') {
      guard.unsubscribe()
      continue
    }
    const burst = 100 + rand(600)
    const stopAt = rand(burst)
    const iterator = pubsub.subscribe(topic)[Symbol.asyncIterator]()
    for (let i = 0; i < burst; i++) pubsub.publish(topic, { i }, { qos: 0 }).catch(() => {})
    const timer = setTimeout(() => {
      iterTotals.timedOut++
      iterator.return()
    }, 20_000)
    let taken = 0
    for await (const message of iterator) {
      void message
      iterTotals.messages++
      if (++taken > 256) iterTotals.heldBack++
      if (taken >= stopAt) {
        iterTotals.brokenEarly++
        break
      }
      if (taken % 8 === 0) await new Promise(setImmediate)
    }
    clearTimeout(timer)
    guard.unsubscribe()
    await pause(rand(500))
  }
}

// ---------------------------------------------------------------------------- instance churn

const endpoints = () => [broker.wsUrl, broker.tcpUrl]

/** Publishes and waits for `count` messages on a fresh topic; 'ok', or what went wrong. */
async function roundTrip(pubsub, name, count, qos) {
  const topic = `soak/i/${name}/${++filterSeq}`
  let got = 0
  let done
  const all = new Promise((resolve) => (done = resolve))
  let completed = false
  const subscription = pubsub.subscribe(topic, { qos }).subscribe({
    next: () => ++got === count && done(),
    error: (error) => done(`observer error ${error.code}: ${error.message}`),
    complete: () => (completed = true),
  })
  const ready = await within(subscription.ready.then(() => 'ok', (error) => error.code), 30_000)
  if (ready !== 'ok') return `ready ${ready}`
  const published = await within(Promise.all(Array.from({ length: count }, (_, i) => pubsub.publish(topic, { i }, { qos }))).then(() => 'ok', (error) => error.code), 30_000)
  if (published !== 'ok') return `publish ${published}`
  const arrived = await within(all, 15_000)
  if (arrived !== undefined) return arrived === 'timeout' ? `${got}/${count} arrived` : arrived
  return { subscription, completed: () => completed }
}

/** The variants: each makes an instance, uses it, and closes it or lets it go. */
const VARIANTS = {
  async neverConnectedClose() {
    const pubsub = makeInstance({ endpoint: pick(endpoints()) })
    void pubsub.clientId, pubsub.connectionState, pubsub.stats()
    await closeInstance(pubsub)
  },
  async neverConnectedDrop() {
    makeInstance({ endpoint: pick(endpoints()) })
    T.instancesDropped++
  },
  async roundTrip() {
    const pubsub = makeInstance({ endpoint: pick(endpoints()), reconnect: { minDelayMs: 100, maxDelayMs: 1000 } })
    const result = await roundTrip(pubsub, 'rt', 1 + rand(50), rand(3))
    if (typeof result === 'string') {
      await closeInstance(pubsub)
      return result
    }
    // Half unsubscribe first (the connection ends by itself), half close with the observer on.
    if (Math.random() < 0.5) result.subscription.unsubscribe()
    const unsubscribed = result.subscription.closed
    await closeInstance(pubsub)
    if (!unsubscribed && !result.completed()) return 'close() did not complete the observer'
  },
  async closeMidPublish() {
    const pubsub = makeInstance({ endpoint: pick(endpoints()), offlineQueue: 'all' })
    if (Math.random() < 0.5) pubsub.subscribe(`soak/i/mid/${++filterSeq}`).subscribe({ next() {}, error: observerFailed('closeMidPublish') })
    const count = 100 + rand(2_000)
    const outcomes = { ok: 0 }
    const settled = []
    for (let i = 0; i < count; i++) {
      settled.push(
        pubsub.publish(`soak/i/mid/${filterSeq}`, { i }, { qos: rand(3) }).then(
          () => outcomes.ok++,
          (error) => (outcomes[error.code] = (outcomes[error.code] || 0) + 1),
        ),
      )
    }
    const delay = rand(30)
    if (delay > 0) await sleep(delay)
    const closing = pubsub.close()
    if ((await within(Promise.all(settled), 15_000)) === 'timeout') return 'publishes unsettled 15 s after close()'
    if ((await within(closing, 15_000)) === 'timeout') return 'close() unsettled'
    T.instancesClosed++
    const other = Object.keys(outcomes).filter((code) => code !== 'ok' && code !== 'ERR_CLOSED' && code !== 'ERR_CONNECTION')
    if (other.length > 0) return `publishes rejected with ${other.join(', ')}`
  },
  async idleDrop() {
    const pubsub = makeInstance({ endpoint: pick(endpoints()) })
    const result = await within(pubsub.publish(`soak/i/idle/${++filterSeq}`, { once: true }, { qos: 1 }).then(() => 'ok', (error) => error.code), 30_000)
    T.instancesDropped++
    if (result !== 'ok') return `publish ${result}`
  },
  async unreachable() {
    const pubsub = makeInstance({ endpoint: pick([`mqtt://127.0.0.1:${deadPort}`, `ws://127.0.0.1:${deadPort}/mqtt`]), reconnect: { minDelayMs: 20, maxDelayMs: 100 } })
    let disrupted = 0
    pubsub.on('connectionDisrupted', () => disrupted++)
    let completed = false
    pubsub.subscribe('soak/i/unreachable').subscribe({ next() {}, error: observerFailed('unreachable'), complete: () => (completed = true) })
    const publishes = Array.from({ length: 3 }, () => pubsub.publish('soak/i/unreachable', {}, { qos: 1 }).then(() => 'ok', (error) => error.code))
    await sleep(300)
    await closeInstance(pubsub)
    const outcomes = await within(Promise.all(publishes), 15_000)
    if (outcomes === 'timeout') return 'publishes unsettled after close()'
    if (outcomes.some((code) => code !== 'ERR_CLOSED')) return `publishes: ${outcomes.join(', ')}`
    if (!completed) return 'close() did not complete the observer'
    if (disrupted === 0) return 'no connectionDisrupted in 300 ms'
  },
  async queueFull() {
    const pubsub = makeInstance({ endpoint: `mqtt://127.0.0.1:${deadPort}`, reconnect: { minDelayMs: 50, maxDelayMs: 100 }, offlineQueue: { policy: 'qos1', maxMessages: 4 } })
    // Once the first attempt has failed: publishes made before it wait for it, whatever the bounds.
    const disrupted = new Promise((resolve) => pubsub.once('connectionDisrupted', resolve))
    pubsub.on('connectionDisrupted', () => {})
    pubsub.subscribe('soak/i/full').subscribe({ next() {}, error: observerFailed('queueFull') })
    if ((await within(disrupted, 10_000)) === 'timeout') {
      await closeInstance(pubsub)
      return 'no connectionDisrupted within 10 s'
    }
    const publishes = Array.from({ length: 8 }, () => pubsub.publish('soak/i/full', {}, { qos: 1 }).then(() => 'ok', (error) => error.code))
    await sleep(50)
    await closeInstance(pubsub)
    const outcomes = await within(Promise.all(publishes), 15_000)
    if (outcomes === 'timeout') return 'publishes unsettled after close()'
    const full = outcomes.filter((code) => code === 'ERR_QUEUE_FULL').length
    if (full < 4 || outcomes.some((code) => code !== 'ERR_QUEUE_FULL' && code !== 'ERR_CLOSED')) return `publishes: ${outcomes.join(', ')}`
  },
  async reconnectFalse() {
    const pubsub = makeInstance({ endpoint: pick(endpoints()), reconnect: false })
    const result = await roundTrip(pubsub, 'nr', 1 + rand(10), 1)
    await closeInstance(pubsub)
    // A broker restart during it fails it with ERR_CONNECTION, as reconnect: false says.
    if (typeof result === 'string' && !/ERR_CONNECTION/.test(result)) return result
  },
  async keptSession(worker, round) {
    const pubsub = makeInstance({
      endpoint: pick(endpoints()),
      clientId: `soak-kept-${process.pid}-${worker}-${round % 3}`,
      cleanSession: false,
      will: { topic: 'soak/i/will', message: { gone: worker }, qos: 1 },
      reconnect: { minDelayMs: 100, maxDelayMs: 1000 },
    })
    const result = await roundTrip(pubsub, 'kept', 1 + rand(10), 1)
    // Unsubscribed, so that the session the broker keeps does not gather filters.
    if (typeof result !== 'string') result.subscription.unsubscribe()
    await closeInstance(pubsub)
    if (typeof result === 'string') return result
  },
  async forAwaitClose() {
    const pubsub = makeInstance({ endpoint: pick(endpoints()), reconnect: { minDelayMs: 100, maxDelayMs: 1000 } })
    const topic = `soak/i/iter/${++filterSeq}`
    const guard = pubsub.subscribe(topic).subscribe({ next() {}, error: observerFailed('forAwaitClose') })
    if ((await within(guard.ready.then(() => 'ok', (error) => error.code), 30_000)) !== 'ok') {
      await closeInstance(pubsub)
      return 'ready failed'
    }
    for (let i = 0; i < 5; i++) pubsub.publish(topic, { i }, { qos: 1 }).catch(() => {})
    let taken = 0
    let closing = null
    const timer = setTimeout(() => (closing ??= pubsub.close()), 15_000)
    for await (const message of pubsub.subscribe(topic)) {
      void message
      if (++taken === 2) closing = pubsub.close()
    }
    clearTimeout(timer)
    if ((await within(closing, 15_000)) === 'timeout') return 'close() unsettled'
    T.instancesClosed++
    if (taken < 2) return `the loop ended after ${taken} messages`
  },
  async singleton() {
    const provider = new MqttOverWSProvider({ aws_pubsub_endpoint: pick(endpoints()) })
    T.instancesMade++
    collected.register(provider, 0)
    PubSub.addPluggable(provider)
    const topic = `soak/i/singleton/${++filterSeq}`
    let got = 0
    const subscription = PubSub.subscribe(topic).subscribe({ next: () => got++, error: observerFailed('singleton') })
    let result
    if ((await within(subscription.ready.then(() => 'ok', (error) => error.code), 30_000)) !== 'ok') result = 'ready failed'
    else {
      await PubSub.publish(topic, { singleton: true }).catch(() => {})
      for (let i = 0; i < 100 && got === 0; i++) await sleep(20)
      if (got === 0 && !nearRestart(sinceStart())) result = 'the singleton message did not arrive'
    }
    subscription.unsubscribe()
    if ((await within(PubSub.removePluggable('MqttOverWSProvider'), 15_000)) === 'timeout') return 'removePluggable unsettled'
    T.instancesClosed++
    return result
  },
}

const WEIGHTS = { neverConnectedClose: 3, neverConnectedDrop: 2, roundTrip: 5, closeMidPublish: 3, idleDrop: 2, unreachable: 2, queueFull: 1, reconnectFalse: 1, keptSession: 1, forAwaitClose: 1, singleton: 1 }
const WEIGHTED = Object.entries(WEIGHTS).flatMap(([name, weight]) => Array(weight).fill(name))
/** The singleton is one per process: one loop at a time uses it. */
let singletonBusy = false

async function instanceChurn(worker) {
  let round = 0
  while (running) {
    round++
    let name = pick(WEIGHTED)
    if (name === 'singleton') {
      if (singletonBusy) name = 'roundTrip'
      else singletonBusy = true
    }
    countVariant(name)
    let failure
    try {
      failure = await VARIANTS[name](worker, round)
    } catch (error) {
      failure = `threw ${error.code || ''} ${error.message}`
    } finally {
      if (name === 'singleton') singletonBusy = false
    }
    if (failure) {
      // Around a restart a round trip may fail or time out; elsewhere it should not.
      if (nearRestart(sinceStart()) || !running) countVariant(name, 'timeouts')
      else {
        countVariant(name, 'failed')
        problem(`${name}: ${failure}`)
      }
    }
    await pause(50 + rand(250))
  }
}

// --------------------------------------------------------------------------- provoked errors

const provokedBy = {}

function expectError(what, expected, promiseOrFn) {
  const check = (error) => {
    const code = error && error.code
    const key = `${what} → ${code}`
    provokedBy[key] = (provokedBy[key] || 0) + 1
    if (code === expected) T.provoked.ok++
    else {
      T.provoked.unexpected++
      problem(`${what}: expected ${expected}, got ${code} ${error && error.message}`)
    }
  }
  if (typeof promiseOrFn === 'function') {
    try {
      promiseOrFn()
      check({ code: 'no error' })
    } catch (error) {
      check(error)
    }
  } else {
    promiseOrFn.then(() => check({ code: 'resolved' }), check)
  }
}

function provokeErrors(a, c) {
  expectError('publish to a wildcard topic', 'ERR_INVALID_TOPIC', a.publish('soak/bad/#', { x: 1 }))
  expectError('publish to an empty topic', 'ERR_INVALID_TOPIC', a.publish('', { x: 1 }, { qos: 1 }))
  expectError('publish with a newline in the topic', 'ERR_INVALID_TOPIC', a.publish('soak/bad\n', 1))
  expectError('publish at qos 3', 'ERR_INVALID_OPTION', a.publish('soak/bad', 1, { qos: 3 }))
  expectError('publish of a BigInt', 'ERR_PAYLOAD', a.publish('soak/bad', { n: 10n }))
  expectError('publish with an unknown option', 'ERR_INVALID_OPTION', a.publish('soak/bad', 1, { retained: true }))
  c.subscribe('soak/bad/#/x').subscribe({ error: (error) => expectError('subscribe to a/#/b', 'ERR_INVALID_TOPIC', Promise.reject(error)) })
  c.subscribe('soak/ok', { qos: 7 }).subscribe({ error: (error) => expectError('subscribe at qos 7', 'ERR_INVALID_OPTION', Promise.reject(error)) })
  expectError('observer that is a number', 'ERR_INVALID_OPTION', () => c.subscribe('soak/ok').subscribe(42))
  expectError('new PubSub with a bad endpoint', 'ERR_INVALID_ENDPOINT', () => new PubSub({ endpoint: 'http://127.0.0.1/' }))
  expectError('new PubSub with an unknown option', 'ERR_INVALID_OPTION', () => new PubSub({ endpoint: broker.tcpUrl, keepalive: 5 }))
}

// --------------------------------------------------------------------------------- sampling

function countDir(dir) {
  try {
    return fs.readdirSync(dir).length
  } catch {
    return NaN
  }
}

function statusKiB(field) {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'))
    return match ? Number(match[1]) : NaN
  } catch {
    return NaN
  }
}

const loopDelay = monitorEventLoopDelay({ resolution: 10 })
loopDelay.enable()
let lastCpu = process.cpuUsage()
let lastCpuAt = Date.now()
let lastMessages = 0

async function measure(counters = {}) {
  global.gc()
  await new Promise(setImmediate) // finalizers run
  global.gc()
  const memory = process.memoryUsage()
  const resources = {}
  for (const type of process.getActiveResourcesInfo()) resources[type] = (resources[type] || 0) + 1
  const cpu = process.cpuUsage(lastCpu)
  const now = Date.now()
  const cpuPercent = ((cpu.user + cpu.system) / 1000 / Math.max(1, now - lastCpuAt)) * 100
  lastCpu = process.cpuUsage()
  lastCpuAt = now
  const sample = {
    t: sinceStart() / 1000,
    rss: memory.rss / MB,
    rssAnon: statusKiB('RssAnon') / 1024,
    heapUsed: memory.heapUsed / MB,
    heapTotal: memory.heapTotal / MB,
    // Anonymous memory outside V8's heap: malloc (Rust, libuv, Node's C++), thread stacks.
    nativeAnon: (statusKiB('RssAnon') * 1024 - memory.heapTotal) / MB,
    external: memory.external / MB,
    arrayBuffers: memory.arrayBuffers / MB,
    fds: countDir('/proc/self/fd'),
    threads: countDir('/proc/self/task'),
    resources: Object.values(resources).reduce((a, b) => a + b, 0),
    resourceTypes: resources,
    instancesAlive: T.instancesMade - T.instancesCollected,
    cpuPercent,
    loopP99: loopDelay.percentile(99) / 1e6,
    brokerLogKiB: broker ? broker.log().length / 1024 : 0,
    ...counters,
  }
  loopDelay.reset()
  return sample
}

/** Writes a V8 heap snapshot `<dir>/soak-<pid>-<name>.heapsnapshot`; returns its path. */
function snapshot(name) {
  fs.mkdirSync(ARGS.snapshots, { recursive: true })
  const file = require('node:v8').writeHeapSnapshot(path.join(ARGS.snapshots, `soak-${process.pid}-${name}.heapsnapshot`))
  process.stderr.write(`heap snapshot: ${file}\n`)
  return file
}

// ------------------------------------------------------------------------------ the verdict

function linearFit(xs, ys) {
  const n = xs.length
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let sxy = 0
  let sxx = 0
  let syy = 0
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my)
    sxx += (xs[i] - mx) ** 2
    syy += (ys[i] - my) ** 2
  }
  const slope = sxx > 0 ? sxy / sxx : 0
  const r2 = sxx > 0 && syy > 0 ? (sxy * sxy) / (sxx * syy) : 0
  return { slope, r2 }
}

function theilSen(xs, ys) {
  const slopes = []
  for (let i = 0; i < xs.length; i++) {
    for (let j = i + 1; j < xs.length; j++) if (xs[j] !== xs[i]) slopes.push((ys[j] - ys[i]) / (xs[j] - xs[i]))
  }
  if (slopes.length === 0) return 0
  slopes.sort((a, b) => a - b)
  const mid = slopes.length >> 1
  return slopes.length % 2 ? slopes[mid] : (slopes[mid - 1] + slopes[mid]) / 2
}

/** metric → [unit, threshold per hour]: a steady rise past it is flagged. */
const METRICS = {
  rss: ['MB', 10],
  rssAnon: ['MB', 10],
  nativeAnon: ['MB', 10],
  heapUsed: ['MB', 2],
  external: ['MB', 2],
  arrayBuffers: ['MB', 2],
  fds: ['', 6],
  threads: ['', 2],
  resources: ['', 6],
  instancesAlive: ['', 10],
  cpuPercent: ['%', 5],
  loopP99: ['ms', 5],
}

function trends(samples, warmupS) {
  const kept = samples.filter((s) => s.t >= warmupS)
  if (kept.length < 4) return { kept, rows: [] }
  const xs = kept.map((s) => s.t / 3600)
  const rows = []
  for (const [metric, [unit, threshold]] of Object.entries(METRICS)) {
    const ys = kept.map((s) => s[metric])
    if (ys.some((y) => !Number.isFinite(y))) continue
    const { slope, r2 } = linearFit(xs, ys)
    const robust = theilSen(xs, ys)
    const verdict = robust > threshold && r2 >= 0.5 ? 'GROWS' : robust > threshold ? 'noisy' : 'flat'
    rows.push({ metric, unit, first: ys[0], last: ys[ys.length - 1], min: Math.min(...ys), max: Math.max(...ys), slope, r2, robust, threshold, verdict })
  }
  return { kept, rows }
}

// -------------------------------------------------------------------------------- reporting

const fmt = (value, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : '-')

function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => cells.map((c, i) => String(c).padStart(widths[i])).join('  ')
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

let machineLine = null
/** The machine, Node and the git commit, as at the start of the run. */
function machine() {
  machineLine ??= describeMachine()
  return machineLine
}

function describeMachine() {
  const cpus = os.cpus()
  let distro = ''
  try {
    distro = /^PRETTY_NAME="?([^"\n]*)/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))[1]
  } catch {}
  let commit = ''
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: __dirname, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {}
  const addon = process.env.NAPI_RS_NATIVE_LIBRARY_PATH || 'native-pubsub.linux-x64-gnu.node (beside package.json)'
  return `${cpus[0] ? cpus[0].model : '?'} × ${cpus.length}, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GB, ${distro}, Linux ${os.release()}; Node ${process.version}; git ${commit}; addon ${addon}`
}

function report({ samples, baseline, after, streams, started, ended, reconnects }) {
  const out = []
  const say = (text = '') => out.push(text)
  const warmupS = ARGS.warmup * 60
  say(`native-pubsub soak: ${fmt((ended - started) / 60_000)} min (asked ${ARGS.minutes}), broker restart every ~${ARGS.restartEvery} s, ~${ARGS.rate} stream msg/s, sample every ${ARGS.sampleEvery} s, warm-up ${ARGS.warmup} min`)
  say(machine())
  say()
  const step = Math.max(1, Math.ceil(samples.length / 40))
  const shown = samples.filter((_, i) => i % step === 0 || i === samples.length - 1)
  say(`Samples${step > 1 ? ` (every ${step}th; --json writes all)` : ''}: MB, counts, msg/s over the interval before the sample`)
  say(
    table(
      ['t', 'rss', 'anon', 'native', 'heap', 'ext', 'arrBuf', 'fds', 'thr', 'res', 'alive', 'msg/s', 'cpu%', 'lag99', 'restarts'],
      shown.map((s) => [clock(s.t * 1000), fmt(s.rss), fmt(s.rssAnon), fmt(s.nativeAnon), fmt(s.heapUsed, 2), fmt(s.external, 2), fmt(s.arrayBuffers, 2), s.fds, s.threads, s.resources, s.instancesAlive, Math.round(s.msgRate || 0), fmt(s.cpuPercent, 0), fmt(s.loopP99), s.restarts || 0]),
    ),
  )
  say()
  const { kept, rows } = trends(samples, warmupS)
  say(`Trends over ${kept.length} samples after the warm-up (${clock(warmupS * 1000)} on), per hour:`)
  say(
    table(
      ['metric', 'first', 'last', 'min', 'max', 'LSQ slope/h', 'r²', 'Theil-Sen/h', 'threshold/h', 'verdict'],
      rows.map((r) => [`${r.metric}${r.unit ? ` (${r.unit})` : ''}`, fmt(r.first, 2), fmt(r.last, 2), fmt(r.min, 2), fmt(r.max, 2), fmt(r.slope, 2), fmt(r.r2, 2), fmt(r.robust, 2), r.threshold, r.verdict]),
    ),
  )
  say()
  say('Workload totals:')
  let messages = 0
  let lostOutside = 0
  let unsettled = 0
  for (const stream of streams) {
    const t = stream.t
    messages += t.received
    lostOutside += t.lost + (stream.qos > 0 ? t.dup : 0) + t.bogus
    unsettled += t.unsettled
    const rejected = Object.entries(t.rejectedBy).map(([code, n]) => `${code} ${n}`).join(', ') || 'none'
    say(
      `  ${stream.name} (${stream.topic}, QoS ${stream.qos}, ${stream.rate}/s): published ${t.published}, resolved ${t.resolved}, rejected ${t.rejected} (${rejected}), received ${t.received}; ` +
        `lost ${t.lost} (+${t.lostNearRestart} near restarts), dup ${t.dup} (+${t.dupNearRestart} near restarts), unsettled ${t.unsettled}, rejected but arrived ${t.rejectedArrived}, late ${t.late}, bogus ${t.bogus}, behind ${t.behind}`,
    )
  }
  const c = churnTotals
  say(
    `  subscription churn: ${c.observers} observers on ${filterSeq} distinct names; ready ${c.readyOk}, ready timeouts ${c.readyTimeout}; unsubscribed before SUBACK ${c.earlyUnsubscribed} (ready rejected ERR_CLOSED ${c.readyRejectedClosed}); ` +
      `probes ${c.probes}: arrived ${c.probeArrived}, missed ${c.probeMissed} (+${c.probeMissedNearRestart} near restarts), dup ${c.probeDup}, rejected ${c.probeRejected}`,
  )
  const it = iterTotals
  say(`  for await: ${it.loops} loops, ${it.messages} messages, broken out early ${it.brokenEarly}, past the 256 buffered (held back) ${it.heldBack} messages, timed out ${it.timedOut}, invalid filter threw ERR_INVALID_TOPIC ${it.failedAsExpected}`)
  say(`  instances: made ${T.instancesMade}, closed ${T.instancesClosed}, dropped without close ${T.instancesDropped}, collected by the GC ${T.instancesCollected}`)
  say(`  instance churn: ${[...T.variants].map(([name, v]) => `${name} ${v.runs}${v.failed ? ` (${v.failed} FAILED)` : ''}${v.timeouts ? ` (${v.timeouts} failed near restarts)` : ''}`).join(', ')}`)
  say(`  broker restarts ${T.restarts} (failed ${T.restartFailures}); reconnects of the long-lived instances ${reconnects}; connectionDisrupted ${T.disrupted}; state changes ${T.stateChanges}; Hub events ${T.hubEvents}; Hub listen/stop ${T.hubListens}`)
  say(`  provoked errors: ${T.provoked.ok} with the expected code, ${T.provoked.unexpected} unexpected; callbackError ${T.callbackErrors}; invalidPayload ${T.invalidPayloads}`)
  say(`  provoked, by kind: ${Object.entries(provokedBy).map(([k, n]) => `${k} ${n}`).join('; ')}`)
  say(`  errors that reached churn observers: ${Object.entries(observerErrors).map(([k, n]) => `${k} ${n}`).join('; ') || 'none'}`)
  say(`  process warnings: ${[...T.warnings].map(([k, n]) => `${n}× ${k}`).join(' | ') || 'none'}`)
  say(`  messages received by the streams: ${messages}`)
  say()
  say('Before the workload vs after closing everything (forced GC):')
  const resourceDiff = {}
  for (const type of new Set([...Object.keys(baseline.resourceTypes), ...Object.keys(after.resourceTypes)])) {
    const d = (after.resourceTypes[type] || 0) - (baseline.resourceTypes[type] || 0)
    if (d !== 0) resourceDiff[type] = d
  }
  say(
    table(
      ['', 'rss MB', 'heap MB', 'ext MB', 'fds', 'threads', 'resources', 'alive'],
      [
        ['before', fmt(baseline.rss), fmt(baseline.heapUsed, 2), fmt(baseline.external, 2), baseline.fds, baseline.threads, baseline.resources, baseline.instancesAlive],
        ['after', fmt(after.rss), fmt(after.heapUsed, 2), fmt(after.external, 2), after.fds, after.threads, after.resources, after.instancesAlive],
      ],
    ),
  )
  say(`  resources left over by type: ${JSON.stringify(resourceDiff)}; after: ${JSON.stringify(after.resourceTypes)}`)
  say()
  const windowMin = kept.length > 1 ? (kept[kept.length - 1].t - kept[0].t) / 60 : 0
  if (windowMin < 20) {
    say(`Note: the trends cover ${fmt(windowMin)} min. malloc's memory (RSS outside V8) keeps rising for the first ~10 min of a run before it levels off (bench/FINDINGS.md, "Soak runs"): an RSS slope from under 20 min is that warm-up as often as not; run --minutes 30 or more for a verdict on RSS.`)
  }
  const grows = rows.filter((r) => r.verdict === 'GROWS')
  const noisy = rows.filter((r) => r.verdict === 'noisy')
  const leftOver = after.fds > baseline.fds || after.threads > baseline.threads || after.instancesAlive > 0
  const workloadProblems = lostOutside + unsettled + T.problemCount + (leftOver ? 1 : 0)
  if (T.problems.length > 0) say(`Problems (${T.problemCount}, first ${T.problems.length}):\n  ${T.problems.join('\n  ')}`)
  if (leftOver) say(`Left after close: fds ${after.fds - baseline.fds}, threads ${after.threads - baseline.threads}, instances alive ${after.instancesAlive}`)
  say(
    `VERDICT: ${grows.length ? `GROWS: ${grows.map((r) => `${r.metric} +${fmt(r.robust, 2)}${r.unit}/h (r² ${fmt(r.r2, 2)})`).join(', ')}` : 'no steady growth'}` +
      `${noisy.length ? `; noisy over threshold: ${noisy.map((r) => `${r.metric} ${fmt(r.robust, 2)}${r.unit}/h (r² ${fmt(r.r2, 2)})`).join(', ')}` : ''}` +
      `; workload problems: ${workloadProblems === 0 ? 'none' : workloadProblems}`,
  )
  return { text: out.join('\n'), code: grows.length ? 2 : workloadProblems ? 3 : 0, rows }
}

// ------------------------------------------------------------------------------------- main

let exiting = false
async function stopBrokerAndExit(code) {
  if (exiting) return
  exiting = true
  try {
    if (broker) await within(broker.stop(), 10_000)
  } finally {
    process.exit(code)
  }
}

let signals = 0
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    signals++
    if (signals === 1) {
      process.stderr.write(`\n${signal}: stopping the workload, then the report (again to quit at once)\n`)
      requestStop()
    } else if (signals > 2) stopBrokerAndExit(130)
  })
}
process.on('uncaughtException', (error) => {
  process.stderr.write(`soak: uncaught exception: ${error && error.stack}\n`)
  stopBrokerAndExit(1)
})
process.on('unhandledRejection', (error) => {
  process.stderr.write(`soak: unhandled rejection: ${error && error.stack}\n`)
  stopBrokerAndExit(1)
})

/**
 * Runs the workload until the time is up or a signal came, closes every instance, and returns
 * the samples and totals. Its instances are its locals: once it returns, nothing refers to them.
 */
async function workload() {
  const started = Date.now()
  const fast = { minDelayMs: 100, maxDelayMs: 1000 }
  const a = makeInstance({ endpoint: broker.tcpUrl, clientId: `soak-a-${process.pid}`, reconnect: fast })
  const b = makeInstance({ endpoint: broker.wsUrl, clientId: `soak-b-${process.pid}`, reconnect: fast, keepAlive: 5 })
  const c = makeInstance({ endpoint: broker.tcpUrl, reconnect: fast })
  const e = makeInstance({ endpoint: pick(endpoints()), reconnect: fast })
  const longLived = [a, b, c, e]
  for (const instance of longLived) {
    instance.on('connectionDisrupted', () => T.disrupted++)
    instance.on(CONNECTION_STATE_CHANGE, () => T.stateChanges++)
    instance.on('callbackError', () => T.callbackErrors++)
    instance.on('invalidPayload', () => T.invalidPayloads++)
  }
  const stopHub = Hub.listen('pubsub', () => T.hubEvents++)

  const rate = ARGS.rate
  const streams = [
    new Stream('A0', a, `soak/a/q0/${process.pid}`, 0, Math.round(rate * 0.4)),
    new Stream('A1', a, `soak/a/q1/${process.pid}`, 1, Math.round(rate * 0.4)),
    new Stream('B1', b, `soak/b/q1/${process.pid}`, 1, Math.round(rate * 0.2)),
  ]
  const streamSubscriptions = []
  for (const stream of streams) {
    const subscription = stream.pubsub.subscribe(stream.topic, { qos: stream.qos }).subscribe({
      next: (message) => stream.onMessage(message),
      error: (error) => problem(`stream ${stream.name} observer failed: ${error.code} ${error.message}`),
    })
    streamSubscriptions.push(subscription)
    await subscription.ready
  }
  // A second observer of A0's filter (it must see exactly what the first sees), on B observers
  // whose callbacks throw or reject every 50th message (callbackError), and one on A that gets
  // text that is not JSON (invalidPayload).
  let secondSeen = 0
  streamSubscriptions.push(a.subscribe(streams[0].topic).subscribe({ next: () => secondSeen++ }))
  let thrown = 0
  streamSubscriptions.push(
    b.subscribe(streams[2].topic, { qos: 1 }).subscribe({
      next: (message) => {
        if (message.s % 50 === 0) {
          thrown++
          throw new Error('an observer that throws')
        }
      },
    }),
  )
  streamSubscriptions.push(
    b.subscribe(streams[2].topic, { qos: 1 }).subscribe({
      next: async (message) => {
        if (message.s % 50 === 25) {
          thrown++
          throw new Error('an async observer that rejects')
        }
      },
    }),
  )
  const badJsonTopic = `soak/a/bad/${process.pid}`
  let badJsonSent = 0
  streamSubscriptions.push(a.subscribe(badJsonTopic, { qos: 1 }).subscribe({ next: () => problem('a payload that is not JSON reached next') }))
  await Promise.all(streamSubscriptions.map((s) => s.ready))

  const samples = []
  let reconnectsOf = () => longLived.reduce((sum, p) => sum + p.stats().reconnects, 0)
  const counters = () => {
    const received = streams.reduce((sum, s) => sum + s.t.received, 0)
    const sample = { received, restarts: T.restarts, reconnects: reconnectsOf() }
    return sample
  }

  // The loops.
  const loops = []
  loops.push(restartLoop())
  const publishTimer = setInterval(() => {
    if (!running) return
    for (const stream of streams) stream.tick()
  }, 10)
  const judgeTimer = setInterval(() => {
    for (const stream of streams) stream.judge()
  }, 1_000)
  const provokeTimer = setInterval(() => {
    if (!running) return
    provokeErrors(a, c)
    a.publish(badJsonTopic, Buffer.from('not json {'), { qos: 1 }).then(() => badJsonSent++, () => {})
    // Hub listeners come and go too.
    const stop = Hub.listen('pubsub', () => {})
    T.hubListens++
    setTimeout(stop, rand(2_000))
  }, 500)
  for (let slot = 0; slot < 200; slot++) loops.push(poolSlot(c))
  loops.push(iteratorLoop(e))
  loops.push(instanceChurn(1), instanceChurn(2))

  // Sampling.
  let warmupSnapshot = null
  let lastSampleAt = Date.now()
  const end = started + ARGS.minutes * 60_000
  while (running) {
    const waited = await pause(Math.min(ARGS.sampleEvery * 1000, Math.max(0, end - Date.now())))
    // Stopped by a signal: no sample of a workload winding down.
    if (waited !== 'timeout') break
    const now = Date.now()
    const count = counters()
    const sample = await measure(count)
    sample.msgRate = ((count.received - lastMessages) * 1000) / Math.max(1, now - lastSampleAt)
    lastMessages = count.received
    lastSampleAt = now
    samples.push(sample)
    if (ARGS.snapshots && !warmupSnapshot && sample.t >= ARGS.warmup * 60) warmupSnapshot = snapshot('warmup')
    process.stderr.write(
      `[${clock(sample.t * 1000)}] rss ${fmt(sample.rss)} MB (anon ${fmt(sample.rssAnon)}, outside V8 ${fmt(sample.nativeAnon)}), heap ${fmt(sample.heapUsed, 2)} MB, ext ${fmt(sample.external, 2)} MB, ` +
        `fds ${sample.fds}, threads ${sample.threads}, resources ${sample.resources}, alive ${sample.instancesAlive}, ${Math.round(sample.msgRate)} msg/s, ` +
        `cpu ${fmt(sample.cpuPercent, 0)} %, lag p99 ${fmt(sample.loopP99)} ms, restarts ${T.restarts}, problems ${T.problemCount}\n`,
    )
    if (Date.now() >= end - 500) requestStop()
  }

  if (ARGS.snapshots) snapshot('end')
  // Wind down: stop publishing, let what is on its way arrive, close everything.
  process.stderr.write('stopping: waiting for the loops and for what is in flight\n')
  clearInterval(publishTimer)
  clearInterval(provokeTimer)
  const loopsDone = await within(Promise.all(loops), 60_000)
  if (loopsDone === 'timeout') problem('the workload loops did not end within 60 s of the stop')
  if (broker && !broker.running()) await broker.start().catch(() => {})
  // Everything published gets its answer (or 30 s).
  for (let i = 0; i < 300 && streams.some((s) => s.t.resolved + s.t.rejected < s.t.published); i++) await sleep(100)
  await sleep(2_000)
  clearInterval(judgeTimer)
  for (const stream of streams) stream.judge(true)
  const expectedThrows = thrown
  if (secondSeen !== streams[0].t.received) problem(`the second observer of A0 saw ${secondSeen} messages, the first ${streams[0].t.received}`)
  if (T.callbackErrors !== expectedThrows) problem(`callbackError ${T.callbackErrors}, callbacks that threw ${expectedThrows}`)
  if (T.invalidPayloads > badJsonSent + 5 || T.invalidPayloads === 0) problem(`invalidPayload ${T.invalidPayloads} for ${badJsonSent} non-JSON payloads acknowledged`)
  const reconnects = reconnectsOf()
  for (const subscription of streamSubscriptions) subscription.unsubscribe()
  stopHub()
  await Promise.all(longLived.map((instance) => closeInstance(instance)))
  longLived.length = 0
  streams.forEach((s) => (s.pubsub = null))
  reconnectsOf = () => 0
  return { samples, started, reconnects, streams: streams.map(({ name, topic, qos, rate, t }) => ({ name, topic, qos, rate, t })) }
}

async function main() {
  broker = await startMosquitto({ lines: ['max_queued_messages 100000', 'max_inflight_messages 0'] })
  // The port of the instances that cannot connect: held by a server that resets every
  // connection, so that no other process (a test's broker) can take it during the run.
  const deadServer = net.createServer((socket) => socket.resetAndDestroy())
  await new Promise((resolve, reject) => deadServer.once('error', reject).listen(0, '127.0.0.1', resolve))
  deadPort = deadServer.address().port
  process.stderr.write(`mosquitto ${broker.pid()} on ${broker.wsUrl} and ${broker.tcpUrl}; ${ARGS.minutes} min\n`)

  machine()
  // Before anything: the addon is loaded, no instance made.
  const baseline = await measure()
  const { samples, started, reconnects, streams } = await workload()
  // Let the instances be collected and their connections end.
  for (let i = 0; i < 50 && T.instancesMade - T.instancesCollected > 0; i++) {
    global.gc()
    await sleep(100)
  }
  await sleep(1_500)
  const after = await measure()
  const ended = Date.now()

  const result = report({ samples, baseline, after, streams, started, ended, reconnects })
  process.stdout.write(`${result.text}\n`)
  if (ARGS.json) fs.writeFileSync(ARGS.json, JSON.stringify({ args: ARGS, machine: machine(), samples, baseline, after, trends: result.rows, totals: { streams: streams.map((s) => ({ name: s.name, qos: s.qos, ...s.t })), churn: churnTotals, iterators: iterTotals, variants: Object.fromEntries(T.variants), instances: { made: T.instancesMade, closed: T.instancesClosed, dropped: T.instancesDropped, collected: T.instancesCollected }, restarts: T.restarts, reconnects } }, null, 1))
  return result.code
}

main().then(
  (code) => stopBrokerAndExit(code),
  (error) => {
    process.stderr.write(`soak failed: ${error && error.stack}\n`)
    if (broker) process.stderr.write(`broker log:\n${broker.log().slice(-4000)}\n`)
    stopBrokerAndExit(1)
  },
)
