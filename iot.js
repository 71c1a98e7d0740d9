'use strict'
// native-pubsub/iot: the AWS IoT Core provider.
const { IotPubSub, Amplify } = require('./lib/singleton')
const { AWSIoTProvider, MqttOverWSProvider } = require('./lib/Providers')

module.exports = { ...require('./lib/common'), Amplify, AWSIoTProvider, MqttOverWSProvider, PubSub: IotPubSub }
// The default export is PubSub (`import PubSub from 'native-pubsub'`), also where TypeScript,
// Babel and bundlers compile that import to CommonJS: they read `default` when `__esModule` is set.
Object.defineProperties(module.exports, { __esModule: { value: true }, default: { value: IotPubSub } })
