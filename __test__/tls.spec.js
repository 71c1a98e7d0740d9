'use strict'
// TLS (mqtts:// and wss://) is verified by default; a custom CA makes a private broker trusted.
const path = require('node:path')
const test = require('ava')
const { PubSub, TOPIC } = require('../mqtt.js')
const { startMosquitto, freePort } = require('./helpers/mosquitto.js')
const { makeCertificates } = require('./helpers/certificates.js')
const { openPubSub, runScript } = require('./helpers/pubsub.js')

const ROOT = path.join(__dirname, '..')

const tls = {}

test.before(async () => {
  tls.certs = makeCertificates()
  tls.mqttsPort = await freePort()
  tls.wssPort = await freePort()
  const files = [`certfile ${tls.certs.certFile}`, `keyfile ${tls.certs.keyFile}`]
  tls.broker = await startMosquitto({
    lines: [
      `listener ${tls.mqttsPort} 127.0.0.1`,
      'protocol mqtt',
      ...files,
      `listener ${tls.wssPort} 127.0.0.1`,
      'protocol websockets',
      'socket_domain ipv4',
      ...files,
    ],
  })
})

test.after.always(async () => {
  if (tls.broker) await tls.broker.stop()
  if (tls.certs) tls.certs.remove()
})

async function roundTrip(t, endpoint, ca) {
  const pubsub = openPubSub(t, { endpoint, ca })
  const topic = `tls/${Math.random().toString(36).slice(2)}`
  const received = new Promise((resolve, reject) => {
    const sub = pubsub.subscribe(topic).subscribe({ next: resolve, error: reject })
    sub.ready.then(() => pubsub.publish(topic, { secure: true }, { qos: 1 })).catch(reject)
  })
  const message = await received
  t.is(message.secure, true)
  t.is(message[TOPIC], topic)
}

test('mqtts:// with the broker\'s CA given as a PEM string round-trips', async (t) => {
  await roundTrip(t, `mqtts://127.0.0.1:${tls.mqttsPort}`, tls.certs.caPem)
})

test('wss:// with the broker\'s CA given as a Buffer round-trips', async (t) => {
  await roundTrip(t, `wss://127.0.0.1:${tls.wssPort}/mqtt`, Buffer.from(tls.certs.caPem))
})

for (const scheme of ['mqtts', 'wss']) {
  test(`${scheme}:// to a certificate no trusted CA signed fails with ERR_CONNECTION, naming the endpoint`, async (t) => {
    const port = scheme === 'mqtts' ? tls.mqttsPort : tls.wssPort
    const endpoint = `${scheme}://127.0.0.1:${port}/mqtt`
    const pubsub = openPubSub(t, { endpoint, connectTimeout: 5_000 })
    const error = await t.throwsAsync(pubsub.publish('tls/untrusted', 'x', { qos: 1 }))
    t.is(error.code, 'ERR_CONNECTION')
    t.true(error.message.includes(`127.0.0.1:${port}`), error.message)
    t.regex(error.message, /certificate|UnknownIssuer|tls/i)
    t.regex(error.message, /checked against the (OS trust store|bundled Mozilla roots)/)
  })
}

test('a ca option that holds no certificate is rejected at construction', (t) => {
  const error = t.throws(() => new PubSub({ endpoint: 'mqtts://127.0.0.1:1', ca: 'not a certificate' }))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.true(error.message.includes("'ca'"), error.message)
})

// ------------------------------------------------------------ the OS trust store and its fallback

/**
 * Publishes once over wss:// in a child process whose OS trust store is set by `env`
 * (SSL_CERT_FILE and SSL_CERT_DIR are what rustls-native-certs reads instead of the system's);
 * prints 'published' or the error's code and message as JSON.
 */
async function publishWithTrustStore(t, env, ca) {
  const run = runScript(
    t,
    `const { PubSub } = require(${JSON.stringify(path.join(ROOT, 'mqtt.js'))})
     const pubsub = new PubSub({ endpoint: process.env.ENDPOINT, ca: process.env.CA || undefined, connectTimeout: 5000, reconnect: false })
     pubsub.publish('tls/trust-store', 'x', { qos: 1 })
       .then(() => console.log('published'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))
       .finally(() => pubsub.close())`,
    { ...env, ENDPOINT: `wss://127.0.0.1:${tls.wssPort}/mqtt`, CA: ca || '' },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  return run.stdout.trim()
}

const EMPTY_OS_STORE = { SSL_CERT_FILE: '/nonexistent/ca-bundle.crt', SSL_CERT_DIR: '/nonexistent' }

test('with an empty OS trust store, an untrusted certificate error says the bundled roots were used and why', async (t) => {
  const result = JSON.parse(await publishWithTrustStore(t, EMPTY_OS_STORE))
  t.is(result.code, 'ERR_CONNECTION')
  t.regex(result.message, /UnknownIssuer/)
  t.regex(result.message, /checked against the bundled Mozilla roots \(webpki-roots, \d+ certificates\), because the OS trust store had no certificate/)
  t.true(result.message.includes('/nonexistent/ca-bundle.crt'), result.message)
  t.regex(result.message, /pass the 'ca' option/)
})

test('with an empty OS trust store, the ca option still makes a private broker trusted', async (t) => {
  t.is(await publishWithTrustStore(t, EMPTY_OS_STORE, tls.certs.caPem), 'published')
})

test('a CA in the OS trust store is trusted without the ca option', async (t) => {
  const caFile = path.join(tls.certs.dir, 'ca.crt')
  t.is(await publishWithTrustStore(t, { SSL_CERT_FILE: caFile, SSL_CERT_DIR: '/nonexistent' }), 'published')
})
