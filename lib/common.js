'use strict'
const { binding } = require('./native')
const { ConnectionState, CONNECTION_STATE_CHANGE, CONTROL_MSG, TOPIC } = require('./constants')
const { Hub } = require('./hub')
const { Amplify } = require('./singleton')
const { AWSIoTProvider, MqttOverWSProvider } = require('./Providers')
const { pubsubTypeError } = require('./errors')

/** Whether an MQTT topic filter matches a topic name; anything but two strings is ERR_INVALID_TOPIC. */
function mqttTopicMatch(filter, topic) {
  if (typeof filter !== 'string' || typeof topic !== 'string') {
    throw pubsubTypeError('ERR_INVALID_TOPIC', 'mqttTopicMatch(filter, topic): both must be strings')
  }
  return binding.mqttTopicMatch(filter, topic)
}

/**
 * The exports of an entry point whose `PubSub` is `PubSub`: everything else is shared. PubSub is
 * the default export too (`import PubSub from 'native-pubsub'`), also where TypeScript, Babel and
 * bundlers compile that import to CommonJS: they read `default` when `__esModule` is set.
 */
function entryPoint(PubSub) {
  const exports = { ConnectionState, CONNECTION_STATE_CHANGE, CONTROL_MSG, TOPIC, Hub, mqttTopicMatch, Amplify, AWSIoTProvider, MqttOverWSProvider, PubSub }
  return Object.defineProperties(exports, { __esModule: { value: true }, default: { value: PubSub } })
}

module.exports = { entryPoint }
