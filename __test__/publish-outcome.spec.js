'use strict'
// What a rejected publish says of its outcome: every rejection carries `sent`, whether some of
// the publish had been handed to the connection (written, or queued in the client to be). With
// `sent: false` the broker never got it, and publishing it again cannot make a duplicate; with
// `sent: true` the broker may have it (and may have delivered it). An abort's `sent` is in
// publish-abort.spec.js.
const test = require('ava')
const { PubSub: IotPubSub } = require('../index.js')
const { PubSub } = require('../mqtt.js')
const { useMosquitto, startMosquitto } = require('./helpers/mosquitto.js')
const { startMqttProxy, PACKET_TYPE } = require('./helpers/mqtt-proxy.js')
const { useIotGateway } = require('./helpers/iot-gateway.js')
const { topicNamer, openPubSub, mqttJs, tcpServer, waitFor, sleep } = require('./helpers/pubsub.js')

const uniqueTopic = topicNamer('publish-outcome')
const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: 'us-east-1', broker: broker.tcpUrl }))

/** A proxy to the file's broker that drops every PUBACK, and cuts the connection at the first. */
async function pubackCutter(t) {
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, connection }) {
      if (fromClient || type !== PACKET_TYPE.PUBACK) return true
      connection.cut(100)
      return false
    },
  })
  t.teardown(() => proxy.stop())
  return proxy
}

/** A reconnect too slow to come within a test: what the loss leaves stays as it is. */
const NO_RECONNECT_SOON = { minDelayMs: 60_000, maxDelayMs: 60_000 }

test('a publish refused by the call itself rejects with sent: false', async (t) => {
  const pubsub = openPubSub(t, { endpoint: broker.wsUrl })
  const refusals = [
    [pubsub.publish('a/+', 'wildcard'), 'ERR_INVALID_TOPIC'],
    [pubsub.publish('a', 1n), 'ERR_PAYLOAD'],
    [pubsub.publish('a', 'x', { qos: 3 }), 'ERR_INVALID_OPTION'],
  ]
  for (const [publishing, code] of refusals) t.like(await t.throwsAsync(publishing), { code, sent: false })
  await pubsub.close()
  t.like(await t.throwsAsync(pubsub.publish('a', 'after close')), { code: 'ERR_CLOSED', sent: false })
})

test('close() rejects a publish awaiting its PUBACK with sent: true, and one waiting out an outage with sent: false', async (t) => {
  const frozen = await startMosquitto()
  t.teardown(() => frozen.stop())
  const pubsub = new PubSub({ endpoint: frozen.tcpUrl })
  await pubsub.publish(uniqueTopic('connect'), 'hello', { qos: 1 })
  frozen.pause() // the connection stays open, and nothing is acknowledged
  const awaitingAck = pubsub.publish(uniqueTopic('frozen'), 'written', { qos: 1 })
  await waitFor(() => pubsub.stats().messagesSent === 2, 5_000, 'the publish written')
  pubsub.close()
  const error = await t.throwsAsync(awaitingAck)
  t.like(error, { code: 'ERR_CLOSED', sent: true })

  // Nothing listens: the publish waits in the offline queue, never written.
  const nowhere = await tcpServer(t, (socket) => socket.destroy())
  const offline = openPubSub(t, { endpoint: `mqtt://127.0.0.1:${nowhere}`, reconnect: NO_RECONNECT_SOON })
  offline.on('connectionDisrupted', () => {})
  const queued = offline.publish(uniqueTopic('offline'), 'queued', { qos: 1 })
  await waitFor(() => offline.connectionState === 'ConnectionDisrupted', 5_000, 'the first attempt to fail')
  offline.close()
  t.like(await t.throwsAsync(queued), { code: 'ERR_CLOSED', sent: false })
})

test("offlineQueue 'none': a publish written and not acknowledged when the connection is lost rejects, sent: true, its outcome unknown", async (t) => {
  const proxy = await pubackCutter(t)
  const pubsub = openPubSub(t, { endpoint: proxy.url, offlineQueue: 'none', reconnect: NO_RECONNECT_SOON })
  pubsub.on('connectionDisrupted', () => {})
  const topic = uniqueTopic('none')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(topic, { qos: 1 })
  const error = await t.throwsAsync(pubsub.publish(topic, 'written', { qos: 1 }))
  t.like(error, { code: 'ERR_CONNECTION', sent: true })
  t.regex(error.message, /^Outcome unknown: the connection failed or was lost after this publish was written, before its acknowledgement \(the broker may have it\), and offlineQueue 'none' keeps nothing/)
  await waitFor(() => watcher.messages.length === 1, 5_000, 'the message at the watcher')
  t.is(watcher.messages[0].payload.toString(), '"written"', 'sent: true, and the broker did have it')

  // While the connection is down, 'none' turns a publish away before anything is written.
  await waitFor(() => pubsub.connectionState === 'ConnectionDisrupted', 5_000, 'the loss')
  t.like(await t.throwsAsync(pubsub.publish(topic, 'offline', { qos: 1 })), { sent: false })
})

test('a full offline queue turns away a publish written before the loss with sent: true, and says it is not sent again', async (t) => {
  const proxy = await pubackCutter(t)
  const pubsub = openPubSub(t, { endpoint: proxy.url, offlineQueue: { maxMessages: 1 }, reconnect: NO_RECONNECT_SOON })
  pubsub.on('connectionDisrupted', () => {})
  const topic = uniqueTopic('full')
  const first = pubsub.publish(topic, 'first', { qos: 1 })
  const second = pubsub.publish(topic, 'second', { qos: 1 })
  // Both are written before the first PUBACK comes back and cuts the connection; the oldest is kept.
  const error = await t.throwsAsync(second)
  t.like(error, { code: 'ERR_QUEUE_FULL', sent: true })
  t.regex(error.message, /: not sent again \(it was written before the connection was lost, and not acknowledged: the broker may have it\)$/)
  t.is(pubsub.stats().queued.operations, 1)
  pubsub.close()
  t.like(await t.throwsAsync(first), { code: 'ERR_CLOSED', sent: true })
})

test('a publish written on a lost connection, waiting to go again on a new session, is sent: true, closed or aborted', async (t) => {
  for (const end of ['close', 'abort']) {
    let connections = 0
    const proxy = await startMqttProxy({
      targetPort: broker.tcpPort,
      onPacket({ fromClient, type, connection }) {
        if (type === PACKET_TYPE.CONNECT) connection.id ??= ++connections
        if (fromClient) return true
        // No SUBACK ever: the renewal of that subscription holds back everything after it.
        if (type === PACKET_TYPE.SUBACK) return false
        if (type === PACKET_TYPE.PUBACK) {
          connection.cut(100)
          return false
        }
        return true
      },
    })
    t.teardown(() => proxy.stop())
    const topic = uniqueTopic(`resent-${end}`)
    const watcher = await mqttJs(t, broker.tcpUrl)
    await watcher.client.subscribeAsync(topic, { qos: 1 })
    const pubsub = openPubSub(t, { endpoint: proxy.url, reconnect: { minDelayMs: 100, maxDelayMs: 100 } })
    pubsub.on('connectionDisrupted', () => {})
    pubsub.subscribe(uniqueTopic('never-acknowledged')).subscribe({ next() {}, error() {} })
    const controller = new AbortController()
    const publishing = pubsub.publish(topic, 'written once', { qos: 1, signal: controller.signal })
    await waitFor(() => connections >= 2 && pubsub.connectionState === 'Connected', 5_000, 'the second connection')
    await sleep(200)
    if (end === 'close') pubsub.close()
    else controller.abort()
    const error = await t.throwsAsync(publishing)
    t.like(error, { code: end === 'close' ? 'ERR_CLOSED' : 'ABORT_ERR', sent: true }, end)
    t.deepEqual(watcher.messages.map((m) => m.payload.toString()), ['"written once"'], `${end}: the broker had it`)
  }
})

test('a QoS 2 publish to two topics, one of them at the broker (PUBREC) and the other never written, is sent: true', async (t) => {
  // rumqttc takes 1,024 unacknowledged packets: the fillers, whose PUBACKs never come, leave one
  // place, for the first topic; the second waits in the client.
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, connection }) {
      if (fromClient) return true
      if (type === PACKET_TYPE.PUBACK) return false
      if (type === PACKET_TYPE.PUBCOMP) {
        connection.cut(50)
        return false
      }
      return true
    },
  })
  t.teardown(() => proxy.stop())
  const prefix = uniqueTopic('qos2')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(`${prefix}/#`, { qos: 2 })
  const pubsub = openPubSub(t, { endpoint: proxy.url, offlineQueue: 'none', reconnect: NO_RECONNECT_SOON })
  pubsub.on('connectionDisrupted', () => {})
  const fillers = Array.from({ length: 1023 }, (_, i) => pubsub.publish(`${prefix}-fill`, i, { qos: 1 }).catch(() => {}))
  const error = await t.throwsAsync(pubsub.publish([`${prefix}/a`, `${prefix}/b`], 'once', { qos: 2 }))
  t.like(error, { code: 'ERR_CONNECTION', sent: true })
  await waitFor(() => watcher.messages.length === 1, 5_000, 'the first topic at the watcher')
  t.is(watcher.messages[0].topic, `${prefix}/a`)
  await Promise.all(fillers)
})

test('a publish failed before any connection was made is sent: false: a refused CONNACK, close() while connecting', async (t) => {
  let published = 0
  const refusing = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type }) {
      if (fromClient && type === PACKET_TYPE.PUBLISH) published++
      // CONNACK "not authorized"
      if (!fromClient && type === PACKET_TYPE.CONNACK) return Buffer.from([0x20, 0x02, 0x00, 0x05])
      return true
    },
  })
  t.teardown(() => refusing.stop())
  const refused = openPubSub(t, { endpoint: refusing.url })
  t.like(await t.throwsAsync(refused.publish(uniqueTopic('refused'), 'x', { qos: 1 })), { code: 'ERR_NOT_AUTHORIZED', sent: false })

  const silent = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type }) {
      if (fromClient && type === PACKET_TYPE.PUBLISH) published++
      return type !== PACKET_TYPE.CONNACK // connecting for ever
    },
  })
  t.teardown(() => silent.stop())
  const connecting = openPubSub(t, { endpoint: silent.url })
  const publishing = connecting.publish(uniqueTopic('connecting'), 'x', { qos: 1 })
  await sleep(200)
  t.is(connecting.connectionState, 'Connecting')
  connecting.close()
  t.like(await t.throwsAsync(publishing), { code: 'ERR_CLOSED', sent: false })
  t.is(published, 0)
})

test('after an idle disconnect, a publish whose new connection is closed before its CONNACK is sent: false', async (t) => {
  const frozen = await startMosquitto()
  t.teardown(() => frozen.stop())
  const pubsub = openPubSub(t, { endpoint: frozen.tcpUrl })
  const subscription = pubsub.subscribe(uniqueTopic('idle')).subscribe({ next() {} })
  await subscription.ready
  subscription.unsubscribe() // the last observer leaves: the connection ends with DISCONNECT
  await waitFor(() => pubsub.connectionState === 'Disconnected', 5_000, 'the idle disconnect')
  frozen.pause() // the next connection gets no CONNACK
  const publishing = pubsub.publish(uniqueTopic('idle'), 'x', { qos: 1 })
  await waitFor(() => pubsub.connectionState === 'Connecting', 5_000, 'the next connection')
  await sleep(200)
  pubsub.close()
  t.like(await t.throwsAsync(publishing), { code: 'ERR_CLOSED', sent: false })
  frozen.resume()
})

test('a publish to many topics rejected after some of them were acknowledged is sent: true, though the rest never left', async (t) => {
  // AWS IoT's pace (100 publishes a second) holds the rest of the topics back.
  const pubsub = new IotPubSub({ endpoint: gateway.url, ca: gateway.ca, region: 'us-east-1', credentials: gateway.newKeys() })
  t.teardown(() => pubsub.close())
  const prefix = uniqueTopic('many')
  const watcher = await mqttJs(t, broker.tcpUrl)
  await watcher.client.subscribeAsync(`${prefix}/#`, { qos: 1 })
  await pubsub.publish(uniqueTopic('connect'), 'hello', { qos: 1 })
  const topics = Array.from({ length: 250 }, (_, i) => `${prefix}/${i}`)
  const publishing = pubsub.publish(topics, 'x', { qos: 1 })
  // The first second's topics are acknowledged; the others wait in the queue.
  await waitFor(() => pubsub.stats().inFlight.operations === 0 && pubsub.stats().queued.operations > 0, 5_000, 'the first acknowledgements')
  pubsub.close()
  const error = await t.throwsAsync(publishing)
  t.like(error, { code: 'ERR_CLOSED', sent: true })
  t.is(error.message, 'Published to some of its topics only; for the others: The PubSub instance is closed')
  t.true(watcher.messages.length > 0 && watcher.messages.length < topics.length, `${watcher.messages.length} of ${topics.length} topics delivered`)
})
