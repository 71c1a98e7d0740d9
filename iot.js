'use strict'
// native-pubsub/iot: the AWS IoT Core provider.
module.exports = require('./lib/common').entryPoint(require('./lib/singleton').IotPubSub)
