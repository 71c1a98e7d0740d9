'use strict'
// TLS (mqtts:// and wss://) is verified by default; a custom CA makes a private broker trusted.
const fs = require('node:fs')
const path = require('node:path')
const nodeTls = require('node:tls')
const test = require('ava')
const { PubSub, TOPIC } = require('../mqtt.js')
const { useTlsMosquitto } = require('./helpers/mosquitto.js')
const { makeSelfSignedCertificate } = require('./helpers/certificates.js')
const { openPubSub, runScript, tcpServer } = require('./helpers/pubsub.js')

const ROOT = path.join(__dirname, '..')

const tls = useTlsMosquitto(test)

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
    t.regex(error.message, /the server's certificate was not issued by a CA this client trusts; it was checked against the (OS trust store|bundled Mozilla roots)/)
    t.regex(error.message, /for a private CA pass the 'ca' option$/)
  })
}

test("a 'ca' that did not issue the server's certificate: the message says so, rather than to pass 'ca'", async (t) => {
  const other = makeSelfSignedCertificate()
  t.teardown(other.remove)
  const pubsub = openPubSub(t, { endpoint: `mqtts://127.0.0.1:${tls.mqttsPort}`, ca: other.certPem, reconnect: false, connectTimeout: 5_000 })
  const error = await t.throwsAsync(pubsub.publish('tls/other-ca', 'x'))
  t.is(error.code, 'ERR_CONNECTION')
  t.regex(error.message, /not issued by a CA this client trusts; it was checked against .* plus the 'ca' option's certificates; the 'ca' option does not hold the CA that issued it/)
  t.notRegex(error.message, /pass the 'ca' option|UnknownIssuer/)
})

test('a certificate for another name says which names it is for, not webpki\'s IpAddress(…)', async (t) => {
  const pubsub = openPubSub(t, { endpoint: `wss://localhost:${tls.wssPort}/mqtt`, ca: tls.certs.caPem, reconnect: false, connectTimeout: 5_000 })
  const error = await t.throwsAsync(pubsub.publish('tls/wrong-name', 'x'))
  t.is(error.code, 'ERR_CONNECTION')
  t.regex(error.message, /the server's certificate is not valid for the host 'localhost': it is for '127\.0\.0\.1' only \(subjectAltName\); connect to a name the certificate lists/)
  t.notRegex(error.message, /IpAddress|checked against|'ca' option/)
})

/** A TLS server on a free loopback port serving `cert`, which never gets past the handshake here. */
async function tlsServer(t, { certPem, keyPem }) {
  const server = nodeTls.createServer({ cert: certPem, key: keyPem }, (socket) => socket.on('error', () => {}))
  server.on('tlsClientError', () => {})
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(() => resolve())))
  return server.address().port
}

// `openssl req -x509` makes a CA certificate (basicConstraints CA:TRUE) unless told otherwise,
// and webpki refuses a CA certificate as a server's own: still refused, in words and with the
// fix, rather than "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))".
for (const scheme of ['mqtts', 'wss']) {
  test(`${scheme}:// to a server whose own certificate is a self-signed CA certificate: refused, saying why and what to do`, async (t) => {
    const self = makeSelfSignedCertificate()
    t.teardown(self.remove)
    const port = await tlsServer(t, self)
    const endpoint = `${scheme}://127.0.0.1:${port}${scheme === 'wss' ? '/mqtt' : ''}`
    for (const ca of [self.certPem, undefined]) {
      const pubsub = openPubSub(t, { endpoint, ca, reconnect: false, connectTimeout: 5_000 })
      const error = await t.throwsAsync(pubsub.publish('tls/self-signed', 'x'))
      t.is(error.code, 'ERR_CONNECTION')
      t.true(
        error.message.startsWith(
          `Connection to ${endpoint} failed: the server's certificate is a CA certificate (basicConstraints CA:TRUE) used as the ` +
            "server's own, which TLS refuses; `openssl req -x509` makes one unless told otherwise. Issue a server (leaf) " +
            "certificate from that CA for '127.0.0.1', serve it, and ",
        ),
        error.message,
      )
      t.regex(error.message, /README's "TLS trust" section has the openssl commands/)
      t.regex(error.message, ca ? /keep passing the CA as 'ca'/ : /pass the CA as the 'ca' option/)
      t.notRegex(error.message, /Other\(|OtherError|CaUsedAsEndEntity|for a private CA/)
    }
  })
}

// ------------------------------------------------------------------ a TLS scheme on the wrong port

test('mqtts:// pointed at a WebSocket (wss) port: the server answered with HTTP, use wss://', async (t) => {
  const pubsub = openPubSub(t, { endpoint: `mqtts://127.0.0.1:${tls.wssPort}`, ca: tls.certs.caPem, reconnect: false, connectTimeout: 5_000 })
  const error = await t.throwsAsync(pubsub.publish('tls/wrong-port', 'x'))
  t.is(error.code, 'ERR_CONNECTION')
  t.is(
    error.message,
    `mqtts://127.0.0.1:${tls.wssPort} answered CONNECT with HTTP ('HTTP/…'), not MQTT: it is probably a WebSocket port; use ` +
      `wss://127.0.0.1:${tls.wssPort}/mqtt (with the path the server takes MQTT on, /mqtt on most brokers)`,
  )
})

test('wss:// pointed at a plain ws:// port: the server did not answer TLS', async (t) => {
  const pubsub = openPubSub(t, { endpoint: `wss://127.0.0.1:${tls.wsPort}/mqtt`, reconnect: false, connectTimeout: 5_000 })
  const error = await t.throwsAsync(pubsub.publish('tls/plain-port', 'x'))
  t.is(error.code, 'ERR_CONNECTION')
  t.is(
    error.message,
    `Connection to wss://127.0.0.1:${tls.wsPort}/mqtt failed: the server did not answer TLS: is it a plain port? Then use ws://127.0.0.1:${tls.wsPort}/mqtt`,
  )
})

test('mqtts:// pointed at a plain mqtt:// port: the TLS handshake failed there, is it a TLS port?', async (t) => {
  const pubsub = openPubSub(t, { endpoint: `mqtts://127.0.0.1:${tls.tcpPort}`, reconnect: false, connectTimeout: 5_000 })
  const error = await t.throwsAsync(pubsub.publish('tls/plain-port', 'x'))
  t.is(error.code, 'ERR_CONNECTION')
  // mosquitto resets the connection on the ClientHello it cannot read as MQTT.
  t.regex(error.message, new RegExp(`^Connection to mqtts://127\\.0\\.0\\.1:${tls.tcpPort} failed: the server (reset|closed) the connection during the TLS handshake.*: is it a TLS port\\? A plain port takes mqtt://127\\.0\\.0\\.1:${tls.tcpPort}$`))
  t.notRegex(error.message, /TLS: I\/O|IO error/)
})

// A wss:// connection makes its TLS handshake, then its WebSocket upgrade: a failure says which.
for (const [what, onSocket, expected] of [
  [
    'reset before any TLS: the TLS handshake',
    (socket) => socket.resetAndDestroy(),
    (port) => new RegExp(`^Connection to wss://127\\.0\\.0\\.1:${port}/mqtt failed: the server reset the connection during the TLS handshake \\(.+\\): is it a TLS port\\? A plain port takes ws://127\\.0\\.0\\.1:${port}/mqtt$`),
  ],
  [
    'closed after the TLS handshake, when the upgrade request arrives: the WebSocket upgrade',
    (socket) => acceptTls(socket).once('data', function () { this.end() }),
    (port) => new RegExp(`^Connection to wss://127\\.0\\.0\\.1:${port}/mqtt failed: the server closed the connection before answering the WebSocket upgrade: is it a WebSocket port\\? An MQTT \\(not WebSocket\\) one takes mqtts://127\\.0\\.0\\.1:${port}$`),
  ],
  [
    'reset after the TLS handshake, when the upgrade request arrives: the WebSocket upgrade',
    (socket) => acceptTls(socket).once('data', () => socket.resetAndDestroy()),
    (port) => new RegExp(`^Connection to wss://127\\.0\\.0\\.1:${port}/mqtt failed: the server reset the connection during the WebSocket upgrade \\(.+\\): is it a WebSocket port\\?`),
  ],
]) {
  test(`wss:// to a server that ${what}`, async (t) => {
    const port = await tcpServer(t, onSocket)
    const pubsub = openPubSub(t, { endpoint: `wss://127.0.0.1:${port}/mqtt`, ca: tls.certs.caPem, reconnect: false })
    const error = await t.throwsAsync(pubsub.publish('tls/phase', 'x'), { code: 'ERR_CONNECTION' })
    t.regex(error.message, expected(port))
  })
}

/** Completes a TLS handshake as the server on the raw `socket` (the test CA's certificate). */
function acceptTls(socket) {
  const secure = new nodeTls.TLSSocket(socket, { isServer: true, key: fs.readFileSync(tls.certs.keyFile), cert: fs.readFileSync(tls.certs.certFile) })
  secure.on('error', () => {})
  return secure
}

test('ssl:// and tls://, which MQTT.js also takes, are mqtts://', async (t) => {
  for (const scheme of ['ssl', 'tls']) await roundTrip(t, `${scheme}://127.0.0.1:${tls.mqttsPort}`, tls.certs.caPem)
})

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
  t.regex(result.message, /the server's certificate was not issued by a CA this client trusts/)
  t.notRegex(result.message, /UnknownIssuer/)
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
