'use strict'
// Bounded memory under a slow subscriber: when observers fall behind, the connection stops
// reading its socket (the delivery queue holds at most 8,192 messages / 4 MiB, or 65,536 / 64 MiB
// while the instance awaits acknowledgements) and TCP and the broker hold the rest, instead of
// the process buffering everything it is sent.
const test = require('ava')
const { startMosquitto } = require('./helpers/mosquitto.js')
const { topicNamer, openPubSub, listen, recordEvents, waitFor, sleep, runScript, pubsubScript, printed } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('backpressure')

/** A mosquitto of the test's own, and a publisher connected to it. */
async function connectedPublisher(t, name) {
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  const publisher = openPubSub(t, { endpoint: broker.tcpUrl })
  const topic = uniqueTopic(name)
  await publisher.publish(topic, 'connected', { qos: 1 })
  return { broker, publisher, topic }
}

/** Busy-waits until `done()` or `ms` pass; whether it was done. It never yields to the event loop. */
function spinUntil(done, ms) {
  const end = Date.now() + ms
  while (!done()) if (Date.now() > end) return false
  return true
}

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

test('a slow subscriber keeps its connection: a PINGRESP it has not read yet is no dead broker', async (t) => {
  // While JS is behind, the connection stops reading its socket, PINGRESP included; blocked for
  // longer than the PINGRESP deadline (keepAlive / 2, here 1 s), it must read what is there
  // before it concludes that the broker stopped answering.
  t.timeout(60_000)
  const broker = await startMosquitto({ lines: ['max_queued_messages 1000000'] })
  t.teardown(() => broker.stop())
  const subscriber = openPubSub(t, { endpoint: broker.tcpUrl, keepAlive: 2 })
  const topic = uniqueTopic('slow-ping')
  let received = 0
  const sub = subscriber.subscribe(topic, { format: 'binary' }).subscribe(() => {
    received++
    const until = performance.now() + 0.5
    while (performance.now() < until) {} // 0.5 ms of synchronous work per message
  })
  await sub.ready
  const states = recordEvents(subscriber, 'ConnectionStateChange')
  const total = 12_000
  // The flood comes from another process, which the busy subscriber does not slow down.
  runScript(
    t,
    pubsubScript(`const payload = Buffer.alloc(2048, 7)
      Promise.all(Array.from({ length: ${total} }, () => pubsub.publish(${JSON.stringify(topic)}, payload, { qos: 0 }))).then(() => pubsub.close())`),
    { BROKER: broker.tcpUrl },
  )
  await waitFor(() => received === total || states.length > 0, 40_000).catch(() => {})
  t.deepEqual(states, [], 'the connection stayed up')
  t.is(received, total)
})

test('a long synchronous burst keeps feeding the connection while it runs, not only once it ends', async (t) => {
  // Rust takes a bounded backlog of publishes (4,096); past it, publishes wait in JS for its
  // `writable` event, which cannot arrive while JS is still publishing. So each full segment
  // offers itself again: once the connection has drained, the same burst goes on being sent.
  t.timeout(60_000)
  const { broker, publisher, topic } = await connectedPublisher(t, 'burst')
  const pad = 'x'.repeat(1_024)
  const sent = []
  const publish = (count) => {
    for (let i = 0; i < count; i++) sent.push(publisher.publish(topic, { i, pad }, { qos: 0 }))
  }
  const messagesSent = () => publisher.stats().messagesSent
  /** Nothing handed to rumqttc is left unwritten, and nothing more has been sent for 300 ms. */
  let last = -1
  let lastChange = 0
  const sentAllItTook = () => {
    const { messagesSent: now, inFlight } = publisher.stats()
    if (now !== last) [last, lastChange] = [now, Date.now()]
    return inFlight.operations === 0 && Date.now() - lastChange >= 300
  }

  // From here to the end of the burst, JS never yields. A frozen broker reads nothing: the
  // socket fills, then Rust's backlog, and JS holds the rest (more than Rust's 4,096 queued).
  broker.pause()
  let held = false
  for (let round = 0; round < 200 && !held; round++) {
    publish(1_000)
    spinUntil(() => false, 10) // the connection writes what the socket takes
    held = publisher.stats().queued.operations > 4_096
  }
  broker.resume()
  t.true(held, 'the burst outran the frozen connection')
  t.true(spinUntil(sentAllItTook, 20_000), 'the connection sends all it took, then stops')
  const sentBefore = messagesSent()
  t.true(sentBefore < sent.length, 'JS still holds publishes')
  publish(2 * 4_096 + 1) // fills at least one more segment
  t.true(
    spinUntil(() => messagesSent() > sentBefore, 10_000),
    'publishes held in JS reach the connection during the burst',
  )
  await Promise.all(sent)
  t.is(publisher.stats().queued.operations, 0)
})

test('the first publish of a tick is sent while the tick still runs; the ones after it go together when it ends', async (t) => {
  // So that a lone publish does not wait for the rest of the code that made it, while a burst
  // still crosses into Rust in one call.
  t.timeout(30_000)
  const { publisher, topic } = await connectedPublisher(t, 'first-of-tick')
  const messagesSent = () => publisher.stats().messagesSent
  const before = messagesSent()

  const sent = [publisher.publish(topic, { n: 1 })]
  t.true(spinUntil(() => messagesSent() === before + 1, 10_000), 'the first publish is written before the tick ends')
  sent.push(publisher.publish(topic, { n: 2 }), publisher.publish(topic, { n: 3 }))
  spinUntil(() => false, 300) // more than the connection needs to write them, were they handed over
  t.is(messagesSent(), before + 1, 'the ones after it wait for the end of the tick')
  await Promise.all(sent)
  t.is(messagesSent(), before + 3)
})

test('publishes the connection could take only part of are handed over later, complete and in order', async (t) => {
  // Past Rust's backlog (4,096 publishes) a hand-over is taken in part and the rest follows on
  // the `writable` event: records of one and of two topics, and payloads of varying sizes, must
  // come out of the same segment whole, once each and in order.
  t.timeout(60_000)
  const broker = await startMosquitto({ lines: ['max_queued_messages 1000000'] })
  t.teardown(() => broker.stop())
  const [topicA, topicB] = [uniqueTopic('partial-a'), uniqueTopic('partial-b')]
  const subscriber = openPubSub(t, { endpoint: broker.tcpUrl })
  const inboxA = await listen(t, subscriber, topicA, { qos: 1 })
  const inboxB = await listen(t, subscriber, topicB, { qos: 1 })
  const publisher = openPubSub(t, { endpoint: broker.tcpUrl })
  const N = 20_000
  const toBoth = (i) => i % 3 === 0
  const sent = []
  for (let i = 0; i < N; i++) {
    sent.push(publisher.publish(toBoth(i) ? [topicA, topicB] : topicA, { i, pad: 'p'.repeat(i % 700) }, { qos: 1 }))
  }
  t.true(publisher.stats().queued.operations > 4_096, 'the burst outran what the connection takes at once')
  await Promise.all(sent)
  // Acknowledged is not yet delivered: on a loaded 2-core machine the last of 26,667 messages
  // came more than 5 s after the last PUBACK.
  const gotA = await inboxA.take(N, 30_000)
  const gotB = await inboxB.take(Math.ceil(N / 3), 30_000)
  t.deepEqual(gotA.map((m) => m.i), Array.from({ length: N }, (_, i) => i))
  t.deepEqual(gotB.map((m) => m.i), Array.from({ length: N }, (_, i) => i).filter(toBoth))
  t.true([...gotA, ...gotB].every((m) => m.pad.length === m.i % 700), 'every payload whole')
})

/**
 * A mosquitto of the test's own, a subscriber's `for await` iterator on a topic (at QoS 1) that
 * has taken its first message, and a publisher. The loop subscribes on its own; probes
 * (`{ probe: true }`) tell when the broker has the subscription.
 */
async function forAwaitLoop(t, name) {
  const broker = await startMosquitto({ lines: ['max_queued_messages 1000000'] })
  t.teardown(() => broker.stop())
  const topic = uniqueTopic(name)
  const subscriber = openPubSub(t, { endpoint: broker.tcpUrl })
  const publisher = openPubSub(t, { endpoint: broker.tcpUrl })
  const messages = subscriber.subscribe(topic, { qos: 1 })[Symbol.asyncIterator]()
  const probes = setInterval(() => publisher.publish(topic, { probe: true }, { qos: 1 }), 50)
  await messages.next()
  clearInterval(probes)
  return { subscriber, publisher, topic, messages }
}

test('a for await loop that falls behind holds the messages back at the connection, and then gets them all in order', async (t) => {
  // Its observer only buffers, so without holding back every message would be read off the
  // socket and buffered in JS: 20 MB here, without bound in general.
  t.timeout(60_000)
  const { subscriber, publisher, topic, messages } = await forAwaitLoop(t, 'for-await')

  const N = 5_000
  const pad = 'x'.repeat(4_096)
  const sent = []
  for (let seq = 0; seq < N; seq++) sent.push(publisher.publish(topic, { seq, pad }, { qos: 1 }))
  await Promise.all(sent)
  // The loop is not reading: wait until the subscriber's connection stops taking messages in
  // (no change in 300 ms), or has taken them all.
  let received = -1
  for (let now = 0; now !== received && now < N; await sleep(300)) {
    received = now
    now = subscriber.stats().messagesReceived
  }
  received = subscriber.stats().messagesReceived
  t.log(`read off the socket while the loop waited: ${received} of ${N} messages`)
  t.true(received < N / 2, `${received} of ${N} messages were read while the loop waited`)

  const seqs = []
  while (seqs.length < N) {
    const { value, done } = await messages.next()
    if (done) break
    if (!value.probe) seqs.push(value.seq)
  }
  t.deepEqual(seqs, Array.from({ length: N }, (_, seq) => seq), 'all of them, once each, in order')
  await messages.return()
})

/** Resolves once `count()` has not changed for 300 ms, or has reached `limit`; with its value. */
async function settledCount(count, limit) {
  let last = -1
  for (let now = count(); now !== last && now < limit; await sleep(300)) {
    last = now
    now = count()
  }
  return count()
}

test('a for await loop that falls behind holds back every loop of its connection, until it leaves', async (t) => {
  // Holding back is per connection: a loop that catches up must not let the messages come
  // again while another one is still behind, whose buffer would then grow without bound.
  t.timeout(60_000)
  const broker = await startMosquitto({ lines: ['max_queued_messages 1000000'] })
  t.teardown(() => broker.stop())
  const topic = uniqueTopic('two-loops')
  const subscriber = openPubSub(t, { endpoint: broker.tcpUrl })
  const publisher = openPubSub(t, { endpoint: broker.tcpUrl })
  // Once the broker has the filter, both loops join it at once: each gets every message after it.
  await listen(t, subscriber, topic, { qos: 1 })
  const behind = subscriber.subscribe(topic, { qos: 1 })[Symbol.asyncIterator]()
  const catchingUp = subscriber.subscribe(topic, { qos: 1 })[Symbol.asyncIterator]()

  // Small messages: a batch from the connection holds hundreds of them.
  const N = 50_000
  const sent = []
  for (let seq = 0; seq < N; seq++) sent.push(publisher.publish(topic, { seq }, { qos: 1 }))
  await Promise.all(sent)
  // Neither loop reads yet: both fall behind, and the connection stops taking messages in.
  await settledCount(() => subscriber.stats().messagesReceived, N)

  // One loop catches up with everything it can get, while the other stays behind.
  const seqs = []
  const reading = (async () => {
    for (;;) {
      const { value, done } = await catchingUp.next()
      if (done) return
      seqs.push(value.seq)
    }
  })()
  await settledCount(() => seqs.length + subscriber.stats().messagesReceived, 2 * N)
  const received = subscriber.stats().messagesReceived
  t.log(`read off the socket while one loop stayed behind: ${received} of ${N} messages`)
  t.true(received < N / 2, `${received} of ${N} messages were read while a loop stayed behind`)

  // Once the loop behind leaves, the other gets every message, once each, in order.
  await behind.return()
  await waitFor(() => seqs.length >= N, 30_000, 'every message to reach the loop that caught up')
  t.deepEqual(seqs, Array.from({ length: N }, (_, seq) => seq))
  await catchingUp.return()
  await reading
})

test('a for await loop that answers each message with a publish of its own instance, and awaits it, never stalls however far behind it falls', async (t) => {
  t.timeout(120_000)
  // The acknowledgements of its replies come behind the messages it holds back: they reach it
  // anyway, and the connection reads on past the usual bound (8,192 messages) while the
  // instance awaits them.
  // mosquitto's default of 1,000 queued messages per client would drop requests here.
  const broker = await startMosquitto({ lines: ['max_queued_messages 1000000'] })
  t.teardown(() => broker.stop())
  const publisher = openPubSub(t, { endpoint: broker.tcpUrl })
  const topic = uniqueTopic('requests')
  const responder = openPubSub(t, { endpoint: broker.tcpUrl })
  const N = 12_000
  let answered = 0
  const serving = (async () => {
    for await (const request of responder.subscribe(topic, { qos: 1 })) {
      await responder.publish(`${topic}/reply`, request, { qos: 1 })
      if (++answered === N) break
    }
  })()
  await waitFor(() => responder.connectionState === 'Connected', 5_000, 'the responder subscribed')
  await sleep(200)
  await Promise.all(Array.from({ length: N }, (_, i) => publisher.publish(topic, i, { qos: 1 })))
  await waitFor(() => answered === N, 90_000, `all ${N} answered (${answered} so far)`)
  await serving
  t.is(answered, N)
})

test('close() ends a for await loop that falls behind, also when it falls behind after close()', async (t) => {
  t.timeout(30_000)
  const { subscriber, publisher, topic, messages } = await forAwaitLoop(t, 'for-await-close')
  const sent = []
  for (let seq = 0; seq < 2_000; seq++) sent.push(publisher.publish(topic, { seq, pad: 'x'.repeat(4_096) }, { qos: 1 }))
  // Still in the same tick: the subscriber's connection has read hundreds of messages that JS
  // has not had yet. They reach the loop after close(), and it falls behind only then.
  t.true(spinUntil(() => subscriber.stats().messagesReceived >= 600, 10_000), 'the subscriber read 600 messages')
  const closed = subscriber.close()
  // The `closed` event must not wait behind messages held back, before or after close().
  await closed
  let taken = 0
  while (!(await messages.next()).done) taken++
  t.true(taken >= 256, `the loop still gets what had arrived (${taken})`)
  await Promise.all(sent)
})
