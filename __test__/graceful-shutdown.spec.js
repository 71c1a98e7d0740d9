'use strict'
// close({ drainMs }): a graceful shutdown. The publishes made before close() have up to drainMs
// to settle (acknowledged, or failed) while messages keep coming to the observers; new
// publishes and subscriptions are refused from the call on; then the instance closes as
// close() does. What is still pending then rejects with ERR_CLOSED, its `sent` saying whether
// the broker may have it. (MQTT.js's end() waits for what is in flight the same way.)
const test = require('ava')
const { PubSub } = require('../mqtt.js')
const { startMosquitto } = require('./helpers/mosquitto.js')
const { topicNamer, openPubSub, listen, mqttJs, waitFor, sleep, captureWarnings, runScript, pubsubScript, printed, exitOf } = require('./helpers/pubsub.js')

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

test("close() given what it cannot read (MQTT.js's end(force), an unknown option) warns once and closes without draining", async (t) => {
  const broker = await ownBroker(t)
  const warnings = captureWarnings(t, 'close() ignored it')
  for (const options of [true, { drain: 1000 }, { drainMs: -1 }]) {
    const pubsub = new PubSub({ endpoint: broker.tcpUrl })
    await pubsub.publish(uniqueTopic('ignored'), 'x', { qos: 1 })
    broker.pause()
    const pending = pubsub.publish(uniqueTopic('ignored'), 'y', { qos: 1 })
    await waitFor(() => pubsub.stats().inFlight.operations === 1, 5_000, 'the publish written')
    await pubsub.close(options)
    t.like(await t.throwsAsync(pending), { code: 'ERR_CLOSED', sent: true }, 'not drained')
    broker.resume()
  }
  t.deepEqual(
    warnings.map((w) => w.message.split('. close()')[0]),
    [
      "close takes { drainMs } or nothing, got true (MQTT.js's end(force)?): close() is end(true), and close({ drainMs: 5000 }) waits for the publishes made, as end(false) does, up to 5 s",
      "Unknown close option 'drain'; known is drainMs",
      'drainMs must be a number of milliseconds from 0 to 2147483647, got -1',
    ],
  )
})

test('close passed as a signal listener (it gets the signal name) closes cleanly: Node exits by itself, the will is not published', async (t) => {
  const broker = await ownBroker(t)
  const watcher = await mqttJs(t, broker.tcpUrl)
  const willTopic = uniqueTopic('will')
  await watcher.client.subscribeAsync(willTopic, { qos: 1 })
  const run = runScript(
    t,
    pubsubScript(
      `pubsub.subscribe('${uniqueTopic('kept')}').subscribe({ next() {} }).ready.then(() => console.log('subscribed'))
       process.once('SIGTERM', pubsub.close.bind(pubsub))`,
      { will: { topic: willTopic, message: 'gone', qos: 1 } },
    ),
    { BROKER: broker.tcpUrl },
  )
  await printed(run, 'subscribed')
  run.child.kill('SIGTERM')
  const exit = await exitOf(t, run)
  t.is(exit.code, 0, run.stderr)
  t.regex(run.stderr, /close takes \{ drainMs \} or nothing, got a string\. close\(\) ignored it/)
  await sleep(500)
  t.deepEqual(watcher.messages, [], 'a clean DISCONNECT: no will')
})
