'use strict'
// The 'proxy' option: every transport (ws, wss, mqtt, mqtts) and both providers reach the
// broker through an HTTP proxy's CONNECT tunnel, as networks whose only way out is their proxy
// require; the proxy's refusals are told apart, and its password never shown.
const fs = require('node:fs')
const net = require('node:net')
const test = require('ava')
const { PubSub: MqttPubSub } = require('../mqtt.js')
const { PubSub: IotPubSub } = require('../index.js')
const { useMosquitto, useTlsMosquitto, freePort } = require('./helpers/mosquitto.js')
const { useIotGateway } = require('./helpers/iot-gateway.js')
const { startHttpProxy } = require('./helpers/http-proxy.js')
const { openPubSub, topicNamer, listen, recordEvents, sleep, fakeServer, tcpServer } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('http-proxy')
const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: 'us-east-1', broker: broker.tcpUrl }))

const tls = useTlsMosquitto(test)

/** Subscribes, publishes at QoS 1 and receives through `pubsub`. */
async function roundTrip(t, pubsub) {
  const topic = uniqueTopic('round-trip')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  await pubsub.publish(topic, { through: 'the proxy' }, { qos: 1 })
  const [message] = await inbox.take(1)
  t.is(message.through, 'the proxy')
}

const hostPort = (url) => new URL(url.replace(/^(ws|mqtt)s?:/, 'http:')).host

for (const scheme of ['ws', 'mqtt', 'wss', 'mqtts']) {
  test(`${scheme}:// goes through the proxy's CONNECT tunnel`, async (t) => {
    const proxy = await startHttpProxy(t)
    const endpoint = {
      ws: () => broker.wsUrl,
      mqtt: () => broker.tcpUrl,
      wss: () => tls.wss,
      mqtts: () => tls.mqtts,
    }[scheme]()
    const pubsub = openPubSub(t, { endpoint, proxy: proxy.url, ca: scheme.endsWith('s') ? tls.certs.caPem : undefined })
    await roundTrip(t, pubsub)
    t.deepEqual(
      proxy.requests.map((r) => r.target),
      [hostPort(endpoint)],
      'one tunnel, to the broker (TLS and the WebSocket upgrade inside it, for the broker\'s name)',
    )
  })
}

test('the AWS IoT provider signs its connection as usual through the proxy', async (t) => {
  const proxy = await startHttpProxy(t)
  const keys = gateway.newKeys()
  const pubsub = new IotPubSub({ endpoint: gateway.url, ca: gateway.ca, region: 'us-east-1', credentials: keys, proxy: proxy.url })
  t.teardown(() => pubsub.close())
  await roundTrip(t, pubsub)
  t.deepEqual(proxy.requests.map((r) => r.target), [`127.0.0.1:${gateway.port}`])
  t.is(gateway.upgrades.filter((u) => u.accessKeyId === keys.accessKeyId)[0].status, 101)
})

test('user name and password in the proxy URL are sent as Basic credentials, percent-decoded', async (t) => {
  const proxy = await startHttpProxy(t, { credentials: 'svc:p@ss:word' })
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, proxy: `http://svc:${encodeURIComponent('p@ss:word')}@127.0.0.1:${proxy.port}` })
  await roundTrip(t, pubsub)
  t.is(proxy.requests[0].authorization, `Basic ${Buffer.from('svc:p@ss:word').toString('base64')}`)
})

test('a proxy that wants credentials (407) fails everything with ERR_NOT_AUTHORIZED, not retried, its password never shown', async (t) => {
  const proxy = await startHttpProxy(t, { credentials: 'svc:right' })
  for (const [url, says] of [
    [proxy.url, /wants a user name and password \(HTTP 407\): give them in the 'proxy' URL/],
    [`http://svc:Wr0ng-S3cret@127.0.0.1:${proxy.port}`, /refused the user name or password in the 'proxy' URL \(HTTP 407\)/],
  ]) {
    const pubsub = openPubSub(t, { endpoint: broker.wsUrl, proxy: url, reconnect: { minDelayMs: 50, maxDelayMs: 50 } })
    const disruptions = recordEvents(pubsub, 'connectionDisrupted')
    const before = proxy.requests.length
    const error = await t.throwsAsync(pubsub.publish(uniqueTopic('407'), 'x', { qos: 1 }))
    t.is(error.code, 'ERR_NOT_AUTHORIZED')
    t.regex(error.message, says)
    t.true(error.message.includes(`http://127.0.0.1:${proxy.port}`), error.message)
    t.false(error.message.includes('Wr0ng-S3cret'), error.message)
    await sleep(300)
    t.is(proxy.requests.length - before, 1, 'not retried')
    t.deepEqual(disruptions, [])
  }
})

test('a proxy that forbids the destination (403) is ERR_NOT_AUTHORIZED naming it; one that cannot reach it (502) is retried', async (t) => {
  const forbidding = await startHttpProxy(t, { refuseWith: 403 })
  const forbidden = openPubSub(t, { endpoint: broker.wsUrl, proxy: forbidding.url })
  const error = await t.throwsAsync(forbidden.publish(uniqueTopic('403'), 'x', { qos: 1 }))
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.is(error.message, `Not authorized: The proxy ${forbidding.url} does not allow connections to ${hostPort(broker.wsUrl)} (HTTP 403)`)

  const proxy = await startHttpProxy(t)
  const unreachable = `ws://127.0.0.1:${await freePort()}/mqtt`
  const pubsub = openPubSub(t, { endpoint: unreachable, proxy: proxy.url, reconnect: { minDelayMs: 50, maxDelayMs: 50 } })
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  pubsub.subscribe(uniqueTopic('502')).subscribe({ error: () => {} })
  await sleep(500)
  t.true(disruptions.length >= 2, `retried (${disruptions.length} disruptions)`)
  t.is(disruptions[0].error.code, 'ERR_CONNECTION')
  t.regex(disruptions[0].error.message, new RegExp(`The proxy ${proxy.url} could not open a connection to ${hostPort(unreachable)} \\(HTTP 502\\)`))
})

test('an https:// proxy is reached over TLS, trusted as the broker is: an untrusted one fails for good', async (t) => {
  const proxy = await startHttpProxy(t, { tls: { cert: fs.readFileSync(tls.certs.certFile, 'utf8'), key: fs.readFileSync(tls.certs.keyFile, 'utf8') } })
  await roundTrip(t, openPubSub(t, { endpoint: broker.wsUrl, proxy: proxy.url, ca: tls.certs.caPem }))
  const untrusting = openPubSub(t, { endpoint: broker.wsUrl, proxy: proxy.url, reconnect: { minDelayMs: 50, maxDelayMs: 50 } })
  const [requestsBefore, before] = [proxy.requests.length, proxy.accepted]
  const error = await t.throwsAsync(untrusting.publish(uniqueTopic('untrusted'), 'x', { qos: 1 }))
  t.is(error.code, 'ERR_CONNECTION')
  t.true(error.message.startsWith(`TLS to the proxy ${proxy.url} failed: `), error.message)
  await sleep(300)
  t.is(proxy.requests.length, requestsBefore, 'no CONNECT went over the untrusted TLS')
  t.is(proxy.accepted - before, 1, 'not retried')
})

test('behind a proxy, errors blame the proxy where it may be the cause, not the broker port', async (t) => {
  const proxyAt = (port) => `http://127.0.0.1:${port}`
  // Takes the connection and never answers CONNECT.
  const silent = await fakeServer(t, null)
  const silentUrl = silent.replace('mqtt://', 'http://')
  const timedOut = openPubSub(t, { endpoint: broker.wsUrl, proxy: silentUrl, reconnect: false, connectTimeout: 500 })
  const timeout = await t.throwsAsync(timedOut.publish(uniqueTopic('silent'), 'x'))
  t.is(timeout.code, 'ERR_CONNECT_TIMEOUT')
  t.true(timeout.message.endsWith(`through the proxy ${silentUrl}, and that the proxy answers`), timeout.message)
  // A login page's redirect.
  const redirecting = await tcpServer(t, (socket) => socket.once('data', () => socket.end('HTTP/1.1 302 Found\r\nLocation: http://login.example/\r\nContent-Length: 0\r\n\r\n')))
  const redirected = await t.throwsAsync(openPubSub(t, { endpoint: broker.wsUrl, proxy: proxyAt(redirecting), reconnect: false }).publish(uniqueTopic('302'), 'x'))
  t.is(redirected.message, `The proxy ${proxyAt(redirecting)} answered CONNECT to ${hostPort(broker.wsUrl)} with a redirect (HTTP 302): it wants something else first (a login page, a captive portal), or is no HTTP proxy`)
  // Opens the tunnel, then ends it (a destination it does not allow, in effect).
  const ending = await tcpServer(t, (socket) => socket.once('data', () => socket.end('HTTP/1.1 200 Connection Established\r\n\r\n')))
  const ended = await t.throwsAsync(openPubSub(t, { endpoint: broker.wsUrl, proxy: proxyAt(ending), reconnect: false }).publish(uniqueTopic('200-then-close'), 'x'))
  t.is(ended.code, 'ERR_CONNECTION')
  t.true(ended.message.includes(`this went through the proxy ${proxyAt(ending)}, which may have ended the tunnel`), ended.message)
  t.false(ended.message.includes('is it a plain WebSocket port'), ended.message)
})

test('a server that echoes the request instead of answering CONNECT: its answer, credentials and all, is not quoted', async (t) => {
  const echo = net.createServer((socket) => {
    let request = ''
    socket.on('error', () => {})
    socket.on('data', (chunk) => {
      request += chunk
      if (request.includes('\r\n\r\n')) socket.write(`${request.replace(/\r\n\r\n$/, '\r\n')}X-Pad: ${'a'.repeat(5_000)}\r\n`)
    })
  })
  await new Promise((resolve) => echo.listen(0, '127.0.0.1', resolve))
  t.teardown(() => echo.close())
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, proxy: `http://svc:Pr0xy-S3cret@127.0.0.1:${echo.address().port}`, reconnect: false })
  const error = await t.throwsAsync(pubsub.publish(uniqueTopic('echo'), 'x'))
  t.is(error.code, 'ERR_CONNECTION')
  t.is(error.message, `The proxy http://127.0.0.1:${echo.address().port} did not answer CONNECT as an HTTP proxy does (is it an HTTP proxy's port?)`)
})

test("an empty proxy (HTTPS_PROXY='' in the environment) is no proxy", async (t) => {
  await roundTrip(t, openPubSub(t, { endpoint: broker.wsUrl, proxy: '' }))
})

test('a proxy that is not there is ERR_CONNECTION naming the proxy', async (t) => {
  const proxyUrl = `http://127.0.0.1:${await freePort()}`
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, proxy: proxyUrl, reconnect: false })
  const error = await t.throwsAsync(pubsub.publish(uniqueTopic('no-proxy'), 'x', { qos: 1 }))
  t.is(error.code, 'ERR_CONNECTION')
  t.true(error.message.includes(`Connection to the proxy ${proxyUrl} failed`), error.message)
})

test('a proxy option that cannot be used throws from the constructor, without its password', (t) => {
  for (const [proxy, says] of [
    ['proxy.example.com:3128', /has no scheme: give its URL, e.g. 'http:\/\/proxy.example.com:3128'/],
    ['socks5://127.0.0.1:1080', /only HTTP proxies/],
    ['http://user:S3CRET@127.0.0.1:3128/path', /has a path or query/],
    [3128, /must be a string/],
  ]) {
    const error = t.throws(() => new MqttPubSub({ endpoint: broker.wsUrl, proxy }))
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.regex(error.message, says)
    t.false(error.message.includes('S3CRET'), error.message)
  }
})
