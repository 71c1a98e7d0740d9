'use strict'
// The connection options reach the broker as given in the MQTT CONNECT packet, and keep-alive
// pings keep an idle connection up.
const test = require('ava')
const { startAedes } = require('./helpers/aedes.js')
const { openPubSub, sleep } = require('./helpers/pubsub.js')

/** A broker that records every CONNECT packet it accepts. */
async function recordingBroker(t) {
  const connects = []
  const broker = await startAedes({
    preConnect(client, packet, callback) {
      connects.push(packet)
      callback(null, true)
    },
  })
  t.teardown(() => broker.stop())
  return { broker, connects }
}

async function connectOnce(t, endpoint, options) {
  const pubsub = openPubSub(t, { endpoint, ...options })
  await pubsub.publish('connect-options/probe', 1, { qos: 1 })
  return pubsub
}

test('keepAlive (seconds), cleanSession and clientId are sent in CONNECT as given', async (t) => {
  const { broker, connects } = await recordingBroker(t)
  await connectOnce(t, broker.wsUrl, { keepAlive: 17, cleanSession: false, clientId: 'options-given' })
  t.is(connects.length, 1)
  t.is(connects[0].keepalive, 17)
  t.false(connects[0].clean)
  t.is(connects[0].clientId, 'options-given')
})

test('by default CONNECT carries keep-alive 60 s and a clean session', async (t) => {
  const { broker, connects } = await recordingBroker(t)
  await connectOnce(t, broker.wsUrl, {})
  t.is(connects[0].keepalive, 60)
  t.true(connects[0].clean)
})

test('the will (topic, JSON message, qos, retain) is registered in CONNECT', async (t) => {
  const { broker, connects } = await recordingBroker(t)
  await connectOnce(t, broker.wsUrl, { will: { topic: 'connect-options/will', message: { gone: true }, qos: 1, retain: true } })
  const { will } = connects[0]
  t.is(will.topic, 'connect-options/will')
  t.is(will.payload.toString(), JSON.stringify({ gone: true }))
  t.is(will.qos, 1)
  t.true(will.retain)
})

test("Amplify's aws_appsync_dangerously_connect_to_http_endpoint_for_testing is accepted without effect: a ws:// endpoint connects as given", async (t) => {
  // Amplify's MqttOverWS forces TLS unless it is true, so code for a local broker sets it;
  // here the endpoint's scheme decides either way.
  for (const flag of [true, false]) {
    const { broker, connects } = await recordingBroker(t)
    await connectOnce(t, broker.wsUrl, { clientId: `plain-ws-${flag}`, aws_appsync_dangerously_connect_to_http_endpoint_for_testing: flag })
    t.is(connects.length, 1)
    t.is(connects[0].clientId, `plain-ws-${flag}`)
  }
})

test('a will without a message is registered with an empty payload', async (t) => {
  const { broker, connects } = await recordingBroker(t)
  await connectOnce(t, broker.wsUrl, { will: { topic: 'connect-options/empty-will' } })
  const { will } = connects[0]
  t.is(will.topic, 'connect-options/empty-will')
  t.is(will.payload.length, 0)
  t.is(will.qos, 0)
  t.false(will.retain)
})

test('an idle connection sends PINGREQ every keepAlive and stays connected past it', async (t) => {
  const { broker } = await recordingBroker(t)
  let pings = 0
  broker.aedes.on('ping', () => pings++)
  let timedOut = false
  broker.aedes.on('keepaliveTimeout', () => (timedOut = true))
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, keepAlive: 1 })
  const sub = pubsub.subscribe('connect-options/idle').subscribe(() => {})
  await sub.ready
  await sleep(3_500)
  t.true(pings >= 2, `pings seen: ${pings}`)
  t.false(timedOut)
  t.is(pubsub.connectionState, 'Connected')
})

test('keepAlive 0 turns keep-alive off: CONNECT says 0 and an idle connection sends no PINGREQ', async (t) => {
  const { broker, connects } = await recordingBroker(t)
  let pings = 0
  broker.aedes.on('ping', () => pings++)
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, keepAlive: 0 })
  const sub = pubsub.subscribe('connect-options/no-keepalive').subscribe(() => {})
  await sub.ready
  t.is(connects[0].keepalive, 0)
  // Long enough for the PINGREQs of the smallest keep-alive (1 s) to have come twice.
  await sleep(2_500)
  t.is(pings, 0)
  t.is(pubsub.connectionState, 'Connected')
})
