'use strict'
// A loopback TCP proxy that tests control, to break the network between a client and a broker:
// drop every connection, black-hole them (open but silent), half-close them, or refuse new ones.
//
//   const proxy = await startTcpProxy({ target: broker.tcpUrl })
//   new PubSub({ endpoint: proxy.url('mqtt') })  // or proxy.url('ws', '/mqtt') to a ws listener
//   proxy.drop()
//
// It forwards plain TCP bytes, so a ws:// client through it reaches mosquitto's websockets
// listener when the target is that listener. It listens on 127.0.0.1 only.
const net = require('node:net')

const DEFAULT_PORTS = { 'mqtt:': 1883, 'tcp:': 1883, 'mqtts:': 8883, 'ws:': 80, 'wss:': 443 }

/** `mqtt://host:port` (any scheme: tcp, ws, ...) or `{ host, port }` → `{ host, port }`. */
function targetAddress(target) {
  if (typeof target === 'string') {
    const url = new URL(target)
    const port = Number(url.port || DEFAULT_PORTS[url.protocol])
    if (!port) throw new Error(`the TCP proxy's target has no port: ${target}`)
    return { host: url.hostname.replace(/^\[|\]$/g, ''), port }
  }
  if (target && target.port) return { host: target.host || '127.0.0.1', port: Number(target.port) }
  throw new Error(`the TCP proxy has no usable target (got ${JSON.stringify(target)}): give an mqtt:// URL, { host, port }, or a function returning one`)
}

/**
 * Starts the proxy on a free port of 127.0.0.1 (or `listenPort`).
 *
 * `target`: where each accepted connection goes: a URL (`mqtt://127.0.0.1:1883`, `ws://…`; only
 * host and port count), `{ host, port }`, or a function returning either (or a promise of
 * either), called for every new connection (so it can follow a broker handle).
 *
 * The proxy:
 * - `port`; `url(scheme = 'mqtt', path = '')` → `'<scheme>://127.0.0.1:<port><path>'`.
 * - `connections`: live proxied connections (client sockets not yet closed); `accepted`: every
 *   connection accepted so far (refused ones included); `refused`: those closed by `refuse()`;
 *   `mode`: what happens to new connections: 'forward', 'blackhole' or 'refuse'.
 * - While a connection forwards, a FIN, a reset or a close on one side is passed on to the other
 *   (a target that cannot be reached resets the client's connection).
 * - `drop({ reset = false } = {})`: destroys both sides of every live connection now
 *   (`socket.destroy()`; with `reset: true`, `resetAndDestroy()`, an RST: ECONNRESET), and the
 *   target sides left open by blackhole()/halfClose() (see below). New connections are handled
 *   by the current mode (forwarded unless told otherwise).
 * - `blackhole()`: from now on no byte passes in either direction on the live connections: they
 *   stay open, what arrives is read and discarded (so writers do not block), and neither side
 *   learns anything: a client notices only through its own timeouts (MQTT keepalive: no
 *   PINGRESP). New connections are accepted and black-holed too (no target connection is made).
 * - `halfClose()`: ends the client side of every live connection (a FIN: the client reads
 *   end-of-stream) and stops forwarding on them; the client may still write (discarded).
 *   New connections are handled by the current mode.
 * - After blackhole() or halfClose(), each side of such a connection closes only when its own
 *   peer closes it: the client side when the client gives up (the connection then leaves
 *   `connections`), the target side when the target closes it (mosquitto: 1.5 × the client's
 *   keepalive), or at drop() or stop(). Like a real partition, the broker does not learn that
 *   the client left.
 * - `refuse({ reset = true } = {})`: from now on new connections are closed as soon as they are
 *   accepted (by default with an RST, so the client gets ECONNRESET, as near to a broker that is
 *   down as a listening port gets; `reset: false` closes with a FIN). Live connections are untouched.
 * - `heal()`: new connections are forwarded again. Connections black-holed or half-closed
 *   before stay dead (heal does not revive them): the client has to reconnect.
 * - `await stop()`: closes the server and destroys every connection; idempotent.
 * @param {{ target: string | { host?: string, port: number } | (() => any), listenPort?: number }} options
 */
async function startTcpProxy(options = {}) {
  if (options.target === undefined || options.target === null) {
    throw new Error('startTcpProxy needs `target` (an mqtt:// URL, { host, port }, or a function returning one); with useTcpProxy and useMosquitto, pass a function: () => ({ target: broker.tcpUrl })')
  }
  if (typeof options.target !== 'function') targetAddress(options.target) // fail early on a bad address
  const resolveTarget = async () => targetAddress(typeof options.target === 'function' ? await options.target() : options.target)

  /** @type {Set<{ client: net.Socket, upstream: net.Socket | null, state: 'forward' | 'blackhole' | 'halfclosed' | 'closed' }>} */
  const live = new Set()
  const sockets = new Set() // every socket the proxy opened or accepted and that is not closed
  let mode = 'forward'
  let refuseWithReset = true
  let accepted = 0
  let refused = 0
  let stopping = null

  const track = (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  }
  const destroy = (socket, reset = false) => {
    if (!socket || socket.destroyed) return
    if (reset && socket._handle && !socket.connecting) socket.resetAndDestroy()
    else socket.destroy()
  }
  /** Ends `socket` (a FIN after what it still has to send), and destroys it once that is sent. */
  const closeSoon = (socket) => {
    if (socket.destroyed) return
    socket.once('finish', () => socket.destroy())
    socket.end()
    setTimeout(() => socket.destroy(), 1_000).unref()
  }

  /** Stops forwarding on `conn`: both sockets are read and what they send is discarded. */
  const silence = (conn, state) => {
    conn.state = state
    conn.client.resume()
    if (conn.upstream) conn.upstream.resume()
  }

  /** Copies `from` → `to` while the connection forwards, with back-pressure. */
  const forward = (conn, from, to) => {
    from.on('data', (chunk) => {
      if (conn.state !== 'forward' || to.destroyed) return // black-holed or half-closed: discard
      if (!to.write(chunk)) {
        from.pause()
        to.once('drain', () => {
          if (!from.destroyed) from.resume()
        })
      }
    })
  }

  /**
   * What one side's FIN, error or close does to the other side: passed on while the connection
   * forwards; after blackhole() or halfClose() nothing is passed on (the client side closes when
   * the client closes it, the target side when the target closes it).
   */
  const link = (conn, socket, other) => {
    let reset = false
    socket.on('error', (error) => {
      reset = reset || error.code === 'ECONNRESET' || error.code === 'ECONNREFUSED' || error.code === 'EPIPE'
    })
    socket.on('end', () => {
      if (conn.state === 'forward') {
        if (other()) other().end()
      } else if (conn.state !== 'closed') destroy(socket) // a dead connection: nothing will be sent back
    })
    socket.once('close', () => {
      if (conn.state !== 'forward') return
      conn.state = 'closed'
      const peer = other()
      if (!peer) return
      if (reset || !socket.proxyConnected) destroy(peer, true) // a reset, or a target that is down
      else if (peer.connecting) destroy(peer)
      else closeSoon(peer)
    })
  }

  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    accepted++
    track(client)
    client.on('error', () => {})
    if (mode === 'refuse' || stopping) {
      refused++
      destroy(client, refuseWithReset)
      return
    }
    client.setNoDelay(true)
    client.proxyConnected = true
    const conn = { client, upstream: null, state: 'forward' }
    live.add(conn)
    client.once('close', () => live.delete(conn))
    link(conn, client, () => conn.upstream)
    if (mode === 'blackhole') {
      silence(conn, 'blackhole')
      return
    }
    resolveTarget().then(
      (address) => {
        if (conn.state !== 'forward' || stopping) return // closed or black-holed meanwhile: no target connection
        const upstream = net.connect({ host: address.host, port: address.port, allowHalfOpen: true })
        conn.upstream = upstream
        track(upstream)
        upstream.setNoDelay(true)
        upstream.pause()
        link(conn, upstream, () => client)
        forward(conn, client, upstream)
        forward(conn, upstream, client)
        upstream.once('connect', () => {
          upstream.proxyConnected = true
          if (conn.state === 'forward') {
            client.resume()
            upstream.resume()
          } else silence(conn, conn.state)
        })
      },
      () => {
        conn.state = 'closed'
        destroy(client, true) // the target function failed: refuse
      },
    )
  })
  server.on('error', () => {})
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.listenPort || 0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = server.address().port

  return {
    port,
    url: (scheme = 'mqtt', path = '') => `${scheme}://127.0.0.1:${port}${path}`,
    get connections() {
      return live.size
    },
    get accepted() {
      return accepted
    },
    get refused() {
      return refused
    },
    get mode() {
      return mode
    },
    drop({ reset = false } = {}) {
      for (const conn of live) conn.state = 'closed'
      // Every socket: the live connections' two sides, and the target sides that black-holed or
      // half-closed connections left open after their client went.
      for (const socket of [...sockets]) destroy(socket, reset)
    },
    blackhole() {
      mode = 'blackhole'
      for (const conn of live) if (conn.state === 'forward') silence(conn, 'blackhole')
    },
    halfClose() {
      for (const conn of live) {
        if (conn.state === 'closed') continue
        silence(conn, 'halfclosed')
        if (!conn.client.writableEnded) conn.client.end()
        if (conn.client.readableEnded) destroy(conn.client) // the client had already finished writing
      }
    },
    refuse({ reset = true } = {}) {
      mode = 'refuse'
      refuseWithReset = reset
    },
    heal() {
      mode = 'forward'
    },
    stop() {
      if (!stopping) {
        stopping = new Promise((resolve) => {
          server.close(() => resolve())
          for (const conn of live) conn.state = 'closed'
          for (const socket of [...sockets]) socket.destroy()
        })
      }
      return stopping
    },
  }
}

module.exports = { startTcpProxy }
