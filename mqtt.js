'use strict'
// native-pubsub/mqtt: the generic MQTT provider, for any broker.
module.exports = require('./lib/common').entryPoint(require('./lib/singleton').MqttPubSub)
