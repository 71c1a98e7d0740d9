'use strict'
// What goes over the wire and what a subscriber gets back: raw bytes for Buffer/Uint8Array,
// JSON text for everything else, and the four subscribe formats ('json' by default,
// 'string', 'binary', 'message').
const crypto = require('node:crypto')
const test = require('ava')
const { PubSub, TOPIC } = require('../mqtt.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { startAedes } = require('./helpers/aedes.js')

const broker = useMosquitto(test)

let sequence = 0
/** A topic no other test (or earlier run) uses. */
function uniqueTopic(name) {
  return `spec/payload-formats/${process.pid}/${name}-${++sequence}`
}

/** A PubSub on the file's broker, closed when the test ends. */
function newPubSub(t, options = {}) {
  const pubsub = new PubSub({ endpoint: broker.wsUrl, ...options })
  t.teardown(() => pubsub.close())
  return pubsub
}

/**
 * An observer that records what it receives; `take(n)` resolves with the first n values, and
 * fails (rejects) when they do not arrive in time or the subscription errors.
 */
function receiver(timeoutMs = 5_000) {
  const received = []
  const waiting = new Set()
  let failure = null
  const check = () => {
    for (const wait of waiting) {
      if (failure) wait.reject(failure)
      else if (received.length >= wait.n) wait.resolve(received.slice(0, wait.n))
      else continue
      clearTimeout(wait.timer)
      waiting.delete(wait)
    }
  }
  return {
    received,
    observer: {
      next(value) {
        received.push(value)
        check()
      },
      error(error) {
        failure = error
        check()
      },
    },
    take(n) {
      return new Promise((resolve, reject) => {
        const wait = { n, resolve, reject }
        wait.timer = setTimeout(() => {
          waiting.delete(wait)
          reject(new Error(`Expected ${n} message(s) within ${timeoutMs} ms, received ${received.length}`))
        }, timeoutMs)
        waiting.add(wait)
        check()
      })
    },
  }
}

/** Subscribes `pubsub` to `topic` with `options` and waits for the SUBACK. */
async function subscribed(pubsub, topic, options) {
  const inbox = receiver()
  const subscription = pubsub.subscribe(topic, options).subscribe(inbox.observer)
  await subscription.ready
  return { inbox, subscription }
}

/** Every byte value 0..255: plenty of sequences that are not valid UTF-8. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

test('a Buffer payload arrives byte-exact, including bytes that are not valid UTF-8', async (t) => {
  const topic = uniqueTopic('buffer')
  const pubsub = newPubSub(t)
  const { inbox } = await subscribed(pubsub, topic, { format: 'binary' })

  await pubsub.publish(topic, ALL_BYTES, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.true(Buffer.isBuffer(payload))
  t.is(payload.length, 256)
  t.true(payload.equals(ALL_BYTES))
})

test('a Uint8Array payload is sent as its own bytes, even when it views part of a larger buffer', async (t) => {
  const topic = uniqueTopic('uint8array')
  const pubsub = newPubSub(t)
  const { inbox } = await subscribed(pubsub, topic, { format: 'binary' })

  const backing = new Uint8Array([0x11, 0x22, 0x33, 0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x44, 0x55])
  const view = new Uint8Array(backing.buffer, 3, 6) // ff fe 00 80 c3 28
  t.false(Buffer.isBuffer(view))
  await pubsub.publish(topic, view, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.deepEqual([...payload], [0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28])
})

test("format 'binary' gives the raw bytes of a JSON message as a Buffer", async (t) => {
  const topic = uniqueTopic('binary-json')
  const pubsub = newPubSub(t)
  const { inbox } = await subscribed(pubsub, topic, { format: 'binary' })

  await pubsub.publish(topic, { a: 1, b: 'é' }, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.true(Buffer.isBuffer(payload))
  t.true(payload.equals(Buffer.from('{"a":1,"b":"é"}', 'utf8')))
})

test("format 'binary' delivers an empty payload as an empty Buffer", async (t) => {
  const topic = uniqueTopic('binary-empty')
  const pubsub = newPubSub(t)
  const { inbox } = await subscribed(pubsub, topic, { format: 'binary' })

  await pubsub.publish(topic, Buffer.alloc(0), { qos: 1 })

  const [payload] = await inbox.take(1)
  t.true(Buffer.isBuffer(payload))
  t.is(payload.length, 0)
})

test("format 'string' decodes the payload as UTF-8 text", async (t) => {
  const topic = uniqueTopic('string')
  const pubsub = newPubSub(t)
  const { inbox } = await subscribed(pubsub, topic, { format: 'string' })

  const text = 'plain text, not JSON: héllo ✓ 🌍'
  await pubsub.publish(topic, Buffer.from(text, 'utf8'), { qos: 1 })
  await pubsub.publish(topic, { json: true }, { qos: 1 })

  t.deepEqual(await inbox.take(2), [text, '{"json":true}'])
})

test("format 'message' gives topic, payload bytes, qos, retain and dup", async (t) => {
  const topic = uniqueTopic('message')
  const pubsub = newPubSub(t)
  const { inbox } = await subscribed(pubsub, topic, { format: 'message', qos: 1 })

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

test("format 'message' reports the QoS the broker delivered at: the lower of publish and subscribe", async (t) => {
  const base = uniqueTopic('message-qos')
  const pubsub = newPubSub(t)
  const atMostOnce = await subscribed(pubsub, `${base}/sub0`, { format: 'message', qos: 0 })
  const atLeastOnce = await subscribed(pubsub, `${base}/sub1`, { format: 'message', qos: 1 })
  const exactlyOnce = await subscribed(pubsub, `${base}/sub2`, { format: 'message', qos: 2 })

  await pubsub.publish(`${base}/sub0`, 'x', { qos: 2 })
  await pubsub.publish(`${base}/sub1`, 'x', { qos: 2 })
  await pubsub.publish(`${base}/sub2`, 'x', { qos: 2 })
  await pubsub.publish(`${base}/sub2`, 'x', { qos: 1 })

  t.deepEqual(
    (await atMostOnce.inbox.take(1)).map((m) => m.qos),
    [0],
  )
  t.deepEqual(
    (await atLeastOnce.inbox.take(1)).map((m) => m.qos),
    [1],
  )
  t.deepEqual(
    (await exactlyOnce.inbox.take(2)).map((m) => m.qos),
    [2, 1],
  )
})

test("format 'message' flags a retained copy with retain: true, and a live message with retain: false", async (t) => {
  const topic = uniqueTopic('message-retain')
  const pubsub = newPubSub(t)
  t.teardown(() => pubsub.publish(topic, Buffer.alloc(0), { retain: true, qos: 1 }))

  await pubsub.publish(topic, 'stored', { qos: 1, retain: true })
  const { inbox } = await subscribed(pubsub, topic, { format: 'message', qos: 1 })
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

test('a 256 KiB payload arrives byte-exact', async (t) => {
  const topic = uniqueTopic('large')
  // Published over WebSockets, received over TCP: Debian's mosquitto (libwebsockets) takes
  // seconds to write a large message out to a WebSocket client, whatever the client.
  const subscriber = newPubSub(t, { endpoint: broker.tcpUrl })
  const publisher = newPubSub(t)
  const { inbox } = await subscribed(subscriber, topic, { format: 'binary', qos: 1 })

  const big = crypto.randomBytes(256 * 1024)
  await publisher.publish(topic, big, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.is(payload.length, big.length)
  t.true(payload.equals(big))
})

test('a 256 KiB payload arrives byte-exact over WebSockets in both directions (aedes broker)', async (t) => {
  const aedes = await startAedes()
  t.teardown(() => aedes.stop())
  const topic = uniqueTopic('large-ws')
  const subscriber = newPubSub(t, { endpoint: aedes.wsUrl })
  const publisher = newPubSub(t, { endpoint: aedes.wsUrl })
  const { inbox } = await subscribed(subscriber, topic, { format: 'binary', qos: 1 })

  const big = crypto.randomBytes(256 * 1024)
  await publisher.publish(topic, big, { qos: 1 })

  const [payload] = await inbox.take(1)
  t.is(payload.length, big.length)
  t.true(payload.equals(big))
})

const jsonRoundTrip = test.macro({
  async exec(t, _kind, value) {
    const topic = uniqueTopic('json')
    const pubsub = newPubSub(t)
    const { inbox } = await subscribed(pubsub, topic, { qos: 1 })
    const raw = await subscribed(pubsub, topic, { qos: 1, format: 'string' })

    await pubsub.publish(topic, value, { qos: 1 })

    const [received] = await inbox.take(1)
    // On the wire: exactly JSON.stringify of the message.
    t.deepEqual(await raw.inbox.take(1), [JSON.stringify(value)])
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
