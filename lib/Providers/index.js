'use strict'
// native-pubsub/lib/Providers: the provider classes of the older Amplify docs
// (`import { AWSIoTProvider } from '@aws-amplify/pubsub/lib/Providers'`), also exported from
// every entry point. A provider is an instance of the package's PubSub class of its kind, so it
// also has the whole instance API (publish, subscribe, close, stats, events).
const { inspect } = require('node:util')
const { IotPubSub, MqttPubSub } = require('../pubsub')
const { providerOptions } = require('../singleton')
const { pubsubError } = require('../errors')

/** A constructor error, with a word on options that came from PubSub.configure or are missing. */
function explain(error, name, options, fromConfigure) {
  if (!error || typeof error.code !== 'string') return error
  let hint = ''
  const configured =
    fromConfigure.find((key) => error.message.includes(`'${key}'`)) ||
    (error.code === 'ERR_INVALID_ENDPOINT' ? fromConfigure.find((key) => key === 'endpoint' || key === 'aws_pubsub_endpoint') : undefined)
  if (configured) {
    hint = ` (option '${configured}' was set by PubSub.configure / Amplify.configure)`
  } else if (error.code === 'ERR_INVALID_ENDPOINT' && options.endpoint === undefined && options.aws_pubsub_endpoint === undefined) {
    hint = ` (pass it as new ${name}({ aws_pubsub_endpoint: … }), or call PubSub.configure({ PubSub: { aws_pubsub_endpoint: … } }) before constructing the provider)`
  }
  return hint ? pubsubError(error.code, error.message + hint) : error
}

/** What a provider shows in logs (`console.log('Message received', data)` prints it). */
function inspectProvider(provider, depth, options) {
  const state = { clientId: provider.clientId, connectionState: provider.connectionState }
  return `${provider.constructor.name} ${inspect(state, options)}`
}

/**
 * A provider class of the older docs: `Base` (an entry point's PubSub class) constructed from
 * `{ aws_pubsub_region, aws_pubsub_endpoint, clientId? }` and the other options of its kind,
 * with Amplify's plugin category.
 */
function providerClass(Base, kind, name) {
  // The computed key gives the class its name (shown in logs and stack traces).
  return {
    [name]: class extends Base {
      constructor(options) {
        const built = providerOptions(options, kind, name)
        try {
          super(built.options)
        } catch (error) {
          throw explain(error, name, built.options, built.fromConfigure)
        }
      }

      /** Amplify's plugin category. */
      getCategory() {
        return 'PubSub'
      }

      [inspect.custom](depth, options) {
        return inspectProvider(this, depth, options)
      }
    },
  }[name]
}

/** AWS IoT Core: MQTT over WSS, SigV4-presigned with credentials from the AWS default chain or `credentials`. */
const AWSIoTProvider = providerClass(IotPubSub, 'iot', 'AWSIoTProvider')
/** Any MQTT broker over WebSockets (ws://, wss://), or over TCP/TLS (mqtt://, mqtts://). */
const MqttOverWSProvider = providerClass(MqttPubSub, 'mqtt', 'MqttOverWSProvider')

module.exports = { AWSIoTProvider, MqttOverWSProvider }
