'use strict'
// One instance with many subscriptions, and many instances: `node bench/many-subscriptions.js
// <case> '<json params>'` prints one JSON line. Each run starts Debian's mosquitto on free
// loopback ports (MQTT over TCP) and stops it. To compare with another build of the addon, run the
// same script with NAPI_RS_NATIVE_LIBRARY_PATH=<that build's .node> (bench/FINDINGS.md, "Routing
// with many subscriptions").
//
//   route      { others, wildcards, messages }  msg/s delivered on one topic while the instance
//              also holds `others` exact filters (devices/<i>/status) and `wildcards` wildcard ones
//   subscribe  { filters, mode: 'array' | 'calls' }  ms until every filter is acknowledged (one
//              subscribe call with an array, or one call each), and until unsubscribing them all
//              has ended the connection (Disconnected)
//   fanout     { observers, messages }  `observers` observers of one topic in one instance
//   instances  { instances, messages }  `instances` instances in one process, each on one topic
const { startBroker, PACKAGED } = require('./mosquitto')
const { PubSub } = require('../mqtt.js')

const WILDCARDS = ['devices/+/alarm', 'devices/+/firmware/#', 'fleet/#', '+/+/+/config', 'sites/+/devices/+/status']
/** Messages published and not yet delivered, at most: a closed loop measures the subscriber. */
const WINDOW = 2_000

const now = () => performance.now()

function stateReached(pubsub, state) {
  return new Promise((resolve) => {
    const listener = (s) => {
      if (s !== state) return
      pubsub.off('ConnectionStateChange', listener)
      resolve()
    }
    pubsub.on('ConnectionStateChange', listener)
  })
}

/**
 * Counts deliveries; `stream` publishes `total` messages on `topic`, at most WINDOW ahead of
 * the deliveries (`perMessage` of them a message), and resolves with the ms it took.
 */
function deliveryCounter() {
  let wake = null
  const counter = {
    delivered: 0,
    onDelivery() {
      counter.delivered++
      if (wake) wake()
    },
    async stream(publisher, topic, total, perMessage) {
      counter.delivered = 0
      const began = now()
      let sent = 0
      const behind = () => sent - counter.delivered / perMessage
      while (counter.delivered < total * perMessage) {
        while (sent < total && behind() < WINDOW) {
          publisher.publish(topic, { reading: 21.5, unit: 'C' }).catch((error) => console.error(error))
          sent++
        }
        await new Promise((resolve) => {
          wake = () => {
            if (behind() <= WINDOW / 2 || counter.delivered === total * perMessage) {
              wake = null
              resolve()
            }
          }
        })
      }
      return now() - began
    },
  }
  return counter
}

const cases = {
  async route(broker, { others = 0, wildcards = 0, messages = 30_000 }) {
    const sub = new PubSub({ endpoint: broker.tcpUrl })
    const pub = new PubSub({ endpoint: broker.tcpUrl })
    const counter = deliveryCounter()
    const ready = [sub.subscribe('stream/hot').subscribe(counter.onDelivery).ready]
    if (others > 0) ready.push(sub.subscribe(Array.from({ length: others }, (_, i) => `devices/${i}/status`)).subscribe(() => {}).ready)
    if (wildcards > 0) ready.push(sub.subscribe(WILDCARDS.slice(0, wildcards)).subscribe(() => {}).ready)
    await Promise.all(ready)
    await counter.stream(pub, 'stream/hot', 5_000, 1) // warm-up
    const ms = await counter.stream(pub, 'stream/hot', messages, 1)
    await Promise.all([sub.close(), pub.close()])
    return { msgPerSec: Math.round((messages / ms) * 1000) }
  },

  async subscribe(broker, { filters, mode }) {
    const pubsub = new PubSub({ endpoint: broker.tcpUrl })
    const topics = Array.from({ length: filters }, (_, i) => `devices/${i}/status`)
    const began = now()
    const subscriptions =
      mode === 'array' ? [pubsub.subscribe(topics).subscribe(() => {})] : topics.map((topic) => pubsub.subscribe(topic).subscribe(() => {}))
    await Promise.all(subscriptions.map((s) => s.ready))
    const ready = now()
    const disconnected = stateReached(pubsub, 'Disconnected')
    for (const s of subscriptions) s.unsubscribe()
    await disconnected
    const gone = now()
    await pubsub.close()
    return { readyMs: Math.round(ready - began), disconnectedMs: Math.round(gone - ready) }
  },

  async fanout(broker, { observers, messages = 1_000 }) {
    const sub = new PubSub({ endpoint: broker.tcpUrl })
    const pub = new PubSub({ endpoint: broker.tcpUrl })
    const counter = deliveryCounter()
    const subscriptions = Array.from({ length: observers }, () => sub.subscribe('stream/hot').subscribe(counter.onDelivery))
    await Promise.all(subscriptions.map((s) => s.ready))
    await counter.stream(pub, 'stream/hot', Math.ceil(100_000 / observers), observers) // warm-up
    const ms = await counter.stream(pub, 'stream/hot', messages, observers)
    const began = now()
    for (const s of subscriptions) s.unsubscribe()
    const unsubscribeMs = now() - began
    await Promise.all([sub.close(), pub.close()])
    return { deliveriesPerSec: Math.round(((messages * observers) / ms) * 1000), unsubscribeMs: Math.round(unsubscribeMs) }
  },

  async instances(broker, { instances, messages = 1_000 }) {
    const counter = deliveryCounter()
    const began = now()
    const clients = Array.from({ length: instances }, () => new PubSub({ endpoint: broker.tcpUrl }))
    await Promise.all(clients.map((c) => c.subscribe('stream/hot').subscribe(counter.onDelivery).ready))
    const readyMs = now() - began
    const pub = new PubSub({ endpoint: broker.tcpUrl })
    await counter.stream(pub, 'stream/hot', 200, instances) // warm-up
    const cpu = process.cpuUsage()
    const ms = await counter.stream(pub, 'stream/hot', messages, instances)
    const { user, system } = process.cpuUsage(cpu)
    const closing = now()
    await Promise.all(clients.map((c) => c.close()))
    const closeMs = now() - closing
    await pub.close()
    return {
      deliveriesPerSec: Math.round(((messages * instances) / ms) * 1000),
      // This process's CPU (the broker's is apart): flat if each instance costs the same.
      cpuNsPerDelivery: Math.round(((user + system) * 1000) / (messages * instances)),
      readyMs: Math.round(readyMs),
      closeMs: Math.round(closeMs),
    }
  },
}

async function main() {
  const [name, paramsText = '{}'] = process.argv.slice(2)
  if (!cases[name]) throw new Error(`usage: node bench/many-subscriptions.js ${Object.keys(cases).join('|')} '<json params>'`)
  const params = JSON.parse(paramsText)
  const broker = await startBroker(PACKAGED)
  try {
    const result = await cases[name](broker, params)
    console.log(JSON.stringify({ case: name, params, addon: process.env.NAPI_RS_NATIVE_LIBRARY_PATH || 'this tree', ...result }))
  } finally {
    await broker.stop()
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  },
)
