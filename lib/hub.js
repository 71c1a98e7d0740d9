'use strict'
const { describeThrown, pubsubTypeError, reportRejection } = require('./errors')

/** A minimal Amplify-shaped Hub: `Hub.listen('pubsub', cb)` returns a function that stops it. */
const channels = new Map()
/** Listeners whose throw was reported: one warning each, as for an instance's listeners. */
const reported = new WeakSet()

const Hub = {
  listen(channel, callback) {
    if (typeof callback !== 'function') {
      throw pubsubTypeError('ERR_INVALID_OPTION', 'Hub.listen(channel, callback): callback must be a function')
    }
    if (!channels.has(channel)) channels.set(channel, new Set())
    const listeners = channels.get(channel)
    // Wrapped so that listening twice with one function gives two independent listeners.
    const listener = (capsule) => callback(capsule)
    listeners.add(listener)
    return () => {
      listeners.delete(listener)
      // A server that listens on a channel per request would otherwise keep every empty set.
      if (listeners.size === 0 && channels.get(channel) === listeners) channels.delete(channel)
    }
  },

  dispatch(channel, payload, source = 'PubSub') {
    const listeners = channels.get(channel)
    if (!listeners) return
    const capsule = { channel, payload, source, patternInfo: [] }
    for (const listener of [...listeners]) {
      const threw = (error) => {
        if (reported.has(listener)) return
        reported.add(listener)
        process.emitWarning(`A Hub listener on '${channel}' threw (its further throws are not reported): ${describeThrown(error)}`, 'NativePubSubWarning')
      }
      try {
        // An async listener's rejection too: unhandled, it would end the process.
        reportRejection(listener(capsule), threw)
      } catch (error) {
        threw(error)
      }
    }
  },
}

module.exports = { Hub }
