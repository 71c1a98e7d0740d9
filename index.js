'use strict'
// native-pubsub: the AWS IoT Core provider, as Amplify's root export is.
module.exports = require('./iot')
