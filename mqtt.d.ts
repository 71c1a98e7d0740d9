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
  PublishError,
  AbortedPublishError,
  Qos,
  MessageFormat,
  PublishMessage,
  PublishOptions,
  CloseOptions,
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
  IotPubSubInstance,
  MqttPubSubInstance,
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
import type { MqttPubSubOptions, MqttPubSubInstance, PubSubSingleton, WithEndpoint } from './index'

/** The constructor options of this entry point's `PubSub`, under the name Amplify exports them by. */
export type PubSubOptions = WithEndpoint<MqttPubSubOptions>

/** The generic MQTT provider, for any broker; its statics are the older docs' singleton. */
export type PubSub = MqttPubSubInstance
export declare const PubSub: PubSubSingleton & {
  new (options: PubSubOptions): MqttPubSubInstance
  readonly prototype: MqttPubSubInstance
}
export default PubSub
