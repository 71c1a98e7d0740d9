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

/** The topic a JSON object message arrived on, as a non-enumerable-by-JSON key. */
const TOPIC = Symbol('topic')

module.exports = { ConnectionState, CONNECTION_STATE_CHANGE, TOPIC }
