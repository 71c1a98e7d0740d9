'use strict'
// MQTT packet ids on the wire: a new PUBLISH (QoS 1/2), SUBSCRIBE or UNSUBSCRIBE never takes an
// id that a packet still awaiting its ack holds (MQTT-2.3.1-2), however full the window of
// 1,024 ids is. A proxy between the client and mosquitto hands the broker's acks back one per
// millisecond, so that the window fills, and checks every id the client sends.
const test = require('ava')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { startMqttProxy, parsePublish, leadingPacketId, PACKET_TYPE } = require('./helpers/mqtt-proxy.js')
const { topicNamer, openPubSub, observe, waitFor } = require('./helpers/pubsub.js')

const broker = useMosquitto(test)
const uniqueTopic = topicNamer('packet-ids')

const { PUBLISH, PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK } = PACKET_TYPE
const ACK_OF = { [PUBLISH]: PUBACK, [SUBSCRIBE]: SUBACK, [UNSUBSCRIBE]: UNSUBACK }
const NAME = { [PUBLISH]: 'PUBLISH', [SUBSCRIBE]: 'SUBSCRIBE', [UNSUBSCRIBE]: 'UNSUBSCRIBE' }

/**
 * A proxy to the shared broker whose acks of `pacedAck` type reach the client one per ms, in
 * order. `awaiting` maps each id the client sent to its packet's name until the client has the
 * ack; `reused` lists the packets sent with an id already there; `peak` is the most at once;
 * `sent` counts the packets with an id, by name.
 */
async function pacedProxy(t, pacedAck) {
  const seen = { awaiting: new Map(), reused: [], peak: 0, sent: { PUBLISH: 0, SUBSCRIBE: 0, UNSUBSCRIBE: 0 } }
  const held = []
  let toClient = null
  const proxy = await startMqttProxy({
    targetPort: broker.tcpPort,
    onPacket({ fromClient, type, packet, connection }) {
      if (fromClient && ACK_OF[type]) {
        const pkid = type === PUBLISH ? parsePublish(packet).pkid : leadingPacketId(packet)
        if (pkid === 0) return // QoS 0
        if (seen.awaiting.has(pkid)) seen.reused.push(`${NAME[type]} ${pkid} while ${seen.awaiting.get(pkid)} ${pkid} awaits its ack`)
        seen.awaiting.set(pkid, NAME[type])
        seen.sent[NAME[type]]++
        seen.peak = Math.max(seen.peak, seen.awaiting.size)
      } else if (!fromClient && Object.values(ACK_OF).includes(type)) {
        if (type === pacedAck) {
          toClient = connection
          held.push(packet)
          return false
        }
        seen.awaiting.delete(leadingPacketId(packet))
      }
    },
  })
  const pacer = setInterval(() => {
    const ack = held.shift()
    if (!ack) return
    seen.awaiting.delete(leadingPacketId(ack))
    toClient.toClient(ack)
  }, 1)
  t.teardown(() => {
    clearInterval(pacer)
    return proxy.stop()
  })
  return { proxy, seen }
}

test('a SUBSCRIBE or UNSUBSCRIBE never takes the id of a QoS 1 publish awaiting its PUBACK', async (t) => {
  const { proxy, seen } = await pacedProxy(t, PUBACK)
  const pubsub = openPubSub(t, { endpoint: proxy.url })
  const topic = uniqueTopic('publishes')
  const last = observe(pubsub.subscribe(`${topic}/last`))
  await last.subscription.ready

  // A window's worth of publishes, then subscribe, publish, subscribe… in one burst: once the
  // window is full, each PUBACK frees one id, and the request after it must not take another.
  const published = []
  for (let i = 0; i < 1_100; i++) published.push(pubsub.publish(topic, i, { qos: 1 }))
  const subscriptions = []
  for (let i = 0; i < 100; i++) {
    subscriptions.push(pubsub.subscribe(`${topic}/${i}`).subscribe({}))
    published.push(pubsub.publish(topic, i, { qos: 1 }))
  }
  await Promise.all(subscriptions.map((s) => s.ready))
  for (let i = 0; i < 1_100; i++) published.push(pubsub.publish(topic, i, { qos: 1 }))
  for (const subscription of subscriptions) {
    subscription.unsubscribe()
    published.push(pubsub.publish(topic, 'after', { qos: 1 }))
  }
  await Promise.all(published)
  const unsubscribing = () => [...seen.awaiting.values()].includes('UNSUBSCRIBE')
  await waitFor(() => seen.sent.UNSUBSCRIBE === 100 && !unsubscribing(), 10_000, 'the UNSUBACKs')

  t.true(seen.peak >= 1_000, `the window filled (${seen.peak} ids awaiting acks at most)`)
  t.deepEqual(seen.reused, [])
  await pubsub.publish(`${topic}/last`, 'delivered', { qos: 1 })
  t.deepEqual(await last.take(1), ['delivered'])
})

test('more SUBSCRIBEs outstanding than the window holds wait for free ids, and all become ready', async (t) => {
  const { proxy, seen } = await pacedProxy(t, SUBACK)
  const pubsub = openPubSub(t, { endpoint: proxy.url })
  const topic = uniqueTopic('subscribes')
  await pubsub.publish(`${topic}/connect`, 'connected', { qos: 1 })

  const inboxes = []
  for (let i = 0; i < 1_200; i++) inboxes.push(observe(pubsub.subscribe(`${topic}/${i}`)))
  await Promise.all(inboxes.map((inbox) => inbox.subscription.ready))

  t.true(seen.peak >= 1_000, `the window filled (${seen.peak} ids awaiting acks at most)`)
  t.deepEqual(seen.reused, [])
  await pubsub.publish(`${topic}/1199`, 'delivered', { qos: 1 })
  t.deepEqual(await inboxes[1_199].take(1), ['delivered'])
})
