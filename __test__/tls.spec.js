'use strict'
// TLS (mqtts:// and wss://) is verified by default; a custom CA makes a private broker trusted.
const test = require('ava')
const { PubSub, TOPIC } = require('../mqtt.js')
const { startMosquitto, freePort } = require('./helpers/mosquitto.js')
const { makeCertificates } = require('./helpers/certificates.js')
const { openPubSub } = require('./helpers/pubsub.js')

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
  })
}

test('a ca option that holds no certificate is rejected at construction', (t) => {
  const error = t.throws(() => new PubSub({ endpoint: 'mqtts://127.0.0.1:1', ca: 'not a certificate' }))
  t.is(error.code, 'ERR_INVALID_OPTION')
  t.true(error.message.includes("'ca'"), error.message)
})
