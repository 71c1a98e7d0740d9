// Compiled with `tsc --noEmit` by the test suite: the documented usage must typecheck.
import { PubSub, TOPIC, Hub, CONNECTION_STATE_CHANGE, ConnectionState, mqttTopicMatch } from 'native-pubsub/mqtt'
import type { AbortedPublishError, MqttMessage, PubSubError, PublishError, PubSubStats, Subscription } from 'native-pubsub/mqtt'
import { PubSub as IotPubSub, AWSIoTProvider, MqttOverWSProvider } from 'native-pubsub'

const pubsub = new PubSub({ endpoint: 'ws://127.0.0.1:1883/mqtt', clientId: 'x', keepAlive: 30 })
export async function usage(): Promise<void> {
  await pubsub.publish({ topics: ['a', 'b'], message: { msg: 'hi' }, options: { qos: 1 } })
  await pubsub.publish('a', Buffer.from([1, 2]), { retain: true })
  const sub: Subscription = pubsub.subscribe({ topics: 'a/+' }).subscribe({
    next: (data: { msg?: string }) => console.log(data.msg),
    error: (error: PubSubError) => console.error(error.code),
    complete: () => console.log('done'),
  })
  await sub.ready
  sub.unsubscribe()
  // A typed JSON object carries its topic under TOPIC; a JSON scalar carries nothing.
  pubsub.subscribe<{ id: number }>('orders/+').subscribe({ next: (order) => console.log(order[TOPIC].length, order.id + 1) })
  pubsub.subscribe<number>({ topics: 'counts/+' }).subscribe((count) => {
    // @ts-expect-error a number has no topic
    console.log(count[TOPIC], count + 1)
  })
  pubsub.subscribe('b', { format: 'message' }).subscribe((m: MqttMessage) => m.payload.length)
  for await (const text of pubsub.subscribe('c', { format: 'string' })) {
    const s: string = text
    if (s) break
  }
  const stop = Hub.listen('pubsub', ({ payload }) => {
    if (payload.event === CONNECTION_STATE_CHANGE) {
      const state = payload.data.connectionState as ConnectionState
      console.log(state === ConnectionState.Connected)
    }
  })
  stop()
  pubsub.on(CONNECTION_STATE_CHANGE, (state: ConnectionState) => console.log(state))
  pubsub.on('connectionDisrupted', ({ error, retryInMs }) => console.log(error.code, error.message, retryInMs + 1))
  const state: ConnectionState = pubsub.connectionState
  console.log(state, mqttTopicMatch('a/#', 'a/b'), pubsub.clientId)
  await pubsub.close()
  const iot: IotPubSub = new IotPubSub({ region: 'us-east-1', endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt' })
  void iot
}

// AWS IoT: static keys, a (Cognito-style) provider function, or the default chain.
export const iotStatic = new IotPubSub({
  endpoint: 'wss://a1b2c3-ats.iot.us-east-1.amazonaws.com/mqtt',
  credentials: { accessKeyId: 'AKID', secretAccessKey: 's', sessionToken: 't', expiration: new Date() },
})
export const iotFunction = new IotPubSub({
  aws_pubsub_endpoint: 'a1b2c3-ats.iot.us-east-1.amazonaws.com',
  aws_pubsub_region: 'us-east-1',
  credentials: async () => ({ accessKeyId: 'AKID', secretAccessKey: 's' }),
})
export const iotDefaultChain = new IotPubSub({ endpoint: 'wss://iot.example.com/mqtt', region: 'eu-west-1' })
export const iotProvider: 'AWSIoTProvider' = iotDefaultChain.getProviderName()
export const mqttProvider: 'MqttOverWSProvider' = pubsub.getProviderName()

// Reconnect, offline queue and statistics.
export const resilient = new PubSub({
  endpoint: 'mqtt://127.0.0.1:1883',
  reconnect: { minDelayMs: 500, maxDelayMs: 30_000, resetAfterMs: 60_000 },
  offlineQueue: { policy: 'all', maxMessages: 1_000, maxBytes: 1 << 20 },
})
export const noRetry = new PubSub({ endpoint: 'mqtt://127.0.0.1:1883', reconnect: false, offlineQueue: 'none' })
// A publish whose wait is bounded, and that is withdrawn if not sent by then.
export const bounded: Promise<void> = resilient
  .publish('devices/7/commands', { unlock: true }, { qos: 1, signal: AbortSignal.timeout(10_000) })
  .catch((error: AbortedPublishError) => {
    if (error.code === 'ABORT_ERR' && !error.sent) console.log('not sent in time')
  })
// Every publish rejection says whether the broker may have the message.
export const retried: Promise<void> = noRetry.publish('orders/created', { id: 7 }, { qos: 1 }).catch((error: PublishError) => {
  if (!error.sent) return noRetry.publish('orders/created', { id: 7 }, { qos: 1 })
})
// A graceful shutdown: what was published has 5 s to be acknowledged.
export const shutDown: Promise<void> = resilient.close({ drainMs: 5_000 })
// Through an HTTP proxy, on either provider.
export const proxied = new IotPubSub({ endpoint: 'wss://iot.example.com/mqtt', region: 'eu-west-1', proxy: process.env.HTTPS_PROXY })
// A will without a message is an empty one (as the runtime sends it).
export const emptyWill = new PubSub({ endpoint: 'mqtt://127.0.0.1:1883', will: { topic: 'status/server-1', retain: true } })
const stats: PubSubStats = resilient.stats()
export const queuedBytes: number = stats.queued.bytes + stats.inFlight.operations + stats.dropped.queueFull

// The endpoint is required, under either name; the provider classes may leave it to configure.
export const aliased = new PubSub({ aws_pubsub_endpoint: 'ws://127.0.0.1:1883/mqtt' })
export const configuredLater = new MqttOverWSProvider({ clientId: 'x' })
export const iotConfiguredLater = new AWSIoTProvider()
