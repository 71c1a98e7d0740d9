'use strict'
// Connections that survive: automatic reconnect with backoff, subscriptions renewed, the
// offline queue, no QoS 1 message lost — proved by fault injection against real brokers:
// mosquitto stopped and restarted (SIGTERM, SIGKILL), frozen (SIGSTOP), and connections cut by
// a loopback TCP proxy the tests control (drop, black-hole, half-close, refuse).
const test = require('ava')
const { PubSub, Hub } = require('../mqtt.js')
const { startMosquitto, useMosquitto, freePort } = require('./helpers/mosquitto.js')
const { startTcpProxy } = require('./helpers/tcp-proxy.js')
const { startMqttProxy, cutAtClientsFirst, parsePublish, PACKET_TYPE } = require('./helpers/mqtt-proxy.js')
const { startAedes } = require('./helpers/aedes.js')
const { startFakeBroker, packets, SUBSCRIBE } = require('./helpers/fake-broker.js')
const { topicNamer, openPubSub, receiver, observe, listen, recordEvents, captureWarnings, mqttJs, runScript, pubsubScript, printed, waitFor, sleep, plain, uniqueClientId, subscribed } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('reconnect')
/** Short waits so that the tests run in seconds; the defaults are 1 s to 120 s. */
const FAST = { minDelayMs: 100, maxDelayMs: 400 }

const sharedBroker = useMosquitto(test)

/** A mosquitto of the test's own (the test may stop, freeze or restart it). */
async function ownBroker(t, settings) {
  const broker = await startMosquitto(settings)
  t.teardown(() => broker.stop())
  return broker
}

/** A proxy in front of `target` (a URL), stopped when the test ends. */
async function proxyTo(t, target) {
  const proxy = await startTcpProxy({ target })
  t.teardown(() => proxy.stop())
  return proxy
}

/** Resolves once `states` (a recordEvents array) has `state` after index `from`. */
function reached(states, state, from = 0, timeoutMs = 10_000) {
  return waitFor(() => states.indexOf(state, from) !== -1, timeoutMs, `state ${state}`)
}

// --------------------------------------------------------------------- losing the broker

for (const signal of ['SIGTERM', 'SIGKILL']) {
  test(`a broker restart (${signal}) is survived: states in Amplify's order, the subscription keeps receiving`, async (t) => {
    const broker = await ownBroker(t)
    const pubsub = openPubSub(t, { endpoint: broker.wsUrl, reconnect: FAST })
    const states = recordEvents(pubsub, 'ConnectionStateChange')
    const hubStates = []
    const stopListening = Hub.listen('pubsub', ({ payload }) => {
      if (payload.data.provider === pubsub) hubStates.push(payload.data.connectionState)
    })
    t.teardown(stopListening)
    const topic = uniqueTopic(signal)
    const inbox = await listen(t, pubsub, topic, { qos: 1 })
    const before = states.length

    await broker.restart({ signal })
    await reached(states, 'Connected', before)
    // Attempts made while the broker is still down add Connecting → ConnectionDisrupted pairs.
    t.regex(states.slice(before).join(' '), /^ConnectionDisrupted (Connecting ConnectionDisrupted )*Connecting Connected$/)
    t.deepEqual(hubStates, states, 'Hub sees each transition once, as the instance does')

    const other = await mqttJs(t, broker.tcpUrl)
    // The renewed SUBSCRIBE may still be on its way: publish until one arrives.
    const sender = setInterval(() => other.client.publish(topic, JSON.stringify({ after: signal }), { qos: 1 }), 100)
    t.teardown(() => clearInterval(sender))
    const [message] = await inbox.take(1)
    t.deepEqual(plain(message), { after: signal })
    t.deepEqual(inbox.errors, [], 'a transient loss never reaches error')
    t.is(pubsub.stats().reconnects, 1)
  })
}

/** Publishes to `topic` from another client until `inbox` has a message, which it returns. */
async function receivedAfterRestart(t, broker, topic, inbox) {
  const other = await mqttJs(t, broker.tcpUrl)
  // The renewed SUBSCRIBE may still be on its way: publish until one arrives.
  const sender = setInterval(() => other.client.publish(topic, JSON.stringify({ back: true }), { qos: 1 }), 100)
  t.teardown(() => clearInterval(sender))
  const [message] = await inbox.take(1)
  clearInterval(sender)
  return plain(message)
}

test('with a will and nothing subscribed, a lost connection is made again: the will stays armed for as long as the instance lives', async (t) => {
  const broker = await ownBroker(t)
  const willTopic = uniqueTopic('will-armed')
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl, reconnect: FAST, will: { topic: willTopic, message: 'gone', qos: 1 } })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const subscription = pubsub.subscribe(uniqueTopic('once')).subscribe({ next() {} })
  await subscription.ready
  subscription.unsubscribe()
  await broker.restart({ signal: 'SIGKILL' })
  const before = states.lastIndexOf('ConnectionDisrupted')
  t.true(before !== -1, states.join(' '))
  await reached(states, 'Connected', before)
  t.is(pubsub.connectionState, 'Connected')
  t.is(pubsub.stats().reconnects, 1)
})

test('with a will, a subscribe that calls off the disconnect Node\'s exit began arms the will again: a later loss is made good', async (t) => {
  // Node's beforeExit begins a graceful disconnect (ConnectedPendingDisconnect while an
  // UNSUBACK is due: the broker is frozen), and the application's own beforeExit subscribes.
  t.timeout(30_000)
  const broker = await ownBroker(t)
  const run = runScript(
    t,
    pubsubScript(
      `let phase = ''
       pubsub.on('ConnectionStateChange', (state) => console.log(phase + state))
       let exiting = false
       process.on('beforeExit', async () => {
         if (exiting) return
         exiting = true
         const again = pubsub.subscribe(process.env.TOPIC + '/again').subscribe({ next() {} })
         setInterval(() => {}, 1_000) // the application goes on
         await again.ready
         again.unsubscribe()
         phase = 'after: '
         console.log('idle')
       })
       const first = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
       first.ready.then(() => console.log('ready'))
       process.stdin.once('data', () => first.unsubscribe())
       process.stdin.resume()
       process.stdin.unref()`,
      { reconnect: FAST, will: { topic: 'will/called-off', message: 'gone' } },
    ),
    { BROKER: broker.tcpUrl, TOPIC: uniqueTopic('called-off') },
    { stdin: 'pipe' },
  )
  await printed(run, 'ready')
  broker.pause()
  run.child.stdin.write('unsubscribe\n')
  await printed(run, 'ConnectedPendingDisconnect')
  broker.resume()
  await printed(run, 'idle')
  t.regex(run.stdout, /ConnectedPendingDisconnect\nConnected\n/, 'the disconnect was begun, then called off')
  await broker.restart({ signal: 'SIGKILL' })
  await printed(run, 'after: Connected', 15_000)
  t.regex(run.stdout, /after: ConnectionDisrupted\n(after: Connecting\nafter: ConnectionDisrupted\n)*after: Connecting\nafter: Connected\n/)
})

test("each transient failure is a 'connectionDisrupted' event with its reason and the wait before the next attempt", async (t) => {
  const broker = await ownBroker(t)
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  const topic = uniqueTopic('disrupted-event')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  const before = states.length

  // Down long enough for at least one attempt to fail too.
  await broker.restart({ signal: 'SIGKILL', downMs: 1_000 })
  await reached(states, 'Connected', before)
  const disrupted = states.slice(before).filter((s) => s === 'ConnectionDisrupted').length
  t.is(disruptions.length, disrupted, 'one event per ConnectionDisrupted')
  t.true(disruptions.length >= 2, 'the loss and at least one failed attempt')
  for (const { error, retryInMs } of disruptions) {
    t.true(error instanceof Error)
    t.is(error.code, 'ERR_CONNECTION')
    t.is(typeof error.message, 'string')
    t.true(error.message.length > 0)
    t.is(typeof retryInMs, 'number')
    t.true(retryInMs >= FAST.minDelayMs && retryInMs <= FAST.maxDelayMs, `retryInMs ${retryInMs}`)
  }
  t.deepEqual(await receivedAfterRestart(t, broker, topic, inbox), { back: true })
  t.deepEqual(inbox.errors, [], 'a transient loss never reaches error')
})

test("without a 'connectionDisrupted' listener, failed attempts are warned about once per error code, not retried in silence", async (t) => {
  // A broker that is not there (yet): a port nothing listens on.
  const port = await freePort()
  const pubsub = openPubSub(t, { endpoint: `ws://127.0.0.1:${port}/mqtt`, reconnect: { minDelayMs: 50, maxDelayMs: 100 } })
  // Other tests of this file warn too, each about its own broker.
  const warnings = captureWarnings(t, `127.0.0.1:${port}`)
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  pubsub.subscribe(uniqueTopic('nobody-there')).subscribe({ next: () => t.fail('no broker, no message') })
  await waitFor(() => states.filter((s) => s === 'ConnectionDisrupted').length >= 3, 10_000, 'three failed attempts')
  t.is(warnings.length, 1, warnings.map((w) => w.message).join('\n'))
  t.regex(warnings[0].message, new RegExp(`^The connection failed or was lost \\(ERR_CONNECTION: .*127\\.0\\.0\\.1:${port}.*\\); reconnecting in \\d+ ms`))
  t.regex(warnings[0].message, /Listen for 'connectionDisrupted' events/)

  // Someone listening hears every failure instead, and nothing more is warned.
  const quiet = openPubSub(t, { endpoint: `ws://127.0.0.1:${port}/mqtt`, reconnect: { minDelayMs: 50, maxDelayMs: 100 } })
  const disruptions = recordEvents(quiet, 'connectionDisrupted')
  quiet.subscribe(uniqueTopic('nobody-there')).subscribe({ next: () => t.fail('no broker, no message') })
  await waitFor(() => disruptions.length >= 3, 10_000, 'three failed attempts heard')
  t.is(warnings.length, 1)
})

test("a 'connectionDisrupted' listener that throws does not stop the reconnect", async (t) => {
  const broker = await ownBroker(t)
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const warnings = captureWarnings(t, "'connectionDisrupted' listener threw")
  let heard = 0
  pubsub.on('connectionDisrupted', () => {
    heard++
    throw new Error('a listener that throws')
  })
  const topic = uniqueTopic('disrupted-throws')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  const before = states.length

  await broker.restart({ signal: 'SIGKILL' })
  await reached(states, 'Connected', before)
  t.true(heard >= 1, 'the listener was called')
  t.deepEqual(await receivedAfterRestart(t, broker, topic, inbox), { back: true })
  t.deepEqual(inbox.errors, [])
  t.is(warnings.length, 1, 'the throw is reported once, as a throwing listener of ours')
})

test('subscriptions are renewed before the publishes queued while down go out', async (t) => {
  const { pubsub, topic, inbox, reconnect } = await disconnected(t)
  // The broker forgot the clean session's subscription: only a SUBSCRIBE sent before this
  // publish lets it come back to us.
  const published = pubsub.publish(topic, { queued: true }, { qos: 1 })
  t.is(pubsub.stats().queued.operations, 1)
  reconnect()
  await published
  t.deepEqual(plain((await inbox.take(1))[0]), { queued: true })
})

test('a filter left by its last observer and subscribed again while the connection is down still receives once it is back', async (t) => {
  const { pubsub, topic, inbox, reconnect } = await disconnected(t)
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  // Another subscription keeps the connection wanted, as on a server with many.
  pubsub.subscribe(uniqueTopic('stays'), { qos: 1 }).subscribe({ next() {} })
  // The last observer of `topic` leaves (an UNSUBSCRIBE waits for the connection) and another
  // observer takes the filter again (a SUBSCRIBE waits after it).
  inbox.sub.unsubscribe()
  const again = observe(pubsub.subscribe(topic, { qos: 1 }))
  t.teardown(() => again.subscription.unsubscribe())
  // A failed attempt takes the waiting requests back, as a loss does.
  await waitFor(() => disruptions.length >= 1, 10_000, 'a failed attempt')
  reconnect()
  await again.subscription.ready
  const other = await mqttJs(t, sharedBroker.tcpUrl)
  await sleep(200)
  await other.client.publishAsync(topic, JSON.stringify('back'), { qos: 1 })
  // Before, the renewal's SUBSCRIBE went first and the stale UNSUBSCRIBE after it: the broker
  // dropped the subscription, and nothing reached the observer ever again (the soak test found it).
  t.deepEqual(await again.take(1), ['back'])
  t.deepEqual(again.errors, [])
})

test('a frozen broker (SIGSTOP) is detected within 1.5 x keepAlive, and the connection comes back when it thaws', async (t) => {
  const broker = await ownBroker(t)
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl, keepAlive: 1, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const topic = uniqueTopic('frozen')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  broker.pause()
  const frozenAt = Date.now()
  await reached(states, 'ConnectionDisrupted', 0, 5_000)
  const detectedAfter = Date.now() - frozenAt
  t.true(detectedAfter <= 1_500 + 300, `detected after ${detectedAfter} ms`)
  broker.resume()
  await reached(states, 'Connected', states.lastIndexOf('ConnectionDisrupted'))
  await pubsub.publish(topic, 'thawed', { qos: 1 })
  t.is((await inbox.take(1))[0], 'thawed')
})

/**
 * A client of `proxy` with a persistent session (cleanSession false, a client id of its own)
 * that reconnects at once, and the states it goes through.
 */
function persistentSession(t, proxy, name) {
  const pubsub = openPubSub(t, { endpoint: proxy.url, clientId: uniqueClientId(name), cleanSession: false, reconnect: FAST })
  return { pubsub, states: recordEvents(pubsub, 'ConnectionStateChange') }
}

test('a persistent QoS 2 session cut between PUBREC and PUBREL resumes once: the PUBREL sent again is answered', async (t) => {
  // The broker owes us a PUBREL for a message we received and acknowledged with PUBREC; on the
  // resumed session it sends it again, for a packet id the reconnect made the client forget.
  const broker = await ownBroker(t)
  let pubrecs = 0
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, connection }) {
      // The first PUBREC reaches the broker; its PUBREL never reaches us.
      if (fromClient && type === 5 && ++pubrecs === 1) connection.cut(100)
    },
  })
  t.teardown(() => proxy.stop())
  const { pubsub, states } = persistentSession(t, proxy, 'qos2-session')
  const topic = uniqueTopic('qos2-session')
  const inbox = await listen(t, pubsub, topic, { qos: 2 })
  const other = await mqttJs(t, broker.tcpUrl)
  await other.client.publishAsync(topic, JSON.stringify('once'), { qos: 2 })

  t.deepEqual(await inbox.take(1), ['once'])
  await waitFor(() => states.length >= 5, 5_000, 'the reconnection')
  await sleep(1_500) // several backoff waits: a loop would have gone round by now
  t.deepEqual(states, ['Connecting', 'Connected', 'ConnectionDisrupted', 'Connecting', 'Connected'])
  t.is(pubsub.stats().reconnects, 1)
  t.is(inbox.values.length, 1)
})

for (const qos of [1, 2]) {
  test(`on a resumed session a QoS ${qos} publish left unacknowledged is sent again with its packet id and DUP (MQTT-4.4.0-1)`, async (t) => {
    const topic = uniqueTopic(`resend-qos${qos}`)
    const sent = [] // the client's PUBLISH packets to `topic`, as the broker gets them
    let cut = false
    const proxy = await startMqttProxy({
      targetPort: sharedBroker.tcpPort,
      onPacket({ fromClient, type, packet, connection }) {
        if (fromClient && type === 3) {
          const publish = parsePublish(packet)
          if (publish.topic === topic) sent.push(publish)
        }
        // The broker has the PUBLISH; its first PUBACK (QoS 1) or PUBREC (QoS 2) never reaches us.
        if (!fromClient && type === (qos === 1 ? 4 : 5) && !cut && sent.length > 0) {
          cut = true
          connection.cut()
          return false
        }
      },
    })
    t.teardown(() => proxy.stop())
    const { pubsub, states } = persistentSession(t, proxy, 'resend')
    const warmUp = uniqueTopic('warm-up')
    // Moves the packet id counter on, so that a new publish would get another id.
    for (let i = 0; i < 3; i++) await pubsub.publish(warmUp, i, { qos: 1 })
    const outcome = await settledWithin(pubsub.publish(topic, 'once', { qos }), 10_000)
    t.deepEqual(outcome, { value: undefined })
    t.true(cut, 'the connection was cut before the acknowledgement')
    t.deepEqual(states, ['Connecting', 'Connected', 'ConnectionDisrupted', 'Connecting', 'Connected'])
    t.is(sent.length, 2, JSON.stringify(sent))
    const [first, again] = sent
    t.like(first, { qos, dup: 0 })
    t.deepEqual(again, { ...first, dup: 1 }, 'the same packet id, DUP set')
  })
}

// ----------------------------------------------------- a publish the broker refuses by closing

/** `{ value }`, `{ error }`, or `{ pending: true }` if `promise` has not settled within `ms`. */
async function settledWithin(promise, ms) {
  let timer
  const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve({ pending: true }), ms)))
  try {
    return await Promise.race([promise.then((value) => ({ value }), (error) => ({ error })), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Publishes `tooBig` (which makes the broker drop the connection) and right behind it a normal
 * message to the subscribed `topic`; the big one must reject alone with ERR_PAYLOAD, within
 * bounded time, and the instance, its subscription and later publishes carry on.
 */
async function refusedAlone(t, pubsub, topic, tooBig) {
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  const startedAt = Date.now()
  const refused = settledWithin(tooBig(), 10_000)
  const behind = pubsub.publish(topic, 'behind it', { qos: 1 })
  const outcome = await refused
  t.falsy(outcome.pending, 'the refused publish settles (it was re-sent after every reconnect forever)')
  t.is(outcome.error?.code, 'ERR_PAYLOAD', `${outcome.error?.code}: ${outcome.error?.message}`)
  t.regex(outcome.error.message, /dropped the connection each time this publish to '[^']+' arrived \(3 times in a row\)/)
  t.true(Date.now() - startedAt < 10_000)
  await behind
  await pubsub.publish(topic, 'after it', { qos: 1 })
  t.deepEqual(await inbox.take(2), ['behind it', 'after it'])
  t.deepEqual(inbox.errors, [], 'the subscription never failed')
  t.is(pubsub.connectionState, 'Connected')
  t.is(pubsub.stats().reconnects, 3, 'three losses, then no more')
  t.is(states.at(-1), 'Connected')
  await sleep(500) // backoff waits: a loop would have gone round again by now
  t.is(pubsub.stats().reconnects, 3)
}

for (const [qos, cleanSession] of [[1, true], [2, true], [1, false]]) {
  const session = cleanSession ? '' : ' (kept session: re-sent under its packet id)'
  test(`a QoS ${qos} publish over the broker's max_packet_size (it resets the connection) rejects ERR_PAYLOAD alone; the rest carries on${session}`, async (t) => {
    const broker = await ownBroker(t, { lines: ['max_packet_size 2000'] })
    const clientId = uniqueClientId('max-packet')
    const pubsub = openPubSub(t, { endpoint: broker.tcpUrl, clientId, cleanSession, reconnect: FAST })
    await refusedAlone(t, pubsub, uniqueTopic('max-packet'), () => pubsub.publish(uniqueTopic('too-big'), Buffer.alloc(4000), { qos }))
  })
}

test("a subscribe call of 5,000 filters (~300 KB) goes in SUBSCRIBEs of at most 64 KiB, within the broker's max_packet_size, and so does their renewal after a reconnect", async (t) => {
  // mosquitto closes the connection on a packet over max_packet_size. One SUBSCRIBE of all the
  // filters was dropped so on the first connection, and so was its renewal after the restart
  // (three closes that ended as ERR_CLIENT_ID_TAKEOVER).
  const broker = await ownBroker(t, { lines: ['max_packet_size 70000'] })
  const subscribeSizes = []
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet }) {
      if (fromClient && type === PACKET_TYPE.SUBSCRIBE) subscribeSizes.push(packet.length)
    },
  })
  t.teardown(() => proxy.stop())
  const filters = manyFilters('many-filters', 5_000)
  const filterBytes = filters.reduce((sum, filter) => sum + Buffer.byteLength(filter) + 3, 0)
  t.true(filterBytes > 3 * 70_000, `${filterBytes} bytes of filters`)
  const pubsub = openPubSub(t, { endpoint: proxy.url, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const inbox = observe(pubsub.subscribe(filters, { qos: 1 }))
  t.teardown(() => inbox.subscription.unsubscribe())
  const ready = await settledWithin(inbox.subscription.ready, 20_000)
  t.falsy(ready.pending || ready.error, `ready: ${JSON.stringify(ready)}`)
  t.is(pubsub.stats().reconnects, 0, 'the broker never dropped a SUBSCRIBE')
  const within = (sizes) => sizes.length >= 4 && sizes.every((size) => size <= 65_536)
  t.true(within(subscribeSizes), `SUBSCRIBE sizes: ${subscribeSizes}`)
  const other = await mqttJs(t, broker.tcpUrl)
  await other.client.publishAsync(filters.at(-1), JSON.stringify('before'), { qos: 1 })
  t.deepEqual(await inbox.take(1), ['before'])

  // A restarted broker (no persistence) forgot the subscriptions: the renewal sends them all.
  const firstConnection = subscribeSizes.length
  const before = states.length
  await broker.restart()
  await reached(states, 'Connected', before)
  const again = await mqttJs(t, broker.tcpUrl)
  // The renewal may still be on its way: publish until one arrives.
  const sender = setInterval(() => again.client.publish(filters.at(-2), JSON.stringify('after'), { qos: 1 }), 100)
  t.teardown(() => clearInterval(sender))
  t.is((await inbox.take(2))[1], 'after')
  clearInterval(sender)
  t.true(within(subscribeSizes.slice(firstConnection)), `renewal SUBSCRIBE sizes: ${subscribeSizes.slice(firstConnection)}`)
  t.is(pubsub.stats().reconnects, 1, 'the renewal was not dropped either')
  t.deepEqual(inbox.errors, [])
})

/** `count` filters `<unique topic>/devices/<i>/status`. */
function manyFilters(name, count) {
  const base = uniqueTopic(name)
  return Array.from({ length: count }, (_, id) => `${base}/devices/${id}/status`)
}

/** Subscribes `filters` in one call through `endpoint`; checks that it ends ready, after a loss. */
async function readyAfterDroppedSubscribes(t, endpoint, filters, timeoutMs) {
  const pubsub = openPubSub(t, { endpoint, reconnect: FAST })
  const inbox = observe(pubsub.subscribe(filters, { qos: 1 }))
  t.teardown(() => inbox.subscription.unsubscribe())
  const ready = await settledWithin(inbox.subscription.ready, timeoutMs)
  t.falsy(ready.pending || ready.error, `ready: ${JSON.stringify(ready)}`)
  t.true(pubsub.stats().reconnects >= 1, 'the broker dropped a SUBSCRIBE')
  return { pubsub, inbox }
}

test("under a broker's max_packet_size smaller than a SUBSCRIBE of 64 KiB, subscribing 10,000 filters still ends ready: each dropped SUBSCRIBE's filters are renewed one at a time", async (t) => {
  // Each loss leaves the first SUBSCRIBE written unacknowledged. When only those were renewed
  // one at a time, the next renewal's first big SUBSCRIBE was dropped instead, and the renewals
  // alternated between big SUBSCRIBEs, dropped every time, forever.
  const broker = await ownBroker(t, { lines: ['max_packet_size 20000'] })
  const filters = manyFilters('small-max-packet', 10_000)
  const { inbox } = await readyAfterDroppedSubscribes(t, broker.tcpUrl, filters, 20_000)
  const other = await mqttJs(t, broker.tcpUrl)
  for (const filter of [filters[0], filters.at(-1)]) await other.client.publishAsync(filter, JSON.stringify(filter), { qos: 1 })
  t.deepEqual(await inbox.take(2), [filters[0], filters.at(-1)])
  t.deepEqual(inbox.errors, [])
})

test('a broker that closes cleanly (FIN) on each SUBSCRIBE over its size is not taken for a client id takeover: 40,000 filters end ready', async (t) => {
  // Each of the first losses can leave a new big SUBSCRIBE unacknowledged; counted as kicks,
  // three in a row were reported as ERR_CLIENT_ID_TAKEOVER. How many SUBSCRIBEs are written
  // before each close is up to timing: a script doing this alone failed so in 4 of 8 runs, this
  // test in 0 of 5, so `losses_with_filters_unacknowledged_for_the_first_time_are_not_kicks`
  // (reconnect.rs) tests the rule itself.
  const proxy = await startMqttProxy({
    targetPort: sharedBroker.tcpPort,
    onPacket({ fromClient, type, packet, connection }) {
      if (fromClient && type === PACKET_TYPE.SUBSCRIBE && packet.length > 20_000) {
        connection.cut()
        return false
      }
    },
  })
  t.teardown(() => proxy.stop())
  const filters = manyFilters('fin-on-big-subscribe', 40_000)
  const { pubsub, inbox } = await readyAfterDroppedSubscribes(t, proxy.url, filters, 30_000)
  await pubsub.publish(filters.at(-1), 'delivered', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['delivered'])
  t.deepEqual(inbox.errors, [])
})

test('a publish the broker answers with a clean close (AWS IoT policy) is ERR_PAYLOAD alone, not a client id takeover', async (t) => {
  // AWS IoT closes the connection (FIN, no RST) on a publish its policy denies: three such
  // closes soon after connecting used to look like another client taking the client id.
  const denied = uniqueTopic('denied')
  const proxy = await startMqttProxy({
    targetPort: sharedBroker.tcpPort,
    onPacket({ fromClient, type, packet, connection }) {
      if (fromClient && type === 3 && packet.includes(Buffer.from(denied))) {
        connection.cut()
        return false
      }
    },
  })
  t.teardown(() => proxy.stop())
  const pubsub = openPubSub(t, { endpoint: proxy.url, reconnect: FAST })
  await refusedAlone(t, pubsub, uniqueTopic('allowed'), () => pubsub.publish(denied, 'not allowed', { qos: 1 }))
})

// aedes closes the connection on a SUBSCRIBE its authorizeSubscribe hook fails, instead of
// answering SUBACK 0x80; each reconnect subscribed again, so it looped until three closes looked
// like another client taking the client id, and every subscription failed.
for (const sameTick of [false, true]) {
  const when = sameTick ? 'subscribed in the same tick as two allowed filters' : 'subscribed once the others are acknowledged'
  test(`a subscription the broker answers with a close fails alone with ERR_SUBSCRIBE_REFUSED, not a client id takeover (${when})`, async (t) => {
    const denied = uniqueTopic('denied-filter')
    const broker = await startAedes({
      authorizeSubscribe: (client, subscription, callback) =>
        subscription.topic === denied ? callback(new Error('not allowed')) : callback(null, subscription),
    })
    t.teardown(() => broker.stop())
    const pubsub = openPubSub(t, { endpoint: broker.wsUrl, reconnect: FAST })
    const allowed = [uniqueTopic('allowed-filter'), uniqueTopic('allowed-filter')]
    const inbox = observe(pubsub.subscribe(allowed, { qos: 1 }))
    if (!sameTick) await inbox.subscription.ready
    const refused = pubsub.subscribe(denied, { qos: 1 }).subscribe({ error: () => {} })
    const outcome = await settledWithin(refused.ready, 10_000)
    t.is(outcome.error?.code, 'ERR_SUBSCRIBE_REFUSED', `${outcome.error?.code}: ${outcome.error?.message}`)
    t.regex(outcome.error.message, new RegExp(`dropped the connection each time the subscription to '${denied}' arrived \\(3 times in a row\\)`))
    t.true(refused.closed)
    await inbox.subscription.ready
    await pubsub.publish(allowed, 'still subscribed', { qos: 1 })
    t.deepEqual(await inbox.take(2), ['still subscribed', 'still subscribed'])
    t.deepEqual(inbox.errors, [], 'the other subscription never failed')
    t.is(pubsub.stats().reconnects, 3, 'three losses, then no more')
    await sleep(500) // backoff waits: a loop would have gone round again by now
    t.is(pubsub.stats().reconnects, 3)
    t.is(pubsub.connectionState, 'Connected')
  })
}

test('a persistent QoS 2 session cut before the broker had our PUBREC delivers the message once; a new session forgets its id', async (t) => {
  // The broker re-sends a QoS 2 PUBLISH (DUP) on the resumed session when our PUBREC did not
  // reach it: the client knows the id from before the reconnect and must not deliver it again.
  // When the broker lost the session (restart without persistence), the ids are forgotten: the
  // new session numbers its messages from 1 again, and those are new messages.
  const broker = await ownBroker(t)
  let holdPubrec = 'and cut' // what to do with the next PUBREC from the client
  let heldPubrecs = 0
  let dupsToClient = 0
  let pubcompsFromClient = 0
  let subacks = 0
  const packetIds = [] // of the broker's QoS 2 PUBLISHes to the client, in order
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet, connection }) {
      if (fromClient && type === 5 && holdPubrec) {
        heldPubrecs++
        if (holdPubrec === 'and cut') connection.cut()
        holdPubrec = null
        return false
      }
      if (fromClient && type === 7) pubcompsFromClient++
      if (!fromClient && type === 9) subacks++
      if (!fromClient && type === 3) {
        packetIds.push(parsePublish(packet).pkid)
        if (packet[0] & 8) dupsToClient++
      }
    },
  })
  t.teardown(() => proxy.stop())
  const { pubsub, states } = persistentSession(t, proxy, 'qos2-dup')
  const topic = uniqueTopic('qos2-dup')
  const inbox = await listen(t, pubsub, topic, { qos: 2 })
  const first = await mqttJs(t, broker.tcpUrl)

  await first.client.publishAsync(topic, JSON.stringify('A'), { qos: 2 })
  await waitFor(() => pubcompsFromClient === 1, 5_000, 'the exchange to complete on the resumed session')
  t.is(dupsToClient, 1, 'the broker sent the PUBLISH again, with DUP')
  t.is(pubsub.stats().reconnects, 1)
  await sleep(200)
  t.deepEqual(inbox.values, ['A'])

  // B's PUBREC is held back, then the broker restarts and forgets the session.
  holdPubrec = 'and restart'
  await first.client.publishAsync(topic, JSON.stringify('B'), { qos: 2 })
  await waitFor(() => heldPubrecs === 2, 5_000, "B's PUBREC")
  const subacksBefore = subacks
  await broker.restart()
  await waitFor(() => subacks > subacksBefore, 10_000, 'the subscription renewed on the new session')
  t.is(states.at(-1), 'Connected')
  const second = await mqttJs(t, broker.tcpUrl)
  await second.client.publishAsync(topic, JSON.stringify('C'), { qos: 2 })
  await second.client.publishAsync(topic, JSON.stringify('D'), { qos: 2 })
  await waitFor(() => inbox.values.length >= 4, 5_000, 'C and D').catch(() => {})
  t.deepEqual(inbox.values, ['A', 'B', 'C', 'D'])
  t.is(packetIds.at(-1), packetIds[2], "D has B's packet id, which the new session no longer knows")
})

/**
 * A broker behind a proxy that drops the client's first UNSUBSCRIBE and cuts that connection;
 * `unsubscribes()` counts the UNSUBSCRIBEs the client sent.
 */
async function cutFirstUnsubscribe(t) {
  const broker = await ownBroker(t)
  const { proxy, sent } = await cutAtClientsFirst(t, broker.tcpPort, 10)
  return { broker, proxy, unsubscribes: sent }
}

test('a persistent session cut before the broker had our UNSUBSCRIBE sends it again: the resumed session drops that subscription', async (t) => {
  const { broker, proxy, unsubscribes } = await cutFirstUnsubscribe(t)
  const { pubsub, states } = persistentSession(t, proxy, 'unsub-resume')
  const left = uniqueTopic('unsub-left')
  const kept = uniqueTopic('unsub-kept')
  const leaving = pubsub.subscribe(left, { qos: 1 }).subscribe({ next() {} })
  const inbox = await listen(t, pubsub, kept, { qos: 1 })
  await leaving.ready
  leaving.unsubscribe()
  await waitFor(() => pubsub.stats().reconnects === 1 && states.at(-1) === 'Connected', 10_000, 'the resumed session')
  await waitFor(() => unsubscribes() === 2, 5_000, 'the UNSUBSCRIBE sent again')

  const other = await mqttJs(t, broker.tcpUrl)
  for (let i = 0; i < 3; i++) await other.client.publishAsync(left, JSON.stringify(i), { qos: 1 })
  await other.client.publishAsync(kept, JSON.stringify('kept'), { qos: 1 })
  await inbox.take(1)
  await sleep(200)
  t.deepEqual(inbox.values, ['kept'])
  t.is(pubsub.stats().dropped.unrouted, 0, 'the broker sent nothing for the filter left')
  t.is(pubsub.stats().messagesReceived, 1)
})

test('a persistent session cut before the broker had the last observer\'s UNSUBSCRIBE sends it again, then ends the connection', async (t) => {
  const { proxy, unsubscribes } = await cutFirstUnsubscribe(t)
  const { pubsub, states } = persistentSession(t, proxy, 'unsub-last')
  const sub = pubsub.subscribe(uniqueTopic('unsub-last'), { qos: 1 }).subscribe({ next() {} })
  await sub.ready
  sub.unsubscribe()
  await waitFor(() => unsubscribes() === 2, 10_000, 'the UNSUBSCRIBE sent again')
  await waitFor(() => states.at(-1) === 'Disconnected', 5_000, 'Disconnected')
  t.deepEqual(states, [
    'Connecting', 'Connected', 'ConnectedPendingDisconnect', 'ConnectionDisrupted',
    'Connecting', 'Connected', 'ConnectedPendingDisconnect', 'Disconnected',
  ])
})

test('QoS 0 publishes of a write that timed out reject with ERR_CONNECTION; every one resolved reached the broker', async (t) => {
  // The broker frozen (SIGSTOP): the socket fills, and the flush of the last batch times out
  // after connectTimeout. Small batches, so that rumqttc writes each one in a single flush.
  const broker = await ownBroker(t, { lines: ['max_queued_messages 1000000'] })
  const topic = uniqueTopic('qos0-flush')
  const subscriber = await mqttJs(t, broker.tcpUrl)
  await subscriber.client.subscribeAsync(topic, { qos: 0 })
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl, connectTimeout: 1_000, keepAlive: 60, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  await pubsub.publish(topic, 'warm', { qos: 0 })
  await waitFor(() => subscriber.messages.length === 1, 5_000, 'the first message')
  broker.pause()
  t.teardown(() => broker.resume())
  let resolved = 0
  const errors = []
  const payload = Buffer.alloc(100, 120)
  const started = Date.now()
  while (!states.includes('ConnectionDisrupted') && Date.now() - started < 20_000) {
    const batch = Array.from({ length: 20 }, () =>
      pubsub.publish(topic, payload, { qos: 0 }).then(() => resolved++, (error) => errors.push(error)),
    )
    await Promise.race([Promise.all(batch), sleep(3_000)])
  }
  t.true(states.includes('ConnectionDisrupted'), 'the flush timed out')
  await sleep(200)
  broker.resume()
  let seen = -1
  while (seen !== subscriber.messages.length) {
    seen = subscriber.messages.length
    await sleep(1_000)
  }
  const received = subscriber.messages.length - 1
  t.true(errors.length > 0, 'the publishes of the failed write rejected')
  t.true(errors.every((error) => error.code === 'ERR_CONNECTION'), errors.map((error) => error.code).join())
  t.true(received >= resolved, `resolved ${resolved}, received ${received}`)
})

// -------------------------------------------------------------------- cutting the network

test('connections cut by a proxy (dropped, half-closed, black-holed) are re-established through it', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), keepAlive: 1, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const topic = uniqueTopic('cut')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  const cuts = [
    ['drop', () => proxy.drop()],
    ['reset', () => proxy.drop({ reset: true })],
    ['halfClose', () => proxy.halfClose()],
    ['blackhole', () => proxy.blackhole()],
  ]
  for (const [name, cut] of cuts) {
    const before = states.length
    cut()
    await reached(states, 'ConnectionDisrupted', before, 5_000)
    proxy.heal()
    await reached(states, 'Connected', before)
    await pubsub.publish(topic, name, { qos: 1 })
  }
  t.deepEqual(await inbox.take(cuts.length), cuts.map(([name]) => name))
  t.deepEqual(inbox.errors, [])
  t.is(pubsub.stats().reconnects, cuts.length)
})

// Serial: the waits are timed from JS, so the file's other tests must not load the process.
test.serial('reconnect attempts back off exponentially within their jitter bounds', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  const reconnect = { minDelayMs: 100, maxDelayMs: 800 }
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect })
  const changes = []
  pubsub.on('ConnectionStateChange', (state) => changes.push({ state, at: performance.now() }))
  await listen(t, pubsub, uniqueTopic('backoff'))
  proxy.refuse()
  proxy.drop()
  await waitFor(() => changes.filter((c) => c.state === 'Connecting').length >= 7, 15_000, 'seven attempts')
  // The wait before attempt n: between minDelayMs and min(maxDelayMs, minDelayMs * 2^n).
  const waits = []
  for (let i = 0; i < changes.length - 1; i++) {
    if (changes[i].state === 'ConnectionDisrupted' && changes[i + 1].state === 'Connecting') waits.push(changes[i + 1].at - changes[i].at)
  }
  const caps = [100, 200, 400, 800, 800, 800]
  for (const [n, cap] of caps.entries()) {
    t.true(waits[n] >= 95 && waits[n] <= cap + 150, `wait ${n} was ${Math.round(waits[n])} ms, expected 100..${cap}`)
  }
  // Jitter: the waits under the 800 ms cap are not all the same.
  t.true(new Set(waits.slice(3, 6).map((w) => Math.round(w / 20))).size > 1, `waits ${waits.map(Math.round)}`)
  proxy.heal()
  await waitFor(() => pubsub.connectionState === 'Connected', 5_000, 'the reconnect')
})

test('by default a failed attempt is tried again after 1 s, the next after 1 to 2 s (minDelayMs 1000, doubling)', async (t) => {
  const port = await freePort()
  const pubsub = openPubSub(t, { endpoint: `ws://127.0.0.1:${port}/mqtt` })
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  pubsub.subscribe(uniqueTopic('default-backoff')).subscribe({ next: () => t.fail('no broker, no message') })
  await waitFor(() => disruptions.length >= 2, 10_000, 'two failed attempts')
  t.is(disruptions[0].retryInMs, 1_000, 'the first wait of a fresh backoff is minDelayMs')
  t.true(disruptions[1].retryInMs >= 1_000 && disruptions[1].retryInMs <= 2_000, `retryInMs ${disruptions[1].retryInMs}`)
})

test('a connection that lasted resetAfterMs starts the backoff over; one that lasted less does not', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  // The cap of the wait doubles from 1 ms with each attempt (up to 2 s); the first wait of a
  // fresh backoff is exactly minDelayMs, any later one is random between it and the cap.
  const reconnect = { minDelayMs: 1, maxDelayMs: 2_000, resetAfterMs: 1_500 }
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  await listen(t, pubsub, uniqueTopic('reset-after'))
  t.is(pubsub.connectionState, 'Connected')
  /** Cuts the connection; resolves with its disruption event once the instance is connected again. */
  const cut = async () => {
    const [event, state] = [disruptions.length, states.length]
    proxy.drop()
    await reached(states, 'Connected', state, 15_000)
    return disruptions[event]
  }

  // Twelve failures: the cap is now 2 s.
  proxy.refuse()
  proxy.drop()
  await waitFor(() => disruptions.length >= 12, 15_000, 'twelve failed attempts')
  proxy.heal()
  await reached(states, 'Connected', states.lastIndexOf('ConnectionDisrupted'), 15_000)

  // Connected for less than resetAfterMs: the backoff goes on (a wait of exactly 1 ms here
  // has a chance of 1 in 2,000).
  const short = await cut()
  t.true(short.retryInMs > reconnect.minDelayMs && short.retryInMs <= reconnect.maxDelayMs, `retryInMs ${short.retryInMs}`)

  await sleep(reconnect.resetAfterMs + 500)
  const long = await cut()
  t.is(long.retryInMs, reconnect.minDelayMs, 'the first wait of a fresh backoff')
})

test('a retained message too large for WebSocket fails every connection that subscribes to it, as often as the backoff allows; over mqtt:// it arrives', async (t) => {
  const topic = uniqueTopic('retained-too-large')
  const payload = Buffer.alloc(17 * 2 ** 20, 7)
  const publisher = openPubSub(t, { endpoint: sharedBroker.tcpUrl })
  await publisher.publish(topic, payload, { qos: 1, retain: true })
  try {
    const overWebSocket = openPubSub(t, { endpoint: sharedBroker.wsUrl, reconnect: FAST })
    const disruptions = recordEvents(overWebSocket, 'connectionDisrupted')
    const received = receiver()
    overWebSocket.subscribe(topic, { format: 'binary' }).subscribe(received.observer)
    await waitFor(() => disruptions.length >= 4, 20_000, 'four lost connections')
    for (const { error } of disruptions.slice(0, 4)) {
      t.is(error.code, 'ERR_CONNECTION')
      t.regex(error.message, /the server sent a WebSocket message of \d+ bytes, over the 16777216 this client accepts: .*\(mqtt:\/\/ and mqtts:\/\/ take up to 256 MiB\)/)
    }
    // Each connection lasted less than resetAfterMs, so the waits grow instead of starting over
    // at minDelayMs (each after the first is random up to a doubling cap).
    t.is(disruptions[0].retryInMs, FAST.minDelayMs)
    t.true(disruptions.slice(1, 4).some((d) => d.retryInMs > FAST.minDelayMs), `waits ${disruptions.map((d) => d.retryInMs)}`)
    t.deepEqual([received.received.length, received.errors], [0, []], 'nothing delivered, and no error for the observer: the connection is what fails')

    const overTcp = openPubSub(t, { endpoint: sharedBroker.tcpUrl })
    const tcpReceived = receiver(10_000)
    overTcp.subscribe(topic, { format: 'binary' }).subscribe(tcpReceived.observer)
    const [message] = await tcpReceived.take(1)
    t.true(message.equals(payload))
  } finally {
    // An empty retained message removes it from the shared broker.
    await publisher.publish(topic, Buffer.alloc(0), { qos: 1, retain: true })
  }
})

test('a connection that fails at first is retried until the broker appears, and the publish waits for it', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  proxy.refuse()
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const published = pubsub.publish(uniqueTopic('late'), 'x', { qos: 1 })
  await reached(states, 'ConnectionDisrupted')
  await sleep(300)
  proxy.heal()
  await published
  t.deepEqual(states.slice(0, 3), ['Connecting', 'ConnectionDisrupted', 'Connecting'])
  t.is(states.at(-1), 'Connected')
})

test('publishes made before the first connection wait for its first attempt; when it fails, the offline queue policy decides', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  proxy.refuse()
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: FAST })
  pubsub.on('connectionDisrupted', () => {})
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const topic = uniqueTopic('before-first')
  const qos0 = pubsub.publish(topic, 'q0', { qos: 0 })
  const qos1 = pubsub.publish(topic, 'q1', { qos: 1 })
  // The default policy ('qos1') keeps only QoS 1 and 2 once the connection is known to be down.
  const lost = await t.throwsAsync(qos0, { code: 'ERR_CONNECTION' })
  t.regex(lost.message, /Not published: the connection failed or was lost before it was sent/)
  t.like(pubsub.stats(), { queued: { operations: 1 }, dropped: { offline: 0, connectionLost: 1 } })
  t.true(states.includes('ConnectionDisrupted'), states.join(', '))

  const { client, messages } = await mqttJs(t, sharedBroker.tcpUrl)
  await client.subscribeAsync(topic, { qos: 1 })
  proxy.heal()
  await qos1
  await waitFor(() => messages.length === 1, 5_000, 'the QoS 1 publish')
  t.deepEqual(messages.map((m) => m.payload.toString()), ['"q1"'])
})

// ------------------------------------------------------------------------ the offline queue

/**
 * A PubSub with the given offlineQueue whose connection is down, and an observer on `topic`;
 * `reconnect()` lets it come back. "Down" is a proxy refusing connections rather than a stopped
 * broker: a stopped broker's port could be taken meanwhile by a broker another test starts.
 */
async function disconnected(t, offlineQueue) {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: FAST, offlineQueue })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  const topic = uniqueTopic('offline')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  proxy.refuse()
  proxy.drop()
  await reached(states, 'ConnectionDisrupted')
  return { pubsub, topic, inbox, reconnect: () => proxy.heal() }
}

test("offline, the default policy ('qos1') queues QoS 1 and rejects QoS 0 at once", async (t) => {
  const { reconnect, pubsub, topic, inbox } = await disconnected(t, undefined)
  const error = await t.throwsAsync(pubsub.publish(topic, 'qos0', { qos: 0 }), { code: 'ERR_CONNECTION' })
  t.regex(error.message, /offlineQueue 'qos1' keeps only QoS 1 and 2/)
  const kept = pubsub.publish(topic, 'qos1', { qos: 1 })
  t.like(pubsub.stats(), { queued: { operations: 1 }, dropped: { offline: 1 } })
  reconnect()
  await kept
  t.deepEqual(await inbox.take(1), ['qos1'])
})

test("offline, 'all' queues QoS 0 too and 'none' rejects everything", async (t) => {
  const all = await disconnected(t, 'all')
  const sent = [all.pubsub.publish(all.topic, 'a0', { qos: 0 }), all.pubsub.publish(all.topic, 'a1', { qos: 1 })]
  all.reconnect()
  await Promise.all(sent)
  t.deepEqual((await all.inbox.take(2)).sort(), ['a0', 'a1'])

  const none = await disconnected(t, { policy: 'none' })
  await t.throwsAsync(none.pubsub.publish(none.topic, 'n1', { qos: 1 }), { code: 'ERR_CONNECTION', message: /offlineQueue 'none'/ })
})

test('the offline queue is bounded by count and bytes: past the bound publish rejects ERR_QUEUE_FULL', async (t) => {
  const byCount = await disconnected(t, { maxMessages: 3 })
  const queued = [1, 2, 3].map((n) => byCount.pubsub.publish(byCount.topic, n, { qos: 1 }))
  const full = await t.throwsAsync(byCount.pubsub.publish(byCount.topic, 4, { qos: 1 }), { code: 'ERR_QUEUE_FULL' })
  t.regex(full.message, /maxMessages 3/)
  t.like(byCount.pubsub.stats(), { queued: { operations: 3 }, dropped: { queueFull: 1 } })
  byCount.reconnect()
  await Promise.all(queued)
  t.deepEqual(await byCount.inbox.take(3), [1, 2, 3], 'in order')

  const byBytes = await disconnected(t, { maxBytes: 1_000 })
  const fits = byBytes.pubsub.publish(byBytes.topic, Buffer.alloc(500), { qos: 1 })
  await t.throwsAsync(byBytes.pubsub.publish(byBytes.topic, Buffer.alloc(500), { qos: 1 }), { code: 'ERR_QUEUE_FULL' })
  byBytes.reconnect()
  await fits
})

test('publishes made before a first attempt that fails are held to the bounds too: the newest past them reject ERR_QUEUE_FULL', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  proxy.refuse()
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: FAST, offlineQueue: { maxMessages: 3 } })
  const topic = uniqueTopic('first-attempt')
  // All ten reach Rust before the first attempt starts: they wait for it, whatever the queue.
  const outcomes = Array.from({ length: 10 }, (_, n) => pubsub.publish(topic, n, { qos: 1 }).then(() => 'sent', (error) => error.code))
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  await reached(states, 'ConnectionDisrupted')
  t.like(pubsub.stats(), { queued: { operations: 3 }, dropped: { queueFull: 7 } })
  const watcher = openPubSub(t, { endpoint: sharedBroker.tcpUrl })
  const inbox = await listen(t, watcher, topic, { qos: 1 })
  proxy.heal()
  t.deepEqual(await Promise.all(outcomes), [...Array(3).fill('sent'), ...Array(7).fill('ERR_QUEUE_FULL')], 'the oldest three wait')
  t.deepEqual(await inbox.take(3), [0, 1, 2])
})

test('close() during a reconnect wait settles everything and lets the process exit', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  proxy.refuse()
  const run = runScript(
    t,
    pubsubScript(
      `const events = []
       pubsub.subscribe('a/b').subscribe({ complete: () => events.push('complete'), error: (e) => events.push(e.code) })
       const published = pubsub.publish('a/b', 'x', { qos: 1 }).catch((e) => events.push(e.code))
       pubsub.on('ConnectionStateChange', (state) => {
         if (state === 'ConnectionDisrupted') pubsub.close().then(() => published).then(() => console.log(events.join(',')))
       })`,
      { reconnect: { minDelayMs: 60_000, maxDelayMs: 60_000 } },
    ),
    { BROKER: proxy.url('mqtt') },
  )
  const exited = await Promise.race([run.exited, sleep(10_000).then(() => null)])
  t.truthy(exited, `the script did not exit; stdout: ${run.stdout} stderr: ${run.stderr}`)
  t.is(exited.code, 0, run.stderr)
  t.deepEqual(run.stdout.trim().split(',').sort(), ['ERR_CLOSED', 'complete'])
})

// --------------------------------------------------------------- when not to retry

test('reconnect: false fails pending work and observers when the connection is lost', async (t) => {
  const broker = await ownBroker(t)
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl, reconnect: false })
  const inbox = receiver()
  const sub = pubsub.subscribe(uniqueTopic('no-retry')).subscribe(inbox.observer)
  await sub.ready
  await broker.kill('SIGKILL')
  await waitFor(() => inbox.errors.length === 1, 5_000, 'the observer error')
  t.is(inbox.errors[0].code, 'ERR_CONNECTION')
  t.is(pubsub.connectionState, 'Disconnected')
})

test('reconnect: false settles the publishes JS still holds (backlog full) when the connection is lost', async (t) => {
  // Past Rust's backlog (4,096 publishes) JS holds the rest until a `writable` event, which a
  // failure for good never sends: JS fails them on the 'failed' event, or they would never
  // settle. They were made before the failure, so they fail with it: handed over after it, they
  // used to start new connections, 4,096 at a time.
  t.timeout(30_000)
  const broker = await ownBroker(t)
  const proxy = await proxyTo(t, broker.tcpUrl)
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: false })
  const topic = uniqueTopic('held')
  await pubsub.publish(topic, 'up', { qos: 1 })
  broker.pause() // nothing is acknowledged: the backlog fills
  const total = 20_000
  let settled = 0
  const codes = new Set()
  for (let i = 0; i < total; i++) {
    pubsub.publish(topic, Buffer.alloc(100), { qos: 1 }).then(
      () => settled++,
      (error) => {
        settled++
        codes.add(error.code)
      },
    )
  }
  await sleep(500)
  t.true(pubsub.stats().queued.operations > 4_096, 'the backlog is full: JS holds publishes back')
  await broker.kill('SIGKILL')
  await waitFor(() => settled === total, 10_000).catch(() => {})
  t.is(total - settled, 0, 'publishes still pending 10 s after the connection was lost for good')
  t.deepEqual([...codes], ['ERR_CONNECTION'])
  t.is(proxy.accepted, 1, 'the held publishes fail with the others, without a new connection attempt for them')
  t.is(pubsub.connectionState, 'Disconnected')
})

/** Blocks the JS thread until `done()` (read synchronously from Rust), for at most `limitMs`. */
function blockUntil(done, limitMs = 5_000) {
  const deadline = Date.now() + limitMs
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`still waiting after ${limitMs} ms`)
  }
}

test('reconnect: false: what is asked for before JS has seen the failure fails with it, and makes no new connection', async (t) => {
  // JS runs a synchronous stretch (a burst, a busy handler) while the connection attempt fails
  // on Rust's threads. A subscribe or publish made after that, but before JS could know, fails
  // with the failure as the earlier ones do. It used to start a new connection instead, and a
  // subscription made on it lived on after JS had failed its observer with the others: it
  // kept the connection and received messages nobody could see.
  const port = await freePort()
  const pubsub = openPubSub(t, { endpoint: `mqtt://127.0.0.1:${port}`, reconnect: false })
  const topic = uniqueTopic('unseen-failure')
  const first = receiver()
  pubsub.subscribe(topic).subscribe(first.observer)
  const firstPublish = pubsub.publish(topic, 'first', { qos: 1 })
  // Nothing listens on the port yet: the attempt fails, and Rust fails what it holds.
  const pending = () => pubsub.stats().queued.operations + pubsub.stats().inFlight.operations
  blockUntil(() => pending() === 0)
  // From now on a broker is there: a new attempt would connect.
  const proxy = await startTcpProxy({ target: sharedBroker.tcpUrl, listenPort: port })
  t.teardown(() => proxy.stop())
  const second = receiver()
  pubsub.subscribe(topic).subscribe(second.observer)
  const secondPublish = pubsub.publish(topic, 'second', { qos: 1 })

  const [firstError, secondError] = await Promise.all([firstPublish, secondPublish].map((p) => p.then(() => null, (error) => error)))
  await waitFor(() => first.errors.length === 1 && second.errors.length === 1, 5_000, "both observers' errors")
  for (const error of [firstError, secondError, first.errors[0], second.errors[0]]) t.is(error?.code, 'ERR_CONNECTION')
  t.is(secondError.message, firstError.message, 'the same failure')
  await sleep(300)
  t.is(proxy.accepted, 0, 'no connection was made for the second subscribe and publish')
  t.is(pubsub.connectionState, 'Disconnected')

  // Once JS has seen the failure, asking again makes a new attempt, which now connects.
  const again = await subscribed(pubsub, topic)
  t.is(proxy.accepted, 1)
  await pubsub.publish(topic, 'third', { qos: 1 })
  t.deepEqual(await again.take(1), ['third'])
})

test('reconnect: false: an observer\'s error callback may subscribe again at once', async (t) => {
  const proxy = await proxyTo(t, sharedBroker.tcpUrl)
  proxy.refuse()
  const pubsub = openPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: false })
  const topic = uniqueTopic('retry-in-error')
  const failures = []
  const retry = receiver()
  pubsub.subscribe(topic).subscribe({
    error(error) {
      failures.push(error.code)
      proxy.heal()
      retry.subscription = pubsub.subscribe(topic).subscribe(retry.observer)
    },
  })
  await waitFor(() => failures.length === 1, 5_000, 'the failure')
  t.deepEqual(failures, ['ERR_CONNECTION'])
  // The retry is a new attempt, not failed with the failure it was called for.
  await retry.subscription.ready
  await pubsub.publish(topic, 'after the retry', { qos: 1 })
  t.deepEqual(await retry.take(1), ['after the retry'])
  t.deepEqual(retry.errors, [])
})

/**
 * A PubSub (reconnect: false) on a broker whose first connection delivers 'first' and 'second'
 * on 'news' and then closes; later connections are served. Its observer of 'news' keeps JS busy
 * on 'first', so that 'second' and the failure reach JS in one batch, and calls
 * `onSecond(pubsub)` for 'second'. `errors` gets the observer's error codes.
 */
async function failureInTheBatchOfASecondMessage(t, onSecond) {
  const broker = await startFakeBroker(t, {
    onPacket(packet, connection) {
      if (packet.type !== SUBSCRIBE) return undefined
      connection.send(packets.suback(packet.id, [0]))
      if (connection.number === 1) {
        connection.send(Buffer.concat([packets.publish('news', '"first"'), packets.publish('news', '"second"')]))
        connection.socket.terminate()
      }
      return true
    },
  })
  const pubsub = openPubSub(t, { endpoint: broker.url, reconnect: false })
  const errors = []
  pubsub.subscribe('news').subscribe({
    next(message) {
      if (message === 'first') {
        const until = Date.now() + 300
        while (Date.now() < until);
      } else {
        onSecond(pubsub)
      }
    },
    error: (error) => errors.push(error.code),
  })
  return { broker, pubsub, errors }
}

test('reconnect: false: an observer subscribed by a callback that ran just before the failure reached JS lives on', async (t) => {
  // The second message's callback subscribes again; the failure after it must fail only the
  // observers it failed in Rust. It used to fail this one too, while Rust kept it subscribed on
  // a new connection: an error for a subscription that lived on, unseen, for ever.
  let later = null
  const { broker, pubsub, errors } = await failureInTheBatchOfASecondMessage(t, (pubsub) => {
    later = receiver()
    later.subscription = pubsub.subscribe('later').subscribe(later.observer)
  })
  await waitFor(() => errors.length === 1 && later !== null, 5_000, 'the second message and the failure')
  t.deepEqual(errors, ['ERR_CONNECTION'])
  await later.subscription.ready
  t.deepEqual(later.errors, [])
  t.is(broker.connections, 2, 'the later subscription has a connection of its own')
  t.is(pubsub.connectionState, 'Connected')
})

test('reconnect: false: publishes made by a callback that ran in the batch of the failure all go on a new attempt', async (t) => {
  // The second message's callback publishes three times: the first goes at once, the other two
  // at the end of the tick. All were made once JS could know: they used to be failed with the
  // old failure, as publishes JS held from before it.
  let published = null
  const { broker, errors } = await failureInTheBatchOfASecondMessage(t, (pubsub) => {
    published = ['a', 'b', 'c'].map((m) => pubsub.publish('later', m).then(() => 'ok', (error) => error.code))
  })
  await waitFor(() => published !== null && errors.length === 1, 5_000, 'the second message and the failure')
  t.deepEqual(await Promise.all(published), ['ok', 'ok', 'ok'])
  t.is(broker.connections, 2)
})

test('reconnect: false: an error callback that subscribes again before JS saw the failure is told later, not called again at once', async (t) => {
  // The subscribe is refused with the failure JS has not seen yet; were the observer told at
  // once, its error callback's next subscribe would be refused at once too, and so on until
  // the stack overflowed.
  const port = await freePort()
  const pubsub = openPubSub(t, { endpoint: `mqtt://127.0.0.1:${port}`, reconnect: false })
  pubsub.subscribe(uniqueTopic('first')).subscribe({ error: () => {} })
  const publish = pubsub.publish(uniqueTopic('first'), 'x', { qos: 1 }).catch(() => {})
  blockUntil(() => pubsub.stats().queued.operations + pubsub.stats().inFlight.operations === 0)
  const failures = []
  const retry = () =>
    pubsub.subscribe(uniqueTopic('retried')).subscribe({
      error(error) {
        failures.push(error.code)
        if (failures.length < 3) retry()
      },
    })
  retry()
  t.deepEqual(failures, [], 'not told synchronously')
  await waitFor(() => failures.length === 3, 5_000, 'three failures')
  t.deepEqual(failures, ['ERR_CONNECTION', 'ERR_CONNECTION', 'ERR_CONNECTION'])
  await publish
})

test('a permanent failure (credentials refused) is reported once, not retried', async (t) => {
  let attempts = 0
  const broker = await startAedes({
    authenticate(client, username, password, callback) {
      attempts++
      const error = new Error('bad')
      error.returnCode = 4
      callback(error, false)
    },
  })
  t.teardown(() => broker.stop())
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl, username: 'u', password: 'wrong', reconnect: FAST })
  const inbox = receiver()
  pubsub.subscribe(uniqueTopic('permanent')).subscribe(inbox.observer)
  await waitFor(() => inbox.errors.length === 1, 5_000, 'the observer error')
  t.is(inbox.errors[0].code, 'ERR_NOT_AUTHORIZED')
  await sleep(600)
  t.is(attempts, 1)
  t.is(pubsub.connectionState, 'Disconnected')
})

for (const transport of ['tcpUrl', 'wsUrl']) {
  test(`two clients with the same client id kicking each other off are told so (${transport === 'tcpUrl' ? 'TCP' : 'WebSocket'})`, async (t) => {
    const clientId = uniqueClientId('twin')
    const options = { endpoint: sharedBroker[transport], clientId, reconnect: { minDelayMs: 50, maxDelayMs: 200 } }
    const twins = [openPubSub(t, options), openPubSub(t, options)]
    const inboxes = twins.map((pubsub) => {
      const inbox = receiver()
      pubsub.subscribe(uniqueTopic('twin')).subscribe(inbox.observer)
      return inbox
    })
    await waitFor(() => inboxes.some((inbox) => inbox.errors.length > 0), 15_000, 'a takeover error')
    const [error] = inboxes.find((inbox) => inbox.errors.length > 0).errors
    t.is(error.code, 'ERR_CLIENT_ID_TAKEOVER')
    t.true(error.message.includes(`'${clientId}'`), error.message)
  })
}

test('a twin of another make, slower to come back than our minimum delay, is told apart too (MQTT.js, a second, its CONNECT 500 ms on the way)', async (t) => {
  // With the kick window four of our minimum delays and a second (1.4 s here), its kicks came
  // later and the two kicked each other off for ever (a review found it).
  const clientId = uniqueClientId('twin-mqttjs')
  const slow = await startMqttProxy({
    targetPort: sharedBroker.tcpPort,
    onPacket: ({ fromClient, type }) => (fromClient && type === PACKET_TYPE.CONNECT ? 500 : true),
  })
  t.teardown(() => slow.stop())
  const pubsub = openPubSub(t, { endpoint: sharedBroker.tcpUrl, clientId, reconnect: { minDelayMs: 100, maxDelayMs: 2_000 } })
  const inbox = receiver()
  pubsub.subscribe(uniqueTopic('twin-mqttjs')).subscribe(inbox.observer)
  await waitFor(() => pubsub.connectionState === 'Connected', 5_000, 'Connected')
  const twin = require('mqtt').connect(slow.url, { clientId, reconnectPeriod: 1_000 })
  twin.on('error', () => {})
  t.teardown(() => twin.end(true))
  await waitFor(() => inbox.errors.length > 0, 30_000, 'a takeover error')
  t.is(inbox.errors[0].code, 'ERR_CLIENT_ID_TAKEOVER')
})

test('closes that come long after connecting (an idle timeout on the way, brokers restarted in turn) are not a client id takeover', async (t) => {
  // A NAT or proxy that closes quiet connections after 25 s (keepAlive is 60 s) closes each
  // one cleanly, as a broker does for a twin with the same client id, only later: counted as
  // kicks, the third failed everything with ERR_CLIENT_ID_TAKEOVER (a trial found it). A
  // twin's kicks come within four minimum delays of connecting and a second, 5 s at the least.
  // Each connection is closed 5.5 s in, three times.
  let cuts = 0
  const proxy = await startMqttProxy({
    targetPort: sharedBroker.tcpPort,
    onPacket({ fromClient, type, connection }) {
      if (!fromClient && type === PACKET_TYPE.CONNACK && cuts < 3) {
        cuts += 1
        setTimeout(() => connection.cut(), 5_500) // (cut(5_500) would hold everything back meanwhile)
      }
    },
  })
  t.teardown(() => proxy.stop())
  const pubsub = openPubSub(t, { endpoint: proxy.url, reconnect: { minDelayMs: 50, maxDelayMs: 200 } })
  const disruptions = recordEvents(pubsub, 'connectionDisrupted')
  const topic = uniqueTopic('idle-timeout')
  const inbox = await listen(t, pubsub, topic, { qos: 1 })
  await waitFor(() => disruptions.length === 3 && pubsub.connectionState === 'Connected', 30_000, 'three closes, then connected')
  await inbox.sub.ready
  const publisher = await mqttJs(t, sharedBroker.tcpUrl)
  await publisher.client.publishAsync(topic, JSON.stringify('still here'), { qos: 1 })
  t.deepEqual(await inbox.take(1), ['still here'])
  t.deepEqual(inbox.errors, [])
  t.deepEqual(disruptions.map((d) => d.error.code), ['ERR_CONNECTION', 'ERR_CONNECTION', 'ERR_CONNECTION'])
})

test('connections that end by themselves in between are not a client id takeover: a broker restart now and then over a long life is survived', async (t) => {
  const broker = await ownBroker(t)
  const pubsub = openPubSub(t, { endpoint: broker.tcpUrl, reconnect: FAST })
  const states = recordEvents(pubsub, 'ConnectionStateChange')
  /** The errors of the subscriptions' observers. */
  const errors = []
  // A server whose subscriptions come and go (the connection ends when the last one leaves),
  // where the broker restarts three times, each time a few seconds into a connection. Before,
  // the three losses counted as kicks in a row (nothing in between ended the streak), and the
  // third failed everything with ERR_CLIENT_ID_TAKEOVER (the soak test found it: an instance
  // of for-await loops on a random client id, after 14 minutes of broker restarts every ~60 s).
  for (let round = 0; round < 4; round++) {
    const inbox = observe(pubsub.subscribe(uniqueTopic('comes-and-goes'), { qos: 1 }))
    await waitFor(() => states.at(-1) === 'Connected', 10_000, 'Connected')
    if (round < 3) {
      const before = states.length
      await broker.restart({ signal: 'SIGTERM' })
      await waitFor(() => states.indexOf('Connected', before) !== -1 || inbox.errors.length > 0, 10_000, 'Connected again, or an error')
      if (inbox.errors.length > 0) {
        errors.push(...inbox.errors)
        break
      }
    }
    await inbox.subscription.ready
    inbox.subscription.unsubscribe()
    await waitFor(() => states.at(-1) === 'Disconnected', 5_000, 'Disconnected')
    errors.push(...inbox.errors)
  }
  t.deepEqual(errors.map((error) => error.code), [])
  t.is(pubsub.stats().reconnects, 3)
})
