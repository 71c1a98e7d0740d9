'use strict'
// native-pubsub/iot: the AWS IoT Core provider.
module.exports = { ...require('./lib/common'), PubSub: require('./lib/pubsub').IotPubSub }
