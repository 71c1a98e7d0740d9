'use strict'
// Bounded memory under a slow subscriber: when observers fall behind, the connection stops
// reading its socket (the delivery queue holds at most 8,192 messages / 4 MiB) and TCP and the
// broker hold the rest, instead of the process buffering everything it is sent.
const test = require('ava')
const { startMosquitto } = require('./helpers/mosquitto.js')
const { topicNamer, openPubSub, runScript, pubsubScript, printed } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('backpressure')

test('a subscriber taking 1 ms per message gets all 50,000 QoS 1 messages of 4 KiB with bounded memory', async (t) => {
  t.timeout(180_000)
  // mosquitto's default of 1,000 queued messages per client would drop QoS 1 messages here.
  const broker = await startMosquitto({ lines: ['max_queued_messages 1000000'] })
  t.teardown(() => broker.stop())
  const topic = uniqueTopic('slow')
  const N = 50_000
  // The subscriber runs in a process of its own, so that its memory is measured alone.
  const subscriber = runScript(
    t,
    pubsubScript(
      `const seen = new Uint8Array(${N})
       let count = 0
       let duplicates = 0
       const pause = new Int32Array(new SharedArrayBuffer(4))
       const sub = pubsub.subscribe(process.env.TOPIC, { qos: 1 }).subscribe(({ seq }) => {
         Atomics.wait(pause, 0, 0, 1) // a slow consumer: 1 ms per message
         if (seen[seq]) duplicates++
         seen[seq] = 1
         if (++count === ${N} + duplicates) {
           const peakMB = Number(/VmHWM:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]) / 1024
           console.log(JSON.stringify({ missing: seen.indexOf(0), duplicates, peakMB }))
           sub.unsubscribe()
         }
       })
       sub.ready.then(() => console.log('ready'))`,
      { cleanSession: true },
    ),
    { BROKER: broker.tcpUrl, TOPIC: topic },
  )
  await printed(subscriber, 'ready')

  const publisher = openPubSub(t, { endpoint: broker.tcpUrl })
  const pad = 'x'.repeat(4_096)
  const sent = []
  for (let seq = 0; seq < N; seq++) sent.push(publisher.publish(topic, { seq, pad }, { qos: 1 }))
  await Promise.all(sent)

  const { code } = await subscriber.exited
  t.is(code, 0, subscriber.stderr)
  const result = JSON.parse(subscriber.stdout.split('\n')[1])
  t.is(result.missing, -1, 'no message missing')
  t.log(`subscriber peak RSS ${result.peakMB.toFixed(0)} MB for ${((N * 4_096) / 2 ** 20).toFixed(0)} MiB of payloads; duplicates: ${result.duplicates}`)
  // Buffering everything would take well over 200 MB; the bound is the delivery queue.
  t.true(result.peakMB < 150, `peak RSS ${result.peakMB} MB`)
})

test('a long synchronous burst keeps feeding the connection while it runs, not only once it ends', async (t) => {
  // Rust takes a bounded backlog of publishes; past it, publishes wait in JS for its `writable`
  // event, which cannot arrive while JS is still publishing. So each full segment offers itself
  // again: once the connection has drained, the same burst goes on being sent.
  t.timeout(60_000)
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  const publisher = openPubSub(t, { endpoint: broker.tcpUrl })
  const topic = uniqueTopic('burst')
  await publisher.publish(topic, 'connected', { qos: 1 })
  const sent = []
  const publish = (count) => {
    for (let i = 0; i < count; i++) sent.push(publisher.publish(topic, { i }, { qos: 0 }))
  }
  // Busy-waits: the point is to stay inside one synchronous burst.
  const spinUntil = (done, ms) => {
    const end = Date.now() + ms
    while (!done()) if (Date.now() > end) return false
    return true
  }
  const drained = () => publisher.stats().inFlight.operations === 0

  // Publish until Rust has turned publishes away: once it has sent all it took, JS still holds
  // at least a full segment (4,096), which it would otherwise have handed over.
  let refused = false
  for (let round = 0; round < 20 && !refused; round++) {
    publish(10_000)
    t.true(spinUntil(drained, 10_000), 'the connection sends what it took')
    refused = publisher.stats().queued.operations >= 4_096
  }
  t.true(refused, 'the burst outran the connection')

  const sentBefore = publisher.stats().messagesSent
  publish(2 * 4_096 + 1) // fills at least one more segment
  t.true(
    spinUntil(() => publisher.stats().messagesSent > sentBefore, 10_000),
    'publishes held in JS reach the connection during the burst',
  )
  await Promise.all(sent)
  t.is(publisher.stats().queued.operations, 0)
})
