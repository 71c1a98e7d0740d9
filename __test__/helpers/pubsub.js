'use strict'
// The small utilities the spec files share: unique topics, PubSub instances closed at the end of
// the test, receivers that wait for messages, polling and sleeping, an independent MQTT.js
// client, stand-in servers, child Node scripts, and a per-file broker fixture.
const net = require('node:net')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { inspect } = require('node:util')
const { PubSub, TOPIC } = require('../../mqtt.js')

/** The package's generic MQTT entry point, for scripts run in a child process. */
const MQTT_JS = path.join(__dirname, '..', '..', 'mqtt.js')

/**
 * A message's TOPIC key as console.log prints it on the Node running the tests (child scripts run
 * the same binary): `[Symbol(topic)]` up to Node 22, `Symbol(topic)` from Node 24 on, which
 * prints enumerable symbol keys without brackets (nodejs/node#55778). For tests that read what a
 * script printed, so that they check the exact text on every Node.
 */
const TOPIC_KEY = inspect({ [TOPIC]: 0 }).replace(/^\{ (.*): 0 \}$/, '$1')
if (!/^\[?Symbol\(topic\)\]?$/.test(TOPIC_KEY)) throw new Error(`This Node prints the TOPIC key as ${TOPIC_KEY}: update the tests that read printed messages`)

/** Every byte value 0..255: plenty of sequences that are not valid UTF-8. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

// ------------------------------------------------------------------------- per-file fixtures

/**
 * Runs `start()` before the file's tests and the `stop()` of what it resolves with after them,
 * pass or fail. Returns a handle that gets the resolved object's properties once `start()` is
 * done, so tests read `handle.wsUrl` and the like: `const broker = useForFile(test, start)`.
 * @template T
 * @param {import('ava').TestFn} test
 * @param {() => Promise<T & { stop(): Promise<void> }>} start
 * @returns {T & { stop(): Promise<void> }}
 */
function useForFile(test, start) {
  const handle = {}
  test.before(async () => {
    Object.assign(handle, await start())
  })
  test.after.always(async () => {
    if (handle.stop) await handle.stop()
  })
  return handle
}

// -------------------------------------------------------------------------- topics, PubSubs

let topicCount = 0
/**
 * A namer of topics for one spec file: `const uniqueTopic = topicNamer('errors')`, then
 * `uniqueTopic('auth')` is a topic `errors/auth/<pid>-<n>-<random>` that no other test of the
 * run (nor of an earlier run) uses. Names may contain `/` but no wildcards.
 * @param {string} prefix the first level(s), usually the spec file's name
 * @returns {(name: string) => string}
 */
function topicNamer(prefix) {
  return (name) => `${prefix}/${name}/${process.pid}-${++topicCount}-${Math.random().toString(36).slice(2, 8)}`
}

/**
 * A client id `<name>-<pid>-<random>` that no other test of the run (nor of an earlier run)
 * uses: for tests whose broker keeps a session or watches for a client id taken over.
 */
function uniqueClientId(name) {
  return `${name}-${process.pid}-${Math.random().toString(36).slice(2)}`
}

/** How long a test's teardown waits for `close()`: a close that never settles is a failure, not a hung run. */
const CLOSE_TIMEOUT_MS = 10_000

/** `new PubSub(options)`, closed when the test `t` ends. */
function openPubSub(t, options) {
  const pubsub = new PubSub(options)
  t.teardown(() => {
    let timer
    const timeout = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`close() did not settle within ${CLOSE_TIMEOUT_MS} ms`)), CLOSE_TIMEOUT_MS)
    })
    return Promise.race([pubsub.close(), timeout]).finally(() => clearTimeout(timer))
  })
  return pubsub
}

/**
 * `openPubSub` with a default endpoint: `const newPubSub = pubsubOn(broker)`, then
 * `newPubSub(t)` is a PubSub on the broker's WebSocket listener and `newPubSub(t, { endpoint })`
 * one elsewhere. `broker` is read when a test calls it, so a `useForFile` handle works.
 * @param {{ wsUrl: string }} broker
 */
function pubsubOn(broker) {
  return (t, options = {}) => openPubSub(t, { endpoint: broker.wsUrl, ...options })
}

// -------------------------------------------------------------------------------- receiving

/**
 * An observer that records what it receives; `take(n)` resolves with the first n values, and
 * fails (rejects) when they do not arrive within `timeoutMs` (or `take`'s own, for a large `n`)
 * or the subscription errors.
 * `received` holds every value so far and `errors` every error the observer got.
 */
function receiver(timeoutMs = 5_000) {
  const received = []
  const errors = []
  const waiting = new Set()
  let failure = null
  const check = () => {
    for (const wait of waiting) {
      if (failure) wait.reject(failure)
      else if (received.length >= wait.n) wait.resolve(received.slice(0, wait.n))
      else continue
      clearTimeout(wait.timer)
      waiting.delete(wait)
    }
  }
  return {
    received,
    errors,
    observer: {
      next(value) {
        received.push(value)
        check()
      },
      error(error) {
        errors.push(error)
        failure = error
        check()
      },
    },
    take(n, withinMs = timeoutMs) {
      return new Promise((resolve, reject) => {
        const wait = { n, resolve, reject }
        wait.timer = setTimeout(() => {
          waiting.delete(wait)
          reject(new Error(`Expected ${n} message(s) within ${withinMs} ms, received ${received.length}`))
        }, withinMs)
        waiting.add(wait)
        check()
      })
    },
  }
}

/**
 * Subscribes a new `receiver()` to `observable` (without waiting for the SUBACK) and returns it,
 * with the Subscription as `subscription`.
 */
function observe(observable) {
  const inbox = receiver()
  inbox.subscription = observable.subscribe(inbox.observer)
  return inbox
}

/**
 * `pubsub.subscribe(...args)` (either call form) observed by a `receiver()`; resolves with the
 * receiver once the broker acknowledged the subscription. Its `subscription` is the Subscription.
 */
async function subscribed(pubsub, ...args) {
  const inbox = observe(pubsub.subscribe(...args))
  await inbox.subscription.ready
  return inbox
}

/**
 * Like `subscribed`, and the subscription ends with the test `t`. Resolves with
 * `{ values, errors, sub, take }`: the values and errors the observer got so far, the
 * Subscription, and the receiver's `take(n)`.
 */
async function listen(t, pubsub, filter, options) {
  const inbox = observe(pubsub.subscribe(filter, options))
  t.teardown(() => inbox.subscription.unsubscribe())
  await inbox.subscription.ready
  return { values: inbox.received, errors: inbox.errors, sub: inbox.subscription, take: inbox.take }
}

/** An array that fills with the first argument of every `event` that `emitter` emits. */
function recordEvents(emitter, event) {
  const events = []
  emitter.on(event, (value) => events.push(value))
  return events
}

/** A received JSON value as plain data (without the TOPIC key objects carry). */
function plain(value) {
  return JSON.parse(JSON.stringify(value))
}

// ---------------------------------------------------------------------------------- waiting

/** Resolves once `predicate()` holds, checking every 10 ms; rejects after `timeoutMs`. */
function waitFor(predicate, timeoutMs = 5_000, what = 'condition') {
  const deadline = Date.now() + timeoutMs
  return new Promise((resolve, reject) => {
    const check = () => {
      if (predicate()) resolve()
      else if (Date.now() > deadline) reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      else setTimeout(check, 10)
    }
    check()
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// ------------------------------------------------------------------- other clients, servers

let mqttJsCount = 0
/**
 * An independent MQTT.js client connected to `url`, ended when the test `t` ends;
 * `messages` collects what it receives as `{ topic, payload, qos, retain }`.
 * @returns {Promise<{ client: import('mqtt').MqttClient, messages: Array<{ topic: string,
 *   payload: Buffer, qos: number, retain: boolean }> }>}
 */
async function mqttJs(t, url) {
  const mqtt = require('mqtt')
  const client = await mqtt.connectAsync(url, {
    reconnectPeriod: 0,
    clientId: `mqttjs-${process.pid}-${++mqttJsCount}-${Math.random().toString(36).slice(2, 8)}`,
  })
  t.teardown(() => client.endAsync(true))
  const messages = []
  client.on('message', (topic, payload, packet) => messages.push({ topic, payload, qos: packet.qos, retain: packet.retain }))
  return { client, messages }
}

/**
 * A TCP server on 127.0.0.1 that hands each connection to `onSocket` (socket errors ignored);
 * its connections are destroyed and it is closed when the test `t` ends. Resolves with its port.
 */
async function tcpServer(t, onSocket) {
  const sockets = new Set()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    onSocket(socket)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return server.address().port
}

/**
 * A TCP server on 127.0.0.1 that answers the first packet of each connection with `reply` (or
 * with what `reply(packet)` returns), or, when `reply` is null, accepts connections and never
 * answers (connecting hangs). Closed when the test `t` ends. Resolves with its `mqtt://` URL.
 */
async function fakeServer(t, reply) {
  const port = await tcpServer(t, (socket) => {
    if (reply) socket.once('data', (data) => socket.write(typeof reply === 'function' ? reply(data) : reply))
  })
  return `mqtt://127.0.0.1:${port}`
}

// ---------------------------------------------------------------------- child Node scripts

/**
 * The source of a child script that loads the package and makes `pubsub`, a
 * `new PubSub({ endpoint: process.env.BROKER, ...options })`, then runs `body`.
 */
function pubsubScript(body, options = {}) {
  return `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER, ...${JSON.stringify(options)} })
     ${body}`
}

/**
 * Runs `source` with `node -e` (`nodeArgs` first, e.g. `--input-type=module`), with `env` added
 * to the environment (a variable set to `undefined` is removed); the script finds the package
 * in MQTT_JS; `stdin: 'pipe'` lets the test write to it. The child is killed when the test `t`
 * ends, whatever happens. Returns
 * `{ child, stdout, stderr, started, exited }`: the output so far, and a promise of
 * `{ code, signal, ms }`.
 */
function runScript(t, source, env = {}, { nodeArgs = [], cwd, stdin = 'ignore' } = {}) {
  const childEnv = { ...process.env, MQTT_JS, ...env }
  for (const [name, value] of Object.entries(childEnv)) if (value === undefined) delete childEnv[name]
  const child = spawn(process.execPath, [...nodeArgs, '-e', source], { cwd, env: childEnv, stdio: [stdin, 'pipe', 'pipe'] })
  const run = { child, stdout: '', stderr: '', started: Date.now() }
  child.stdout.on('data', (d) => (run.stdout += d))
  child.stderr.on('data', (d) => (run.stderr += d))
  // 'close', not 'exit': only then has all the output been read.
  run.exited = new Promise((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal, ms: Date.now() - run.started }))
  })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return run
}

/** Resolves once the script `run` printed the line `line`; rejects if it exits or times out first. */
function printed(run, line, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const check = () => run.stdout.split('\n').includes(line)
    if (check()) return resolve()
    const timer = setTimeout(() => {
      run.child.stdout.off('data', onData)
      reject(new Error(`the script did not print '${line}' within ${timeoutMs} ms\nstdout: ${run.stdout}\nstderr: ${run.stderr}`))
    }, timeoutMs)
    const onData = () => {
      if (!check()) return
      clearTimeout(timer)
      run.child.stdout.off('data', onData)
      resolve()
    }
    run.child.stdout.on('data', onData)
    run.exited.then(() => {
      if (check()) return
      clearTimeout(timer)
      reject(new Error(`the script exited without printing '${line}'\nstdout: ${run.stdout}\nstderr: ${run.stderr}`))
    })
  })
}

/** Waits for the script to end by itself; fails the test (and kills it) if it does not within `limitMs`. */
async function exitOf(t, run, limitMs = 10_000) {
  let timer
  const outcome = await Promise.race([run.exited, new Promise((resolve) => (timer = setTimeout(resolve, limitMs, null)))])
  clearTimeout(timer)
  if (outcome === null) {
    run.child.kill('SIGKILL')
    t.fail(`the script was still running after ${limitMs} ms\nstdout: ${run.stdout}\nstderr: ${run.stderr}`)
    return { code: null, signal: 'SIGKILL' }
  }
  return outcome
}

/** Whether the script's process has not ended yet. */
const running = (run) => run.child.exitCode === null && run.child.signalCode === null

/** Process warnings of this package whose message includes `needle`, while test `t` runs. */
function captureWarnings(t, needle) {
  const warnings = []
  const listener = (warning) => {
    if (warning.name === 'NativePubSubWarning' && warning.message.includes(needle)) warnings.push(warning)
  }
  process.on('warning', listener)
  t.teardown(() => process.off('warning', listener))
  return warnings
}

module.exports = {
  tcpServer,
  exitOf,
  running,
  MQTT_JS,
  TOPIC_KEY,
  ALL_BYTES,
  useForFile,
  topicNamer,
  uniqueClientId,
  openPubSub,
  pubsubOn,
  receiver,
  observe,
  subscribed,
  listen,
  recordEvents,
  captureWarnings,
  plain,
  waitFor,
  sleep,
  mqttJs,
  fakeServer,
  pubsubScript,
  runScript,
  printed,
}
