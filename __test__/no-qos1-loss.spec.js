'use strict'
// No QoS 1 message lost in either direction across broker restarts and disconnections: a
// persistent session (cleanSession: false) gets what was published while it was away, and our
// own unacknowledged publishes are sent again after a reconnect.
const test = require('ava')
const { startMosquitto } = require('./helpers/mosquitto.js')
const { startTcpProxy } = require('./helpers/tcp-proxy.js')
const { topicNamer, openPubSub, listen, observe, recordEvents, mqttJs, waitFor, sleep, uniqueClientId } = require('./helpers/pubsub.js')

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

test('close() in the middle of a persistent session backlog: every message it acknowledged reached the observer, the rest come in the next session', async (t) => {
  // rumqttc acknowledges a QoS 1 message as it reads it, a batch at a time. When close() comes
  // while the observer is behind, the connection task holds the rest of a batch it read: those
  // messages must still reach the observer (close() delivers what was read), or the session
  // loses them. 2 KiB messages, so that the backlog is larger than the delivery queue.
  t.timeout(60_000)
  const broker = await ownBroker(t, { lines: ['max_queued_messages 0'] })
  const topic = uniqueTopic('close-backlog')
  const clientId = uniqueClientId('close-backlog')
  const total = 5_000
  const closeAt = 1_000
  const seen = new Set()
  const consumer = async (closeAfter) => {
    const pubsub = openPubSub(t, { endpoint: broker.wsUrl, clientId, cleanSession: false })
    const subscription = pubsub.subscribe(topic, { qos: 1 }).subscribe(({ n }) => {
      seen.add(n)
      if (seen.size === closeAfter) pubsub.close()
      const until = performance.now() + 0.2 // a slow observer
      while (performance.now() < until);
    })
    await subscription.ready
    return pubsub
  }
  await (await consumer()).close() // the session and its subscription exist
  const publisher = await mqttJs(t, broker.tcpUrl)
  const pad = 'x'.repeat(2_000)
  await Promise.all(Array.from({ length: total }, (_, n) => publisher.client.publishAsync(topic, JSON.stringify({ n, pad }), { qos: 1 })))

  const first = await consumer(closeAt)
  await waitFor(() => seen.size >= closeAt, 20_000)
  await first.close()
  const inFirst = seen.size
  t.true(inFirst < total, `the first session took part of the backlog (${inFirst})`)
  await consumer()
  await waitFor(() => seen.size === total, 20_000).catch(() => {})
  const missing = []
  for (let i = 0; i < total && missing.length < 10; i++) if (!seen.has(i)) missing.push(i)
  t.deepEqual(missing, [], `${total - seen.size} messages lost (${inFirst} taken before close())`)
})

for (const [how, restart] of [
  ['filters subscribed one after another, each awaited', async (pubsub, filters, take) => {
    for (const filter of filters) await take(filter).subscription.ready
  }],
  ['a publish made before subscribing', async (pubsub, filters, take) => {
    await pubsub.publish(uniqueTopic('first'), 'hello', { qos: 1 })
    for (const filter of filters) take(filter)
  }],
]) {
  test(`cleanSession: false, restarted with ${how}: the messages the session kept reach every filter's observer`, async (t) => {
    // On connecting, the broker sends what it queued for all of the session's subscriptions at
    // once; those not made again yet have no observer. Their messages (acknowledged as they
    // are read) wait for it instead of being dropped.
    const broker = await ownBroker(t)
    const clientId = uniqueClientId('restart')
    const base = uniqueTopic('restart')
    const filters = [`${base}/jobs/+`, `${base}/cmd/#`]
    const session = () => openPubSub(t, { endpoint: broker.wsUrl, clientId, cleanSession: false })
    const first = session()
    await Promise.all(filters.map((filter) => first.subscribe(filter, { qos: 1 }).subscribe({ next() {} }).ready))
    await first.close()
    const other = await mqttJs(t, broker.tcpUrl)
    for (let i = 0; i < 3; i++) {
      await other.client.publishAsync(`${base}/jobs/${i}`, JSON.stringify(`job${i}`), { qos: 1 })
      await other.client.publishAsync(`${base}/cmd/${i}`, JSON.stringify(`cmd${i}`), { qos: 1 })
    }
    const restarted = session()
    const inboxes = {}
    await restart(restarted, filters, (filter) => (inboxes[filter] = observe(restarted.subscribe(filter, { qos: 1 }))))
    t.deepEqual(await inboxes[filters[0]].take(3), ['job0', 'job1', 'job2'])
    t.deepEqual(await inboxes[filters[1]].take(3), ['cmd0', 'cmd1', 'cmd2'])
    t.is(restarted.stats().dropped.unrouted, 0)
  })
}
