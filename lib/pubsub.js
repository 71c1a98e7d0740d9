'use strict'
const { EventEmitter } = require('node:events')
const { NativeClient } = require('./native').binding
const { Observable, FLOW } = require('./observable')
const { Hub } = require('./hub')
const { CONNECTION_STATE_CHANGE } = require('./constants')
const { pubsubError, pubsubTypeError, publishError, refusedPublish, abortedPublish, describeThrown, describeValue, reasonOf, reportRejection } = require('./errors')
const { FORMATS, encodeMessage, encodePayload, parseJson } = require('./payload')
const { PublishQueue } = require('./publish-queue')
const { IdAllocator } = require('./ids')

const WARNING = 'NativePubSubWarning'
/**
 * Amplify's option for connecting without TLS (its MqttOverWS forces wss:// unless it is true):
 * accepted for code written for Amplify, without effect (see the constructor).
 */
const APPSYNC_HTTP_FLAG = 'aws_appsync_dangerously_connect_to_http_endpoint_for_testing'
/** The keys of the `will` option. */
const WILL_KEYS = ['topic', 'message', 'qos', 'retain']
/** Stands for a payload that failed to parse (JSON.parse never returns undefined or this). */
const INVALID_JSON = Symbol('invalid JSON')

/** v6 `fn({ topics, ... })` or v5 `fn(topics, ...)`. */
function isV6Call(first) {
  return first !== null && typeof first === 'object' && !Array.isArray(first) && 'topics' in first
}

/**
 * A publish waiting for its topics to be sent (QoS 0) or acknowledged. A class, not an object
 * literal: V8 tracks where each literal is allocated, and when a burst keeps thousands of them
 * alive it decides to allocate them in the old generation instead, which throws away the code it
 * had optimised for `publish` in the middle of the burst.
 */
class PendingOp {
  constructor(resolve, reject, remaining) {
    this.resolve = resolve
    this.reject = reject
    this.remaining = remaining
    /** Some of its packets (one per topic) were published: a failure of the rest has `sent`. */
    this.partlyPublished = false
  }
}

/** `error`, the failure of a publish to several topics some of which were published. */
function partlyPublished(error) {
  return publishError(error.code, `Published to some of its topics only; for the others: ${error.message}`, true)
}

/** The topics of a publish (`kind` 'topic') or the filters of a subscription ('filter'). */
function toTopicList(topics, kind) {
  const list = typeof topics === 'string' ? [topics] : topics
  if (!Array.isArray(list) || list.length === 0) throw notTopics(topics, kind)
  // An index loop: `some` and `every` skip the holes of a sparse array.
  for (let i = 0; i < list.length; i++) {
    const topic = list[i]
    if (typeof topic !== 'string') throw notTopics()
    if (!isWellFormed(topic)) {
      // JSON shows the surrogate as an escape; a topic may be 64 KiB long.
      const shown = JSON.stringify(topic.length > 100 ? `${topic.slice(0, 100)}…` : topic)
      throw pubsubError('ERR_INVALID_TOPIC', `The ${kind} ${shown} holds a lone surrogate (half of a UTF-16 pair), which UTF-8 cannot carry`)
    }
  }
  return list
}

/** Whether `value` is an object literal (or made with a null prototype), not an array or a class instance. */
function isPlainObject(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

function notTopics(topics, kind) {
  const plain = isPlainObject(topics)
  let hint = ''
  if (plain && 'topic' in topics) {
    hint = ": did you mean { topics: … } (Amplify's name), not { topic: … }?"
  } else if (plain && ('qos' in topics || 'format' in topics)) {
    hint = `: options were given in their place; write ${kind === 'filter' ? 'subscribe(topics, options)' : 'publish(topics, message, options)'}`
  } else if (plain && kind === 'filter' && isMqttJsSubscription(topics)) {
    hint = ": MQTT.js's { filter: qos } object is not taken; pass the filters as an array and the QoS as an option, e.g. subscribe(['a/+', 'b'], { qos: 1 })"
  }
  return pubsubError('ERR_INVALID_TOPIC', `topics must be a string or a non-empty array of strings${hint}`)
}

/** MQTT.js's subscribe({ 'a/+': 1, b: { qos: 0 } }): every value a QoS, or an object with one. */
function isMqttJsSubscription(topics) {
  const values = Object.values(topics)
  const isQos = (value) => value === 0 || value === 1 || value === 2
  return values.length > 0 && values.every((value) => isQos(value) || (value !== null && typeof value === 'object' && isQos(value.qos)))
}

/** A callback given where MQTT.js takes one: `call` returns a Promise or an Observable instead. */
function noCallbacks(call) {
  const instead =
    call === 'publish'
      ? 'it returns a Promise: await it, or use .then(…, …)'
      : 'it returns an Observable: pass the callback to its subscribe(), as in pubsub.subscribe(filter).subscribe({ next, error })'
  return pubsubError('ERR_INVALID_OPTION', `${call} takes no callback (MQTT.js's last argument): ${instead}`)
}

/**
 * Other clients' events, which a PubSub does not emit: a listener for one would wait for ever.
 * Whose they are, and what to listen to instead. ('error' is not here: Node's events.once()
 * listens for it with any event.)
 */
const FOREIGN_EVENTS = {
  message: ["MQTT.js's", 'messages come to subscriptions: pubsub.subscribe(filter).subscribe({ next })'],
  packetsend: ["MQTT.js's", 'packets are not exposed'],
  packetreceive: ["MQTT.js's", 'packets are not exposed'],
}
const STATE_EVENTS =
  "the connection's state comes as 'ConnectionStateChange' events (Connecting, Connected, ConnectionDisrupted, Disconnected), and why a connection was lost as 'connectionDisrupted' events"
for (const event of ['connect', 'reconnect', 'close', 'offline', 'end', 'disconnect']) FOREIGN_EVENTS[event] = ["MQTT.js's", STATE_EVENTS]
for (const event of ['connection_success', 'connection_failure', 'interrupt', 'resume', 'closed']) FOREIGN_EVENTS[event] = ["aws-crt's", STATE_EVENTS]

/** The instance's 'newListener' listener: refuses other clients' events, saying what to use. */
function refuseForeignEvents(event) {
  if (typeof event === 'string' && Object.hasOwn(FOREIGN_EVENTS, event)) {
    const [whose, instead] = FOREIGN_EVENTS[event]
    throw pubsubError('ERR_INVALID_OPTION', `A PubSub emits no '${event}' event (${whose}): ${instead}`)
  }
}

let warnedRandomPersistentSession = false

/**
 * A persistent session under a random client id is resumed after a reconnect, never after a
 * restart: each run's messages for it are queued on the broker under an id nobody uses again.
 * Legitimate (within one run), so a warning, once per process.
 */
function warnRandomPersistentSession() {
  if (warnedRandomPersistentSession) return
  warnedRandomPersistentSession = true
  process.emitWarning(
    'cleanSession: false without a clientId: this instance has a random client id, so the broker resumes its session after a reconnect, ' +
      'but never after the process restarts. Each run then leaves a session behind on the broker, holding the QoS 1 messages that arrive ' +
      'for it, until the broker expires it. Give a fixed clientId to resume the session after a restart.',
    WARNING,
  )
}

/**
 * Whether `args` of `call` ('publish' or 'subscribe') are Amplify v6's one object. Refuses what
 * other clients' habits put there: a callback, or an argument past those read.
 */
function callForm(call, args) {
  const v6 = isV6Call(args[0])
  const firstOption = call === 'publish' && !v6 ? 2 : 1
  // Indexed, not sliced: this runs for every publish.
  for (let i = firstOption; i < args.length; i++) {
    if (typeof args[i] === 'function') throw noCallbacks(call)
  }
  const read = v6 ? 1 : firstOption + 1
  if (args.length > read) refuseExtraArguments(call, args, read)
  return v6
}

/**
 * Arguments past the ones a call reads (`read` of them): refused, not ignored. aws-crt's
 * publish(topic, payload, qos, retain) ported to publish(topic, message, { qos }, true) would
 * publish without retain.
 */
function refuseExtraArguments(call, args, read) {
  const extra = args.slice(read).findIndex((arg) => arg !== undefined)
  if (extra === -1) return
  const forms = call === 'publish' ? '(topics, message, options) or ({ topics, message, options })' : '(topics, options) or ({ topics, options })'
  const retain = call === 'publish' && typeof args[read + extra] === 'boolean' ? ": aws-crt's retain flag goes in the options, { qos, retain: true }" : ''
  throw pubsubError('ERR_INVALID_OPTION', `${call} takes ${forms}; argument ${read + extra + 1} is not read${retain}`)
}

/**
 * Whether a string has no lone surrogate. napi would turn one into U+FFFD, and the message
 * would go to, or the subscription listen on, another topic than the one given. Node 18 lacks
 * `isWellFormed` (which costs nothing for a one-byte string).
 */
const isWellFormed = String.prototype.isWellFormed ? (text) => text.isWellFormed() : (text) => !/\p{Surrogate}/u.test(text)

function readQos(options) {
  const qos = options.qos === undefined ? 0 : options.qos
  if (qos !== 0 && qos !== 1 && qos !== 2) {
    throw pubsubError('ERR_INVALID_OPTION', `qos must be 0, 1 or 2, got ${describeValue(qos)}`)
  }
  return qos
}

/** A PEM option (`ca`, `cert`, `key`) as text: a Buffer from `fs.readFileSync` is decoded. */
function pemText(value) {
  return Buffer.isBuffer(value) ? value.toString('utf8') : value
}

/** The publish's AbortSignal, if given. */
function readSignal(options) {
  const signal = options.signal
  if (signal === undefined) return undefined
  if (
    signal === null ||
    typeof signal !== 'object' ||
    typeof signal.aborted !== 'boolean' ||
    typeof signal.addEventListener !== 'function' ||
    typeof signal.removeEventListener !== 'function'
  ) {
    throw pubsubError('ERR_INVALID_OPTION', `signal must be an AbortSignal, got ${describeValue(signal)}`)
  }
  return signal
}

const ignore = () => {}

function readRetain(options) {
  const retain = options.retain === undefined ? false : options.retain
  // Not coerced: { retain: 'false' } (from an environment variable, say) would retain.
  if (typeof retain !== 'boolean') {
    throw pubsubError('ERR_INVALID_OPTION', `retain must be a boolean, got ${describeValue(retain)}`)
  }
  return retain
}

/**
 * The keys `publish` and `subscribe` read from their options. Amplify's `provider` picks a
 * provider of the singleton and means nothing to an instance (as in Amplify v6): accepted.
 */
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * `close(options)`'s `drainMs`: 0 without one. Throws ERR_INVALID_OPTION for what it cannot read,
 * which close() reports and ignores.
 */
function readDrainMs(options) {
  if (options === undefined || options === null) return 0
  if (typeof options === 'boolean') {
    throw pubsubError(
      'ERR_INVALID_OPTION',
      `close takes { drainMs } or nothing, got ${options} (MQTT.js's end(force)?): close() is end(true), and close({ drainMs: 5000 }) waits for the publishes made, as end(false) does, up to 5 s`,
    )
  }
  if (!isPlainObject(options)) {
    throw pubsubError('ERR_INVALID_OPTION', `close takes { drainMs } or nothing, got ${describeValue(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (key !== 'drainMs') throw pubsubError('ERR_INVALID_OPTION', `Unknown close option '${key}'; known is drainMs`)
  }
  const { drainMs } = options
  if (drainMs === undefined) return 0
  if (typeof drainMs !== 'number' || !(drainMs >= 0 && drainMs <= MAX_TIMER_MS)) {
    throw pubsubError('ERR_INVALID_OPTION', `drainMs must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, got ${describeValue(drainMs)}`)
  }
  return drainMs
}

const CALL_OPTIONS = { publish: ['qos', 'retain', 'signal', 'provider'], subscribe: ['qos', 'format', 'provider'] }

/**
 * The options of a `publish` or `subscribe` (`call`). An unknown key is refused, not ignored: a
 * misspelt `retained: true` would otherwise publish a message the broker does not keep.
 */
function readOptions(options, call) {
  if (options === undefined || options === null) return {}
  if (options === 0 || options === 1 || options === 2) {
    // aws-crt's QoS argument (mqtt.QoS.AtLeastOnce is 1).
    throw pubsubError('ERR_INVALID_OPTION', `options must be an object, got the number ${options}: the QoS goes in it, as in { qos: ${options} }`)
  }
  if (typeof options !== 'object') throw pubsubError('ERR_INVALID_OPTION', 'options must be an object')
  const known = CALL_OPTIONS[call]
  for (const key in options) {
    if (!known.includes(key)) throw unknownCallOption(key, call)
  }
  return options
}

function unknownCallOption(key, call) {
  const hint =
    call === 'subscribe' && (key === 'clientId' || key === 'url')
      ? " (Amplify's per-subscription connection is not supported: make another PubSub instance for it)"
      : ''
  return pubsubError('ERR_INVALID_OPTION', `Unknown ${call} option '${key}'${hint}; known are ${CALL_OPTIONS[call].join(', ')}`)
}

/**
 * Levels an option value may nest: no option goes deeper than `reconnect.minDelayMs`; deeper
 * values (or an object that contains itself) are refused here rather than walked.
 */
const MAX_OPTION_DEPTH = 8

/** The options Rust reads: plain data only, undefined keys dropped. */
function plainOptions(options, prefix = '') {
  return plainMembers(options, prefix, 1)
}

/** `object`'s own members as plain data (`plainData`), each named `prefix` + its key. */
function plainMembers(object, prefix, depth) {
  const plain = {}
  for (const key of Object.keys(object)) {
    const data = plainData(object[key], `${prefix}${key}`, depth)
    if (data !== undefined) plain[key] = data
  }
  return plain
}

/**
 * An option value as JSON data, which is what Rust reads: strings, finite numbers, booleans,
 * null and plain objects of those (undefined members dropped), an array as an empty one. Anything else throws
 * ERR_INVALID_OPTION naming the option, here, rather than reaching napi's conversion, which
 * throws without one of our codes (a symbol, a function, a NaN nested in an object, a Buffer
 * or URL whose prototype has methods) or turns a BigInt into a number or a string.
 */
function plainData(value, name, depth) {
  switch (typeof value) {
    case 'string':
      // Not echoed: it may be a password.
      if (!isWellFormed(value)) throw pubsubError('ERR_INVALID_OPTION', `Option '${name}' holds a lone surrogate (half of a UTF-16 pair), which UTF-8 cannot carry`)
      return value
    case 'undefined':
    case 'boolean':
      return value
    case 'number':
      // JSON (what Rust reads) has no NaN or Infinity.
      if (!Number.isFinite(value)) throw pubsubError('ERR_INVALID_OPTION', `Option '${name}' must be a finite number, got ${value}`)
      return value
    case 'bigint':
      throw pubsubError('ERR_INVALID_OPTION', `Option '${name}' must be a number, got a bigint`)
    case 'symbol':
    case 'function':
      throw pubsubError('ERR_INVALID_OPTION', `Option '${name}' cannot be a ${typeof value}: options are strings, numbers, booleans and plain objects`)
  }
  if (value === null) return null
  if (depth >= MAX_OPTION_DEPTH) {
    throw pubsubError('ERR_INVALID_OPTION', `Option '${name}' is nested deeper than any option goes (or refers to itself)`)
  }
  // No option is an array, and Rust refuses one naming the option ("… got an array"): its
  // elements are not read. Copying them would take `new Array(2 ** 32 - 1)` (holes, a length
  // and nothing else) to billions of nulls, and V8 aborts the process past its array size limit.
  if (Array.isArray(value)) return []
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) {
    const what = `an instance of ${proto?.constructor?.name || 'a class'}`
    const hint = value instanceof URL ? ' (pass its href)' : ''
    throw pubsubError('ERR_INVALID_OPTION', `Option '${name}' cannot be ${what}${hint}: options are strings, numbers, booleans and plain objects`)
  }
  return plainMembers(value, `${name}.`, depth + 1)
}

/**
 * A number below this is an `expiration` in seconds since 1970, not milliseconds: 1e11 ms is
 * March 1973, so no real expiration in milliseconds is that small, while 1e11 s is the year 5138.
 * Seconds are what raw AWS APIs give (Cognito's GetCredentialsForIdentity JSON, for one) and
 * what `Date.now() / 1000 + 3600` makes.
 */
const SECONDS_BELOW = 1e11

/** Milliseconds since 1970 for a `Date`, a date string or a number of seconds or milliseconds; other values as they are. */
function toEpochMs(value) {
  if (value instanceof Date) return value.getTime()
  if (typeof value === 'string' && !Number.isNaN(Date.parse(value))) return Date.parse(value)
  if (typeof value === 'number' && value >= 0 && value < SECONDS_BELOW) return value * 1000
  return value
}

/**
 * AWS credentials as Rust reads them: the four fields copied (they may be getters, as on AWS
 * SDK credential objects), `expiration` in milliseconds (see toEpochMs). Rust checks them and says what is wrong.
 */
function plainCredentials(value, what = "Option 'credentials'") {
  if (value === undefined || value === null || typeof value !== 'object') {
    return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' ? value : null
  }
  const { accessKeyId, secretAccessKey, sessionToken, expiration } = value
  const expirationMs = toEpochMs(expiration)
  // JSON (what Rust reads) has no NaN or Infinity: an invalid Date (new Date(undefined), a
  // typo'd field) is reported here, as Rust reports other malformed values.
  if (typeof expirationMs === 'number' && !Number.isFinite(expirationMs)) {
    const got = expiration instanceof Date ? 'an invalid Date' : String(expirationMs)
    throw pubsubError('ERR_INVALID_OPTION', `${what}: 'expiration' must be a Date or a time in milliseconds since 1970, got ${got}`)
  }
  return plainOptions({ accessKeyId, secretAccessKey, sessionToken, expiration: expirationMs }, 'credentials.')
}

/**
 * Amplify's PubSub API over one MQTT connection per instance; `provider` is 'mqtt' (any
 * broker) or 'iot' (AWS IoT Core). Events: `ConnectionStateChange` (state), `invalidPayload`
 * ({ topic, payload, error }), `callbackError` (error thrown by a subscriber's callback),
 * `connectionDisrupted` ({ error, retryInMs }: why a connection failed or was lost, when
 * reconnect tries again).
 */
class PubSubBase extends EventEmitter {
  #native
  /** the user's `credentials` function, called when Rust asks before a connect */
  #credentialsFunction = null
  #state = 'Disconnected'
  /** publish op id → { resolve, reject, remaining } */
  #ops = new Map()
  /** AbortSignals of pending publishes → `{ ops: Map<op, topic count>, onAbort }` (#watchSignal). */
  #signals = new WeakMap()
  #opIds = new IdAllocator(this.#ops)
  /** publishes on their way into Rust */
  #outgoing
  /** observer id → { observer, format, readyResolve, readyReject, closed } */
  #observers = new Map()
  #observerIds = new IdAllocator(this.#observers)
  /** the promise close() returns, and its resolver until the native side confirms */
  #closing = null
  #resolveClosed = null
  /** while close({ drainMs }) waits for the publishes made before it: what ends the wait */
  #drained = null
  #keptAlive = false
  /**
   * What the native side's event callback reaches this instance through. The native client keeps
   * that callback referenced from outside the JS heap (a GC root) for as long as the client
   * lives, and the client lives as long as this instance: held strongly, the instance would
   * never be collected. So it is held strongly only while busy (something subscribed or
   * pending: `#keepAliveIfBusy`), weakly otherwise; an instance nobody refers to any more is
   * collected, closed or not, and its native client then ends the connection (Rust's Drop).
   */
  #eventTarget = { busy: null, idle: new WeakRef(this) }
  /** Subscriptions (their entries) that asked to hold messages back (see FLOW). */
  #heldBackBy = new Set()
  /** The last batch's callback told Rust to hold the next ones back until resumeDelivery. */
  #deliveryHeld = false
  /** a graceful disconnect is under way: stay alive until it is done */
  #disconnecting = false
  #warned = new Set()
  #invalidPayloads = 0

  /** Instances not yet closed (their weak references), for the process-exit hook below. */
  static #open = new Set()
  static #collected = new FinalizationRegistry((ref) => PubSubBase.#open.delete(ref))

  static {
    // When Node is about to exit, end idle connections with DISCONNECT rather than a dropped
    // socket, so brokers do not publish wills for processes that simply finished.
    process.on('beforeExit', () => {
      for (const ref of PubSubBase.#open) ref.deref()?.#disconnectIfIdle()
    })
  }

  constructor(options, provider) {
    super()
    super.on('newListener', refuseForeignEvents)
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw pubsubError('ERR_INVALID_OPTION', 'new PubSub(options): options must be an object with an endpoint')
    }
    const { will, ca, cert, key, credentials, [APPSYNC_HTTP_FLAG]: httpForTesting, ...rest } = options
    // Amplify's switch for plain ws:// (it forces TLS without it); here the endpoint's scheme
    // decides, so it is accepted and has no effect. Not coerced, as `retain` is not.
    if (httpForTesting !== undefined && typeof httpForTesting !== 'boolean') {
      throw pubsubError('ERR_INVALID_OPTION', `Option '${APPSYNC_HTTP_FLAG}' must be a boolean, got ${describeValue(httpForTesting)}`)
    }
    if (typeof credentials === 'function') this.#credentialsFunction = credentials
    else if (provider === 'iot' && credentials !== null && typeof credentials === 'object' && typeof credentials.then === 'function') {
      // A promise settles once, and every connect needs credentials that are still fresh.
      throw pubsubError(
        'ERR_INVALID_OPTION',
        "Option 'credentials' is a promise: pass the function that returns it instead, for example credentials: async () => (await fetchAuthSession()).credentials, so that fresh credentials are fetched before every connect",
      )
    }
    let willPayload
    let willOptions
    if (will !== undefined && will !== null) {
      if (typeof will !== 'object' || Array.isArray(will)) throw pubsubError('ERR_INVALID_OPTION', "Option 'will' must be an object")
      // Only the four keys are read: any other would be dropped in silence (MQTT.js names the
      // message 'payload', which would leave the will empty).
      const unknown = Object.keys(will).find((key) => !WILL_KEYS.includes(key))
      if (unknown !== undefined) {
        const hint = unknown === 'payload' ? " (the will's payload is its 'message', as in publish)" : ''
        throw pubsubError('ERR_INVALID_OPTION', `Unknown option 'will.${unknown}'${hint}; known are ${WILL_KEYS.join(', ')}`)
      }
      // No message: an empty will (zero bytes), not the JSON text of some default value.
      willPayload = will.message === undefined ? Buffer.alloc(0) : encodePayload(will.message)
      willOptions = plainOptions({ topic: will.topic, qos: will.qos, retain: will.retain }, 'will.')
    }
    const staticCredentials = credentials === undefined || this.#credentialsFunction ? undefined : plainCredentials(credentials)
    this.#native = new NativeClient(
      plainOptions({ ...rest, will: willOptions, ca: pemText(ca), cert: pemText(cert), key: pemText(key), credentials: staticCredentials }),
      { provider, willPayload, credentialsFunction: this.#credentialsFunction !== null },
      PubSubBase.#eventsCallback(this.#eventTarget),
    )
    // What the native side refused outright (it throws only on a bug of this package) was not sent.
    this.#outgoing = new PublishQueue(this.#native, (op, error) => this.#settle(op, refusedPublish(error)))
    if (rest.cleanSession === false && (rest.clientId === undefined || rest.clientId === null)) warnRandomPersistentSession()
    PubSubBase.#open.add(this.#eventTarget.idle)
    PubSubBase.#collected.register(this, this.#eventTarget.idle)
    // Amplify's providers announce their first state on Hub when they are made.
    this.#dispatchToHub(this.#state)
  }

  /**
   * The native side's event callback. Made here, not in the constructor: a closure made there
   * would share the constructor's scope, which holds `this` for the other closures made in it.
   */
  static #eventsCallback(target) {
    return (frame, topics, events) => (target.busy ?? target.idle.deref())?.#onEvents(frame, topics, events)
  }

  /**
   * Throws ERR_INVALID_THIS unless `target` is an instance: a method taken off one
   * (`const { publish } = pubsub`) and called on its own, or called on a Proxy around one (the
   * private fields are the instance's, not the Proxy's). Otherwise JS's own TypeError, without a code.
   */
  static #checkThis(target, member) {
    if (target !== null && typeof target === 'object' && #native in target) return
    // Not describeValue: a revoked Proxy throws when its prototype is read.
    const what =
      target === undefined
        ? 'undefined (a method taken off an instance and called on its own)'
        : target === null
          ? 'null'
          : typeof target === 'object'
            ? 'an object that is not a PubSub instance (a Proxy around one is not one)'
            : `a ${typeof target}`
    const how = member === 'clientId' || member === 'connectionState' ? 'read it on the instance' : `call it on the instance, or bind it: pubsub.${member}.bind(pubsub)`
    throw pubsubTypeError('ERR_INVALID_THIS', `pubsub.${member} needs a PubSub instance as \`this\`, got ${what}: ${how}`)
  }

  /** The MQTT client id of this instance's connection. */
  get clientId() {
    PubSubBase.#checkThis(this, 'clientId')
    return this.#native.clientId
  }

  /** The connection state last announced (by the `ConnectionStateChange` event and Hub). */
  get connectionState() {
    PubSubBase.#checkThis(this, 'connectionState')
    return this.#state
  }

  /** `publish({ topics, message, options })` or `publish(topics, message, options)`. */
  publish(...args) {
    return new Promise((resolve, reject) => {
      try {
        PubSubBase.#checkThis(this, 'publish')
        const v6 = callForm('publish', args)
        const { topics, message, options } = v6 ? args[0] : { topics: args[0], message: args[1], options: args[2] }
        const list = toTopicList(topics, 'topic')
        const opts = readOptions(options, 'publish')
        const qos = readQos(opts)
        const retain = readRetain(opts)
        const signal = readSignal(opts)
        if (signal !== undefined && signal.aborted) throw abortedPublish(signal, false)
        const payload = encodeMessage(message)
        if (this.#closing) throw pubsubError('ERR_CLOSED', 'The PubSub instance is closed')
        const op = this.#opIds.next()
        if (signal === undefined) {
          this.#ops.set(op, new PendingOp(resolve, reject, list.length))
        } else {
          this.#watchSignal(signal, op, list.length)
          const settled = () => this.#unwatchSignal(signal, op)
          this.#ops.set(op, new PendingOp((value) => (settled(), resolve(value)), (error) => (settled(), reject(error)), list.length))
        }
        this.#outgoing.push(op, list, payload, qos | (retain ? 4 : 0))
        this.#keepAliveIfBusy()
      } catch (error) {
        throw refusedPublish(error)
      }
    })
  }

  /** `subscribe({ topics, options })` or `subscribe(topics, options)`: a cold Observable. */
  subscribe(...args) {
    PubSubBase.#checkThis(this, 'subscribe')
    // Thrown here, not told to an observer: with a callback, no observer may ever come.
    const v6 = callForm('subscribe', args)
    const { topics, options } = v6 ? args[0] : { topics: args[0], options: args[1] }
    return new Observable((observer) => this.#attach(topics, options, observer))
  }

  /**
   * Counts like aws-crt's operation statistics: publishes queued (not yet handed to the
   * connection) and in flight (handed over, not yet written or acknowledged), with their bytes;
   * reconnects; messages received and sent; messages dropped, by reason.
   */
  stats() {
    PubSubBase.#checkThis(this, 'stats')
    const native = this.#native.stats()
    const held = this.#outgoing.load()
    return {
      connectionState: native.connectionState,
      queued: { operations: native.queuedOperations + held.operations, bytes: native.queuedBytes + held.bytes },
      inFlight: { operations: native.inFlightOperations, bytes: native.inFlightBytes },
      reconnects: native.reconnects,
      messagesReceived: native.messagesReceived,
      messagesSent: native.messagesSent,
      dropped: {
        offline: native.droppedOffline,
        queueFull: native.droppedQueueFull,
        connectionLost: native.droppedConnectionLost,
        unrouted: native.droppedUnrouted,
        invalidPayload: this.#invalidPayloads,
      },
    }
  }

  /** EventEmitter's, keeping the refusal of MQTT.js's events (a 'newListener' listener). */
  removeAllListeners(...args) {
    super.removeAllListeners(...args)
    if ((args.length === 0 || args[0] === 'newListener') && !this.listeners('newListener').includes(refuseForeignEvents)) {
      super.on('newListener', refuseForeignEvents)
    }
    return this
  }

  /**
   * Completes every observer, rejects everything pending with ERR_CLOSED, disconnects. With
   * `drainMs`, the publishes made before have up to that long to settle first, while messages
   * keep coming; new publishes and subscriptions are refused from the call on.
   */
  close(options) {
    PubSubBase.#checkThis(this, 'close')
    if (!this.#closing) {
      let drainMs = 0
      try {
        drainMs = readDrainMs(options)
      } catch (error) {
        // A shutdown must not fail on its argument: close passed as a listener
        // (process.once('SIGTERM', pubsub.close.bind(pubsub))) gets the event's.
        this.#warnOnce(`close:${error.message}`, `${error.message}. close() ignored it, and closed without draining.`)
      }
      this.#closing = new Promise((resolve) => {
        this.#resolveClosed = resolve
      })
      if (drainMs > 0 && this.#ops.size > 0) {
        const timer = setTimeout(() => this.#closeNow(), drainMs)
        this.#drained = () => (clearTimeout(timer), this.#closeNow())
      } else {
        this.#closeNow()
      }
    }
    return this.#closing
  }

  #closeNow() {
    this.#drained = null
    this.#native.close()
    // The `closed` event that completes the observers must not wait behind a loop held back.
    this.#heldBackBy.clear()
    this.#resumeDelivery()
    const closed = publishError('ERR_CLOSED', 'The PubSub instance is closed', false)
    for (const op of this.#outgoing.drain()) this.#settle(op, closed)
    this.#outgoing.giveUpSpare()
    this.#keepAliveIfBusy()
  }

  /**
   * Publish `op` (of `topicCount` topics) is withdrawn when `signal` is aborted. One listener
   * per signal, however many publishes share it: a listener each would make Node warn of a
   * leak past ten. Throws, before anything is recorded, if the signal's addEventListener does.
   */
  #watchSignal(signal, op, topicCount) {
    let watched = this.#signals.get(signal)
    if (watched === undefined) {
      const ops = new Map()
      const onAbort = () => {
        this.#signals.delete(signal)
        this.#withdraw(ops, signal)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      watched = { ops, onAbort }
      this.#signals.set(signal, watched)
    }
    watched.ops.set(op, topicCount)
  }

  /** Publish `op` settled: its signal is let go once no publish of this instance uses it. */
  #unwatchSignal(signal, op) {
    const watched = this.#signals.get(signal)
    if (watched === undefined || !watched.ops.delete(op) || watched.ops.size > 0) return
    this.#signals.delete(signal)
    try {
      signal.removeEventListener('abort', watched.onAbort)
    } catch (error) {
      // The user's signal object; a settling publish must not fail for it.
      this.#warnOnce('signal', `A publish's signal threw from removeEventListener: ${describeThrown(error)}`)
    }
  }

  /**
   * `signal` was aborted: what its publishes (`ops`: op → topic count) still have waiting is
   * taken back, in one pass over each queue, and each publish rejects, saying whether some of
   * it had been handed to the connection. What is past recall (awaiting its ack, or queued in
   * rumqttc) keeps its op id until it settles, so that the id is not given to another publish.
   */
  #withdraw(ops, signal) {
    const inJs = this.#outgoing.withdraw(ops)
    /** op → its index in what Rust is asked to withdraw */
    const inRust = new Map()
    for (const op of ops.keys()) if (!inJs.has(op) && this.#ops.has(op)) inRust.set(op, inRust.size)
    const taken = inRust.size > 0 ? this.#native.withdraw(Uint32Array.from(inRust.keys())) : null
    const rejections = []
    for (const [op, topicCount] of ops) {
      const pending = this.#ops.get(op)
      if (pending === undefined) continue
      // Packets (one per topic) whose outcome is still to come to JS once this is done.
      let outstanding = 0
      let sent = false
      if (!inJs.has(op)) {
        const at = 3 * inRust.get(op)
        const [unsent, written, held] = [taken[at], taken[at + 1], taken[at + 2]]
        // Rust holds none of it: it is settled, and that outcome is on its way.
        if (unsent + written + held === 0) continue
        // What Rust no longer holds, and did not take back now, went to the connection (its
        // settlement may not have reached JS yet).
        sent = written > 0 || held > 0 || unsent + written + held < topicCount
        outstanding = pending.remaining - unsent - written
      }
      if (outstanding > 0) this.#ops.set(op, new PendingOp(ignore, ignore, outstanding))
      else this.#ops.delete(op)
      rejections.push([pending, sent])
    }
    for (const [pending, sent] of rejections) pending.reject(abortedPublish(signal, sent))
    if (this.#drained !== null && this.#ops.size === 0) this.#drained()
    this.#keepAliveIfBusy()
  }

  /**
   * A packet of publish `op` succeeded (`error` null) or failed. A failure after some of its
   * packets were published is `sent`, in an error of its own (JS rejects every publish it
   * holds with one shared error; those had no packet published).
   */
  #settle(op, error) {
    const pending = this.#ops.get(op)
    if (!pending) return
    if (error) {
      this.#ops.delete(op)
      pending.reject(pending.partlyPublished && !error.sent ? partlyPublished(error) : error)
    } else if (--pending.remaining === 0) {
      this.#ops.delete(op)
      pending.resolve()
    } else {
      pending.partlyPublished = true
      return
    }
    if (this.#drained !== null && this.#ops.size === 0) this.#drained()
  }

  #attach(topics, options, observer) {
    const id = this.#observerIds.next()
    let readyResolve
    let readyReject
    const ready = new Promise((resolve, reject) => {
      readyResolve = resolve
      readyReject = reject
    })
    // Nobody has to await `ready`; a refusal is also reported to the observer's `error`.
    ready.catch(() => {})
    const entry = { observer, format: 'json', readyResolve, readyReject, closed: false }
    const subscription = {
      ready,
      get closed() {
        return entry.closed
      },
      unsubscribe: () => {
        if (entry.closed) return
        entry.closed = true
        entry.readyReject(pubsubError('ERR_CLOSED', 'The subscription was unsubscribed before the broker acknowledged it'))
        this.#observers.delete(id)
        this.#flow(entry, true)
        this.#release(id)
        this.#keepAliveIfBusy()
      },
      [FLOW]: (flowing) => this.#flow(entry, flowing),
    }
    try {
      const list = toTopicList(topics, 'filter')
      const opts = readOptions(options, 'subscribe')
      const qos = readQos(opts)
      if (opts.format !== undefined && !FORMATS.includes(opts.format)) {
        throw pubsubError('ERR_INVALID_OPTION', `format must be one of ${FORMATS.join(', ')}, got ${describeValue(opts.format)}`)
      }
      entry.format = opts.format || 'json'
      // Draining before close: the connection is on its way out.
      if (this.#drained !== null) throw pubsubError('ERR_CLOSED', 'The PubSub instance is closing')
      this.#observers.set(id, entry)
      this.#native.subscribe(id, list, qos)
    } catch (error) {
      this.#observers.delete(id)
      this.#fail(entry, error)
    }
    this.#keepAliveIfBusy()
    return subscription
  }

  #fail(entry, error) {
    if (entry.closed) return
    entry.closed = true
    this.#flow(entry, true)
    entry.readyReject(error)
    if (entry.observer.error) this.#call(entry.observer.error, error)
    else this.#warnOnce(`unhandled:${error.code}`, `A subscription failed and its observer has no error callback: ${error.message}`)
  }

  #complete(entry) {
    if (entry.closed) return
    entry.closed = true
    this.#flow(entry, true)
    entry.readyReject(pubsubError('ERR_CLOSED', 'The PubSub instance is closed'))
    if (entry.observer.complete) this.#call(entry.observer.complete)
  }

  /**
   * Runs a user callback; a throw, or the rejection of the promise an `async` callback returns,
   * is reported, never allowed to end the process. Never throws, so the observers after this one
   * still get their message, error or completion.
   */
  #call(fn, value) {
    try {
      const result = fn(value)
      if (result !== undefined) reportRejection(result, (error) => this.#callbackFailed(error))
    } catch (error) {
      this.#callbackFailed(error)
    }
  }

  // A listener handles it, as one of 'connectionDisrupted' does; without one, one warning says so.
  #callbackFailed(error) {
    if (this.listenerCount('callbackError') > 0) this.#emitGuarded('callbackError', error)
    else this.#warnOnce('callback', `A subscriber callback threw (listen for 'callbackError' events to see each one): ${describeThrown(error)}`)
  }

  /**
   * Emits an event of ours, calling each listener as `emit` would; one that throws (say, one that
   * rethrows every callbackError), or an async one that rejects, is reported as a warning instead of keeping the event from the
   * listeners after it or cutting short the delivery, close or Hub dispatch that emitted it.
   */
  #emitGuarded(event, value) {
    // rawListeners: a copy, with `once` listeners in their wrappers that remove them.
    const threw = (error) => {
      this.#warnOnce(`listener:${event}`, `A '${event}' listener threw (further throws of '${event}' listeners are not reported): ${describeThrown(error)}`)
    }
    for (const listener of this.rawListeners(event)) {
      try {
        // An async listener's rejection too.
        reportRejection(listener.call(this, value), threw)
      } catch (error) {
        threw(error)
      }
    }
  }

  #warnOnce(key, message) {
    if (this.#warned.has(key)) return
    this.#warned.add(key)
    process.emitWarning(message, WARNING)
  }

  /**
   * A subscription holds the connection's messages back (a `for await` loop that fell behind),
   * or lets them come again. They are held back at the source: every subscription of this
   * connection waits, as one slow observer makes them all wait, and TCP pushes back on the broker.
   */
  #flow(entry, flowing) {
    // Once closing, nothing is held back: the `closed` event must reach JS. While close() drains,
    // a slow observer still holds the connection back (bounded by drainMs).
    if (!flowing && !entry.closed && (this.#closing === null || this.#drained !== null)) {
      this.#heldBackBy.add(entry)
    } else if (this.#heldBackBy.delete(entry) && this.#heldBackBy.size === 0) {
      this.#resumeDelivery()
    }
  }

  /** Lets Rust send batches again if the last one's callback held them back. */
  #resumeDelivery() {
    if (!this.#deliveryHeld) return
    this.#deliveryHeld = false
    this.#native.resumeDelivery()
  }

  /**
   * One batch from Rust: the packed events (`frame`, with `topics`), then the others in order.
   * Returns whether Rust should hold the next batches back until `resumeDelivery`.
   */
  #onEvents(frame, topics, events) {
    try {
      if (events != null) this.#failHeldPublishes(events)
      if (frame != null) this.#unpack(frame, topics)
    } catch (error) {
      // Our own bug, not the user's (their callbacks are guarded): report and carry on.
      process.emitWarning(`native-pubsub failed to handle a batch: ${error.stack}`, WARNING)
    }
    if (events != null) {
      for (const event of events) {
        try {
          this.#handle(event)
        } catch (error) {
          process.emitWarning(`native-pubsub failed to handle a '${event.kind}' event: ${error.stack}`, WARNING)
        }
      }
    }
    this.#keepAliveIfBusy()
    this.#deliveryHeld = this.#heldBackBy.size > 0
    return this.#deliveryHeld
  }

  #handle(event) {
    switch (event.kind) {
      // Only failures come as events; the publishes that succeed are in the frame.
      case 'published':
        return this.#settle(event.id, publishError(event.code, event.message, event.sent))
      case 'subscribed': {
        const entry = this.#observers.get(event.id)
        if (!entry) return
        if (!event.code) return entry.readyResolve()
        this.#observers.delete(event.id)
        this.#release(event.id)
        return this.#fail(entry, pubsubError(event.code, event.message))
      }
      case 'failed': {
        const error = pubsubError(event.code, event.message)
        // Only the observers Rust failed: one subscribed since (in a callback that ran before
        // this event) has a new connection attempt of its own.
        const failed = new Set(event.observers)
        const entries = []
        for (const [id, entry] of this.#observers) {
          if (failed.has(id)) entries.push(entry)
        }
        for (const id of failed) this.#observers.delete(id)
        // In the order they subscribed.
        for (const entry of entries) this.#fail(entry, error)
        return
      }
      case 'state':
        return this.#announce(event.state)
      case 'disrupted': {
        // A transient failure's reason: the state change alone does not say why.
        const error = pubsubError(event.code, event.message)
        if (this.listenerCount('connectionDisrupted') === 0) {
          // Without a word, a subscription to a mistyped host or a broker that is down would
          // wait for ever in silence: said once per code, as nobody asked for each one.
          this.#warnOnce(
            `disrupted:${error.code}`,
            `The connection failed or was lost (${error.code}: ${error.message}); reconnecting in ${event.retryInMs} ms, and on until it connects. ` +
              `Listen for 'connectionDisrupted' events to see every failure; without a listener this is said once per error code.`,
          )
        }
        return this.#emitGuarded('connectionDisrupted', { error, retryInMs: event.retryInMs })
      }
      case 'writable':
        return this.#outgoing.writable()
      case 'credentials':
        return this.#fetchCredentials(event.id)
      case 'closed': {
        const entries = [...this.#observers.values()]
        this.#observers.clear()
        try {
          for (const entry of entries) this.#complete(entry)
        } finally {
          // close() settles and lets the process exit whatever happened above.
          this.#resolveClosed()
          this.#resolveClosed = null
          PubSubBase.#open.delete(this.#eventTarget.idle)
        }
        return
      }
    }
  }

  /**
   * Calls the user's credentials function and hands Rust the answer (it checks the shape). When
   * the function fails, only the text of what it threw goes on, and Rust masks the secrets in it
   * (see `redact` in src/credentials.rs). What it threw is deliberately not the ERR_CREDENTIALS
   * error's `cause`: it may quote a secret (a vault's or an SDK's message), and util.inspect,
   * console.error and loggers print an error's causes in full.
   */
  #fetchCredentials(request) {
    new Promise((resolve) => resolve(this.#credentialsFunction())).then(
      (value) => {
        let plain
        try {
          plain = plainCredentials(value, "The credentials function's result")
        } catch (error) {
          // A malformed value (an invalid Date) is a bug in the function that asking again will
          // not fix; a getter that throws may be a passing failure.
          if (error && error.code === 'ERR_INVALID_OPTION') return this.#native.credentialsRejected(request, error.message, true)
          return this.#native.credentialsRejected(request, `The credentials function's result cannot be read: ${reasonOf(error)}`)
        }
        // plainCredentials hands over JSON data only, which napi's conversion always takes.
        this.#native.credentialsResolved(request, plain)
      },
      (error) => this.#native.credentialsRejected(request, `The credentials function failed: ${reasonOf(error)}`),
    )
  }

  /**
   * A failure in this batch (a 'failed' event) fails the publishes JS still holds for the
   * `writable` event: they were made before JS could know of it, as Rust's gate (see
   * `Delivery::unseen_failure`) takes what reached it meanwhile. Done first, before a callback
   * of this batch publishes again: that publish starts a new attempt.
   */
  #failHeldPublishes(events) {
    for (const event of events) {
      if (event.kind !== 'failed') continue
      const error = publishError(event.code, event.message, false)
      for (const op of this.#outgoing.drain()) this.#settle(op, error)
      return
    }
  }

  /**
   * Settles the publishes and delivers the messages of a frame (see `Frame` in src/delivery.rs):
   * u32 words `[word count, published count, message count]`, the published operation ids, per
   * message `[topic index, flags, payload length, observer count, observer ids…]`, then the
   * payloads after the words, end to end.
   */
  #unpack(frame, topics) {
    const words = new Uint32Array(frame, 0, frame.byteLength >>> 2)
    const firstRecord = 3 + words[1]
    // Each loop is a method of its own, with nothing before or after it. A burst's first frames
    // hold thousands of events, so V8 may compile a loop's function while its first call runs,
    // before the code around the loop has ever run with feedback; that code then deoptimises.
    if (words[1] > 0) this.#settleAll(words, 3, firstRecord)
    if (words[2] > 0) this.#deliverAll(Buffer.from(frame), words[0] * 4, words, firstRecord, words[2], topics)
  }

  #settleAll(ops, first, end) {
    for (let i = first; i < end; i++) this.#settle(ops[i], null)
  }

  /** `count` messages, whose records start at `words[w]` and payloads at `payloads[start]`. */
  #deliverAll(payloads, start, words, w, count, topics) {
    for (let m = 0; m < count; m++) {
      const end = start + words[w + 2]
      const first = w + 4
      const last = first + words[w + 3]
      this.#deliver(topics[words[w]], payloads, start, end, words[w + 1], words, first, last)
      w = last
      start = end
    }
  }

  /** One message (bytes `start..end` of `payloads`) to its observers (ids `first..last`). */
  #deliver(topic, payloads, start, end, flags, observers, first, last) {
    /** the parsed payload, parsed once for all observers; undefined until then */
    let json
    let bytes
    for (let k = first; k < last; k++) {
      const entry = this.#observers.get(observers[k])
      if (!entry || !entry.observer.next) continue
      let value
      switch (entry.format) {
        case 'json':
          if (json === undefined) {
            try {
              json = parseJson(payloads, start, end, topic)
            } catch (error) {
              json = INVALID_JSON
              this.#reportInvalidJson(topic, Buffer.from(payloads.subarray(start, end)), error)
            }
          }
          if (json === INVALID_JSON) continue
          value = json
          break
        case 'string':
          value = payloads.toString('utf8', start, end)
          break
        case 'binary':
          // A copy: the batch's buffer must not stay alive for one message a user keeps.
          value = bytes ??= Buffer.from(payloads.subarray(start, end))
          break
        case 'message':
          bytes ??= Buffer.from(payloads.subarray(start, end))
          value = { topic, payload: bytes, qos: flags & 3, retain: (flags & 4) !== 0, dup: (flags & 8) !== 0 }
          break
      }
      this.#call(entry.observer.next, value)
    }
  }

  #reportInvalidJson(topic, payload, cause) {
    this.#invalidPayloads++
    const error = pubsubError('ERR_PAYLOAD', `A message on '${topic}' is not valid JSON (${cause.message}); subscribe with format 'string' or 'binary' to receive such messages`)
    if (this.listenerCount('invalidPayload') > 0) this.#emitGuarded('invalidPayload', { topic, payload, error })
    else this.#warnOnce('json', `${error.message}. Listen for 'invalidPayload' events to see each one.`)
  }

  /** Tells Rust an observer left; it may begin the graceful disconnect. */
  #release(id) {
    if (this.#native.unsubscribe(id)) this.#disconnecting = true
  }

  #disconnectIfIdle() {
    if (this.#native.disconnectWhenIdle()) {
      this.#disconnecting = true
      this.#keepAliveIfBusy()
    }
  }

  #announce(state) {
    if (state !== 'ConnectedPendingDisconnect') this.#disconnecting = false
    this.#state = state
    this.#emitGuarded(CONNECTION_STATE_CHANGE, state)
    this.#dispatchToHub(state)
  }

  #dispatchToHub(state) {
    Hub.dispatch('pubsub', {
      event: CONNECTION_STATE_CHANGE,
      data: { provider: this, connectionState: state },
      message: `Connection state is ${state}`,
    })
  }

  /** Like a socket: Node stays up while something is subscribed or pending. */
  #keepAliveIfBusy() {
    const busy =
      this.#observers.size > 0 ||
      this.#ops.size > 0 ||
      this.#outgoing.length > 0 ||
      this.#disconnecting ||
      this.#resolveClosed !== null
    if (busy !== this.#keptAlive) {
      this.#keptAlive = busy
      this.#native.keepAlive(busy)
      this.#eventTarget.busy = busy ? this : null
    }
  }
}

/** The `PubSub` class of an entry point: `provider` is 'mqtt' or 'iot'. */
function providerClass(provider, providerName) {
  return class PubSub extends PubSubBase {
    constructor(options) {
      super(options, provider)
    }

    getProviderName() {
      return providerName
    }
  }
}

/** The generic MQTT provider: any broker over ws://, wss://, mqtt:// or mqtts://. */
const MqttPubSub = providerClass('mqtt', 'MqttOverWSProvider')
/** The AWS IoT Core provider: MQTT over WSS, SigV4-presigned afresh for every connect. */
const IotPubSub = providerClass('iot', 'AWSIoTProvider')

module.exports = { MqttPubSub, IotPubSub, APPSYNC_HTTP_FLAG, callForm, isPlainObject }
