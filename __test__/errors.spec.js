'use strict'
// Every error code the package reports, each with the mistake or failure that produces it, and
// where it surfaces: constructor errors throw synchronously, publish errors reject the returned
// promise, subscribe errors go to the observer's `error` (and reject `subscription.ready`).
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const test = require('ava')
const { PubSub, MqttOverWSProvider, Hub, mqttTopicMatch } = require('../mqtt.js')
const { useMosquitto, startMosquitto, freePort } = require('./helpers/mosquitto.js')
const { useAedes } = require('./helpers/aedes.js')
const { startFakeBroker, packets, SUBSCRIBE } = require('./helpers/fake-broker.js')
const { useForFile, topicNamer, pubsubOn, listen, recordEvents, waitFor, fakeServer, tcpServer, pubsubScript, runScript, exitOf, captureWarnings } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)
// aedes answers SUBACK 0x80 for a subscription its authorizeSubscribe hook turns down
// (mosquitto 2 grants an ACL-denied filter to an MQTT 3.1.1 client and just never delivers).
const refusingBroker = useAedes(test, {
  authorizeSubscribe(client, subscription, callback) {
    callback(null, subscription.topic.startsWith('forbidden/') ? null : subscription)
  },
})

const USER = 'alice'
const PASSWORD = 'correct-horse-battery-staple'
const WRONG_PASSWORD = 'Tr0ub4dor&3-wrong'
const authBroker = useForFile(test, async () => {
  // mosquitto drops root privileges to user `mosquitto`: its password file must be readable.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-auth-'))
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  try {
    fs.chmodSync(dir, 0o755)
    const passwordFile = path.join(dir, 'passwd')
    execFileSync('/usr/bin/mosquitto_passwd', ['-b', '-c', passwordFile, USER, PASSWORD])
    fs.chmodSync(passwordFile, 0o644)
    const mosquitto = await startMosquitto({ lines: ['allow_anonymous false', `password_file ${passwordFile}`] })
    return {
      ...mosquitto,
      async stop() {
        await mosquitto.stop()
        removeDir()
      },
    }
  } catch (error) {
    removeDir()
    throw error
  }
})

const newPubSub = pubsubOn(broker)
const uniqueTopic = topicNamer('errors')

/** Resolves with the error the observer's `error` receives. */
function observerError(pubsub, topics, options) {
  return new Promise((resolve, reject) => {
    let sub
    const timer = setTimeout(() => reject(new Error('the observer got no error')), 10_000)
    sub = pubsub.subscribe(topics, options).subscribe({
      next: (value) => reject(new Error(`unexpected message ${String(value)}`)),
      error: (error) => {
        clearTimeout(timer)
        // `sub` is unset when the error arrives during `.subscribe()` itself; read it later.
        setImmediate(() => resolve({ error, sub }))
      },
    })
  })
}

/** An HTTP server that answers every WebSocket upgrade with `status`. */
async function httpStatusServer(t, status) {
  const server = http.createServer((req, res) => {
    res.writeHead(status)
    res.end()
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  return `ws://127.0.0.1:${server.address().port}/mqtt`
}

/** An object `depth` levels deep: `{ a: { a: … {} } }`. */
function nested(depth) {
  const root = {}
  let level = root
  for (let i = 1; i < depth; i++) level = level.a = {}
  return root
}

/** `{ policy: 'all', self: <itself> }`. */
function selfReferring() {
  const value = { policy: 'all' }
  value.self = value
  return value
}

/** `new PubSub(options)`; an instance that (wrongly) gets built is closed again at once. */
function construct(options) {
  const pubsub = new PubSub(options)
  pubsub.close()
  return pubsub
}

const CONNACK = (returnCode) => Buffer.from([0x20, 0x02, 0x00, returnCode])

// ---------------------------------------------------------------- ERR_INVALID_ENDPOINT (sync)

for (const [what, endpoint, hint] of [
  ['an http:// URL', 'http://127.0.0.1/mqtt', /unsupported scheme 'http:'.*ws:\/\/.*mqtt:\/\//],
  ['a URL without a host', 'ws://', /host/],
  ['a string that is no URL', 'not a url', /'not a url': it is not a URL; give the broker's URL with its scheme, e\.g\. 'mqtt:\/\/broker\.example\.com:1883'/],
  ['an empty string', '', /endpoint '': it is empty; give the broker's URL/],
  // The URL parser said "relative URL without a base", or took the host for a scheme.
  ['an IP address and port without a scheme', '127.0.0.1:1883', /'127\.0\.0\.1:1883': it has no scheme; add one, e\.g\. 'mqtt:\/\/127\.0\.0\.1:1883' \(MQTT over TCP; mqtts:\/\/ with TLS\) or 'ws:\/\/127\.0\.0\.1:1883\/mqtt' \(MQTT over WebSocket; wss:\/\/ with TLS\)$/],
  ['a host name and port without a scheme', 'localhost:1883', /it has no scheme; add one, e\.g\. 'mqtt:\/\/localhost:1883' .* or 'ws:\/\/localhost:1883\/mqtt'/],
  ['a host name alone', 'broker.example.com', /it has no scheme; add one, e\.g\. 'mqtt:\/\/broker\.example\.com' .* or 'ws:\/\/broker\.example\.com\/mqtt'/],
  ['a host and path without a scheme', 'broker.example.com:9001/ws', /'mqtt:\/\/broker\.example\.com:9001' .* or 'ws:\/\/broker\.example\.com:9001\/ws'/],
  // The URL parser said "invalid international domain name".
  ['a placeholder from the docs', 'wss://xxxxxxxxxxxxx-ats.iot.<YOUR-AWS-REGION>.amazonaws.com/mqtt', /'<YOUR-AWS-REGION>' is a placeholder \(from an example or the docs\): replace it with your own value/],
  ['a template placeholder', 'ws://{host}:9001/mqtt', /'\{host\}' is a placeholder/],
]) {
  test(`the constructor throws ERR_INVALID_ENDPOINT synchronously for ${what}`, (t) => {
    const error = t.throws(() => new PubSub({ endpoint }), { code: 'ERR_INVALID_ENDPOINT' })
    t.regex(error.message, hint)
  })
}

test('the constructor throws ERR_INVALID_ENDPOINT naming the option when no endpoint is given', (t) => {
  const error = t.throws(() => new PubSub({ clientId: 'no-endpoint' }), { code: 'ERR_INVALID_ENDPOINT' })
  t.regex(error.message, /'endpoint' is required/)
})

test('credentials in the endpoint URL are refused with ERR_INVALID_ENDPOINT without echoing the password', (t) => {
  const secret = 'url-secret-Pa55w0rd'
  const error = t.throws(() => new PubSub({ endpoint: `ws://bob:${secret}@127.0.0.1:1883/mqtt` }), {
    code: 'ERR_INVALID_ENDPOINT',
  })
  t.regex(error.message, /username and password options/)
  t.false(error.message.includes(secret), `the message leaks the password: ${error.message}`)
  t.false(String(error.stack).includes(secret), 'the stack leaks the password')
})

test("a password holding an unencoded '/', '?' or '#' (where a URL's host part ends) is not echoed either", (t) => {
  for (const separator of ['/', '?', '#']) {
    const secret = `url${separator}secret-Pa55w0rd`
    const error = t.throws(() => new PubSub({ endpoint: `ws://bob:${secret}@127.0.0.1:1883/mqtt` }), { code: 'ERR_INVALID_ENDPOINT' })
    t.false(error.message.includes('secret-Pa55w0rd'), `the message leaks the password: ${error.message}`)
    t.true(error.message.includes('ws://***@127.0.0.1:1883/mqtt'), error.message)
  }
})

// ------------------------------------------------------------------ ERR_INVALID_OPTION (sync)

const endpoint = 'ws://127.0.0.1:1/mqtt'
for (const [what, options, named] of [
  ['options that are not an object', 'ws://127.0.0.1:1/mqtt', 'options'],
  ['an endpoint that is not a string', { endpoint: 1883 }, 'endpoint'],
  ['a clientId that is not a string', { endpoint, clientId: 7 }, 'clientId'],
  ['an empty clientId', { endpoint, clientId: '' }, 'clientId'],
  // MQTT forbids U+0000 in its strings and says they should not hold control characters, which
  // mosquitto closes the connection for, before CONNACK: retried for ever. A value read from a
  // file or an environment variable often ends with a newline.
  ['a clientId with a NUL character', { endpoint, clientId: 'worker\u00001' }, "'clientId' must not contain a NUL character"],
  ['a clientId ending with a newline', { endpoint, clientId: 'worker-1\n' }, "'clientId' holds U+000A (a control character)"],
  ['a username with a control character', { endpoint, username: 'al\tice', password: 'pw' }, "'username' holds U+0009 (a control character)"],
  ['a username that is not a string', { endpoint, username: 5 }, 'username'],
  ['a password without a username', { endpoint, password: 'pw' }, 'password'],
  ['a keepAlive given as a string', { endpoint, keepAlive: '60' }, 'keepAlive'],
  ['a keepAlive in milliseconds by mistake', { endpoint, keepAlive: 0.5 }, 'keepAlive'],
  // MQTT carries whole seconds: it would be cut to 1 s.
  ['a keepAlive with a fraction of a second', { endpoint, keepAlive: 1.5 }, 'whole number of seconds'],
  ['a keepAlive beyond MQTT’s 65,535 s', { endpoint, keepAlive: 70_000 }, 'keepAlive'],
  ['a keepAlive that is NaN', { endpoint, keepAlive: Number.NaN }, 'keepAlive'],
  ['a connectTimeout of 0', { endpoint, connectTimeout: 0 }, 'connectTimeout'],
  ['a connectTimeout of Infinity', { endpoint, connectTimeout: Number.POSITIVE_INFINITY }, 'connectTimeout'],
  ['a cleanSession that is not a boolean', { endpoint, cleanSession: 'yes' }, 'cleanSession'],
  // Amplify's plain-ws switch is accepted (and has no effect), but not coerced from a string.
  [
    "Amplify's aws_appsync_dangerously_connect_to_http_endpoint_for_testing given as a string",
    { endpoint, aws_appsync_dangerously_connect_to_http_endpoint_for_testing: 'true' },
    'aws_appsync_dangerously_connect_to_http_endpoint_for_testing',
  ],
  ['an unknown option (wrong case)', { endpoint, keepalive: 30 }, "Unknown option 'keepalive'"],
  // Neither may win in silence (the secret of a URL is not echoed: see above).
  ['an endpoint and its v5 alias with different values', { endpoint, aws_pubsub_endpoint: 'ws://127.0.0.1:2/mqtt' }, "'endpoint' and 'aws_pubsub_endpoint'"],
  ['a will that is not an object', { endpoint, will: 'bye' }, 'will'],
  ['a will without a topic', { endpoint, will: { message: 'bye' } }, 'will.topic'],
  ['a will topic with a wildcard', { endpoint, will: { topic: 'status/#' } }, 'will.topic'],
  ['a will topic with a control character', { endpoint, will: { topic: 'status\r\n' } }, 'will.topic'],
  ['an empty will topic', { endpoint, will: { topic: '' } }, 'will.topic'],
  ['a will topic that is not a string', { endpoint, will: { topic: 5 } }, 'will.topic'],
  ['a will qos of 3', { endpoint, will: { topic: 'status', qos: 3 } }, 'will.qos'],
  ['a will qos of 1.5', { endpoint, will: { topic: 'status', qos: 1.5 } }, 'will.qos'],
  ['a will retain that is not a boolean', { endpoint, will: { topic: 'status', retain: 'yes' } }, 'will.retain'],
  // MQTT.js's name for the will message: dropped in silence, the will would go out empty.
  ['a will payload (its name in MQTT.js) instead of message', { endpoint, will: { topic: 'status', payload: 'bye' } }, "Unknown option 'will.payload'"],
  ['a will with an unknown key', { endpoint, will: { topic: 'status', message: 'bye', qos: 1, retained: true } }, "Unknown option 'will.retained'"],
  ['a ca that holds no certificate', { endpoint, ca: 'not a certificate' }, 'ca'],
  ['a ca Buffer that holds no certificate', { endpoint, ca: Buffer.from('garbage') }, 'ca'],
  [
    'a ca whose PEM block is corrupt',
    { endpoint, ca: '-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n' },
    'ca',
  ],
  ['a ca that is not a string or Buffer', { endpoint, ca: 5 }, 'ca'],
  // Values JSON has no form for, which the native side cannot read: each is named, never
  // reported as napi's uncoded InvalidArg or taken as some other value.
  ['a clientId that is a symbol', { endpoint, clientId: Symbol('id') }, "'clientId'"],
  ['a will topic that is a symbol', { endpoint, will: { topic: Symbol('status') } }, "'will.topic'"],
  // napi would turn it into U+FFFD: the will would go to another topic.
  ['a will topic with a lone surrogate', { endpoint, will: { topic: 'status/\ud83d' } }, "'will.topic' holds a lone surrogate"],
  ['an endpoint given as a URL object', { endpoint: new URL(endpoint) }, "'endpoint'"],
  ['a password given as a Buffer', { endpoint, username: 'u', password: Buffer.from('pw') }, "'password'"],
  ['a keepAlive given as a BigInt', { endpoint, keepAlive: 30n }, "'keepAlive' must be a number, got a bigint"],
  ['a keepAlive given as a BigInt beyond 2^64', { endpoint, keepAlive: 2n ** 70n }, "'keepAlive' must be a number, got a bigint"],
  ['a reconnect delay that is NaN', { endpoint, reconnect: { minDelayMs: Number.NaN } }, "'reconnect.minDelayMs'"],
  ['an offline queue bound of Infinity', { endpoint, offlineQueue: { maxBytes: Number.POSITIVE_INFINITY } }, "'offlineQueue.maxBytes'"],
  // It would be cut to 2 without a word.
  ['an offline queue bound of 2.5 messages', { endpoint, offlineQueue: { maxMessages: 2.5 } }, "'offlineQueue.maxMessages' must be a whole number"],
  ['an option nested a thousand levels deep', { endpoint, reconnect: nested(1_000) }, "'reconnect"],
  ['an object that refers to itself', { endpoint, offlineQueue: selfReferring() }, "'offlineQueue"],
  // No option is an array: its elements are not read. Copying this one's 4 billion holes made V8
  // abort the process ("Fatal JavaScript invalid size error").
  ['an array of 2^32 - 1 holes', { endpoint, clientId: new Array(2 ** 32 - 1) }, "Option 'clientId' must be a string, got an array"],
  ['options that are an array', [endpoint], 'options must be an object'],
]) {
  test(`the constructor throws ERR_INVALID_OPTION naming the option for ${what}`, (t) => {
    const error = t.throws(() => construct(options), { code: 'ERR_INVALID_OPTION' })
    t.true(error.message.includes(named), `"${error.message}" should mention ${named}`)
  })
}

test('an unknown option error lists the known options', (t) => {
  const error = t.throws(() => new PubSub({ endpoint, host: '127.0.0.1' }), { code: 'ERR_INVALID_OPTION' })
  t.regex(error.message, /Unknown option 'host'/)
  t.regex(error.message, /endpoint.*clientId.*keepAlive/)
})

test('a will message that cannot be serialised throws ERR_PAYLOAD from the constructor', (t) => {
  t.throws(() => new PubSub({ endpoint, will: { topic: 'status', message: 10n } }), { code: 'ERR_PAYLOAD' })
})

// A callback or argument of the wrong type is a TypeError, as in Node's own API, and still has a code.
for (const [what, call, code] of [
  ['Hub.listen with a callback that is not a function', () => Hub.listen('pubsub', 5), 'ERR_INVALID_OPTION'],
  ['an observable subscribed with an observer that is a number', () => new PubSub({ endpoint }).subscribe('a').subscribe(5), 'ERR_INVALID_OPTION'],
  // Messages would be dropped in silence: a member that is there is called.
  ['an observable subscribed with an observer whose next is not a function', () => new PubSub({ endpoint }).subscribe('a').subscribe({ next: 5 }), 'ERR_INVALID_OPTION'],
  ['an observable subscribed with an observer whose error is not a function', () => new PubSub({ endpoint }).subscribe('a').subscribe({ next() {}, error: 'log' }), 'ERR_INVALID_OPTION'],
  ['mqttTopicMatch given numbers', () => mqttTopicMatch(1, 2), 'ERR_INVALID_TOPIC'],
  ['mqttTopicMatch given no topic', () => mqttTopicMatch('a/#'), 'ERR_INVALID_TOPIC'],
]) {
  test(`${what} throws a TypeError with the code ${code}`, (t) => {
    const error = t.throws(call, { instanceOf: TypeError })
    t.is(error.code, code)
  })
}

// ----------------------------------------------------------------------- ERR_INVALID_THIS

// JS alone would throw "Cannot read private member #closing from an object whose class did not
// declare it" (publish: reject with it), a TypeError without a code.
test('a method taken off an instance and called on its own is a TypeError ERR_INVALID_THIS saying to bind it', async (t) => {
  const pubsub = newPubSub(t)
  const { publish, subscribe, stats, close } = pubsub
  const error = await t.throwsAsync(publish(uniqueTopic('unbound'), 'x'), { instanceOf: TypeError, code: 'ERR_INVALID_THIS' })
  t.regex(error.message, /^pubsub\.publish needs a PubSub instance as `this`, got undefined .*pubsub\.publish\.bind\(pubsub\)$/)
  for (const call of [() => subscribe('a/b'), () => stats(), () => close(), () => close.call(Symbol('x'))]) {
    t.throws(call, { instanceOf: TypeError, code: 'ERR_INVALID_THIS' })
  }
  // Bound, they work.
  await publish.bind(pubsub)(uniqueTopic('unbound'), 'x', { qos: 1 })
  t.is(stats.call(pubsub).messagesSent, 1)
})

test('a Proxy around an instance (a reactive wrapper, say) is not one: its methods and getters are ERR_INVALID_THIS', async (t) => {
  const proxy = new Proxy(newPubSub(t, { endpoint }), {})
  t.throws(() => proxy.clientId, { instanceOf: TypeError, code: 'ERR_INVALID_THIS' })
  t.throws(() => proxy.connectionState, { instanceOf: TypeError, code: 'ERR_INVALID_THIS' })
  await t.throwsAsync(proxy.publish('a/b', 'x'), { instanceOf: TypeError, code: 'ERR_INVALID_THIS' })
})

// As in Node's own APIs, an error the user's code throws while the package reads a value (a
// getter, a Proxy trap) is that error, not one of ours: its stack points at the getter.
test("an error thrown by the user's own getter or Proxy trap passes through unchanged: thrown by the constructor, a rejection of publish", async (t) => {
  const own = new Error('thrown by a getter of the application')
  const throwing = (object, key) => Object.defineProperty(object, key, { enumerable: true, get: () => { throw own } })
  t.is(t.throws(() => new PubSub(throwing({ endpoint }, 'clientId'))), own)
  t.is(t.throws(() => new PubSub({ endpoint, reconnect: throwing({}, 'minDelayMs') })), own)
  const pubsub = newPubSub(t, { endpoint })
  t.is(await t.throwsAsync(pubsub.publish(throwing({ message: 'x' }, 'topics'))), own)
  t.is(await t.throwsAsync(pubsub.publish('a/b', 'x', throwing({}, 'qos'))), own)
  const topics = new Proxy(['a/b'], { get: (target, key) => { if (key === 'length') throw own; return target[key] } })
  t.is(await t.throwsAsync(pubsub.publish(topics, 'x')), own)
  t.is(t.throws(() => pubsub.subscribe('a/b').subscribe(throwing({}, 'next'))), own)
  // JSON's own reading of a message is the exception: that is ERR_PAYLOAD, like a throwing toJSON.
  const error = await t.throwsAsync(pubsub.publish('a/b', throwing({}, 'x')), { code: 'ERR_PAYLOAD' })
  t.is(error.cause, own)
})

// ---------------------------------------------------------------------- ERR_INVALID_TOPIC

for (const [what, bad, hint] of [
  ['an empty topic', '', /must not be empty/],
  ['a topic with the + wildcard', 'a/+', /wildcards/],
  ['a topic with the # wildcard', 'a/#', /wildcards/],
  ['a topic with a NUL character', 'a/b\u0000c', /NUL/],
  ['a topic of 65,536 bytes', 't/' + 'x'.repeat(65_534), /65536 bytes.*65535/],
  ['a topic of 32,768 characters but 65,536 UTF-8 bytes', 'é'.repeat(32_768), /65536 bytes/],
  ['an empty topic list', [], /topics/],
  ['a topic list with one bad topic', ['ok/topic', 'bad/+'], /wildcards/],
  // MQTT says topics should not hold control characters or Unicode noncharacters, and mosquitto
  // closes the connection when one arrives: the publish was lost (a QoS 0 one resolved all the
  // same), every subscription of the connection was cut, and three in a row were reported to
  // every observer as a client id takeover. A topic built from input may end with a newline.
  ['a topic ending with a newline', 'sensors/temp\n', /'sensors\/temp\\n' holds U\+000A \(a control character\)/],
  ['a topic with a C1 control character', 'sensors/\u0085', /U\+0085 \(a control character\)/],
  ['a topic with DEL', 'sensors/\u007f', /U\+007F \(a control character\)/],
  ['a topic with a Unicode noncharacter', 'sensors/\uffff', /U\+FFFF \(a Unicode noncharacter\)/],
  ['a topic with a noncharacter beyond the BMP', 'sensors/\u{10FFFE}', /U\+10FFFE \(a Unicode noncharacter\)/],
  // UTF-8 cannot carry it: napi would send U+FFFD, to another topic than the one given.
  ['a topic with a lone surrogate', 'sensors/\ud800/temp', /"sensors\/\\ud800\/temp" holds a lone surrogate/],
]) {
  test(`publishing to ${what} rejects ERR_INVALID_TOPIC and sends nothing`, async (t) => {
    const marker = uniqueTopic('marker')
    const watcher = newPubSub(t)
    // Everything on the broker: what we look for is this test's marker in the payload.
    const { values } = await listen(t, watcher, '#', { format: 'string' })
    const publisher = newPubSub(t)
    const states = recordEvents(publisher, 'ConnectionStateChange')

    await t.throwsAsync(publisher.publish(bad, `bad ${marker}`, { qos: 1 }), { code: 'ERR_INVALID_TOPIC', message: hint })
    t.deepEqual(states, [], 'an invalid publish does not even open a connection')

    const sentinel = uniqueTopic('sentinel')
    await publisher.publish(sentinel, `end ${marker}`, { qos: 1 })
    await waitFor(() => values.some((v) => v === JSON.stringify(`end ${marker}`)), 5_000, 'the sentinel')
    t.deepEqual(
      values.filter((v) => v.includes(marker)),
      [JSON.stringify(`end ${marker}`)],
      'only the sentinel reached the broker',
    )
  })
}

test('without String.prototype.isWellFormed (Node 18 lacks it), lone surrogates are still refused and surrogate pairs still accepted', async (t) => {
  // The check then falls back to a regular expression; Node 20 and later never run that path
  // unless isWellFormed is taken away before the package loads, as here in a child process.
  const topic = uniqueTopic('astral')
  const run = runScript(
    t,
    `delete String.prototype.isWellFormed
     ${pubsubScript(`
       const codeOf = (fn) => { try { fn(); return 'none' } catch (error) { return error.code } }
       const result = { fallback: String.prototype.isWellFormed === undefined }
       result.option = codeOf(() => new pubsub.constructor({ endpoint: process.env.BROKER, clientId: 'device-\\ud83d' }))
       pubsub.publish('sensors/\\ud800/temp', 1).then(() => 'none', (error) => [error.code, error.message]).then(async (published) => {
         result.published = published
         result.subscribed = await pubsub.subscribe('a/\\udc00').subscribe({ error() {} }).ready.then(() => 'none', (error) => error.code)
         // A pair (U+1F600) is well formed: it goes out and comes back.
         let arrived
         const received = new Promise((resolve) => (arrived = resolve))
         const sub = pubsub.subscribe(process.env.TOPIC, { format: 'string' }).subscribe({
           next(value) {
             result.astral = value
             arrived()
           },
         })
         await sub.ready
         // Closed once the publish is acknowledged too: close() rejects a publish still pending.
         await pubsub.publish(process.env.TOPIC, 'pair \\ud83d\\ude00', { qos: 1 })
         await received
         await pubsub.close()
         console.log(JSON.stringify(result))
       })`)}`,
    { BROKER: broker.wsUrl, TOPIC: `${topic}/\ud83d\ude00` },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  const result = JSON.parse(run.stdout)
  t.true(result.fallback, 'the package ran without String.prototype.isWellFormed')
  t.is(result.option, 'ERR_INVALID_OPTION')
  t.is(result.published[0], 'ERR_INVALID_TOPIC')
  t.regex(result.published[1], /"sensors\/\\ud800\/temp" holds a lone surrogate/)
  t.is(result.subscribed, 'ERR_INVALID_TOPIC')
  t.is(result.astral, JSON.stringify('pair \ud83d\ude00'))
})

test('publishing rejects a topic list that is not strings with ERR_INVALID_TOPIC', async (t) => {
  const pubsub = newPubSub(t, { endpoint })
  await t.throwsAsync(pubsub.publish(42, 'x'), { code: 'ERR_INVALID_TOPIC' })
  await t.throwsAsync(pubsub.publish(['a', 5], 'x'), { code: 'ERR_INVALID_TOPIC' })
})

test('a topic list with holes (a sparse array) is ERR_INVALID_TOPIC for publish and subscribe', async (t) => {
  // Array.prototype.some skips holes: they reached napi, which threw StringExpected.
  const pubsub = newPubSub(t, { endpoint })
  for (const topics of [new Array(2), ['a', , 'b']]) { // eslint-disable-line no-sparse-arrays
    await t.throwsAsync(pubsub.publish(topics, 'x'), { code: 'ERR_INVALID_TOPIC', message: /array of strings/ })
    const { error } = await observerError(pubsub, topics)
    t.is(error.code, 'ERR_INVALID_TOPIC')
  }
})

for (const [what, filter] of [
  ['a + that does not fill its level', 'a+'],
  ['a # that is not the last level', 'a/#/b'],
  ['a # that does not fill its level', 'a/b#'],
  ['an empty filter', ''],
  ['a NUL character', 'a/\u0000'],
  ['a lone surrogate', 'a/\udc00'],
  ['a control character', 'orders/\t/#'],
  ['a Unicode noncharacter', 'orders/\ufdd0/+'],
  ['a shared subscription without a filter after its group', '$share/group'],
  ['a shared subscription whose group is a wildcard', '$share/+/a'],
]) {
  test(`subscribing to a filter with ${what} reports ERR_INVALID_TOPIC to the observer, not as a throw`, async (t) => {
    const pubsub = newPubSub(t)
    const states = recordEvents(pubsub, 'ConnectionStateChange')
    const { error, sub } = await observerError(pubsub, filter)
    t.is(error.code, 'ERR_INVALID_TOPIC')
    t.true(error.message.includes('filter'), error.message)
    await t.throwsAsync(sub.ready, { code: 'ERR_INVALID_TOPIC' })
    t.true(sub.closed)
    t.deepEqual(states, [], 'no connection is opened for an invalid filter')
  })
}

// ------------------------------------------------------------------------------ ERR_PAYLOAD

const circular = { name: 'loop' }
circular.self = circular
for (const [what, message] of [
  ['a circular object', circular],
  ['a BigInt', 10n],
  ['undefined', undefined],
  ['a function', () => 1],
  // What toJSON throws need not be an Error.
  ['an object whose toJSON throws null', { toJSON() { throw null } }],
  ['an object whose toJSON throws a string', { toJSON() { throw 'no JSON today' } }],
]) {
  test(`publishing ${what} rejects ERR_PAYLOAD and sends nothing`, async (t) => {
    const topic = uniqueTopic('payload')
    const watcher = newPubSub(t)
    const { values } = await listen(t, watcher, `${topic}/#`, { format: 'string' })
    const publisher = newPubSub(t)

    const error = await t.throwsAsync(publisher.publish(`${topic}/bad`, message, { qos: 1 }), { code: 'ERR_PAYLOAD' })
    t.regex(error.message, /cannot be sent as JSON/)
    await publisher.publish(`${topic}/sentinel`, 'end', { qos: 1 })
    await waitFor(() => values.length > 0, 5_000, 'the sentinel')
    t.deepEqual(values, [JSON.stringify('end')])
  })
}

// Over WebSocket this client receives packets of at most 16 MiB (tungstenite's frame limit). Its
// own publish to a topic it subscribes to comes back: the connection dropped as it arrived, and
// a QoS 1 publish, unacknowledged, went again after every reconnect, a new copy to every other
// subscriber each time, for ever.
test('over ws://, a publish over 16 MiB to a topic the instance itself subscribes to rejects ERR_PAYLOAD and sends nothing', async (t) => {
  const topic = uniqueTopic('echo')
  const watcher = newPubSub(t, { endpoint: broker.tcpUrl })
  const { values } = await listen(t, watcher, `${topic}/#`, { format: 'binary' })
  const pubsub = newPubSub(t)
  await listen(t, pubsub, `${topic}/own/+`, { format: 'binary' })
  const large = Buffer.alloc(16 << 20, 7)
  const error = await t.throwsAsync(pubsub.publish(`${topic}/own/x`, large, { qos: 1 }), { code: 'ERR_PAYLOAD' })
  t.regex(error.message, new RegExp(`^The message is 16777216 bytes: this instance subscribes to '${topic}/own/\\+', so the broker sends it back.*mqtts://`))
  // To a topic it does not subscribe to, the same message goes.
  await pubsub.publish(`${topic}/elsewhere`, large, { qos: 1 })
  await waitFor(() => values.length === 1, 20_000, 'the message to another topic')
  t.is(values[0].length, large.length)
  t.like(pubsub.stats(), { messagesSent: 1, reconnects: 0 })
})

/** A Uint8Array whose ArrayBuffer was transferred away (it reads as empty, and cannot be copied). */
function detachedView() {
  const buffer = new ArrayBuffer(8)
  const view = new Uint8Array(buffer)
  structuredClone(buffer, { transfer: [buffer] })
  return view
}

for (const [what, message] of [
  ['a view of a detached ArrayBuffer', detachedView],
  ['a detached ArrayBuffer', () => detachedView().buffer],
  ['a revoked Proxy', () => {
    const { proxy, revoke } = Proxy.revocable({}, {})
    revoke()
    return proxy
  }],
]) {
  test(`publishing ${what} rejects ERR_PAYLOAD`, async (t) => {
    const pubsub = newPubSub(t, { endpoint })
    const error = await t.throwsAsync(pubsub.publish('a/b', message(), { qos: 1 }), { code: 'ERR_PAYLOAD' })
    t.regex(error.message, /^The message cannot be read: /)
  })
}

// ------------------------------------------------------------- ERR_INVALID_OPTION (per call)

for (const [what, options, named] of [
  ['qos 3', { qos: 3 }, /qos/],
  ['qos -1', { qos: -1 }, /qos/],
  ['qos 1.5', { qos: 1.5 }, /qos/],
  ['qos given as a string', { qos: '1' }, /qos/],
  // Coerced, 'false' would publish a retained message.
  ['retain given as a string', { retain: 'false' }, /retain must be a boolean, got a string/],
  ['retain given as a number', { retain: 0 }, /retain must be a boolean, got 0/],
  ['retain null', { retain: null }, /retain must be a boolean, got null/],
  ['options that are not an object', 'qos1', /options/],
  // Ignored, a misspelt retain would publish a message the broker does not keep.
  ['an unknown option', { qos: 1, retained: true }, /^Unknown publish option 'retained'; known are qos, retain, signal, provider$/],
  ["subscribe's format", { format: 'string' }, /Unknown publish option 'format'/],
]) {
  test(`publishing with ${what} rejects ERR_INVALID_OPTION`, async (t) => {
    const pubsub = newPubSub(t, { endpoint })
    const error = await t.throwsAsync(pubsub.publish('a/b', 'x', options), { code: 'ERR_INVALID_OPTION' })
    t.regex(error.message, named)
  })
}

test('subscribing with a bad qos reports ERR_INVALID_OPTION to the observer', async (t) => {
  const pubsub = newPubSub(t, { endpoint })
  const { error } = await observerError(pubsub, 'a/b', { qos: 5 })
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.regex(error.message, /qos must be 0, 1 or 2, got 5/)
})

test('subscribing with an unknown format reports ERR_INVALID_OPTION listing the formats', async (t) => {
  const pubsub = newPubSub(t, { endpoint })
  const { error } = await observerError(pubsub, 'a/b', { format: 'xml' })
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.regex(error.message, /format must be one of json, string, binary, message, got a string/)
})

test("subscribing with an unknown option reports ERR_INVALID_OPTION; Amplify's per-subscription clientId says what to do instead", async (t) => {
  const pubsub = newPubSub(t, { endpoint })
  const misspelt = await observerError(pubsub, 'a/b', { QoS: 1 })
  t.is(misspelt.error.code, 'ERR_INVALID_OPTION')
  t.is(misspelt.error.message, "Unknown subscribe option 'QoS'; known are qos, format, provider")
  const perSubscription = await observerError(pubsub, 'a/b', { clientId: 'other' })
  t.is(perSubscription.error.code, 'ERR_INVALID_OPTION')
  t.regex(perSubscription.error.message, /^Unknown subscribe option 'clientId' \(Amplify's per-subscription connection is not supported: make another PubSub instance for it\)/)
})

test("Amplify's per-call provider option is accepted by an instance, which it does not route", async (t) => {
  // No broker listens: options that are accepted get as far as the connection, which fails.
  const pubsub = newPubSub(t, { endpoint, reconnect: false })
  await t.throwsAsync(pubsub.publish('a/b', 'x', { provider: 'AWSIoTProvider', qos: 1 }), { code: 'ERR_CONNECTION' })
  const { error } = await observerError(pubsub, 'a/b', { provider: 'AWSIoTProvider' })
  t.is(error.code, 'ERR_CONNECTION')
})

// ---------------------------------------------------------------- connection failures

// With reconnect on (the default) these failures are retried instead; see reconnect.spec.js.
test('a broker that is not listening makes publish reject ERR_CONNECTION (reconnect: false)', async (t) => {
  const port = await freePort()
  for (const url of [`mqtt://127.0.0.1:${port}`, `ws://127.0.0.1:${port}/mqtt`]) {
    const pubsub = newPubSub(t, { endpoint: url, reconnect: false })
    const error = await t.throwsAsync(pubsub.publish('a/b', 'x', { qos: 1 }), { code: 'ERR_CONNECTION' })
    t.true(error.message.includes(url), `the message names the endpoint: ${error.message}`)
    t.regex(error.message, /refused/i)
  }
})

test('a refused connection is said in words, with the OS error kept: "nothing accepts connections on …"', async (t) => {
  const port = await freePort()
  for (const url of [`mqtt://127.0.0.1:${port}`, `ws://127.0.0.1:${port}/mqtt`, `mqtts://127.0.0.1:${port}`, `wss://127.0.0.1:${port}/mqtt`]) {
    const pubsub = newPubSub(t, { endpoint: url, reconnect: false })
    const error = await t.throwsAsync(pubsub.publish('a/b', 'x'), { code: 'ERR_CONNECTION' })
    t.is(
      error.message,
      `Connection to ${url} failed: nothing accepts connections on 127.0.0.1:${port} (Connection refused (os error 111)): is the broker running, and listening on that port?`,
    )
  }
})

test('a host name that does not resolve is said to', async (t) => {
  const pubsub = newPubSub(t, { endpoint: 'mqtt://no-such-host.invalid:1883', reconnect: false })
  const error = await t.throwsAsync(pubsub.publish('a/b', 'x'), { code: 'ERR_CONNECTION' })
  t.regex(error.message, /^Connection to mqtt:\/\/no-such-host\.invalid:1883 failed: the host name 'no-such-host\.invalid' cannot be resolved \(failed to lookup address information: .*\): check it, and this machine's DNS$/)
})

test("tcp://, MQTT.js's other name for mqtt://, connects as mqtt:// does", async (t) => {
  const pubsub = newPubSub(t, { endpoint: broker.tcpUrl.replace('mqtt://', 'tcp://'), reconnect: false })
  await pubsub.publish(uniqueTopic('tcp-scheme'), 'x', { qos: 1 })
  t.is(pubsub.connectionState, 'Connected')
})

// What rumqttc and tungstenite say ("Websocket: WebSocket protocol error: Handshake not finished",
// "httparse error: invalid HTTP version", "Mqtt state: Connection closed by peer abruptly") is
// not shown: it is said what happened, and what the server probably is.
for (const [what, onConnection, expected] of [
  [
    'ws:// to a server that closes the connection when the upgrade request arrives',
    (socket) => socket.once('data', () => socket.end()),
    (port) => `Connection to ws://127.0.0.1:${port}/mqtt failed: the server closed the connection before answering the WebSocket upgrade: is it a plain WebSocket port? A TLS one takes wss://127.0.0.1:${port}/mqtt, and an MQTT (not WebSocket) one mqtt://127.0.0.1:${port}`,
  ],
  [
    'ws:// to a server whose answer is not HTTP',
    (socket) => socket.once('data', () => socket.end('garbage\r\n\r\n')),
    (port) => `Connection to ws://127.0.0.1:${port}/mqtt failed: the server's answer to the WebSocket upgrade is not HTTP: is it a plain WebSocket port? A TLS one takes wss://127.0.0.1:${port}/mqtt, and an MQTT (not WebSocket) one mqtt://127.0.0.1:${port}`,
  ],
  [
    'mqtt:// to a server that closes the connection when CONNECT arrives',
    (socket) => socket.once('data', () => socket.end()),
    (port) => `mqtt://127.0.0.1:${port} closed the connection after CONNECT without a CONNACK`,
  ],
  [
    'mqtts:// to a server that closes the connection when the TLS ClientHello arrives',
    (socket) => socket.once('data', () => socket.end()),
    (port) => `Connection to mqtts://127.0.0.1:${port} failed: the server closed the connection during the TLS handshake: is it a TLS port? A plain port takes mqtt://127.0.0.1:${port}`,
  ],
]) {
  test(`${what} is told in words`, async (t) => {
    const port = await tcpServer(t, onConnection)
    const scheme = what.split(':')[0]
    const pubsub = newPubSub(t, { endpoint: `${scheme}://127.0.0.1:${port}${scheme.startsWith('ws') ? '/mqtt' : ''}`, reconnect: false })
    const error = await t.throwsAsync(pubsub.publish('a/b', 'x'), { code: 'ERR_CONNECTION' })
    t.is(error.message, expected(port))
  })
}

test('a connection that was up and is lost says "was lost", and why, not "failed: Mqtt state: Connection closed by peer abruptly"', async (t) => {
  const fake = await startFakeBroker(t, {
    onPacket(packet, connection) {
      if (packet.type !== SUBSCRIBE) return undefined
      connection.send(packets.suback(packet.id, [0]))
      if (connection.number === 1) setTimeout(() => connection.socket.terminate(), 50)
      return true
    },
  })
  const pubsub = newPubSub(t, { endpoint: fake.url, reconnect: { minDelayMs: 20, maxDelayMs: 50 } })
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  await pubsub.subscribe('t').subscribe({}).ready
  await waitFor(() => disruptions.length >= 1, 5_000, 'the lost connection')
  t.is(disruptions[0].error.code, 'ERR_CONNECTION')
  t.is(disruptions[0].error.message, `Connection to ${fake.url} was lost: the server closed the connection`)
})

test('a broker that is not listening fails a subscription with ERR_CONNECTION (reconnect: false)', async (t) => {
  const port = await freePort()
  const pubsub = newPubSub(t, { endpoint: `mqtt://127.0.0.1:${port}`, reconnect: false })
  const { error, sub } = await observerError(pubsub, 'a/b')
  t.is(error.code, 'ERR_CONNECTION')
  await t.throwsAsync(sub.ready, { code: 'ERR_CONNECTION' })
})

test('a server that accepts but never sends CONNACK makes publish reject ERR_CONNECT_TIMEOUT after connectTimeout', async (t) => {
  const url = await fakeServer(t, null)
  const pubsub = newPubSub(t, { endpoint: url, connectTimeout: 500, reconnect: false })
  const started = Date.now()
  const error = await t.throwsAsync(pubsub.publish('a/b', 'x', { qos: 1 }), { code: 'ERR_CONNECT_TIMEOUT' })
  const elapsed = Date.now() - started
  t.true(elapsed >= 450 && elapsed < 3_000, `rejected after ${elapsed} ms`)
  t.regex(error.message, /500 ms \(connectTimeout\)/)
})

test('a wrong password is ERR_NOT_AUTHORIZED', async (t) => {
  const pubsub = newPubSub(t, { endpoint: authBroker.wsUrl, username: USER, password: WRONG_PASSWORD })
  const error = await t.throwsAsync(pubsub.publish('a/b', 'x', { qos: 1 }), { code: 'ERR_NOT_AUTHORIZED' })
  t.regex(error.message, /^Not authorized/)
})

test('no credentials at all on a broker that requires them is ERR_NOT_AUTHORIZED', async (t) => {
  const pubsub = newPubSub(t, { endpoint: authBroker.tcpUrl })
  const { error } = await observerError(pubsub, 'a/b')
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
})

test('the right password connects: a message round-trips on the password-protected broker', async (t) => {
  const topic = uniqueTopic('auth')
  const pubsub = newPubSub(t, { endpoint: authBroker.wsUrl, username: USER, password: PASSWORD })
  const { values } = await listen(t, pubsub, topic, { format: 'json' })
  await pubsub.publish(topic, { hello: USER }, { qos: 1 })
  await waitFor(() => values.length > 0, 5_000, 'the round trip')
  t.like(values[0], { hello: USER })
})

test("CONNACK 'bad user name or password' and 'not authorized' are ERR_NOT_AUTHORIZED", async (t) => {
  for (const returnCode of [4, 5]) {
    const pubsub = newPubSub(t, { endpoint: await fakeServer(t, CONNACK(returnCode)), username: 'u', password: 'p' })
    await t.throwsAsync(pubsub.publish('a/b', 'x'), { code: 'ERR_NOT_AUTHORIZED' })
  }
})

test('a WebSocket upgrade answered 401 or 403 is ERR_NOT_AUTHORIZED, other statuses ERR_CONNECTION', async (t) => {
  for (const [status, code] of [
    [401, 'ERR_NOT_AUTHORIZED'],
    [403, 'ERR_NOT_AUTHORIZED'],
    [404, 'ERR_CONNECTION'],
  ]) {
    const pubsub = newPubSub(t, { endpoint: await httpStatusServer(t, status) })
    const error = await t.throwsAsync(pubsub.publish('a/b', 'x'), { code })
    t.true(error.message.includes(`HTTP ${status}`), error.message)
  }
})

test("CONNACK 'identifier rejected' is ERR_CONNECT_REFUSED naming the client id", async (t) => {
  const pubsub = newPubSub(t, { endpoint: await fakeServer(t, CONNACK(2)), clientId: 'rejected-client-id' })
  const error = await t.throwsAsync(pubsub.publish('a/b', 'x'), { code: 'ERR_CONNECT_REFUSED' })
  t.regex(error.message, /identifier rejected.*rejected-client-id/)
})

test("CONNACK 'unacceptable protocol version' is ERR_CONNECT_REFUSED; 'server unavailable' is a transient ERR_CONNECTION", async (t) => {
  const refused = newPubSub(t, { endpoint: await fakeServer(t, CONNACK(1)) })
  await t.throwsAsync(refused.publish('a/b', 'x', { qos: 1 }), { code: 'ERR_CONNECT_REFUSED', message: /protocol version/ })
  const unavailable = newPubSub(t, { endpoint: await fakeServer(t, CONNACK(3)), reconnect: false })
  await t.throwsAsync(unavailable.publish('a/b', 'x', { qos: 1 }), { code: 'ERR_CONNECTION', message: /server unavailable/ })
})

// ------------------------------------------------------------------ ERR_SUBSCRIBE_REFUSED

test('a SUBACK failure reaches the observer as ERR_SUBSCRIBE_REFUSED and rejects sub.ready', async (t) => {
  const pubsub = newPubSub(t, { endpoint: refusingBroker.wsUrl })
  const filter = `forbidden/${uniqueTopic('refused')}`
  const { error, sub } = await observerError(pubsub, filter)
  t.is(error.code, 'ERR_SUBSCRIBE_REFUSED')
  t.true(error.message.includes(`'${filter}'`), `the message names the filter: ${error.message}`)
  const readyError = await t.throwsAsync(sub.ready, { code: 'ERR_SUBSCRIBE_REFUSED' })
  t.is(readyError, error)
  t.true(sub.closed)
})

test('a script whose only subscription was refused exits by itself once it has handled the error', async (t) => {
  // A refused subscription is over: it must not keep Node running as a live one does.
  const run = runScript(
    t,
    pubsubScript(`pubsub.subscribe(process.env.FILTER).subscribe({ error: (error) => console.log(error.code) })`),
    { BROKER: refusingBroker.wsUrl, FILTER: `forbidden/${uniqueTopic('refused-exit')}` },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'ERR_SUBSCRIBE_REFUSED\n')
})

test('a refused subscription leaves the connection usable for permitted ones', async (t) => {
  const pubsub = newPubSub(t, { endpoint: refusingBroker.wsUrl })
  await observerError(pubsub, 'forbidden/topic')
  const topic = uniqueTopic('allowed')
  const { values } = await listen(t, pubsub, topic, { format: 'string' })
  await pubsub.publish(topic, 'still here', { qos: 1 })
  await waitFor(() => values.length > 0, 5_000, 'the message')
  t.deepEqual(values, [JSON.stringify('still here')])
  t.is(pubsub.connectionState, 'Connected')
})

// ----------------------------------------------------------------------------- ERR_CLOSED

test('publishing after close() rejects ERR_CLOSED', async (t) => {
  const pubsub = newPubSub(t)
  await pubsub.publish(uniqueTopic('closed'), 'before', { qos: 1 })
  await pubsub.close()
  const error = await t.throwsAsync(pubsub.publish(uniqueTopic('closed'), 'after', { qos: 1 }), { code: 'ERR_CLOSED' })
  t.is(error.message, 'The PubSub instance is closed')
})

test('subscribing after close() reports ERR_CLOSED to the observer', async (t) => {
  const pubsub = newPubSub(t, { endpoint })
  await pubsub.close()
  const { error } = await observerError(pubsub, 'a/b')
  t.is(error.code, 'ERR_CLOSED')
})

// ---------------------------------------------------------------------------- secrets

test('no error message ever contains the password', async (t) => {
  const secret = 'Sup3r-S3cret-Passw0rd'
  const errors = []
  const capture = async (promise) => {
    try {
      await promise
    } catch (error) {
      errors.push(error)
    }
  }
  const syncCapture = (fn) => {
    try {
      fn()
    } catch (error) {
      errors.push(error)
    }
  }
  // Option mistakes made alongside a password.
  syncCapture(() => new PubSub({ endpoint, password: secret }))
  syncCapture(() => new PubSub({ endpoint, username: 'u', password: 5, clientId: secret.length }))
  syncCapture(() => new PubSub({ endpoint, username: 'u', password: secret, keepAlive: '1' }))
  syncCapture(() => new PubSub({ endpoint: 'http://127.0.0.1/mqtt', username: 'u', password: secret }))
  // Refusals at connection time.
  const refused = newPubSub(t, { endpoint: authBroker.wsUrl, username: USER, password: secret })
  await capture(refused.publish('a/b', 'x'))
  const badCredentials = newPubSub(t, { endpoint: await fakeServer(t, CONNACK(4)), username: USER, password: secret })
  await capture(badCredentials.publish('a/b', 'x'))
  const forbidden = newPubSub(t, { endpoint: await httpStatusServer(t, 401), username: USER, password: secret })
  await capture(forbidden.publish('a/b', 'x'))
  const timeout = newPubSub(t, { endpoint: await fakeServer(t, null), username: USER, password: secret, connectTimeout: 200 })
  await capture(timeout.publish('a/b', 'x'))
  // A server that is no MQTT broker and sends our CONNECT back, password and all.
  const echo = newPubSub(t, { endpoint: await fakeServer(t, (connect) => connect), username: USER, password: secret, reconnect: false })
  await capture(echo.publish('a/b', 'x'))
  t.regex(errors.at(-1).message, /answered CONNECT with a CONNECT packet instead of CONNACK/)

  t.is(errors.length, 9, 'every scenario failed')
  for (const error of errors) {
    t.truthy(error.code, `coded: ${error.message}`)
    t.false(error.message.includes(secret), `${error.code} leaks the password: ${error.message}`)
    t.false(String(error.stack).includes(secret), `${error.code} leaks the password in its stack`)
  }
})

test('no error message, event or warning ever contains a value of the endpoint\'s query (a token or signature may be there)', async (t) => {
  // A custom authorizer's token, a JWT or a signature: brokers take them in the query under
  // names of their own. Only the authorizer's name is shown.
  const token = 'T0ken-S3cret-Value'
  const query = `?x-amz-customauthorizer-name=my-authorizer&token=${token}&x-amz-customauthorizer-signature=${token}&${token}`
  const errors = []
  const capture = async (promise) => promise.catch((error) => errors.push(error))
  for (const bad of [`http://127.0.0.1/mqtt${query}`, `ws://<your-broker>/mqtt${query}`, `127.0.0.1:1883/mqtt${query}`]) {
    try {
      new PubSub({ endpoint: bad })
    } catch (error) {
      errors.push(error)
    }
  }
  const refused = newPubSub(t, { endpoint: `ws://127.0.0.1:${await freePort()}/mqtt${query}`, reconnect: false })
  await capture(refused.publish('a/b', 'x'))
  const forbidden = newPubSub(t, { endpoint: `${await httpStatusServer(t, 401)}${query}` })
  await capture(forbidden.publish('a/b', 'x'))
  const notFound = newPubSub(t, { endpoint: `${await httpStatusServer(t, 404)}${query}`, reconnect: false })
  await capture(notFound.publish('a/b', 'x'))
  const warnings = captureWarnings(t, '')
  const retried = newPubSub(t, { endpoint: `ws://127.0.0.1:${await freePort()}/mqtt${query}`, reconnect: { minDelayMs: 50, maxDelayMs: 50 } })
  const disruptions = []
  retried.on('connectionDisrupted', ({ error }) => disruptions.push(error))
  const subscription = retried.subscribe('a/b').subscribe({ error: () => {} })
  await waitFor(() => disruptions.length >= 1, 5_000, 'a disruption')
  subscription.unsubscribe()
  const unheard = newPubSub(t, { endpoint: `ws://127.0.0.1:${await freePort()}/mqtt${query}`, reconnect: { minDelayMs: 50, maxDelayMs: 50 } })
  unheard.subscribe('a/b').subscribe({ error: () => {} })
  await waitFor(() => warnings.length >= 1, 5_000, 'a warning')

  t.is(errors.length, 6, 'every scenario failed')
  t.true(errors.some((error) => error.message.includes('x-amz-customauthorizer-name=my-authorizer&token=***')), 'the URL is shown, its token masked')
  for (const error of [...errors, ...disruptions]) {
    t.truthy(error.code, `coded: ${error.message}`)
    t.false(error.message.includes(token), `${error.code} leaks the token: ${error.message}`)
    t.false(String(error.stack).includes(token), `${error.code} leaks the token in its stack`)
  }
  for (const warning of warnings) t.false(String(warning).includes(token), `a warning leaks the token: ${warning}`)
})

test('a rejected value is described by its type or key names, never by its contents', async (t) => {
  const secret = 'hunter2-S3CRET-value'
  const url = `wss://svc:${secret}@broker.example.com/mqtt`
  const options = { aws_pubsub_endpoint: 'wss://broker.example.com/mqtt', username: 'svc', password: secret }
  class Settings {
    constructor() {
      this.password = secret
    }
  }
  const pubsub = newPubSub(t, { endpoint })
  const cases = [
    [() => PubSub.addPluggable(options), /got an object with keys aws_pubsub_endpoint, username, password$/],
    [() => PubSub.addPluggable({ accessKeyId: secret, secretAccessKey: secret }), /got an object with keys accessKeyId, secretAccessKey$/],
    [() => PubSub.addPluggable(new Settings()), /got an instance of Settings with keys password$/],
    [() => PubSub.addPluggable(url), /got a string$/],
    [() => PubSub.configure(secret), /got a string$/],
    [() => PubSub.configure({ PubSub: url }), /got a string$/],
    [() => PubSub.removePluggable({ password: secret }), /got an object with keys password$/],
    [() => new MqttOverWSProvider(url), /got a string$/],
  ]
  for (const [call, described] of cases) {
    const error = t.throws(call, { code: 'ERR_INVALID_OPTION' })
    t.regex(error.message, described)
    t.false(error.message.includes(secret), `the message leaks the secret: ${error.message}`)
  }
  for (const rejected of [
    PubSub.publish('a/b', 'x', { provider: { password: secret } }),
    pubsub.publish('a/b', 'x', { qos: secret }),
  ]) {
    const error = await t.throwsAsync(rejected, { code: 'ERR_INVALID_OPTION' })
    t.regex(error.message, /got (an object with keys password|a string)$/)
    t.false(error.message.includes(secret), `the message leaks the secret: ${error.message}`)
  }
  const { error } = await observerError(pubsub, 'a/b', { format: secret })
  t.regex(error.message, /got a string$/)
  t.false(error.message.includes(secret), `the message leaks the secret: ${error.message}`)
})
