'use strict'
// close({ drainMs }): a graceful shutdown. The publishes made before close() have up to drainMs
// to settle (acknowledged, or failed) while messages keep coming to the observers; new
// publishes and subscriptions are refused from the call on; then the instance closes as
// close() does. What is still pending then rejects with ERR_CLOSED, its `sent` saying whether
// the broker may have it. (MQTT.js's end() waits for what is in flight the same way.)
const test = require('ava')
const { PubSub } = require('../mqtt.js')
const { startMosquitto } = require('./helpers/mosquitto.js')
const { topicNamer, openPubSub, listen, waitFor, sleep } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('graceful-shutdown')

/** A mosquitto of the test's own, stopped when the test `t` ends: tests freeze it. */
async function ownBroker(t) {
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  return broker
}

test('close({ drainMs }) lets the publishes made before it settle, and the messages they bring arrive, before it closes', async (t) => {
  const broker = await ownBroker(t)
  const pubsub = new PubSub({ endpoint: broker.tcpUrl })
  const topic = uniqueTopic('drain')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  let completed = false
  pubsub.subscribe(uniqueTopic('other')).subscribe({ complete: () => (completed = true) })
  broker.pause() // nothing is acknowledged until it resumes
  const outcomes = []
  const published = Array.from({ length: 20 }, (_, i) =>
    pubsub.publish(topic, i, { qos: 1 }).then(
      () => outcomes.push('published'),
      (error) => outcomes.push(error.code),
    ),
  )
  await waitFor(() => pubsub.stats().inFlight.operations === 20, 5_000, 'the publishes written')
  const started = Date.now()
  const closed = pubsub.close({ drainMs: 10_000 })

  // Closing: nothing new is taken.
  t.like(await t.throwsAsync(pubsub.publish(topic, 'late', { qos: 1 })), { code: 'ERR_CLOSED', sent: false })
  const refused = []
  pubsub.subscribe(uniqueTopic('late')).subscribe({ error: (error) => refused.push(error.code) })
  t.deepEqual(refused, ['ERR_CLOSED'])

  await sleep(300)
  t.deepEqual(outcomes, [], 'still waiting for the broker')
  t.false(completed, 'the observers are not completed while the publishes drain')
  broker.resume()
  await closed
  await Promise.all(published)
  t.deepEqual(outcomes, Array(20).fill('published'))
  t.deepEqual(inbox.values, Array.from({ length: 20 }, (_, i) => i), 'their messages came back to the observer before it completed')
  t.true(completed)
  t.true(Date.now() - started < 5_000, `closed ${Date.now() - started} ms after close(), once drained, not after drainMs`)
  t.is(pubsub.connectionState, 'Disconnected')
})

test('close({ drainMs }) gives up after drainMs: what is still pending rejects with ERR_CLOSED, sent: true if written', async (t) => {
  const broker = await ownBroker(t)
  const pubsub = new PubSub({ endpoint: broker.tcpUrl })
  await pubsub.publish(uniqueTopic('connect'), 'hello', { qos: 1 })
  broker.pause()
  const stuck = pubsub.publish(uniqueTopic('stuck'), 'never acknowledged', { qos: 1 })
  await waitFor(() => pubsub.stats().inFlight.operations === 1, 5_000, 'the publish written')
  const started = Date.now()
  const closed = pubsub.close({ drainMs: 400 })
  const error = await t.throwsAsync(stuck)
  const waited = Date.now() - started
  t.like(error, { code: 'ERR_CLOSED', sent: true })
  t.true(waited >= 390, `rejected ${waited} ms after close(), not before drainMs`)
  await closed
})

test('close({ drainMs }) with nothing pending closes at once, and a second close() returns the same promise', async (t) => {
  const broker = await ownBroker(t)
  const pubsub = new PubSub({ endpoint: broker.tcpUrl })
  await pubsub.publish(uniqueTopic('done'), 'acknowledged', { qos: 1 })
  const started = Date.now()
  const closed = pubsub.close({ drainMs: 60_000 })
  t.is(pubsub.close(), closed)
  await closed
  t.true(Date.now() - started < 5_000, `closed after ${Date.now() - started} ms`)
})

test('a publish that fails while close() drains (its connection lost, with reconnect: false) is settled: the drain ends', async (t) => {
  const broker = await ownBroker(t)
  const topic = uniqueTopic('lost')
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl, reconnect: false })
  await pubsub.publish(topic, 'first', { qos: 1 })
  broker.pause()
  const second = pubsub.publish(topic, 'second', { qos: 1 })
  await waitFor(() => pubsub.stats().inFlight.operations === 1, 5_000, 'the publish written')
  const started = Date.now()
  const closed = pubsub.close({ drainMs: 60_000 })
  await broker.kill('SIGKILL') // the connection is lost, and reconnect: false fails what is pending
  const error = await t.throwsAsync(second)
  t.like(error, { code: 'ERR_CONNECTION', sent: true })
  await closed
  t.true(Date.now() - started < 10_000, `closed ${Date.now() - started} ms after close(), not after drainMs`)
})

test("close refuses an option it does not know, MQTT.js's end(force) included, and the instance stays open", async (t) => {
  const broker = await ownBroker(t)
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl })
  const force = await t.throwsAsync(pubsub.close(true), { code: 'ERR_INVALID_OPTION' })
  t.regex(force.message, /close\(\) is end\(true\), and close\(\{ drainMs: 5000 \}\) waits for the publishes made, as end\(false\) does/)
  for (const options of [{ drain: 1000 }, { drainMs: -1 }, { drainMs: '1000' }, { drainMs: Infinity }, 'soon']) {
    await t.throwsAsync(pubsub.close(options), { code: 'ERR_INVALID_OPTION' }, JSON.stringify(options))
  }
  await pubsub.publish(uniqueTopic('open'), 'still open', { qos: 1 })
  t.is(pubsub.connectionState, 'Connected')
})
