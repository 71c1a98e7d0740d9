'use strict'
// The life of a PubSub instance: the connection states it goes through (as events, on the Hub
// and through the `connectionState` getter), close(), the will message, and how it copes with
// payloads and callbacks that go wrong without ever taking the process down.
const test = require('ava')
const { Hub, ConnectionState, CONNECTION_STATE_CHANGE } = require('../mqtt.js')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { useAedes, startAedes } = require('./helpers/aedes.js')
const { startTcpProxy } = require('./helpers/tcp-proxy.js')
const { startMqttProxy } = require('./helpers/mqtt-proxy.js')
const { topicNamer, pubsubOn, openPubSub, listen, recordEvents, captureWarnings, waitFor, sleep, mqttJs, fakeServer, pubsubScript, runScript, printed, exitOf, plain } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)

/** What the aedes broker was told at CONNECT, by client id. */
const connects = new Map()
const aedes = useAedes(test, {
  authenticate(client, username, password, callback) {
    connects.set(client.id, { username, password: password ? Buffer.from(password).toString('utf8') : password })
    callback(null, true)
  },
})

const newPubSub = pubsubOn(broker)
const uniqueTopic = topicNamer('lifecycle')

const FULL_CYCLE = ['Connecting', 'Connected', 'ConnectedPendingDisconnect', 'Disconnected']

// ------------------------------------------------------------------------ connection states

test('subscribing then unsubscribing the last observer goes Disconnected → Connecting → Connected → ConnectedPendingDisconnect → Disconnected', async (t) => {
  const pubsub = newPubSub(t)
  const states = [pubsub.connectionState]
  pubsub.on(CONNECTION_STATE_CHANGE, (state) => states.push(state))

  const sub = pubsub.subscribe(uniqueTopic('cycle')).subscribe({ next() {} })
  await sub.ready
  sub.unsubscribe()
  await waitFor(() => states.length === 5, 5_000, 'Disconnected')
  await sleep(200)
  t.deepEqual(states, ['Disconnected', ...FULL_CYCLE])
  t.deepEqual(FULL_CYCLE.map((state) => ConnectionState[state]), FULL_CYCLE, 'the states are ConnectionState values')
})

test('Hub listeners on the pubsub channel get every state change as an Amplify capsule', async (t) => {
  const pubsub = newPubSub(t)
  const capsules = []
  const stop = Hub.listen('pubsub', (capsule) => {
    if (capsule.payload.data.provider === pubsub) capsules.push(capsule)
  })
  t.teardown(stop)

  const sub = pubsub.subscribe(uniqueTopic('hub')).subscribe({ next() {} })
  await sub.ready
  sub.unsubscribe()
  await waitFor(() => capsules.length === 4, 5_000, 'four capsules')

  t.deepEqual(
    capsules.map((capsule) => capsule.payload.data.connectionState),
    FULL_CYCLE,
  )
  const [first] = capsules
  t.is(first.channel, 'pubsub')
  t.is(first.source, 'PubSub')
  t.deepEqual(first.patternInfo, [])
  t.is(first.payload.event, CONNECTION_STATE_CHANGE)
  t.is(first.payload.event, 'ConnectionStateChange')
  t.is(first.payload.data.provider, pubsub)
  t.is(first.payload.message, 'Connection state is Connecting')
  t.is(first.payload.data.provider.getProviderName(), 'MqttOverWSProvider')
})

test('a new instance announces Disconnected on Hub as it is made, as Amplify providers do, then its first change is Connecting', async (t) => {
  const heard = []
  const stop = Hub.listen('pubsub', ({ payload }) => heard.push([payload.data.provider, payload.data.connectionState, payload.message]))
  t.teardown(stop)
  const pubsub = newPubSub(t)
  const own = () => heard.filter(([provider]) => provider === pubsub).map(([, state, message]) => [state, message])
  t.deepEqual(own(), [['Disconnected', 'Connection state is Disconnected']], 'heard while the constructor ran')

  const sub = pubsub.subscribe(uniqueTopic('hub-first')).subscribe({ next() {} })
  await sub.ready
  t.deepEqual(own().map(([state]) => state), ['Disconnected', 'Connecting', 'Connected'])
  sub.unsubscribe()
})

/**
 * The states Hub's 'pubsub' channel announces for `pubsub` while it connects for a subscription
 * and disconnects once it is unsubscribed (four, then 50 ms for any that should not come).
 */
async function hubStatesOfOneCycle(t, pubsub, name) {
  const states = []
  const stop = Hub.listen('pubsub', (capsule) => {
    if (capsule.payload.data.provider === pubsub) states.push(capsule.payload.data.connectionState)
  })
  t.teardown(stop)
  const sub = pubsub.subscribe(uniqueTopic(name)).subscribe({ next() {} })
  await sub.ready
  sub.unsubscribe()
  await waitFor(() => states.length === 4, 5_000, 'four Hub capsules')
  await sleep(50)
  return states
}

test('Hub.dispatch reaches the listeners of its channel only, as a capsule, until they stop', (t) => {
  const heard = []
  const stopOrders = Hub.listen('orders', (capsule) => heard.push(capsule))
  const stopOther = Hub.listen('other', (capsule) => heard.push(capsule))
  t.teardown(stopOther)
  Hub.dispatch('orders', { event: 'placed', data: { id: 7 }, message: 'an order' }, 'Shop')
  Hub.dispatch('orders', { event: 'placed', data: { id: 8 } })
  stopOrders()
  Hub.dispatch('orders', { event: 'placed', data: { id: 9 } })
  Hub.dispatch('nobody-listens', { event: 'x', data: null })
  t.deepEqual(heard, [
    { channel: 'orders', payload: { event: 'placed', data: { id: 7 }, message: 'an order' }, source: 'Shop', patternInfo: [] },
    { channel: 'orders', payload: { event: 'placed', data: { id: 8 } }, source: 'PubSub', patternInfo: [] },
  ])
})

test('a channel listened on again after its last listener stopped reaches the new listener, and a stale stop changes nothing', (t) => {
  const heard = []
  const stopFirst = Hub.listen('reopened', (capsule) => heard.push(['first', capsule.payload.n]))
  stopFirst()
  const stopSecond = Hub.listen('reopened', (capsule) => heard.push(['second', capsule.payload.n]))
  t.teardown(stopSecond)
  Hub.dispatch('reopened', { event: 'x', data: null, n: 1 })
  // Calling the first listener's stop again must not forget the channel the second one is on.
  stopFirst()
  Hub.dispatch('reopened', { event: 'x', data: null, n: 2 })
  t.deepEqual(heard, [['second', 1], ['second', 2]])
})

test('a ConnectionStateChange listener that throws keeps no state change from other listeners or Hub', async (t) => {
  const marker = `state-listener-${uniqueTopic('marker')}`
  const warnings = captureWarnings(t, marker)
  const pubsub = newPubSub(t)
  const instanceSaw = []
  pubsub.on(CONNECTION_STATE_CHANGE, (state) => {
    instanceSaw.push(state)
    throw new Error(marker)
  })
  const nextListenerSaw = []
  pubsub.on(CONNECTION_STATE_CHANGE, (state) => nextListenerSaw.push(state))
  const hubSaw = await hubStatesOfOneCycle(t, pubsub, 'state-throws')
  t.deepEqual(instanceSaw, FULL_CYCLE)
  t.deepEqual(nextListenerSaw, FULL_CYCLE)
  t.deepEqual(hubSaw, FULL_CYCLE)
  t.is(warnings.length, 1, 'reported once as a warning')
})

test('a Hub listener that throws at every state change is reported by one warning, and the other listeners get every change', async (t) => {
  const marker = `hub-listener-${uniqueTopic('marker')}`
  const warnings = captureWarnings(t, marker)
  const pubsub = newPubSub(t)
  const throwing = Hub.listen('pubsub', () => {
    throw new Error(marker)
  })
  t.teardown(throwing)
  const hubSaw = await hubStatesOfOneCycle(t, pubsub, 'hub-throws')
  t.deepEqual(hubSaw, FULL_CYCLE)
  t.is(warnings.length, 1, 'four throws, one warning')
})

test('the connectionState getter is the last announced state, in step with the events', async (t) => {
  const pubsub = newPubSub(t)
  t.is(pubsub.connectionState, 'Disconnected', 'a new instance has not connected')
  const seenByGetter = []
  pubsub.on(CONNECTION_STATE_CHANGE, (state) => seenByGetter.push([state, pubsub.connectionState]))

  const sub = pubsub.subscribe(uniqueTopic('getter')).subscribe({ next() {} })
  await sub.ready
  t.is(pubsub.connectionState, 'Connected', 'a ready subscription means a connection')
  sub.unsubscribe()
  await waitFor(() => pubsub.connectionState === 'Disconnected', 5_000, 'Disconnected')
  for (const [state, getter] of seenByGetter) t.is(getter, state)
  t.is(seenByGetter.length, 4)
})

test('an idle instance reconnects on demand for the next subscription', async (t) => {
  const pubsub = newPubSub(t)
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  const topic = uniqueTopic('again')
  const first = pubsub.subscribe(topic).subscribe({ next() {} })
  await first.ready
  first.unsubscribe()
  await waitFor(() => states.length === 4, 5_000, 'the first cycle')

  const values = []
  const second = pubsub.subscribe(topic).subscribe({ next: (v) => values.push(v) })
  await second.ready
  await pubsub.publish(topic, 'again', { qos: 1 })
  await waitFor(() => values.length === 1, 5_000, 'the message')
  t.deepEqual(states, [...FULL_CYCLE, 'Connecting', 'Connected'])
  t.deepEqual(values, ['again'])
})

test('a message read together with the last UNSUBACK is not delivered to an observer of the next connection', async (t) => {
  // A broker may still send a message it had in flight after UNSUBACK (MQTT-3.10.4): the proxy
  // holds the broker's message back and sends it right behind the UNSUBACK, in one read.
  let holding = false
  const held = []
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet }) {
      if (holding && !fromClient && type === 3) {
        held.push(packet)
        return false
      }
      if (!fromClient && type === 11 && held.length) return Buffer.concat([packet, ...held.splice(0)])
      return true
    },
  })
  t.teardown(() => proxy.stop())
  const { client: publisher } = await mqttJs(t, broker.tcpUrl)
  const pubsub = newPubSub(t, { endpoint: proxy.url })
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  const topic = uniqueTopic('stale')

  const first = pubsub.subscribe(topic).subscribe({ next() {} })
  await first.ready
  holding = true
  await publisher.publishAsync(topic, JSON.stringify('old'), { qos: 0 })
  await waitFor(() => held.length === 1, 5_000, 'the held message')
  first.unsubscribe()
  await waitFor(() => states.length === 4, 5_000, 'the first cycle')
  holding = false
  t.is(held.length, 0, 'the message went out with the UNSUBACK')

  const values = []
  const second = pubsub.subscribe(topic).subscribe({ next: (v) => values.push(v) })
  await second.ready
  await publisher.publishAsync(topic, JSON.stringify('new'), { qos: 0 })
  await waitFor(() => values.length >= 1, 5_000, 'the new message')
  await sleep(200)
  t.deepEqual(values, ['new'])
  t.deepEqual(states, [...FULL_CYCLE, 'Connecting', 'Connected'])
  t.is(pubsub.stats().dropped.unrouted, 1, 'the old message counts as unrouted')
})

/** A proxy to the broker, stopped when the test ends; `target` as for startTcpProxy. */
async function proxyToBroker(t, target = () => broker.tcpUrl) {
  const proxy = await startTcpProxy({ target })
  t.teardown(() => proxy.stop())
  return proxy
}

test('the last observer leaving while Connecting ends the connection once it is up', async (t) => {
  // The proxy holds the connection (CONNECT unanswered) until the gate opens.
  let openGate
  const gate = new Promise((resolve) => (openGate = resolve))
  const proxy = await proxyToBroker(t, () => gate.then(() => broker.tcpUrl))
  const pubsub = newPubSub(t, { endpoint: proxy.url('mqtt') })
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  const sub = pubsub.subscribe(uniqueTopic('leave-connecting')).subscribe({ next() {} })
  await waitFor(() => states.includes('Connecting'), 5_000, 'Connecting')
  sub.unsubscribe()
  openGate()
  await waitFor(() => states.at(-1) === 'Disconnected', 5_000).catch(() => {})
  t.deepEqual(states, FULL_CYCLE)
})

test('the last observer leaving while ConnectionDisrupted ends the connection once it is back', async (t) => {
  const proxy = await proxyToBroker(t)
  const pubsub = newPubSub(t, { endpoint: proxy.url('mqtt'), reconnect: { minDelayMs: 100, maxDelayMs: 200 } })
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  const sub = pubsub.subscribe(uniqueTopic('leave-disrupted')).subscribe({ next() {} })
  await sub.ready
  proxy.refuse()
  proxy.drop()
  await waitFor(() => states.includes('ConnectionDisrupted'), 5_000, 'ConnectionDisrupted')
  sub.unsubscribe()
  proxy.heal()
  await waitFor(() => states.at(-1) === 'Disconnected', 5_000).catch(() => {})
  // Attempts refused while the proxy refuses add Connecting → ConnectionDisrupted pairs.
  t.regex(
    states.join(' '),
    /^Connecting Connected ConnectionDisrupted (Connecting ConnectionDisrupted )*Connecting Connected ConnectedPendingDisconnect Disconnected$/,
  )
})

test('a connection made only to publish stays up: no observer left it', async (t) => {
  // Control for the two above: no observer ever left, so nothing ends the connection.
  const pubsub = newPubSub(t)
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  await pubsub.publish(uniqueTopic('publish-only'), 'x', { qos: 1 })
  await sleep(500)
  t.deepEqual(states, ['Connecting', 'Connected'])
})

test('unsubscribing again, long after the first time, changes nothing: a connection kept for publishing stays up', async (t) => {
  const pubsub = newPubSub(t)
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  const sub = pubsub.subscribe(uniqueTopic('twice')).subscribe({ next() {} })
  await sub.ready
  sub.unsubscribe()
  await waitFor(() => states.length === 4, 5_000, 'Disconnected')
  // A publish connects again, and no observer is there to leave that connection.
  await pubsub.publish(uniqueTopic('after-leaving'), 'x', { qos: 1 })

  sub.unsubscribe()
  // A state change the second call started would be announced before this PUBACK is read.
  await pubsub.publish(uniqueTopic('after-leaving'), 'y', { qos: 1 })
  t.deepEqual(states, [...FULL_CYCLE, 'Connecting', 'Connected'])
  t.is(pubsub.connectionState, 'Connected')
})

test('the function Hub.listen returns stops that listener, and only that one', async (t) => {
  const pubsub = newPubSub(t)
  const stopped = []
  const kept = []
  const stop = Hub.listen('pubsub', (capsule) => {
    if (capsule.payload.data.provider === pubsub) stopped.push(capsule.payload.data.connectionState)
  })
  const stopKept = Hub.listen('pubsub', (capsule) => {
    if (capsule.payload.data.provider === pubsub) kept.push(capsule.payload.data.connectionState)
  })
  t.teardown(stopKept)

  const sub = pubsub.subscribe(uniqueTopic('stop')).subscribe({ next() {} })
  await sub.ready
  stop()
  sub.unsubscribe()
  await waitFor(() => kept.length === 4, 5_000, 'the kept listener to see Disconnected')
  t.deepEqual(kept, FULL_CYCLE)
  t.deepEqual(stopped, ['Connecting', 'Connected'], 'nothing after stop()')
})

test('one function listened with twice is two listeners: it is called twice, and each stop function stops one of them', (t) => {
  const channel = uniqueTopic('hub-twice')
  const calls = []
  const listener = (capsule) => calls.push(capsule.payload)
  const stopFirst = Hub.listen(channel, listener)
  const stopSecond = Hub.listen(channel, listener)
  Hub.dispatch(channel, 'both')
  stopFirst()
  Hub.dispatch(channel, 'one left')
  stopSecond()
  Hub.dispatch(channel, 'none left')
  t.deepEqual(calls, ['both', 'both', 'one left'])
})

// ------------------------------------------------------------------------------- close()

test('close() completes every observer (complete, or the older close alias) and resolves Disconnected', async (t) => {
  const pubsub = newPubSub(t)
  const events = []
  const observer = (name) => ({
    next: () => events.push(`${name}:next`),
    error: (error) => events.push(`${name}:error:${error.code}`),
    complete: () => events.push(`${name}:complete`),
  })
  const a = pubsub.subscribe(uniqueTopic('close-a')).subscribe(observer('a'))
  const b = pubsub.subscribe([uniqueTopic('close-b1'), uniqueTopic('close-b2')], { qos: 1 }).subscribe(observer('b'))
  // The older Amplify docs name the completion callback `close`.
  let closedViaAlias = 0
  const c = pubsub.subscribe(uniqueTopic('close-c')).subscribe({ next() {}, close: () => closedViaAlias++ })
  await Promise.all([a.ready, b.ready, c.ready])

  await pubsub.close()
  t.deepEqual(events.sort(), ['a:complete', 'b:complete'])
  t.is(closedViaAlias, 1)
  t.true(a.closed && b.closed && c.closed)
  t.is(pubsub.connectionState, 'Disconnected')
})

test('close() while connecting rejects a pending QoS 1 publish with ERR_CLOSED and completes a pending subscription', async (t) => {
  const pubsub = newPubSub(t, { endpoint: await fakeServer(t, null), connectTimeout: 30_000 })
  const published = pubsub.publish(uniqueTopic('pending'), { n: 1 }, { qos: 1 })
  let completed = 0
  let errored = 0
  const sub = pubsub.subscribe(uniqueTopic('pending')).subscribe({ complete: () => completed++, error: () => errored++ })
  await waitFor(() => pubsub.connectionState === 'Connecting', 5_000, 'Connecting')

  const started = Date.now()
  const closing = pubsub.close()
  t.is(pubsub.close(), closing, 'close() twice gives the same promise')
  const error = await t.throwsAsync(published, { code: 'ERR_CLOSED' })
  t.is(error.message, 'The PubSub instance is closed')
  await t.throwsAsync(sub.ready, { code: 'ERR_CLOSED' })
  await closing
  t.true(Date.now() - started < 2_000, 'close() does not wait for connectTimeout')
  t.is(completed, 1)
  t.is(errored, 0)
})

test('close() on an instance that never connected resolves at once', async (t) => {
  const pubsub = newPubSub(t)
  const states = recordEvents(pubsub, CONNECTION_STATE_CHANGE)
  await pubsub.close()
  t.deepEqual(states, [])
})

// ----------------------------------------------------------------------------- will message

/** Runs a PubSub with a will in a child process, kills it with SIGKILL once it is connected. */
async function killConnectedChild(t, will) {
  const run = runScript(
    t,
    pubsubScript("pubsub.subscribe(process.env.KEEP).subscribe({ next() {} }).ready.then(() => console.log('ready'))", { will }),
    { BROKER: broker.wsUrl, KEEP: uniqueTopic('keep') },
  )
  await printed(run, 'ready')
  run.child.kill('SIGKILL')
  return run.exited
}

test('the broker publishes the will message when the connection drops abruptly', async (t) => {
  const topic = uniqueTopic('will')
  const { client: watcher, messages } = await mqttJs(t, broker.wsUrl)
  await watcher.subscribeAsync(topic, { qos: 1 })

  const { signal } = await killConnectedChild(t, { topic, message: { status: 'gone', id: 7 }, qos: 1 })
  t.is(signal, 'SIGKILL')
  await waitFor(() => messages.length > 0, 5_000, 'the will message')
  t.deepEqual(
    messages.map((m) => ({ name: m.topic, payload: m.payload.toString(), qos: m.qos })),
    [{ name: topic, payload: JSON.stringify({ status: 'gone', id: 7 }), qos: 1 }],
  )
})

test('the will message is not published when the instance closes cleanly', async (t) => {
  const topic = uniqueTopic('no-will')
  const { client: watcher, messages } = await mqttJs(t, broker.wsUrl)
  await watcher.subscribeAsync(topic, { qos: 1 })

  const pubsub = newPubSub(t, { will: { topic, message: 'should not be sent', qos: 1 } })
  const sub = pubsub.subscribe(uniqueTopic('keep')).subscribe({ next() {} })
  await sub.ready
  await pubsub.close()
  // A control message after the close proves the watcher is receiving.
  await watcher.publishAsync(topic, 'control', { qos: 1 })
  const received = () => messages.map((m) => m.payload.toString())
  await waitFor(() => received().includes('control'), 5_000, 'the control message')
  t.deepEqual(received(), ['control'])
})

for (const transport of ['ws', 'mqtt']) {
  test(`close() says DISCONNECT over ${transport}:// even while the broker's messages wait unread, so no will is published`, async (t) => {
    const topic = uniqueTopic(`unread-${transport}`)
    const willTopic = uniqueTopic(`unread-will-${transport}`)
    const { client: watcher, messages: wills } = await mqttJs(t, broker.wsUrl)
    await watcher.subscribeAsync(willTopic, { qos: 1 })
    const { client: publisher } = await mqttJs(t, broker.wsUrl)
    const payload = Buffer.alloc(4096)
    // Several instances, closed one after another: the broker missing a DISCONNECT is a race.
    for (let i = 0; i < 5; i++) {
      const pubsub = newPubSub(t, {
        endpoint: transport === 'ws' ? broker.wsUrl : broker.tcpUrl,
        will: { topic: willTopic, message: `will ${i}`, qos: 1 },
      })
      await pubsub.subscribe(topic, { format: 'binary' }).subscribe({ next() {} }).ready
      // A for await loop that never pulls: the connection soon stops reading its socket, and
      // what the broker sends waits there unread.
      pubsub.subscribe(topic, { format: 'binary' })[Symbol.asyncIterator]()
      for (let sent = 0; sent < 3_000; sent += 500) {
        await Promise.all(Array.from({ length: 500 }, () => publisher.publishAsync(topic, payload)))
      }
      await sleep(100)
      // Closing a socket with unread data sends RST instead of FIN, and a broker that gets the
      // RST before it read the DISCONNECT loses the DISCONNECT with the connection.
      await pubsub.close()
      // What was read after DISCONNECT, until the broker closed, is counted, not lost unsaid.
      t.true(pubsub.stats().dropped.unrouted > 0, JSON.stringify(pubsub.stats()))
    }
    // A control message after the closes proves the watcher is receiving.
    await watcher.publishAsync(willTopic, 'control', { qos: 1 })
    await waitFor(() => wills.some((m) => m.payload.toString() === 'control'), 5_000, 'the control message')
    t.deepEqual(wills.map((m) => m.payload.toString()), ['control'])
  })
}

// ------------------------------------------------------------------ bad payloads, bad callbacks

test("a payload that is not JSON is reported as 'invalidPayload', and no process warning while that is listened for; the subscription goes on", async (t) => {
  const topic = uniqueTopic('invalid-json')
  const warnings = captureWarnings(t, topic)
  const pubsub = newPubSub(t)
  const invalid = recordEvents(pubsub, 'invalidPayload')
  const { values, errors, sub } = await listen(t, pubsub, topic, { format: 'json' })

  const { client: outsider } = await mqttJs(t, broker.wsUrl)
  await outsider.publishAsync(topic, 'not json {', { qos: 1 })
  await outsider.publishAsync(topic, Buffer.from([0xff, 0xfe]), { qos: 1 })
  await outsider.publishAsync(topic, '{"valid":true}', { qos: 1 })
  await waitFor(() => values.length === 1, 5_000, 'the valid message')
  await sleep(50)

  t.is(invalid.length, 2)
  t.is(pubsub.stats().dropped.invalidPayload, 2, 'stats() counts them')
  t.is(invalid[0].topic, topic)
  t.deepEqual(invalid[0].payload, Buffer.from('not json {'))
  t.deepEqual(invalid[1].payload, Buffer.from([0xff, 0xfe]))
  t.is(invalid[0].error.code, 'ERR_PAYLOAD')
  t.regex(invalid[0].error.message, /not valid JSON.*format 'string' or 'binary'/)
  t.like(values[0], { valid: true })
  t.deepEqual(errors, [], 'the observer never got an error')
  t.false(sub.closed)
  t.deepEqual(warnings, [], 'the listener handles them')
})

test("without an 'invalidPayload' listener, payloads that are not JSON make one process warning, not one each", async (t) => {
  const topic = uniqueTopic('invalid-json-unheard')
  const warnings = captureWarnings(t, topic)
  const pubsub = newPubSub(t)
  const { values } = await listen(t, pubsub, topic, { format: 'json' })
  const { client: outsider } = await mqttJs(t, broker.wsUrl)
  for (const payload of ['not json {', 'nor this', '{"valid":true}']) await outsider.publishAsync(topic, payload, { qos: 1 })
  await waitFor(() => values.length === 1, 5_000, 'the valid message')
  await sleep(50)
  t.is(pubsub.stats().dropped.invalidPayload, 2)
  t.is(warnings.length, 1)
  t.regex(warnings[0].message, /not valid JSON.*Listen for 'invalidPayload' events to see each one/)
})

test("a message that is not JSON is one 'invalidPayload' and one dropped message however many JSON observers it had", async (t) => {
  const topic = uniqueTopic('invalid-json-observers')
  const pubsub = newPubSub(t)
  const invalid = recordEvents(pubsub, 'invalidPayload')
  const first = await listen(t, pubsub, topic)
  const second = await listen(t, pubsub, `${topic}/#`)
  const asText = await listen(t, pubsub, topic, { format: 'string' })

  const { client: outsider } = await mqttJs(t, broker.wsUrl)
  await outsider.publishAsync(topic, 'not json {', { qos: 1 })
  // The observer of format 'string' gets the message in the same delivery as the JSON observers.
  await waitFor(() => asText.values.length === 1, 5_000, 'the message as text')

  t.deepEqual(asText.values, ['not json {'])
  t.is(invalid.length, 1, 'one event for the message, not one per observer')
  t.is(pubsub.stats().dropped.invalidPayload, 1)
  t.deepEqual([...first.values, ...second.values], [])
})

test("a JSON payload whose bytes are not UTF-8 is reported as 'invalidPayload', not delivered with U+FFFD in it", async (t) => {
  const topic = uniqueTopic('not-utf8')
  const pubsub = newPubSub(t)
  const invalid = recordEvents(pubsub, 'invalidPayload')
  const asJson = await listen(t, pubsub, topic)
  const asString = await listen(t, pubsub, topic, { format: 'string' })

  const { client: outsider } = await mqttJs(t, broker.wsUrl)
  // 'café' with its é in Latin-1 (0xE9): a decoder makes it U+FFFD, and JSON.parse accepts that.
  const latin1 = Buffer.concat([Buffer.from('{"name":"caf'), Buffer.from([0xe9]), Buffer.from('"}')])
  await outsider.publishAsync(topic, latin1, { qos: 1 })
  // A U+FFFD that was sent as such (its UTF-8 bytes) is data, and is delivered.
  await outsider.publishAsync(topic, Buffer.from('{"name":"caf\uFFFD"}', 'utf8'), { qos: 1 })
  await waitFor(() => asString.values.length === 2, 5_000, 'both messages as strings')
  await sleep(50)

  t.is(invalid.length, 1)
  t.deepEqual(invalid[0].payload, latin1, 'the bytes as they came')
  t.is(invalid[0].error.code, 'ERR_PAYLOAD')
  t.regex(invalid[0].error.message, /not valid JSON \(its bytes are not valid UTF-8/)
  t.deepEqual(asJson.values.map(plain), [{ name: 'caf\uFFFD' }], 'only the real U+FFFD reached the JSON observer')
  // 'string' decodes as Buffer#toString does; 'binary' or 'message' give the bytes themselves.
  t.deepEqual(asString.values, ['{"name":"caf\uFFFD"}', '{"name":"caf\uFFFD"}'])
})

test("without buffer.isUtf8 (Node 18.0 to 18.13 lack it), a JSON payload whose bytes are not UTF-8 is still 'invalidPayload' and a real U+FFFD still delivered", async (t) => {
  // The check then falls back to decoding and re-encoding; Node 20 and later never run that
  // path unless isUtf8 is taken away before the package loads, as here in a child process.
  const topic = uniqueTopic('not-utf8-fallback')
  const run = runScript(
    t,
    `delete require('node:buffer').isUtf8
     ${pubsubScript(`
       const invalid = []
       const values = []
       pubsub.on('invalidPayload', ({ payload, error }) => invalid.push({ payload: payload.toString('hex'), code: error.code, message: error.message }))
       let ended
       const end = new Promise((resolve) => (ended = resolve))
       const sub = pubsub.subscribe(process.env.TOPIC, { qos: 1 }).subscribe({
         next(value) {
           values.push(value)
           if (value.end) ended()
         },
       })
       sub.ready.then(async () => {
         for (const payload of process.env.PAYLOADS.split(' ')) await pubsub.publish(process.env.TOPIC, Buffer.from(payload, 'hex'), { qos: 1 })
         // Closed once the last publish is acknowledged too: close() rejects a publish still pending.
         await end
         await pubsub.close()
         console.log(JSON.stringify({ fallback: require('node:buffer').isUtf8 === undefined, invalid, values }))
       })`)}`,
    {
      BROKER: broker.wsUrl,
      TOPIC: topic,
      // 'café' with its é in Latin-1; then a U+FFFD sent as its UTF-8 bytes; then the end marker.
      PAYLOADS: [Buffer.from('{"name":"caf\xe9"}', 'latin1'), Buffer.from('{"name":"caf\uFFFD"}'), Buffer.from('{"end":true}')].map((b) => b.toString('hex')).join(' '),
    },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  const result = JSON.parse(run.stdout)
  t.true(result.fallback, 'the package ran without buffer.isUtf8')
  t.deepEqual(result.invalid.map((i) => [i.payload, i.code]), [[Buffer.from('{"name":"caf\xe9"}', 'latin1').toString('hex'), 'ERR_PAYLOAD']])
  t.regex(result.invalid[0].message, /not valid JSON \(its bytes are not valid UTF-8/)
  t.deepEqual(result.values, [{ name: 'caf\uFFFD' }, { end: true }], 'only the real U+FFFD reached the JSON observer')
})

test("a next callback that throws is reported as 'callbackError', and no process warning while that is listened for; later messages still arrive", async (t) => {
  const topic = uniqueTopic('throwing')
  const marker = `thrown-in-${topic}`
  const warnings = captureWarnings(t, marker)
  const pubsub = newPubSub(t)
  const reported = recordEvents(pubsub, 'callbackError')
  const values = []
  const thrown = []
  const sub = pubsub.subscribe(topic).subscribe({
    next(value) {
      values.push(value)
      if (value < 3) {
        const error = new Error(`${marker} #${value}`)
        thrown.push(error)
        throw error
      }
    },
  })
  await sub.ready
  for (const n of [1, 2, 3, 4]) await pubsub.publish(topic, n, { qos: 1 })
  await waitFor(() => values.length === 4, 5_000, 'all four messages')
  await sleep(50)

  t.deepEqual(values, [1, 2, 3, 4])
  t.is(reported.length, 2)
  t.is(reported[0], thrown[0], "the 'callbackError' event carries the thrown error itself")
  t.is(reported[1], thrown[1])
  t.deepEqual(warnings, [], 'the listener handles them')
  t.false(sub.closed)
  t.is(pubsub.connectionState, 'Connected')
})

test("without a 'callbackError' listener, callbacks that throw make one process warning, not one each", async (t) => {
  const topic = uniqueTopic('throwing-unheard')
  const marker = `thrown-in-${topic}`
  const warnings = captureWarnings(t, marker)
  const pubsub = newPubSub(t)
  const values = []
  const sub = pubsub.subscribe(topic).subscribe((value) => {
    values.push(value)
    if (value < 3) throw new Error(`${marker} #${value}`)
  })
  await sub.ready
  for (const n of [1, 2, 3]) await pubsub.publish(topic, n, { qos: 1 })
  await waitFor(() => values.length === 3, 5_000, 'all three messages')
  await sleep(50)
  t.is(warnings.length, 1)
  t.regex(warnings[0].message, new RegExp(`listen for 'callbackError' events to see each one\\): Error: ${marker} #1`))
})

/** A burst of `count` messages to `topic`, published by `pubsub`; resolves once all are acknowledged. */
function burst(pubsub, topic, count, message) {
  return Promise.all(Array.from({ length: count }, () => pubsub.publish(topic, message, { qos: 1 })))
}

for (const [event, firstFormat, message] of [
  ['callbackError', 'json', 'json'],
  ['invalidPayload', 'json', Buffer.from('not json {')],
]) {
  test(`a throwing '${event}' listener loses no message for the other observers`, async (t) => {
    const topic = uniqueTopic(`${event}-listener-throws`)
    const marker = `thrown-in-${topic}`
    const warnings = captureWarnings(t, marker)
    const pubsub = newPubSub(t)
    pubsub.on(event, () => {
      throw new Error(marker)
    })
    // The first observer's callback throws (callbackError) or its format cannot read the
    // messages (invalidPayload); the second reads every message as text and never throws.
    const first = pubsub.subscribe(topic, { format: firstFormat }).subscribe({
      next() {
        throw new Error(`next of the first observer on ${topic}`)
      },
    })
    t.teardown(() => first.unsubscribe())
    await first.ready
    const { values, errors } = await listen(t, pubsub, topic, { format: 'string' })

    const count = 500
    await burst(pubsub, topic, count, message === 'json' ? { n: 1 } : message)
    await waitFor(() => values.length === count, 10_000, `all ${count} messages (got ${values.length})`).catch(() => {})
    await sleep(50)
    t.is(values.length, count)
    t.deepEqual(errors, [])
    t.is(warnings.length, 1, `one warning that an '${event}' listener threw`)
    t.regex(warnings[0].message, new RegExp(`'${event}' listener threw`))
  })
}

test("close() completes every observer and settles when a complete throws and the 'callbackError' listener rethrows", async (t) => {
  const pubsub = newPubSub(t)
  pubsub.on('callbackError', (error) => {
    throw error
  })
  const completed = []
  const subs = [1, 2, 3].map((n) =>
    pubsub.subscribe(uniqueTopic(`close-throws-${n}`)).subscribe({
      complete() {
        completed.push(n)
        throw new Error(`complete of observer ${n}`)
      },
    }),
  )
  await Promise.all(subs.map((sub) => sub.ready))
  const outcome = await Promise.race([pubsub.close().then(() => 'closed'), sleep(5_000).then(() => 'close() still pending')])
  t.is(outcome, 'closed')
  t.deepEqual(completed, [1, 2, 3])
  t.true(subs.every((sub) => sub.closed))
  t.is(pubsub.connectionState, 'Disconnected')
})

test("after a permanent failure every observer is told, even when an error callback throws and the 'callbackError' listener rethrows", async (t) => {
  const ownBroker = await startAedes()
  t.teardown(() => ownBroker.stop())
  const pubsub = openPubSub(t, { endpoint: ownBroker.wsUrl, reconnect: false })
  pubsub.on('callbackError', (error) => {
    throw error
  })
  const told = []
  const subs = [1, 2, 3].map((n) =>
    pubsub.subscribe(uniqueTopic(`failed-throws-${n}`)).subscribe({
      error(error) {
        told.push([n, error.code])
        throw new Error(`error of observer ${n}`)
      },
    }),
  )
  await Promise.all(subs.map((sub) => sub.ready))
  await ownBroker.stop()
  await waitFor(() => told.length === 3, 5_000, 'every observer told (got ' + told.length + ')').catch(() => {})
  t.deepEqual(told, [[1, 'ERR_CONNECTION'], [2, 'ERR_CONNECTION'], [3, 'ERR_CONNECTION']])
  t.true(subs.every((sub) => sub.closed))
})

// ----------------------------------------------------------------------- identity, credentials

test('clientId returns the id given, and that is the id the broker sees', async (t) => {
  const clientId = `given-${uniqueTopic('id').replace(/\W/g, '-')}`
  const pubsub = newPubSub(t, { endpoint: aedes.wsUrl, clientId })
  t.is(pubsub.clientId, clientId)
  await pubsub.publish(uniqueTopic('id'), 'x', { qos: 1 })
  t.true(connects.has(clientId), 'the broker saw the client id')
})

test('without a clientId each instance gets its own random UUID v4', (t) => {
  const uuidV4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
  const a = newPubSub(t)
  const b = newPubSub(t)
  t.regex(a.clientId, uuidV4)
  t.regex(b.clientId, uuidV4)
  t.not(a.clientId, b.clientId)
  t.is(a.clientId, a.clientId, 'stable across reads')
})

test('username and password reach the broker exactly as given', async (t) => {
  const clientId = `creds-${process.pid}-${Date.now()}`
  const username = 'zoë@example.com'
  const password = 'pä$$ wörd:with/odd=chars'
  const pubsub = newPubSub(t, { endpoint: aedes.wsUrl, clientId, username, password })
  const topic = uniqueTopic('creds')
  const values = []
  const sub = pubsub.subscribe(topic).subscribe({ next: (v) => values.push(v) })
  await sub.ready
  await pubsub.publish(topic, { hello: 'world' }, { qos: 1 })
  await waitFor(() => values.length === 1, 5_000, 'the round trip')
  t.deepEqual(connects.get(clientId), { username, password })
  t.like(values[0], { hello: 'world' })
})

test('without credentials the broker gets no username or password', async (t) => {
  const clientId = `anon-${process.pid}-${Date.now()}`
  const pubsub = newPubSub(t, { endpoint: aedes.wsUrl, clientId })
  await pubsub.publish(uniqueTopic('anon'), 1, { qos: 1 })
  t.deepEqual(connects.get(clientId), { username: undefined, password: undefined })
})
