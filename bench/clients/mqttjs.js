'use strict'
// One case run with MQTT.js (`mqtt` from npm) over ws, MQTT 3.1.1, doing the same JSON work in JS:
// JSON.stringify to publish, JSON.parse on receipt. One client (connection) for publishing and
// one for subscribing.
//   node bench/clients/mqttjs.js '{"url":"ws://127.0.0.1:PORT/mqtt","qos":0,"size":64,"n":50000,"mode":"burst"}'
//
// Not throttled by its defaults: MQTT.js has no outgoing in-flight window for MQTT 3.1.1 (only
// its 65,535 message ids, more than the 20,000 QoS 1 messages of a case), QoS 0 publishes go
// straight to the socket while connected, and the `ws` package it uses sets TCP_NODELAY on its
// socket. reconnectPeriod 0: a dropped connection shows as lost messages, not as a silent retry.

const mqtt = require('mqtt')
const { main } = require('./common')

let pub
let sub
let topic
let qos

const options = (role) => ({
  protocolVersion: 4,
  clientId: `bench-mqttjs-${role}-${process.pid}`,
  clean: true,
  keepalive: 60,
  reconnectPeriod: 0,
  connectTimeout: 30000,
})

main('mqtt.js', {
  async connect(args) {
    topic = args.topic
    qos = args.qos
    sub = await mqtt.connectAsync(args.url, options('sub'))
    pub = await mqtt.connectAsync(args.url, options('pub'))
    for (const c of [pub, sub]) c.on('error', args.onError)
    sub.on('message', (_topic, payload) => args.onMessage(JSON.parse(payload.toString())))
    await sub.subscribeAsync(topic, { qos }) // SUBACK
  },
  publish(seq, message) {
    // QoS 0: fire and forget, as MQTT.js is used. A callback per QoS 0 publish makes MQTT.js add
    // a once('drain') listener per publish while the socket is backed up, which turns a 50,000
    // burst quadratic (seen: about 1,800 msg/s and 25 CPU seconds instead of about 9,000 msg/s).
    if (qos === 0) {
      pub.publish(topic, JSON.stringify(message), { qos })
      return undefined
    }
    // QoS 1: the callback comes with the PUBACK (it waits in MQTT.js's outgoing map, not on drain).
    return new Promise((resolve, reject) => {
      pub.publish(topic, JSON.stringify(message), { qos }, (error) => (error ? reject(error) : resolve()))
    })
  },
  async close() {
    await Promise.all([pub.endAsync(), sub.endAsync()])
  },
})
