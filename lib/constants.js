'use strict'

/** Amplify's connection states (the same eight strings). */
const ConnectionState = Object.freeze({
  Connected: 'Connected',
  ConnectedPendingDisconnect: 'ConnectedPendingDisconnect',
  ConnectedPendingKeepAlive: 'ConnectedPendingKeepAlive',
  ConnectedPendingNetwork: 'ConnectedPendingNetwork',
  ConnectionDisrupted: 'ConnectionDisrupted',
  ConnectionDisruptedPendingNetwork: 'ConnectionDisruptedPendingNetwork',
  Connecting: 'Connecting',
  Disconnected: 'Disconnected',
})

const CONNECTION_STATE_CHANGE = 'ConnectionStateChange'

/**
 * Amplify's CONTROL_MSG strings, exported by `@aws-amplify/pubsub` (its AppSync real-time
 * messages): here so that code importing it by name still loads. Nothing in this package uses them.
 */
const CONTROL_MSG = Object.freeze({
  CONNECTION_CLOSED: 'Connection closed',
  CONNECTION_FAILED: 'Connection failed',
  REALTIME_SUBSCRIPTION_INIT_ERROR: 'AppSync Realtime subscription init error',
  SUBSCRIPTION_ACK: 'Subscription ack',
  TIMEOUT_DISCONNECT: 'Timeout disconnect',
})

/** The topic a JSON object message arrived on, as a non-enumerable-by-JSON key. */
const TOPIC = Symbol('topic')

module.exports = { ConnectionState, CONNECTION_STATE_CHANGE, CONTROL_MSG, TOPIC }
