// Compiled with `tsc --noEmit` by the test suite. Consumer code that typechecks against the real
// @aws-amplify/pubsub 6.2.1 (checked there, with only the import lines differing) must keep
// typechecking with native-pubsub: this is what an audit against that package found failing.
import { PubSub, PubSubOptions, ConnectionState, CONNECTION_STATE_CHANGE, CONTROL_MSG, Hub } from 'native-pubsub'
import { PubSub as MqttPubSub, type PubSubOptions as MqttPubSubOptions } from 'native-pubsub/mqtt'

// Amplify exports the constructor options as PubSubOptions, from the root and from /mqtt.
const options: PubSubOptions = { region: 'us-east-1', endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt' }
export const iot = new PubSub(options)
const mqttOptions: MqttPubSubOptions = { endpoint: 'wss://broker.example.com/mqtt', clientId: 'x' }
export const generic = new MqttPubSub(mqttOptions)

// A Node backend takes its endpoint from the environment: `string | undefined`.
export const fromEnv = new PubSub({ region: process.env.AWS_REGION, endpoint: process.env.IOT_ENDPOINT })
const config = { region: process.env.AWS_REGION, endpoint: process.env.IOT_ENDPOINT }
export const fromConfig = new PubSub(config)
export const mqttFromEnv = new MqttPubSub({ endpoint: process.env.MQTT_ENDPOINT, clientId: 'x' })

// Amplify's switch for a plain ws:// broker (accepted here without effect).
export const local = new MqttPubSub({ endpoint: 'ws://localhost:9001/mqtt', aws_appsync_dangerously_connect_to_http_endpoint_for_testing: true })

// Amplify's per-call options name a provider; an instance takes and ignores it.
void iot.publish({ topics: 't', message: { a: 1 }, options: { provider: 'AWSIoTProvider' } })
iot.subscribe({ topics: 't', options: { provider: 'AWSIoTProvider' } })

// ConnectionState is an enum in Amplify: its members are types too.
export type Up = ConnectionState.Connected
export const up: Up = ConnectionState.Connected
export interface Status {
  state: ConnectionState.Connected | ConnectionState.ConnectionDisrupted
}
export const closed: string = CONTROL_MSG.CONNECTION_CLOSED
export type Closed = CONTROL_MSG.CONNECTION_CLOSED

// Amplify's Hub.listen takes a listener name as its third argument.
export const stop = Hub.listen(
  'pubsub',
  (data: any) => {
    const { payload } = data
    if (payload.event === CONNECTION_STATE_CHANGE) console.log(payload.data.connectionState as ConnectionState)
  },
  'connection-monitor',
)
stop()
