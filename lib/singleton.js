'use strict'
// The older Amplify surface (the v3–v5 docs): `PubSub` as a ready singleton through statics
// (`PubSub.addPluggable(provider)`, `PubSub.configure(config)`, `PubSub.subscribe(topics)`, …),
// the `Amplify` object of copy-pasted setup code, and the provider options `configure` sets.
//
// The singleton holds provider instances (AWSIoTProvider, MqttOverWSProvider: instances of the
// package's PubSub classes) in the order they were plugged in, and hands each call to the one
// `options.provider` names, or to all of them, as Amplify did. It holds no handle of its own:
// the providers keep Node alive exactly as instances do.
const { isDeepStrictEqual } = require('node:util')
const { IotPubSub: IotPubSubBase, MqttPubSub: MqttPubSubBase, APPSYNC_HTTP_FLAG, callForm, isPlainObject } = require('./pubsub')
const { knownOptions } = require('./native').binding
const { Observable, FLOW } = require('./observable')
const { abortedPublish, refusedPublish, publishError, pubsubError, describeValue, describeThrown, reportRejection } = require('./errors')

const WARNING = 'NativePubSubWarning'
const PROVIDER_NAMES = ['AWSIoTProvider', 'MqttOverWSProvider']
const HOW_TO_PLUG = "Amplify.addPluggable(new AWSIoTProvider({ aws_pubsub_region, aws_pubsub_endpoint })) (or PubSub.addPluggable; new MqttOverWSProvider({ aws_pubsub_endpoint }) for other brokers)"

// ------------------------------------------------------------------------ provider options

/** The constructor options of each provider kind: the list the constructors (Rust) check. */
const KIND_OPTIONS = { iot: knownOptions('iot'), mqtt: knownOptions('mqtt') }
const KNOWN_OPTIONS = new Set([...KIND_OPTIONS.iot, ...KIND_OPTIONS.mqtt])
/** Names of one option: setting either replaces the other. */
const ALIASES = new Map([
  ['endpoint', 'aws_pubsub_endpoint'],
  ['aws_pubsub_endpoint', 'endpoint'],
  ['region', 'aws_pubsub_region'],
  ['aws_pubsub_region', 'region'],
])
/**
 * Amplify's server-side-rendering switch, and its switch for plain ws:// (here the endpoint's
 * scheme decides): accepted, nothing to do.
 */
const IGNORED_OPTIONS = new Set(['ssr', APPSYNC_HTTP_FLAG])

/** Provider options set by `configure`: defaults for the providers constructed afterwards. */
let configured = {}
/** The plugged-in providers, in the order they were plugged in. */
const pluggables = []
const warned = new Set()

/**
 * Any object but an array or a promise: Amplify took any object (the `config` package's objects,
 * class instances), and reads only its own keys here.
 */
function isConfigObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && typeof value.then !== 'function'
}

/**
 * `PubSub.configure(config)`, as Amplify's: the provider options in `config.PubSub`, or in
 * `config` itself (Amplify's `options.PubSub || options`), so both `{ PubSub: { … } }` and the
 * flat object `Amplify.configure(awsconfig)` passes on work. In a flat object, keys that are not
 * provider options belong to other categories (aws-exports' `aws_cognito_*`, `Auth`, `API`, …)
 * and are left alone; an unknown `aws_pubsub_*` key, or any unknown key in a `PubSub` section,
 * throws. Returns the provider options configured so far.
 */
function configure(config) {
  if (config === undefined || config === null) return { ...configured }
  if (!isConfigObject(config)) {
    throw pubsubError(
      'ERR_INVALID_OPTION',
      `PubSub.configure(config): config must be an object such as { PubSub: { aws_pubsub_region, aws_pubsub_endpoint } } or your aws-exports object, got ${describeValue(config)}`,
    )
  }
  const nested = config.PubSub !== undefined && config.PubSub !== null
  if (nested && !isConfigObject(config.PubSub)) {
    throw pubsubError('ERR_INVALID_OPTION', `PubSub.configure(config): config.PubSub must be an object of provider options, got ${describeValue(config.PubSub)}`)
  }
  const section = nested ? config.PubSub : config
  const given = {}
  for (const [key, value] of Object.entries(section)) {
    if (KNOWN_OPTIONS.has(key)) {
      if (value !== undefined) given[key] = value
    } else if (!IGNORED_OPTIONS.has(key) && (nested || key.startsWith('aws_pubsub_'))) {
      throw pubsubError(
        'ERR_INVALID_OPTION',
        `PubSub.configure: unknown PubSub option '${key}'${nested ? " in config.PubSub" : ''}; the provider options are ${[...KNOWN_OPTIONS].join(', ')}`,
      )
    }
  }
  const next = { ...configured }
  for (const [key, value] of Object.entries(given)) {
    if (ALIASES.has(key)) delete next[ALIASES.get(key)]
    next[key] = value
  }
  if (pluggables.length > 0 && !isDeepStrictEqual(next, configured)) {
    // Providers read their options when they are constructed: these would silently not apply.
    const changed = Object.keys(given).filter((key) => !isDeepStrictEqual(given[key], configured[key]))
    throw pubsubError(
      'ERR_INVALID_OPTION',
      `PubSub.configure: ${changed.map((k) => `'${k}'`).join(', ')} cannot reach the provider(s) already plugged in (${pluggedNames()}): a provider reads its options when it is constructed. Pass them to the provider's constructor, or call configure before constructing the providers`,
    )
  }
  configured = next
  return { ...configured }
}

/**
 * The options a provider of `kind` ('iot' or 'mqtt') is constructed with: what `configure` set
 * (only what that kind accepts, and not where the provider gives the option or its alias),
 * overridden by the provider's own `options` (an undefined one counts as not given).
 * `fromConfigure` names the keys configure supplied.
 */
function providerOptions(options, kind, name) {
  if (options === undefined || options === null) options = {}
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw pubsubError('ERR_INVALID_OPTION', `new ${name}(options): options must be an object such as { aws_pubsub_endpoint }, got ${describeValue(options)}`)
  }
  const given = (key) => options[key] !== undefined
  const accepted = KIND_OPTIONS[kind]
  const merged = {}
  const fromConfigure = []
  for (const [key, value] of Object.entries(configured)) {
    if (!accepted.includes(key) || given(key) || (ALIASES.has(key) && given(ALIASES.get(key)))) continue
    merged[key] = value
    fromConfigure.push(key)
  }
  for (const [key, value] of Object.entries(options)) if (value !== undefined) merged[key] = value
  return { options: merged, fromConfigure }
}

// ------------------------------------------------------------------------------ pluggables

function pluggedNames() {
  return pluggables.length === 0 ? 'none' : pluggables.map((p) => p.getProviderName()).join(', ')
}

function isProvider(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof value.getProviderName === 'function' &&
    typeof value.publish === 'function' &&
    typeof value.subscribe === 'function'
  )
}

/** Plugs a provider in; throws (synchronously) on anything that is not a PubSub provider. */
function addPluggable(provider) {
  if (!isProvider(provider)) {
    throw pubsubError('ERR_INVALID_OPTION', `addPluggable(provider): provider must be a PubSub provider such as new AWSIoTProvider({ aws_pubsub_region, aws_pubsub_endpoint }) or new MqttOverWSProvider({ aws_pubsub_endpoint }), got ${describeValue(provider)}`)
  }
  if (typeof provider.getCategory === 'function' && provider.getCategory() !== 'PubSub') {
    throw pubsubError('ERR_INVALID_OPTION', `addPluggable(provider): ${provider.getProviderName()} is a plugin of Amplify's ${provider.getCategory()} category; native-pubsub only takes PubSub providers`)
  }
  if (pluggables.includes(provider)) return
  const name = provider.getProviderName()
  if (pluggables.some((p) => p.getProviderName() === name) && !warned.has(name)) {
    warned.add(name)
    process.emitWarning(
      `Another provider named '${name}' is plugged in: { provider: '${name}' } reaches only the first one plugged in (without options.provider, PubSub.publish and PubSub.subscribe go through every provider); call publish and subscribe on the second one itself`,
      WARNING,
    )
  }
  pluggables.push(provider)
}

/** Unplugs every provider named `providerName`, closes it (its observers complete); resolves once closed. */
function removePluggable(providerName) {
  if (typeof providerName !== 'string') {
    throw pubsubError('ERR_INVALID_OPTION', `removePluggable(providerName): providerName must be a provider name such as 'AWSIoTProvider' or 'MqttOverWSProvider', got ${describeValue(providerName)}`)
  }
  const removed = pluggables.filter((p) => p.getProviderName() === providerName)
  for (const provider of removed) pluggables.splice(pluggables.indexOf(provider), 1)
  return Promise.all(removed.map((p) => (typeof p.close === 'function' ? p.close() : undefined))).then(() => {})
}

/**
 * The providers a call goes through: the one `options.provider` names, or every one plugged in
 * (as Amplify did); throws ERR_NO_PROVIDER.
 */
function providersFor(options) {
  const name = options !== null && typeof options === 'object' ? options.provider : undefined
  if (name === undefined) {
    if (pluggables.length > 0) return [...pluggables]
    throw pubsubError('ERR_NO_PROVIDER', `No PubSub provider is plugged in: call ${HOW_TO_PLUG} first`)
  }
  if (typeof name !== 'string') {
    throw pubsubError('ERR_INVALID_OPTION', `options.provider must be the name of a plugged-in provider (${PROVIDER_NAMES.join(' or ')}), got ${describeValue(name)}`)
  }
  const provider = pluggables.find((p) => p.getProviderName() === name)
  if (provider) return [provider]
  throw pubsubError(
    'ERR_NO_PROVIDER',
    pluggables.length === 0
      ? `No provider named '${name}' is plugged in (none is): call ${HOW_TO_PLUG} first`
      : `No provider named '${name}' is plugged in (plugged in: ${pluggedNames()})`,
  )
}

/** The options handed to the provider: without `provider`, which only picks it. */
function withoutProvider(options) {
  if (!isPlainObject(options) || !('provider' in options)) return options
  const { provider, ...rest } = options
  return rest
}

// ------------------------------------------------------------------------ publish, subscribe

/** `PubSub.publish(topics, message, options?)`: a publish through each provider of the call. */
function publish(...args) {
  return new Promise((resolve) => {
    let providerOptions
    let published
    try {
      const { topics, message, options } = callForm('publish', args)
        ? args[0]
        : { topics: args[0], message: args[1], options: args[2] }
      providerOptions = withoutProvider(options)
      published = providersFor(options).map((provider) => provider.publish(topics, message, providerOptions))
    } catch (error) {
      throw refusedPublish(error)
    }
    if (published.length < 2) return resolve(Promise.all(published).then(() => {}))
    // The publish was sent if any provider's was, or had finished: the first rejection alone
    // may be one that had sent nothing.
    let sentSomewhere = false
    const watched = published.map((publishing) =>
      publishing.then(
        () => (sentSomewhere = true),
        (error) => {
          if (error !== null && typeof error === 'object' && error.sent === true) sentSomewhere = true
          throw error
        },
      ),
    )
    resolve(
      Promise.all(watched).then(
        () => {},
        async (error) => {
          if (error === null || typeof error !== 'object' || error.sent !== false) throw error
          // The others may still have their outcome on its way: wait for them to know whether
          // any had sent it.
          await Promise.allSettled(watched)
          if (!sentSomewhere) throw error
          throw error.code === 'ABORT_ERR' ? abortedPublish(providerOptions.signal, true) : publishError(error.code, error.message, true)
        },
      ),
    )
  })
}

/**
 * What the observer's `error` gets on the singleton: an Error with the same `code` and message,
 * also carrying Amplify's `{ provider, error }` (non-enumerable, so logs stay readable).
 */
function providerError(provider, error) {
  const wrapped = new Error(error && error.message !== undefined ? error.message : String(error))
  if (error && error.code !== undefined) wrapped.code = error.code
  if (error && error.stack) wrapped.stack = error.stack
  Object.defineProperties(wrapped, {
    provider: { value: provider, configurable: true, writable: true },
    error: { value: error, configurable: true, writable: true },
  })
  return wrapped
}

/** A subscription that failed before it began: the observer's `error` is told at once. */
function failedSubscription(observer, error) {
  const wrapped = providerError(undefined, error)
  if (observer.error) {
    const threw = (thrown) => process.emitWarning(`A subscriber's error callback threw: ${describeThrown(thrown)}`, WARNING)
    try {
      reportRejection(observer.error(wrapped), threw)
    } catch (thrown) {
      threw(thrown)
    }
  } else {
    process.emitWarning(`A subscription failed and its observer has no error callback: ${error.message}`, WARNING)
  }
  const ready = Promise.reject(error)
  ready.catch(() => {})
  return { ready, closed: true, unsubscribe() {} }
}

/**
 * The singleton's observable. As the older docs' table says, an observer's `close` is called
 * when you unsubscribe; `close` and `complete` are both called when the subscription completes
 * (its provider is removed or closed).
 */
class SingletonObservable extends Observable {
  subscribe(observerOrNext, error, complete) {
    const onClose =
      observerOrNext !== null && typeof observerOrNext === 'object' && typeof observerOrNext.close === 'function'
        ? observerOrNext.close.bind(observerOrNext)
        : null
    const subscription = super.subscribe(observerOrNext, error, complete)
    if (!onClose) return subscription
    return {
      get ready() {
        return subscription.ready
      },
      get closed() {
        return subscription.closed
      },
      unsubscribe() {
        const open = !subscription.closed
        subscription.unsubscribe()
        if (open) onClose()
      },
      [FLOW]: (flowing) => subscription[FLOW]?.(flowing),
    }
  }
}

/**
 * `PubSub.subscribe(topics, options?)`: the messages of each provider of the call, each as
 * Amplify's `{ provider, value }`. The providers are looked up when the observable is
 * subscribed. With several, the first error ends the subscription (the others are
 * unsubscribed), it completes once all have completed, and `ready` waits for every SUBACK.
 */
function subscribe(...args) {
  const { topics, options } = callForm('subscribe', args) ? args[0] : { topics: args[0], options: args[1] }
  return new SingletonObservable((observer) => {
    let providers
    try {
      providers = providersFor(options)
    } catch (error) {
      return failedSubscription(observer, error)
    }
    const { next, error, complete } = observer
    const providerOptions = withoutProvider(options)
    if (providers.length === 1) {
      // The provider's own subscription, so that an observer without `error` is left to the
      // instance, which warns once per error code.
      const [provider] = providers
      return provider.subscribe(topics, providerOptions).subscribe({
        next: next && ((value) => next({ provider, value })),
        error: error && ((err) => error(providerError(provider, err))),
        complete,
      })
    }
    return mergedSubscription(providers, (provider) => provider.subscribe(topics, providerOptions), observer)
  })
}

/** One subscription over the observables of several providers (see subscribe). */
function mergedSubscription(providers, observableOf, { next, error, complete }) {
  const subscriptions = []
  let ended = false
  let open = providers.length
  const end = () => {
    ended = true
    for (const subscription of subscriptions) subscription.unsubscribe()
  }
  for (const provider of providers) {
    if (ended) break // an error while subscribing (a bad topic) ends it before the next provider
    subscriptions.push(
      observableOf(provider).subscribe({
        next: next && ((value) => ended || next({ provider, value })),
        // What the observer's callbacks return is handed back, so that the instance reports the
        // rejection of an async one.
        error: (err) => {
          if (ended) return undefined
          end()
          if (error) return error(providerError(provider, err))
          process.emitWarning(`A subscription failed and its observer has no error callback: ${err.message}`, WARNING)
          return undefined
        },
        complete: () => {
          if (ended || --open > 0) return undefined
          ended = true
          return complete && complete()
        },
      }),
    )
  }
  if (ended) end() // unsubscribes those made before the error
  const ready = Promise.all(subscriptions.map((subscription) => subscription.ready)).then(() => {})
  ready.catch(() => {}) // as an instance's: a failure reaches `error`, `ready` need not be read
  return {
    ready,
    get closed() {
      return ended || subscriptions.every((subscription) => subscription.closed)
    },
    unsubscribe: end,
    [FLOW]: (flowing) => {
      for (const subscription of subscriptions) subscription[FLOW]?.(flowing)
    },
  }
}

// ------------------------------------------------------------------ the exported surface

/**
 * An entry point's `PubSub`: the class (`new PubSub(options)`, Amplify v6), and through its
 * statics the singleton every entry point shares (Amplify v3–v5). The statics do not use
 * `this`: `const { subscribe } = PubSub` works, as it did with Amplify.
 */
function singletonClass(Base) {
  return class PubSub extends Base {
    static configure(config) {
      return configure(config)
    }

    static addPluggable(provider) {
      addPluggable(provider)
      return Promise.resolve()
    }

    static removePluggable(providerName) {
      return removePluggable(providerName)
    }

    static publish(...args) {
      return publish(...args)
    }

    static subscribe(...args) {
      return subscribe(...args)
    }
  }
}

/** 'native-pubsub' and 'native-pubsub/iot'. */
const IotPubSub = singletonClass(IotPubSubBase)
/** 'native-pubsub/mqtt'. */
const MqttPubSub = singletonClass(MqttPubSubBase)

let amplifyConfig = {}

/** For setup code written as `Amplify.addPluggable(…)` and `Amplify.configure(awsconfig)`. */
const Amplify = Object.freeze({
  addPluggable(provider) {
    addPluggable(provider)
  },

  /** Hands `config` to PubSub.configure and returns everything configured so far, as Amplify did. */
  configure(config) {
    if (config === undefined || config === null) return { ...amplifyConfig }
    configure(config)
    amplifyConfig = { ...amplifyConfig, ...config }
    return { ...amplifyConfig }
  },
})

module.exports = { IotPubSub, MqttPubSub, Amplify, providerOptions }
