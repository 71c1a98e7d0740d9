'use strict'
// Code ported from MQTT.js or the AWS IoT Device SDK v2 (aws-crt) keeps some of their habits:
// callbacks, their events, MQTT.js's subscribe object, crt's QoS and retain arguments, their
// option names, a WebSocket URL without a path. Each fails at once with what to write here,
// rather than being accepted and never heard from again.
const http = require('node:http')
const { once } = require('node:events')
const test = require('ava')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { pubsubOn, topicNamer, listen, runScript, exitOf } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)
const newPubSub = pubsubOn(broker)
const uniqueTopic = topicNamer('other-clients-habits')

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

test("aws-crt's events are refused too, saying what to listen to", (t) => {
  const pubsub = newPubSub(t)
  for (const event of ['connection_success', 'connection_failure', 'interrupt', 'resume', 'closed']) {
    const error = t.throws(() => pubsub.on(event, () => {}))
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.true(error.message.startsWith(`A PubSub emits no '${event}' event (aws-crt's): the connection's state comes as 'ConnectionStateChange' events`), error.message)
    t.is(pubsub.listenerCount(event), 0)
  }
})

test("aws-crt's retain argument rejects, saying it goes in the options; nothing is sent", async (t) => {
  const pubsub = newPubSub(t)
  const topic = uniqueTopic('crt-retain')
  const inbox = await listen(t, pubsub, topic)
  const error = await t.throwsAsync(pubsub.publish(topic, 'm', { qos: 1 }, true))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.is(
    error.message,
    "publish takes (topics, message, options) or ({ topics, message, options }); argument 4 is not read: aws-crt's retain flag goes in the options, { qos, retain: true }",
  )
  const v6 = await t.throwsAsync(pubsub.publish({ topics: topic, message: 'm' }, { retain: true }))
  t.is(v6.message, 'publish takes (topics, message, options) or ({ topics, message, options }); argument 2 is not read')
  // Left undefined (a wrapper passing its own optional arguments on), they are not in the way.
  await pubsub.publish(topic, 'after', { qos: 1 }, undefined)
  t.deepEqual(await inbox.take(1), ['after'], 'only the publish without the extra argument arrived')
  const subscribeError = t.throws(() => pubsub.subscribe(topic, { qos: 1 }, 'extra'))
  t.is(subscribeError.message, 'subscribe takes (topics, options) or ({ topics, options }); argument 3 is not read')
})

test("aws-crt's QoS given as the options is told to go in them", async (t) => {
  const pubsub = newPubSub(t)
  const publishError = await t.throwsAsync(pubsub.publish(uniqueTopic('crt-qos'), 'm', 1))
  t.is(publishError.message, 'options must be an object, got the number 1: the QoS goes in it, as in { qos: 1 }')
  const errors = []
  pubsub.subscribe(uniqueTopic('crt-qos'), 0).subscribe({ error: (error) => errors.push(error) })
  t.deepEqual(errors.map((error) => [error.code, error.message]), [['ERR_INVALID_OPTION', 'options must be an object, got the number 0: the QoS goes in it, as in { qos: 0 }']])
})

test('the singleton refuses the same extra arguments', async (t) => {
  const { PubSub: Singleton } = require('../index.js')
  const error = await t.throwsAsync(Singleton.publish('a/b', 'm', {}, true))
  t.regex(error.message, /^publish takes .*argument 4 is not read: aws-crt's retain flag/)
  t.throws(() => Singleton.subscribe('a/b', {}, () => {}), { code: 'ERR_INVALID_OPTION', message: /^subscribe takes no callback/ })
})

test('cleanSession: false without a clientId warns once that the session will not outlive the process', async (t) => {
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const warnings = []
     process.on('warning', (w) => { if (w.name === 'NativePubSubWarning') warnings.push(w.message) })
     new PubSub({ endpoint: 'mqtt://127.0.0.1:1', cleanSession: false, clientId: 'fixed' })
     new PubSub({ endpoint: 'mqtt://127.0.0.1:1' })
     new PubSub({ endpoint: 'mqtt://127.0.0.1:1', cleanSession: false })
     new PubSub({ endpoint: 'mqtt://127.0.0.1:1', cleanSession: false })
     setImmediate(() => console.log(JSON.stringify(warnings)))`,
  )
  t.is((await exitOf(t, run)).code, 0, run.stderr)
  const warnings = JSON.parse(run.stdout)
  t.is(warnings.length, 1, 'once per process')
  t.true(warnings[0].startsWith('cleanSession: false without a clientId: this instance has a random client id'), warnings[0])
  t.regex(warnings[0], /Give a fixed clientId/)
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

test("MQTT.js's and aws-crt's option names say what to use instead", (t) => {
  for (const [option, says] of [
    [{ clean: false }, "(MQTT.js's name for 'cleanSession')"],
    [{ reconnectPeriod: 1000 }, "'reconnect': { minDelayMs, maxDelayMs }, or false"],
    [{ keepalive: 30 }, "(did you mean 'keepAlive'?)"],
    [{ clean_session: false }, "(did you mean 'cleanSession'?)"],
    [{ client_id: 'device-1' }, "(did you mean 'clientId'?)"],
    [{ keep_alive_secs: 30 }, "(aws-crt's; here 'keepAlive', in seconds)"],
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
