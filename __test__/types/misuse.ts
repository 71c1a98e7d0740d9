// Each marked line below must be a type error: if the types grow too loose, tsc reports the
// expect-error marker as unused and the types test fails.
import { PubSub } from 'native-pubsub/mqtt'

const pubsub = new PubSub({ endpoint: 'ws://127.0.0.1/mqtt' })
// @ts-expect-error qos 3 does not exist
void pubsub.publish('a', {}, { qos: 3 })
// @ts-expect-error format is one of four names
pubsub.subscribe('a', { format: 'xml' })
// @ts-expect-error a string-format subscription gives strings
pubsub.subscribe('a', { format: 'string' }).subscribe((value: number) => value)
// @ts-expect-error the generic provider has no credentials option
new PubSub({ endpoint: 'ws://h/mqtt', credentials: {} })
// @ts-expect-error keepAlive is a number of seconds
new PubSub({ endpoint: 'ws://h/mqtt', keepAlive: '60' })
// @ts-expect-error the generic provider's name is not the IoT provider's
export const providerName: 'AWSIoTProvider' = pubsub.getProviderName()

import { PubSub as IotPubSub } from 'native-pubsub'
// @ts-expect-error credentials need a secret access key
new IotPubSub({ endpoint: 'wss://h/mqtt', credentials: { accessKeyId: 'AKID' } })
// @ts-expect-error the AWS IoT provider has no username (it signs with AWS credentials)
new IotPubSub({ endpoint: 'wss://h/mqtt', username: 'u' })
// @ts-expect-error reconnect bounds are numbers of milliseconds
new PubSub({ endpoint: 'ws://h/mqtt', reconnect: { minDelayMs: '1s' } })
// @ts-expect-error offlineQueue policies are 'all', 'qos1' and 'none'
new PubSub({ endpoint: 'ws://h/mqtt', offlineQueue: 'some' })
// @ts-expect-error new PubSub needs an endpoint (the provider classes can take it from configure)
new PubSub({ clientId: 'no-endpoint' })
// @ts-expect-error the AWS IoT PubSub needs an endpoint too, a region is not enough
new IotPubSub({ region: 'us-east-1' })
// @ts-expect-error retain is a boolean
void pubsub.publish('a', {}, { retain: 'false' })
// @ts-expect-error a misspelt option is refused (at run time too), not ignored
void pubsub.publish('a', {}, { retained: true })
// @ts-expect-error subscribe has no per-call clientId (Amplify's separate connection)
pubsub.subscribe('a', { clientId: 'other' })

import { ConnectionState } from 'native-pubsub'
// @ts-expect-error a state's own type holds that state only
export const notUp: ConnectionState.Connected = ConnectionState.Disconnected
// @ts-expect-error Amplify's plain-ws switch is a boolean
new PubSub({ endpoint: 'ws://h/mqtt', aws_appsync_dangerously_connect_to_http_endpoint_for_testing: 'true' })
