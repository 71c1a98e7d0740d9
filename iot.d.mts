// Types for ES module imports of 'native-pubsub/iot': the named exports of iot.d.ts, and PubSub as the
// default export (in iot.d.ts, for CommonJS, the default is the `default` property).
export * from './iot.js'
import { PubSub } from './iot.js'
export default PubSub
