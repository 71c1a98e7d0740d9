export {
  ConnectionState,
  CONNECTION_STATE_CHANGE,
  CONTROL_MSG,
  TOPIC,
  WithTopic,
  mqttTopicMatch,
  Hub,
  ErrorCode,
  PubSubError,
  AbortedPublishError,
  Qos,
  MessageFormat,
  PublishMessage,
  PublishOptions,
  SubscribeOptions,
  MqttMessage,
  Observer,
  Subscription,
  Observable,
  WillOptions,
  CommonOptions,
  WithEndpoint,
  ReconnectOptions,
  OfflineQueuePolicy,
  OfflineQueueOptions,
  OperationLoad,
  PubSubStats,
  MqttPubSubOptions,
  PublishInput,
  SubscribeInput,
  FormattedSubscribeInput,
  PubSubInstance,
  HubCapsule,
  Amplify,
  AWSIoTProvider,
  MqttOverWSProvider,
  ProviderName,
  ProviderOptions,
  ProviderMessage,
  ProviderError,
  PubSubConfig,
  AmplifyConfig,
  PubSubSingleton,
  IotPubSubOptions,
  AwsCredentials,
} from './index'
import type { MqttPubSubOptions, PubSubInstance, PubSubSingleton, WithEndpoint } from './index'

/** The constructor options of this entry point's `PubSub`, under the name Amplify exports them by. */
export type PubSubOptions = WithEndpoint<MqttPubSubOptions>

/** The generic MQTT provider, for any broker; its statics are the older docs' singleton. */
export type PubSub = PubSubInstance
export declare const PubSub: PubSubSingleton & {
  new (options: PubSubOptions): PubSubInstance
  readonly prototype: PubSubInstance
}
export default PubSub
