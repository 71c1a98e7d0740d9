'use strict'
// A scripted MQTT 3.1.1 server over WebSocket on a free 127.0.0.1 port, for what no real broker
// does on demand: breaking the protocol, or answering one exact packet in one exact way.
//
//   const broker = await startFakeBroker(t, { onPacket(packet, connection) { … } })
//   new PubSub({ endpoint: broker.url })
//
// Each whole packet from the client is parsed (`{ type, flags, body, id?, filters? }`) and given
// to `onPacket`; returning `undefined` lets the default answer go (CONNACK accepting a CONNECT,
// PINGRESP to PINGREQ), anything else means the hook answered (or chose not to): `send`
// returns true for that. Connections
// send with `connection.send(bytes)`; `packets` builds the bytes. Stopped when the test ends.
const http = require('node:http')
const { WebSocketServer } = require('ws')

const CONNECT = 1
const SUBSCRIBE = 8
const PINGREQ = 12

/** MQTT's variable-length "remaining length". */
function remainingLength(length) {
  const bytes = []
  do {
    let byte = length % 128
    length = Math.floor(length / 128)
    if (length > 0) byte |= 0x80
    bytes.push(byte)
  } while (length > 0)
  return Buffer.from(bytes)
}

function packet(firstByte, body) {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body])
}

function u16(value) {
  const bytes = Buffer.alloc(2)
  bytes.writeUInt16BE(value)
  return bytes
}

const packets = {
  connack: ({ sessionPresent = false, code = 0 } = {}) => packet(0x20, Buffer.from([sessionPresent ? 1 : 0, code])),
  suback: (id, codes) => packet(0x90, Buffer.concat([u16(id), Buffer.from(codes)])),
  /** A QoS 0 PUBLISH. */
  publish: (topic, payload) => packet(0x30, Buffer.concat([u16(Buffer.byteLength(topic)), Buffer.from(topic), Buffer.from(payload)])),
}

/** The packets in one WebSocket message from the client (each holds whole packets here). */
function parse(bytes) {
  const parsed = []
  let at = 0
  while (at < bytes.length) {
    const first = bytes[at]
    let length = 0
    let multiplier = 1
    let next = at + 1
    let byte
    do {
      byte = bytes[next++]
      length += (byte & 127) * multiplier
      multiplier *= 128
    } while (byte & 128)
    const body = bytes.subarray(next, next + length)
    const seen = { type: first >> 4, flags: first & 15, body }
    if (seen.type === SUBSCRIBE) {
      seen.id = body.readUInt16BE(0)
      seen.filters = []
      for (let i = 2; i < body.length; ) {
        const size = body.readUInt16BE(i)
        seen.filters.push(body.subarray(i + 2, i + 2 + size).toString())
        i += 2 + size + 1 // the filter, then its requested QoS
      }
    }
    parsed.push(seen)
    at = next + length
  }
  return parsed
}

/**
 * @param {import('ava').ExecutionContext} t
 * @param {{ onPacket?: (packet: { type: number, flags: number, body: Buffer, id?: number, filters?: string[] },
 *   connection: { number: number, send(bytes: Buffer | string): void, socket: import('ws').WebSocket }) => unknown }} [script]
 * @returns {Promise<{ url: string, connections: number }>}
 */
async function startFakeBroker(t, { onPacket = () => undefined } = {}) {
  const server = http.createServer()
  const sockets = new WebSocketServer({ server, handleProtocols: () => 'mqtt', maxPayload: 1 << 30 })
  const broker = { url: '', connections: 0 }
  sockets.on('connection', (socket) => {
    const connection = { number: ++broker.connections, socket, send: (bytes) => (socket.send(bytes), true) }
    socket.on('error', () => {})
    socket.on('message', (data) => {
      for (const seen of parse(Buffer.from(data))) {
        if (onPacket(seen, connection) !== undefined) continue
        if (seen.type === CONNECT) connection.send(packets.connack())
        else if (seen.type === PINGREQ) connection.send(Buffer.from([0xd0, 0]))
      }
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  broker.url = `ws://127.0.0.1:${server.address().port}/mqtt`
  t.teardown(
    () =>
      new Promise((resolve) => {
        for (const socket of sockets.clients) socket.terminate()
        sockets.close()
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  )
  return broker
}

module.exports = { startFakeBroker, packets, packet, remainingLength, CONNECT, SUBSCRIBE }
