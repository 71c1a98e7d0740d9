'use strict'
// native-pubsub/mqtt: the generic MQTT provider, for any broker.
const { MqttPubSub, Amplify } = require('./lib/singleton')
const { AWSIoTProvider, MqttOverWSProvider } = require('./lib/Providers')

module.exports = { ...require('./lib/common'), Amplify, AWSIoTProvider, MqttOverWSProvider, PubSub: MqttPubSub }
// The default export is PubSub (`import PubSub from 'native-pubsub/mqtt'`), also where TypeScript,
// Babel and bundlers compile that import to CommonJS: they read `default` when `__esModule` is set.
Object.defineProperties(module.exports, { __esModule: { value: true }, default: { value: MqttPubSub } })
