// native-pubsub: the same module as native-pubsub/iot.
export * from './iot.mjs'
export { default } from './iot.mjs'
