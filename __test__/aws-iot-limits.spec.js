'use strict'
// AWS IoT Core's fixed limits, checked by the IoT provider before anything is sent: QoS 0 and 1
// only, payloads of at most 128 KiB, topics of at most 256 bytes and 8 levels (a Basic Ingest
// `$aws/rules/<rule>/` or shared `$share/<group>/` prefix not counted). AWS IoT would close the
// connection for a packet past one of them, or never acknowledge a QoS 2 one. And its
// per-connection quotas, kept by pacing: 100 packets awaiting its ack, 100 publishes and 512 KiB
// a second; past them AWS IoT throttles, and never acknowledges what it throttled. The gateway in
// front of mosquitto plays AWS IoT's signature check, not these limits: mosquitto takes all of
// it, so what is refused here is refused by the client, and the generic provider sends it.
const test = require('ava')
const { PubSub } = require('../index.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { startMqttProxy, leadingPacketId, parsePublish, PACKET_TYPE } = require('./helpers/mqtt-proxy.js')
const { useIotGateway, startIotGateway } = require('./helpers/iot-gateway.js')
const { topicNamer, listen, mqttJs, pubsubOn, sleep, waitFor, uniqueClientId } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('aws-iot-limits')
const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: 'us-east-1', broker: broker.tcpUrl }))
const genericPubSub = pubsubOn(broker)

/** An IoT PubSub on the gateway `gw` with keys of its own, closed when the test `t` ends. */
function iotPubSubOn(t, gw, options = {}) {
  const pubsub = new PubSub({ endpoint: gw.url, ca: gw.ca, region: 'us-east-1', credentials: gw.newKeys(), ...options })
  t.teardown(() => pubsub.close())
  return pubsub
}

/** A connected IoT PubSub on the file's gateway. */
async function connectedIotPubSub(t) {
  const pubsub = iotPubSubOn(t, gateway)
  await pubsub.publish(uniqueTopic('connect'), 'hello', { qos: 1 })
  return pubsub
}

/** An IoT PubSub (with `options`) on a gateway of its own that connects to `brokerUrl`, stopped when the test `t` ends. */
async function iotPubSubTo(t, brokerUrl, options = {}) {
  const gw = await startIotGateway({ region: 'us-east-1', broker: brokerUrl })
  t.teardown(() => gw.stop())
  return iotPubSubOn(t, gw, options)
}

/** `topic` padded with `x` to exactly `bytes` bytes of UTF-8. */
function topicOfBytes(topic, bytes) {
  return topic + 'x'.repeat(bytes - Buffer.byteLength(topic))
}

/** `base` followed by levels up to `levels` levels in all. */
function topicOfLevels(base, levels) {
  return [base, ...Array.from({ length: levels - base.split('/').length }, (_, i) => `l${i}`)].join('/')
}

test('QoS 2 is refused before it is sent: the publish rejects, the subscription errors, and the connection stays up', async (t) => {
  const pubsub = await connectedIotPubSub(t)
  const topic = uniqueTopic('qos2')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(topic, { qos: 2 })

  const publishError = await t.throwsAsync(pubsub.publish(topic, 'exactly once?', { qos: 2 }))
  t.is(publishError.code, 'ERR_INVALID_OPTION')
  t.regex(publishError.message, /^AWS IoT Core does not support QoS 2 \(only 0 and 1\) for a publish: it never acknowledges/)
  t.regex(publishError.message, /Use qos 1/)

  const errors = []
  const subscription = pubsub.subscribe(topic, { qos: 2 }).subscribe({ next() {}, error: (error) => errors.push(error) })
  const readyError = await t.throwsAsync(subscription.ready)
  t.is(readyError.code, 'ERR_INVALID_OPTION')
  t.regex(readyError.message, /does not support QoS 2 \(only 0 and 1\) for a subscription/)
  t.deepEqual(errors, [readyError])

  await pubsub.publish(topic, 'at least once', { qos: 1 })
  await sleep(200)
  t.deepEqual(watcher.messages.map((m) => m.payload.toString()), ['"at least once"'])
  t.is(pubsub.stats().reconnects, 0)
  t.is(pubsub.connectionState, 'Connected')
})

test('a payload over 128 KiB rejects with ERR_PAYLOAD and is not sent; 128 KiB is delivered', async (t) => {
  const pubsub = await connectedIotPubSub(t)
  const topic = uniqueTopic('payload')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(topic, { qos: 1 })

  const error = await t.throwsAsync(pubsub.publish(topic, Buffer.alloc(128 * 1024 + 1, 1), { qos: 1 }))
  t.is(error.code, 'ERR_PAYLOAD')
  t.regex(error.message, /^The message is 131073 bytes, and AWS IoT Core takes at most 131072 \(128 KiB\) per publish/)
  await pubsub.publish(topic, Buffer.alloc(128 * 1024, 2), { qos: 1 })
  await sleep(200)
  t.deepEqual(watcher.messages.map((m) => m.payload.length), [128 * 1024])
  t.is(pubsub.stats().reconnects, 0)
})

test('a topic over 256 bytes or 8 levels rejects with ERR_INVALID_TOPIC and is not sent; one at the limits is delivered', async (t) => {
  const pubsub = await connectedIotPubSub(t)
  const base = uniqueTopic('topic')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(`${base}/#`, { qos: 1 })

  const longest = topicOfBytes(`${base}/`, 256)
  const deepest = topicOfLevels(base, 8)
  const tooLong = await t.throwsAsync(pubsub.publish(`${longest}y`, 1, { qos: 1 }))
  t.is(tooLong.code, 'ERR_INVALID_TOPIC')
  t.regex(tooLong.message, /is 257 bytes of UTF-8, and AWS IoT Core takes at most 256/)
  const tooDeep = await t.throwsAsync(pubsub.publish(`${deepest}/l9`, 1, { qos: 1 }))
  t.is(tooDeep.code, 'ERR_INVALID_TOPIC')
  t.regex(tooDeep.message, /has 8 '\/', and AWS IoT Core takes at most 7 \(8 levels/)
  // One publish to several topics: one topic past a limit rejects it whole, before any is sent.
  const mixed = await t.throwsAsync(pubsub.publish([`${base}/fine`, `${deepest}/l9`], 1, { qos: 1 }))
  t.is(mixed.code, 'ERR_INVALID_TOPIC')

  await pubsub.publish([longest, deepest], 2, { qos: 1 })
  await sleep(200)
  t.deepEqual(watcher.messages.map((m) => m.topic).sort(), [longest, deepest].sort())
  t.is(pubsub.stats().reconnects, 0)
})

test("a Basic Ingest topic's $aws/rules/<rule>/ prefix is not counted", async (t) => {
  const pubsub = await connectedIotPubSub(t)
  const rest = topicOfLevels(uniqueTopic('ingest'), 8)
  const ingest = `$aws/rules/store_it/${rest}`
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(ingest, { qos: 1 })
  await pubsub.publish(ingest, 'to a rule', { qos: 1 })
  await sleep(200)
  t.deepEqual(watcher.messages.map((m) => m.topic), [ingest])
  const tooDeep = await t.throwsAsync(pubsub.publish(`${ingest}/l9`, 1, { qos: 1 }))
  t.is(tooDeep.code, 'ERR_INVALID_TOPIC')
  t.regex(tooDeep.message, /not counting a '\$aws\/rules\/<rule>\/' prefix/)
})

test('a topic filter over 8 levels errors the subscription; a $share/<group>/ prefix is not counted', async (t) => {
  const pubsub = await connectedIotPubSub(t)
  const deepest = topicOfLevels(uniqueTopic('filter'), 7) + '/+'
  const errors = []
  const tooDeep = pubsub.subscribe(`${deepest}/#`).subscribe({ next() {}, error: (error) => errors.push(error) })
  const error = await t.throwsAsync(tooDeep.ready)
  t.is(error.code, 'ERR_INVALID_TOPIC')
  t.regex(error.message, /^The topic filter '.*' has 8 '\/', and AWS IoT Core takes at most 7/)
  t.deepEqual(errors, [error])

  const inbox = await listen(t, pubsub, `$share/workers/${deepest}`, { qos: 1 })
  const topic = deepest.replace(/\+$/, 'leaf')
  await pubsub.publish(topic, 'shared', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['shared'])
})

test('a subscription AWS IoT refuses (SUBACK failure) names its two reasons: the IoT policy, or the subscriptions quota', async (t) => {
  // Between the gateway and mosquitto, a proxy answers SUBSCRIBEs of 'forbidden/…' with a SUBACK
  // failure, as AWS IoT answers both reasons.
  const refusedIds = new Set()
  const refusing = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet }) {
      if (fromClient && type === PACKET_TYPE.SUBSCRIBE && packet.includes('forbidden/')) refusedIds.add(leadingPacketId(packet))
      if (fromClient || type !== PACKET_TYPE.SUBACK || !refusedIds.has(leadingPacketId(packet))) return true
      const suback = Buffer.from(packet)
      suback[suback.length - 1] = 0x80
      return suback
    },
  })
  t.teardown(() => refusing.stop())
  const pubsub = await iotPubSubTo(t, refusing.url)
  const granted = await listen(t, pubsub, uniqueTopic('allowed'))
  const errors = []
  const refused = pubsub.subscribe('forbidden/topic').subscribe({ error: (error) => errors.push(error) })
  await t.throwsAsync(refused.ready)
  t.is(errors.length, 1)
  t.is(errors[0].code, 'ERR_SUBSCRIBE_REFUSED')
  t.is(
    errors[0].message,
    "AWS IoT refused the subscription to 'forbidden/topic' (SUBACK failure): its IoT policy does not allow iot:Subscribe on topicfilter/forbidden/topic, or this connection already has as many subscriptions as AWS IoT allows one (50 unless your account's quota was raised)",
  )
  t.deepEqual(granted.errors, [], 'the other subscription lives on')
})

/**
 * A proxy in front of mosquitto that records the client's PUBLISHes (`publishes`: topic, time
 * and size of each), counts its QoS 1 publishes awaiting their PUBACK (`awaiting()`, and the
 * most at once, `most()`), holds the PUBACKs back from `hold()` to `release()` (or until
 * `cut()` ends the connections, those PUBACKs never sent), and each CONNACK for
 * `connackDelayMs`; stopped when the test `t` ends.
 */
async function watchingProxy(t, { connackDelayMs = 0 } = {}) {
  const publishes = []
  const awaiting = new Set()
  const held = []
  const connections = new Set()
  let most = 0
  let holding = false
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet, connection }) {
      connections.add(connection)
      if (fromClient && type === PACKET_TYPE.PUBLISH) {
        const { topic, qos, pkid } = parsePublish(packet)
        publishes.push({ topic, at: performance.now(), bytes: packet.length })
        if (qos === 1) awaiting.add(pkid)
        most = Math.max(most, awaiting.size)
      }
      if (!fromClient && type === PACKET_TYPE.CONNACK) return connackDelayMs
      if (fromClient || type !== PACKET_TYPE.PUBACK) return true
      if (holding) {
        held.push(() => connection.toClient(packet))
        return false
      }
      awaiting.delete(leadingPacketId(packet))
      return true
    },
  })
  t.teardown(() => proxy.stop())
  return {
    url: proxy.url,
    publishes,
    awaiting: () => awaiting.size,
    most: () => most,
    hold() {
      holding = true
    },
    release() {
      holding = false
      awaiting.clear()
      for (const send of held.splice(0)) send()
    },
    cut() {
      holding = false
      awaiting.clear()
      held.length = 0
      for (const connection of connections) connection.cut()
      connections.clear()
    },
  }
}

/** A topic, an MQTT.js client subscribed to it on mosquitto, and `pubsub` connected. */
async function watchedTopic(t, pubsub, name) {
  const topic = uniqueTopic(name)
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(topic, { qos: 1 })
  await pubsub.publish(topic, 'connected', { qos: 1 })
  return { topic, watcher }
}

/** Fires `count` QoS 1 publishes while `proxy` holds PUBACKs back; resolves with the most awaiting one at once, once all went. */
async function mostAwaitingAcks(t, pubsub, proxy, count) {
  const { topic, watcher } = await watchedTopic(t, pubsub, 'in-flight')
  proxy.hold()
  const publishes = Array.from({ length: count }, (_, i) => pubsub.publish(topic, i, { qos: 1 }))
  await waitFor(() => proxy.awaiting() >= Math.min(count, 100), 5_000, 'publishes awaiting their PUBACK')
  // Time for more to go, were any allowed: on AWS IoT, past the second its rate allows 100 in.
  await sleep(1_300)
  const most = proxy.most()
  proxy.release()
  await Promise.all(publishes)
  await waitFor(() => watcher.messages.length === count + 1, 5_000, 'every publish delivered')
  t.deepEqual(watcher.messages.slice(1).map((m) => JSON.parse(m.payload)), Array.from({ length: count }, (_, i) => i), 'each once, in order')
  return most
}

test("at most 100 publishes await AWS IoT's PUBACK at once (its in-flight quota): the rest wait their turn, and all go", async (t) => {
  // Past 100 unacknowledged, AWS IoT takes no new message from the client until it acks one;
  // MQTT 3.1.1 gives it no way to say so, so a publish past the quota could wait for ever.
  const proxy = await watchingProxy(t)
  const pubsub = await iotPubSubTo(t, proxy.url)
  t.is(await mostAwaitingAcks(t, pubsub, proxy, 300), 100)
  t.is(pubsub.stats().reconnects, 0)
  // What waited for the acks was not written all at once when they came: the pace held it.
  t.is(mostInWindow(proxy.publishes, 900, () => 1), 100)
})

/** The most that `weight` adds up to over the `publishes` of any `windowMs` (they are in time order). */
function mostInWindow(publishes, windowMs, weight) {
  let most = 0
  let sum = 0
  let first = 0
  for (const publish of publishes) {
    sum += weight(publish)
    while (publish.at - publishes[first].at >= windowMs) sum -= weight(publishes[first++])
    most = Math.max(most, sum)
  }
  return most
}

// AWS IoT throttles a connection's publishes past 100 a second or 512 KiB a second, and never
// acknowledges a throttled QoS 1 one. The window checked is 900 ms, not a second: the proxy
// sees them a little after the client wrote them, and not all equally late.
test('publishes go within AWS IoT\'s per-connection rate: no more than 100 in a second, QoS 0 and 1 alike', async (t) => {
  const proxy = await watchingProxy(t)
  const pubsub = await iotPubSubTo(t, proxy.url)
  const { topic, watcher } = await watchedTopic(t, pubsub, 'rate')
  await Promise.all(Array.from({ length: 250 }, (_, i) => pubsub.publish(topic, i, { qos: i % 2 })))
  const sent = proxy.publishes.filter((p) => p.topic === topic)
  t.is(sent.length, 251)
  t.is(mostInWindow(sent, 900, () => 1), 100)
  await waitFor(() => watcher.messages.length === 251, 5_000, 'every publish delivered')
  t.deepEqual(watcher.messages.slice(1).map((m) => JSON.parse(m.payload)).sort((a, b) => a - b), Array.from({ length: 250 }, (_, i) => i))
})

test("publishes go within AWS IoT's per-connection throughput: no more than 512 KiB in a second", async (t) => {
  const proxy = await watchingProxy(t)
  const pubsub = await iotPubSubTo(t, proxy.url)
  const { topic, watcher } = await watchedTopic(t, pubsub, 'throughput')
  await Promise.all(Array.from({ length: 11 }, (_, i) => pubsub.publish(topic, Buffer.alloc(100 * 1024, i), { qos: 1 })))
  const sent = proxy.publishes.filter((p) => p.topic === topic).slice(1)
  t.is(sent.length, 11)
  const most = mostInWindow(sent, 900, (p) => p.bytes)
  t.true(most <= 512 * 1024 && most >= 5 * 100 * 1024, `${most} bytes in 900 ms`)
  await waitFor(() => watcher.messages.length === 12, 5_000, 'every publish delivered')
  t.deepEqual(watcher.messages.slice(1).map((m) => m.payload[0]), Array.from({ length: 11 }, (_, i) => i))
})

test('publishes made before the connection is up are paced from when they are written', async (t) => {
  // rumqttc writes what it was handed once CONNACK comes: counted from the hand-over, the next
  // second's publishes would follow the first ones too soon.
  const proxy = await watchingProxy(t, { connackDelayMs: 500 })
  const pubsub = await iotPubSubTo(t, proxy.url)
  const topic = uniqueTopic('before-connack')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(topic, { qos: 1 })
  await Promise.all(Array.from({ length: 250 }, (_, i) => pubsub.publish(topic, i, { qos: i % 2 })))
  const sent = proxy.publishes.filter((p) => p.topic === topic)
  t.is(sent.length, 250)
  t.is(mostInWindow(sent, 900, () => 1), 100)
  await waitFor(() => watcher.messages.length === 250, 5_000, 'every publish delivered')
})

test('on a resumed session, the resends of the lost connection count for the pace', async (t) => {
  // rumqttc writes them first, unpaced; counted only once written, a backlog went out beside
  // them: 160 publishes in a second (a review found it).
  const proxy = await watchingProxy(t)
  const pubsub = await iotPubSubTo(t, proxy.url, { clientId: uniqueClientId('resumed'), cleanSession: false })
  const { topic, watcher } = await watchedTopic(t, pubsub, 'resends')
  proxy.hold()
  const published = Array.from({ length: 60 }, (_, i) => pubsub.publish(topic, i, { qos: 1 }))
  await waitFor(() => proxy.awaiting() === 60, 5_000, '60 publishes awaiting their PUBACK')
  await sleep(1_100) // they leave the window
  const cutAt = performance.now()
  proxy.cut()
  await waitFor(() => pubsub.connectionState !== 'Connected', 5_000, 'the loss')
  published.push(...Array.from({ length: 100 }, (_, i) => pubsub.publish(topic, 100 + i, { qos: 1 })))
  await Promise.all(published)
  const after = proxy.publishes.filter((p) => p.topic === topic && p.at > cutAt)
  t.is(after.length, 160, '60 resends and 100 new')
  t.is(mostInWindow(after, 900, () => 1), 100)
  const expected = [...Array.from({ length: 60 }, (_, i) => i), ...Array.from({ length: 100 }, (_, i) => 100 + i)]
  await waitFor(() => new Set(watcher.messages.slice(1).map((m) => JSON.parse(m.payload))).size === 160, 5_000, 'every publish delivered')
  t.deepEqual([...new Set(watcher.messages.slice(1).map((m) => JSON.parse(m.payload)))].sort((a, b) => a - b), expected)
})

test('aborting the publish the pace holds back lets the next one go at once', async (t) => {
  // The connection task slept until the aborted one's due time (a review found it).
  const proxy = await watchingProxy(t)
  const pubsub = await iotPubSubTo(t, proxy.url)
  const { topic } = await watchedTopic(t, pubsub, 'abort-paced')
  await sleep(1_100) // the first publish leaves the window
  const large = () => Buffer.alloc(100 * 1024, 1)
  await Promise.all(Array.from({ length: 5 }, () => pubsub.publish(topic, large(), { qos: 1 })))
  const controller = new AbortController()
  const held = pubsub.publish(topic, large(), { qos: 1, signal: controller.signal }) // 600 KiB in a second: held
  const small = pubsub.publish(topic, 'small', { qos: 1 }) // fits beside the five
  await sleep(100)
  const abortedAt = performance.now()
  controller.abort()
  await t.throwsAsync(held, { code: 'ABORT_ERR' })
  await small
  const waited = performance.now() - abortedAt
  t.true(waited < 500, `the next publish went ${Math.round(waited)} ms after the abort`)
})

test('the generic provider lets more publishes await their PUBACK, at any rate, on other brokers', async (t) => {
  const proxy = await watchingProxy(t)
  const pubsub = genericPubSub(t, { endpoint: proxy.url })
  t.is(await mostAwaitingAcks(t, pubsub, proxy, 300), 300)
  t.true(mostInWindow(proxy.publishes, 900, () => 1) > 300, 'not paced')
})

test('a will past the limits is refused by the constructor', (t) => {
  const options = { endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt', credentials: { accessKeyId: 'AKIDWILL', secretAccessKey: 'secret' } }
  for (const [will, says] of [
    [{ topic: 'status', message: 'gone', qos: 2 }, /^Option 'will': AWS IoT Core does not support QoS 2/],
    [{ topic: topicOfLevels('status', 9), message: 'gone' }, /^Option 'will': The topic '.*' has 8 '\/'/],
    [{ topic: 'status', message: Buffer.alloc(128 * 1024 + 1) }, /^Option 'will.message': The message is 131073 bytes/],
  ]) {
    const error = t.throws(() => new PubSub({ ...options, will }))
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.regex(error.message, says)
  }
  t.notThrows(() => new PubSub({ ...options, will: { topic: topicOfLevels('status', 8), message: Buffer.alloc(128 * 1024), qos: 1 } }).close())
})

test('the generic provider sends what AWS IoT would refuse: other brokers have other limits', async (t) => {
  const pubsub = genericPubSub(t)
  const base = uniqueTopic('generic')
  const deep = topicOfLevels(base, 12)
  const long = topicOfBytes(`${base}/`, 300)
  const inbox = await listen(t, pubsub, `${base}/#`, { qos: 2, format: 'message' })
  await pubsub.publish(deep, 'deep', { qos: 2 })
  await pubsub.publish(long, Buffer.alloc(128 * 1024 + 1, 3), { qos: 1 })
  const messages = await inbox.take(2)
  t.deepEqual(messages.map((m) => [m.topic, m.qos, m.payload.length]), [[deep, 2, 6], [long, 1, 128 * 1024 + 1]])
})
