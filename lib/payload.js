'use strict'
const { pubsubError, reasonOf } = require('./errors')
const { TOPIC } = require('./constants')

const FORMATS = ['json', 'string', 'binary', 'message']

/**
 * Binary data as the Uint8Array of its bytes, or null for anything else: a Buffer or Uint8Array
 * as it is; an ArrayBuffer, a SharedArrayBuffer, a DataView or another typed array as the bytes
 * it holds, as Node's sockets and WebSockets send them (JSON would make an ArrayBuffer or a
 * DataView '{}' and a Float32Array an object of indexes).
 */
function bytesOf(message) {
  if (message instanceof Uint8Array) return message
  if (ArrayBuffer.isView(message)) return new Uint8Array(message.buffer, message.byteOffset, message.byteLength)
  if (message instanceof ArrayBuffer || (typeof SharedArrayBuffer === 'function' && message instanceof SharedArrayBuffer)) {
    return new Uint8Array(message)
  }
  return null
}

/**
 * A publish message as it is sent: binary data (see bytesOf) as bytes, anything else as JSON
 * text (Amplify's format). Throws ERR_PAYLOAD for what JSON cannot encode.
 */
function encodeMessage(message) {
  let bytes
  try {
    bytes = bytesOf(message)
    // A view of a detached ArrayBuffer (transferred to a Worker or by structuredClone) reads
    // as empty but throws when copied; making a view of its buffer finds it out here.
    if (bytes !== null && bytes.byteLength === 0) new Uint8Array(bytes.buffer)
  } catch (error) {
    // A detached ArrayBuffer, a revoked Proxy.
    throw pubsubError('ERR_PAYLOAD', `The message cannot be read: ${reasonOf(error)}`, error)
  }
  if (bytes !== null) return bytes
  let text
  try {
    text = JSON.stringify(message)
  } catch (error) {
    throw pubsubError('ERR_PAYLOAD', `The message cannot be sent as JSON: ${reasonOf(error)}`, error)
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

/** Node 18.0–18.13 lack `isUtf8`: bytes are UTF-8 when their decoding encodes back to them. */
const isUtf8 = require('node:buffer').isUtf8 ?? ((bytes) => Buffer.from(bytes.toString('utf8'), 'utf8').equals(bytes))

/**
 * Parses the JSON payload in bytes `start..end` of the Buffer `payloads`; an object carries its
 * topic under TOPIC. Throws on invalid JSON, and on bytes that are not UTF-8 (which JSON
 * requires): decoding makes them U+FFFD, which JSON.parse takes inside a string, and the data
 * would change without a word.
 */
function parseJson(payloads, start, end, topic) {
  const text = payloads.toString('utf8', start, end)
  // Only a text holding U+FFFD can come from invalid bytes; V8 answers at once for one-byte text.
  if (text.includes('\uFFFD') && !isUtf8(payloads.subarray(start, end))) {
    throw new Error('its bytes are not valid UTF-8, which JSON requires')
  }
  const value = JSON.parse(text)
  if (value !== null && typeof value === 'object') value[TOPIC] = topic
  return value
}

module.exports = { FORMATS, encodeMessage, encodePayload, parseJson }
