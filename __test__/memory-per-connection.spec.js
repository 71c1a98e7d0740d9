'use strict'
// What one connection costs in memory. Servers that hold a connection per tenant or per device
// open hundreds of PubSub instances; each should cost little once connected.
const test = require('ava')
const { startMosquitto } = require('./helpers/mosquitto.js')
const { runScript, pubsubScript } = require('./helpers/pubsub.js')

const CONNECTIONS = 100

test(`a WebSocket connection that has received messages costs under 200 KiB of RSS (${CONNECTIONS} connections)`, async (t) => {
  t.timeout(60_000)
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  // A process of its own, so that only these connections are measured. Each one subscribes and
  // receives a few messages, so that its read path (and any read buffer) has been used.
  const run = runScript(
    t,
    pubsubScript(
      `const rssKiB = () => { global.gc(); return process.memoryUsage.rss() / 1024 }
       ;(async () => {
         await pubsub.publish('memory/warmup', { warm: true }, { qos: 1 })
         const before = rssKiB()
         const connect = async (i) => {
           const connection = new PubSub({ endpoint: process.env.WS_BROKER })
           let received = 0
           let done
           const all = new Promise((resolve) => (done = resolve))
           const subscription = connection.subscribe('memory/' + i).subscribe(() => ++received === 3 && done())
           await subscription.ready
           for (let k = 0; k < 3; k++) await pubsub.publish('memory/' + i, { k, pad: 'x'.repeat(1000) }, { qos: 1 })
           await all
           return { connection, subscription }
         }
         const open = await Promise.all(Array.from({ length: ${CONNECTIONS} }, (_, i) => connect(i)))
         const perConnectionKiB = (rssKiB() - before) / ${CONNECTIONS}
         console.log(JSON.stringify({ perConnectionKiB }))
         for (const { connection, subscription } of open) {
           subscription.unsubscribe()
           await connection.close()
         }
         await pubsub.close()
       })()`,
    ),
    // The measured connections use WebSocket; the publisher uses the MQTT listener, where
    // Debian's mosquitto does not stall.
    { BROKER: broker.tcpUrl, WS_BROKER: broker.wsUrl },
    { nodeArgs: ['--expose-gc'] },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  const { perConnectionKiB } = JSON.parse(run.stdout.trim().split('\n').pop())
  t.log(`${perConnectionKiB.toFixed(0)} KiB per connection`)
  // 150–155 KiB here. tungstenite's default 128 KiB read buffer, zero-filled before every read
  // and so all resident, made it 254–270 KiB (vendor/rumqttc/PATCHED.md).
  t.true(perConnectionKiB < 200, `${perConnectionKiB.toFixed(0)} KiB per connection`)
})

/**
 * Runs `useOne(i)` (the source of an async function that makes an instance with
 * `new PubSub(...)`, registers it with `registry` and uses it) for i = 0..19 in a script of its
 * own, then collects garbage until all 20 instances are gone or 50 collections have run;
 * resolves with how many were collected.
 */
async function collectedInstances(t, broker, useOne) {
  const run = runScript(
    t,
    pubsubScript(
      `let collected = 0
       const registry = new FinalizationRegistry(() => collected++)
       const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
       const useOne = ${useOne}
       ;(async () => {
         await pubsub.close()
         for (let i = 0; i < 20; i++) await useOne(i)
         for (let k = 0; k < 50 && collected < 20; k++) {
           global.gc()
           await sleep(20)
         }
         await sleep(200) // for the DISCONNECTs the collected instances' native clients send
         console.log(JSON.stringify({ collected }))
       })()`,
    ),
    { BROKER: broker.tcpUrl },
    { nodeArgs: ['--expose-gc'] },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  return JSON.parse(run.stdout.trim().split('\n').pop()).collected
}

test('a closed instance is garbage-collected: a server that opens and closes instances does not grow', async (t) => {
  t.timeout(60_000)
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  // Each instance connects, subscribes and publishes, and is closed; once nothing refers to it,
  // the garbage collector reclaims it (and, with it, its native client).
  const collected = await collectedInstances(
    t,
    broker,
    `async (i) => {
       const instance = new PubSub({ endpoint: process.env.BROKER })
       registry.register(instance, i)
       await instance.subscribe('memory/closed/' + i).subscribe({ next() {} }).ready
       await instance.publish('memory/closed/' + i, { i }, { qos: 1 })
       await instance.close()
     }`,
  )
  // Every one of the 20. Before, none was ever collected: the native client's event callback, a
  // GC root, held each instance.
  t.is(collected, 20)
})

test('an instance dropped without close() is garbage-collected once idle, and its connection ends', async (t) => {
  t.timeout(60_000)
  const broker = await startMosquitto({ lines: ['log_type notice', 'connection_messages true'] })
  t.teardown(() => broker.stop())
  // Half of them connected (a publish) and then sat idle; half never connected. Nothing refers
  // to any of them once the function returns.
  const collected = await collectedInstances(
    t,
    broker,
    `async (i) => {
       const instance = new PubSub({ endpoint: process.env.BROKER, clientId: 'dropped-' + i })
       registry.register(instance, i)
       if (i % 2 === 0) await instance.publish('memory/dropped/' + i, { i }, { qos: 1 })
     }`,
  )
  t.is(collected, 20)
  // The ten that connected said DISCONNECT when they were collected, not at the process's exit.
  const log = broker.log()
  for (let i = 0; i < 20; i += 2) t.regex(log, new RegExp(`Client dropped-${i} disconnected\\.`))
})

test('Hub channels that nobody listens on any more are forgotten: listening per request does not grow', async (t) => {
  t.timeout(60_000)
  // No broker: Hub needs none. A process of its own, for a heap measured after collection.
  const run = runScript(
    t,
    `const { Hub } = require(process.env.MQTT_JS)
     const heapKiB = () => { global.gc(); return process.memoryUsage().heapUsed / 1024 }
     const listenOnce = (i) => Hub.listen('request/' + i + '/' + 'x'.repeat(64), () => {})()
     for (let i = 0; i < 10_000; i++) listenOnce(i)
     const before = heapKiB()
     for (let i = 10_000; i < 110_000; i++) listenOnce(i)
     console.log(JSON.stringify({ growthKiB: heapKiB() - before }))`,
    {},
    { nodeArgs: ['--expose-gc'] },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  const { growthKiB } = JSON.parse(run.stdout.trim().split('\n').pop())
  t.log(`heap grew ${growthKiB.toFixed(0)} KiB over 100,000 channels listened on and stopped`)
  // Before, each stopped channel kept its name and an empty Set: 41 MiB for 100,000.
  t.true(growthKiB < 4096, `${growthKiB.toFixed(0)} KiB`)
})

test("a server that opens and closes publishing instances does not hold a publish buffer per closed instance until the next collection", async (t) => {
  t.timeout(60_000)
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  // No gc() here: what is measured is what waits for V8 to collect the closed instances.
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const externalKiB = () => process.memoryUsage().arrayBuffers / 1024
     const publishOnce = async (i) => {
       const instance = new PubSub({ endpoint: process.env.BROKER })
       await instance.publish('memory/churn/' + i, { i })
       await instance.close()
     }
     ;(async () => {
       for (let i = 0; i < 5; i++) await publishOnce(i)
       const before = externalKiB()
       for (let i = 5; i < 205; i++) await publishOnce(i)
       console.log(JSON.stringify({ growthKiB: externalKiB() - before }))
     })()`,
    { BROKER: broker.tcpUrl },
  )
  const { code } = await run.exited
  t.is(code, 0, run.stderr)
  const { growthKiB } = JSON.parse(run.stdout.trim().split('\n').pop())
  t.log(`ArrayBuffers grew ${growthKiB.toFixed(0)} KiB over 200 instances`)
  // Before, each closed instance kept its 256 KiB segment until collected: 51,450 KiB for 200.
  t.true(growthKiB < 4096, `${growthKiB.toFixed(0)} KiB`)
})
