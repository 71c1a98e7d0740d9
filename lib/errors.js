'use strict'

/** An Error with a stable `code`, as every failure of this package is. */
function pubsubError(code, message) {
  const error = new Error(message)
  error.code = code
  return error
}

module.exports = { pubsubError }
