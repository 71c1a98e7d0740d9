'use strict'
// The package in worker_threads: each Worker loads its own copy of the JS layer, and every
// Worker and the main thread share the addon's one tokio runtime. A Worker that is terminated,
// or ends, takes its connections with it; the other threads' connections go on. Each test runs a
// script in a child Node process (ava's own workers stay out of it) against a real broker.
const test = require('ava')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { topicNamer, waitFor, runScript, printed, exitOf } = require('./helpers/pubsub.js')

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
  const left = ids.filter((id) => !disconnected(id))
  // What the broker logged of any that did not say DISCONNECT, to tell a socket closed without it from one still open.
  const logged = broker.log().split('\n').filter((line) => left.some((id) => line.includes(id)))
  t.deepEqual(left, [], `Worker clients the broker still had (or lost without DISCONNECT); its log of them: ${JSON.stringify(logged)}`)
  await printed(run, 'main still receives')
})

test('Workers terminated while their JS is busy and messages back up still end their connections', async (t) => {
  t.timeout(30_000)
  const topic = uniqueTopic('busy')
  // Each Worker's JS is busy most of the time, so its event batches wait in Node's queue and the
  // messages flooding in fill the native queue (the connection task then waits for room). Node
  // drops the batch calls still queued when it tears a Worker down, without a word: before, the
  // delivery task waited for ever for that call to complete, and the connection task for room,
  // so the socket stayed open (an fd, a tokio task, their buffers and a subscriber the broker
  // kept feeding) for the life of the process.
  const run = runScript(
    t,
    `const fs = require('node:fs')
     const { Worker } = require('node:worker_threads')
     const { PubSub } = require(process.env.MQTT_JS)
     // Sockets only: Node opens other files of its own along the way (/dev/null, once).
     const sockets = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
       try {
         return fs.readlinkSync('/proc/self/fd/' + fd).startsWith('socket:')
       } catch {
         return false // the directory's own descriptor, closed by now
       }
     }).length
     const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
     const inWorker = \`
       const { parentPort, workerData } = require('node:worker_threads')
       const { PubSub } = require(process.env.MQTT_JS)
       const pubsub = new PubSub({ endpoint: process.env.BROKER, clientId: workerData.clientId })
       pubsub.subscribe(workerData.topic, { format: 'binary' }).subscribe({ next() {} }).ready.then(() => parentPort.postMessage('ready'))
       setInterval(() => { const end = Date.now() + 200; while (Date.now() < end); }, 1)
     \`
     ;(async () => {
       const publisher = new PubSub({ endpoint: process.env.BROKER })
       await publisher.publish(process.env.TOPIC + '/warm-up', {}, { qos: 1 })
       const before = sockets()
       const ids = [0, 1, 2, 3].map((i) => 'busy-' + process.pid + '-' + i)
       const workers = ids.map((clientId, i) => new Worker(inWorker, { eval: true, workerData: { clientId, topic: process.env.TOPIC + '/' + i } }))
       await Promise.all(workers.map((worker) => new Promise((resolve) => worker.once('message', resolve))))
       console.log(JSON.stringify(ids))
       // 12 MB for each: more than the socket buffers and the native queue (4 MiB) take while
       // the Worker barely reads.
       const payload = Buffer.alloc(4096, 1)
       for (let k = 0; k < 3000; k++) for (let i = 0; i < ids.length; i++) publisher.publish(process.env.TOPIC + '/' + i, payload)
       await publisher.publish(process.env.TOPIC + '/sync', {}, { qos: 1 })
       await sleep(1000)
       await Promise.all(workers.map((worker) => worker.terminate()))
       for (let k = 0; k < 60 && sockets() > before; k++) await sleep(50)
       console.log(JSON.stringify({ before, after: sockets() }))
       await publisher.close()
     })()`,
    { BROKER: broker.tcpUrl, TOPIC: topic },
  )
  const { code } = await exitOf(t, run, 25_000)
  t.is(code, 0, run.stderr)
  const lines = run.stdout.trim().split('\n')
  const ids = JSON.parse(lines[0])
  const { before, after } = JSON.parse(lines[lines.length - 1])
  // The Workers' sockets are closed: the process has the sockets it had before them.
  t.is(after, before, `${after - before} socket(s) of terminated Workers still open`)
  const ended = (id) => broker.log().includes(`Client ${id} disconnected.`) || broker.log().includes(`Client ${id} closed its connection.`)
  await waitFor(() => ids.every(ended), 5_000, 'every Worker client to end').catch(() => {})
  t.deepEqual(ids.filter((id) => !ended(id)), [], 'Worker clients the broker still has')
})
