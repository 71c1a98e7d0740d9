'use strict'
// Fuzzes the client against a hostile or broken MQTT 3.1.1 broker: can the broker crash, hang or
// wedge it? Not part of `npm test`.
//
//   node scripts/broker-fuzz.js [--seeds 1-2000] [--jobs 2] [--batch 20] [--minutes 60]
//   node scripts/broker-fuzz.js --replay 1234 [--verbose]   one seed; --verbose logs every packet
//
// It tests the build in the checkout it sits in (`npm run build` first), or the one in
// FUZZ_ROOT: copy this file elsewhere and set FUZZ_ROOT to edit it while a run goes on.
//
// Each seed is one iteration, deterministic in what the broker decides (timing still varies):
// a fake broker on 127.0.0.1, over WebSocket (its own handshake and frames, so that it can break
// the WebSocket rules too) or plain TCP, in TLS or not (ws://, wss://, mqtt://, mqtts://; a
// throwaway CA made with openssl, given as `ca`), answers the client's CONNECT, SUBSCRIBE,
// PUBLISH… with valid packets, mutated ones (odd flags, return codes and lengths, unknown, zero or
// duplicate packet ids, invalid UTF-8 or wildcard or empty topics, QoS 3, 5-byte and huge
// remaining lengths, truncations, bit flips), random bytes, packets that only a client sends,
// packets before CONNACK, a second CONNACK, its own CONNECT echoed; splits its bytes at random
// boundaries (one byte at a time too) or coalesces many packets in one write or frame; over
// WebSocket also sends text, ping, pong, reserved-opcode, masked and fragmented frames, close
// frames with odd codes and a broken upgrade response; drips its bytes, stops reading, floods
// 3,000 publishes at once; and drops connections at random. Meanwhile the client
// (username/password set, so that a leaked secret shows) subscribes, publishes at QoS 0/1/2 and
// closes (now and then after a burst of up to 2,500 publishes), its observers fast, slow (2 ms a
// message) or throwing. In most iterations with reconnect on, the broker turns well-behaved after
// a few connections, and then everything must settle by itself (no wedge) and a message the
// broker forwarded must reach an observer.
//
// Iterations run in child processes (`--batch` seeds each, `--jobs` at a time), so that a crash
// (exit by signal, abort, a Rust panic on stderr, an uncaught exception or unhandled rejection) is
// seen, and a child that does not exit on its own after its last close() is a leaked handle.
// Checked in each iteration: close() settles within 5 s (30 s with slow observers, whose backlog
// close() delivers first); every publish promise and subscription.ready settles once close()
// has; every error that reaches user code (rejections, observer errors, 'error',
// 'connectionDisrupted', process warnings) is an Error whose `code` is a string starting with
// ERR_ and whose message holds no password; observers throw only the error they are told to.
// Failures are printed with their seed and appended to $TMPDIR/broker-fuzz/failures.jsonl.
const net = require('node:net')
const tls = require('node:tls')
const http = require('node:http')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')

const SECRET = 'hunter2-fuzz-secret-Zq8'
/** The password is a canary, but a report still never prints it: it says where it showed. */
const hideSecret = (text) => String(text).replaceAll(SECRET, '<the password>')
const ROOT = process.env.FUZZ_ROOT || path.join(__dirname, '..')

// ------------------------------------------------------------------------------------ PRNG

function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function makeRandom(seed) {
  const next = mulberry32(seed)
  const r = {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (list) => list[Math.floor(next() * list.length)],
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
    /** One of `[weight, value]` pairs; a function value is called. */
    weighted(pairs) {
      const total = pairs.reduce((sum, [w]) => sum + w, 0)
      let x = next() * total
      for (const [w, value] of pairs) {
        if ((x -= w) < 0) return typeof value === 'function' ? value() : value
      }
      const last = pairs[pairs.length - 1][1]
      return typeof last === 'function' ? last() : last
    },
  }
  return r
}

// ---------------------------------------------------------------------------- MQTT bytes

const { remainingLength, packet } = require(path.join(ROOT, '__test__', 'helpers', 'fake-broker.js'))

/** Any number as a packet id: out-of-range ids wrap, as mutated packets want. */
function u16(value) {
  const bytes = Buffer.alloc(2)
  bytes.writeUInt16BE(value & 0xffff)
  return bytes
}

const P = {
  connack: (flags = 0, code = 0) => packet(0x20, Buffer.from([flags, code])),
  suback: (id, codes) => packet(0x90, Buffer.concat([u16(id), Buffer.from(codes)])),
  unsuback: (id) => packet(0xb0, u16(id)),
  puback: (id) => packet(0x40, u16(id)),
  pubrec: (id) => packet(0x50, u16(id)),
  pubrel: (id) => packet(0x62, u16(id)),
  pubcomp: (id) => packet(0x70, u16(id)),
  pingresp: () => Buffer.from([0xd0, 0]),
  publish({ topic = 'fuzz/in', payload = '{"from":"broker"}', qos = 0, dup = false, retain = false, id = 1, topicLength }) {
    const topicBytes = Buffer.isBuffer(topic) ? topic : Buffer.from(topic)
    const parts = [u16(topicLength ?? topicBytes.length), topicBytes]
    if (qos > 0) parts.push(u16(id))
    parts.push(Buffer.isBuffer(payload) ? payload : Buffer.from(payload))
    return packet(0x30 | (dup ? 8 : 0) | (qos << 1) | (retain ? 1 : 0), Buffer.concat(parts))
  },
}

/** Reassembles the client's byte stream into packets. */
class PacketReader {
  constructor() {
    this.buffer = Buffer.alloc(0)
  }

  push(bytes) {
    this.buffer = Buffer.concat([this.buffer, bytes])
    const out = []
    for (;;) {
      if (this.buffer.length < 2) break
      let length = 0
      let multiplier = 1
      let at = 1
      let byte
      let complete = false
      for (let i = 0; i < 4 && at < this.buffer.length; i++) {
        byte = this.buffer[at++]
        length += (byte & 127) * multiplier
        multiplier *= 128
        if (!(byte & 128)) {
          complete = true
          break
        }
      }
      if (!complete || this.buffer.length < at + length) break
      const first = this.buffer[0]
      const body = this.buffer.subarray(at, at + length)
      this.buffer = this.buffer.subarray(at + length)
      out.push(parseClientPacket(first, body))
    }
    return out
  }
}

function parseClientPacket(first, body) {
  const seen = { type: first >> 4, flags: first & 15, body, raw: packet(first, body) }
  try {
    if (seen.type === 3) {
      seen.qos = (first >> 1) & 3
      const size = body.readUInt16BE(0)
      seen.topic = body.subarray(2, 2 + size).toString()
      let at = 2 + size
      if (seen.qos > 0) {
        seen.id = body.readUInt16BE(at)
        at += 2
      }
      seen.payload = body.subarray(at)
    } else if (seen.type === 8 || seen.type === 10) {
      seen.id = body.readUInt16BE(0)
      seen.filters = []
      for (let i = 2; i < body.length; ) {
        const size = body.readUInt16BE(i)
        const filter = body.subarray(i + 2, i + 2 + size).toString()
        i += 2 + size
        const qos = seen.type === 8 ? body[i++] : 0
        seen.filters.push({ filter, qos })
      }
    } else if (seen.type >= 4 && seen.type <= 7) {
      seen.id = body.readUInt16BE(0)
    }
  } catch {
    seen.malformed = true
  }
  return seen
}

function topicMatches(filter, topic) {
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}

// ------------------------------------------------------------------------ hostile packets

/** A packet a broker could send at any moment, valid or not. */
function randomPacket(r) {
  const id = () => r.weighted([[3, () => r.int(1, 8)], [1, 0], [1, 65535], [1, () => r.int(1, 65535)]])
  const topic = () =>
    r.weighted([
      [4, 'fuzz/in'],
      [2, 'fuzz/p'],
      [1, ''],
      [1, '#'],
      [1, 'fuzz/+'],
      [1, 'fuzz/#/x'],
      [1, Buffer.from([0x66, 0xff, 0xfe])], // invalid UTF-8
      [1, Buffer.from([0xed, 0xa0, 0x80])], // an encoded surrogate
      [1, Buffer.from('fuzz/\u0000nul')],
      [1, Buffer.from('fuzz/\u0001ctl')],
      [1, () => 'fuzz/' + 'x'.repeat(r.int(100, 70000))],
      [1, () => r.bytes(r.int(0, 20))],
    ])
  const payload = () =>
    r.weighted([
      [3, '{"from":"broker"}'],
      [1, ''],
      [1, 'not json {'],
      [1, Buffer.from([0xff, 0xfe, 0x00])],
      [1, () => r.bytes(r.int(0, 300))],
      [1, () => Buffer.alloc(r.int(60000, 300000), 0x61)],
      [1, '"\ud800"'],
      [1, () => JSON.stringify({ deep: '['.repeat(r.int(1, 5000)) })],
      [1, () => '['.repeat(r.int(100, 20000))],
    ])
  return r.weighted([
    [10, () => P.publish({ topic: topic(), payload: payload(), qos: r.weighted([[3, 0], [2, 1], [2, 2], [1, 3]]), dup: r.chance(0.2), retain: r.chance(0.2), id: id() })],
    [2, () => P.publish({ topic: topic(), payload: payload(), qos: r.int(0, 2), id: id(), topicLength: r.int(0, 65535) })],
    [2, () => P.puback(id())],
    [2, () => P.pubrec(id())],
    [2, () => P.pubrel(id())],
    [1, () => packet(0x60, u16(id()))], // PUBREL with the wrong flags
    [2, () => P.pubcomp(id())],
    [2, () => P.suback(id(), r.bytes(r.int(0, 4)))],
    [1, () => packet(0x90, Buffer.from([r.int(0, 255)]))], // SUBACK shorter than a packet id
    [2, () => P.unsuback(id())],
    [1, () => packet(0xb0, Buffer.alloc(0))],
    [2, () => P.connack(r.int(0, 255), r.int(0, 255))],
    [1, () => P.connack(0, 0)],
    [2, P.pingresp()],
    [1, () => Buffer.from([0xd0, r.int(1, 3), ...r.bytes(3)].slice(0, 2 + r.int(0, 3)))],
    [1, () => packet(r.pick([0x00, 0xf0, 0x10, 0x80, 0xa2, 0xc0, 0xe0]), r.bytes(r.int(0, 20)))], // reserved, or client-only
    [1, () => packet(r.int(0, 255), r.bytes(r.int(0, 40)))],
    [1, () => Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f])], // remaining length in 5 bytes
    [1, () => Buffer.from([0x40, 0x82, 0x80, 0x80, 0x80, 0x00, 0, 1])], // 5-byte length, non-minimal
    [1, () => Buffer.from([0x40, 0x82, 0x00, 0, 1])], // non-minimal encoding of 2
    [1, () => Buffer.concat([Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), r.bytes(r.int(0, 50))])], // 256 MiB announced
    [1, () => Buffer.concat([Buffer.from([0x30, 0x80, 0x80, 0x80, 0x01]), r.bytes(r.int(0, 50))])], // 2 MiB announced
    [2, () => r.bytes(r.int(1, 64))],
  ])
}

/** `bytes` with one random mutation. */
function mutate(r, bytes) {
  const b = Buffer.from(bytes)
  if (b.length === 0) return r.bytes(1)
  return r.weighted([
    [3, () => ((b[r.int(0, b.length - 1)] ^= 1 << r.int(0, 7)), b)],
    [2, () => ((b[r.int(0, b.length - 1)] = r.int(0, 255)), b)],
    [2, () => b.subarray(0, r.int(0, b.length - 1))],
    [1, () => Buffer.concat([b, r.bytes(r.int(1, 8))])],
    [1, () => ((b[1] = r.int(0, 255)), b)],
    [1, () => ((b[0] = (b[0] & 0xf0) | r.int(0, 15)), b)],
  ])
}

// ------------------------------------------------------------------------- WebSocket frames

function wsFrame(opcode, payload, { fin = true, rsv = 0, mask = false, lengthBytes } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload)
  let header
  const form = lengthBytes ?? (data.length < 126 ? 0 : data.length < 65536 ? 2 : 8)
  if (form === 0) header = Buffer.from([0, data.length])
  else if (form === 2) {
    header = Buffer.alloc(4)
    header[1] = 126
    header.writeUInt16BE(data.length, 2)
  } else {
    header = Buffer.alloc(10)
    header[1] = 127
    header.writeBigUInt64BE(BigInt(data.length), 2)
  }
  header[0] = (fin ? 0x80 : 0) | (rsv << 4) | opcode
  if (mask) {
    header[1] |= 0x80
    const key = Buffer.from([1, 2, 3, 4])
    const masked = Buffer.from(data.map((byte, i) => byte ^ key[i % 4]))
    return Buffer.concat([header, key, masked])
  }
  return Buffer.concat([header, data])
}

/** Parses the client's (masked) frames; calls onBinary with data frames' payloads. */
class FrameReader {
  constructor(onBinary, onControl) {
    this.buffer = Buffer.alloc(0)
    this.onBinary = onBinary
    this.onControl = onControl
  }

  push(bytes) {
    this.buffer = Buffer.concat([this.buffer, bytes])
    for (;;) {
      const b = this.buffer
      if (b.length < 2) return
      const opcode = b[0] & 15
      const masked = b[1] & 0x80
      let length = b[1] & 127
      let at = 2
      if (length === 126) {
        if (b.length < 4) return
        length = b.readUInt16BE(2)
        at = 4
      } else if (length === 127) {
        if (b.length < 10) return
        length = Number(b.readBigUInt64BE(2))
        at = 10
      }
      const key = masked ? b.subarray(at, at + 4) : null
      if (masked) at += 4
      if (b.length < at + length) return
      const payload = Buffer.from(b.subarray(at, at + length))
      if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i % 4]
      this.buffer = b.subarray(at + length)
      if (opcode === 0 || opcode === 1 || opcode === 2) this.onBinary(payload)
      else this.onControl(opcode, payload)
    }
  }
}

// --------------------------------------------------------------------------- the broker

/** The certificates in FUZZ_TLS_DIR (made once by the parent, see `withCertificates`). */
let tlsCache
function tlsFiles() {
  const dir = process.env.FUZZ_TLS_DIR
  if (!dir) throw new Error('FUZZ_TLS_DIR is not set: run through the parent or --replay')
  tlsCache ??= {
    cert: fs.readFileSync(path.join(dir, 'server.crt')),
    key: fs.readFileSync(path.join(dir, 'server.key')),
    ca: fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8'),
  }
  return tlsCache
}

/**
 * A broker whose behaviour `seed` decides. Connections numbered below `chaosConnections + 1` are
 * hostile; the later ones are well-behaved (`chaosConnections` Infinity: always hostile).
 */
async function startBroker(seed, { transport, chaosConnections, log }) {
  const r = makeRandom(seed ^ 0x5bd1e995)
  const broker = { connections: 0, forwarded: [], sockets: new Set(), url: '' }

  function onSocket(socket, { ws, head }) {
    const number = ++broker.connections
    const chaos = number <= chaosConnections
    const cr = makeRandom((seed * 31 + number) >>> 0)
    broker.sockets.add(socket)
    socket.on('close', () => broker.sockets.delete(socket))
    socket.on('error', () => {})
    socket.setNoDelay(true)
    const personality = chaos
      ? {
          chunking: cr.weighted([[4, 'whole'], [2, 'random'], [1, 'bytes']]),
          coalesce: cr.chance(0.5),
          rate: cr.weighted([[2, 0], [2, 0.05], [1, 0.2], [1, 0.5]]), // how often an answer is hostile
          spontaneousMs: cr.weighted([[2, 0], [2, () => cr.int(5, 50)], [1, () => cr.int(50, 300)]]),
          // Always dropped in the end, so that a well-behaved broker can take over.
          killAfterMs: cr.weighted([[1, () => cr.int(800, 2000)], [3, () => cr.int(20, 800)]]),
          wsNoise: ws ? cr.weighted([[3, 0], [1, 0.1], [1, 0.3]]) : 0,
          dripMs: cr.weighted([[5, 0], [1, () => cr.int(1, 30)]]), // a pause before each chunk
          stopReadingAfterMs: cr.weighted([[6, null], [1, () => cr.int(0, 300)]]), // never reads again
          floodAfterMs: cr.weighted([[6, null], [1, () => cr.int(0, 300)]]), // thousands of publishes at once
        }
      : { chunking: 'whole', coalesce: false, rate: 0, spontaneousMs: 0, killAfterMs: null, wsNoise: 0, dripMs: 0, stopReadingAfterMs: null, floodAfterMs: null }
    const subscriptions = new Set()
    const connection = { closed: false }
    log(`conn ${number} ${chaos ? 'chaos' : 'good'} ${JSON.stringify(personality)}`)

    // Output: coalesced per tick or not, chunked, framed when WebSocket.
    let pending = []
    let scheduled = false
    const dripQueue = []
    const drip = () => {
      if (connection.closed || dripQueue.length === 0) return
      socket.write(dripQueue.shift())
      if (dripQueue.length) setTimeout(drip, personality.dripMs)
    }
    const write = (bytes) => {
      if (!personality.dripMs) return socket.write(bytes)
      dripQueue.push(bytes)
      if (dripQueue.length === 1) setTimeout(drip, personality.dripMs)
    }
    const writeChunk = (chunk) => {
      if (connection.closed) return
      if (!ws) return write(chunk)
      if (cr.chance(personality.wsNoise)) write(wsNoiseFrame(cr))
      write(wsFrame(2, chunk))
    }
    const flush = () => {
      scheduled = false
      const all = Buffer.concat(pending)
      pending = []
      if (all.length === 0) return
      if (personality.chunking === 'whole') return writeChunk(all)
      // Split the first 4 KiB only: a flood cut in bytes would be millions of writes, which
      // stalls this process (the client's JS included) and is the harness's problem, not the
      // client's.
      let at = 0
      while (at < all.length) {
        if (at >= 4096) {
          writeChunk(all.subarray(at))
          break
        }
        const size = personality.chunking === 'bytes' ? 1 : cr.int(1, Math.max(1, Math.min(all.length - at, 40)))
        writeChunk(all.subarray(at, at + size))
        at += size
      }
    }
    const send = (bytes) => {
      if (connection.closed) return
      log(`conn ${number} -> ${bytes.subarray(0, 12).toString('hex')}${bytes.length > 12 ? `… (${bytes.length} bytes)` : ''}`)
      pending.push(bytes)
      if (!personality.coalesce) return flush()
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    }
    const kill = (how) => {
      if (connection.closed) return
      flush()
      connection.closed = true
      log(`conn ${number} kill ${how}`)
      if (how === 'end') socket.end()
      else if (how === 'reset' && !(socket instanceof tls.TLSSocket)) socket.resetAndDestroy()
      else socket.destroy()
    }
    const hostile = () => {
      const yes = chaos && cr.chance(personality.rate)
      if (yes) log(`conn ${number} answers the next packet with hostility`)
      return yes
    }
    const killHow = () => cr.pick(['end', 'destroy', 'reset'])

    const timers = []
    socket.on('close', () => {
      connection.closed = true
      for (const timer of timers) clearTimeout(timer) // clears intervals too
    })
    if (personality.killAfterMs !== null) timers.push(setTimeout(() => kill(killHow()), personality.killAfterMs))
    if (personality.stopReadingAfterMs !== null) timers.push(setTimeout(() => (log(`conn ${number} stops reading`), socket.pause()), personality.stopReadingAfterMs))
    if (personality.floodAfterMs !== null) {
      timers.push(
        setTimeout(() => {
          const qos = cr.int(0, 2)
          log(`conn ${number} floods at QoS ${qos}`)
          const size = cr.pick([10, 1000, 20000])
          const flood = []
          for (let i = 0; i < 3000; i++) flood.push(P.publish({ topic: 'fuzz/in', payload: `{"flood":${i},"pad":"${'x'.repeat(size)}"}`, qos, id: (i % 65535) + 1 }))
          // Not chunked (see flush); over WebSocket in frames of 256 KiB.
          const all = Buffer.concat(flood)
          if (connection.closed) return
          if (!ws) socket.write(all)
          else for (let at = 0; at < all.length; at += 256 * 1024) socket.write(wsFrame(2, all.subarray(at, at + 256 * 1024)))
        }, personality.floodAfterMs),
      )
    }
    if (personality.spontaneousMs) {
      timers.push(
        setInterval(() => {
          cr.weighted([
            [6, () => send(randomPacket(cr))],
            [2, () => send(mutate(cr, randomPacket(cr)))],
            [ws ? 2 : 0, () => !connection.closed && socket.write(wsNoiseFrame(cr))],
            [1, () => kill(killHow())],
          ])
        }, personality.spontaneousMs),
      )
    }

    const answer = (seen) => {
      log(`conn ${number} <- type ${seen.type} flags ${seen.flags} id ${seen.id ?? '-'} len ${seen.body.length}`)
      if (seen.malformed) return
      switch (seen.type) {
        case 1: // CONNECT
          if (!hostile() && !(chaos && cr.chance(0.3))) return send(P.connack(0, 0))
          return cr.weighted([
            [4, () => send(P.connack(0, 0))],
            [2, () => send(P.connack(0, cr.int(1, 5)))],
            [2, () => send(P.connack(cr.int(0, 255), cr.int(0, 255)))],
            [1, () => send(P.connack(1, 0))],
            [2, () => send(packet(0x20, cr.bytes(cr.pick([0, 1, 3, 4, 200]))))],
            [1, () => send(mutate(cr, P.connack(0, 0)))],
            [2, () => {}], // silence
            [2, () => (send(randomPacket(cr)), send(P.connack(0, 0)))],
            [2, () => (send(P.connack(0, 0)), send(P.connack(cr.int(0, 1), cr.int(0, 5))))],
            [1, () => send(seen.raw)], // our CONNECT, password and all, echoed
            [1, () => send(cr.bytes(cr.int(1, 30)))],
            [1, () => kill(killHow())],
            [1, () => (send(P.connack(0, 0)), kill(killHow()))],
          ])
        case 3: {
          // PUBLISH
          if (!chaos || !hostile()) {
            if (seen.qos === 1) send(P.puback(seen.id))
            else if (seen.qos === 2) send(P.pubrec(seen.id))
            forward(seen)
            return undefined
          }
          const id = seen.id ?? 1
          return cr.weighted([
            [2, () => send(P.puback(id + cr.int(1, 3)))],
            [1, () => send(P.puback(0))],
            [2, () => (send(P.puback(id)), send(P.puback(id)))],
            [2, () => send(P.pubrec(id))],
            [1, () => send(P.pubcomp(id))],
            [2, () => (send(P.pubrec(id)), send(P.pubrec(id)))],
            [1, () => send(P.puback(id))],
            [1, () => send(P.pubrel(id))],
            [2, () => {}],
            [1, () => send(seen.raw)], // echoed
            [1, () => send(mutate(cr, seen.qos === 2 ? P.pubrec(id) : P.puback(id)))],
            [1, () => kill(killHow())],
          ])
        }
        case 4: // PUBACK
        case 7: // PUBCOMP
          return undefined
        case 5: // PUBREC: our QoS 2 publish
          if (!hostile()) return send(P.pubrel(seen.id))
          return cr.weighted([
            [1, () => send(P.pubrel(seen.id + 1))],
            [1, () => (send(P.pubrel(seen.id)), send(P.pubrel(seen.id)))],
            [1, () => send(P.pubcomp(seen.id))],
            [1, () => {}],
          ])
        case 6: // PUBREL
          if (!hostile()) return send(P.pubcomp(seen.id))
          return cr.weighted([
            [1, () => send(P.pubcomp(seen.id + 1))],
            [1, () => (send(P.pubcomp(seen.id)), send(P.pubcomp(seen.id)))],
            [1, () => send(P.pubrec(seen.id))],
            [1, () => send(P.pubrel(seen.id))],
            [1, () => {}],
          ])
        case 8: {
          // SUBSCRIBE
          const granted = seen.filters.map((f) => f.qos)
          if (!hostile()) {
            for (const f of seen.filters) subscriptions.add(f.filter)
            return send(P.suback(seen.id, granted))
          }
          return cr.weighted([
            [2, () => send(P.suback(seen.id + cr.int(1, 3), granted))],
            [1, () => send(P.suback(0, granted))],
            [2, () => send(P.suback(seen.id, [...granted, ...cr.bytes(cr.int(1, 3))]))],
            [2, () => send(P.suback(seen.id, granted.slice(0, cr.int(0, granted.length - 1))))],
            [2, () => send(P.suback(seen.id, granted.map(() => cr.pick([0, 1, 2, 3, 0x80, 0x81, 0xff]))))],
            [2, () => (send(P.suback(seen.id, granted)), send(P.suback(seen.id, granted)))],
            [1, () => send(P.unsuback(seen.id))],
            [2, () => {}],
            [1, () => send(mutate(cr, P.suback(seen.id, granted)))],
            [1, () => send(seen.raw)],
            [1, () => kill(killHow())],
          ])
        }
        case 10: // UNSUBSCRIBE
          if (!hostile()) {
            for (const f of seen.filters) subscriptions.delete(f.filter)
            return send(P.unsuback(seen.id))
          }
          return cr.weighted([
            [1, () => send(P.unsuback(seen.id + 1))],
            [1, () => (send(P.unsuback(seen.id)), send(P.unsuback(seen.id)))],
            [1, () => send(P.suback(seen.id, [0]))],
            [1, () => {}],
          ])
        case 12: // PINGREQ
          if (!hostile()) return send(P.pingresp())
          return cr.weighted([
            [1, () => {}],
            [1, () => (send(P.pingresp()), send(P.pingresp()), send(P.pingresp()))],
            [1, () => send(Buffer.from([0xd0, 1, 0]))],
          ])
        case 14: // DISCONNECT
          return kill('end')
        default:
          return undefined
      }
    }

    const forward = (seen) => {
      if (!chaos && [...subscriptions].some((filter) => topicMatches(filter, seen.topic))) {
        send(P.publish({ topic: seen.topic, payload: seen.payload, qos: 0 }))
        broker.forwarded.push(seen.payload.toString())
      }
    }

    const reader = new PacketReader()
    const onBytes = (bytes) => {
      for (const seen of reader.push(bytes)) answer(seen)
    }
    if (!ws) {
      socket.on('data', onBytes)
      return
    }

    // The WebSocket upgrade answer, then frames.
    const frames = new FrameReader(onBytes, (opcode, payload) => {
      if (opcode === 9) socket.write(wsFrame(10, payload))
      else if (opcode === 8 && !connection.closed) {
        socket.write(wsFrame(8, payload.subarray(0, 2)))
        socket.end()
      }
    })
    socket.on('data', (bytes) => frames.push(bytes))
    const accept = crypto
      .createHash('sha1')
      .update(ws.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
      .digest('base64')
    const good = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n`
    const response =
      chaos && cr.chance(0.1)
        ? cr.weighted([
            [1, 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
            [1, 'HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n'],
            [1, 'HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\noops!'],
            [1, 'HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n'],
            [1, good.replace(/Sec-WebSocket-Accept: [^\r]+/, 'Sec-WebSocket-Accept: AAAA')],
            [1, good.replace('Sec-WebSocket-Protocol: mqtt\r\n', '')],
            [1, good.replace('Sec-WebSocket-Protocol: mqtt', 'Sec-WebSocket-Protocol: mqttv5')],
            [1, 'HTTP/1.1 101 Switching Protocols\r\n' + 'X-Long: ' + 'y'.repeat(100000) + '\r\n\r\n'],
            [1, () => cr.bytes(cr.int(1, 100)).toString('latin1')],
            [1, good + 'trailing junk'],
            [1, ''],
          ])
        : good
    socket.write(response)
    if (head && head.length) frames.push(head)
  }

  // mqtt:// and ws:// listen as such; mqtts:// and wss:// take TCP and wrap it in TLS, or (now and
  // then, on a hostile connection) answer the handshake with what is not TLS.
  let server
  const upgrades = http.createServer()
  upgrades.on('upgrade', (request, socket, head) => onSocket(socket, { ws: request, head }))
  if (transport === 'tcp') server = net.createServer((socket) => onSocket(socket, {}))
  else if (transport === 'ws') server = upgrades
  else {
    const { cert, key } = tlsFiles()
    server = net.createServer((raw) => {
      raw.on('error', () => {})
      if (broker.connections < chaosConnections && r.chance(0.15)) {
        broker.connections++
        broker.sockets.add(raw)
        raw.on('close', () => broker.sockets.delete(raw))
        const answer = r.weighted([
          [1, () => r.bytes(r.int(1, 200))],
          [1, 'HTTP/1.1 400 Bad Request\r\n\r\n'],
          [1, Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])], // a TLS alert: handshake failure
          [1, () => Buffer.concat([Buffer.from([0x16, 0x03, 0x03, 0xff, 0xff]), r.bytes(r.int(0, 50))])], // a record longer than any
          [1, ''],
        ])
        log(`conn ${broker.connections} answers TLS with ${Buffer.from(answer).subarray(0, 8).toString('hex') || 'silence'}`)
        raw.write(answer)
        if (r.chance(0.5)) raw.end()
        return
      }
      const socket = new tls.TLSSocket(raw, { isServer: true, cert, key })
      socket.on('error', () => {})
      if (transport === 'mqtts') onSocket(socket, {})
      else upgrades.emit('connection', socket)
    })
  }
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = server.address().port
  broker.url = { tcp: `mqtt://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/mqtt`, mqtts: `mqtts://127.0.0.1:${port}`, wss: `wss://127.0.0.1:${port}/mqtt` }[transport]
  broker.stop = () =>
    new Promise((resolve) => {
      for (const socket of broker.sockets) socket.destroy()
      server.close(() => resolve())
    })
  return broker
}

function wsNoiseFrame(r) {
  return r.weighted([
    [3, () => wsFrame(9, r.bytes(r.int(0, 125)))], // ping
    [2, () => wsFrame(10, r.bytes(r.int(0, 10)))], // unsolicited pong
    [2, () => wsFrame(1, 'text, not binary')],
    [1, () => wsFrame(2, Buffer.alloc(0))], // empty binary frame
    [1, () => wsFrame(r.pick([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), r.bytes(r.int(0, 10)))], // reserved opcodes
    [1, () => wsFrame(2, Buffer.from([0xd0, 0]), { rsv: r.int(1, 7) })],
    [1, () => wsFrame(2, Buffer.from([0xd0, 0]), { mask: true })],
    [1, () => wsFrame(9, r.bytes(3), { fin: false })], // fragmented control frame
    [1, () => wsFrame(0, Buffer.from([0xd0, 0]))], // continuation with nothing to continue
    [1, () => Buffer.concat([wsFrame(2, Buffer.from([0xd0]), { fin: false }), wsFrame(9, 'x'), wsFrame(0, Buffer.from([0]))])], // fragmented, a ping between
    [1, () => wsFrame(2, Buffer.from([0xd0, 0]), { lengthBytes: 8 })], // non-minimal length
    [1, () => Buffer.concat([Buffer.from([0x82, 0xff]), Buffer.alloc(8, 0xff)])], // 64-bit length with the top bit
    [1, () => wsFrame(8, Buffer.alloc(0))],
    [1, () => wsFrame(8, Buffer.from([0]))], // close with one byte
    [1, () => wsFrame(8, u16(r.pick([0, 999, 1004, 1005, 1006, 1015, 2999, 4999, 5000, 65535])))],
    [1, () => wsFrame(8, Buffer.concat([u16(1000), Buffer.from([0xff, 0xfe])]))], // invalid UTF-8 reason
    [1, () => wsFrame(8, Buffer.concat([u16(1001), Buffer.from(SECRET)]))],
  ])
}

// --------------------------------------------------------------------------- one iteration

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function within(promise, ms) {
  let timer
  return Promise.race([
    promise.then(
      () => 'settled',
      () => 'settled',
    ),
    new Promise((resolve) => (timer = setTimeout(resolve, ms, 'pending'))),
  ]).finally(() => clearTimeout(timer))
}

async function iteration(seed, { verbose = false } = {}) {
  const { PubSub } = require(path.join(ROOT, 'mqtt.js'))
  const r = makeRandom(seed)
  const lines = []
  const log = (line) => (verbose ? console.error(line) : lines.push(line))
  const problems = []
  const problem = (text) => problems.push(hideSecret(text))
  const transport = r.weighted([[2, 'ws'], [2, 'tcp'], [1, 'wss'], [1, 'mqtts']])
  const reconnect = r.weighted([[3, true], [1, false]])
  const goodTail = reconnect && r.chance(0.75)
  const chaosConnections = goodTail ? r.int(1, 4) : Infinity
  const broker = await startBroker(seed, { transport, chaosConnections, log })
  const options = {
    endpoint: broker.url,
    username: 'user',
    password: SECRET,
    keepAlive: r.pick([0, 1, 2, 60]),
    connectTimeout: r.int(300, 2000),
    cleanSession: r.chance(0.7),
    reconnect: reconnect ? { minDelayMs: 5, maxDelayMs: 40, resetAfterMs: r.pick([50, 30000]) } : false,
    offlineQueue: r.pick(['all', 'qos1', 'none', undefined]),
  }
  if (!options.offlineQueue) delete options.offlineQueue
  if (transport === 'wss' || transport === 'mqtts') options.ca = tlsFiles().ca
  if (r.chance(0.3)) options.clientId = `fuzz-${seed}`
  if (r.chance(0.2)) options.will = { topic: 'fuzz/will', message: 'gone', qos: r.int(0, 2) }
  // Observers that are slow (JS falls behind a flood: the connection stops reading) or throw.
  const observerHabit = r.weighted([[6, 'fast'], [1, 'slow'], [1, 'throws']])
  log(`seed ${seed} ${transport} goodTail=${goodTail} chaos=${chaosConnections} observers ${observerHabit} ${JSON.stringify({ ...options, password: '…' })}`)

  const errors = []
  const checkError = (where, error) => {
    errors.push({ where, code: error?.code })
    if (!(error instanceof Error)) problem(`${where}: not an Error: ${String(error)}`)
    else if (typeof error.code !== 'string' || !error.code.startsWith('ERR_')) problem(`${where}: code ${String(error.code)}: ${error.message}`)
    const text = `${error?.message} ${error?.stack}`
    if (text.includes(SECRET)) problem(`${where}: the password shows in the error: ${JSON.stringify(error.message)}`)
  }

  let pubsub
  try {
    pubsub = new PubSub(options)
  } catch (error) {
    problem(`constructor threw: ${error.stack}`)
    await broker.stop()
    return { seed, problems, log: lines }
  }
  pubsub.on('error', (error) => checkError("'error' event", error))
  pubsub.on('connectionDisrupted', ({ error }) => {
    log(`disrupted ${error.code} ${error.message}`)
    checkError('connectionDisrupted', error)
  })
  pubsub.on('invalidPayload', ({ error }) => checkError('invalidPayload', error))
  const THROWN = new Error('an observer that throws')
  pubsub.on('callbackError', (error) => {
    if (error !== THROWN) problem(`callbackError: ${error?.stack ?? error}`)
  })

  // Subscriptions. Loss is checked only by payload, on the subscriptions of the good tail.
  const received = []
  const subs = []
  const filters = ['fuzz/#', 'fuzz/+', 'fuzz/p', '#', 'fuzz/in']
  for (let i = r.int(0, 3); i > 0; i--) {
    const filter = r.pick(filters)
    const format = r.pick(['json', 'string', 'binary', 'message'])
    const sub = { filter, errors: [] }
    sub.subscription = pubsub.subscribe({ topics: filter, options: { qos: r.int(0, 2), format } }).subscribe({
      next: (value) => {
        received.push({ filter, value })
        if (observerHabit === 'slow') for (const until = Date.now() + 2; Date.now() < until; );
        else if (observerHabit === 'throws' && received.length % 3 === 0) throw THROWN
      },
      error: (error) => (sub.errors.push(error), checkError(`observer of ${filter}`, error)),
      complete: () => (sub.completed = true),
    })
    sub.subscription.ready.catch((error) => checkError(`ready of ${filter}`, error))
    subs.push(sub)
  }

  // Publishes, some at once and some later.
  const publishes = []
  const publish = (n, small = false) => {
    const qos = r.int(0, 2)
    const entry = { n, qos, state: 'pending' }
    const size = small ? 0 : r.weighted([[8, 0], [1, 2000], [1, 70000]])
    entry.promise = pubsub
      .publish({ topics: 'fuzz/p', message: { n, pad: 'x'.repeat(size) }, options: { qos } })
      .then(
        () => (entry.state = 'resolved'),
        (error) => ((entry.state = 'rejected'), checkError(`publish ${n} qos ${qos}`, error)),
      )
    publishes.push(entry)
  }
  // Sometimes more than the 1,024 packet ids in flight: the window fills, ids are reused (a
  // broker acking out of order makes them collide).
  const burst = r.chance(0.1) ? r.int(1030, 2500) : 0
  if (burst) log(`burst of ${burst} publishes`)
  for (let n = 0; n < burst; n++) publish(1_000_000 + n, true)
  const early = r.int(0, 4)
  for (let n = 0; n < early; n++) publish(n)
  const later = r.int(0, 3)
  for (let n = early; n < early + later; n++) {
    await sleep(r.int(0, 150))
    publish(n)
  }
  if (subs.length && r.chance(0.15)) r.pick(subs).subscription.unsubscribe()

  if (goodTail) {
    // The broker is well-behaved from now on: everything must settle without close(). Slow
    // observers get longer: they hold this thread, where the broker runs too, for up to 2 ms
    // for each message queued for JS (up to 8,192), and the broker answers nothing meanwhile.
    const everything = Promise.all([...publishes.map((p) => p.promise), ...subs.map((s) => s.subscription.ready.catch(() => {}))])
    const settleLimit = observerHabit === 'slow' ? 30_000 : 15_000
    if ((await within(everything, settleLimit)) === 'pending') {
      const stuck = publishes.filter((p) => p.state === 'pending').slice(0, 10).map((p) => `publish ${p.n} qos ${p.qos}`)
      problem(`wedged: with a well-behaved broker, still pending after ${settleLimit / 1000} s: ${stuck.join(', ') || 'a subscription ready'}; stats ${JSON.stringify(pubsub.stats())}`)
    }
    // Then a publish through the good broker must come back to every matching live subscription.
    const live = subs.filter((s) => !s.subscription.closed && s.errors.length === 0)
    if (live.length && problems.length === 0) {
      const marker = `marker-${seed}`
      const done = pubsub.publish({ topics: 'fuzz/p', message: marker, options: { qos: 1 } })
      done.catch((error) => checkError('marker publish', error))
      await within(done, 5_000)
      await sleep(300)
      const sentBack = broker.forwarded.some((payload) => payload.includes(marker))
      const text = (value) => (value instanceof Uint8Array ? Buffer.from(value).toString() : value?.payload instanceof Uint8Array ? Buffer.from(value.payload).toString() : JSON.stringify(value))
      const got = received.some(({ value }) => String(text(value)).includes(marker))
      if (sentBack && !got) problem(`lost: the broker forwarded ${marker} and no observer got it (filters ${live.map((s) => s.filter)})`)
    }
  } else {
    await sleep(r.int(0, 1200))
  }

  const closing = pubsub.close()
  closing.catch((error) => checkError('close()', error))
  // close() first delivers what was received (up to 8,192 messages queued for JS): a slow
  // observer, 2 ms a call, can make that last seconds.
  const closeLimit = observerHabit === 'slow' ? 30_000 : 5_000
  if ((await within(closing, closeLimit)) === 'pending') problem(`close() did not settle within ${closeLimit} ms`)
  const all = Promise.all([...publishes.map((p) => p.promise), ...subs.map((s) => s.subscription.ready.catch(() => {}))])
  if ((await within(all, 3_000)) === 'pending') {
    problem(`after close(): still pending: ${publishes.filter((p) => p.state === 'pending').slice(0, 10).map((p) => `publish ${p.n} qos ${p.qos}`).join(', ') || 'a subscription ready'}`)
  }
  try {
    const stats = pubsub.stats()
    if (typeof stats.reconnects !== 'number') problem(`stats(): ${JSON.stringify(stats)}`)
  } catch (error) {
    problem(`stats() threw after close: ${error.stack}`)
  }
  await broker.stop()
  return { seed, problems, transport, connections: broker.connections, errors: errors.map((e) => e.code), log: lines }
}

// ----------------------------------------------------------------------------------- child

async function child(seeds, verbose) {
  let current
  process.on('warning', (warning) => {
    if (warning.name === 'NativePubSubWarning') {
      if (String(warning.message).includes(SECRET)) console.log(JSON.stringify({ seed: current, problems: ['a warning shows the password'] }))
      return
    }
    if (warning.name === 'MaxListenersExceededWarning') return
    console.log(JSON.stringify({ seed: current, problems: [hideSecret(`process warning: ${warning.name}: ${warning.message}`)] }))
  })
  process.on('unhandledRejection', (reason) => {
    console.log(JSON.stringify({ seed: current, problems: [`unhandledRejection: ${reason?.stack ?? reason}`] }))
  })
  process.on('uncaughtException', (error) => {
    console.log(JSON.stringify({ seed: current, problems: [`uncaughtException: ${error?.stack ?? error}`] }))
    process.exit(70)
  })
  for (const seed of seeds) {
    current = seed
    console.log(JSON.stringify({ start: seed }))
    const result = await iteration(seed, { verbose })
    const summary = { seed, problems: result.problems, transport: result.transport, connections: result.connections, errors: result.errors }
    if (result.problems.length) summary.log = result.log.slice(-60)
    console.log(JSON.stringify(summary))
  }
  console.log(JSON.stringify({ done: true }))
  // The process must now exit by itself: nothing of ours is left open.
}

// ---------------------------------------------------------------------------------- parent

function parseArgs(argv) {
  const args = { seeds: [1, 2000], jobs: 2, batch: 20, minutes: 60, replay: null, verbose: false, child: null }
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i]
    const value = argv[i + 1]
    if (key === '--seeds') ((args.seeds = value.split('-').map(Number)), i++)
    else if (key === '--jobs') ((args.jobs = Number(value)), i++)
    else if (key === '--batch') ((args.batch = Number(value)), i++)
    else if (key === '--minutes') ((args.minutes = Number(value)), i++)
    else if (key === '--replay') ((args.replay = Number(value)), i++)
    else if (key === '--child') ((args.child = value.split(',').map(Number)), i++)
    else if (key === '--verbose') args.verbose = true
    else throw new Error(`unknown argument ${key}`)
  }
  return args
}

function runChild(seeds, verbose = false) {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [__filename, '--child', seeds.join(','), ...(verbose ? ['--verbose'] : [])], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_BACKTRACE: '1' },
    })
    let stdout = ''
    let stderr = ''
    const results = []
    let current = null
    let done = false
    let lastProgress = Date.now()
    let doneAt = null
    proc.stdout.on('data', (chunk) => {
      stdout += chunk
      let newline
      while ((newline = stdout.indexOf('\n')) >= 0) {
        const line = stdout.slice(0, newline)
        stdout = stdout.slice(newline + 1)
        let parsed
        try {
          parsed = JSON.parse(line)
        } catch {
          continue
        }
        lastProgress = Date.now()
        if (parsed.start !== undefined) current = parsed.start
        else if (parsed.done) ((done = true), (doneAt = Date.now()))
        else results.push(parsed)
      }
    })
    proc.stderr.on('data', (chunk) => {
      if (verbose) process.stderr.write(chunk)
      stderr += chunk
      if (stderr.length > 200_000) stderr = stderr.slice(-100_000)
    })
    let killedFor = null
    const watchdog = setInterval(() => {
      if (doneAt && Date.now() - doneAt > 5_000) {
        killedFor = 'did not exit within 5 s after its last close(): a handle keeps Node up'
        proc.kill('SIGKILL')
      } else if (!done && Date.now() - lastProgress > 90_000) {
        killedFor = `no progress for 90 s in seed ${current}: hung`
        proc.kill('SIGKILL')
      }
    }, 500)
    proc.on('exit', (code, signal) => {
      clearInterval(watchdog)
      const failures = results.filter((result) => result.problems?.length)
      const panicked = /panicked|RUST_BACKTRACE|fatal runtime error|Aborted|Segmentation/.test(stderr)
      if (killedFor || signal || code !== 0 || panicked) {
        failures.push({
          seed: done ? seeds : current,
          problems: [`child ${killedFor ?? `exited with code ${code} signal ${signal}`}${panicked ? ' (panic on stderr)' : ''}`],
          stderr: stderr.split('\n').filter((line) => !/NativePubSubWarning|--trace-warnings/.test(line)).slice(-30).join('\n'),
        })
      }
      resolve({ results, failures })
    })
  })
}

async function parent(args) {
  const outDir = path.join(os.tmpdir(), 'broker-fuzz')
  fs.mkdirSync(outDir, { recursive: true })
  const failuresFile = path.join(outDir, 'failures.jsonl')
  const [from, to] = args.seeds
  const deadline = Date.now() + args.minutes * 60_000
  let nextSeed = from
  let iterations = 0
  let failed = 0
  const started = Date.now()
  const codes = {}
  const worker = async () => {
    while (nextSeed <= to && Date.now() < deadline) {
      const seeds = []
      for (let i = 0; i < args.batch && nextSeed <= to; i++) seeds.push(nextSeed++)
      const { results, failures } = await runChild(seeds)
      iterations += results.length
      for (const result of results) for (const code of result.errors ?? []) codes[code] = (codes[code] ?? 0) + 1
      for (const failure of failures) {
        failed++
        fs.appendFileSync(failuresFile, JSON.stringify(failure) + '\n')
        console.log(`FAIL seed ${failure.seed}: ${failure.problems.join(' | ').slice(0, 400)}`)
      }
      console.log(`${iterations} iterations, ${failed} failures, ${((Date.now() - started) / 1000).toFixed(0)} s, seeds up to ${nextSeed - 1}`)
    }
  }
  await Promise.all(Array.from({ length: args.jobs }, worker))
  console.log(`done: ${iterations} iterations in ${((Date.now() - started) / 60000).toFixed(1)} min, ${failed} failures; error codes seen ${JSON.stringify(codes)}`)
}

/** Runs `run` with a throwaway CA and server certificate for 127.0.0.1 in FUZZ_TLS_DIR. */
async function withCertificates(run) {
  const { makeCertificates } = require(path.join(ROOT, '__test__', 'helpers', 'certificates.js'))
  const certificates = makeCertificates()
  process.env.FUZZ_TLS_DIR = certificates.dir
  try {
    await run()
  } finally {
    certificates.remove()
  }
}

const args = parseArgs(process.argv.slice(2))
if (args.child) child(args.child, args.verbose)
else if (args.replay !== null) {
  withCertificates(async () => {
    const { results, failures } = await runChild([args.replay], args.verbose)
    console.log(JSON.stringify({ results, failures }, null, 2))
  })
} else withCertificates(() => parent(args))
