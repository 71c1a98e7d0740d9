'use strict'
// A local stand-in for the AWS IoT Core device gateway's MQTT-over-WSS endpoint: an HTTPS server
// on a free loopback port that checks the SigV4 presigned query string of each WebSocket upgrade
// as AWS does (with AWS's own @smithy/signature-v4, not with the package's signer), answers
// `403 Forbidden` on any mismatch, and otherwise pipes the WebSocket's bytes to a plain MQTT
// broker (mosquitto's TCP listener). It also refuses chosen client ids after their CONNECT, as
// AWS IoT does when a policy denies iot:Connect: the connection just closes, without CONNACK;
// and, as AWS IoT does, closes the connection of a client whose SUBSCRIBE carries more than 8
// topic filters (AWS IoT Core's hard quota per SUBSCRIBE).
//
//   const gateway = await startIotGateway({ keys: { AKID: 'secret' }, broker: mosquitto.tcpUrl })
//   presign `gateway.url` for service `iotdevicegateway` and `gateway.region`, trust `gateway.ca`
//
// Secrets (secret keys, session tokens) are never logged nor put into a 403 body.
const fs = require('node:fs')
const path = require('node:path')
const os = require('node:os')
const https = require('node:https')
const net = require('node:net')
const crypto = require('node:crypto')
const { WebSocketServer } = require('ws')
const { SignatureV4 } = require('@smithy/signature-v4')
const { Hash } = require('@smithy/hash-node')
const { makeCertificates } = require('./certificates.js')
const { packetReader } = require('./mqtt-proxy.js')
const { useForFile } = require('./pubsub.js')

/** Key pairs made by `newKeys`, in this process: each test gets its own, so tests running side by
 * side never share credentials. */
let keyCount = 0

const SERVICE = 'iotdevicegateway'
const ALGORITHM = 'AWS4-HMAC-SHA256'
const MAX_EXPIRES = 604_800 // seconds: one week, SigV4's limit for presigned URLs
const MAX_FUTURE_MS = 5 * 60_000 // a signing date may be this far ahead of the gateway's clock
const MAX_CONNECT_BYTES = 256 * 1024 // give up on a client whose CONNECT is not parsed by then
const HIGH_WATER = 1024 * 1024 // bytes queued on one side before the other side is paused
const MAX_FILTERS_PER_SUBSCRIBE = 8
const SUBSCRIBE = 8 // the control packet type

// Query parameters that SignatureV4#presign writes itself (or that are not signed): everything
// else in the received query string is handed to it as the request's own query.
const PRESIGN_PARAMS = new Set([
  'X-Amz-Algorithm',
  'X-Amz-Credential',
  'X-Amz-Date',
  'X-Amz-Expires',
  'X-Amz-SignedHeaders',
  'X-Amz-Signature',
  'X-Amz-Security-Token',
])

// ------------------------------------------------------------------------------ query string

/**
 * Splits a raw query string into `[name, value]` pairs in received order, decoded the way a
 * server decodes a form-encoded query (`%XX` escapes, and `+` is a space). Throws on a
 * malformed escape.
 */
function parseQuery(rawQuery) {
  if (rawQuery === '') return []
  return rawQuery.split('&').map((part) => {
    const eq = part.indexOf('=')
    const name = eq === -1 ? part : part.slice(0, eq)
    const value = eq === -1 ? '' : part.slice(eq + 1)
    const decode = (text) => decodeURIComponent(text.replace(/\+/g, ' '))
    return [decode(name), decode(value)]
  })
}

/** `20240102T030405Z` → a Date, or null when it is not such a date-time. */
function parseAmzDate(text) {
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text || '')
  if (!match) return null
  const [year, month, day, hour, minute, second] = match.slice(1).map(Number)
  const date = new Date(Date.UTC(year, month - 1, day, hour, minute, second))
  const roundTrip = date.toISOString().replace(/[-:]|\.\d{3}/g, '')
  return roundTrip === text ? date : null
}

function safeEqual(a, b) {
  const left = Buffer.from(String(a))
  const right = Buffer.from(String(b))
  return left.length === right.length && crypto.timingSafeEqual(left, right)
}

// ---------------------------------------------------------------------------------- MQTT

/** Reads an MQTT variable byte integer at `offset`: `{ value, next }`, null if incomplete, or throws. */
function readVarInt(buffer, offset) {
  let value = 0
  for (let i = 0; i < 4; i++) {
    if (offset + i >= buffer.length) return null
    const byte = buffer[offset + i]
    value += (byte & 0x7f) * 128 ** i
    if ((byte & 0x80) === 0) return { value, next: offset + i + 1 }
  }
  throw new Error('malformed variable byte integer')
}

/** The number of topic filters in a whole MQTT 3.1.1 SUBSCRIBE packet. */
function subscribeFilterCount(packet) {
  const { next: variableHeader } = readVarInt(packet, 1)
  let count = 0
  // After the packet id: each filter as a length-prefixed string, then its QoS byte.
  for (let at = variableHeader + 2; at + 2 <= packet.length; at += 2 + packet.readUInt16BE(at) + 1) count++
  return count
}

/**
 * Reads the client id of the CONNECT packet at the start of `buffer` (MQTT 3.1, 3.1.1 or 5).
 * Returns the client id, null while more bytes are needed, or throws if the bytes are not a
 * CONNECT.
 */
function connectClientId(buffer) {
  if (buffer.length === 0) return null
  if (buffer[0] !== 0x10) throw new Error(`the first packet is not a CONNECT (first byte 0x${buffer[0].toString(16)})`)
  const remaining = readVarInt(buffer, 1)
  if (!remaining) return null
  const end = remaining.next + remaining.value
  let at = remaining.next
  const need = (n) => {
    if (at + n > end) throw new Error('truncated CONNECT packet')
    return at + n <= buffer.length
  }
  if (!need(2)) return null
  const nameLength = buffer.readUInt16BE(at)
  at += 2
  if (!need(nameLength + 4)) return null
  const protocolName = buffer.toString('utf8', at, at + nameLength)
  if (protocolName !== 'MQTT' && protocolName !== 'MQIsdp') throw new Error(`unknown protocol name in CONNECT: ${protocolName}`)
  at += nameLength
  const level = buffer[at]
  at += 4 // level, flags, keep alive
  if (level === 5) {
    const properties = readVarInt(buffer, at)
    if (!properties) return null
    at = properties.next + properties.value
  }
  if (!need(2)) return null
  const idLength = buffer.readUInt16BE(at)
  at += 2
  if (!need(idLength)) return null
  return buffer.toString('utf8', at, at + idLength)
}

/** `mqtt://host:port`, `tcp://host:port` or `{ host, port }` → `{ host, port }`. */
function brokerAddress(broker) {
  if (typeof broker === 'string') {
    const url = new URL(broker)
    return { host: url.hostname, port: Number(url.port || 1883) }
  }
  if (broker && broker.port) return { host: broker.host || '127.0.0.1', port: Number(broker.port) }
  throw new Error(`the IoT gateway has no usable broker address (got ${JSON.stringify(broker)})`)
}

// -------------------------------------------------------------------------------- gateway

/**
 * Starts the gateway. `broker` may also be a function returning either form; it is then called
 * for every accepted connection.
 * @param {{ region?: string, keys?: Record<string, string | { secretAccessKey: string,
 *   sessionToken?: string }>, broker: string | { host: string, port: number } | (() => any) }} options
 */
async function startIotGateway(options = {}) {
  const region = options.region || 'us-east-1'
  if (options.broker === undefined || options.broker === null) {
    throw new Error('startIotGateway needs `broker` (an mqtt:// URL, { host, port }, or a function returning one); with useIotGateway, call useMosquitto first')
  }
  if (typeof options.broker !== 'function') brokerAddress(options.broker) // fail early on a bad address
  const resolveBroker = () => brokerAddress(typeof options.broker === 'function' ? options.broker() : options.broker)

  /** @type {Map<string, { secretAccessKey: string, sessionToken?: string }>} */
  const keys = new Map()
  const refusedClientIds = new Set()
  const pendingSockets = new Set() // upgrade requests being verified
  const upgradedSockets = new Set() // every socket that asked for an upgrade and is still open
  const connections = new Set() // { ws, tcp }
  let stopping = null

  const certificates = makeCertificates()
  let server
  try {
    server = https.createServer({
      cert: fs.readFileSync(certificates.certFile),
      key: fs.readFileSync(certificates.keyFile),
    })
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (error) {
    certificates.remove()
    throw error
  }
  const port = server.address().port
  server.on('error', () => {})
  server.on('tlsClientError', () => {})
  server.on('request', (req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' })
    res.end('the IoT gateway only takes WebSocket upgrades on /mqtt\n')
  })

  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : false),
  })
  // ws's own handshake checks (Sec-WebSocket-Key and the like): record them, answer 400.
  wss.on('wsClientError', (error, socket, req) => {
    if (req.gatewayRecord) {
      req.gatewayRecord.status = 400
      req.gatewayRecord.reason = `invalid WebSocket handshake: ${error.message}`
    }
    rejectSocket(socket, 400, 'Bad Request', `invalid WebSocket handshake: ${error.message}`)
  })

  const gateway = {
    url: `wss://127.0.0.1:${port}/mqtt`,
    host: '127.0.0.1',
    port,
    region,
    ca: certificates.caPem,
    /** One record per upgrade attempt, in arrival order (status is null while being verified). */
    upgrades: [],
    /** One record per MQTT CONNECT seen: `{ clientId, accessKeyId, refused, at }` (`at`: Date.now()). */
    connects: [],
    /** One record per SUBSCRIBE seen: `{ clientId, filters }` (how many it carried). */
    subscribes: [],
    /** The gateway's clock is `Date.now() + clockSkewMs`. */
    clockSkewMs: 0,
    addKey(accessKeyId, secretAccessKey, { sessionToken } = {}) {
      keys.set(accessKeyId, { secretAccessKey, sessionToken })
    },
    /** Keys of their own, added: `{ accessKeyId, secretAccessKey }` (and `sessionToken` if given). */
    newKeys({ sessionToken } = {}) {
      keyCount += 1
      const credentials = {
        accessKeyId: `AKIDTEST${process.pid}X${keyCount}`,
        secretAccessKey: `secret/${keyCount}+${Math.random().toString(36).slice(2)}`,
      }
      if (sessionToken) credentials.sessionToken = sessionToken
      this.addKey(credentials.accessKeyId, credentials.secretAccessKey, { sessionToken })
      return credentials
    },
    removeKey(accessKeyId) {
      keys.delete(accessKeyId)
    },
    refuseClientId(clientId) {
      refusedClientIds.add(clientId)
    },
    /** Live piped connections. */
    get liveConnections() {
      return connections.size
    },
    dropAll() {
      for (const connection of connections) {
        connection.ws.terminate()
        if (connection.tcp) connection.tcp.destroy()
      }
      connections.clear()
    },
    stop() {
      if (!stopping) {
        stopping = (async () => {
          const closed = new Promise((resolve) => server.close(() => resolve()))
          gateway.dropAll()
          for (const socket of [...pendingSockets, ...upgradedSockets]) socket.destroy()
          pendingSockets.clear()
          upgradedSockets.clear()
          wss.close()
          server.closeAllConnections()
          await closed
          certificates.remove()
        })()
      }
      return stopping
    },
  }
  for (const [id, value] of Object.entries(options.keys || {})) {
    if (typeof value === 'string') gateway.addKey(id, value)
    else gateway.addKey(id, value.secretAccessKey, { sessionToken: value.sessionToken })
  }

  /** Checks the presigned query string of an upgrade; resolves with '' or the reason to refuse it. */
  async function verify(req, record, params) {
    const single = {}
    for (const [name, value] of params) {
      if (PRESIGN_PARAMS.has(name)) {
        if (name in single) return `duplicate ${name}`
        single[name] = value
      }
    }
    if (single['X-Amz-Algorithm'] !== ALGORITHM) return `X-Amz-Algorithm must be ${ALGORITHM}`

    const credential = single['X-Amz-Credential']
    if (credential === undefined) return 'missing X-Amz-Credential'
    const scope = credential.split('/')
    if (scope.length !== 5 || scope[4] !== 'aws4_request') return 'malformed X-Amz-Credential'
    const [accessKeyId, scopeDate, scopeRegion, scopeService] = scope
    record.accessKeyId = accessKeyId
    record.region = scopeRegion
    const key = keys.get(accessKeyId)
    if (!key) return `unknown access key id ${accessKeyId}`
    if (scopeService !== SERVICE) return `credential scope service ${scopeService} is not ${SERVICE}`
    if (scopeRegion !== region) return `credential scope region ${scopeRegion} is not ${region}`

    if (single['X-Amz-SignedHeaders'] !== 'host') return 'X-Amz-SignedHeaders must be host'

    const amzDate = single['X-Amz-Date']
    const signingDate = parseAmzDate(amzDate)
    if (!signingDate) return 'malformed or missing X-Amz-Date'
    if (scopeDate !== amzDate.slice(0, 8)) return 'credential scope date does not match X-Amz-Date'

    const expiresText = single['X-Amz-Expires']
    if (!/^[1-9][0-9]{0,6}$/.test(expiresText || '') || Number(expiresText) > MAX_EXPIRES) {
      return `X-Amz-Expires must be an integer from 1 to ${MAX_EXPIRES}`
    }
    const expiresIn = Number(expiresText)
    const now = Date.now() + gateway.clockSkewMs
    if (signingDate.getTime() - now > MAX_FUTURE_MS) return 'X-Amz-Date is more than 5 minutes in the future'
    if (now > signingDate.getTime() + expiresIn * 1000) return 'signature expired'

    const signature = single['X-Amz-Signature']
    if (signature === undefined) return 'missing X-Amz-Signature'
    const names = params.map(([name]) => name)
    if (record.sessionToken !== undefined && names.indexOf('X-Amz-Security-Token') < names.indexOf('X-Amz-Signature')) {
      return 'X-Amz-Security-Token must come after X-Amz-Signature'
    }
    if (key.sessionToken !== undefined) {
      if (record.sessionToken === undefined) return 'missing X-Amz-Security-Token'
      if (!safeEqual(record.sessionToken, key.sessionToken)) return 'X-Amz-Security-Token does not match'
    }

    const host = req.headers.host
    if (!host) return 'missing Host header'

    // The request's own query: every parameter presign does not write itself.
    const query = {}
    for (const [name, value] of params) {
      if (PRESIGN_PARAMS.has(name)) continue
      if (name in query) query[name] = [].concat(query[name], value)
      else query[name] = value
    }
    const signer = new SignatureV4({
      service: SERVICE,
      region,
      sha256: Hash.bind(null, 'sha256'),
      credentials: { accessKeyId, secretAccessKey: key.secretAccessKey }, // no session token: it is not signed
    })
    const presigned = await signer.presign(
      {
        method: 'GET',
        protocol: 'https:',
        hostname: host.replace(/:\d+$/, ''),
        path: '/mqtt',
        query,
        headers: { host },
      },
      { signingDate, expiresIn },
    )
    // presign rebuilt the same scope, date and expiry: anything else is a bug here, not the client's.
    for (const name of ['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders']) {
      if (presigned.query[name] !== single[name]) return `${name} is not in canonical form`
    }
    if (!safeEqual(presigned.query['X-Amz-Signature'], signature)) return 'signature does not match'

    const protocols = String(req.headers['sec-websocket-protocol'] || '')
      .split(',')
      .map((p) => p.trim())
    if (!protocols.includes('mqtt')) return 'Sec-WebSocket-Protocol must include mqtt'
    return ''
  }

  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {})
    upgradedSockets.add(socket)
    socket.once('close', () => upgradedSockets.delete(socket))
    const target = req.url || ''
    const q = target.indexOf('?')
    const path = q === -1 ? target : target.slice(0, q)
    const rawQuery = q === -1 ? '' : target.slice(q + 1)
    const record = {
      accessKeyId: undefined,
      region: undefined,
      status: null,
      reason: '',
      rawQuery,
      paramOrder: [],
      sessionToken: undefined,
      host: req.headers.host,
    }
    gateway.upgrades.push(record)
    req.gatewayRecord = record
    if (stopping) {
      record.status = 403
      record.reason = 'the gateway is stopping'
      return socket.destroy()
    }
    pendingSockets.add(socket)

    let params = null
    try {
      params = parseQuery(rawQuery)
      record.paramOrder = params.map(([name]) => name)
      const token = params.find(([name]) => name === 'X-Amz-Security-Token')
      if (token) record.sessionToken = token[1]
    } catch {
      params = null
    }
    const verified = path !== '/mqtt' ? Promise.resolve('path must be /mqtt') : params === null ? Promise.resolve('malformed query string') : verify(req, record, params)
    verified
      .catch((error) => `could not verify the signature: ${error && error.message ? error.message : error}`)
      .then((reason) => {
        pendingSockets.delete(socket)
        if (stopping || socket.destroyed) {
          record.status = record.status || 403
          record.reason = record.reason || reason || 'connection closed during verification'
          return socket.destroy()
        }
        if (reason) {
          record.status = 403
          record.reason = reason
          return rejectSocket(socket, 403, 'Forbidden', reason)
        }
        wss.handleUpgrade(req, socket, head, (ws) => {
          record.status = 101
          pipe(ws, record)
        })
      })
      .catch(() => socket.destroy())
  })

  /** Waits for the client's CONNECT, then pipes the WebSocket to a new TCP connection to the broker. */
  function pipe(ws, record) {
    const connection = { ws, tcp: null }
    connections.add(connection)
    let pending = Buffer.alloc(0)
    let closed = false
    /** Reads the client's packets after its CONNECT (set once that is read). */
    let readPackets = null

    const closeBoth = () => {
      if (closed) return
      closed = true
      connections.delete(connection)
      if (connection.tcp) {
        connection.tcp.end()
        setTimeout(() => connection.tcp.destroy(), 1_000).unref()
      }
      if (ws.readyState === ws.OPEN) {
        ws.close()
        setTimeout(() => ws.terminate(), 1_000).unref()
      }
    }
    const abort = () => {
      closed = true
      connections.delete(connection)
      ws.terminate()
      if (connection.tcp) connection.tcp.destroy()
    }
    ws.on('error', abort)
    ws.on('close', closeBoth)

    const openBroker = (firstBytes) => {
      let address
      try {
        address = resolveBroker()
      } catch {
        return abort()
      }
      const tcp = net.connect(address.port, address.host)
      connection.tcp = tcp
      tcp.setNoDelay(true)
      tcp.on('error', abort)
      tcp.on('close', closeBoth)
      let unacknowledged = 0
      tcp.on('data', (data) => {
        unacknowledged += data.length
        ws.send(data, { binary: true }, () => {
          unacknowledged -= data.length
          if (unacknowledged < HIGH_WATER && tcp.isPaused()) tcp.resume()
        })
        if (unacknowledged >= HIGH_WATER) tcp.pause()
      })
      tcp.on('drain', () => ws.isPaused && ws.resume())
      tcp.write(firstBytes)
    }

    ws.on('message', (data, isBinary) => {
      if (closed) return
      if (!isBinary) {
        // MQTT over WebSocket: control packets travel in binary frames only.
        closed = true
        connections.delete(connection)
        if (connection.tcp) connection.tcp.destroy()
        return ws.close(1003, 'MQTT needs binary frames')
      }
      if (connection.tcp) {
        readPackets(data)
        if (closed) return
        if (!connection.tcp.write(data)) ws.pause()
        return
      }
      pending = Buffer.concat([pending, data])
      let clientId
      try {
        clientId = connectClientId(pending)
      } catch {
        return abort()
      }
      if (clientId === null) {
        if (pending.length > MAX_CONNECT_BYTES) abort()
        return
      }
      const refused = refusedClientIds.has(clientId)
      gateway.connects.push({ clientId, accessKeyId: record.accessKeyId, refused, at: Date.now() })
      if (refused) return abort() // as AWS IoT does when the policy denies iot:Connect: no CONNACK
      readPackets = packetReader((packet) => {
        if (packet[0] >> 4 !== SUBSCRIBE) return
        const filters = subscribeFilterCount(packet)
        gateway.subscribes.push({ clientId, filters })
        if (filters > MAX_FILTERS_PER_SUBSCRIBE) abort() // as AWS IoT does: no SUBACK
      })
      const firstBytes = pending
      pending = null
      openBroker(firstBytes)
    })
  }

  return gateway
}

/** Answers an upgrade request with a plain HTTP error and closes the socket. */
function rejectSocket(socket, code, text, reason) {
  if (socket.destroyed) return
  const body = `${code} ${text}: ${reason}\n`
  socket.end(
    `HTTP/1.1 ${code} ${text}\r\n` +
      'Content-Type: text/plain; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Connection: close\r\n' +
      '\r\n' +
      body,
  )
  setTimeout(() => socket.destroy(), 1_000).unref()
}

/**
 * Starts a gateway for the whole test file and stops it after the file's tests, pass or fail:
 *
 *   const mosquitto = useMosquitto(test)
 *   const gateway = useIotGateway(test, () => ({ keys: { AKID: 'secret' }, broker: mosquitto.tcpUrl }))
 *
 * `optionsOrFunction` may be the options, or a function returning them (or a promise of them).
 * The gateway's before hook is a serial one, so it runs after every before hook registered
 * earlier in the file (useMosquitto's included) has finished: a function reading an earlier
 * fixture's handle sees it started. The returned handle forwards to the started gateway (its
 * properties, methods, and the `clockSkewMs` setter); reading it before the hooks ran throws.
 */
function useIotGateway(test, optionsOrFunction = {}) {
  const fixture = useForFile(test.serial, async () => {
    const options = typeof optionsOrFunction === 'function' ? await optionsOrFunction() : optionsOrFunction
    const gateway = await startIotGateway(options)
    return { gateway, stop: () => gateway.stop() }
  })
  const started = () => {
    if (!fixture.gateway) throw new Error('the IoT gateway is not started yet: use it inside a test, or in a hook registered after useIotGateway')
    return fixture.gateway
  }
  // Every property read, method call and assignment goes to the started gateway.
  return new Proxy(
    {},
    {
      get(_, name) {
        const value = started()[name]
        return typeof value === 'function' ? value.bind(started()) : value
      },
      set(_, name, value) {
        started()[name] = value
        return true
      },
    },
  )
}

let sampleKeys = 0
/**
 * The environment of a child process running a documented AWS IoT sample unchanged: a key pair
 * `gateway` knows, given through the AWS default chain (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY) in a home with no AWS files, and the gateway's test CA as the trust
 * store (SSL_CERT_FILE, read by the addon's TLS). `label` goes into the key id.
 */
function sampleEnvironment(t, gateway, label) {
  sampleKeys += 1
  const keys = { accessKeyId: `AKID${label}${process.pid}X${sampleKeys}`, secretAccessKey: `secret/${sampleKeys}+${Math.random().toString(36).slice(2)}` }
  gateway.addKey(keys.accessKeyId, keys.secretAccessKey)
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-sample-'))
  t.teardown(() => fs.rmSync(home, { recursive: true, force: true }))
  const caFile = path.join(home, 'iot-gateway-ca.pem')
  fs.writeFileSync(caFile, gateway.ca)
  const env = {
    HOME: home,
    AWS_CONFIG_FILE: path.join(home, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(home, 'credentials'),
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_ACCESS_KEY_ID: keys.accessKeyId,
    AWS_SECRET_ACCESS_KEY: keys.secretAccessKey,
    SSL_CERT_FILE: caFile,
  }
  return { env, keys }
}

module.exports = { startIotGateway, useIotGateway, SERVICE, sampleEnvironment }
