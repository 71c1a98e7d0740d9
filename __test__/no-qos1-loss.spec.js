'use strict'
// No QoS 1 message lost in either direction across broker restarts and disconnections: a
// persistent session (cleanSession: false) gets what was published while it was away, and our
// own unacknowledged publishes are sent again after a reconnect.
const test = require('ava')
const { startMosquitto } = require('./helpers/mosquitto.js')
const { startTcpProxy } = require('./helpers/tcp-proxy.js')
const { topicNamer, openPubSub, listen, recordEvents, mqttJs, waitFor, sleep, uniqueClientId } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('no-qos1-loss')
const FAST = { minDelayMs: 100, maxDelayMs: 400 }

async function ownBroker(t, settings) {
  const broker = await startMosquitto(settings)
  t.teardown(() => broker.stop())
  return broker
}

test('the last observer leaving while a burst waits on a full socket loses no publish: all settle, all arrive, then Disconnected', async (t) => {
  // Unsubscribing the last observer wakes the connection task while rumqttc is blocked writing
  // (the frozen broker reads nothing); the packet being written must still go out.
  t.timeout(40_000)
  const broker = await ownBroker(t, { lines: ['max_queued_messages 100000'] })
  const topic = uniqueTopic('burst')
  const arrived = new Set()
  const other = await mqttJs(t, broker.tcpUrl)
  other.client.on('message', (_topic, payload) => arrived.add(payload.readUInt32BE(0)))
  await other.client.subscribeAsync(topic, { qos: 1 })
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const sub = pubsub.subscribe(uniqueTopic('observer')).subscribe({ next() {} })
  await sub.ready

  broker.pause() // the socket fills
  const total = 400
  let settled = 0
  const failures = []
  for (let i = 0; i < total; i++) {
    const payload = Buffer.alloc(64 * 1024, 1)
    payload.writeUInt32BE(i, 0)
    pubsub.publish(topic, payload, { qos: i % 2 }).then(
      () => settled++,
      (error) => failures.push(error.code),
    )
  }
  await sleep(1_500)
  sub.unsubscribe() // the connection task is woken in the middle of a write
  await sleep(300)
  broker.resume()

  await waitFor(() => settled + failures.length === total && arrived.size === total, 15_000).catch(() => {})
  t.deepEqual(failures, [])
  t.is(settled, total, 'publish promises settled')
  t.is(arrived.size, total, 'messages that reached the other client')
  await waitFor(() => states.at(-1) === 'Disconnected', 5_000).catch(() => {})
  t.deepEqual(states.slice(-2), ['ConnectedPendingDisconnect', 'Disconnected'])
})

test('cleanSession: false gets the QoS 1 messages published while it was disconnected', async (t) => {
  const broker = await ownBroker(t)
  const proxy = await startTcpProxy({ target: broker.tcpUrl })
  t.teardown(() => proxy.stop())
  const clientId = uniqueClientId('persistent')
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), clientId, cleanSession: false, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const topic = uniqueTopic('session')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  proxy.refuse()
  proxy.drop()
  await waitFor(() => states.includes('ConnectionDisrupted'), 5_000, 'the disconnection')
  const other = await mqttJs(t, broker.tcpUrl)
  for (let i = 0; i < 50; i++) await other.client.publishAsync(topic, JSON.stringify(i), { qos: 1 })
  proxy.heal()
  const received = await inbox.take(50)
  t.deepEqual(received, Array.from({ length: 50 }, (_, i) => i))
})

test('10,000 QoS 1 messages across two broker restarts arrive complete: every sequence number, duplicates counted', async (t) => {
  t.timeout(90_000)
  const broker = await ownBroker(t, { persistence: true, lines: ['max_queued_messages 1000000', 'max_inflight_messages 0'] })
  const topic = uniqueTopic('ten-thousand')
  const subscriber = openPubSub(t, { endpoint: broker.tcpUrl, clientId: `sub-${process.pid}-${Date.now()}`, cleanSession: false, reconnect: FAST })
  const publisher = openPubSub(t, { endpoint: broker.tcpUrl, reconnect: FAST })
  const seen = new Map()
  const sub = subscriber.subscribe(topic, { qos: 1 }).subscribe((n) => seen.set(n, (seen.get(n) || 0) + 1))
  t.teardown(() => sub.unsubscribe())
  await sub.ready

  // Published in chunks, with the broker restarted twice while they flow.
  const N = 10_000
  const acked = []
  let restarts = Promise.resolve()
  for (let n = 0; n < N; n++) {
    acked.push(publisher.publish(topic, n, { qos: 1 }))
    if (n === 2_500 || n === 6_000) restarts = restarts.then(() => broker.restart({ signal: 'SIGTERM' }))
    if (n % 250 === 249) await sleep(20)
  }
  await restarts
  const results = await Promise.allSettled(acked)
  t.deepEqual(results.filter((r) => r.status === 'rejected').map((r) => r.reason.code), [], 'every publish acknowledged')
  await waitFor(() => seen.size === N, 60_000, `all ${N} messages (have ${seen.size})`)
  const missing = Array.from({ length: N }, (_, n) => n).filter((n) => !seen.has(n))
  t.deepEqual(missing, [])
  const duplicates = [...seen.values()].reduce((sum, count) => sum + count - 1, 0)
  t.log(`duplicates (allowed at QoS 1): ${duplicates}; publisher reconnects: ${publisher.stats().reconnects}; subscriber reconnects: ${subscriber.stats().reconnects}`)
  t.is(subscriber.stats().reconnects, 2)
  t.true(publisher.stats().reconnects >= 1, 'the publisher was mid-stream at a restart')
})
