'use strict'
// Interoperability with an independent MQTT client: MQTT.js over WebSockets to the same
// mosquitto publishes to our subscribers and subscribes to our publishers. What crosses the wire
// is exactly Amplify's format: JSON text for values, raw bytes for Buffers and Uint8Arrays.
const test = require('ava')
const { TOPIC } = require('../mqtt.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { topicNamer, pubsubOn, listen, waitFor, sleep, mqttJs, plain, ALL_BYTES } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)

const uniqueTopic = topicNamer('interop')
const newPubSub = pubsubOn(broker)
/** An MQTT.js client on the same mosquitto; `messages` collects what it receives. */
const mqttJsClient = (t) => mqttJs(t, broker.wsUrl)

// ------------------------------------------------------------ MQTT.js → our subscriber

for (const qos of [0, 1]) {
  test(`JSON published by MQTT.js at QoS ${qos} arrives parsed, tagged with its topic`, async (t) => {
    const topic = uniqueTopic(`json-in-${qos}`)
    const ours = await listen(t, newPubSub(t), topic, { qos: 1 })
    const { client } = await mqttJsClient(t)
    const sent = { temperature: 21.5, tags: ['a', 'b'], nested: { ok: true }, nothing: null }
    await client.publishAsync(topic, JSON.stringify(sent), { qos })
    await waitFor(() => ours.values.length === 1, 5_000, 'the message')
    const [value] = ours.values
    t.deepEqual(plain(value), sent)
    t.is(value[TOPIC], topic)
    t.deepEqual(ours.errors, [])
  })

  test(`binary published by MQTT.js at QoS ${qos} arrives byte for byte in binary format`, async (t) => {
    const topic = uniqueTopic(`binary-in-${qos}`)
    const ours = await listen(t, newPubSub(t), topic, { qos: 1, format: 'binary' })
    const { client } = await mqttJsClient(t)
    await client.publishAsync(topic, ALL_BYTES, { qos })
    await waitFor(() => ours.values.length === 1, 5_000, 'the message')
    t.true(Buffer.isBuffer(ours.values[0]))
    t.deepEqual(ours.values[0], ALL_BYTES)
  })
}

test('the message format reports the QoS the broker delivered at: the lower of publish and subscription', async (t) => {
  const topic = uniqueTopic('qos-in')
  const pubsub = newPubSub(t)
  const atOne = await listen(t, pubsub, `${topic}/one`, { qos: 1, format: 'message' })
  const atZero = await listen(t, pubsub, `${topic}/zero`, { qos: 0, format: 'message' })
  const { client } = await mqttJsClient(t)
  await client.publishAsync(`${topic}/one`, 'a', { qos: 0 })
  await client.publishAsync(`${topic}/one`, 'b', { qos: 1 })
  await client.publishAsync(`${topic}/zero`, 'c', { qos: 1 })
  await waitFor(() => atOne.values.length === 2 && atZero.values.length === 1, 5_000, 'three messages')
  t.deepEqual(
    atOne.values.map(({ payload, qos, retain }) => [payload.toString(), qos, retain]),
    [
      ['a', 0, false],
      ['b', 1, false],
    ],
  )
  t.deepEqual([atZero.values[0].topic, atZero.values[0].qos], [`${topic}/zero`, 0])
})

test('a message MQTT.js retained reaches a later subscriber flagged retain', async (t) => {
  const topic = uniqueTopic('retained-in')
  const { client } = await mqttJsClient(t)
  await client.publishAsync(topic, JSON.stringify({ last: 'known' }), { qos: 1, retain: true })
  const ours = await listen(t, newPubSub(t), topic, { format: 'message' })
  await waitFor(() => ours.values.length === 1, 5_000, 'the retained message')
  t.is(ours.values[0].retain, true)
  t.is(ours.values[0].payload.toString(), '{"last":"known"}')
})

test('text published by MQTT.js arrives as the same string in string format', async (t) => {
  const topic = uniqueTopic('string-in')
  const ours = await listen(t, newPubSub(t), topic, { format: 'string' })
  const { client } = await mqttJsClient(t)
  await client.publishAsync(topic, 'grüße, 世界 ✓', { qos: 1 })
  await waitFor(() => ours.values.length === 1, 5_000, 'the message')
  t.is(ours.values[0], 'grüße, 世界 ✓')
})

// ---------------------------------------------------------------- our publisher → MQTT.js

test('MQTT.js receives exactly JSON.stringify(message) for every JSON value we publish', async (t) => {
  const topic = uniqueTopic('json-out')
  const { client, messages } = await mqttJsClient(t)
  await client.subscribeAsync(topic, { qos: 1 })
  const pubsub = newPubSub(t)
  const sent = [{ a: 1, nested: { b: [1, 2, 'three'] } }, 'plain text', 'grüße 世界', 42, 0.5, true, null, [1, 'two', { three: 3 }]]
  for (const message of sent) await pubsub.publish(topic, message, { qos: 1 })
  await waitFor(() => messages.length === sent.length, 5_000, 'every message')
  t.deepEqual(
    messages.map((m) => m.payload.toString('utf8')),
    sent.map((message) => JSON.stringify(message)),
  )
  t.true(messages.every((m) => m.topic === topic))
})

test('MQTT.js receives the raw bytes of a Buffer and of a Uint8Array view', async (t) => {
  const topic = uniqueTopic('bytes-out')
  const { client, messages } = await mqttJsClient(t)
  await client.subscribeAsync(topic, { qos: 1 })
  const pubsub = newPubSub(t)
  // A view into the middle of a larger buffer: only the viewed bytes may go out.
  const backing = new Uint8Array([9, 9, 1, 2, 3, 9, 9])
  const view = backing.subarray(2, 5)
  await pubsub.publish(topic, ALL_BYTES, { qos: 1 })
  await pubsub.publish(topic, view, { qos: 1 })
  await pubsub.publish(topic, Buffer.alloc(0), { qos: 1 })
  await waitFor(() => messages.length === 3, 5_000, 'three messages')
  t.deepEqual(messages[0].payload, ALL_BYTES)
  t.deepEqual(messages[1].payload, Buffer.from([1, 2, 3]))
  t.is(messages[2].payload.length, 0)
})

test('MQTT.js receives each message at the QoS we published it with', async (t) => {
  const topic = uniqueTopic('qos-out')
  const { client, messages } = await mqttJsClient(t)
  await client.subscribeAsync(topic, { qos: 2 })
  const pubsub = newPubSub(t)
  for (const qos of [0, 1, 2]) await pubsub.publish(topic, { qos }, { qos })
  await waitFor(() => messages.length === 3, 5_000, 'three messages')
  t.deepEqual(
    messages.map((m) => [JSON.parse(m.payload).qos, m.qos]),
    [
      [0, 0],
      [1, 1],
      [2, 2],
    ],
  )
  t.true(messages.every((m) => m.retain === false), 'live messages are not flagged retained')
})

test('retain: true is honored; a message without it is not kept for later subscribers', async (t) => {
  const topic = uniqueTopic('retain-out')
  const pubsub = newPubSub(t)
  await pubsub.publish(`${topic}/kept`, { state: 'on' }, { qos: 1, retain: true })
  await pubsub.publish(`${topic}/dropped`, { state: 'off' }, { qos: 1 })
  await pubsub.publish({ topics: `${topic}/v6-kept`, message: Buffer.from([7, 7]), options: { qos: 1, retain: true } })

  const { client, messages } = await mqttJsClient(t)
  await client.subscribeAsync(`${topic}/#`, { qos: 1 })
  await waitFor(() => messages.length === 2, 5_000, 'two retained messages')
  await sleep(200)
  const byTopic = Object.fromEntries(messages.map((m) => [m.topic.slice(topic.length + 1), m]))
  t.deepEqual(Object.keys(byTopic).sort(), ['kept', 'v6-kept'])
  t.is(byTopic.kept.retain, true)
  t.is(byTopic.kept.payload.toString(), '{"state":"on"}')
  t.deepEqual(byTopic['v6-kept'].payload, Buffer.from([7, 7]))
  t.is(byTopic['v6-kept'].retain, true)
})

test('one publish to several topics reaches MQTT.js on each, in both call forms', async (t) => {
  const topic = uniqueTopic('fan-out')
  const { client, messages } = await mqttJsClient(t)
  await client.subscribeAsync(`${topic}/#`, { qos: 1 })
  const pubsub = newPubSub(t)
  await pubsub.publish([`${topic}/a`, `${topic}/b`], { form: 'v5' }, { qos: 1 })
  await pubsub.publish({ topics: [`${topic}/c`, `${topic}/d`], message: { form: 'v6' }, options: { qos: 1 } })
  await waitFor(() => messages.length === 4, 5_000, 'four messages')
  t.deepEqual(
    messages.map((m) => `${m.topic.slice(topic.length + 1)}=${m.payload}`).sort(),
    ['a={"form":"v5"}', 'b={"form":"v5"}', 'c={"form":"v6"}', 'd={"form":"v6"}'],
  )
})

test('our subscriber and MQTT.js see each other’s messages on one shared topic', async (t) => {
  const topic = uniqueTopic('shared')
  const pubsub = newPubSub(t)
  const ours = await listen(t, pubsub, topic, { format: 'string', qos: 1 })
  const { client, messages } = await mqttJsClient(t)
  await client.subscribeAsync(topic, { qos: 1 })
  await pubsub.publish(topic, 'from native-pubsub', { qos: 1 })
  await client.publishAsync(topic, 'from MQTT.js', { qos: 1 })
  await waitFor(() => ours.values.length === 2 && messages.length === 2, 5_000, 'both messages on both sides')
  t.deepEqual(ours.values, ['"from native-pubsub"', 'from MQTT.js'])
  t.deepEqual(
    messages.map((m) => m.payload.toString()),
    ['"from native-pubsub"', 'from MQTT.js'],
  )
})
