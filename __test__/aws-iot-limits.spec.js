'use strict'
// AWS IoT Core's fixed limits, checked by the IoT provider before anything is sent: QoS 0 and 1
// only, payloads of at most 128 KiB, topics of at most 256 bytes and 8 levels (a Basic Ingest
// `$aws/rules/<rule>/` or shared `$share/<group>/` prefix not counted). AWS IoT would close the
// connection for a packet past one of them, or never acknowledge a QoS 2 one. The gateway in
// front of mosquitto plays AWS IoT's signature check, not these limits: mosquitto takes all of
// it, so what is refused here is refused by the client, and the generic provider sends it.
const test = require('ava')
const { PubSub } = require('../index.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { startMqttProxy, leadingPacketId, parsePublish, PACKET_TYPE } = require('./helpers/mqtt-proxy.js')
const { useIotGateway, startIotGateway } = require('./helpers/iot-gateway.js')
const { topicNamer, listen, mqttJs, pubsubOn, sleep, waitFor } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('aws-iot-limits')
const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: 'us-east-1', broker: broker.tcpUrl }))
const genericPubSub = pubsubOn(broker)

let keyCount = 0
/** A connected IoT PubSub on the gateway with keys of its own, closed when the test ends. */
async function connectedIotPubSub(t) {
  keyCount += 1
  const credentials = { accessKeyId: `AKIDLIMITS${process.pid}X${keyCount}`, secretAccessKey: `secret/${Math.random().toString(36).slice(2)}` }
  gateway.addKey(credentials.accessKeyId, credentials.secretAccessKey)
  const pubsub = new PubSub({ endpoint: gateway.url, ca: gateway.ca, region: 'us-east-1', credentials })
  t.teardown(() => pubsub.close())
  await pubsub.publish(uniqueTopic('connect'), 'hello', { qos: 1 })
  return pubsub
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
  const gw = await startIotGateway({ region: 'us-east-1', broker: refusing.url })
  t.teardown(() => gw.stop())
  const credentials = { accessKeyId: `AKIDREFUSED${process.pid}`, secretAccessKey: 'secret/refused' }
  gw.addKey(credentials.accessKeyId, credentials.secretAccessKey)
  const pubsub = new PubSub({ endpoint: gw.url, ca: gw.ca, region: 'us-east-1', credentials })
  t.teardown(() => pubsub.close())
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
 * A proxy in front of mosquitto that counts the client's QoS 1 publishes awaiting their PUBACK
 * (`awaiting()`, and the most at once, `most()`), and holds the PUBACKs back from `hold()` to
 * `release()`; stopped when the test `t` ends.
 */
async function pubackHolder(t) {
  const awaiting = new Set()
  const held = []
  let most = 0
  let holding = false
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet, connection }) {
      if (fromClient && type === PACKET_TYPE.PUBLISH && parsePublish(packet).qos === 1) {
        awaiting.add(parsePublish(packet).pkid)
        most = Math.max(most, awaiting.size)
      }
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
  }
}

/** Fires `count` QoS 1 publishes while `acks` holds PUBACKs back; resolves with the most awaiting one at once, once all went. */
async function mostAwaitingAcks(t, pubsub, acks, count) {
  const topic = uniqueTopic('in-flight')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(topic, { qos: 1 })
  await pubsub.publish(topic, 'connected', { qos: 1 })
  acks.hold()
  const publishes = Array.from({ length: count }, (_, i) => pubsub.publish(topic, i, { qos: 1 }))
  await waitFor(() => acks.awaiting() >= Math.min(count, 100), 5_000, 'publishes awaiting their PUBACK')
  await sleep(300) // time for more to go, were any allowed
  const most = acks.most()
  acks.release()
  await Promise.all(publishes)
  await waitFor(() => watcher.messages.length === count + 1, 5_000, 'every publish delivered')
  t.deepEqual(watcher.messages.slice(1).map((m) => JSON.parse(m.payload)), Array.from({ length: count }, (_, i) => i), 'each once, in order')
  return most
}

test("at most 100 publishes await AWS IoT's PUBACK at once (its in-flight quota): the rest wait their turn, and all go", async (t) => {
  // Past 100 unacknowledged, AWS IoT takes no new message from the client until it acks one;
  // MQTT 3.1.1 gives it no way to say so, so a publish past the quota could wait for ever.
  const acks = await pubackHolder(t)
  const gw = await startIotGateway({ region: 'us-east-1', broker: acks.url })
  t.teardown(() => gw.stop())
  const credentials = { accessKeyId: `AKIDINFLIGHT${process.pid}`, secretAccessKey: 'secret/in-flight' }
  gw.addKey(credentials.accessKeyId, credentials.secretAccessKey)
  const pubsub = new PubSub({ endpoint: gw.url, ca: gw.ca, region: 'us-east-1', credentials })
  t.teardown(() => pubsub.close())
  t.is(await mostAwaitingAcks(t, pubsub, acks, 300), 100)
  t.is(pubsub.stats().reconnects, 0)
})

test('the generic provider lets more publishes await their PUBACK on other brokers', async (t) => {
  const acks = await pubackHolder(t)
  const pubsub = genericPubSub(t, { endpoint: acks.url })
  t.is(await mostAwaitingAcks(t, pubsub, acks, 300), 300)
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
