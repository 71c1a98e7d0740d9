'use strict'
const { pubsubError } = require('./errors')
const { TOPIC } = require('./constants')

const FORMATS = ['json', 'string', 'binary', 'message']

/**
 * A publish message as it is sent: a Buffer/Uint8Array as bytes, anything else as JSON text
 * (Amplify's format). Throws ERR_PAYLOAD for what JSON cannot encode.
 */
function encodeMessage(message) {
  if (message instanceof Uint8Array) return message
  let text
  try {
    text = JSON.stringify(message)
  } catch (error) {
    throw pubsubError('ERR_PAYLOAD', `The message cannot be sent as JSON: ${error.message}`)
  }
  if (text === undefined) {
    throw pubsubError('ERR_PAYLOAD', `The message cannot be sent as JSON: ${typeof message} has no JSON form`)
  }
  return text
}

/** `encodeMessage` as a Buffer. */
function encodePayload(message) {
  const encoded = encodeMessage(message)
  return typeof encoded === 'string' ? Buffer.from(encoded, 'utf8') : Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength)
}

/** Parses a JSON payload's text; an object carries its topic under TOPIC. Throws on invalid JSON. */
function parseJson(text, topic) {
  const value = JSON.parse(text)
  if (value !== null && typeof value === 'object') value[TOPIC] = topic
  return value
}

module.exports = { FORMATS, encodeMessage, encodePayload, parseJson }
