'use strict'
// What goes over the wire and what a subscriber gets back: raw bytes for Buffer/Uint8Array
// (and ArrayBuffer, DataView, other typed arrays),
// JSON text for everything else, and the four subscribe formats ('json' by default,
// 'string', 'binary', 'message').
const crypto = require('node:crypto')
const test = require('ava')
const { TOPIC } = require('../mqtt.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { startAedes } = require('./helpers/aedes.js')
const { cutAtClientsFirst } = require('./helpers/mqtt-proxy.js')
const { topicNamer, pubsubOn, subscribed, waitFor, uniqueClientId, ALL_BYTES } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)

const uniqueTopic = topicNamer('spec/payload-formats')
const newPubSub = pubsubOn(broker)

test('a Buffer payload arrives byte-exact, including bytes that are not valid UTF-8', async (t) => {
  const topic = uniqueTopic('buffer')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { format: 'binary' })

  await pubsub.publish(topic, ALL_BYTES, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.true(Buffer.isBuffer(payload))
  t.is(payload.length, 256)
  t.true(payload.equals(ALL_BYTES))
})

test('a Uint8Array payload is sent as its own bytes, even when it views part of a larger buffer', async (t) => {
  const topic = uniqueTopic('uint8array')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { format: 'binary' })

  const backing = new Uint8Array([0x11, 0x22, 0x33, 0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x44, 0x55])
  const view = new Uint8Array(backing.buffer, 3, 6) // ff fe 00 80 c3 28
  t.false(Buffer.isBuffer(view))
  await pubsub.publish(topic, view, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.deepEqual([...payload], [0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28])
})

test('an ArrayBuffer, a DataView and other typed arrays are sent as the bytes they hold, not as JSON', async (t) => {
  const topic = uniqueTopic('array-buffer')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { format: 'binary' })

  const backing = new Uint8Array([0x11, 0xff, 0x00, 0x80, 0x22]).buffer
  await pubsub.publish(topic, backing, { qos: 1 })
  await pubsub.publish(topic, new DataView(backing, 1, 3), { qos: 1 })
  await pubsub.publish(topic, new Uint16Array([0x0102, 0xfffe]), { qos: 1 })
  await pubsub.publish(topic, new Uint8ClampedArray([7, 8]), { qos: 1 })

  const payloads = await inbox.take(4)
  t.deepEqual(
    payloads.map((payload) => [...payload]),
    [[0x11, 0xff, 0x00, 0x80, 0x22], [0xff, 0x00, 0x80], [...Buffer.from(new Uint16Array([0x0102, 0xfffe]).buffer)], [7, 8]],
  )
})

test("format 'binary' gives the raw bytes of a JSON message as a Buffer", async (t) => {
  const topic = uniqueTopic('binary-json')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { format: 'binary' })

  await pubsub.publish(topic, { a: 1, b: 'é' }, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.true(Buffer.isBuffer(payload))
  t.true(payload.equals(Buffer.from('{"a":1,"b":"é"}', 'utf8')))
})

test("format 'binary' delivers an empty payload as an empty Buffer", async (t) => {
  const topic = uniqueTopic('binary-empty')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { format: 'binary' })

  await pubsub.publish(topic, Buffer.alloc(0), { qos: 1 })

  const [payload] = await inbox.take(1)
  t.true(Buffer.isBuffer(payload))
  t.is(payload.length, 0)
})

test("format 'string' decodes the payload as UTF-8 text", async (t) => {
  const topic = uniqueTopic('string')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { format: 'string' })

  const text = 'plain text, not JSON: héllo ✓ 🌍'
  await pubsub.publish(topic, Buffer.from(text, 'utf8'), { qos: 1 })
  await pubsub.publish(topic, { json: true }, { qos: 1 })

  t.deepEqual(await inbox.take(2), [text, '{"json":true}'])
})

test("format 'message' gives topic, payload bytes, qos, retain and dup", async (t) => {
  const topic = uniqueTopic('message')
  const pubsub = newPubSub(t)
  const inbox = await subscribed(pubsub, topic, { format: 'message', qos: 1 })

  await pubsub.publish(topic, Buffer.from([0xde, 0xad, 0xbe, 0xef]), { qos: 1 })

  const [message] = await inbox.take(1)
  t.deepEqual(Object.keys(message).sort(), ['dup', 'payload', 'qos', 'retain', 'topic'])
  t.is(message.topic, topic)
  t.true(Buffer.isBuffer(message.payload))
  t.deepEqual([...message.payload], [0xde, 0xad, 0xbe, 0xef])
  t.is(message.qos, 1)
  t.false(message.retain)
  t.false(message.dup)
  t.is(message[TOPIC], undefined)
})

test("format 'message' says dup: true for a QoS 1 message the broker sends again because its PUBACK was lost", async (t) => {
  // The subscriber's first PUBACK never reaches mosquitto: the proxy holds it back and cuts the
  // connection. The session is kept (cleanSession: false), so on reconnect mosquitto sends the
  // unacknowledged message again, flagged DUP.
  const { proxy, sent: pubacks } = await cutAtClientsFirst(t, broker.tcpPort, 4)
  const topic = uniqueTopic('dup')
  const subscriber = newPubSub(t, {
    endpoint: proxy.url,
    clientId: uniqueClientId('dup'),
    cleanSession: false,
    reconnect: { minDelayMs: 50 },
  })
  subscriber.on('connectionDisrupted', () => {}) // the cut is expected: no warning for it
  const inbox = await subscribed(subscriber, topic, { format: 'message', qos: 1 })

  await newPubSub(t).publish(topic, Buffer.from('once'), { qos: 1 })

  const [first, again] = await inbox.take(2)
  t.deepEqual([first.dup, again.dup], [false, true])
  t.deepEqual([first.payload.toString(), again.payload.toString()], ['once', 'once'])
  // Delivered to JS and acknowledged to the broker run apart: the PUBACK may still be on its way.
  await waitFor(() => pubacks() === 2, 5_000, 'the PUBACK of the second delivery')
})

test("format 'message' reports the QoS the broker delivered at: the lower of publish and subscribe", async (t) => {
  const base = uniqueTopic('message-qos')
  const pubsub = newPubSub(t)
  // One subscription a QoS: sub0 at QoS 0, sub1 at QoS 1, sub2 at QoS 2.
  const inboxes = []
  for (const qos of [0, 1, 2]) inboxes.push(await subscribed(pubsub, `${base}/sub${qos}`, { format: 'message', qos }))

  for (const qos of [0, 1, 2]) await pubsub.publish(`${base}/sub${qos}`, 'x', { qos: 2 })
  await pubsub.publish(`${base}/sub2`, 'x', { qos: 1 })

  for (const [qos, delivered] of [
    [0, [0]],
    [1, [1]],
    [2, [2, 1]],
  ]) {
    t.deepEqual(
      (await inboxes[qos].take(delivered.length)).map((m) => m.qos),
      delivered,
    )
  }
})

test("format 'message' flags a retained copy with retain: true, and a live message with retain: false", async (t) => {
  const topic = uniqueTopic('message-retain')
  const pubsub = newPubSub(t)
  t.teardown(() => pubsub.publish(topic, Buffer.alloc(0), { retain: true, qos: 1 }))

  await pubsub.publish(topic, 'stored', { qos: 1, retain: true })
  const inbox = await subscribed(pubsub, topic, { format: 'message', qos: 1 })
  // Published with retain, but to an existing subscription: the broker clears the flag.
  await pubsub.publish(topic, 'live', { qos: 1, retain: true })

  const [stored, live] = await inbox.take(2)
  t.is(stored.payload.toString(), '"stored"')
  t.true(stored.retain)
  t.is(live.payload.toString(), '"live"')
  t.false(live.retain)
  t.false(stored.dup)
  t.false(live.dup)
})

/** Sends 256 KiB of random bytes from `publisher` to `subscriber` and checks they arrive byte-exact. */
async function largeRoundTrip(t, subscriber, publisher) {
  const topic = uniqueTopic('large')
  const inbox = await subscribed(subscriber, topic, { format: 'binary', qos: 1 })

  const big = crypto.randomBytes(256 * 1024)
  await publisher.publish(topic, big, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.is(payload.length, big.length)
  t.true(payload.equals(big))
}

test('a 256 KiB payload arrives byte-exact', async (t) => {
  // Published over WebSockets, received over TCP: Debian's mosquitto (libwebsockets) takes
  // seconds to write a large message out to a WebSocket client, whatever the client.
  await largeRoundTrip(t, newPubSub(t, { endpoint: broker.tcpUrl }), newPubSub(t))
})

test('a 256 KiB payload arrives byte-exact over WebSockets in both directions (aedes broker)', async (t) => {
  const aedes = await startAedes()
  t.teardown(() => aedes.stop())
  await largeRoundTrip(t, newPubSub(t, { endpoint: aedes.wsUrl }), newPubSub(t, { endpoint: aedes.wsUrl }))
})

const jsonRoundTrip = test.macro({
  async exec(t, _kind, value) {
    const topic = uniqueTopic('json')
    const pubsub = newPubSub(t)
    const inbox = await subscribed(pubsub, topic, { qos: 1 })
    const raw = await subscribed(pubsub, topic, { qos: 1, format: 'string' })

    await pubsub.publish(topic, value, { qos: 1 })

    const [received] = await inbox.take(1)
    // On the wire: exactly JSON.stringify of the message.
    t.deepEqual(await raw.take(1), [JSON.stringify(value)])
    if (received !== null && typeof received === 'object') {
      t.is(received[TOPIC], topic)
      t.deepEqual(JSON.parse(JSON.stringify(received)), value)
      t.is(Array.isArray(received), Array.isArray(value))
    } else {
      t.is(received, value)
    }
  },
  title: (_, kind) => `a JSON ${kind} round trips`,
})

test(jsonRoundTrip, 'object', { id: 7, name: 'sensor "A"', nested: { list: [1, { deep: true }], empty: {} } })
test(jsonRoundTrip, 'array', [1, 'two', { three: 3 }, [4], null, false])
test(jsonRoundTrip, 'empty array', [])
test(jsonRoundTrip, 'string', 'héllo "world" \\ \n ✓')
test(jsonRoundTrip, 'empty string', '')
test(jsonRoundTrip, 'integer', 42)
test(jsonRoundTrip, 'negative fraction', -0.125)
test(jsonRoundTrip, 'zero', 0)
test(jsonRoundTrip, 'boolean true', true)
test(jsonRoundTrip, 'boolean false', false)
test(jsonRoundTrip, 'null', null)
