'use strict'
// One case run with ours: the native-pubsub/mqtt API exactly as a user calls it. JSON objects
// in (the package JSON-encodes them), parsed objects out (format 'json', the default), one
// PubSub instance (connection) for publishing and one for subscribing.
//   node bench/clients/native.js '{"url":"ws://127.0.0.1:PORT/mqtt","qos":0,"size":64,"n":50000,"mode":"burst"}'

const { PubSub } = require('../../mqtt.js')
const { main } = require('./common')

let pub
let sub
let subscription
let topic
let qos

main('ours', {
  async connect(args) {
    topic = args.topic
    qos = args.qos
    sub = new PubSub({ endpoint: args.url, clientId: `bench-ours-sub-${process.pid}` })
    pub = new PubSub({ endpoint: args.url, clientId: `bench-ours-pub-${process.pid}` })
    for (const p of [pub, sub]) p.on('callbackError', args.onError)
    subscription = sub.subscribe(topic, { qos }).subscribe({ next: args.onMessage, error: args.onError })
    await subscription.ready // SUBACK
    // The publisher connects on its first publish: make that happen before measuring.
    await pub.publish(`${topic}/warmup`, { warmup: true }, { qos: 1 })
  },
  publish(seq, message) {
    return pub.publish(topic, message, { qos })
  },
  extra() {
    return { pub: pub.stats(), sub: sub.stats() }
  },
  async close() {
    subscription.unsubscribe()
    await Promise.all([pub.close(), sub.close()])
  },
})
