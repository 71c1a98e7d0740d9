'use strict'
// A broker that breaks MQTT or WebSocket rules, or a server that is no broker, gets a clear
// error or is read leniently: never a promise that hangs, memory it did not send, a false
// diagnosis, or messages lost in silence. The server is scripted (helpers/fake-broker.js),
// since no real broker misbehaves on demand.
const test = require('ava')
const { PubSub } = require('../mqtt.js')
const { startFakeBroker, packets, CONNECT, SUBSCRIBE } = require('./helpers/fake-broker.js')
const { recordEvents, waitFor, runScript, fakeServer } = require('./helpers/pubsub.js')

const FAST = { minDelayMs: 20, maxDelayMs: 50 }

function newPubSub(t, options) {
  const pubsub = new PubSub(options)
  t.teardown(() => pubsub.close())
  return pubsub
}

/** How `promise` settled within `ms`: `{ value }`, `{ error }`, or `'pending'`. */
function settledWithin(promise, ms) {
  return Promise.race([
    promise.then((value) => ({ value }), (error) => ({ error })),
    new Promise((resolve) => setTimeout(resolve, ms, 'pending')),
  ])
}

test('a SUBACK with fewer return codes than filters refuses the filters left without one', async (t) => {
  const broker = await startFakeBroker(t, {
    onPacket: (packet, connection) => (packet.type === SUBSCRIBE ? connection.send(packets.suback(packet.id, [1])) : undefined),
  })
  const pubsub = newPubSub(t, { endpoint: broker.url })
  const errors = []
  const subscription = pubsub.subscribe(['granted', 'forgotten'], { qos: 1 }).subscribe({ error: (e) => errors.push(e) })
  const settled = await settledWithin(subscription.ready, 3_000)
  t.is(settled.error?.code, 'ERR_SUBSCRIBE_REFUSED')
  t.regex(settled.error.message, /'forgotten'/)
  t.deepEqual(errors.map((e) => e.code), ['ERR_SUBSCRIBE_REFUSED'])
})

test('a SUBACK return code MQTT 3.1.1 does not define is a refusal, not a reconnect loop', async (t) => {
  for (const code of [3, 0x81, 0x87]) {
    const broker = await startFakeBroker(t, {
      onPacket: (packet, connection) => (packet.type === SUBSCRIBE ? connection.send(packets.suback(packet.id, [code])) : undefined),
    })
    const pubsub = newPubSub(t, { endpoint: broker.url, reconnect: FAST })
    const disruptions = recordEvents(pubsub, 'connectionDisrupted')
    const settled = await settledWithin(pubsub.subscribe('t').subscribe({ error: () => {} }).ready, 3_000)
    t.is(settled.error?.code, 'ERR_SUBSCRIBE_REFUSED', `code ${code}`)
    t.is(broker.connections, 1, `code ${code}: one connection`)
    t.deepEqual(disruptions, [])
  }
})

/** A WebSocket frame header (binary, final) announcing `length` bytes of payload. */
function frameHeader(length) {
  const header = Buffer.alloc(10)
  header[0] = 0x82
  header[1] = 127 // a 64-bit length follows
  header.writeBigUInt64BE(BigInt(length), 2)
  return header
}

// What a server can send to announce 256 MiB it never sends: the MQTT header of a PUBLISH (5
// bytes), and a WebSocket frame header (10 bytes). In a child process, so that the RSS
// measured is this case's alone.
for (const [announcement, send] of [
  ['an MQTT packet header', (connection) => connection.send(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]))],
  ['a WebSocket frame header', (connection) => connection.socket._socket.write(Buffer.concat([frameHeader(268_435_460), Buffer.from([0x30, 0xff])]))],
]) {
  test(`${announcement} announcing 256 MiB does not make the client hold 256 MiB`, async (t) => {
    const broker = await startFakeBroker(t, {
      onPacket(packet, connection) {
        if (packet.type !== CONNECT) return undefined
        connection.send(packets.connack())
        setTimeout(() => send(connection), 20)
        return true
      },
    })
    const run = runScript(
      t,
      `const { PubSub } = require(process.env.MQTT_JS)
       const before = process.memoryUsage().rss
       const clients = [1, 2, 3].map(() => new PubSub({ endpoint: process.env.BROKER, reconnect: false }))
       for (const client of clients) client.subscribe('t').subscribe({ error: () => {} })
       setTimeout(() => {
         console.log(JSON.stringify({ grewMb: (process.memoryUsage().rss - before) / 2 ** 20 }))
         Promise.all(clients.map((c) => c.close()))
       }, 500)`,
      { BROKER: broker.url },
    )
    const { code } = await run.exited
    t.is(code, 0, run.stderr)
    const { grewMb } = JSON.parse(run.stdout)
    // The MQTT header used to cost about 268 MB per connection, zero-filled by the reader.
    t.true(grewMb < 40, `RSS grew by ${grewMb.toFixed(1)} MB for three connections`)
  })
}

// What the broker sends after each SUBACK, which the client must refuse, dropping the
// connection each time: never taken for a client id takeover or a refused subscription.
for (const [what, frame, reason] of [
  ['a text frame (a WebSocket protocol violation)', () => 'not MQTT', /the server sent what WebSocket rules or limits refuse: .*Text message/],
  [
    'a WebSocket message over the 16 MiB frame limit',
    () => packets.publish('t', Buffer.alloc(20 * 2 ** 20, 7)),
    // The message's size (payload, topic and headers) and what to do instead.
    /the server sent a WebSocket message of 20971528 bytes, over the 16777216 this client accepts: an MQTT message that large cannot be received over WebSocket \(mqtt:\/\/ and mqtts:\/\/ take up to 256 MiB\)/,
  ],
]) {
  test(`${what} is reported as such, never taken for a takeover or a refusal`, async (t) => {
    const broker = await startFakeBroker(t, {
      onPacket(packet, connection) {
        if (packet.type !== SUBSCRIBE) return undefined
        connection.send(packets.suback(packet.id, [0]))
        connection.send(frame())
        return true
      },
    })
    const pubsub = newPubSub(t, { endpoint: broker.url, reconnect: FAST })
    const disruptions = recordEvents(pubsub, 'connectionDisrupted')
    const errors = []
    pubsub.subscribe('t').subscribe({ error: (e) => errors.push(e) })
    // More than the three closes in a row that mean a takeover.
    await waitFor(() => disruptions.length >= 5, 10_000, 'five lost connections')
    t.deepEqual(errors, [], 'neither a takeover nor a refused subscription')
    t.is(disruptions[0].error.code, 'ERR_CONNECTION')
    t.regex(disruptions[0].error.message, reason)
  })
}

// What a server sends in answer to CONNECT that the client cannot read: the server did not close
// the connection (the client did), so the error must not say it did.
for (const [what, bytes, reason] of [
  ['a CONNACK with a return code MQTT 3.1.1 does not define', Buffer.from([0x20, 2, 0, 0x53]), /answered CONNECT with what is not MQTT 3\.1\.1 \(Invalid Connect return code: 83\): is it an MQTT 3\.1\.1 broker\?/],
  ['a remaining length in five bytes', Buffer.from([0x20, 0xff, 0xff, 0xff, 0xff, 0x7f]), /answered CONNECT with what is not MQTT 3\.1\.1 \(Malformed remaining length\)/],
  ['a PUBLISH whose topic is not UTF-8', Buffer.from([0x30, 5, 0, 2, 0xff, 0xfe, 0x31]), /answered CONNECT with what is not MQTT 3\.1\.1 \(Topic is not UTF-8\)/],
  ['a text frame', 'not MQTT', /^Connection to ws:\/\/127\.0\.0\.1:\d+\/mqtt failed: the server sent what WebSocket rules or limits refuse: .*Text message/],
]) {
  test(`${what} in answer to CONNECT is reported as such, not as the server closing the connection`, async (t) => {
    const broker = await startFakeBroker(t, { onPacket: (packet, connection) => (packet.type === CONNECT ? connection.send(bytes) : undefined) })
    const pubsub = newPubSub(t, { endpoint: broker.url, reconnect: false })
    const error = await t.throwsAsync(pubsub.publish('t', 'x'))
    t.is(error.code, 'ERR_CONNECTION')
    t.regex(error.message, reason)
    t.notRegex(error.message, /closed the connection/)
  })
}

test('an answer to the WebSocket upgrade over 64 KiB is reported as such, not as "Attack attempt detected"', async (t) => {
  const oversized = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Padding: ${'a'.repeat(100_000)}\r\n\r\n`
  const server = new URL(await fakeServer(t, oversized))
  const pubsub = newPubSub(t, { endpoint: `ws://${server.host}/mqtt`, reconnect: false })
  const error = await t.throwsAsync(pubsub.publish('t', 'x'))
  t.is(error.code, 'ERR_CONNECTION')
  t.regex(error.message, /^Connection to ws:\/\/127\.0\.0\.1:\d+\/mqtt failed: the server's answer to the WebSocket upgrade was over 64 KiB/)
})

// rumqttc reports what the socket did while a packet was being read as a (de)serialization error.
for (const [what, end, reason] of [
  ['closes the connection in the middle of a packet', (socket) => socket.close(), /was lost: the server closed the connection in the middle of a packet$/],
  ['resets the connection', (socket) => socket._socket.resetAndDestroy(), /was lost: the server or the network reset it \(Connection reset by peer \(os error 104\)\)$/],
]) {
  test(`a server that ${what} is said to, not reported as a (de)serialization error`, async (t) => {
    const broker = await startFakeBroker(t, {
      onPacket: (packet, connection) => {
        if (packet.type !== SUBSCRIBE) return undefined
        connection.send(Buffer.from([0x30, 20, 0, 1, 0x74])) // a PUBLISH of 20 bytes, 3 of them
        setTimeout(() => end(connection.socket), 50)
        return true
      },
    })
    const pubsub = newPubSub(t, { endpoint: broker.url, reconnect: false })
    const error = await new Promise((resolve) => pubsub.subscribe('t').subscribe({ error: resolve }))
    t.is(error.code, 'ERR_CONNECTION')
    t.regex(error.message, reason)
    t.notRegex(error.message, /serialization/)
  })
}

// An mqtt:// URL pointed at a WebSocket port: the server answers CONNECT with HTTP ("HTTP/1.1 400
// …"), whose 'H' read as a PUBACK ("answered CONNECT with a PUBACK packet instead of CONNACK"),
// or, the answer being shorter than that PUBACK's length, as a close in the middle of a packet.
// None of the answer is quoted: a server that echoes sends back our CONNECT, password and all.
const PASSWORD = 'echoed-Pa55w0rd'
for (const [what, answer] of [
  ['a web server answering 400', () => 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'],
  ['a web server echoing the request', (data) => Buffer.concat([Buffer.from(`HTTP/1.1 400 Bad Request\r\nContent-Length: ${data.length}\r\n\r\n`), data])],
]) {
  test(`mqtt:// pointed at ${what} is told the server answered with HTTP: use ws://`, async (t) => {
    const server = new URL(await fakeServer(t, answer))
    const pubsub = newPubSub(t, { endpoint: `mqtt://${server.host}`, username: 'u', password: PASSWORD, reconnect: false, connectTimeout: 3_000 })
    const error = await t.throwsAsync(pubsub.publish('t', 'x'))
    t.is(error.code, 'ERR_CONNECTION')
    t.is(
      error.message,
      `mqtt://${server.host} answered CONNECT with HTTP ('HTTP/…'), not MQTT: it is probably a WebSocket port; use ws://${server.host}/mqtt ` +
        '(with the path the server takes MQTT on, /mqtt on most brokers)',
    )
    t.notRegex(error.message, /Bad Request|PUBACK|echoed/)
  })
}

test('connectTimeout is honoured to the millisecond, not rounded down to whole seconds', async (t) => {
  // Accepts the WebSocket and never answers CONNECT.
  const broker = await startFakeBroker(t, { onPacket: () => true })
  const pubsub = newPubSub(t, { endpoint: broker.url, connectTimeout: 1_600, reconnect: false })
  const started = Date.now()
  const error = await t.throwsAsync(pubsub.publish('t', 'x'))
  const waited = Date.now() - started
  t.is(error.code, 'ERR_CONNECT_TIMEOUT')
  t.true(waited >= 1_550 && waited < 2_500, `rejected after ${waited} ms`)
})

test('a clean session is subscribed again after a reconnect even if CONNACK claims a session was kept', async (t) => {
  const subscribes = []
  const broker = await startFakeBroker(t, {
    onPacket(packet, connection) {
      if (packet.type === CONNECT) {
        // MQTT-3.2.2-1 says "not present" to a clean session; this broker says otherwise.
        connection.send(packets.connack({ sessionPresent: connection.number > 1 }))
        return true
      }
      if (packet.type !== SUBSCRIBE) return undefined
      subscribes.push({ connection: connection.number, filters: packet.filters })
      connection.send(packets.suback(packet.id, [0]))
      if (connection.number === 1) setTimeout(() => connection.socket.terminate(), 50)
      else connection.send(packets.publish('t', '"after the reconnect"'))
      return true
    },
  })
  const pubsub = newPubSub(t, { endpoint: broker.url, reconnect: FAST })
  const message = await new Promise((resolve, reject) => {
    setTimeout(reject, 5_000, new Error('no message after the reconnect'))
    pubsub.subscribe('t').subscribe({ next: resolve })
  })
  t.is(message, 'after the reconnect')
  t.deepEqual(subscribes, [
    { connection: 1, filters: ['t'] },
    { connection: 2, filters: ['t'] },
  ])
})
