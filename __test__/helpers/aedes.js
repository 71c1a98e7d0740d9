'use strict'
// Starts an in-process aedes broker behind a WebSocket server on a free 127.0.0.1 port, so a
// test can watch what reaches the broker (its 'subscribe', 'unsubscribe', 'publish', 'client'
// events) and plug in authorization hooks. `useAedes(test)` runs one broker per test file.
const http = require('node:http')
const { WebSocketServer, createWebSocketStream } = require('ws')
const { useForFile } = require('./pubsub.js')

/**
 * @param {object} [options] passed to `Aedes.createBroker`, e.g. `authenticate`,
 *   `authorizeSubscribe`, `authorizePublish` hooks
 * @returns {Promise<{ wsUrl: string, aedes: import('aedes').Aedes, port: number,
 *   waitFor(event: string, predicate?: (...args) => boolean, timeoutMs?: number): Promise<any[]>,
 *   stop(): Promise<void> }>}
 */
async function startAedes(options = {}) {
  // aedes v1 is an ES module; a dynamic import works from CommonJS on every Node we support.
  const { Aedes } = await import('aedes')
  const aedes = await Aedes.createBroker({ ...options })
  // Concurrent tests each listen for the 'subscribe'/'unsubscribe' events they care about.
  aedes.setMaxListeners(0)
  const httpServer = http.createServer((req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' })
    res.end('WebSocket only')
  })
  const wss = new WebSocketServer({ server: httpServer })
  wss.on('connection', (websocket, req) => {
    const stream = createWebSocketStream(websocket)
    // A client vanishing mid-write is not a test failure; aedes reports it as a client error.
    stream.on('error', () => {})
    aedes.handle(stream, req)
  })
  await new Promise((resolve, reject) => {
    httpServer.once('error', reject)
    httpServer.listen(0, '127.0.0.1', () => {
      httpServer.off('error', reject)
      resolve()
    })
  })
  const { port } = httpServer.address()

  /** Resolves with the event's arguments the first time `predicate(...args)` holds. */
  function waitFor(event, predicate = () => true, timeoutMs = 5_000) {
    return new Promise((resolve, reject) => {
      const listener = (...args) => {
        if (!predicate(...args)) return
        clearTimeout(timer)
        aedes.off(event, listener)
        resolve(args)
      }
      const timer = setTimeout(() => {
        aedes.off(event, listener)
        reject(new Error(`aedes did not emit a matching '${event}' within ${timeoutMs} ms`))
      }, timeoutMs)
      aedes.on(event, listener)
    })
  }

  let stopped = null
  function stop() {
    if (!stopped) {
      stopped = (async () => {
        for (const client of wss.clients) client.terminate()
        await new Promise((resolve) => wss.close(() => resolve()))
        httpServer.closeAllConnections()
        await new Promise((resolve) => httpServer.close(() => resolve()))
        await new Promise((resolve) => aedes.close(() => resolve()))
      })()
    }
    return stopped
  }

  return { wsUrl: `ws://127.0.0.1:${port}/mqtt`, port, aedes, waitFor, stop }
}

/** Starts aedes for the whole test file: `const broker = useAedes(test, options)`. */
function useAedes(test, options) {
  return useForFile(test, () => startAedes(options))
}

module.exports = { startAedes, useAedes }
