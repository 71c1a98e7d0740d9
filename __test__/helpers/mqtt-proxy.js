'use strict'
// A loopback proxy that reads the MQTT 3.1.1 packets going through it, for tests that must break
// a connection at one exact point of a protocol exchange (tcp-proxy.js only sees bytes).
//
//   const proxy = await startMqttProxy({ targetPort: broker.tcpPort, onPacket })
//   new PubSub({ endpoint: proxy.url })
//
// `onPacket({ fromClient, type, packet, connection })` is called for every whole packet
// (`type`: the control packet type, 3 PUBLISH … 14 DISCONNECT, named in `PACKET_TYPE`;
// `packet`: its bytes) and returns false to hold it back (it is never sent), a number of ms to send it that much later (the
// packets after it are not held), or a Buffer to send in its place in one write (the packet
// itself, say, followed by packets held back before it). `connection.cut(afterMs = 0)` closes both sides of
// that connection after `afterMs`, and holds back every later packet meanwhile (the one whose
// hook cut it still goes, unless the hook returns false). `connection.toClient(bytes)` sends
// bytes to the client at any time (a packet held back, released when the test says so).
// Listens on 127.0.0.1 only.
const net = require('node:net')

/** Calls `onPacket(bytes)` for each whole MQTT packet of a byte stream fed in chunks. */
function packetReader(onPacket) {
  let buffered = Buffer.alloc(0)
  return (chunk) => {
    buffered = Buffer.concat([buffered, chunk])
    for (;;) {
      // Fixed header: one type byte, then the remaining length in 1 to 4 bytes.
      let length = 0
      let multiplier = 1
      let index = 1
      let complete = false
      while (index < buffered.length && index <= 4) {
        const byte = buffered[index++]
        length += (byte & 127) * multiplier
        multiplier *= 128
        if (!(byte & 128)) {
          complete = true
          break
        }
      }
      if (!complete || buffered.length < index + length) return
      onPacket(buffered.subarray(0, index + length))
      buffered = buffered.subarray(index + length)
    }
  }
}

/** @param {{ targetPort: number, onPacket?: (seen: { fromClient: boolean, type: number, packet: Buffer, connection: { cut(afterMs?: number): void } }) => boolean | number | Buffer | void }} options */
async function startMqttProxy({ targetPort, onPacket = () => true }) {
  const sockets = new Set()
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    let cut = false
    const connection = {
      cut(afterMs = 0) {
        cut = true
        setTimeout(() => {
          client.destroy()
          upstream.destroy()
        }, afterMs)
      },
      toClient(bytes) {
        if (!cut && !client.destroyed) client.write(bytes)
      },
    }
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => sockets.delete(socket))
    }
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    const relay = (fromClient, to) =>
      packetReader((packet) => {
        if (cut || to.destroyed) return
        const verdict = onPacket({ fromClient, type: packet[0] >> 4, packet, connection })
        if (verdict === false) return
        if (Buffer.isBuffer(verdict)) {
          to.write(verdict)
          return
        }
        if (typeof verdict === 'number') {
          setTimeout(() => cut || to.destroyed || to.write(packet), verdict)
          return
        }
        to.write(packet)
      })
    client.on('data', relay(true, upstream))
    upstream.on('data', relay(false, client))
  })
  server.on('error', () => {})
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = server.address().port
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    stop() {
      for (const socket of sockets) socket.destroy()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * A proxy to `targetPort` that holds back the client's first packet of `type` (4 PUBACK,
 * 10 UNSUBSCRIBE…), so it never arrives, and cuts that connection; stopped when the test `t`
 * ends. Resolves with `{ proxy, sent }`: `sent()` counts the client's packets of that type.
 */
async function cutAtClientsFirst(t, targetPort, type) {
  let sent = 0
  const proxy = await startMqttProxy({
    targetPort,
    onPacket({ fromClient, type: seen, connection }) {
      if (fromClient && seen === type && ++sent === 1) {
        connection.cut()
        return false
      }
    },
  })
  t.teardown(() => proxy.stop())
  return { proxy, sent: () => sent }
}

/** MQTT 3.1.1's control packet types, by name. */
const PACKET_TYPE = Object.freeze({ CONNECT: 1, CONNACK: 2, PUBLISH: 3, PUBACK: 4, PUBREC: 5, PUBREL: 6, PUBCOMP: 7, SUBSCRIBE: 8, SUBACK: 9, UNSUBSCRIBE: 10, UNSUBACK: 11, DISCONNECT: 14 })

/** Where a whole packet's variable header starts: after its type byte and remaining length. */
function variableHeaderStart(packet) {
  let index = 1
  while (packet[index++] & 128); // the remaining length's bytes
  return index
}

/** A PUBLISH packet's topic, QoS, DUP flag and packet id (0 at QoS 0). */
function parsePublish(packet) {
  const index = variableHeaderStart(packet)
  const topicLength = packet.readUInt16BE(index)
  const topic = packet.toString('utf8', index + 2, index + 2 + topicLength)
  const qos = (packet[0] >> 1) & 3
  return { topic, qos, dup: (packet[0] >> 3) & 1, pkid: qos > 0 ? packet.readUInt16BE(index + 2 + topicLength) : 0 }
}

/** The packet id of a packet that starts its variable header with one (PUBACK, SUBSCRIBE, SUBACK…). */
function leadingPacketId(packet) {
  return packet.readUInt16BE(variableHeaderStart(packet))
}

module.exports = { startMqttProxy, cutAtClientsFirst, packetReader, parsePublish, leadingPacketId, PACKET_TYPE }
