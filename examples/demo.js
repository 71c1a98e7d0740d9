'use strict'
// `npm run demo`: a real publish/subscribe round trip. Starts an in-process MQTT broker (aedes
// over WebSocket, the same one the tests use) on a free loopback port, or uses PUBSUB_ENDPOINT.
const { PubSub, TOPIC, CONNECTION_STATE_CHANGE } = require('../mqtt.js')
const { startAedes } = require('../__test__/helpers/aedes.js')

const TIMEOUT_MS = 15_000

async function main() {
  let broker = null
  let endpoint = process.env.PUBSUB_ENDPOINT
  if (!endpoint) {
    broker = await startAedes()
    endpoint = broker.wsUrl
    console.log(`in-process broker listening at ${endpoint}`)
  }
  const pubsub = new PubSub({ endpoint })
  pubsub.on(CONNECTION_STATE_CHANGE, (state) => console.log(`connection state: ${state}`))

  const messages = []
  let gotAll
  const allArrived = new Promise((resolve) => (gotAll = resolve))
  const subscription = pubsub.subscribe({ topics: 'demo/#', options: { qos: 1 } }).subscribe({
    next: (message) => {
      console.log(`received on '${message[TOPIC]}':`, message)
      messages.push(message)
      if (messages.length === 2) gotAll()
    },
    error: (error) => console.error(`subscription failed: [${error.code}] ${error.message}`),
  })
  await subscription.ready
  console.log('subscribed to demo/# (SUBACK received)')

  const started = process.hrtime.bigint()
  await pubsub.publish({ topics: 'demo/greeting', message: { text: 'hello from native-pubsub' }, options: { qos: 1 } })
  await pubsub.publish('demo/numbers', [1, 2, 3], { qos: 1 })
  console.log('published 2 messages at QoS 1 (PUBACKs received)')

  const timer = setTimeout(() => {
    console.error(`no round trip within ${TIMEOUT_MS} ms`)
    process.exit(1)
  }, TIMEOUT_MS)
  await allArrived
  clearTimeout(timer)
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  console.log(`round trip of ${messages.length} messages in ${ms.toFixed(1)} ms`)

  subscription.unsubscribe()
  await pubsub.close()
  if (broker) await broker.stop()
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
