'use strict'
// The AWS IoT Core provider (`require('native-pubsub')`), tested without AWS: a local gateway
// verifies every presigned URL as AWS IoT does (algorithm, credential scope, signed headers,
// date and expiry, and the signature recomputed with AWS's own @smithy/signature-v4), answers
// 403 on any mismatch, can refuse a client id the way an IoT policy does, and pipes accepted
// connections to mosquitto.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const test = require('ava')
const { PubSub, Hub } = require('../index.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { useIotGateway, startIotGateway } = require('./helpers/iot-gateway.js')
const { startTcpProxy } = require('./helpers/tcp-proxy.js')
const { topicNamer, listen, observe, plain, mqttJs, recordEvents, runScript, exitOf, printed, waitFor, sleep, uniqueClientId } = require('./helpers/pubsub.js')

const ROOT = path.join(__dirname, '..')
const uniqueTopic = topicNamer('aws-iot')

const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: 'us-east-1', broker: broker.tcpUrl }))

/** An IoT PubSub on the gateway (trusting its test CA), closed when the test ends. */
function iotPubSub(t, options, gw = gateway) {
  const pubsub = new PubSub({ endpoint: gw.url, ca: gw.ca, ...options })
  t.teardown(() => pubsub.close())
  return pubsub
}

/** The gateway's records of upgrades signed with `accessKeyId`. */
function upgradesBy(accessKeyId, gw = gateway) {
  return gw.upgrades.filter((u) => u.accessKeyId === accessKeyId)
}

// ------------------------------------------------------------------------------ connecting

for (const qos of [0, 1]) {
  test(`static credentials: subscribe and publish round trip at QoS ${qos}`, async (t) => {
    const credentials = gateway.newKeys()
    const pubsub = iotPubSub(t, { region: 'us-east-1', credentials })
    const topic = uniqueTopic(`static-qos${qos}`)
    const inbox = await listen(t, pubsub, topic, { qos })
    await pubsub.publish({ topics: topic, message: { hello: 'iot', qos }, options: { qos } })
    const [message] = await inbox.take(1)
    t.deepEqual(plain(message), { hello: 'iot', qos })
    t.is(pubsub.getProviderName(), 'AWSIoTProvider')
    const [upgrade] = upgradesBy(credentials.accessKeyId)
    t.is(upgrade.status, 101)
    t.is(upgrade.region, 'us-east-1')
    t.deepEqual(gateway.connects.filter((c) => c.clientId === pubsub.clientId).map((c) => c.refused), [false])
  })
}

test('request/response: a subscription made within a second of the last one ending reuses the connection', async (t) => {
  // AWS IoT takes one CONNECT per second per client id. A flow that subscribes to each reply
  // topic and unsubscribes once the reply came used to make a connection per request.
  const requests = uniqueTopic('requests')
  const replies = uniqueTopic('replies')
  const { client: responder } = await mqttJs(t, broker.tcpUrl)
  await responder.subscribeAsync(`${requests}/+`)
  responder.on('message', (topic, payload) => responder.publish(`${replies}/${topic.split('/').pop()}`, payload))
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: gateway.newKeys() })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  for (let i = 0; i < 5; i++) {
    const inbox = observe(pubsub.subscribe(`${replies}/${i}`))
    await inbox.subscription.ready
    await pubsub.publish(`${requests}/${i}`, { request: i })
    t.deepEqual(plain(await inbox.take(1)), [{ request: i }])
    inbox.subscription.unsubscribe()
    await sleep(20)
  }
  const lastLeft = Date.now()
  t.is(gateway.connects.filter((c) => c.clientId === pubsub.clientId).length, 1, 'one connection for the five requests')
  t.deepEqual(states, ['Connecting', 'Connected'])
  // Then, nobody subscribing, it ends as Amplify's does.
  await waitFor(() => pubsub.connectionState === 'Disconnected', 5_000, 'the disconnect')
  t.true(Date.now() - lastLeft >= 900, `ended ${Date.now() - lastLeft} ms after the last observer left`)
  t.deepEqual(states, ['Connecting', 'Connected', 'ConnectedPendingDisconnect', 'Disconnected'])
})

test('a process whose last observer left exits at once, without waiting out that second, once its DISCONNECT is done', async (t) => {
  const keys = gateway.newKeys()
  const run = runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(ROOT)})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA, region: 'us-east-1', credentials: JSON.parse(process.env.KEYS) })
     const subscription = pubsub.subscribe(${JSON.stringify(uniqueTopic('exit'))}).subscribe(() => {})
     subscription.ready.then(() => {
       subscription.unsubscribe()
       globalThis.left = Date.now()
       process.on('exit', () => console.log(pubsub.connectionState, Date.now() - globalThis.left))
     })`,
    { ENDPOINT: gateway.url, CA: gateway.ca, KEYS: JSON.stringify(keys) },
  )
  t.is((await exitOf(t, run)).code, 0, run.stderr)
  const [state, ms] = run.stdout.trim().split(' ')
  t.is(state, 'Disconnected', 'ended with DISCONNECT, waited for')
  t.true(Number(ms) < 800, `exited ${ms} ms after the last observer left`)
})

test('messages from other clients of the broker reach an IoT subscriber', async (t) => {
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: gateway.newKeys() })
  const topic = uniqueTopic('from-broker')
  const inbox = await listen(t, pubsub, topic)
  const other = await mqttJs(t, broker.tcpUrl)
  await other.client.publishAsync(topic, JSON.stringify({ from: 'mqtt.js' }), { qos: 1 })
  t.deepEqual(plain((await inbox.take(1))[0]), { from: 'mqtt.js' })
})

test('a credentials function (sync or async) is called before connecting and its keys sign the URL', async (t) => {
  for (const wrap of [(keys) => () => keys, (keys) => async () => keys]) {
    const keys = gateway.newKeys()
    let calls = 0
    const credentials = wrap(keys)
    const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: () => (calls++, credentials()) })
    const topic = uniqueTopic('function')
    const inbox = await listen(t, pubsub, topic, { qos: 1 })
    await pubsub.publish(topic, 'via a function', { qos: 1 })
    t.is((await inbox.take(1))[0], 'via a function')
    t.is(calls, 1)
    t.is(upgradesBy(keys.accessKeyId)[0].status, 101)
  }
})

test('a session token travels after the signature and is not signed', async (t) => {
  const sessionToken = `FwoGZXIvYXdzE/token+with=odd&chars-${process.pid}`
  const credentials = gateway.newKeys({ sessionToken })
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials })
  await pubsub.publish(uniqueTopic('token'), 1, { qos: 1 })
  const [upgrade] = upgradesBy(credentials.accessKeyId)
  t.is(upgrade.status, 101)
  t.is(upgrade.sessionToken, sessionToken)
  // The gateway recomputed the signature without the token; the token is the last parameter.
  t.deepEqual(upgrade.paramOrder.slice(-2), ['X-Amz-Signature', 'X-Amz-Security-Token'])
  t.is(upgrade.paramOrder.length, new Set(upgrade.paramOrder).size)
})

test('credentials from the environment (the AWS default chain) connect', async (t) => {
  const keys = gateway.newKeys()
  const topic = uniqueTopic('env')
  const run = runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(ROOT)})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA, region: 'us-east-1' })
     pubsub.publish(${JSON.stringify(topic)}, 'from env', { qos: 1 })
       .then(() => console.log('published'), (e) => console.log('failed', e.code, e.message))
       .finally(() => pubsub.close())`,
    {
      ...cleanAwsEnvironment(t),
      ENDPOINT: gateway.url,
      CA: gateway.ca,
      AWS_ACCESS_KEY_ID: keys.accessKeyId,
      AWS_SECRET_ACCESS_KEY: keys.secretAccessKey,
    },
  )
  const { code } = await run.exited
  t.is(run.stdout.trim(), 'published', run.stderr)
  t.is(code, 0)
  t.is(upgradesBy(keys.accessKeyId)[0].status, 101)
})

test('credentials from a shared credentials file profile (AWS_PROFILE) connect', async (t) => {
  const keys = gateway.newKeys()
  const env = cleanAwsEnvironment(t)
  fs.writeFileSync(
    env.AWS_SHARED_CREDENTIALS_FILE,
    `[default]\naws_access_key_id = AKIDNOTTHISONE\naws_secret_access_key = nope\n\n[iot-test]\naws_access_key_id = ${keys.accessKeyId}\naws_secret_access_key = ${keys.secretAccessKey}\n`,
  )
  const run = runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(ROOT)})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA, region: 'us-east-1' })
     pubsub.publish('aws-iot/profile', 'from a profile', { qos: 1 })
       .then(() => console.log('published'), (e) => console.log('failed', e.code, e.message))
       .finally(() => pubsub.close())`,
    { ...env, ENDPOINT: gateway.url, CA: gateway.ca, AWS_PROFILE: 'iot-test' },
  )
  await run.exited
  t.is(run.stdout.trim(), 'published', run.stderr)
  t.is(upgradesBy(keys.accessKeyId)[0].status, 101)
})

/**
 * In a child process with environment `env`, an IoT PubSub using the default chain publishes
 * once: resolves to the error it failed with, `{ code, message, ms }` (`ms` from the call).
 */
async function firstPublishFailure(t, env) {
  const run = runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(ROOT)})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA, region: 'us-east-1', connectTimeout: 10000 })
     const started = Date.now()
     pubsub.publish('aws-iot/first-publish', 'x')
       .then(() => console.log('published'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message, ms: Date.now() - started })))
       .finally(() => pubsub.close())`,
    { ...env, ENDPOINT: gateway.url, CA: gateway.ca },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  return JSON.parse(run.stdout)
}

test('with no credentials anywhere, connecting fails quickly with ERR_CREDENTIALS', async (t) => {
  const result = await firstPublishFailure(t, cleanAwsEnvironment(t))
  t.is(result.code, 'ERR_CREDENTIALS')
  t.regex(result.message, /No AWS credentials found: pass the 'credentials' option/)
  t.true(result.ms < 5_000, `took ${result.ms} ms`)
  // The chain's list of the providers it tried comes whole: before, the instance-metadata
  // provider's name was masked as if it were a secret (it has 19 characters and a digit), and the
  // text was cut at 500 characters in the middle of a word ("…AWS_EC2_METADATA_DISAB…").
  // (Then the hint that the gateway's host is not an AWS host.)
  t.regex(result.message, /\n {2}Ec2InstanceMetadata: the credential provider was not enabled: IMDS disabled by AWS_EC2_METADATA_DISABLED env var set to `true`\. The endpoint's host '127\.0\.0\.1' is not an AWS host: /)
  for (const provider of ['Environment', 'Profile', 'WebIdentityToken', 'EcsContainer']) t.regex(result.message, new RegExp(`\n {2}${provider}: `))
  t.notRegex(result.message, /\[redacted\]|…/)
})

test('AWS_PROFILE naming a profile that is not defined says so, with or without profile files', async (t) => {
  // Before: with no profile file, nothing said that the profile does not exist (aws-config's
  // chain reports only "Profile: the credential provider was not enabled").
  const env = cleanAwsEnvironment(t)
  const noFiles = await firstPublishFailure(t, { ...env, AWS_PROFILE: 'nope' })
  t.is(noFiles.code, 'ERR_CREDENTIALS')
  t.true(
    noFiles.message.startsWith(
      `No AWS credentials found: AWS_PROFILE is 'nope', but no profile of that name is defined (looked in ${env.AWS_CONFIG_FILE} (not found) and ${env.AWS_SHARED_CREDENTIALS_FILE} (not found)). Pass the 'credentials' option`,
    ),
    noFiles.message,
  )
  // With files that define other profiles, aws-config says it too, and that stays visible.
  fs.writeFileSync(env.AWS_CONFIG_FILE, '[default]\nregion = us-east-1\n\n[profile dev-admin]\nregion = eu-west-1\n')
  const otherProfiles = await firstPublishFailure(t, { ...env, AWS_PROFILE: 'nope' })
  t.regex(otherProfiles.message, /^No AWS credentials found: AWS_PROFILE is 'nope', but no profile of that name is defined \(looked in \S+config and \S+credentials \(not found\)\)\./)
  t.regex(otherProfiles.message, /\n {2}Profile: the credential provider was not enabled: profile `nope` was not defined/)
  // A profile that exists is not said to be missing.
  const defined = await firstPublishFailure(t, { ...env, AWS_PROFILE: 'dev-admin' })
  t.regex(defined.message, /^No AWS credentials found: pass the 'credentials' option/)
})

/** An environment where the AWS default chain finds nothing unless a test adds it. */
function cleanAwsEnvironment(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-aws-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const env = {}
  for (const name of Object.keys(process.env)) if (name.startsWith('AWS_')) env[name] = ''
  return {
    ...env,
    HOME: dir,
    AWS_CONFIG_FILE: path.join(dir, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'credentials'),
    // Never the real instance-metadata address: it may hand out a CI runner's role, or hang.
    AWS_EC2_METADATA_DISABLED: 'true',
  }
}

// ------------------------------------------------------------------------ refused signatures

/** Publishes and subscribes on `pubsub`; both must fail with the same permanent error. */
async function bothFail(t, pubsub) {
  const topic = uniqueTopic('refused')
  const errors = []
  pubsub.subscribe(topic).subscribe({ next: () => t.fail('no message expected'), error: (e) => errors.push(e) })
  const publishError = await t.throwsAsync(pubsub.publish(topic, 'x', { qos: 1 }))
  await waitFor(() => errors.length === 1, 5_000, 'the observer error')
  t.is(errors[0].code, publishError.code)
  t.is(pubsub.connectionState, 'Disconnected')
  return publishError
}

test('a wrong secret access key is refused with ERR_NOT_AUTHORIZED naming the likely causes', async (t) => {
  const keys = gateway.newKeys()
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: { ...keys, secretAccessKey: 'not-the-secret' } })
  const error = await bothFail(t, pubsub)
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.regex(error.message, /HTTP 403/)
  t.regex(error.message, /wrong secret access key/)
  t.is(upgradesBy(keys.accessKeyId)[0].reason.includes('signature does not match'), true)
})

test('an unknown access key is refused with ERR_NOT_AUTHORIZED', async (t) => {
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: { accessKeyId: 'AKIDNOSUCHKEY', secretAccessKey: 'whatever' } })
  const error = await bothFail(t, pubsub)
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.regex(error.message, /unknown or inactive access key/)
})

test('signing for the wrong region is refused, and the message names the region signed for', async (t) => {
  const keys = gateway.newKeys()
  const pubsub = iotPubSub(t, { region: 'eu-west-1', credentials: keys })
  const error = await bothFail(t, pubsub)
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.regex(error.message, /signed for 'eu-west-1'/)
  t.regex(upgradesBy(keys.accessKeyId)[0].reason, /region/)
})

test('a signature the gateway sees as expired (clock skew) is refused', async (t) => {
  // A gateway of its own: its clock runs 20 minutes ahead of ours.
  const skewed = await startIotGateway({ region: 'us-east-1', broker: broker.tcpUrl })
  t.teardown(() => skewed.stop())
  skewed.clockSkewMs = 20 * 60_000
  const keys = { accessKeyId: 'AKIDSKEWED', secretAccessKey: 'skewed-secret' }
  skewed.addKey(keys.accessKeyId, keys.secretAccessKey)
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: keys }, skewed)
  const error = await bothFail(t, pubsub)
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.regex(error.message, /clock more than 5 minutes off/)
  t.regex(skewed.upgrades[0].reason, /expired/)
})

test('a client id the IoT policy refuses (socket closed after CONNECT) says to check the policy', async (t) => {
  const clientId = uniqueClientId('refused')
  gateway.refuseClientId(clientId)
  const pubsub = iotPubSub(t, { region: 'us-east-1', clientId, credentials: gateway.newKeys() })
  const error = await bothFail(t, pubsub)
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.regex(error.message, /iot:Connect/)
  t.true(error.message.includes(`arn:aws:iot:us-east-1:<account-id>:client/${clientId}`), error.message)
  t.deepEqual(gateway.connects.filter((c) => c.clientId === clientId).map((c) => c.refused), [true])
})

// ------------------------------------------------------------------------------ credentials

// gateway.dropAll() cuts every connection: the tests using it run serially, before the others.
test.serial('a credentials function that starts returning new keys is used on the automatic reconnect', async (t) => {
  const first = gateway.newKeys()
  const second = gateway.newKeys()
  let current = first
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: async () => current, reconnect: { minDelayMs: 50, maxDelayMs: 100 } })
  const topic = uniqueTopic('rotate')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  t.is(upgradesBy(first.accessKeyId).length, 1)

  current = second
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  gateway.dropAll()
  await waitFor(() => states.includes('Connected'), 5_000, 'the reconnect')
  t.deepEqual(states, ['ConnectionDisrupted', 'Connecting', 'Connected'])
  t.is(upgradesBy(first.accessKeyId).length, 1)
  t.is(upgradesBy(second.accessKeyId).length, 1)
  t.is(upgradesBy(second.accessKeyId)[0].status, 101)
  // The subscription was renewed on the new connection.
  await pubsub.publish(topic, 'after rotation', { qos: 1 })
  t.is((await inbox.take(1))[0], 'after rotation')
})

test.serial('every connection is signed afresh: a new date, a new signature', async (t) => {
  const keys = gateway.newKeys()
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: keys })
  const topic = uniqueTopic('fresh')
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  await pubsub.publish(topic, 1, { qos: 1 })
  await sleep(1_100) // X-Amz-Date has a resolution of one second
  gateway.dropAll()
  await waitFor(() => states.includes('Disconnected'), 5_000, 'the drop to be noticed')
  await pubsub.publish(topic, 2, { qos: 1 })
  const [a, b] = upgradesBy(keys.accessKeyId)
  const param = (u, name) => new URLSearchParams(u.rawQuery).get(name)
  t.not(param(a, 'X-Amz-Date'), param(b, 'X-Amz-Date'))
  t.not(param(a, 'X-Amz-Signature'), param(b, 'X-Amz-Signature'))
  t.is(b.status, 101)
})

test('a credentials function that rejects fails with ERR_CREDENTIALS and its reason', async (t) => {
  const pubsub = iotPubSub(t, {
    region: 'us-east-1',
    credentials: async () => {
      throw new Error('Cognito identity pool unreachable')
    },
  })
  const error = await bothFail(t, pubsub)
  t.is(error.code, 'ERR_CREDENTIALS')
  t.regex(error.message, /The credentials function failed: Cognito identity pool unreachable/)
})

test('a credentials function that throws synchronously is reported the same way', async (t) => {
  const pubsub = iotPubSub(t, {
    region: 'us-east-1',
    credentials: () => {
      throw new TypeError('no session')
    },
  })
  const error = await t.throwsAsync(pubsub.publish(uniqueTopic('throws'), 1))
  t.is(error.code, 'ERR_CREDENTIALS')
  t.regex(error.message, /no session/)
})

test('a malformed value from the credentials function says what is wrong', async (t) => {
  for (const [value, expected] of [
    [undefined, /must be an object/],
    ['AKID:secret', /must be an object/],
    [{ accessKeyId: 'AKIDX' }, /'secretAccessKey' is missing/],
    [{ accessKeyId: 'AKIDX', secretAccessKey: 42 }, /'secretAccessKey' must be a string, got a number/],
    [{ accessKeyId: 'AKIDX', secretAccessKey: 's', expiration: 'tomorrow-ish' }, /'expiration' must be a Date/],
  ]) {
    const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: async () => value })
    const error = await t.throwsAsync(pubsub.publish(uniqueTopic('malformed'), 1))
    t.is(error.code, 'ERR_CREDENTIALS')
    t.regex(error.message, expected)
    t.regex(error.message, /^The credentials function's result/)
  }
})

test("a value JSON has no form for in the credentials function's result is ERR_CREDENTIALS naming the field, not a crash", async (t) => {
  // napi's conversion threw these (without one of our codes) inside the promise callback that
  // hands the result over: an unhandled rejection, which ended the process.
  for (const [value, expected] of [
    [{ accessKeyId: Symbol('AKIDX'), secretAccessKey: 's' }, /'credentials\.accessKeyId' cannot be a symbol/],
    [{ accessKeyId: 'AKIDX', secretAccessKey: () => 's' }, /'credentials\.secretAccessKey' cannot be a function/],
    [{ accessKeyId: 'AKIDX', secretAccessKey: 's', sessionToken: { value: Number.NaN } }, /'credentials\.sessionToken\.value' must be a finite number/],
    [{ accessKeyId: 'AKIDX', secretAccessKey: 's', expiration: 10n ** 30n }, /'credentials\.expiration' must be a number, got a bigint/],
  ]) {
    const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: async () => value })
    const error = await t.throwsAsync(pubsub.publish(uniqueTopic('unrepresentable'), 1))
    t.is(error.code, 'ERR_CREDENTIALS')
    t.regex(error.message, expected)
  }
})

test('expired credentials are never used: fetched again, and refused if still expired', async (t) => {
  const keys = gateway.newKeys()
  const expired = { ...keys, expiration: new Date(Date.now() - 60_000) }

  const fixed = iotPubSub(t, { region: 'us-east-1', credentials: expired })
  const staticError = await t.throwsAsync(fixed.publish(uniqueTopic('expired'), 1))
  t.is(staticError.code, 'ERR_CREDENTIALS')
  t.regex(staticError.message, /The credentials in the 'credentials' option expired \d+ s ago .*; pass a function that returns fresh ones/)

  const fresh = { ...keys, expiration: new Date(Date.now() + 3_600_000) }
  const answers = [expired, fresh]
  const refreshing = iotPubSub(t, { region: 'us-east-1', credentials: async () => answers.shift() })
  const functionError = await t.throwsAsync(refreshing.publish(uniqueTopic('expired'), 1))
  t.regex(functionError.message, /The credentials the credentials function returned expired .*; the function must return fresh ones/)
  // The next connection asks again and gets fresh ones (an ISO string works too).
  answers.unshift({ ...fresh, expiration: fresh.expiration.toISOString() })
  await refreshing.publish(uniqueTopic('expired'), 2)
  t.is(upgradesBy(keys.accessKeyId).length, 1, 'only fresh credentials reached the gateway')
})

test('a credentials function that never settles fails with ERR_CREDENTIALS after connectTimeout', async (t) => {
  const pubsub = iotPubSub(t, { region: 'us-east-1', connectTimeout: 300, credentials: () => new Promise(() => {}) })
  const started = Date.now()
  const error = await t.throwsAsync(pubsub.publish(uniqueTopic('never'), 1))
  t.is(error.code, 'ERR_CREDENTIALS')
  t.regex(error.message, /No credentials within 300 ms \(connectTimeout\): the credentials function did not settle/)
  t.true(Date.now() - started < 3_000)
})

// ----------------------------------------------------------------- failures on a reconnect

// These tests cut connections, so each has a gateway of its own. They run serially, before the
// others: making a gateway's certificates blocks the event loop, which the timing checks of
// the tests running beside them would feel.
async function ownGateway(t, broker = () => sharedBrokerUrl()) {
  const gw = await startIotGateway({ region: 'us-east-1', broker })
  t.teardown(() => gw.stop())
  return gw
}
const sharedBrokerUrl = () => broker.tcpUrl
const FAST = { minDelayMs: 50, maxDelayMs: 200 }

test.serial("CONNECTs to AWS IoT are a second apart at least, whatever the reconnect delays (its limit per client id)", async (t) => {
  const gw = await ownGateway(t)
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: gw.newKeys(), reconnect: { minDelayMs: 20, maxDelayMs: 40 } }, gw)
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const inbox = await listen(t, pubsub, uniqueTopic('spaced'))
  for (let loss = 1; loss <= 2; loss++) {
    gw.dropAll()
    await waitFor(() => states.filter((s) => s === 'Connected').length === loss + 1, 5_000, `reconnect ${loss}`)
  }
  const times = gw.connects.filter((c) => c.clientId === pubsub.clientId).map((c) => c.at)
  t.is(times.length, 3)
  for (let i = 1; i < times.length; i++) t.true(times[i] - times[i - 1] >= 990, `CONNECT ${i + 1} came ${times[i] - times[i - 1]} ms after the one before`)
  t.deepEqual(inbox.errors, [])
})

test.serial('a connection lost in the second after its last observer left, made again for a pending publish, ends once that is done', async (t) => {
  const gw = await ownGateway(t)
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: gw.newKeys(), reconnect: FAST }, gw)
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const subscription = pubsub.subscribe(uniqueTopic('linger-loss')).subscribe(() => {})
  await subscription.ready
  subscription.unsubscribe()
  broker.pause() // the PUBACK will not come before the loss
  const published = pubsub.publish(uniqueTopic('linger-loss'), 'pending', { qos: 1 })
  await sleep(100)
  gw.dropAll()
  broker.resume()
  await published
  await waitFor(() => pubsub.connectionState === 'Disconnected' && states.filter((s) => s === 'Connected').length === 2, 5_000, 'the end of the connection made again')
  t.deepEqual(states.slice(-2), ['ConnectedPendingDisconnect', 'Disconnected'])
  t.is(gw.liveConnections, 0)
})

test.serial('20 topics subscribed at once go in SUBSCRIBEs of at most 8 filters, as AWS IoT requires, also when renewed after a reconnect', async (t) => {
  // AWS IoT closes the connection of a client whose SUBSCRIBE carries more than 8 filters (the
  // gateway does the same).
  const gw = await ownGateway(t)
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: gw.newKeys(), reconnect: FAST }, gw)
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  const base = uniqueTopic('twenty')
  const topics = Array.from({ length: 20 }, (_, i) => `${base}/${i}`)
  const inbox = await listen(t, pubsub, topics, { qos: 1 })
  t.deepEqual(gw.subscribes.map((s) => s.filters), [8, 8, 4])
  t.deepEqual(disruptions, [])

  const states = recordEvents(pubsub, 'ConnectionStateChange')
  gw.dropAll()
  await waitFor(() => states.includes('Connected'), 5_000, 'the reconnect')
  await pubsub.publish(topics[19], 'after the reconnect', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['after the reconnect'])
  t.deepEqual(gw.subscribes.map((s) => s.filters), [8, 8, 4, 8, 8, 4])
  t.deepEqual(
    disruptions.map(({ error }) => error.code),
    ['ERR_CONNECTION'],
    'the drop alone',
  )
})

test.serial('a credentials function failing during a reconnect is retried with backoff: the subscription survives', async (t) => {
  const gw = await ownGateway(t)
  const keys = gw.newKeys({ sessionToken: `token/${process.pid}+${Math.random().toString(36).slice(2)}` })
  const expired = { ...keys, expiration: new Date(Date.now() - 60_000) }
  // After the first connect: a rejection, a synchronous throw, no answer within connectTimeout,
  // expired keys; then good ones again.
  const failures = [
    async () => Promise.reject(new Error('getaddrinfo EAI_AGAIN cognito-identity.us-east-1.amazonaws.com')),
    () => {
      throw new TypeError('no session yet')
    },
    () => new Promise(() => {}),
    async () => expired,
  ]
  let calls = 0
  let failing = false
  const credentials = () => {
    calls++
    return failing && failures.length > 0 ? failures.shift()() : keys
  }
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials, connectTimeout: 1_000, reconnect: FAST }, gw)
  const topic = uniqueTopic('credentials-blip')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  failing = true
  gw.dropAll()
  await waitFor(() => states.includes('Connected'), 15_000, 'the reconnect')
  // Each failed fetch is one failed attempt, reported as such; none reached the gateway.
  t.deepEqual(states, ['ConnectionDisrupted', ...Array(4).fill(['Connecting', 'ConnectionDisrupted']).flat(), 'Connecting', 'Connected'])
  // Each one also says why (the loss, then each fetch), with no key in it.
  t.deepEqual(disruptions.map(({ error }) => error.code), ['ERR_CONNECTION', ...Array(4).fill('ERR_CREDENTIALS')])
  for (const { error, retryInMs } of disruptions) {
    t.true(error instanceof Error)
    t.true(retryInMs >= FAST.minDelayMs && retryInMs <= FAST.maxDelayMs, `retryInMs ${retryInMs}`)
    t.false(error.message.includes(keys.secretAccessKey), error.message)
    t.false(error.message.includes(keys.sessionToken), error.message)
  }
  t.regex(disruptions[1].error.message, /EAI_AGAIN/)
  t.is(calls, 6)
  t.deepEqual(gw.upgrades.map((u) => u.status), [101, 101])
  t.deepEqual(inbox.errors, [], 'a credentials blip never reaches error')
  await pubsub.publish(topic, 'after the blip', { qos: 1 })
  t.is((await inbox.take(1))[0], 'after the blip')
})

test.serial('a malformed value from the credentials function on a reconnect is still permanent', async (t) => {
  const gw = await ownGateway(t)
  const keys = gw.newKeys()
  let value = keys
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: async () => value, reconnect: FAST }, gw)
  const inbox = await listen(t, pubsub, uniqueTopic('malformed-later'))
  value = { accessKeyId: keys.accessKeyId }
  gw.dropAll()
  await waitFor(() => inbox.errors.length === 1, 5_000, 'the observer error')
  t.is(inbox.errors[0].code, 'ERR_CREDENTIALS')
  t.regex(inbox.errors[0].message, /'secretAccessKey' is missing/)
  t.is(pubsub.connectionState, 'Disconnected')
})

test.serial('an invalid Date as expiration from the credentials function on a reconnect is permanent, not retried forever', async (t) => {
  const gw = await ownGateway(t)
  const keys = gw.newKeys()
  let value = keys
  let calls = 0
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: async () => (calls++, value), reconnect: FAST }, gw)
  const inbox = await listen(t, pubsub, uniqueTopic('invalid-date-later'))
  // A typo'd field or an unparsable string makes an invalid Date: JSON cannot carry its NaN.
  value = { ...keys, expiration: new Date('not a date') }
  gw.dropAll()
  await waitFor(() => inbox.errors.length === 1, 5_000, 'the observer error')
  t.is(inbox.errors[0].code, 'ERR_CREDENTIALS')
  t.is(inbox.errors[0].message, "The credentials function's result: 'expiration' must be a Date or a time in milliseconds since 1970, got an invalid Date")
  t.is(pubsub.connectionState, 'Disconnected')
  t.is(calls, 2)
})

test.serial('keys deactivated while connected: the reconnect\'s HTTP 403 is final, the observer and a waiting publish get ERR_NOT_AUTHORIZED', async (t) => {
  const gw = await ownGateway(t)
  const keys = gw.newKeys()
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: keys, reconnect: FAST, offlineQueue: 'all' }, gw)
  const inbox = await listen(t, pubsub, uniqueTopic('revoked'))
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  pubsub.on('connectionDisrupted', () => {}) // the drop is the test's: no warning for it
  gw.removeKey(keys.accessKeyId) // as IAM does for a deactivated access key
  gw.dropAll()
  await waitFor(() => states.includes('ConnectionDisrupted'), 5_000, 'the drop to be noticed')
  const waiting = pubsub.publish(uniqueTopic('revoked-publish'), 'queued while offline', { qos: 1 })

  await waitFor(() => inbox.errors.length === 1, 5_000, 'the observer error')
  t.is(inbox.errors[0].code, 'ERR_NOT_AUTHORIZED')
  t.regex(inbox.errors[0].message, /HTTP 403/)
  t.false(inbox.errors[0].message.includes(keys.accessKeyId), inbox.errors[0].message)
  const refused = await t.throwsAsync(waiting)
  t.is(refused.code, 'ERR_NOT_AUTHORIZED')
  t.is(pubsub.connectionState, 'Disconnected')
  // Not retried in silence: ten backoff periods later, still one refused attempt.
  await sleep(10 * FAST.maxDelayMs)
  t.deepEqual(gw.upgrades.map((u) => u.status), [101, 403])
})

/**
 * A stand-in for the ECS container credentials endpoint (one of the default chain's providers),
 * on loopback: answers `keys`, or 503 while `down`.
 */
async function containerCredentials(t, keys) {
  const server = require('node:http').createServer((req, res) => {
    endpoint.requests++
    if (endpoint.down) {
      endpoint.refused++
      res.writeHead(503)
      return res.end('unavailable')
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    const expiration = new Date(Date.now() + 3_600_000).toISOString()
    res.end(JSON.stringify({ AccessKeyId: keys.accessKeyId, SecretAccessKey: keys.secretAccessKey, Token: keys.sessionToken, Expiration: expiration }))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const endpoint = { url: `http://127.0.0.1:${server.address().port}/credentials`, down: false, requests: 0, refused: 0 }
  return endpoint
}

/**
 * A child process with an IoT PubSub using the default chain: it subscribes and prints 'ready',
 * prints 'connected <n>' at each Connected, publishes after the second and prints 'received'
 * once the publish is acknowledged and the message came back, then closes; it prints
 * 'error <code> <message>' if anything fails.
 */
function defaultChainSubscriber(t, gw, env) {
  const topic = uniqueTopic('chain')
  return runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(ROOT)})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA, region: 'us-east-1', reconnect: { minDelayMs: 50, maxDelayMs: 200 } })
     const fail = (e) => console.log('error', e.code, e.message)
     let connected = 0
     let messageCame
     const message = new Promise((resolve) => (messageCame = resolve))
     pubsub.on('connectionDisrupted', ({ error }) => console.log('disrupted', error.code))
     pubsub.on('ConnectionStateChange', (state) => {
       if (state !== 'Connected') return
       console.log('connected', ++connected)
       if (connected !== 2) return
       Promise.all([pubsub.publish(${JSON.stringify(topic)}, 'after', { qos: 1 }), message])
         .then(() => console.log('received'), fail)
         .finally(() => pubsub.close())
     })
     const subscription = pubsub.subscribe(${JSON.stringify(topic)}, { qos: 1 }).subscribe({
       next: () => messageCame(),
       error: (e) => { fail(e); pubsub.close() },
     })
     subscription.ready.then(() => console.log('ready'), fail)`,
    { ...env, ENDPOINT: gw.url, CA: gw.ca },
  )
}

test.serial('the default chain failing to fetch during a reconnect is retried: the subscription survives', async (t) => {
  const gw = await ownGateway(t)
  const keys = gw.newKeys({ sessionToken: `container-token-${process.pid}` })
  const container = await containerCredentials(t, keys)
  const run = defaultChainSubscriber(t, gw, { ...cleanAwsEnvironment(t), AWS_CONTAINER_CREDENTIALS_FULL_URI: container.url })
  await printed(run, 'ready')
  container.down = true
  gw.dropAll()
  await waitFor(() => container.refused >= 6, 15_000, 'failed fetches during the reconnect')
  container.down = false
  await printed(run, 'received', 15_000)
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  t.notRegex(run.stdout, /error/)
  t.is(upgradesBy(keys.accessKeyId, gw).filter((u) => u.status === 101).length, 2)
})

test('on a first connect, the default chain failing to fetch is ERR_CREDENTIALS "could not fetch", with its reason', async (t) => {
  const container = await containerCredentials(t, { accessKeyId: 'AKIDUNUSED', secretAccessKey: 'unused' })
  container.down = true
  const result = await firstPublishFailure(t, { ...cleanAwsEnvironment(t), AWS_CONTAINER_CREDENTIALS_FULL_URI: container.url })
  t.is(result.code, 'ERR_CREDENTIALS')
  t.regex(result.message, /^Could not fetch AWS credentials from the default chain: .*503/)
  t.notRegex(result.message, /No AWS credentials found/)
})

test('a failing credential_process reaches the user with its diagnostic, and with anything secret-like masked', async (t) => {
  const env = cleanAwsEnvironment(t)
  const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'
  const token = 'IQoJb3JpZ2luX2VjEHkaCXVzLWVhc3QtMSJHMEUCIQDexampletoken'
  // A helper that dumps its environment on failure, as debugging scripts do.
  const script = path.join(path.dirname(env.AWS_CONFIG_FILE), 'credentials.sh')
  fs.writeFileSync(script, `echo "debug: AWS_SECRET_ACCESS_KEY=${secret} AWS_SESSION_TOKEN=${token}" >&2\necho "the SSO session has expired: run aws sso login" >&2\nexit 3\n`)
  fs.writeFileSync(env.AWS_CONFIG_FILE, `[default]\ncredential_process = /bin/sh ${script}\n`)
  const result = await firstPublishFailure(t, env)
  t.is(result.code, 'ERR_CREDENTIALS')
  t.regex(result.message, /^Could not fetch AWS credentials from the default chain: .*exited with code.*3/s)
  t.regex(result.message, /AWS_SECRET_ACCESS_KEY=\[redacted\] AWS_SESSION_TOKEN=\[redacted\]/)
  // The gateway's host is not an AWS host: the message ends saying which entry point other brokers take.
  t.regex(result.message, /the SSO session has expired: run aws sso login\. The endpoint's host '127\.0\.0\.1' is not an AWS host: .*native-pubsub\/mqtt'\)$/)
  // aws-config wraps the process's error in causes that repeat each other: said once.
  t.is(result.message.split('an error occurred while loading credentials').length, 2, result.message)
  for (const part of [secret, token, 'wJalrXUtnFEMI', 'IQoJb3JpZ2lu']) t.false(result.message.includes(part), `${part} in ${result.message}`)
})

test('a long credential_process diagnostic is cut at a line break, with a marker saying how much was left out', async (t) => {
  // Before: cut at 500 characters wherever that fell, mid-word, with a bare "…".
  const env = cleanAwsEnvironment(t)
  const script = path.join(path.dirname(env.AWS_CONFIG_FILE), 'credentials.sh')
  fs.writeFileSync(script, `for i in $(seq 1 60); do echo "trace line $i: the helper could not reach the vault" >&2; done\nexit 2\n`)
  fs.writeFileSync(env.AWS_CONFIG_FILE, `[default]\ncredential_process = /bin/sh ${script}\n`)
  const result = await firstPublishFailure(t, env)
  t.is(result.code, 'ERR_CREDENTIALS')
  // (Then the hint that the gateway's host is not an AWS host.)
  const match = /^Could not fetch AWS credentials from the default chain: [^]*\ntrace line (\d+): the helper could not reach the vault … \[(\d+) more characters cut\]\. The endpoint's host '127\.0\.0\.1' is not an AWS host: /.exec(result.message)
  t.truthy(match, result.message)
  const shown = Number(match[1])
  t.true(shown > 10 && shown < 60, result.message)
  // What was left out: the lines after the last one shown, without the line break before them.
  const rest = Array.from({ length: 60 - shown }, (_, i) => `trace line ${shown + i + 1}: the helper could not reach the vault`).join('\n')
  t.is(Number(match[2]), rest.length)
})

test.serial('on a reconnect, AWS IoT closing before CONNACK is retried for as long as it goes on: an outage behind it is not a policy refusal', async (t) => {
  // Before, three such closes in a row were ERR_NOT_AUTHORIZED for good: a back-end outage of
  // 6 s ended a service's subscriptions and rejected its queued commands (a trial found it).
  let backendDown = false
  // An unreachable back end makes the gateway drop the socket after CONNECT, as an outage would.
  const gw = await ownGateway(t, () => (backendDown ? { host: '127.0.0.1', port: 1 } : broker.tcpUrl))
  const clientId = uniqueClientId('blip')
  const pubsub = iotPubSub(t, { region: 'us-east-1', clientId, credentials: gw.newKeys(), reconnect: { minDelayMs: 200, maxDelayMs: 400 } }, gw)
  const topic = uniqueTopic('close-before-connack')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')

  backendDown = true
  gw.dropAll()
  const queued = pubsub.publish(topic, 'queued during the outage', { qos: 1 })
  // More than the three that used to be a refusal (AWS IoT's CONNECTs are a second apart).
  await waitFor(() => gw.connects.length === 6, 10_000, 'five connects closed before CONNACK')
  t.deepEqual(inbox.errors, [])
  const closes = disruptions.slice(1)
  t.true(closes.length >= 4, `${closes.length} closes reported`)
  for (const { error } of closes) {
    t.is(error.code, 'ERR_CONNECTION')
    t.regex(error.message, /^AWS IoT closed the connection after CONNECT without a CONNACK\. It accepted this client before, so this is taken for an outage or throttling, and retried; should it go on, check that the IoT policy attached to these credentials still allows iot:Connect on arn:aws:iot:us-east-1:<account-id>:client\//)
  }
  backendDown = false
  await waitFor(() => states.includes('Connected'), 5_000, 'the reconnect')
  await queued
  t.deepEqual(await inbox.take(1), ['queued during the outage'])
  await pubsub.publish(topic, 'after the outage', { qos: 1 })
  t.deepEqual(await inbox.take(2), ['queued during the outage', 'after the outage'])
  t.deepEqual(inbox.errors, [])
})

test.serial('on a reconnect, a reset before CONNACK is never taken for a policy refusal', async (t) => {
  // A back end that accepts and never answers: the client waits for its CONNACK while the
  // proxy in front of the gateway resets the connection.
  const silent = require('node:net').createServer((socket) => socket.on('error', () => {}))
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => silent.close())
  let backend = broker.tcpUrl
  const gw = await ownGateway(t, () => backend)
  const proxy = await startTcpProxy({ target: { host: '127.0.0.1', port: gw.port } })
  t.teardown(() => proxy.stop())
  const pubsub = iotPubSub(t, { region: 'us-east-1', credentials: gw.newKeys(), connectTimeout: 10_000, reconnect: FAST }, { ...gw, url: proxy.url('wss', '/mqtt'), ca: gw.ca })
  const topic = uniqueTopic('reset-before-connack')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  const states = recordEvents(pubsub, 'ConnectionStateChange')

  backend = { host: '127.0.0.1', port: silent.address().port }
  proxy.drop()
  const resets = 5 // more than the streak of closes that would be a refusal
  for (let connects = 2; connects < 2 + resets; connects++) {
    await waitFor(() => gw.connects.length === connects, 5_000, `CONNECT ${connects}`)
    proxy.drop({ reset: true })
  }
  backend = broker.tcpUrl
  await waitFor(() => states.includes('Connected'), 10_000, 'the reconnect')
  t.deepEqual(inbox.errors, [])
  t.is(states.filter((s) => s === 'ConnectionDisrupted').length, 1 + resets)
  await pubsub.publish(topic, 'after the resets', { qos: 1 })
  t.is((await inbox.take(1))[0], 'after the resets')
})

test.serial('keys rotated in the shared credentials file are read on the next reconnect', async (t) => {
  const gw = await ownGateway(t)
  const before = gw.newKeys()
  const env = cleanAwsEnvironment(t)
  const writeProfile = (keys) =>
    fs.writeFileSync(env.AWS_SHARED_CREDENTIALS_FILE, `[default]\naws_access_key_id = ${keys.accessKeyId}\naws_secret_access_key = ${keys.secretAccessKey}\n`)
  writeProfile(before)
  const run = defaultChainSubscriber(t, gw, env)
  await printed(run, 'ready')
  // A rotation: the old key is revoked and the file now holds a new one.
  gw.removeKey(before.accessKeyId)
  const after = gw.newKeys()
  writeProfile(after)
  gw.dropAll()
  await printed(run, 'received', 10_000)
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  t.notRegex(run.stdout, /error/)
  t.deepEqual(upgradesBy(before.accessKeyId, gw).map((u) => u.status), [101])
  t.deepEqual(upgradesBy(after.accessKeyId, gw).map((u) => u.status), [101])
})

test.serial('a shared credentials file missing during a reconnect (being rewritten) is retried: the subscription survives', async (t) => {
  const gw = await ownGateway(t)
  const keys = gw.newKeys()
  const env = cleanAwsEnvironment(t)
  fs.writeFileSync(env.AWS_SHARED_CREDENTIALS_FILE, `[default]\naws_access_key_id = ${keys.accessKeyId}\naws_secret_access_key = ${keys.secretAccessKey}\n`)
  const run = defaultChainSubscriber(t, gw, env)
  await printed(run, 'ready')
  // A tool that rewrites the file by deleting it first: the chain finds no credentials at all.
  const moved = `${env.AWS_SHARED_CREDENTIALS_FILE}.moved`
  fs.renameSync(env.AWS_SHARED_CREDENTIALS_FILE, moved)
  gw.dropAll()
  await printed(run, 'disrupted ERR_CREDENTIALS', 10_000)
  fs.renameSync(moved, env.AWS_SHARED_CREDENTIALS_FILE)
  await printed(run, 'received', 10_000)
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  t.notRegex(run.stdout, /error/)
  t.deepEqual(upgradesBy(keys.accessKeyId, gw).map((u) => u.status), [101, 101])
})

// ------------------------------------------------------------------------------ options

test('the region comes from an AWS IoT endpoint host; a custom domain needs the region option', (t) => {
  const fromHost = new PubSub({ endpoint: 'wss://a1b2c3-ats.iot.ap-northeast-1.amazonaws.com/mqtt' })
  t.teardown(() => fromHost.close())
  const bareHost = new PubSub({ aws_pubsub_endpoint: 'a1b2c3-ats.iot.cn-north-1.amazonaws.com.cn', aws_pubsub_region: 'cn-north-1' })
  t.teardown(() => bareHost.close())
  // A fully qualified host (the DNS root's trailing dot) names its region as well.
  const rooted = new PubSub({ endpoint: 'a1b2c3-ats.iot.eu-west-3.amazonaws.com.' })
  t.teardown(() => rooted.close())
  const mismatch = t.throws(() => new PubSub({ endpoint: 'a1b2c3-ats.iot.eu-west-3.amazonaws.com.', region: 'us-east-1' }))
  t.regex(mismatch.message, /is in 'eu-west-3'/)
  const error = t.throws(() => new PubSub({ endpoint: 'wss://iot.example.com/mqtt' }))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.regex(error.message, /Cannot tell the AWS region from the endpoint host 'iot\.example\.com'.*pass the 'region' option/)
  const custom = new PubSub({ endpoint: 'wss://iot.example.com/mqtt', region: 'us-east-1' })
  t.teardown(() => custom.close())
})

test('options of the other provider, a non-wss endpoint, malformed static credentials and a promise of credentials throw', (t) => {
  const endpoint = 'wss://a1b2c3-ats.iot.us-east-1.amazonaws.com/mqtt'
  t.is(t.throws(() => new PubSub({ endpoint, username: 'u' })).code, 'ERR_INVALID_OPTION')
  t.is(t.throws(() => new PubSub({ endpoint: 'ws://a1b2c3-ats.iot.us-east-1.amazonaws.com/mqtt' })).code, 'ERR_INVALID_ENDPOINT')
  t.is(t.throws(() => new PubSub({ endpoint: 'mqtts://a1b2c3-ats.iot.us-east-1.amazonaws.com' })).code, 'ERR_INVALID_ENDPOINT')
  const error = t.throws(() => new PubSub({ endpoint, credentials: { accessKeyId: 'AKIDX', secretAccessKey: '' } }))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.regex(error.message, /Option 'credentials': 'secretAccessKey' is empty/)
  const promised = t.throws(() => new PubSub({ endpoint, credentials: Promise.resolve({ accessKeyId: 'AKIDX', secretAccessKey: 'S' }) }))
  t.is(promised.code, 'ERR_INVALID_OPTION')
  t.regex(promised.message, /Option 'credentials' is a promise: pass the function that returns it/)
  const generic = require('../mqtt.js')
  const mqttError = t.throws(() => new generic.PubSub({ endpoint: 'ws://127.0.0.1:1', credentials: () => ({}) }))
  t.regex(mqttError.message, /Unknown option 'credentials' for the generic MQTT provider/)
})

test('a region option that contradicts the endpoint host throws; one that agrees, or a custom domain, is used', (t) => {
  const endpoint = 'wss://a1b2c3-ats.iot.us-east-1.amazonaws.com/mqtt'
  const error = t.throws(() => new PubSub({ endpoint, region: 'eu-west-1' }))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.regex(error.message, /Option 'region' is 'eu-west-1' but the endpoint host 'a1b2c3-ats\.iot\.us-east-1\.amazonaws\.com' is in 'us-east-1'.*set it to 'us-east-1'/)
  const alias = t.throws(() => new PubSub({ aws_pubsub_endpoint: 'a1b2c3-ats.iot.cn-north-1.amazonaws.com.cn', aws_pubsub_region: 'us-east-1' }))
  t.is(alias.code, 'ERR_INVALID_OPTION')
  t.regex(t.throws(() => new PubSub({ endpoint, region: 'useast1' })).message, /must be an AWS region name like 'us-east-1'/)
  for (const options of [{ endpoint, region: 'us-east-1' }, { endpoint: 'wss://iot.example.com/mqtt', region: 'eu-west-1' }]) {
    const pubsub = new PubSub(options)
    t.teardown(() => pubsub.close())
  }
})

test('an option and its Amplify v5 alias given with different values throw; the same value twice is fine', (t) => {
  const endpoint = 'wss://iot.example.com/mqtt'
  const regions = t.throws(() => new PubSub({ endpoint, region: 'us-east-1', aws_pubsub_region: 'eu-west-1' }), { code: 'ERR_INVALID_OPTION' })
  t.regex(regions.message, /'region' and 'aws_pubsub_region' are one setting .* different values: give only one/)
  const endpoints = t.throws(() => new PubSub({ endpoint, aws_pubsub_endpoint: 'wss://other.example.com/mqtt', region: 'us-east-1' }), {
    code: 'ERR_INVALID_OPTION',
  })
  t.regex(endpoints.message, /'endpoint' and 'aws_pubsub_endpoint' are one setting/)
  const same = new PubSub({ endpoint, aws_pubsub_endpoint: endpoint, region: 'us-east-1', aws_pubsub_region: 'us-east-1' })
  t.teardown(() => same.close())
})

test('an AWS IoT endpoint path other than /mqtt throws ERR_INVALID_ENDPOINT', (t) => {
  for (const path of ['/other', '/mqtt/', '/ws']) {
    const error = t.throws(() => new PubSub({ endpoint: `wss://a1b2c3-ats.iot.us-east-1.amazonaws.com${path}` }))
    t.is(error.code, 'ERR_INVALID_ENDPOINT')
    t.true(error.message.includes(`AWS IoT takes MQTT over WebSockets at the path /mqtt only, not '${path}'`), error.message)
  }
})

test('an endpoint that is already a presigned URL throws; a query of its own is kept and signed', async (t) => {
  const keys = gateway.newKeys()
  // Pasted from a browser's network panel or a log: each connect would add a second signature,
  // and AWS IoT answers such a query with 403, which reads as bad keys or a bad clock.
  const pasted = `${gateway.url}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDPASTED%2F20240101%2Fus-east-1%2Fiotdevicegateway%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-SignedHeaders=host&X-Amz-Signature=abc&X-Amz-Security-Token=TOKENPASTED`
  const error = t.throws(() => new PubSub({ endpoint: pasted, ca: gateway.ca, region: 'us-east-1', credentials: keys }))
  t.is(error.code, 'ERR_INVALID_ENDPOINT')
  t.regex(error.message, /already carries a SigV4 signature \(X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-SignedHeaders, X-Amz-Signature, X-Amz-Security-Token\)/)
  t.true(error.message.includes(`pass the URL without it ('${gateway.url}')`), error.message)
  t.notRegex(error.message, /AKIDPASTED|TOKENPASTED/)
  // Another query parameter is the endpoint's own: it is signed with the rest.
  const pubsub = iotPubSub(t, { endpoint: `${gateway.url}?tenant=a%2Fb`, region: 'us-east-1', credentials: keys })
  await pubsub.publish(uniqueTopic('own-query'), 1, { qos: 1 })
  const [upgrade] = upgradesBy(keys.accessKeyId)
  t.is(upgrade.status, 101, upgrade.reason)
  t.true(upgrade.rawQuery.startsWith('tenant=a%2Fb&X-Amz-Algorithm='), upgrade.rawQuery)
})

test('a clientId over 128 bytes (AWS IoT\'s fixed limit) throws for AWS IoT only', (t) => {
  const endpoint = 'wss://a1b2c3-ats.iot.us-east-1.amazonaws.com/mqtt'
  const error = t.throws(() => new PubSub({ endpoint, clientId: 'é'.repeat(65) }))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.is(error.message, "Option 'clientId' is 130 bytes (UTF-8) but AWS IoT allows at most 128")
  const longest = new PubSub({ endpoint, clientId: 'c'.repeat(128) })
  t.teardown(() => longest.close())
  const generic = new (require('../mqtt.js').PubSub)({ endpoint: 'ws://127.0.0.1:1/mqtt', clientId: 'c'.repeat(200) })
  t.teardown(() => generic.close())
})

test('an https:// endpoint, port 8883 or a user:password@ in an AWS IoT URL throws a message that says what to use', (t) => {
  const https = t.throws(() => new PubSub({ endpoint: 'https://a1b2c3-ats.iot.us-east-1.amazonaws.com' }))
  t.is(https.code, 'ERR_INVALID_ENDPOINT')
  t.regex(https.message, /AWS IoT takes MQTT over WebSockets, not https:\/\/: use 'wss:\/\/a1b2c3-ats\.iot\.us-east-1\.amazonaws\.com\/mqtt'/)
  // 8883 is AWS IoT's MQTT over TLS port (the device SDKs' default), not WebSockets.
  const tlsPort = t.throws(() => new PubSub({ endpoint: 'a1b2c3-ats.iot.us-east-1.amazonaws.com:8883' }))
  t.is(tlsPort.code, 'ERR_INVALID_ENDPOINT')
  t.regex(tlsPort.message, /port 443 only, not 8883: use 'wss:\/\/a1b2c3-ats\.iot\.us-east-1\.amazonaws\.com\/mqtt'/)
  const userInfo = t.throws(() => new PubSub({ endpoint: 'wss://AKIDUSERINFO:SECRETUSERINFO@a1b2c3-ats.iot.us-east-1.amazonaws.com/mqtt' }))
  t.is(userInfo.code, 'ERR_INVALID_ENDPOINT')
  t.regex(userInfo.message, /AWS IoT takes no user name or password in the URL.*'credentials' option or the AWS default chain/)
  t.false(/AKIDUSERINFO|SECRETUSERINFO|username/.test(userInfo.message), userInfo.message)
  t.true(userInfo.message.includes('wss://***@a1b2c3-ats'), userInfo.message)
  // The bare host form (`aws iot describe-endpoint` prints no scheme), and a secret with a '/'
  // (AWS secret keys have them), which URL parsing reads as the end of the host.
  for (const endpoint of ['AKIDUSERINFO:SECRETUSERINFO@a1b2c3-ats.iot.us-east-1.amazonaws.com', 'wss://AKIDUSERINFO:SECRET/USERINFO@a1b2c3-ats.iot.us-east-1.amazonaws.com/mqtt']) {
    const error = t.throws(() => new PubSub({ endpoint }), { code: 'ERR_INVALID_ENDPOINT' })
    t.false(/AKIDUSERINFO|USERINFO/.test(error.message), error.message)
    t.true(error.message.includes('***@a1b2c3-ats'), error.message)
  }
})

test("the Amplify docs' placeholder endpoint throws, saying it is one and where the real endpoint comes from", (t) => {
  // The URL parser said "invalid international domain name" for the first; the second failed at
  // each connect as a host name that does not resolve.
  for (const [endpoint, placeholder] of [
    ['wss://xxxxxxxxxxxxx-ats.iot.<YOUR-AWS-REGION>.amazonaws.com/mqtt', '<YOUR-AWS-REGION>'],
    ['wss://xxxxxxxxxxxxx-ats.iot.us-east-1.amazonaws.com/mqtt', 'xxxxxxxxxxxxx-ats.iot.us-east-1.amazonaws.com'],
    ['xxxxxxxxxxxxx.iot.eu-west-1.amazonaws.com', 'xxxxxxxxxxxxx.iot.eu-west-1.amazonaws.com'],
  ]) {
    const error = t.throws(() => new PubSub({ endpoint }), { code: 'ERR_INVALID_ENDPOINT' })
    t.true(
      error.message.endsWith(
        `: '${placeholder}' is a placeholder from an example: replace it with your account's endpoint, the host ` +
          "`aws iot describe-endpoint --endpoint-type iot:Data-ATS` prints (e.g. 'a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com')",
      ),
      error.message,
    )
  }
})

/** In a child process with no AWS credentials anywhere, an IoT PubSub on `endpoint` publishes once: resolves to its error. */
async function noCredentialsFailure(t, endpoint) {
  const run = runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(ROOT)})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, region: 'us-east-1', reconnect: false })
     pubsub.publish('aws-iot/not-aws', 'x')
       .then(() => console.log('published'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))
       .finally(() => pubsub.close())`,
    { ...cleanAwsEnvironment(t), ENDPOINT: endpoint },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  return JSON.parse(run.stdout)
}

// The IoT entry point works with a host that is not AWS's (a custom domain, a gateway), so it
// cannot refuse one when constructed; but a broker given to it by mistake (it is the package's
// main entry point) fails on the AWS credentials it needs, which must say so.
test('with no credentials, a host that is not an AWS host: ERR_CREDENTIALS says this entry point is for AWS IoT and names native-pubsub/mqtt', async (t) => {
  const result = await noCredentialsFailure(t, 'wss://broker.example.com/mqtt')
  t.is(result.code, 'ERR_CREDENTIALS')
  t.regex(result.message, /^No AWS credentials found: pass the 'credentials' option/)
  t.regex(
    result.message,
    / The endpoint's host 'broker\.example\.com' is not an AWS host: this entry point \(require\('native-pubsub'\) and 'native-pubsub\/iot'\) signs every connection with AWS credentials, for AWS IoT \(on a custom domain too\); for any other MQTT broker use require\('native-pubsub\/mqtt'\)$/,
  )
  // An AWS host is not told so (no connection is made: the credentials fail first).
  const aws = await noCredentialsFailure(t, 'wss://a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com/mqtt')
  t.is(aws.code, 'ERR_CREDENTIALS')
  t.notRegex(aws.message, /native-pubsub\/mqtt|not an AWS host/)
})

test('an expiration given in seconds since 1970 is read as seconds, for static credentials and a function', async (t) => {
  const keys = gateway.newKeys()
  const inAnHour = Math.floor(Date.now() / 1000) + 3600
  const fixed = iotPubSub(t, { region: 'us-east-1', credentials: { ...keys, expiration: inAnHour } })
  await fixed.publish(uniqueTopic('seconds'), 1, { qos: 1 })
  const fromFunction = iotPubSub(t, { region: 'us-east-1', credentials: async () => ({ ...keys, expiration: inAnHour + 0.5 }) })
  await fromFunction.publish(uniqueTopic('seconds'), 1, { qos: 1 })
  // A minute ago in seconds is expired a minute ago, not 56 years ahead or behind.
  const stale = iotPubSub(t, { region: 'us-east-1', credentials: { ...keys, expiration: Math.floor(Date.now() / 1000) - 60 } })
  const error = await t.throwsAsync(stale.publish(uniqueTopic('seconds'), 1))
  t.is(error.code, 'ERR_CREDENTIALS')
  const ago = Number(/expired (\d+) s ago/.exec(error.message)?.[1])
  t.true(ago >= 59 && ago < 120, error.message)
})

// ------------------------------------------------------------------------ no secret leaks

test('no key id, secret or token appears in any error, event, warning or log line', async (t) => {
  const secret = { accessKeyId: 'AKIDLEAKCANARY1', secretAccessKey: 'SECRETLEAKCANARY/1', sessionToken: 'TOKENLEAKCANARY+1' }
  gateway.addKey('AKIDLEAKCANARY2', 'SECRETLEAKCANARY2', { sessionToken: 'TOKENLEAKCANARY2' })
  const refusedId = `refused-canary-${process.pid}`
  gateway.refuseClientId(refusedId)
  // Every failure path, each in a child process whose output we read whole.
  const scenarios = [
    { region: 'us-east-1', credentials: secret }, // unknown key
    { region: 'us-east-1', credentials: { accessKeyId: 'AKIDLEAKCANARY2', secretAccessKey: 'SECRETLEAKCANARY/wrong', sessionToken: 'TOKENLEAKCANARY2' } },
    { region: 'eu-west-1', credentials: { accessKeyId: 'AKIDLEAKCANARY2', secretAccessKey: 'SECRETLEAKCANARY2', sessionToken: 'TOKENLEAKCANARY2' } },
    { region: 'us-east-1', clientId: refusedId, credentials: { accessKeyId: 'AKIDLEAKCANARY2', secretAccessKey: 'SECRETLEAKCANARY2', sessionToken: 'TOKENLEAKCANARY2' } },
    { region: 'us-east-1', credentials: { ...secret, expiration: 1 } }, // expired
    { region: 'us-east-1', credentials: 'FUNCTION' }, // a function returning a malformed value
    { region: 'us-east-1', credentials: { accessKeyId: 'AKIDLEAK CANARY', secretAccessKey: 'SECRETLEAKCANARY3' } }, // bad option
    { endpoint: 'wss://127.0.0.1:1/mqtt?X-Amz-Credential=AKIDLEAKCANARY4&X-Amz-Signature=SECRETLEAKCANARY4', region: 'us-east-1', credentials: secret, reconnect: false },
  ]
  const run = runScript(
    t,
    `const { PubSub, Hub } = require(${JSON.stringify(ROOT)})
     const seen = []
     Hub.listen('pubsub', (capsule) => seen.push(capsule.payload.message, capsule.payload.data.connectionState))
     async function scenario(options) {
       if (options.credentials === 'FUNCTION') {
         options.credentials = async () => ({ accessKeyId: 'AKIDLEAKCANARY5', secretAccessKey: { nested: 'SECRETLEAKCANARY5' }, sessionToken: 'TOKENLEAKCANARY5' })
       }
       let pubsub
       try {
         pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA, ...options })
       } catch (error) {
         return seen.push(String(error), error.stack, JSON.stringify(error))
       }
       pubsub.on('ConnectionStateChange', (state) => seen.push(state))
       // No error callback: the failure is also printed as a process warning.
       pubsub.subscribe('aws-iot/leak').subscribe(() => {})
       await pubsub.publish('aws-iot/leak', 'x', { qos: 1 }).catch((error) => seen.push(String(error), error.stack, JSON.stringify(error)))
       await pubsub.close()
     }
     ;(async () => {
       for (const options of JSON.parse(process.env.SCENARIOS)) await scenario(options)
       console.log(JSON.stringify(seen))
     })()`,
    { ENDPOINT: gateway.url, CA: gateway.ca, SCENARIOS: JSON.stringify(scenarios), AWS_EC2_METADATA_DISABLED: 'true' },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  const seen = JSON.parse(run.stdout)
  const everything = `${run.stdout}\n${run.stderr}`
  // The scenarios did fail in the ways meant (so the check below looks at real messages).
  for (const expected of [/access key/, /iot:Connect/, /signed for 'eu-west-1'/, /expired/, /'secretAccessKey' must be a string/, /letters and digits/, /X-Amz-Credential=\*\*\*/]) {
    t.regex(everything, expected)
  }
  t.true(seen.length > scenarios.length * 2)
  t.notRegex(everything, /LEAKCANARY/)
  t.notRegex(everything, /LEAK CANARY/)
})

test.serial("what the credentials function throws reaches messages, events and warnings with every secret the process knows of masked", async (t) => {
  // Before: "ERR_CREDENTIALS The credentials function failed: vault said no for key <the secret>",
  // in the observer's error, the publish rejection, the connectionDisrupted event and the warning.
  const gw = await ownGateway(t)
  const canaries = {
    envSecret: 'env-secret-CANARY-1',
    envToken: 'env-token-CANARY-2',
    fileSecret: 'file-secret-CANARY-3',
    fileToken: 'file-token-CANARY-4',
    staticSecret: 'static-secret-CANARY-5',
    staticToken: 'static/token+CANARY=6',
    fetchedSecret: 'fetched-secret-CANARY-7',
    fetchedToken: 'fetched-token-CANARY-8',
  }
  // Shaped like an AWS secret access key and session token, known to nobody: masked by shape.
  const shaped = ['wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'IQoJb3JpZ2luX2VjEHkaCXVzLWVhc3QtMSJHMEUCIQDexampletoken']
  gw.addKey('AKIDFETCHEDONE', canaries.fetchedSecret, { sessionToken: canaries.fetchedToken })
  const env = cleanAwsEnvironment(t)
  fs.writeFileSync(env.AWS_SHARED_CREDENTIALS_FILE, `[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = ${canaries.fileSecret}\naws_session_token = ${canaries.fileToken}\n`)
  const run = runScript(
    t,
    `const util = require('node:util')
     const { PubSub } = require(${JSON.stringify(ROOT)})
     const canaries = JSON.parse(process.env.CANARIES)
     const shaped = JSON.parse(process.env.SHAPED)
     const everyone = () => [...Object.values(canaries), ...shaped].join(' ')
     const seen = []
     const record = (where, error) => seen.push({ where, code: error.code, message: error.message, string: String(error), inspected: util.inspect(error, { depth: 5 }), json: JSON.stringify(error), hasCause: 'cause' in error })
     process.on('warning', (warning) => seen.push({ where: 'warning', inspected: util.inspect(warning, { depth: 5 }) }))
     const options = { endpoint: process.env.ENDPOINT, ca: process.env.CA, region: 'us-east-1', reconnect: { minDelayMs: 50, maxDelayMs: 200 } }
     // Static credentials given to one instance are secrets for all of them.
     new PubSub({ ...options, credentials: { accessKeyId: 'AKIDSTATIC', secretAccessKey: canaries.staticSecret, sessionToken: canaries.staticToken } }).close()

     // First connects failing: thrown, rejected, and a result whose getter throws.
     async function firstConnect(where, credentials) {
       const pubsub = new PubSub({ ...options, credentials })
       pubsub.subscribe('aws-iot/canary').subscribe({ error: (error) => record(where + ' observer', error) })
       pubsub.subscribe('aws-iot/canary').subscribe(() => {}) // no error callback: a warning
       await pubsub.publish('aws-iot/canary', 1).catch((error) => record(where + ' publish', error))
       await pubsub.close()
     }

     // Reconnects failing after the function answered once, with and without a listener.
     function reconnecting(where, listen) {
       let calls = 0
       const pubsub = new PubSub({ ...options, credentials: async () => {
         if (++calls === 1) return { accessKeyId: 'AKIDFETCHEDONE', secretAccessKey: canaries.fetchedSecret, sessionToken: canaries.fetchedToken }
         throw new Error('refresh failed for ' + everyone())
       } })
       const failed = new Promise((resolve) => {
         if (listen) pubsub.on('connectionDisrupted', ({ error }) => error.code === 'ERR_CREDENTIALS' && resolve(record(where + ' event', error)))
         else process.on('warning', (warning) => /ERR_CREDENTIALS/.test(warning.message) && resolve())
       })
       // A subscription keeps the instance (and the process) alive through the reconnects.
       pubsub.subscribe('aws-iot/canary').subscribe({ error: (error) => record(where + ' observer', error) })
       return { pubsub, failed, connected: pubsub.publish('aws-iot/canary', 1) }
     }

     ;(async () => {
       // Connected first: the credentials they fetched are secrets from then on.
       const listening = reconnecting('reconnect', true)
       const silent = reconnecting('reconnect-warning', false)
       await Promise.all([listening.connected, silent.connected])
       await firstConnect('thrown', () => { throw new Error('vault said no for key ' + everyone()) })
       await firstConnect('rejected', async () => { throw new TypeError('vault said no for key ' + everyone()) })
       await firstConnect('getter', () => ({ accessKeyId: 'AKIDX', get secretAccessKey() { throw new Error('getter said ' + everyone()) } }))
       console.log('connected')
       await Promise.all([listening.failed, silent.failed])
       await Promise.all([listening.pubsub.close(), silent.pubsub.close()])
       console.log(JSON.stringify(seen))
     })()`,
    {
      ...env,
      ENDPOINT: gw.url,
      CA: gw.ca,
      AWS_SECRET_ACCESS_KEY: canaries.envSecret,
      AWS_SESSION_TOKEN: canaries.envToken,
      CANARIES: JSON.stringify(canaries),
      SHAPED: JSON.stringify(shaped),
    },
  )
  await printed(run, 'connected', 15_000)
  gw.dropAll()
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  const seen = JSON.parse(run.stdout.split('\n').filter(Boolean).pop())
  const redacted = Array(Object.keys(canaries).length + shaped.length).fill('[redacted]').join(' ')
  const errors = seen.filter((s) => s.where !== 'warning')
  t.deepEqual(
    errors.map((s) => s.where),
    ['thrown observer', 'thrown publish', 'rejected observer', 'rejected publish', 'getter observer', 'getter publish', 'reconnect event'],
  )
  for (const error of errors) {
    t.is(error.code, 'ERR_CREDENTIALS')
    t.false(error.hasCause, `${error.where}: what the function threw is not kept as the cause`)
  }
  t.is(errors[0].message, `The credentials function failed: vault said no for key ${redacted}`)
  t.is(errors[3].string, `Error: The credentials function failed: vault said no for key ${redacted}`)
  t.is(errors[5].message, `The credentials function's result cannot be read: getter said ${redacted}`)
  t.is(errors[6].message, `The credentials function failed: refresh failed for ${redacted}`)
  const warnings = seen.filter((s) => s.where === 'warning').map((s) => s.inspected)
  t.true(warnings.some((w) => w.includes(`vault said no for key ${redacted}`)), warnings.join('\n'))
  t.true(warnings.some((w) => w.includes(`refresh failed for ${redacted}`)), warnings.join('\n'))
  const everything = `${run.stdout}\n${run.stderr}`
  for (const secret of [...Object.values(canaries), ...shaped, 'static%2Ftoken%2BCANARY%3D6']) t.false(everything.includes(secret), `${secret} leaked`)
  t.notRegex(everything, /CANARY/)
})

test('a credentials function throwing a value with no string form fails with ERR_CREDENTIALS instead of ending the process', async (t) => {
  // Before: "TypeError: Cannot convert object to primitive value" from turning it into text, an
  // unhandled rejection that ended the process.
  const run = runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(ROOT)})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA, region: 'us-east-1', credentials: () => { throw Object.create(null) } })
     pubsub.publish('aws-iot/no-string-form', 1)
       .then(() => console.log('published'), (e) => console.log(e.code, e.message))
       .finally(() => pubsub.close())`,
    { ENDPOINT: gateway.url, CA: gateway.ca, AWS_EC2_METADATA_DISABLED: 'true' },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  t.is(run.stdout.trim(), 'ERR_CREDENTIALS The credentials function failed: an object without keys')
})
