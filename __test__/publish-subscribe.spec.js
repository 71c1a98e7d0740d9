'use strict'
// Publishing and subscribing through a real broker (Debian's mosquitto, over WebSockets unless
// a test says otherwise): Amplify's PubSub API end to end.
const test = require('ava')
const { TOPIC, CONNECTION_STATE_CHANGE } = require('../mqtt.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { startMqttProxy, PACKET_TYPE } = require('./helpers/mqtt-proxy.js')
const { topicNamer, pubsubOn, openPubSub, observe, subscribed, mqttJs, plain, recordEvents, waitFor, sleep, fakeServer } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)

const uniqueTopic = topicNamer('spec/publish-subscribe')
const newPubSub = pubsubOn(broker)

const topicsOf = (messages) => messages.map((m) => m.topic)

const roundTrip = test.macro({
  async exec(t, qos) {
    const topic = uniqueTopic(`qos${qos}`)
    const subscriber = newPubSub(t)
    const publisher = newPubSub(t)
    const inbox = await subscribed(subscriber, topic, { qos })

    const sent = { reading: 21.5, unit: 'C', qos }
    const published = publisher.publish(topic, sent, { qos })
    t.true(published instanceof Promise)
    t.is(await published, undefined)

    const [message] = await inbox.take(1)
    t.deepEqual(plain(message), sent)
    t.is(message[TOPIC], topic)
  },
  title: (_, qos) => `a QoS ${qos} publish resolves and the subscriber receives the message`,
})

test(roundTrip, 0)
test(roundTrip, 1)
test(roundTrip, 2)

test('publish and subscribe accept the Amplify v5 call form (topics, message/options, options)', async (t) => {
  const topic = uniqueTopic('v5')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { qos: 1 })

  await pubsub.publish(topic, { form: 'v5' }, { qos: 1 })

  const [message] = await inbox.take(1)
  t.deepEqual(plain(message), { form: 'v5' })
})

test('publish and subscribe accept the Amplify v6 call form ({ topics, message, options })', async (t) => {
  const topic = uniqueTopic('v6')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, { topics: [topic], options: { qos: 1 } })

  await pubsub.publish({ topics: topic, message: { form: 'v6' }, options: { qos: 1 } })

  const [message] = await inbox.take(1)
  t.deepEqual(plain(message), { form: 'v6' })
  t.is(message[TOPIC], topic)
})

test('the v6 forms work without options', async (t) => {
  const topic = uniqueTopic('v6-defaults')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, { topics: topic })

  await pubsub.publish({ topics: [topic], message: { form: 'v6', options: 'none' } })

  const [message] = await inbox.take(1)
  t.deepEqual(plain(message), { form: 'v6', options: 'none' })
})

test('publishing to several topics sends one message per topic and resolves once all are sent', async (t) => {
  const base = uniqueTopic('fan-out')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, `${base}/#`, { format: 'message' })

  await pubsub.publish([`${base}/a`, `${base}/b`, `${base}/c`], { fanned: true }, { qos: 1 })
  // A marker sent afterwards: had any topic got two copies, they would arrive before it.
  await pubsub.publish(`${base}/end`, 'marker', { qos: 1 })

  const messages = await inbox.take(4)
  t.deepEqual(topicsOf(messages), [`${base}/a`, `${base}/b`, `${base}/c`, `${base}/end`])
  for (const message of messages.slice(0, 3)) {
    t.deepEqual(JSON.parse(message.payload.toString('utf8')), { fanned: true })
  }
})

test('stats() counts a publish to several topics once per topic, the same while it waits in JS as once the connection holds it', async (t) => {
  // A server that never answers: the connection stays Connecting and keeps every publish.
  const pubsub = openPubSub(t, { endpoint: await fakeServer(t, null) })
  const topics = ['a', 'bb', 'ccc'].map((name) => uniqueTopic(`stats-${name}`))
  // The tick's first publish goes to the connection at once; the second waits in JS until the tick ends.
  pubsub.publish(uniqueTopic('stats-first'), 'first', { qos: 1 }).catch(() => {})
  pubsub.publish(topics, { fanned: true }, { qos: 1 }).catch(() => {})
  const pending = () => {
    const { queued, inFlight } = pubsub.stats()
    return { operations: queued.operations + inFlight.operations, bytes: queued.bytes + inFlight.bytes }
  }
  const whileInJs = pending()
  await new Promise((resolve) => setImmediate(resolve))
  const onceHandedOver = pending()
  t.is(onceHandedOver.operations, 1 + topics.length, 'the connection counts one operation per topic')
  t.deepEqual(whileInJs, onceHandedOver, 'operations and bytes (topic and payload, per topic) as the connection counts them')
})

test('a publish to hundreds of topics, then a burst of others, reaches each topic once, in order', async (t) => {
  // A burst's first segment has room for 64 single-topic publishes: the wide one needs more.
  const base = uniqueTopic('fan-out-wide')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, `${base}/#`, { qos: 1, format: 'message' })

  const wide = Array.from({ length: 400 }, (_, i) => `${base}/wide/${i}`)
  const after = Array.from({ length: 100 }, (_, i) => `${base}/after/${i}`)
  await Promise.all([
    pubsub.publish(wide, { wide: true }, { qos: 1 }),
    ...after.map((topic) => pubsub.publish(topic, 'after', { qos: 1 })),
  ])

  const messages = await inbox.take(wide.length + after.length)
  t.deepEqual(topicsOf(messages), [...wide, ...after])
  t.true(messages.slice(0, wide.length).every((m) => m.payload.toString('utf8') === '{"wide":true}'))
})

test('subscribing to several topics at once receives from each of them, and only them', async (t) => {
  const x = uniqueTopic('multi-x')
  const y = uniqueTopic('multi-y')
  const other = uniqueTopic('multi-other')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, [x, y], { qos: 1 })

  await pubsub.publish(x, { from: 'x' }, { qos: 1 })
  await pubsub.publish(other, { from: 'other' }, { qos: 1 })
  await pubsub.publish(y, { from: 'y' }, { qos: 1 })

  const messages = await inbox.take(2)
  t.deepEqual(messages.map(plain), [{ from: 'x' }, { from: 'y' }])
  t.deepEqual(
    messages.map((m) => m[TOPIC]),
    [x, y],
  )
})

test("the '+' wildcard matches exactly one topic level", async (t) => {
  const base = uniqueTopic('plus')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, `${base}/+/temperature`, { format: 'message' })

  for (const topic of [
    `${base}/kitchen/temperature`,
    `${base}/kitchen/humidity`,
    `${base}/house/hall/temperature`,
    `${base}/temperature`,
    `${base}/hall/temperature`,
  ]) {
    await pubsub.publish(topic, 1, { qos: 1 })
  }

  const messages = await inbox.take(2)
  t.deepEqual(topicsOf(messages), [`${base}/kitchen/temperature`, `${base}/hall/temperature`])
})

test("the '#' wildcard matches the parent level and every level below it", async (t) => {
  const base = uniqueTopic('hash')
  const sibling = `${base}-sibling/x`
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, `${base}/#`, { format: 'message' })

  for (const topic of [base, `${base}/a`, sibling, `${base}/a/b/c`]) {
    await pubsub.publish(topic, 1, { qos: 1 })
  }

  const messages = await inbox.take(3)
  t.deepEqual(topicsOf(messages), [base, `${base}/a`, `${base}/a/b/c`])
})

test('a shared subscription ($share/<group>/<filter>) delivers each message to one member of the group', async (t) => {
  const base = uniqueTopic('shared')
  const group = `group-${process.pid}`
  const members = [newPubSub(t), newPubSub(t)]
  const inboxes = await Promise.all(members.map((m) => subscribed(m, `$share/${group}/${base}/+`, { format: 'message' })))
  const publisher = newPubSub(t)

  const sent = Array.from({ length: 10 }, (_, i) => `${base}/m${i}`)
  for (const topic of sent) await publisher.publish(topic, 1, { qos: 1 })

  // The broker shares the group's messages out: together the members get each one once.
  await waitFor(() => inboxes.reduce((n, inbox) => n + inbox.received.length, 0) >= sent.length, 5_000, 'every shared message')
  await sleep(200) // time for a duplicate to show
  const received = inboxes.flatMap((inbox) => topicsOf(inbox.received))
  t.deepEqual([...received].sort(), [...sent].sort())
})

test('a message matching two filters of one observer reaches that observer once', async (t) => {
  const base = uniqueTopic('overlap')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, [`${base}/+`, `${base}/#`], { format: 'message' })

  await pubsub.publish(`${base}/both`, 'matches both filters', { qos: 1 })
  // Matches only '#': a second copy of the first message would arrive before it.
  await pubsub.publish(`${base}/only/hash`, 'matches one filter', { qos: 1 })

  const messages = await inbox.take(2)
  t.deepEqual(topicsOf(messages), [`${base}/both`, `${base}/only/hash`])
})

test('an instance subscribed to 10,000 device topics and a few wildcard filters gives each message to exactly the observers whose filters match', async (t) => {
  // A server following a fleet: one filter per device, one observer for all of them, and
  // observers of one device, of every device's alarms and of everything.
  const base = uniqueTopic('fleet')
  const device = (id, what) => `${base}/devices/${id}/${what}`
  const pubsub = newPubSub(t)
  const statuses = await subscribed(pubsub, Array.from({ length: 10_000 }, (_, id) => device(id, 'status')), { format: 'message' })
  const seven = await subscribed(pubsub, device(7, 'status'), { format: 'message' })
  const alarms = await subscribed(pubsub, `${base}/devices/+/alarm`, { format: 'message' })
  const everything = await subscribed(pubsub, [`${base}/#`, `${base}/devices/+/status`], { format: 'message' })

  const sent = [device(7, 'status'), device(9_999, 'status'), device(3, 'alarm'), device(10_000, 'status'), `${base}/devices`]
  for (const topic of sent) await pubsub.publish(topic, 1, { qos: 1 })

  // The last message reaches `everything` after the others reached every observer they match.
  t.deepEqual(topicsOf(await everything.take(sent.length)), sent, 'each once, though two of its filters match most')
  t.deepEqual(topicsOf(statuses.received), [device(7, 'status'), device(9_999, 'status')])
  t.deepEqual(topicsOf(seven.received), [device(7, 'status')])
  t.deepEqual(topicsOf(alarms.received), [device(3, 'alarm')])
  t.is(pubsub.stats().dropped.unrouted, 0)
})

test('10,000 subscribe calls on one instance all become ready, and unsubscribing them all ends the connection with DISCONNECT', async (t) => {
  // One SUBSCRIBE per call, 10,000 in flight at once; then one UNSUBSCRIBE per filter.
  const sentByClient = new Map()
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type }) {
      if (fromClient) sentByClient.set(type, (sentByClient.get(type) || 0) + 1)
    },
  })
  t.teardown(() => proxy.stop())
  const base = uniqueTopic('many-calls')
  const pubsub = newPubSub(t, { endpoint: proxy.url })
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  const inboxes = Array.from({ length: 10_000 }, (_, id) => observe(pubsub.subscribe(`${base}/${id}`, { format: 'message' })))
  await Promise.all(inboxes.map((inbox) => inbox.subscription.ready))

  await pubsub.publish(`${base}/4321`, 1, { qos: 1 })
  t.deepEqual(topicsOf(await inboxes[4321].take(1)), [`${base}/4321`])

  for (const inbox of inboxes) inbox.subscription.unsubscribe()
  await waitFor(() => states.at(-1) === 'Disconnected', 10_000, 'Disconnected')
  t.deepEqual(states, ['Connecting', 'Connected', 'ConnectedPendingDisconnect', 'Disconnected'])
  const { SUBSCRIBE, UNSUBSCRIBE, DISCONNECT } = PACKET_TYPE
  t.is(sentByClient.get(SUBSCRIBE), 10_000)
  t.is(sentByClient.get(UNSUBSCRIBE), 10_000)
  t.is(sentByClient.get(DISCONNECT), 1)
  t.true(inboxes.every((inbox) => inbox.errors.length === 0))
})

test('two observers of one filter both receive, and one unsubscribing leaves the other receiving', async (t) => {
  const topic = uniqueTopic('shared')
  const pubsub = newPubSub(t)
  const observable = pubsub.subscribe(topic, { qos: 1 })
  const first = observe(observable)
  const second = observe(observable)
  await Promise.all([first.subscription.ready, second.subscription.ready])

  await pubsub.publish(topic, { n: 1 }, { qos: 1 })
  t.deepEqual((await first.take(1)).map(plain), [{ n: 1 }])
  t.deepEqual((await second.take(1)).map(plain), [{ n: 1 }])

  first.subscription.unsubscribe()
  await pubsub.publish(topic, { n: 2 }, { qos: 1 })

  t.deepEqual((await second.take(2)).map(plain), [{ n: 1 }, { n: 2 }])
  // Both observers are served from the same delivery: the first would have it by now.
  t.is(first.received.length, 1)
  t.true(first.subscription.closed)
  t.false(second.subscription.closed)
})

test('subscribing again to a filter just unsubscribed is ready only on its own SUBACK, not the earlier one', async (t) => {
  // subscribe → unsubscribe → subscribe before the first SUBACK. The uplink is slow (order
  // kept): the UNSUBSCRIBE reaches the broker after 300 ms, the second SUBSCRIBE after 1 s, while
  // the first SUBACK comes back at once. A message published after `ready` must arrive.
  let subscribes = 0
  let unsubscribeArrived = false
  let secondSubscribeArrived = false
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type }) {
      if (fromClient && type === 8 && ++subscribes === 2) {
        setTimeout(() => (secondSubscribeArrived = true), 1_000)
        return 1_000
      }
      if (fromClient && type === 10) {
        setTimeout(() => (unsubscribeArrived = true), 300)
        return 300
      }
      if (!fromClient && type === 9) return 100
    },
  })
  t.teardown(() => proxy.stop())
  const { client: publisher } = await mqttJs(t, broker.tcpUrl)
  const pubsub = newPubSub(t, { endpoint: proxy.url })
  const topic = uniqueTopic('again')
  const first = pubsub.subscribe(topic, { qos: 1 }).subscribe({ next() {} })
  first.unsubscribe()
  const second = observe(pubsub.subscribe(topic, { qos: 1 }))
  await second.subscription.ready
  t.true(secondSubscribeArrived, 'ready after the broker had the second SUBSCRIBE')
  await waitFor(() => unsubscribeArrived, 5_000, 'the UNSUBSCRIBE at the broker')
  await publisher.publishAsync(topic, JSON.stringify('after ready'), { qos: 1 })
  t.deepEqual(await second.take(1), ['after ready'])
})

test('a retained message reaches a later subscriber, and an empty retained message clears it', async (t) => {
  const topic = uniqueTopic('retained')
  const publisher = newPubSub(t)
  const subscriber = newPubSub(t)

  await publisher.publish(topic, { state: 'on' }, { qos: 1, retain: true })

  // Subscribed after the publish resolved: only the broker's retained copy can reach it.
  const late = await subscribed(subscriber, topic, { qos: 1 })
  const [retained] = await late.take(1)
  t.deepEqual(plain(retained), { state: 'on' })
  late.subscription.unsubscribe()

  await publisher.publish(topic, Buffer.alloc(0), { qos: 1, retain: true })

  // A new subscriber gets no retained copy: the first message it sees is the live one.
  const fresh = await subscribed(subscriber, topic, { qos: 1 })
  await publisher.publish(topic, { state: 'live' }, { qos: 1 })
  const [first] = await fresh.take(1)
  t.deepEqual(plain(first), { state: 'live' })
})

test('JSON objects (and arrays) arrive with their topic under the TOPIC symbol', async (t) => {
  const base = uniqueTopic('topic-symbol')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, `${base}/#`)

  await pubsub.publish(`${base}/object`, { temperature: 20 }, { qos: 1 })
  await pubsub.publish(`${base}/array`, [1, 2], { qos: 1 })

  const [object, array] = await inbox.take(2)
  t.is(typeof TOPIC, 'symbol')
  t.is(object[TOPIC], `${base}/object`)
  t.is(array[TOPIC], `${base}/array`)
  // The symbol is invisible to JSON and to key listing: the value is the message as sent.
  t.deepEqual(Object.keys(object), ['temperature'])
  t.is(JSON.stringify(object), '{"temperature":20}')
  t.true(Array.isArray(array))
  t.is(JSON.stringify(array), '[1,2]')
})

test('primitive JSON values arrive as plain primitives, without a TOPIC', async (t) => {
  const topic = uniqueTopic('primitive')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic)

  for (const value of ['text', 42, true, null]) {
    await pubsub.publish(topic, value, { qos: 1 })
  }

  const values = await inbox.take(4)
  t.deepEqual(values, ['text', 42, true, null])
  for (const value of values.slice(0, 3)) {
    t.not(typeof value, 'object', `${String(value)} arrives unboxed`)
    t.is(Object(value)[TOPIC], undefined)
  }
})

test('an mqtt:// (plain TCP) endpoint works like a WebSocket one', async (t) => {
  const topic = uniqueTopic('tcp')
  const subscriber = newPubSub(t, { endpoint: broker.tcpUrl })
  const publisher = newPubSub(t, { endpoint: broker.tcpUrl })
  const inbox = await subscribed(subscriber, topic, { qos: 1 })

  await publisher.publish(topic, { over: 'tcp' }, { qos: 1 })

  const [message] = await inbox.take(1)
  t.deepEqual(plain(message), { over: 'tcp' })
  t.is(message[TOPIC], topic)
})

test('messages travel between a TCP client and a WebSocket client of the same broker', async (t) => {
  const topic = uniqueTopic('tcp-to-ws')
  const subscriber = newPubSub(t)
  const publisher = newPubSub(t, { endpoint: broker.tcpUrl })
  const inbox = await subscribed(subscriber, topic, { qos: 2 })

  await publisher.publish(topic, { from: 'tcp' }, { qos: 2 })

  const [message] = await inbox.take(1)
  t.deepEqual(plain(message), { from: 'tcp' })
})

test('a synchronous burst mixing topics, sizes and payload kinds arrives complete and in order', async (t) => {
  // Publishes are packed into segments handed to Rust as they fill: this crosses several
  // segments, a payload larger than one, multi-topic publishes and text that is not ASCII.
  const topicA = uniqueTopic('burst-a')
  const topicB = uniqueTopic('burst-b')
  // The subscriber reads over TCP: Debian's mosquitto stalls a WebSocket subscriber that a large
  // message backs up (its libwebsockets lacks external poll; bench/mosquitto.js explains).
  const subscriber = newPubSub(t, { endpoint: broker.tcpUrl })
  const publisher = newPubSub(t)
  const inbox = await subscribed(subscriber, [topicA, topicB], { qos: 1, format: 'message' })
  // Fewer messages than mosquitto queues for a subscriber by default (1,000).
  const count = 600
  const large = 'ü'.repeat(200_000) // 400 KB of UTF-8, more than one segment holds
  const medium = 'x'.repeat(100_000)
  const expected = []
  const published = []
  for (let i = 0; i < count; i++) {
    const message =
      i === 300 ? { i, large } : i % 50 === 0 ? { i, medium } : i % 10 === 0 ? Buffer.from(`raw ${i}`) : { i, text: `naïve ${i} ✓` }
    const topics = i % 7 === 0 ? [topicA, topicB] : [topicA]
    const bytes = Buffer.isBuffer(message) ? message : Buffer.from(JSON.stringify(message))
    for (const topic of topics) expected.push({ topic, bytes })
    published.push(publisher.publish(topics, message, { qos: 1 }))
  }
  await Promise.all(published)
  const received = await inbox.take(expected.length)
  // One connection, one QoS: MQTT keeps the order per topic.
  for (const topic of [topicA, topicB]) {
    const sent = expected.filter((m) => m.topic === topic).map((m) => m.bytes.toString('base64'))
    const got = received.filter((m) => m.topic === topic).map((m) => Buffer.from(m.payload).toString('base64'))
    t.is(got.length, sent.length, topic)
    t.true(got.every((payload, k) => payload === sent[k]), `${topic}: every payload as sent, in order`)
  }
})

// When a publish settles: QoS 1 on the broker's PUBACK, QoS 2 on its PUBCOMP, never earlier
// (once written, or on PUBREC), for a caller that awaits it to know the broker has the message.
/**
 * An instance connected through a proxy (one QoS 1 publish made) that, from then on, holds back
 * the first packet from the broker for which `holds(type)` is true: `isHeld()` tells when it has,
 * and `release()` sends it on.
 */
async function pubsubWithHeldAck(t, holds) {
  let holding = false
  let held = null
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet, connection }) {
      if (holding && held === null && !fromClient && holds(type)) {
        held = { packet, connection }
        return false
      }
    },
  })
  t.teardown(() => proxy.stop())
  const pubsub = openPubSub(t, { endpoint: proxy.url })
  await pubsub.publish(uniqueTopic('warm-up'), 'connected', { qos: 1 })
  holding = true
  return { pubsub, isHeld: () => held !== null, release: () => held.connection.toClient(held.packet) }
}

/** `publish`'s outcome so far: 'pending', 'resolved' or 'rejected <code>'; `settled` when it is not pending. */
function outcomeOf(publish) {
  const outcome = { now: 'pending' }
  outcome.settled = publish.then(
    () => (outcome.now = 'resolved'),
    (error) => (outcome.now = `rejected ${error.code}`),
  )
  return outcome
}

for (const [qos, ackType, ack] of [
  [1, PACKET_TYPE.PUBACK, 'PUBACK'],
  [2, PACKET_TYPE.PUBCOMP, 'PUBCOMP'],
]) {
  test(`a QoS ${qos} publish resolves on its ${ack}, not before`, async (t) => {
    const { pubsub, isHeld, release } = await pubsubWithHeldAck(t, (type) => type === ackType)
    const outcome = outcomeOf(pubsub.publish(uniqueTopic(`until-${ack}`), 'held', { qos }))
    await waitFor(isHeld, 5_000, `the broker's ${ack}`)
    // A later publish's PUBACK, read after everything the broker sent before it (the PUBREC of
    // QoS 2 too), has reached JS: had the first publish settled on any of that, it would have.
    await pubsub.publish(uniqueTopic('after'), 'later', { qos: 1 })
    t.is(outcome.now, 'pending', `settled without its ${ack}`)

    release()
    await outcome.settled
    t.is(outcome.now, 'resolved')
    t.is(pubsub.stats().inFlight.operations, 0)
  })
}

test('a QoS 1 publish to two topics resolves once both PUBACKs are in, not on the first one', async (t) => {
  // The first PUBACK after the warm-up goes through; the other topic's is held back.
  let acks = 0
  const { pubsub, isHeld, release } = await pubsubWithHeldAck(t, (type) => type === PACKET_TYPE.PUBACK && ++acks === 2)
  const outcome = outcomeOf(pubsub.publish([uniqueTopic('acked'), uniqueTopic('held')], 'both', { qos: 1 }))
  await waitFor(isHeld, 5_000, 'the second PUBACK')
  // A later publish's PUBACK has reached JS, and with it everything read before it.
  await pubsub.publish(uniqueTopic('after'), 'later', { qos: 1 })
  t.is(outcome.now, 'pending', 'settled with one of its topics still unacknowledged')

  release()
  await outcome.settled
  t.is(outcome.now, 'resolved')
})

test('a QoS 2 publish whose PUBCOMP is late keeps its packet id: it settles, and so do the 1,100 QoS 1 publishes after it', async (t) => {
  // 1,024 packet ids: the counter wraps back to the QoS 2 publish's id while its PUBCOMP is held
  // back. That id was handed out again, and the late PUBCOMP completed the QoS 1 publish that
  // took it; the QoS 2 publish never settled, not even on close().
  // Long enough for 1,023 publishes and their PUBACKs on a busy machine.
  const holdMs = 3_000
  let qos2Sent = false
  let pubcompForwarded = false
  let publishesWhileHeld = 0
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type }) {
      if (fromClient && type === 3 && qos2Sent && !pubcompForwarded) publishesWhileHeld++
      if (!fromClient && type === 7 && !pubcompForwarded) {
        setTimeout(() => (pubcompForwarded = true), holdMs)
        return holdMs
      }
    },
  })
  t.teardown(() => proxy.stop())
  const pubsub = openPubSub(t, { endpoint: proxy.url })
  const topic = uniqueTopic('late-pubcomp')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(topic, { qos: 2 })
  await pubsub.publish(uniqueTopic('warm-up'), 'connected', { qos: 1 })

  let qos2 = 'pending'
  qos2Sent = true
  pubsub.publish(topic, 'exactly once', { qos: 2 }).then(
    () => (qos2 = 'resolved'),
    (error) => (qos2 = `rejected ${error.code}`),
  )
  const count = 1_100
  const results = await Promise.allSettled(Array.from({ length: count }, (_, i) => pubsub.publish(uniqueTopic('q1'), i, { qos: 1 })))
  t.deepEqual(results.filter((r) => r.status !== 'fulfilled'), [])
  // Ids 3..1024 and 1 (the warm-up's) go out first; the next is the QoS 2 publish's id 2.
  t.true(publishesWhileHeld >= 1_023, `the id counter wrapped while PUBCOMP was due (${publishesWhileHeld} publishes)`)
  await waitFor(() => qos2 !== 'pending', 5_000, 'the QoS 2 publish to settle')
  t.is(qos2, 'resolved')
  t.is(pubsub.stats().inFlight.operations, 0)
  t.is(pubsub.stats().reconnects, 0)
  await sleep(200)
  t.deepEqual(watcher.messages.map((m) => m.payload.toString()), ['"exactly once"'])
})
