'use strict'
// The older Amplify surface beyond the docs' samples (older-docs.spec.js runs those): the PubSub
// singleton's statics, provider selection, ERR_NO_PROVIDER, addPluggable / removePluggable,
// configure's accepted shapes, the Amplify object, and the default export in CommonJS and ESM.
//
// The singleton is one per process: the tests here run one at a time and unplug what they plug
// in. configure() only ever adds options, so its tests run in child processes.
const path = require('node:path')
const test = require('ava')
const { PubSub, Amplify, AWSIoTProvider, MqttOverWSProvider, TOPIC } = require('../index.js')
const { useMosquitto, freePort } = require('./helpers/mosquitto.js')
const { useIotGateway } = require('./helpers/iot-gateway.js')
const { topicNamer, receiver, waitFor, sleep, runScript, plain } = require('./helpers/pubsub.js')

const ROOT = path.join(__dirname, '..')
const uniqueTopic = topicNamer('singleton')

const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: 'us-east-1', broker: broker.tcpUrl }))

/** An AWSIoTProvider on the gateway, with its own keys (given as an option) and the gateway's CA. */
function iotProvider(options = {}) {
  const credentials = gateway.newKeys()
  return new AWSIoTProvider({ aws_pubsub_region: 'us-east-1', aws_pubsub_endpoint: gateway.url, ca: gateway.ca, credentials, ...options })
}

const mqttProvider = (options = {}) => new MqttOverWSProvider({ aws_pubsub_endpoint: broker.wsUrl, ...options })

/** Plugs `provider` in; when the test ends, unplugs (and closes) every provider of its name. */
function plug(t, provider) {
  PubSub.addPluggable(provider)
  t.teardown(() => PubSub.removePluggable(provider.getProviderName()))
  return provider
}

/** Process warnings of this package emitted while the test runs. */
function captureWarnings(t) {
  const warnings = []
  const onWarning = (warning) => {
    if (warning.name === 'NativePubSubWarning') warnings.push(warning.message)
  }
  process.on('warning', onWarning)
  t.teardown(() => process.off('warning', onWarning))
  return warnings
}

// --------------------------------------------------------------------------------- exports

test.serial('the default export is PubSub: ESM default, and `default` with __esModule for compiled CommonJS', async (t) => {
  for (const entry of ['native-pubsub', 'native-pubsub/iot', 'native-pubsub/mqtt']) {
    const cjs = require(entry)
    const esm = await import(entry)
    t.is(esm.default, cjs.PubSub, entry)
    t.is(cjs.default, cjs.PubSub, entry)
    t.true(cjs.__esModule, entry)
    // What TypeScript (esModuleInterop) and Babel emit for `import PubSub from '…'` in CommonJS.
    const importDefault = (mod) => (mod && mod.__esModule ? mod : { default: mod })
    t.is(typeof importDefault(cjs).default.configure, 'function', entry)
    t.false(Object.keys(cjs).includes('default'), 'not one of the named exports')
  }
  t.is(require('native-pubsub').default, PubSub)
  t.not(require('native-pubsub/mqtt').default, PubSub)
})

test.serial("native-pubsub/lib/Providers (the older docs' deep path) exports the provider classes, in CommonJS and ESM", async (t) => {
  const cjs = require('native-pubsub/lib/Providers')
  const esm = await import('native-pubsub/lib/Providers')
  t.deepEqual(Object.keys(cjs).sort(), ['AWSIoTProvider', 'MqttOverWSProvider'])
  for (const name of ['AWSIoTProvider', 'MqttOverWSProvider']) {
    t.is(cjs[name], require('native-pubsub')[name])
    t.is(esm[name], cjs[name])
    t.is(require('native-pubsub/mqtt')[name], cjs[name])
    t.is((await import('native-pubsub/iot'))[name], cjs[name])
  }
  t.is((await import('native-pubsub')).Amplify, Amplify)
})

test.serial('PubSub is still a class, and providers are PubSub instances with the whole instance API', async (t) => {
  const pubsub = new PubSub({ endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt' })
  t.teardown(() => pubsub.close())
  t.true(pubsub instanceof PubSub)
  t.is(pubsub.getProviderName(), 'AWSIoTProvider')

  const provider = mqttProvider()
  t.teardown(() => provider.close())
  t.is(provider.getProviderName(), 'MqttOverWSProvider')
  t.is(provider.getCategory(), 'PubSub')
  const iot = iotProvider()
  t.teardown(() => iot.close())
  t.is(iot.getProviderName(), 'AWSIoTProvider')
  // Used directly (not through the singleton) it gives the messages themselves.
  const topic = uniqueTopic('direct')
  const inbox = receiver()
  const sub = provider.subscribe(topic).subscribe(inbox.observer)
  await sub.ready
  await provider.publish(topic, { direct: true }, { qos: 1 })
  t.deepEqual(plain((await inbox.take(1))[0]), { direct: true })
  sub.unsubscribe()
})

test.serial('every entry point shares one singleton, and its statics need no `this`', async (t) => {
  const provider = mqttProvider()
  require('native-pubsub/mqtt').PubSub.addPluggable(provider)
  t.teardown(() => PubSub.removePluggable('MqttOverWSProvider'))
  const { subscribe, publish } = PubSub
  const topic = uniqueTopic('shared')
  const values = []
  const sub = subscribe(topic).subscribe({ next: (data) => values.push(data) })
  await sub.ready
  await publish(topic, 'one', { qos: 1 })
  await require('native-pubsub/iot').PubSub.publish(topic, 'two', { qos: 1 })
  await waitFor(() => values.length === 2)
  t.deepEqual(values, [
    { provider, value: 'one' },
    { provider, value: 'two' },
  ])
})

// ----------------------------------------------------------------------- provider selection

test.serial('with both providers plugged in, a call goes through every one (as with Amplify) unless options.provider names one', async (t) => {
  const iot = plug(t, iotProvider())
  const mqtt = plug(t, mqttProvider())
  const topic = uniqueTopic('pick')
  const sent = () => [iot.stats().messagesSent, mqtt.stats().messagesSent]

  await PubSub.publish(topic, 'through both', { qos: 1 })
  t.deepEqual(sent(), [1, 1])
  await PubSub.publish(topic, 'by name', { qos: 1, provider: 'MqttOverWSProvider' })
  t.deepEqual(sent(), [1, 2])
  await PubSub.publish({ topics: [topic, topic], message: 'v6 form', options: { provider: 'AWSIoTProvider', qos: 1 } })
  t.deepEqual(sent(), [3, 2])

  // Subscriptions too: each message carries the provider it came through. Both providers reach
  // the same broker here, so a subscription through both receives each message twice.
  const viaMqtt = receiver()
  const viaBoth = receiver()
  const subs = [
    PubSub.subscribe(topic, { provider: 'MqttOverWSProvider' }).subscribe(viaMqtt.observer),
    PubSub.subscribe({ topics: topic, options: { qos: 1 } }).subscribe(viaBoth.observer),
  ]
  await Promise.all(subs.map((s) => s.ready))
  await PubSub.publish(topic, { n: 1 }, { qos: 1, provider: 'AWSIoTProvider' })
  const [[fromMqtt], both] = await Promise.all([viaMqtt.take(1), viaBoth.take(2)])
  t.is(fromMqtt.provider, mqtt)
  // One through each, in whichever order they arrive (ava compares Sets in insertion order).
  t.is(both.filter((data) => data.provider === iot).length, 1)
  t.is(both.filter((data) => data.provider === mqtt).length, 1)
  for (const { value } of both) {
    t.deepEqual(plain(value), { n: 1 })
    t.is(value[TOPIC], topic)
  }
  await sleep(100)
  t.is(viaBoth.received.length, 2, 'once through each provider, no more')
  for (const sub of subs) sub.unsubscribe()
  t.true(subs[1].closed)
})

test.serial("an aborted publish through several providers is 'sent' when any of them had sent it", async (t) => {
  // The IoT provider's endpoint is down: its publish waits in its offline queue, and the abort
  // withdraws it (nothing sent there); the other provider had delivered it already.
  plug(t, iotProvider({ aws_pubsub_endpoint: `wss://127.0.0.1:${await freePort()}/mqtt` }))
  plug(t, mqttProvider())
  const controller = new AbortController()
  const publishing = PubSub.publish(uniqueTopic('abort-both'), 'x', { qos: 1, signal: controller.signal })
  await sleep(300)
  controller.abort()
  const error = await t.throwsAsync(publishing)
  t.is(error.code, 'ABORT_ERR')
  t.true(error.sent, 'the MQTT provider had delivered it: a retry on !sent would send it twice')
})

test.serial("... also when the delivering provider's outcome had not reached JS yet", async (t) => {
  plug(t, iotProvider({ aws_pubsub_endpoint: `wss://127.0.0.1:${await freePort()}/mqtt` }))
  const mqtt = plug(t, mqttProvider())
  await mqtt.publish(uniqueTopic('warm'), 'connected', { qos: 1 })
  const controller = new AbortController()
  const publishing = PubSub.publish(uniqueTopic('abort-both-busy'), 'x', { qos: 1, signal: controller.signal })
  // JS busy: the MQTT provider's PUBACK reaches Rust, not yet JS, when the abort comes.
  const until = Date.now() + 300
  while (Date.now() < until);
  controller.abort()
  const error = await t.throwsAsync(publishing)
  t.is(error.code, 'ABORT_ERR')
  t.true(error.sent)
})

test.serial("a publish one provider refuses (AWS IoT takes no QoS 2) and another delivers rejects with 'sent': true", async (t) => {
  plug(t, iotProvider())
  const mqtt = plug(t, mqttProvider())
  const topic = uniqueTopic('refused-by-one')
  const inbox = receiver()
  const sub = mqtt.subscribe(topic, { qos: 2 }).subscribe(inbox.observer)
  await sub.ready
  const error = await t.throwsAsync(PubSub.publish(topic, 'hello', { qos: 2 }))
  t.like(error, { code: 'ERR_INVALID_OPTION', sent: true })
  t.regex(error.message, /does not support QoS 2/)
  t.deepEqual(await inbox.take(1), ['hello'], 'the MQTT provider delivered it: a retry on !sent would send it twice')
  sub.unsubscribe()
})

test.serial('a subscription through several providers completes once all have completed, and the first error ends it', async (t) => {
  const iot = plug(t, iotProvider())
  const mqtt = plug(t, mqttProvider())
  const calls = []
  const sub = PubSub.subscribe(uniqueTopic('merged')).subscribe({ error: (e) => calls.push(e.code), complete: () => calls.push('complete') })
  await sub.ready
  await PubSub.removePluggable('AWSIoTProvider')
  t.deepEqual(calls, [], 'one provider removed: the other still delivers')
  t.false(sub.closed)
  t.is(mqtt.connectionState, 'Connected')
  await PubSub.removePluggable('MqttOverWSProvider')
  t.deepEqual(calls, ['complete'])
  t.true(sub.closed)
  t.is(iot.connectionState, 'Disconnected')

  // A topic no provider accepts: error is called once, not once per provider.
  const fresh = [plug(t, iotProvider()), plug(t, mqttProvider())]
  const failed = PubSub.subscribe('not/#/valid').subscribe({ error: (e) => calls.push(e.code) })
  await t.throwsAsync(failed.ready, { code: 'ERR_INVALID_TOPIC' })
  t.deepEqual(calls, ['complete', 'ERR_INVALID_TOPIC'])
  t.true(failed.closed)
  t.deepEqual(
    fresh.map((provider) => provider.connectionState),
    ['Disconnected', 'Disconnected'],
    'nothing was subscribed',
  )
})

test.serial('subscribe options reach the provider (format, qos), without `provider`', async (t) => {
  plug(t, mqttProvider())
  const topic = uniqueTopic('format')
  const inbox = receiver()
  const sub = PubSub.subscribe(topic, { format: 'string', qos: 1, provider: 'MqttOverWSProvider' }).subscribe(inbox.observer)
  await sub.ready
  await PubSub.publish(topic, Buffer.from('raw text'), { qos: 1 })
  const [{ value }] = await inbox.take(1)
  t.is(value, 'raw text')
  sub.unsubscribe()

  // for await: publish until the loop's subscription gets one (it subscribes on its first next()).
  const iterated = []
  const published = []
  const timer = setInterval(() => published.push(PubSub.publish(topic, 'for await', { qos: 1 })), 100)
  for await (const data of PubSub.subscribe(topic)) {
    iterated.push(data.value)
    break
  }
  clearInterval(timer)
  await Promise.all(published)
  t.deepEqual(iterated, ['for await'])
})

// --------------------------------------------------------------------------- ERR_NO_PROVIDER

test.serial('with no provider plugged in, publish rejects and subscribe errors with ERR_NO_PROVIDER', async (t) => {
  const topic = uniqueTopic('none')
  const error = await t.throwsAsync(PubSub.publish(topic, 'x'))
  t.is(error.code, 'ERR_NO_PROVIDER')
  t.is(error.sent, false, 'like every publish rejection, it says whether anything was sent')
  t.regex(error.message, /No PubSub provider is plugged in: call Amplify\.addPluggable\(new AWSIoTProvider/)

  const errors = []
  const sub = PubSub.subscribe(topic).subscribe({ next: () => t.fail(), error: (e) => errors.push(e) })
  t.is(errors.length, 1, 'told at once')
  t.true(errors[0] instanceof Error)
  t.is(errors[0].code, 'ERR_NO_PROVIDER')
  t.is(errors[0].provider, undefined)
  t.is(errors[0].error.code, 'ERR_NO_PROVIDER')
  t.true(sub.closed)
  t.is((await t.throwsAsync(sub.ready)).code, 'ERR_NO_PROVIDER')
  t.notThrows(() => sub.unsubscribe())

  // No error callback: the failure is not silent.
  const warnings = captureWarnings(t)
  PubSub.subscribe(topic).subscribe({ next() {} })
  await waitFor(() => warnings.length === 1)
  t.regex(warnings[0], /no error callback: No PubSub provider is plugged in/)
})

test.serial('a provider name that is not plugged in is ERR_NO_PROVIDER naming those that are; a non-name is ERR_INVALID_OPTION', async (t) => {
  plug(t, mqttProvider())
  const error = await t.throwsAsync(PubSub.publish('t', 1, { provider: 'AWSIoTProvider' }))
  t.is(error.code, 'ERR_NO_PROVIDER')
  t.is(error.message, "No provider named 'AWSIoTProvider' is plugged in (plugged in: MqttOverWSProvider)")
  const errors = []
  PubSub.subscribe('t', { provider: 'AwsIotProvider' }).subscribe({ error: (e) => errors.push(e) })
  t.is(errors[0].code, 'ERR_NO_PROVIDER')
  t.is((await t.throwsAsync(PubSub.publish('t', 1, { provider: 7 }))).code, 'ERR_INVALID_OPTION')
})

test.serial("errors from the provider reach the singleton's observers with their code, and Amplify's { provider, error }", async (t) => {
  const provider = plug(t, mqttProvider())
  const errors = []
  PubSub.subscribe('a/#/b').subscribe({ error: (e) => errors.push(e) })
  t.is(errors.length, 1)
  const [error] = errors
  t.true(error instanceof Error)
  t.is(error.code, 'ERR_INVALID_TOPIC')
  t.is(error.provider, provider)
  t.is(error.error.code, 'ERR_INVALID_TOPIC')
  t.is(error.message, error.error.message)
  t.deepEqual(Object.keys(error), ['code'], 'provider and error stay out of logs')
  // publish rejects with the provider's own error.
  t.is((await t.throwsAsync(PubSub.publish('a/+', 1))).code, 'ERR_INVALID_TOPIC')
})

// ------------------------------------------------------------------------------ addPluggable

test.serial('addPluggable throws at once on anything but a PubSub provider, in PubSub and in Amplify', (t) => {
  const analytics = { getCategory: () => 'Analytics', getProviderName: () => 'AWSKinesis', publish() {}, subscribe() {} }
  for (const add of [PubSub.addPluggable, Amplify.addPluggable]) {
    for (const value of [undefined, null, {}, 'AWSIoTProvider', AWSIoTProvider]) {
      const error = t.throws(() => add(value))
      t.is(error.code, 'ERR_INVALID_OPTION')
      t.regex(error.message, /provider must be a PubSub provider such as new AWSIoTProvider/)
    }
    t.regex(t.throws(() => add(analytics)).message, /AWSKinesis is a plugin of Amplify's Analytics category/)
  }
  t.is(Amplify.addPluggable.length, 1)
})

test.serial('the same provider plugged in twice is plugged in once; another of the same name is warned about', async (t) => {
  const warnings = captureWarnings(t)
  const first = plug(t, mqttProvider())
  PubSub.addPluggable(first)
  Amplify.addPluggable(first)
  await sleep(50)
  t.deepEqual(warnings, [])
  const second = mqttProvider()
  t.teardown(() => second.close())
  await PubSub.addPluggable(second)
  await waitFor(() => warnings.length === 1)
  t.regex(warnings[0], /Another provider named 'MqttOverWSProvider' is plugged in/)
  await PubSub.publish(uniqueTopic('dup'), 1, { qos: 1, provider: 'MqttOverWSProvider' })
  t.is(first.stats().messagesSent, 1)
  t.is(second.stats().messagesSent, 0, 'by name, only the first is reachable')
})

// --------------------------------------------------------------------------- removePluggable

test.serial('removePluggable closes the provider: its observers complete (complete and close), it disconnects', async (t) => {
  const provider = mqttProvider()
  PubSub.addPluggable(provider)
  const topic = uniqueTopic('remove')
  const calls = []
  const both = PubSub.subscribe(topic).subscribe({ next() {}, complete: () => calls.push('complete'), close: () => calls.push('close') })
  const onlyComplete = PubSub.subscribe(topic).subscribe({ next() {}, complete: () => calls.push('complete only') })
  await Promise.all([both.ready, onlyComplete.ready])
  t.is(provider.connectionState, 'Connected')

  await PubSub.removePluggable('MqttOverWSProvider')
  t.deepEqual(calls, ['complete', 'close', 'complete only'])
  t.true(both.closed)
  t.true(onlyComplete.closed)
  t.is(provider.connectionState, 'Disconnected')
  t.is((await t.throwsAsync(provider.publish(topic, 1))).code, 'ERR_CLOSED')
  t.is((await t.throwsAsync(PubSub.publish(topic, 1))).code, 'ERR_NO_PROVIDER')
  both.unsubscribe()
  t.deepEqual(calls, ['complete', 'close', 'complete only'], 'unsubscribing after completion calls nothing')

  await PubSub.removePluggable('MqttOverWSProvider') // nothing of that name: nothing to do
  t.is(t.throws(() => PubSub.removePluggable(provider)).code, 'ERR_INVALID_OPTION')
})

test.serial("removePluggable unplugs only that name; the other provider's subscriptions go on", async (t) => {
  const iot = plug(t, iotProvider())
  const mqtt = plug(t, mqttProvider())
  const topic = uniqueTopic('remove-one')
  const inbox = receiver()
  const completed = []
  const sub = PubSub.subscribe(topic, { provider: 'AWSIoTProvider' }).subscribe({ ...inbox.observer, complete: () => completed.push('iot') })
  const gone = PubSub.subscribe(topic, { provider: 'MqttOverWSProvider' }).subscribe({ complete: () => completed.push('mqtt') })
  await Promise.all([sub.ready, gone.ready])
  await PubSub.removePluggable('MqttOverWSProvider')
  t.deepEqual(completed, ['mqtt'])
  t.is(mqtt.connectionState, 'Disconnected')
  await PubSub.publish(topic, 'still here', { qos: 1 })
  t.is((await inbox.take(1))[0].provider, iot)
  sub.unsubscribe()
})

// --------------------------------------------------------------------- close and unsubscribe

test.serial("unsubscribing calls the observer's close (the older docs' table), once, and never complete", async (t) => {
  plug(t, mqttProvider())
  const calls = []
  const withClose = PubSub.subscribe(uniqueTopic('close')).subscribe({ close: () => calls.push('close'), complete: () => calls.push('complete') })
  await withClose.ready
  withClose.unsubscribe()
  withClose.unsubscribe()
  t.deepEqual(calls, ['close'])
  t.true(withClose.closed)

  const withComplete = PubSub.subscribe(uniqueTopic('complete')).subscribe({ complete: () => calls.push('complete') })
  await withComplete.ready
  withComplete.unsubscribe()
  t.deepEqual(calls, ['close'], 'complete means the stream ended, not that you left it')

  // Functions, not an observer object: nothing to call.
  const fns = PubSub.subscribe(uniqueTopic('fns')).subscribe(() => {}, undefined, () => calls.push('complete fn'))
  fns.unsubscribe()
  t.deepEqual(calls, ['close'])
})

// ------------------------------------------------------------------------- process lifetime

test.serial('a script that plugs a provider in and never uses it exits at once; one that subscribes stays until removePluggable', async (t) => {
  const idle = runScript(
    t,
    `const { Amplify, MqttOverWSProvider } = require(${JSON.stringify(ROOT)})
     Amplify.addPluggable(new MqttOverWSProvider({ aws_pubsub_endpoint: process.env.BROKER }))`,
    { BROKER: broker.wsUrl },
  )
  const idleExit = await idle.exited
  t.is(idleExit.code, 0, idle.stderr)
  t.true(idleExit.ms < 5_000)

  const run = runScript(
    t,
    `const { PubSub, Amplify, MqttOverWSProvider } = require(${JSON.stringify(ROOT)})
     Amplify.addPluggable(new MqttOverWSProvider({ aws_pubsub_endpoint: process.env.BROKER }))
     const sub = PubSub.subscribe('singleton/lifetime').subscribe({ close: () => console.log('closed') })
     sub.ready.then(() => {
       console.log('ready')
       setTimeout(() => PubSub.removePluggable('MqttOverWSProvider'), 1000)
     })`,
    { BROKER: broker.wsUrl },
  )
  await waitFor(() => run.stdout.includes('ready'), 10_000, 'ready')
  await sleep(500)
  t.is(run.child.exitCode, null, 'alive while subscribed')
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'ready\nclosed\n')
})

// -------------------------------------------------------------------------------- configure

/**
 * Runs `body` in a child process with a fresh singleton (`PubSub`, `Amplify`, the providers and
 * `attempt(fn)` in scope: fn's result, or its error as { code, message }); resolves with what
 * the body printed as JSON lines.
 */
async function inChild(t, body) {
  const run = runScript(
    t,
    `const { PubSub, Amplify, AWSIoTProvider, MqttOverWSProvider } = require(${JSON.stringify(ROOT)})
     const attempt = (fn) => { try { return fn() } catch (e) { return { code: e.code, message: e.message } } }
     const print = (value) => console.log(JSON.stringify(value))
     ;(async () => { ${body} })().catch((e) => { console.error(e); process.exitCode = 1 })`,
    { BROKER: broker.wsUrl },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  return run.stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line))
}

test.serial('configure({ PubSub: { aws_pubsub_endpoint } }) gives providers constructed afterwards their options', async (t) => {
  const [configured, published, names] = await inChild(
    t,
    `print(PubSub.configure({ PubSub: { aws_pubsub_endpoint: process.env.BROKER, clientId: 'configured-client', keepAlive: 30 } }))
     const provider = new MqttOverWSProvider()
     PubSub.addPluggable(provider)
     await PubSub.publish('singleton/configured', 1, { qos: 1 })
     print({ clientId: provider.clientId })
     print(PubSub.configure())
     await PubSub.removePluggable('MqttOverWSProvider')`,
  )
  t.deepEqual(configured, { aws_pubsub_endpoint: broker.wsUrl, clientId: 'configured-client', keepAlive: 30 })
  t.deepEqual(published, { clientId: 'configured-client' })
  t.deepEqual(names, configured)
})

test.serial("Amplify.configure(awsconfig) with a flat config: PubSub keys are used, other categories' keys left alone", async (t) => {
  const [result, provider] = await inChild(
    t,
    `const awsconfig = {
       aws_project_region: 'us-east-1',
       aws_cognito_identity_pool_id: 'us-east-1:00000000-0000-0000-0000-000000000000',
       aws_user_pools_id: 'us-east-1_XXXXXXXXX',
       oauth: {},
       Auth: { region: 'us-east-1' },
       aws_pubsub_endpoint: process.env.BROKER,
       ssr: true,
     }
     print(Amplify.configure(awsconfig))
     const mqtt = new MqttOverWSProvider({ clientId: 'own-client-id' })
     Amplify.addPluggable(mqtt)
     Amplify.configure(awsconfig) // again, after plugging in: the same options, nothing changes
     await PubSub.publish('singleton/flat', 1, { qos: 1 })
     print({ clientId: mqtt.clientId, state: mqtt.connectionState })
     await PubSub.removePluggable('MqttOverWSProvider')`,
  )
  t.is(result.aws_cognito_identity_pool_id, 'us-east-1:00000000-0000-0000-0000-000000000000', 'Amplify.configure returns the whole config')
  t.is(result.aws_pubsub_endpoint, broker.wsUrl)
  t.deepEqual(provider, { clientId: 'own-client-id', state: 'Connected' })
})

test.serial("Amplify's plain-ws switch (aws_appsync_dangerously_connect_to_http_endpoint_for_testing) is accepted by configure and the v5 provider, and the endpoint's scheme decides", async (t) => {
  const [configured, provider] = await inChild(
    t,
    `print(PubSub.configure({ PubSub: { aws_pubsub_endpoint: process.env.BROKER, aws_appsync_dangerously_connect_to_http_endpoint_for_testing: true } }))
     const mqtt = new MqttOverWSProvider({ aws_appsync_dangerously_connect_to_http_endpoint_for_testing: true })
     Amplify.addPluggable(mqtt)
     await PubSub.publish('singleton/plain-ws', 1, { qos: 1 })
     print({ state: mqtt.connectionState })
     await PubSub.removePluggable('MqttOverWSProvider')`,
  )
  // Nothing to keep: it has no effect here.
  t.deepEqual(configured, { aws_pubsub_endpoint: broker.wsUrl })
  t.deepEqual(provider, { state: 'Connected' })
})

test.serial('configure rejects unknown shapes clearly', async (t) => {
  const results = await inChild(
    t,
    `print(attempt(() => PubSub.configure('us-east-1')))
     print(attempt(() => PubSub.configure([])))
     print(attempt(() => Amplify.configure({ PubSub: 'wss://h/mqtt' })))
     print(attempt(() => PubSub.configure({ PubSub: { aws_pubsub_endpiont: 'wss://h/mqtt' } })))
     print(attempt(() => PubSub.configure({ PubSub: { endpoints: ['wss://h/mqtt'] } })))
     print(attempt(() => Amplify.configure({ aws_pubsub_regoin: 'us-east-1' })))
     print(PubSub.configure())`,
  )
  const [string, array, section, typo, unknown, flatTypo, after] = results
  for (const result of [string, array, section, typo, unknown, flatTypo]) t.is(result.code, 'ERR_INVALID_OPTION')
  t.regex(string.message, /config must be an object such as \{ PubSub: \{ aws_pubsub_region, aws_pubsub_endpoint \} \}/)
  t.regex(array.message, /config must be an object/)
  t.regex(section.message, /config\.PubSub must be an object of provider options, got a string/)
  t.regex(typo.message, /unknown PubSub option 'aws_pubsub_endpiont' in config\.PubSub; the provider options are endpoint, aws_pubsub_endpoint/)
  t.regex(unknown.message, /unknown PubSub option 'endpoints'/)
  t.regex(flatTypo.message, /unknown PubSub option 'aws_pubsub_regoin'/)
  t.deepEqual(after, {}, 'nothing of a rejected config was kept')
})

test.serial('configure takes config objects that are not plain (class instances, a custom prototype), as Amplify did, but not a promise', async (t) => {
  const [fromClass, fromPrototype, pending, configured] = await inChild(
    t,
    `class Settings {
       constructor() {
         this.PubSub = Object.create({ inherited: 'ignored' }, { aws_pubsub_endpoint: { value: process.env.BROKER, enumerable: true } })
       }
     }
     print(PubSub.configure(new Settings()))
     // Like the objects of the config package: data keys on an object with its own prototype.
     const loaded = Object.assign(Object.create({ get() {}, has() {} }), { aws_pubsub_region: 'eu-west-1' })
     print(Amplify.configure(loaded))
     print(attempt(() => PubSub.configure(Promise.resolve({ aws_pubsub_region: 'us-east-1' }))))
     print(PubSub.configure())`,
  )
  t.deepEqual(fromClass, { aws_pubsub_endpoint: broker.wsUrl })
  t.deepEqual(fromPrototype, { aws_pubsub_region: 'eu-west-1' })
  t.is(pending.code, 'ERR_INVALID_OPTION')
  t.regex(pending.message, /config must be an object .* got an instance of Promise/)
  t.deepEqual(configured, { aws_pubsub_endpoint: broker.wsUrl, aws_pubsub_region: 'eu-west-1' })
})

test.serial('configure after providers are plugged in cannot reach them: it throws instead of being ignored', async (t) => {
  const [changed, same, configured] = await inChild(
    t,
    `PubSub.configure({ PubSub: { aws_pubsub_endpoint: process.env.BROKER } })
     Amplify.addPluggable(new MqttOverWSProvider())
     print(attempt(() => PubSub.configure({ PubSub: { clientId: 'late', aws_pubsub_endpoint: process.env.BROKER } })))
     print(attempt(() => PubSub.configure({ PubSub: { aws_pubsub_endpoint: process.env.BROKER } })))
     print(PubSub.configure())`,
  )
  t.is(changed.code, 'ERR_INVALID_OPTION')
  t.regex(changed.message, /'clientId' cannot reach the provider\(s\) already plugged in \(MqttOverWSProvider\): a provider reads its options when it is constructed/)
  t.deepEqual(same, { aws_pubsub_endpoint: broker.wsUrl })
  t.deepEqual(configured, { aws_pubsub_endpoint: broker.wsUrl })
})

test.serial("configured options: the provider's own win (aliases too), each kind takes only its own, and mistakes name configure", async (t) => {
  const [mqtt, iot, badValue, noEndpoint, notObject] = await inChild(
    t,
    `PubSub.configure({
       PubSub: {
         endpoint: 'ws://127.0.0.1:1/configured',
         aws_pubsub_region: 'eu-west-1',
         clientId: 'configured',
         username: 'user',
         credentials: { accessKeyId: 'AKID', secretAccessKey: 'secret' },
       },
     })
     // The provider's aws_pubsub_endpoint beats the configured endpoint (the same option).
     const mqtt = new MqttOverWSProvider({ aws_pubsub_endpoint: process.env.BROKER })
     await mqtt.publish('singleton/alias', 1, { qos: 1 })
     print({ clientId: mqtt.clientId, state: mqtt.connectionState })
     await mqtt.close()
     // username is not an AWS IoT option, credentials not a generic one: each is left out.
     const iot = new AWSIoTProvider({ aws_pubsub_endpoint: 'wss://x-ats.iot.eu-west-1.amazonaws.com/mqtt', clientId: 'own' })
     print({ clientId: iot.clientId })
     await iot.close()
     PubSub.configure({ PubSub: { keepAlive: 'sixty' } })
     print(attempt(() => new MqttOverWSProvider()))
     print(attempt(() => new AWSIoTProvider({ endpoint: undefined, aws_pubsub_region: 'us-east-1', keepAlive: 5, aws_pubsub_endpoint: undefined, clientId: 'x' })))
     print(attempt(() => new MqttOverWSProvider('wss://h/mqtt')))`,
  )
  t.deepEqual(mqtt, { clientId: 'configured', state: 'Connected' })
  t.deepEqual(iot, { clientId: 'own' })
  t.is(badValue.code, 'ERR_INVALID_OPTION')
  t.regex(badValue.message, /keepAlive.*\(option 'keepAlive' was set by PubSub\.configure \/ Amplify\.configure\)/)
  t.is(noEndpoint.code, 'ERR_INVALID_ENDPOINT')
  t.regex(noEndpoint.message, /ws:\/\/127\.0\.0\.1:1\/configured.*\(option 'endpoint' was set by PubSub\.configure/, 'the configured endpoint fills in for undefined ones')
  t.is(notObject.code, 'ERR_INVALID_OPTION')
  t.regex(notObject.message, /new MqttOverWSProvider\(options\): options must be an object/)
})

test.serial('configuring an option again under its other name (endpoint, aws_pubsub_endpoint) replaces it', async (t) => {
  const [configured, published] = await inChild(
    t,
    `PubSub.configure({ PubSub: { endpoint: 'ws://127.0.0.1:1/first' } })
     print(PubSub.configure({ PubSub: { aws_pubsub_endpoint: process.env.BROKER } }))
     const provider = new MqttOverWSProvider()
     await provider.publish('singleton/renamed', 1, { qos: 1 })
     print({ state: provider.connectionState })
     await provider.close()`,
  )
  t.deepEqual(configured, { aws_pubsub_endpoint: broker.wsUrl }, 'the first name is gone')
  t.deepEqual(published, { state: 'Connected' })
})

test.serial('a provider constructed without an endpoint says where to give one', async (t) => {
  const [iot, mqtt] = await inChild(
    t,
    `print(attempt(() => new AWSIoTProvider({ aws_pubsub_region: 'us-east-1' })))
     print(attempt(() => new MqttOverWSProvider()))`,
  )
  t.is(iot.code, 'ERR_INVALID_ENDPOINT')
  t.regex(iot.message, /pass it as new AWSIoTProvider\(\{ aws_pubsub_endpoint: … \}\), or call PubSub\.configure\(\{ PubSub: \{ aws_pubsub_endpoint: … \} \}\) before constructing the provider/)
  t.regex(mqtt.message, /new MqttOverWSProvider\(\{ aws_pubsub_endpoint: … \}\)/)
})
