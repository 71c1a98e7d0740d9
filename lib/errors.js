'use strict'

/** An Error with a stable `code`, as every failure of this package is. */
function pubsubError(code, message) {
  const error = new Error(message)
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

module.exports = { pubsubError, describeThrown }
