export {
  ConnectionState,
  CONNECTION_STATE_CHANGE,
  TOPIC,
  mqttTopicMatch,
  Hub,
  ErrorCode,
  PubSubError,
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
} from './index'
import type { MqttPubSubOptions, PubSubInstance } from './index'

/** The generic MQTT provider, for any broker. */
export type PubSub = PubSubInstance
export declare const PubSub: {
  new (options: MqttPubSubOptions): PubSubInstance
  readonly prototype: PubSubInstance
}
