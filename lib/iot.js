'use strict'
const { pubsubError } = require('./errors')

/** The AWS IoT Core provider (SigV4 over WSS) lands with its own issue. */
class PubSub {
  constructor() {
    throw pubsubError('ERR_NOT_IMPLEMENTED', "The AWS IoT provider is not implemented yet; use require('native-pubsub/mqtt') for any MQTT broker")
  }
}

module.exports = { PubSub }
