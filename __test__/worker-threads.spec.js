'use strict'
// The package in worker_threads: each Worker loads its own copy of the JS layer, and every
// Worker and the main thread share the addon's one tokio runtime. A Worker that is terminated,
// or ends, takes its connections with it; the other threads' connections go on. Each test runs a
// script in a child Node process (ava's own workers stay out of it) against a real broker.
const test = require('ava')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { topicNamer, waitFor, runScript, printed } = require('./helpers/pubsub.js')

// 'notice' logs each client's end: "Client <id> disconnected." after its DISCONNECT, "Client <id>
// closed its connection." when the socket just went away.
const broker = useMosquitto(test, { lines: ['log_type notice'] })
const uniqueTopic = topicNamer('worker-threads')

test('a terminated Worker ends its connection with DISCONNECT, while the main thread goes on receiving', async (t) => {
  const topic = uniqueTopic('terminated')
  const run = runScript(
    t,
    `const { Worker } = require('node:worker_threads')
     const { PubSub } = require(process.env.MQTT_JS)
     // The main thread uses the package too: the shared runtime outlives the Workers.
     const main = new PubSub({ endpoint: process.env.BROKER })
     let received = 0
     const mainSubscription = main.subscribe(process.env.TOPIC).subscribe({ next: () => received++ })
     const inWorker = \`
       const { parentPort } = require('node:worker_threads')
       const { PubSub } = require(process.env.MQTT_JS)
       const pubsub = new PubSub({ endpoint: process.env.BROKER })
       // Receiving and publishing when it is terminated.
       pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} }).ready.then(() => parentPort.postMessage(pubsub.clientId))
       setInterval(() => pubsub.publish(process.env.TOPIC, { from: 'worker' }, { qos: 1 }).catch(() => {}), 1)
     \`
     ;(async () => {
       await mainSubscription.ready
       const workers = [1, 2, 3].map(() => new Worker(inWorker, { eval: true }))
       const ids = await Promise.all(workers.map((worker) => new Promise((resolve) => worker.once('message', resolve))))
       console.log(JSON.stringify(ids))
       await Promise.all(workers.map((worker) => worker.terminate()))
       console.log('terminated')
       const before = received
       await main.publish(process.env.TOPIC, { from: 'main' }, { qos: 1 })
       await new Promise((resolve) => setTimeout(resolve, 200))
       console.log(received > before ? 'main still receives' : 'main received nothing more')
       // Stays up, as a server would, until the test ends it.
     })()`,
    { BROKER: broker.wsUrl, TOPIC: topic },
  )
  await printed(run, 'terminated')
  const ids = JSON.parse(run.stdout.split('\n')[0])
  t.is(ids.length, 3)
  const disconnected = (id) => broker.log().includes(`Client ${id} disconnected.`)
  await waitFor(() => ids.every(disconnected), 5_000, 'every Worker client to disconnect').catch(() => {})
  t.deepEqual(ids.filter((id) => !disconnected(id)), [], 'Worker clients the broker still had (or lost without DISCONNECT)')
  await printed(run, 'main still receives')
})
