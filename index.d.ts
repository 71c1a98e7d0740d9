/// <reference types="node" />
import { EventEmitter } from 'node:events'

// ---------------------------------------------------------------------------------------------
// Shared by every entry point ('native-pubsub', 'native-pubsub/iot', 'native-pubsub/mqtt')
// ---------------------------------------------------------------------------------------------

/** Amplify's eight connection states. */
export declare const ConnectionState: {
  readonly Connected: 'Connected'
  readonly ConnectedPendingDisconnect: 'ConnectedPendingDisconnect'
  readonly ConnectedPendingKeepAlive: 'ConnectedPendingKeepAlive'
  readonly ConnectedPendingNetwork: 'ConnectedPendingNetwork'
  readonly ConnectionDisrupted: 'ConnectionDisrupted'
  readonly ConnectionDisruptedPendingNetwork: 'ConnectionDisruptedPendingNetwork'
  readonly Connecting: 'Connecting'
  readonly Disconnected: 'Disconnected'
}
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState]
/** Each state as a type of its own, as with Amplify's enum (`let s: ConnectionState.Connected`). */
export declare namespace ConnectionState {
  type Connected = 'Connected'
  type ConnectedPendingDisconnect = 'ConnectedPendingDisconnect'
  type ConnectedPendingKeepAlive = 'ConnectedPendingKeepAlive'
  type ConnectedPendingNetwork = 'ConnectedPendingNetwork'
  type ConnectionDisrupted = 'ConnectionDisrupted'
  type ConnectionDisruptedPendingNetwork = 'ConnectionDisruptedPendingNetwork'
  type Connecting = 'Connecting'
  type Disconnected = 'Disconnected'
}

/** The name of the connection-state event (on the instance and on `Hub`'s 'pubsub' channel). */
export declare const CONNECTION_STATE_CHANGE: 'ConnectionStateChange'

/**
 * Amplify's CONTROL_MSG strings (messages of its AppSync real-time client), exported as
 * `@aws-amplify/pubsub` exports them (a string enum) so that code importing them still loads;
 * unused here.
 */
export declare enum CONTROL_MSG {
  CONNECTION_CLOSED = 'Connection closed',
  CONNECTION_FAILED = 'Connection failed',
  REALTIME_SUBSCRIPTION_INIT_ERROR = 'AppSync Realtime subscription init error',
  SUBSCRIPTION_ACK = 'Subscription ack',
  TIMEOUT_DISCONNECT = 'Timeout disconnect',
}

/** The key under which a JSON object message carries the topic it arrived on. */
export declare const TOPIC: unique symbol

/**
 * A JSON message as observers get it: an object (or array) carries the topic it arrived on under
 * `TOPIC`; other JSON values (strings, numbers, booleans, null) carry nothing.
 */
export type WithTopic<T> = T extends object ? T & { readonly [TOPIC]: string } : T

/**
 * Whether an MQTT topic filter (with `+` and `#`) matches a topic name, as delivery to observers
 * decides it: a shared subscription (`$share/<group>/<filter>`) by the filter after its group.
 */
export declare function mqttTopicMatch(filter: string, topic: string): boolean

export type ErrorCode =
  | 'ERR_INVALID_OPTION'
  | 'ERR_INVALID_ENDPOINT'
  | 'ERR_INVALID_TOPIC'
  | 'ERR_PAYLOAD'
  | 'ERR_CONNECT_REFUSED'
  | 'ERR_NOT_AUTHORIZED'
  | 'ERR_CONNECT_TIMEOUT'
  | 'ERR_CREDENTIALS'
  | 'ERR_QUEUE_FULL'
  | 'ERR_CLIENT_ID_TAKEOVER'
  | 'ERR_CONNECTION'
  | 'ERR_SUBSCRIBE_REFUSED'
  | 'ERR_CLOSED'
  | 'ERR_NO_PROVIDER'
  /** A `TypeError`: an instance's method or getter called with another `this` (taken off the instance unbound, or on a Proxy around it). */
  | 'ERR_INVALID_THIS'
  /** A bug of this package: Node could not set up the native callback, or a malformed publish batch (should never happen). */
  | 'ERR_INTERNAL'
  /** Thrown by `require`/`import` when the native addon is missing or does not load (see the README). */
  | 'ERR_NATIVE_ADDON'
  /** A publish whose `signal` was aborted (an `AbortError`, as Node names it: see `AbortedPublishError`). */
  | 'ABORT_ERR'

/** Every error this package produces is an `Error` with a stable `code`. */
export interface PubSubError extends Error {
  code: ErrorCode
}

/** What a publish rejects with, whatever the reason. */
export interface PublishError extends PubSubError {
  /**
   * Some of it had been handed to the connection (written, or queued in the client to be): the
   * broker may have it, and may have delivered it. `false`: the broker never got it, so publishing
   * it again cannot make a duplicate.
   */
  sent: boolean
}

/** The rejection of a publish whose `signal` was aborted. */
export interface AbortedPublishError extends PublishError {
  name: 'AbortError'
  code: 'ABORT_ERR'
  /** Some of it had been handed to the connection, past recall: the broker may get it. */
  sent: boolean
  /** The signal's reason. */
  cause: unknown
}

export type Qos = 0 | 1 | 2
export type MessageFormat = 'json' | 'string' | 'binary' | 'message'

/** A message: any JSON-serialisable value (sent as JSON), or raw bytes (Buffer, Uint8Array, ArrayBuffer, DataView, other typed arrays). */
export type PublishMessage = unknown

export interface PublishOptions {
  /** 0 resolves once written, 1 on PUBACK, 2 on PUBCOMP. Default 0. AWS IoT Core takes 0 and 1 only. */
  qos?: Qos
  /** Ask the broker to keep the message for later subscribers. Default false. */
  retain?: boolean
  /**
   * Aborting it withdraws what still waits its turn (while the connection is down, say) and
   * rejects the publish with an `AbortError` (code `ABORT_ERR`, the signal's reason as `cause`,
   * `sent`: whether some of it had been handed to the connection, past recall).
   * `AbortSignal.timeout(ms)` bounds the wait for an acknowledgement.
   */
  signal?: AbortSignal
  /** Amplify's: picks a provider of the singleton (`PubSub.publish`); an instance ignores it. */
  provider?: string | symbol
}

export interface CloseOptions {
  /** Up to this many milliseconds for the publishes already made to settle before closing (MQTT.js's `end(false)`). Default 0. */
  drainMs?: number
}

export interface SubscribeOptions {
  /** Default 0. AWS IoT Core takes 0 and 1 only. */
  qos?: Qos
  /** How `next` receives payloads. Default 'json'. */
  format?: MessageFormat
  /** Amplify's: picks a provider of the singleton (`PubSub.subscribe`); an instance ignores it. */
  provider?: string | symbol
}

/** What `next` receives with `format: 'message'`. */
export interface MqttMessage {
  topic: string
  payload: Buffer
  qos: Qos
  retain: boolean
  dup: boolean
}

export interface Observer<T, E = PubSubError> {
  next?(value: T): void
  error?(error: E): void
  complete?(): void
  /**
   * The older Amplify docs' name for `complete`; both are called if given. On the singleton
   * (`PubSub.subscribe`) it is also called when you unsubscribe, as those docs describe.
   */
  close?(): void
}

export interface Subscription {
  unsubscribe(): void
  readonly closed: boolean
  /** Resolves once the broker acknowledged every filter (SUBACK); rejects if one was refused. */
  readonly ready: Promise<void>
}

/** A cold observable: nothing is subscribed until `subscribe` is called. */
export interface Observable<T, E = PubSubError> extends AsyncIterable<T> {
  subscribe(observer?: Observer<T, E>): Subscription
  subscribe(next?: (value: T) => void, error?: (error: E) => void, complete?: () => void): Subscription
  /** Interop with RxJS `from(...)` and other observable libraries. */
  ['@@observable'](): Observable<T, E>
  [Symbol.asyncIterator](): AsyncIterableIterator<T>
}

export interface WillOptions {
  topic: string
  /** Encoded as publish encodes a message; without it, the will's payload is empty (zero bytes). */
  message?: PublishMessage
  qos?: Qos
  retain?: boolean
}

export interface CommonOptions {
  /**
   * `wss://…/mqtt`, `ws://…` (MQTT over WebSocket, with and without TLS), `mqtt://…` or
   * `mqtts://…` (MQTT over TCP, without and with TLS). The scheme is required
   * (`'mqtt://127.0.0.1:1883'`, not `'127.0.0.1:1883'`). As in MQTT.js, `tcp://` is another name
   * for `mqtt://`, and `ssl://` and `tls://` for `mqtts://`.
   */
  endpoint?: string
  /** Amplify v5 alias of `endpoint`. */
  aws_pubsub_endpoint?: string
  /** MQTT client id; a random UUID v4 by default. AWS IoT takes at most 128 bytes. */
  clientId?: string
  /** Keep-alive interval in seconds (0: off). Default 60. */
  keepAlive?: number
  /** Time to CONNACK in milliseconds. Default 30000. */
  connectTimeout?: number
  /** false: a persistent session. Default true. */
  cleanSession?: boolean
  /** Last-will message the broker publishes if the connection drops. */
  will?: WillOptions
  /** Extra trusted CA certificates (PEM) for wss:// and mqtts://. */
  ca?: string | Buffer
  /**
   * Automatic reconnection after a lost connection, on by default: exponential backoff with
   * full jitter. `false` turns it off (a lost connection then fails what is pending).
   */
  reconnect?: boolean | ReconnectOptions
  /** What publish does while the connection is down. Default `'qos1'`, 65,536 messages, 64 MiB. */
  offlineQueue?: OfflineQueuePolicy | OfflineQueueOptions
  /**
   * Connect through this HTTP proxy (a CONNECT tunnel): `'http://host:port'`, or `'https://…'`
   * for TLS to the proxy, with `user:password@` for Basic credentials. Not read from the
   * environment: pass `process.env.HTTPS_PROXY` if that is where it is.
   */
  proxy?: string
  /**
   * Accepted for Amplify compatibility, without effect: Amplify connects with TLS unless it is
   * true; here the endpoint's scheme decides (`ws://`, `mqtt://` plain; `wss://`, `mqtts://` TLS).
   */
  aws_appsync_dangerously_connect_to_http_endpoint_for_testing?: boolean
}

/**
 * Options that say where to connect, as `new PubSub(options)` needs them: `endpoint`, or its
 * Amplify v5 alias `aws_pubsub_endpoint`. (The provider classes can take it from `configure`.)
 * The value may be typed `string | undefined` (`process.env.IOT_ENDPOINT`), as Amplify's types
 * allow: when it is undefined at run time, the constructor throws ERR_INVALID_ENDPOINT.
 */
export type WithEndpoint<Options> = Options & ({ endpoint: string | undefined } | { aws_pubsub_endpoint: string | undefined })

export interface ReconnectOptions {
  /** First wait, and the least one. Default 1000. */
  minDelayMs?: number
  /** The cap the doubling wait stops at. Default 120000. */
  maxDelayMs?: number
  /** A connection that lasts this long starts the backoff over. Default 30000. */
  resetAfterMs?: number
}

/** 'all': every publish waits; 'qos1': QoS 1 and 2 wait, QoS 0 is rejected; 'none': all are rejected. */
export type OfflineQueuePolicy = 'all' | 'qos1' | 'none'

export interface OfflineQueueOptions {
  policy?: OfflineQueuePolicy
  /** Past this many waiting publishes, publish rejects with ERR_QUEUE_FULL. */
  maxMessages?: number
  /** Past this many waiting bytes (topics and payloads), publish rejects with ERR_QUEUE_FULL. */
  maxBytes?: number
}

/** Counts of operations and their bytes (topic and payload). */
export interface OperationLoad {
  operations: number
  bytes: number
}

/** What `stats()` returns. */
export interface PubSubStats {
  connectionState: ConnectionState
  /** Publishes waiting to be handed to the connection (in the offline queue or held back). */
  queued: OperationLoad
  /** Publishes handed to the connection and not yet written (QoS 0) or acknowledged (QoS 1, 2). */
  inFlight: OperationLoad
  reconnects: number
  messagesReceived: number
  messagesSent: number
  /** Messages dropped, by reason. */
  dropped: {
    /** Publishes refused while the connection was down (offline queue policy). */
    offline: number
    /** Publishes refused because the offline queue was full. */
    queueFull: number
    /**
     * Publishes accepted, then rejected with ERR_CONNECTION when a connection attempt failed or
     * the connection was lost, because the offline queue policy does not keep them (a QoS 0
     * publish whose write was cut short included). With `reconnect: false`, or on a permanent
     * failure, what is pending is rejected with that error and not counted here.
     */
    connectionLost: number
    /** Incoming messages no observer wanted any more. */
    unrouted: number
    /** Incoming messages that were not valid JSON for a 'json' observer. */
    invalidPayload: number
  }
}

export interface MqttPubSubOptions extends CommonOptions {
  username?: string
  password?: string
  /**
   * Client certificate for mutual TLS (PEM; the client's own certificate first, then any
   * intermediates), with `key`; wss:// and mqtts:// only.
   */
  cert?: string | Buffer
  /** The unencrypted private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert`. */
  key?: string | Buffer
  /** Accepted for Amplify compatibility; unused by the generic provider. */
  region?: string
  aws_pubsub_region?: string
}

/** AWS credentials, as the AWS SDKs and Amplify's `fetchAuthSession()` give them. */
export interface AwsCredentials {
  accessKeyId: string
  secretAccessKey: string
  sessionToken?: string
  /**
   * When they stop working: a `Date`, a date string, or a number of milliseconds since 1970 (a
   * number below 1e11 is taken as seconds since 1970). Expired credentials are never used to connect.
   */
  expiration?: Date | number | string
}

export interface IotPubSubOptions extends CommonOptions {
  /**
   * `wss://<prefix>-ats.iot.<region>.amazonaws.com/mqtt`, or just the host that
   * `aws iot describe-endpoint --endpoint-type iot:Data-ATS` prints. The path is `/mqtt` only.
   * A custom domain of AWS IoT needs `region`. Every connection is signed with AWS credentials:
   * for any other broker use `native-pubsub/mqtt`.
   */
  endpoint?: string
  /** Signing region; parsed from an `*.amazonaws.com` endpoint when not given, and must agree with it when given. */
  region?: string
  aws_pubsub_region?: string
  /**
   * Static credentials, or a function returning them, called before every connect and
   * reconnect. Default: the AWS default chain (environment, shared profiles, SSO, web
   * identity, ECS, EC2 instance metadata).
   */
  credentials?: AwsCredentials | (() => AwsCredentials | Promise<AwsCredentials>)
}

export interface PublishInput {
  topics: string | string[]
  message: PublishMessage
  options?: PublishOptions
}

export interface SubscribeInput {
  topics: string | string[]
  options?: SubscribeOptions
}

/** A subscribe input whose options name a format (picks the type `next` receives). */
export interface FormattedSubscribeInput<F extends MessageFormat> {
  topics: string | string[]
  options: SubscribeOptions & { format: F }
}

/** An instance of either provider. */
export interface PubSubInstance extends EventEmitter {
  readonly clientId: string
  /** The state last announced by the `ConnectionStateChange` event. */
  readonly connectionState: ConnectionState
  getProviderName(): 'AWSIoTProvider' | 'MqttOverWSProvider'

  /** Rejects with a `PublishError`, whose `sent` says whether the broker may have the message. */
  publish(input: PublishInput): Promise<void>
  publish(topics: string | string[], message: PublishMessage, options?: PublishOptions): Promise<void>

  subscribe(input: FormattedSubscribeInput<'string'>): Observable<string>
  subscribe(input: FormattedSubscribeInput<'binary'>): Observable<Buffer>
  subscribe(input: FormattedSubscribeInput<'message'>): Observable<MqttMessage>
  subscribe<T = any>(input: SubscribeInput): Observable<WithTopic<T>>
  subscribe(topics: string | string[], options: SubscribeOptions & { format: 'string' }): Observable<string>
  subscribe(topics: string | string[], options: SubscribeOptions & { format: 'binary' }): Observable<Buffer>
  subscribe(topics: string | string[], options: SubscribeOptions & { format: 'message' }): Observable<MqttMessage>
  subscribe<T = any>(topics: string | string[], options?: SubscribeOptions): Observable<WithTopic<T>>

  /** Counts of queued and in-flight publishes, reconnects, messages in and out, drops. */
  stats(): PubSubStats

  /**
   * Completes every observer (after the messages already read), rejects what is pending with
   * ERR_CLOSED (its `sent`: whether the broker may have it), disconnects. With `drainMs`, the
   * publishes made before have up to that long to settle first, while messages keep coming; new
   * publishes and subscriptions are refused from the call on. A later call returns the same promise.
   * An argument it cannot read is ignored, with a process warning: it closes without draining.
   */
  close(options?: CloseOptions): Promise<void>

  on(event: 'ConnectionStateChange', listener: (state: ConnectionState) => void): this
  on(event: 'invalidPayload', listener: (info: { topic: string; payload: Buffer; error: PubSubError }) => void): this
  on(event: 'callbackError', listener: (error: unknown) => void): this
  on(event: 'connectionDisrupted', listener: (info: { error: PubSubError; retryInMs: number }) => void): this
  once(event: 'ConnectionStateChange', listener: (state: ConnectionState) => void): this
  once(event: 'invalidPayload', listener: (info: { topic: string; payload: Buffer; error: PubSubError }) => void): this
  once(event: 'callbackError', listener: (error: unknown) => void): this
  once(event: 'connectionDisrupted', listener: (info: { error: PubSubError; retryInMs: number }) => void): this
}

export interface HubCapsule {
  channel: string
  payload: {
    event: string
    data: { provider: PubSubInstance; connectionState: ConnectionState } | any
    message?: string
  }
  source: string
  patternInfo: string[]
}

/** Amplify-shaped Hub: `Hub.listen('pubsub', cb)` returns a function that stops listening. */
export declare const Hub: {
  /** `listenerName` (or Amplify's `{ listenerName }`) is accepted for Amplify compatibility and unused. */
  listen(channel: string, callback: (capsule: HubCapsule) => void, listenerName?: string | { listenerName?: string }): () => void
  dispatch(channel: string, payload: HubCapsule['payload'], source?: string): void
}

// ---------------------------------------------------------------------------------------------
// The older Amplify surface (v3–v5 docs): the PubSub singleton and its pluggable providers
// ---------------------------------------------------------------------------------------------

/** The names `options.provider` picks a plugged-in provider by. */
export type ProviderName = 'AWSIoTProvider' | 'MqttOverWSProvider'

/** Picks one of the plugged-in providers by name; without it, the call goes through every one plugged in. */
export interface ProviderOptions {
  provider?: ProviderName | (string & {})
}

/** What the singleton's `next` receives, as Amplify gave it: the message and its provider. */
export interface ProviderMessage<T> {
  provider: PubSubInstance
  value: T
}

/**
 * What the singleton's `error` receives: an Error with a `code`, also carrying Amplify's
 * `{ provider, error }` (`provider` is undefined when none could be picked: ERR_NO_PROVIDER).
 */
export interface ProviderError extends PubSubError {
  readonly provider: PubSubInstance | undefined
  readonly error: PubSubError
}

/** The provider options `configure` takes: defaults for providers constructed afterwards. */
export interface PubSubConfig extends CommonOptions {
  region?: string
  aws_pubsub_region?: string
  /** AWSIoTProvider only. */
  credentials?: IotPubSubOptions['credentials']
  /** MqttOverWSProvider only. */
  username?: string
  /** MqttOverWSProvider only. */
  password?: string
  /** MqttOverWSProvider only. */
  cert?: string | Buffer
  /** MqttOverWSProvider only. */
  key?: string | Buffer
  /** Amplify's server-side-rendering switch: accepted, and without effect on a server. */
  ssr?: boolean
}

/**
 * `configure`'s argument: `{ PubSub: { …provider options } }`, the provider options themselves,
 * or a whole Amplify config (aws-exports), whose other categories' keys are left alone.
 */
export type AmplifyConfig = PubSubConfig & { PubSub?: PubSubConfig; [key: string]: unknown }

/** An instance of the AWS IoT provider ('native-pubsub', 'native-pubsub/iot'). */
export interface IotPubSubInstance extends PubSubInstance {
  getProviderName(): 'AWSIoTProvider'
}

/** An instance of the generic MQTT provider ('native-pubsub/mqtt'). */
export interface MqttPubSubInstance extends PubSubInstance {
  getProviderName(): 'MqttOverWSProvider'
}

/** The AWS IoT provider of the older docs: an IoT PubSub instance, for `addPluggable`. */
export interface AWSIoTProvider extends IotPubSubInstance {
  getCategory(): 'PubSub'
}
export declare const AWSIoTProvider: {
  /** `{ aws_pubsub_region, aws_pubsub_endpoint, clientId? }` and the other IoT options. */
  new (options?: IotPubSubOptions): AWSIoTProvider
  readonly prototype: AWSIoTProvider
}

/** The generic MQTT provider of the older docs: a generic PubSub instance, for `addPluggable`. */
export interface MqttOverWSProvider extends MqttPubSubInstance {
  getCategory(): 'PubSub'
}
export declare const MqttOverWSProvider: {
  /** `{ aws_pubsub_endpoint, clientId? }` and the other generic MQTT options. */
  new (options?: MqttPubSubOptions): MqttOverWSProvider
  readonly prototype: MqttOverWSProvider
}

/** The statics of every entry point's `PubSub`: one singleton per process, shared by them all. */
export interface PubSubSingleton {
  /**
   * Provider options for the providers constructed afterwards; throws ERR_INVALID_OPTION on an
   * unknown shape. Without an argument, returns what is configured.
   */
  configure(config?: AmplifyConfig | null): PubSubConfig
  /** Plugs a provider in (throws at once on anything else). */
  addPluggable(provider: PubSubInstance): Promise<void>
  /** Unplugs and closes the providers of that name; their observers complete. */
  removePluggable(providerName: ProviderName | (string & {})): Promise<void>

  /** Rejects with ERR_NO_PROVIDER when no provider (of that name) is plugged in. */
  publish(input: { topics: string | string[]; message: PublishMessage; options?: PublishOptions & ProviderOptions }): Promise<void>
  publish(topics: string | string[], message: PublishMessage, options?: PublishOptions & ProviderOptions): Promise<void>

  /** Observers get ERR_NO_PROVIDER when no provider (of that name) is plugged in. */
  subscribe(topics: string | string[], options: SubscribeOptions & ProviderOptions & { format: 'string' }): Observable<ProviderMessage<string>, ProviderError>
  subscribe(topics: string | string[], options: SubscribeOptions & ProviderOptions & { format: 'binary' }): Observable<ProviderMessage<Buffer>, ProviderError>
  subscribe(topics: string | string[], options: SubscribeOptions & ProviderOptions & { format: 'message' }): Observable<ProviderMessage<MqttMessage>, ProviderError>
  subscribe<T = any>(topics: string | string[], options?: SubscribeOptions & ProviderOptions): Observable<ProviderMessage<WithTopic<T>>, ProviderError>
  subscribe(input: { topics: string | string[]; options: SubscribeOptions & ProviderOptions & { format: 'string' } }): Observable<ProviderMessage<string>, ProviderError>
  subscribe(input: { topics: string | string[]; options: SubscribeOptions & ProviderOptions & { format: 'binary' } }): Observable<ProviderMessage<Buffer>, ProviderError>
  subscribe(input: { topics: string | string[]; options: SubscribeOptions & ProviderOptions & { format: 'message' } }): Observable<ProviderMessage<MqttMessage>, ProviderError>
  subscribe<T = any>(input: { topics: string | string[]; options?: SubscribeOptions & ProviderOptions }): Observable<ProviderMessage<WithTopic<T>>, ProviderError>
}

/** For setup code written as `Amplify.addPluggable(…)` and `Amplify.configure(awsconfig)`. */
export declare const Amplify: {
  addPluggable(provider: PubSubInstance): void
  /** Hands `config` to `PubSub.configure`; returns everything given so far. */
  configure(config?: AmplifyConfig | null): Record<string, unknown>
}

// ---------------------------------------------------------------------------------------------
// 'native-pubsub' and 'native-pubsub/iot': the AWS IoT Core provider
// ---------------------------------------------------------------------------------------------

/** The constructor options of this entry point's `PubSub`, under the name Amplify exports them by. */
export type PubSubOptions = WithEndpoint<IotPubSubOptions>

/** AWS IoT Core (SigV4-signed MQTT over WSS); its statics are the older docs' singleton. */
export type PubSub = IotPubSubInstance
export declare const PubSub: PubSubSingleton & {
  new (options: PubSubOptions): IotPubSubInstance
  readonly prototype: IotPubSubInstance
}
export default PubSub
