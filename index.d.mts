// Types for ES module imports of 'native-pubsub': the named exports of index.d.ts, and PubSub as the
// default export (in index.d.ts, for CommonJS, the default is the `default` property).
export * from './index.js'
import { PubSub } from './index.js'
export default PubSub
