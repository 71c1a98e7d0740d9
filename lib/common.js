'use strict'
const { mqttTopicMatch } = require('../binding.js')
const { ConnectionState, CONNECTION_STATE_CHANGE, TOPIC } = require('./constants')
const { Hub } = require('./hub')

/** What every entry point exports besides its PubSub class. */
module.exports = { ConnectionState, CONNECTION_STATE_CHANGE, TOPIC, Hub, mqttTopicMatch }
