'use strict'
const { PubSubBase } = require('./pubsub')

/** The AWS IoT Core provider: MQTT over WSS with a SigV4-presigned URL, signed afresh per connect. */
class PubSub extends PubSubBase {
  constructor(options) {
    super(options, 'iot')
  }

  getProviderName() {
    return 'AWSIoTProvider'
  }
}

module.exports = { PubSub }
