'use strict'
const { pubsubError } = require('./errors')
const { TOPIC } = require('./constants')

const FORMATS = ['json', 'string', 'binary', 'message']

/** A publish message as bytes: Buffer/Uint8Array as they are, anything else as JSON (Amplify's format). */
function encodePayload(message) {
  if (Buffer.isBuffer(message)) return message
  if (message instanceof Uint8Array) return Buffer.from(message.buffer, message.byteOffset, message.byteLength)
  let text
  try {
    text = JSON.stringify(message)
  } catch (error) {
    throw pubsubError('ERR_PAYLOAD', `The message cannot be sent as JSON: ${error.message}`)
  }
  if (text === undefined) {
    throw pubsubError('ERR_PAYLOAD', `The message cannot be sent as JSON: ${typeof message} has no JSON form`)
  }
  return Buffer.from(text, 'utf8')
}

/** Parses a JSON payload; an object carries its topic under TOPIC. Throws on invalid JSON. */
function parseJson(payload, topic) {
  const value = JSON.parse(payload.toString('utf8'))
  if (value !== null && typeof value === 'object') value[TOPIC] = topic
  return value
}

module.exports = { FORMATS, encodePayload, parseJson }
