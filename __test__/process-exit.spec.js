'use strict'
// Like a socket, a PubSub keeps Node running while it has work (a subscription, a pending
// publish, a close in progress) and lets the process exit on its own when it has none. Each
// test runs a small script in a child Node process and watches how, and how fast, it ends.
const test = require('ava')
const { useMosquitto, freePort } = require('./helpers/mosquitto.js')
const { topicNamer, pubsubOn, listen, sleep, pubsubScript, runScript, printed } = require('./helpers/pubsub.js')

/** How long a script that should end by itself may take. */
const EXIT_LIMIT_MS = 10_000
const broker = useMosquitto(test)

const uniqueTopic = topicNamer('process-exit')
const newPubSub = pubsubOn(broker)

/**
 * Runs `body` in a child Node process after a prelude that makes `pubsub`, a PubSub with
 * `options` on the file's broker (BROKER, unless `env` says otherwise); see `runScript`.
 */
function runPubSubScript(t, body, env = {}, options = {}) {
  return runScript(t, pubsubScript(body, options), { BROKER: broker.wsUrl, ...env })
}

/** Waits for the script to end by itself; kills it and fails the test if it does not in time. */
async function exitOf(t, run, limitMs = EXIT_LIMIT_MS) {
  let timer
  const outcome = await Promise.race([
    run.exited,
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), limitMs)
    }),
  ])
  clearTimeout(timer)
  if (outcome === null) {
    run.child.kill('SIGKILL')
    t.fail(`the script was still running after ${limitMs} ms\nstdout: ${run.stdout}\nstderr: ${run.stderr}`)
    return { code: null, signal: 'SIGKILL', ms: limitMs }
  }
  return outcome
}

/** Waits for the script to end by itself, with code 0, having printed exactly `stdout`. */
async function exitsCleanly(t, run, stdout, message) {
  const { code, signal } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(signal, null)
  t.is(run.stdout, stdout, message)
}

const stillRunning = (run) => run.child.exitCode === null && run.child.signalCode === null

test('a script whose publish of a detached ArrayBuffer view rejected exits by itself', async (t) => {
  // The copy into the publish segment threw after the publish was registered as pending: the
  // promise rejected (without a code), and the pending publish kept the process up for good.
  const run = runPubSubScript(
    t,
    `pubsub.publish(process.env.TOPIC, 'first', { qos: 1 }).then(() => {
       const buffer = new ArrayBuffer(8)
       const view = new Uint8Array(buffer)
       structuredClone(buffer, { transfer: [buffer] })
       return pubsub.publish(process.env.TOPIC, view, { qos: 1 })
     }).then(() => console.log('published'), (error) => console.log(error.code))`,
    { TOPIC: uniqueTopic('detached') },
  )
  await exitsCleanly(t, run, 'ERR_PAYLOAD\n')
})

test('a script that only publishes exits by itself once the publish resolves', async (t) => {
  const topic = uniqueTopic('publish-only')
  const { values } = await listen(t, newPubSub(t), topic)

  const run = runPubSubScript(
    t,
    `pubsub.publish(process.env.TOPIC, { from: 'child' }, { qos: 1 }).then(() => console.log('published'))`,
    { TOPIC: topic },
  )
  await exitsCleanly(t, run, 'published\n')
  t.is(run.stderr, '')
  await sleep(100)
  t.like(values[0], { from: 'child' })
})

test('a script that only publishes and exits by itself leaves the broker cleanly', async (t) => {
  const willTopic = uniqueTopic('publish-only-will')
  const will = await watchWill(t, willTopic)
  const run = runPubSubScript(
    t,
    `pubsub.publish(process.env.TOPIC, 'x', { qos: 1 }).then(() => console.log('published'))`,
    { TOPIC: uniqueTopic('publish-only') },
    { will: { topic: willTopic, message: 'abrupt', qos: 1 } },
  )
  await exitsCleanly(t, run, 'published\n')
  t.deepEqual(await will.settle(), [], 'a normal end of the program is not an abrupt disconnect: no will')
})

test('a script with an active subscription stays alive and keeps receiving', async (t) => {
  const topic = uniqueTopic('stays-alive')
  const run = runPubSubScript(
    t,
    `const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next: (value) => console.log('got ' + value) })
     sub.ready.then(() => console.log('ready'))`,
    { TOPIC: topic },
  )
  await printed(run, 'ready')
  await sleep(1_500)
  t.true(stillRunning(run), `the script ended: ${run.stderr}`)

  const publisher = newPubSub(t)
  await publisher.publish(topic, 'still listening', { qos: 1 })
  await printed(run, 'got still listening')
  t.true(stillRunning(run))

  run.child.kill('SIGTERM')
  const { signal } = await exitOf(t, run)
  t.is(signal, 'SIGTERM', 'it ended only because the test killed it')
})

test('a script that subscribes and then unsubscribes exits by itself', async (t) => {
  const run = runPubSubScript(
    t,
    `const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
     sub.ready.then(() => { console.log('ready'); sub.unsubscribe() })`,
    { TOPIC: uniqueTopic('unsubscribe') },
  )
  await exitsCleanly(t, run, 'ready\n')
})

/**
 * Watches `topic` (a will topic) from this process. `settle()` publishes a control message
 * and resolves with everything that arrived before it: the will, if the broker sent one.
 */
async function watchWill(t, topic) {
  const watcher = newPubSub(t)
  const { values } = await listen(t, watcher, topic, { format: 'string' })
  return {
    async settle() {
      await sleep(300)
      await watcher.publish(topic, 'control', { qos: 1 })
      const deadline = Date.now() + 5_000
      while (!values.includes('"control"') && Date.now() < deadline) await sleep(10)
      return values.filter((v) => v !== '"control"')
    },
  }
}

test('after the last unsubscribe, Node stays up until the disconnect has finished: the broker sees no abrupt drop', async (t) => {
  const willTopic = uniqueTopic('unsubscribe-will')
  const will = await watchWill(t, willTopic)
  const run = runPubSubScript(
    t,
    `const states = []
     pubsub.on('ConnectionStateChange', (state) => states.push(state))
     process.on('exit', () => console.log(states.join(' → ')))
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
     sub.ready.then(() => { console.log('ready'); sub.unsubscribe() })`,
    { TOPIC: uniqueTopic('unsubscribe') },
    { will: { topic: willTopic, message: 'abrupt', qos: 1 } },
  )
  await exitsCleanly(
    t,
    run,
    'ready\nConnecting → Connected → ConnectedPendingDisconnect → Disconnected\n',
    'Node stays up until the disconnect the last unsubscribe started has finished',
  )
  t.deepEqual(await will.settle(), [], 'the broker saw a clean DISCONNECT, so it did not publish the will')
})

test('with a will, the connection outlives the last unsubscribe: a process killed afterwards gets its will published', async (t) => {
  // The will is the instance's presence: a connection ended because nothing is subscribed would
  // take it away while the process runs on, and a crash then would leave no trace.
  const willTopic = uniqueTopic('idle-will')
  const will = await watchWill(t, willTopic)
  const run = runPubSubScript(
    t,
    `const states = []
     pubsub.on('ConnectionStateChange', (state) => states.push(state))
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
     sub.ready.then(() => {
       sub.unsubscribe()
       setTimeout(() => console.log(states.join(' → ')), 300)
     })
     setInterval(() => {}, 1_000) // the process goes on with other work`,
    { TOPIC: uniqueTopic('idle-will') },
    { will: { topic: willTopic, message: 'gone', qos: 1 } },
  )
  await printed(run, 'Connecting → Connected')
  run.child.kill('SIGKILL')
  t.deepEqual(await will.settle(), ['"gone"'], 'the broker published the will of the killed process')
})

test('a script that unsubscribes before the subscription is acknowledged exits by itself', async (t) => {
  const run = runPubSubScript(
    t,
    `const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
     sub.unsubscribe()
     console.log('unsubscribed')`,
    { TOPIC: uniqueTopic('early-unsubscribe') },
  )
  await exitsCleanly(t, run, 'unsubscribed\n')
})

test('a script that subscribes and then calls close() exits with code 0', async (t) => {
  const run = runPubSubScript(
    t,
    `const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {}, complete: () => console.log('complete') })
     sub.ready.then(() => pubsub.close()).then(() => console.log('closed'))`,
    { TOPIC: uniqueTopic('close') },
  )
  await exitsCleanly(t, run, 'complete\nclosed\n')
  t.is(run.stderr, '')
})

/**
 * For a script that prints 'ready', then 'got <message>' for each message on `topic` and closes
 * on 'close': sends 'first', checks the script survived what its callbacks did (`what`), then
 * 'second' and 'close'.
 */
async function sendFirstSecondClose(t, run, topic, what) {
  await printed(run, 'ready')
  const publisher = newPubSub(t)
  await publisher.publish(topic, 'first', { qos: 1 })
  await printed(run, 'got first')
  await sleep(500)
  t.true(stillRunning(run), `${what} ended the process: ${run.stderr}`)
  await publisher.publish(topic, 'second', { qos: 1 })
  await printed(run, 'got second')
  await publisher.publish(topic, 'close', { qos: 1 })
}

test('a subscriber whose next callback throws keeps running, warns on stderr, and exits 0 after close()', async (t) => {
  const topic = uniqueTopic('throwing')
  const run = runPubSubScript(
    t,
    // No 'callbackError' listener: the throws are reported by a warning.
    `const sub = pubsub.subscribe(process.env.TOPIC).subscribe({
       next(value) {
         console.log('got ' + value)
         if (value === 'close') pubsub.close().then(() => console.log('closed'))
         throw new Error('boom from ' + value)
       },
     })
     sub.ready.then(() => console.log('ready'))`,
    { TOPIC: topic },
  )
  await sendFirstSecondClose(t, run, topic, 'a throwing callback')
  await exitsCleanly(t, run, 'ready\ngot first\ngot second\ngot close\nclosed\n')
  t.regex(run.stderr, /NativePubSubWarning: A subscriber callback threw .*boom from first/)
  t.is(run.stderr.match(/NativePubSubWarning/g).length, 1, 'one warning, not one per throw')
})

test('async callbacks that reject, in every slot, are reported as throws are: the script keeps running and exits 0 after close()', async (t) => {
  // An async function that throws returns a rejected promise; left unhandled, Node ends the
  // process with code 1. Observer callbacks, event listeners and Hub listeners are often async.
  const topic = uniqueTopic('rejecting')
  const run = runPubSubScript(
    t,
    `const { Hub } = require(process.env.MQTT_JS)
     const rejecting = (slot) => async () => { throw new Error('rejected in ' + slot) }
     let reported = 0
     pubsub.on('callbackError', async (error) => { reported++; throw error })
     pubsub.on('ConnectionStateChange', rejecting('a ConnectionStateChange listener'))
     Hub.listen('pubsub', rejecting('a Hub listener'))
     pubsub.subscribe('an/#/invalid/filter').subscribe({ error: rejecting('error') })
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({
       async next(value) {
         console.log('got ' + value)
         if (value === 'close') pubsub.close().then(() => setTimeout(() => console.log('closed after ' + reported + ' callbackErrors'), 100))
         throw new Error('rejected in next, ' + value)
       },
       complete: rejecting('complete'),
     })
     sub.ready.then(() => console.log('ready'))`,
    { TOPIC: topic },
  )
  await sendFirstSecondClose(t, run, topic, 'a rejecting callback')
  // error once, next three times, complete once.
  await exitsCleanly(t, run, 'ready\ngot first\ngot second\ngot close\nclosed after 5 callbackErrors\n')
  // The 'callbackError' listener heard each, and its own rejection is the warning.
  t.notRegex(run.stderr, /A subscriber callback threw/)
  t.regex(run.stderr, /NativePubSubWarning: A 'callbackError' listener threw .*rejected in error/)
  t.regex(run.stderr, /NativePubSubWarning: A 'ConnectionStateChange' listener threw .*rejected in a ConnectionStateChange listener/)
  t.regex(run.stderr, /NativePubSubWarning: A Hub listener on 'pubsub' threw \(its further throws are not reported\): .*rejected in a Hub listener/)
  t.notRegex(run.stderr, /Unhandled|unhandled/)
})

test('a script that catches a constructor error exits with code 0', async (t) => {
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     try {
       new PubSub({ endpoint: 'http://127.0.0.1/mqtt' })
     } catch (error) {
       console.log(error.code)
     }`,
  )
  await exitsCleanly(t, run, 'ERR_INVALID_ENDPOINT\n')
})

test('a script whose publish fails to connect exits once it has handled the rejection', async (t) => {
  const port = await freePort()
  // QoS 0 is not kept for a reconnect (offlineQueue 'qos1'): it fails with the first attempt,
  // and the reconnect waiting in the background does not hold the process.
  const run = runPubSubScript(
    t,
    `pubsub.publish('a/b', 'x', { qos: 0 }).catch((error) => console.log(error.code))`,
    { BROKER: `mqtt://127.0.0.1:${port}` },
  )
  await exitsCleanly(t, run, 'ERR_CONNECTION\n')
})

test('a pending publish keeps the script alive until it settles', async (t) => {
  const topic = uniqueTopic('pending')
  // Awaited nowhere: only the pending operation itself can keep the process running.
  const run = runPubSubScript(
    t,
    `pubsub.publish(process.env.TOPIC, 'x', { qos: 2 }).then(() => console.log('settled'))`,
    { TOPIC: topic },
  )
  await exitsCleanly(t, run, 'settled\n', 'Node did not exit before the QoS 2 handshake completed')
})

test('close() in the same tick as a burst of publishes rejects the ones still waiting with ERR_CLOSED, and the script exits by itself', async (t) => {
  // The tick's first publish goes to the connection at once; the ones after it still wait in
  // JS when close() comes. Every one must settle, and none may keep Node running. The first
  // may be acknowledged before close(): the connection is made in the background, and on a
  // loaded machine the JS thread can be descheduled long enough for PUBLISH and PUBACK (seen
  // in CI); it then resolves, as it reached the broker.
  const run = runPubSubScript(
    t,
    `const outcomes = []
     for (let i = 0; i < 3; i++) pubsub.publish(process.env.TOPIC, i, { qos: 1 }).then(() => (outcomes[i] = 'resolved'), (error) => (outcomes[i] = error.code))
     pubsub.close()
     process.on('exit', () => console.log(outcomes.join(' ')))`,
    { TOPIC: uniqueTopic('close-burst') },
  )
  const { code, signal } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(signal, null)
  const [first, ...held] = run.stdout.trim().split(' ')
  t.deepEqual(held, ['ERR_CLOSED', 'ERR_CLOSED'], 'the publishes still waiting in JS')
  t.true(first === 'ERR_CLOSED' || first === 'resolved', `the publish handed over: ${run.stdout}`)
})

test('close() in the same tick as a burst of publishes, while the connection cannot be made yet, rejects every one with ERR_CLOSED', async (t) => {
  // Nothing answers on the port, so the first publish cannot reach a broker before close().
  const port = await freePort()
  const run = runPubSubScript(
    t,
    `const outcomes = []
     for (let i = 0; i < 3; i++) pubsub.publish('a/b', i, { qos: 1 }).then(() => (outcomes[i] = 'resolved'), (error) => (outcomes[i] = error.code))
     pubsub.close()
     process.on('exit', () => console.log(outcomes.join(' ')))`,
    { BROKER: `mqtt://127.0.0.1:${port}` },
  )
  await exitsCleanly(t, run, 'ERR_CLOSED ERR_CLOSED ERR_CLOSED\n')
})
