'use strict'
// Mutual TLS: the generic provider's `cert` and `key` options send a client certificate, as
// brokers that authenticate clients by certificate require (mosquitto's require_certificate,
// AWS IoT's X.509 devices on port 8883). Errors say what is wrong, and never show the key.
const fs = require('node:fs')
const path = require('node:path')
const test = require('ava')
const { PubSub } = require('../mqtt.js')
const { PubSub: IotPubSub } = require('../index.js')
const { useTlsMosquitto } = require('./helpers/mosquitto.js')
const { makeSelfSignedCertificate } = require('./helpers/certificates.js')
const { listen, openPubSub, plain, recordEvents, topicNamer } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('client-certificates')
// Both listeners take only clients whose certificate the test CA issued.
const tls = useTlsMosquitto(test, { listenerLines: (certs) => [`cafile ${certs.caFile}`, 'require_certificate true'] })
/** A certificate no CA the broker trusts issued. */
const other = {}
test.before(() => Object.assign(other, makeSelfSignedCertificate()))
test.after.always(() => other.remove?.())

/** A PEM certificate's DER bytes, as fs.readFileSync gives a .der file (a Buffer). */
function derOf(pem) {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64')
}

/** PEM text without its line `n` (a copy-paste that lost one). */
function withoutLine(pem, n) {
  return pem.split('\n').filter((_, i) => i !== n).join('\n')
}

/** Options for the test broker with the test CA trusted, and `identity` as cert and key. */
function options(endpoint, identity = { cert: tls.certs.clientCertPem, key: tls.certs.clientKeyPem }) {
  return { endpoint, ca: tls.certs.caPem, ...identity }
}

for (const scheme of ['mqtts', 'wss']) {
  test(`${scheme}:// with a client certificate the broker's CA issued connects and round-trips`, async (t) => {
    const pubsub = openPubSub(t, options(tls[scheme]))
    const topic = uniqueTopic(scheme)
    const inbox = await listen(t, pubsub, topic, { qos: 1 })
    await pubsub.publish(topic, { over: scheme }, { qos: 1 })
    t.deepEqual(plain(await inbox.take(1)), [{ over: scheme }])
  })
}

test('cert and key may be Buffers, as fs.readFileSync gives them', async (t) => {
  const dir = tls.certs.dir
  const pubsub = openPubSub(t, options(tls.mqtts, { cert: fs.readFileSync(path.join(dir, 'client.crt')), key: fs.readFileSync(path.join(dir, 'client.key')) }))
  await pubsub.publish(uniqueTopic('buffers'), 'x', { qos: 1 })
  t.is(pubsub.connectionState, 'Connected')
})

test('without a client certificate: ERR_NOT_AUTHORIZED saying to pass cert and key, not retried', async (t) => {
  const pubsub = openPubSub(t, options(tls.mqtts, {}))
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  const error = await t.throwsAsync(pubsub.publish(uniqueTopic('none'), 'x', { qos: 1 }))
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.is(error.message, `Not authorized: ${tls.mqtts} wants a client certificate (mutual TLS): pass it as the 'cert' and 'key' options`)
  t.deepEqual(disruptions, [])
  t.is(pubsub.connectionState, 'Disconnected')
})

test("a client certificate the broker's CA did not issue: ERR_NOT_AUTHORIZED, not retried", async (t) => {
  const pubsub = openPubSub(t, options(tls.wss, { cert: other.certPem, key: other.keyPem }))
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  const error = await t.throwsAsync(pubsub.publish(uniqueTopic('other-ca'), 'x', { qos: 1 }))
  t.is(error.code, 'ERR_NOT_AUTHORIZED')
  t.regex(error.message, new RegExp(`^Not authorized: wss://127\\.0\\.0\\.1:${tls.wssPort}/mqtt refused the client certificate given as 'cert': it was not issued by a CA the server trusts for clients`))
  t.deepEqual(disruptions, [])
})

test('cert and key that cannot be used are refused by the constructor, without showing the key', (t) => {
  const { clientCertPem: cert, clientKeyPem: key } = tls.certs
  const serverKey = fs.readFileSync(tls.certs.keyFile, 'utf8')
  const encrypted = '-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQww\n-----END ENCRYPTED PRIVATE KEY-----\n'
  for (const [given, says] of [
    [{ cert }, "Option 'cert' needs 'key' too: the private key of the client certificate"],
    [{ key }, "Option 'key' needs 'cert' too: the client certificate (chain) of that key"],
    [{ cert, key: serverKey }, "Options 'cert' and 'key' do not belong together: the key is not the private key of the certificate (the first one in 'cert')"],
    [{ cert: './client.crt', key }, "Option 'cert' holds no PEM certificate ('-----BEGIN …'): pass the file's contents (fs.readFileSync(path)), not its path"],
    [{ cert, key: './client.key' }, "Option 'key' holds no PEM private key ('-----BEGIN …'): pass the file's contents (fs.readFileSync(path)), not its path"],
    [{ cert: key, key: cert }, "Option 'cert' holds no PEM certificate: it holds a private key (are 'cert' and 'key' swapped?)"],
    [{ cert, key: encrypted }, /^Option 'key' is an encrypted private key, which this client cannot decrypt: pass it decrypted/],
    // From an environment variable, with its line breaks written as \n: the parser would quote
    // the whole text, the key included.
    [{ cert: key.replaceAll('\n', '\\n'), key }, /^Option 'cert' is not valid PEM: its line breaks are missing/],
    [{ cert, key: key.replaceAll('\n', '\\n') }, /^Option 'key' (is not valid PEM|holds no PEM private key): its line breaks are missing/],
    [{ cert: key.replaceAll('\n', ' '), key }, /^Option 'cert' is not valid PEM: its line breaks are missing/],
    [{ cert: '', key }, "Option 'cert' holds no PEM certificate: it is empty"],
    [{ cert: derOf(cert), key }, "Option 'cert' holds no PEM certificate: it looks like DER (binary); convert it to PEM (openssl x509 -inform der -in cert.der -out cert.pem)"],
    [{ cert: withoutLine(cert, 3), key }, "Option 'cert' holds a certificate that cannot be read (is a line of it missing or changed?)"],
    [{ cert, key, ca: key }, "Option 'ca' holds no PEM certificate: it holds a private key, not a certificate"],
  ]) {
    const error = t.throws(() => new PubSub(options(tls.mqtts, given)))
    t.is(error.code, 'ERR_INVALID_OPTION')
    if (typeof says === 'string') t.is(error.message, says)
    else t.regex(error.message, says)
    for (const secret of [key, serverKey]) t.false(error.message.includes(secret.split('\n')[1]), 'the key is not shown')
  }
})

test('cert and key need a TLS endpoint, and belong to the generic provider', (t) => {
  const identity = { cert: tls.certs.clientCertPem, key: tls.certs.clientKeyPem }
  for (const endpoint of ['ws://127.0.0.1:1/mqtt', 'mqtt://127.0.0.1:1']) {
    const error = t.throws(() => new PubSub({ endpoint, ...identity }))
    t.is(error.code, 'ERR_INVALID_OPTION')
    t.is(error.message, `Options 'cert' and 'key' are a client certificate for TLS, and '${endpoint}' is not a TLS endpoint: use wss:// or mqtts://`)
  }
  const error = t.throws(() => new IotPubSub({ endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt', ...identity }))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.regex(error.message, /^Unknown option 'cert' for the AWS IoT provider/)
})
