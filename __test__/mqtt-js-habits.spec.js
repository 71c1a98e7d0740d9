'use strict'
// Code ported from MQTT.js keeps some of its habits: callbacks, its events, its subscribe object
// and option names, a WebSocket URL without a path. Each fails at once with what to write here,
// rather than being accepted and never heard from again.
const http = require('node:http')
const { once } = require('node:events')
const test = require('ava')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { pubsubOn, topicNamer, listen } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)
const newPubSub = pubsubOn(broker)
const uniqueTopic = topicNamer('mqtt-js-habits')

test('publish with a callback rejects, saying it returns a Promise; nothing is sent', async (t) => {
  const pubsub = newPubSub(t)
  const topic = uniqueTopic('publish-callback')
  const inbox = await listen(t, pubsub, topic)
  let called = false
  for (const call of [
    () => pubsub.publish(topic, 'm', { qos: 1 }, () => (called = true)),
    () => pubsub.publish(topic, 'm', () => (called = true)),
    () => pubsub.publish({ topics: topic, message: 'm' }, () => (called = true)),
  ]) {
    const error = await t.throwsAsync(call())
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.is(error.message, "publish takes no callback (MQTT.js's last argument): it returns a Promise: await it, or use .then(…, …)")
  }
  await pubsub.publish(topic, 'after', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['after'], 'only the publish without a callback arrived')
  t.false(called)
})

test('subscribe with a callback throws at once, saying where the callback goes', (t) => {
  const pubsub = newPubSub(t)
  for (const call of [() => pubsub.subscribe('a/b', { qos: 1 }, () => {}), () => pubsub.subscribe('a/b', () => {})]) {
    const error = t.throws(call)
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.regex(error.message, /^subscribe takes no callback \(MQTT\.js's last argument\): it returns an Observable: pass the callback to its subscribe\(\)/)
  }
  t.is(pubsub.connectionState, 'Disconnected', 'nothing was subscribed')
})

test("MQTT.js's events are refused, saying what to listen to; ours and Node's events.once work", async (t) => {
  const pubsub = newPubSub(t)
  for (const [event, says] of [
    ['message', /messages come to subscriptions/],
    ['connect', /'ConnectionStateChange' events/],
    ['offline', /'ConnectionStateChange' events/],
    ['close', /'ConnectionStateChange' events/],
  ]) {
    for (const add of ['on', 'once', 'addListener', 'prependListener']) {
      const error = t.throws(() => pubsub[add](event, () => {}))
      t.is(error.code, 'ERR_INVALID_OPTION')
      t.true(error.message.startsWith(`A PubSub emits no '${event}' event (MQTT.js's): `), error.message)
      t.regex(error.message, says)
    }
    t.is(pubsub.listenerCount(event), 0)
  }
  const connected = once(pubsub, 'ConnectionStateChange')
  await pubsub.publish(uniqueTopic('events'), 'x')
  t.deepEqual(await connected, ['Connecting'])
  // removeAllListeners() takes every listener away, and the refusal stays.
  pubsub.removeAllListeners()
  t.throws(() => pubsub.on('message', () => {}), { code: 'ERR_INVALID_OPTION' })
  pubsub.removeAllListeners('newListener')
  t.throws(() => pubsub.on('message', () => {}), { code: 'ERR_INVALID_OPTION' })
  t.is(pubsub.listenerCount('newListener'), 1)
})

test("subscribe with MQTT.js's { filter: qos } object: the observer's error says how to write it", (t) => {
  const pubsub = newPubSub(t)
  const errors = []
  pubsub.subscribe({ 'a/+': 1, b: 0 }).subscribe({ error: (error) => errors.push(error) })
  t.is(errors.length, 1)
  t.is(errors[0].code, 'ERR_INVALID_TOPIC')
  t.is(
    errors[0].message,
    "topics must be a string or a non-empty array of strings: MQTT.js's { filter: qos } object is not taken; pass the filters as an array and the QoS as an option, e.g. subscribe(['a/+', 'b'], { qos: 1 })",
  )
})

test("the topics given as { topic } (Amplify's name is topics) or as anything else are told apart", async (t) => {
  const pubsub = newPubSub(t)
  const errors = []
  pubsub.subscribe({ topic: 'a/b' }).subscribe({ error: (error) => errors.push(error) })
  const publishError = await t.throwsAsync(pubsub.publish({ topic: 'a/b', message: 1 }))
  pubsub.subscribe({ 'a/+': 'yes' }).subscribe({ error: (error) => errors.push(error) })
  pubsub.subscribe({ qos: 1 }).subscribe({ error: (error) => errors.push(error) })
  pubsub.subscribe(Object.assign(Object.create(null), { topic: 'a' })).subscribe({ error: (error) => errors.push(error) })
  t.deepEqual(
    [...errors, publishError].map((error) => error.message),
    [
      "topics must be a string or a non-empty array of strings: did you mean { topics: … } (Amplify's name), not { topic: … }?",
      'topics must be a string or a non-empty array of strings',
      'topics must be a string or a non-empty array of strings: options were given in their place; write subscribe(topics, options)',
      "topics must be a string or a non-empty array of strings: did you mean { topics: … } (Amplify's name), not { topic: … }?",
      "topics must be a string or a non-empty array of strings: did you mean { topics: … } (Amplify's name), not { topic: … }?",
    ],
  )
})

test("MQTT.js's option names say what to use instead", (t) => {
  for (const [option, says] of [
    [{ clean: false }, "(MQTT.js's name for 'cleanSession')"],
    [{ reconnectPeriod: 1000 }, "'reconnect': { minDelayMs, maxDelayMs }, or false"],
    [{ keepalive: 30 }, "(did you mean 'keepAlive'?)"],
  ]) {
    const error = t.throws(() => newPubSub(t, option))
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.true(error.message.includes(says), error.message)
  }
})

test("a WebSocket path the server does not serve (HTTP 404) suggests '/mqtt', unless it was that", async (t) => {
  const server = http.createServer((request, response) => response.writeHead(404).end())
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  for (const [path, says] of [
    ['', / on another path \('\/mqtt' on most brokers\)$/],
    ['/mqtt', / on another path$/],
  ]) {
    const pubsub = newPubSub(t, { endpoint: `ws://127.0.0.1:${server.address().port}${path}`, reconnect: false })
    const error = await t.throwsAsync(pubsub.publish('a/b', 'x'))
    t.is(error.code, 'ERR_CONNECTION')
    t.regex(error.message, /was answered HTTP 404 Not Found: the server takes MQTT over WebSocket/)
    t.regex(error.message, says)
  }
})
