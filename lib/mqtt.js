'use strict'
const { PubSubBase } = require('./pubsub')

/** The generic MQTT provider: any broker over ws://, wss://, mqtt:// or mqtts://. */
class PubSub extends PubSubBase {
  constructor(options) {
    super(options, 'mqtt')
  }

  getProviderName() {
    return 'MqttOverWSProvider'
  }
}

module.exports = { PubSub }
