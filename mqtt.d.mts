// Types for ES module imports of 'native-pubsub/mqtt': the named exports of mqtt.d.ts, and PubSub as the
// default export (in mqtt.d.ts, for CommonJS, the default is the `default` property).
export * from './mqtt.js'
import { PubSub } from './mqtt.js'
export default PubSub
