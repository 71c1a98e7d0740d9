'use strict'

/**
 * An Error with a stable `code`, as every failure of this package is; `cause`, when given, is
 * what the user's code threw that led to it (a message's toJSON), with its stack.
 */
function pubsubError(code, message, cause) {
  const error = cause === undefined ? new Error(message) : new Error(message, { cause })
  error.code = code
  return error
}

/**
 * The rejection of a publish: `sent`, whether some of it had been handed to the connection
 * (written, or queued in rumqttc to be): then the broker may have it.
 */
function publishError(code, message, sent) {
  const error = pubsubError(code, message)
  error.sent = sent
  return error
}

/** The codes of the errors a publish refuses its arguments with, before anything is recorded. */
const REFUSAL_CODES = new Set(['ERR_INVALID_THIS', 'ERR_INVALID_OPTION', 'ERR_INVALID_TOPIC', 'ERR_PAYLOAD', 'ERR_CLOSED', 'ERR_NO_PROVIDER', 'ERR_INTERNAL'])

/**
 * `error`, thrown by a publish call before anything was recorded, says that nothing was sent:
 * one of this package's gets `sent: false`. An error the user's own code threw while the
 * arguments were read (a getter, a Proxy trap) passes through unchanged, as in Node's APIs.
 */
function refusedPublish(error) {
  if (error instanceof Error && REFUSAL_CODES.has(error.code) && !('sent' in error)) error.sent = false
  return error
}

/**
 * The rejection of a publish whose AbortSignal was aborted, as Node's own: an `AbortError` with
 * code `ABORT_ERR` and the signal's reason as `cause`. `sent`: some of it had been handed to the
 * connection (written, or queued in rumqttc to be), past recall: the broker may get it.
 */
function abortedPublish(signal, sent) {
  const message = sent
    ? 'The publish was aborted after it was handed to the connection: the broker may get it, and deliver it'
    : 'The publish was aborted before it was sent: nothing was sent'
  const error = new Error(message, { cause: signal.reason })
  error.name = 'AbortError'
  error.code = 'ABORT_ERR'
  error.sent = sent
  return error
}

/** A TypeError with a stable `code`: an argument of the wrong type, as Node's own. */
function pubsubTypeError(code, message) {
  const error = new TypeError(message)
  error.code = code
  return error
}

/** A thrown value for a warning: its stack when it has one. Never throws itself. */
function describeThrown(thrown) {
  try {
    return thrown && thrown.stack ? String(thrown.stack) : String(thrown)
  } catch {
    // An object without toString (Object.create(null)), or a throwing getter.
    return Object.prototype.toString.call(thrown)
  }
}

/**
 * Calls `report` with the rejection of `result`, what a user callback returned, when that is a
 * promise (or another thenable): an `async` callback that throws fails that way, and a rejection
 * nobody handles ends the process. Any other value is ignored. Never throws itself.
 */
function reportRejection(result, report) {
  if (result === null || (typeof result !== 'object' && typeof result !== 'function')) return
  try {
    const then = result.then
    if (typeof then === 'function') then.call(result, undefined, report)
  } catch (error) {
    report(error)
  }
}

/**
 * What a thrown or rejected value says, for a message: an Error's message, anything else as a
 * string. Never throws: a value with no string form (Object.create(null), a throwing getter or
 * toString) is described by its type (see describeValue).
 */
function reasonOf(error) {
  try {
    return String(error instanceof Error ? error.message : error)
  } catch {
    try {
      return describeValue(error)
    } catch {
      return 'a value that cannot be read'
    }
  }
}

/** Key names an error message lists at most. */
const SHOWN_KEYS = 10

/**
 * A rejected value for an error message, without its contents (options passed in the wrong
 * place hold passwords and secret keys): a number, boolean, null or undefined as it is (none is
 * a credential here), anything else by its type, an object by its constructor and key names.
 */
function describeValue(value) {
  if (value === null || value === undefined || typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (typeof value !== 'object') return `a ${typeof value}`
  if (Array.isArray(value)) return `an array of ${value.length}`
  const name = Object.getPrototypeOf(value)?.constructor?.name
  const what = !name || name === 'Object' ? 'an object' : `an instance of ${name}`
  const keys = Object.keys(value)
  if (keys.length === 0) return `${what} without keys`
  const shown = keys.slice(0, SHOWN_KEYS).join(', ')
  return `${what} with keys ${shown}${keys.length > SHOWN_KEYS ? ', …' : ''}`
}

module.exports = { pubsubError, pubsubTypeError, publishError, refusedPublish, abortedPublish, describeThrown, describeValue, reasonOf, reportRejection }
