'use strict'
// A publish's AbortSignal (`{ signal }`): aborting it withdraws what is not sent yet (a command
// waiting out an outage goes stale and must not arrive late), and bounds the wait for an
// acknowledgement (`AbortSignal.timeout`). The publish rejects as Node's own APIs do, with an
// AbortError that says whether some of it had been sent.
const { getEventListeners } = require('node:events')
const test = require('ava')
const { useMosquitto, startMosquitto } = require('./helpers/mosquitto.js')
const { startTcpProxy } = require('./helpers/tcp-proxy.js')
const { topicNamer, openPubSub, listen, waitFor, sleep } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('publish-abort')
const broker = useMosquitto(test)

/** Asserts `error` is the AbortError of an aborted publish. */
function isAborted(t, error, { sent }) {
  t.is(error.name, 'AbortError')
  t.is(error.code, 'ABORT_ERR')
  t.is(error.sent, sent)
  t.is(
    error.message,
    sent ? 'The publish was aborted after it was handed to the connection: the broker may get it, and deliver it' : 'The publish was aborted before it was sent: nothing was sent',
  )
}

test('a publish waiting out an outage, aborted, is never sent; the ones after it are', async (t) => {
  const proxy = await startTcpProxy({ target: broker.tcpUrl })
  t.teardown(() => proxy.stop())
  const commands = uniqueTopic('commands')
  const device = await listen(t, openPubSub(t, { endpoint: broker.tcpUrl }), commands, { qos: 1 })
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: { minDelayMs: 100, maxDelayMs: 100 } })
  await pubsub.publish(commands, 'before', { qos: 1 })
  proxy.refuse()
  proxy.drop()
  await waitFor(() => pubsub.connectionState !== 'Connected', 5_000, 'the outage')
  const controller = new AbortController()
  const stale = pubsub.publish(commands, 'unlock', { qos: 1, signal: controller.signal })
  const kept = pubsub.publish(commands, 'after', { qos: 1 })
  await sleep(100)
  t.is(pubsub.stats().queued.operations, 2, 'both wait in the offline queue')
  controller.abort()
  isAborted(t, await t.throwsAsync(stale), { sent: false })
  t.is(pubsub.stats().queued.operations, 1, 'the aborted one is gone')
  proxy.heal()
  await kept
  t.deepEqual(await device.take(2), ['before', 'after'])
  await sleep(200)
  t.deepEqual(device.values, ['before', 'after'], "the aborted command never arrived")
})

test('AbortSignal.timeout bounds the wait for a PUBACK that does not come; the instance goes on', async (t) => {
  const ownBroker = await startMosquitto()
  t.teardown(() => ownBroker.stop())
  const topic = uniqueTopic('timeout')
  const pubsub = openPubSub(t, { endpoint: ownBroker.tcpUrl })
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  ownBroker.pause() // the connection stays open; nothing is acknowledged
  const started = Date.now()
  const error = await t.throwsAsync(pubsub.publish(topic, 'late', { qos: 1, signal: AbortSignal.timeout(300) }))
  isAborted(t, error, { sent: true })
  t.is(error.cause.name, 'TimeoutError')
  t.true(Date.now() - started < 2_000, `rejected after ${Date.now() - started} ms`)
  ownBroker.resume()
  // The late PUBACK settles nothing else: later publishes settle as theirs come.
  await Promise.all([1, 2, 3].map((n) => pubsub.publish(topic, n, { qos: 1, signal: AbortSignal.timeout(5_000) })))
  t.deepEqual(await inbox.take(4), ['late', 1, 2, 3], 'the one aborted after it was sent may arrive, as the error said')
})

test('a publish to many topics, part of it written before a loss, is sent: true even before JS saw those written', async (t) => {
  const ownBroker = await startMosquitto()
  t.teardown(() => ownBroker.stop())
  const pubsub = openPubSub(t, { endpoint: ownBroker.tcpUrl, offlineQueue: 'all', reconnect: { minDelayMs: 60_000, maxDelayMs: 60_000 } })
  pubsub.on('connectionDisrupted', () => {})
  await pubsub.publish(uniqueTopic('warm'), 'connected', { qos: 1 })
  // 20 MB in all: more than the socket buffers take once the broker stops reading.
  const topics = Array.from({ length: 20_000 }, (_, i) => `${uniqueTopic('many')}/${i}`)
  const controller = new AbortController()
  const publishing = pubsub.publish(topics, 'x'.repeat(1_000), { qos: 0, signal: controller.signal })
  // On the JS thread throughout, so that it sees no settlement: Rust writes part of it, then the
  // broker is gone and the rest goes back to the offline queue.
  const before = pubsub.stats().messagesSent
  const deadline = Date.now() + 5_000
  while (pubsub.stats().messagesSent < before + 500 && Date.now() < deadline);
  process.kill(ownBroker.pid(), 'SIGSTOP')
  const stopped = Date.now()
  while (Date.now() < stopped + 200);
  process.kill(ownBroker.pid(), 'SIGKILL')
  while (Date.now() < deadline) {
    const stats = pubsub.stats()
    if (stats.connectionState !== 'Connected' && stats.inFlight.operations === 0) break
  }
  controller.abort()
  const error = await t.throwsAsync(publishing)
  t.is(error.code, 'ABORT_ERR')
  t.true(error.sent, `${pubsub.stats().messagesSent - before} of its packets were written`)
})

test('a signal aborted before the call rejects at once, and nothing is sent', async (t) => {
  const topic = uniqueTopic('pre-aborted')
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl })
  const inbox = await listen(t, pubsub, topic)
  const error = await t.throwsAsync(pubsub.publish(topic, 'never', { qos: 1, signal: AbortSignal.abort(new Error('changed my mind')) }))
  isAborted(t, error, { sent: false })
  t.is(error.cause.message, 'changed my mind')
  await pubsub.publish(topic, 'next', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['next'])
  t.deepEqual(inbox.values, ['next'])
})

test('a publish held in JS (the backlog is full), aborted, is never sent; every other one is', async (t) => {
  t.timeout(60_000)
  const ownBroker = await startMosquitto({ lines: ['max_queued_messages 0'] })
  t.teardown(() => ownBroker.stop())
  const topic = uniqueTopic('held')
  const subscriber = openPubSub(t, { endpoint: ownBroker.tcpUrl })
  const inbox = await listen(t, subscriber, topic, { qos: 1 })
  const pubsub = openPubSub(t, { endpoint: ownBroker.tcpUrl })
  await pubsub.publish(topic, -1, { qos: 1 })
  ownBroker.pause()
  const total = 8_000
  const controller = new AbortController()
  const publishes = []
  for (let i = 0; i < total; i++) publishes.push(pubsub.publish(topic, i, { qos: 1, signal: i === total - 1 ? controller.signal : undefined }))
  await sleep(300)
  controller.abort()
  isAborted(t, await t.throwsAsync(publishes.pop()), { sent: false })
  ownBroker.resume()
  await Promise.all(publishes)
  await inbox.take(total, 30_000) // -1 and 0 … total - 2
  await sleep(300)
  t.is(inbox.values.length, total)
  t.false(inbox.values.includes(total - 1))
})

test('a settled publish lets go of its signal', async (t) => {
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl })
  const controller = new AbortController()
  await pubsub.publish(uniqueTopic('settled'), 'x', { qos: 1, signal: controller.signal })
  t.is(getEventListeners(controller.signal, 'abort').length, 0, 'no listener left on a long-lived signal')
})

test('publishes sharing one signal share one listener; aborting it withdraws every one not sent yet', async (t) => {
  const warnings = []
  const onWarning = (warning) => warnings.push(warning.name)
  process.on('warning', onWarning)
  t.teardown(() => process.off('warning', onWarning))
  const proxy = await startTcpProxy({ target: broker.tcpUrl })
  t.teardown(() => proxy.stop())
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt') })
  await pubsub.publish(uniqueTopic('shared'), 'connected', { qos: 1 })
  proxy.refuse()
  proxy.drop()
  await waitFor(() => pubsub.connectionState !== 'Connected', 5_000, 'the outage')
  const controller = new AbortController()
  const publishes = Array.from({ length: 50 }, (_, i) => pubsub.publish(uniqueTopic('shared'), i, { qos: 1, signal: controller.signal }))
  t.is(getEventListeners(controller.signal, 'abort').length, 1)
  controller.abort()
  const errors = await Promise.all(publishes.map((p) => p.then(() => null, (error) => error)))
  t.deepEqual(new Set(errors.map((error) => `${error?.code} sent=${error?.sent}`)), new Set(['ABORT_ERR sent=false']))
  t.is(pubsub.stats().queued.operations, 0)
  t.false(warnings.includes('MaxListenersExceededWarning'))
})

test("a signal whose removeEventListener throws costs a warning, never another publish's settlement", async (t) => {
  class Grumpy extends EventTarget {
    get aborted() {
      return false
    }

    removeEventListener() {
      throw new Error('no')
    }
  }
  const topic = uniqueTopic('grumpy')
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl })
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  await Promise.all(Array.from({ length: 20 }, (_, i) => pubsub.publish(topic, i, { qos: 1, signal: i === 3 ? new Grumpy() : undefined })))
  t.deepEqual((await inbox.take(20)).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i))
})

test('a signal that is not an AbortSignal is refused', async (t) => {
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl })
  for (const signal of [null, 5000, { aborted: false }, { aborted: false, addEventListener() {} }]) {
    const error = await t.throwsAsync(pubsub.publish(uniqueTopic('bad'), 'x', { signal }))
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.regex(error.message, /^signal must be an AbortSignal, got /)
  }
})
