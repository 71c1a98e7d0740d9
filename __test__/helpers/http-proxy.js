'use strict'
// A loopback HTTP proxy, as a corporate network has in its only way out: it opens CONNECT
// tunnels to loopback targets (anything else is refused with 403), asks for Basic credentials
// (407) when given some to expect, or answers every CONNECT with a chosen refusal. With `tls`
// (`{ cert, key }`, PEM) it is an https:// proxy.
//
//   const proxy = await startHttpProxy(t, { credentials: 'user:password' })
//   new PubSub({ endpoint: broker.wsUrl, proxy: proxy.url })
//
// `requests` records each CONNECT: `{ target: 'host:port', authorization }`; `accepted` counts
// the connections made to it. Stopped, with every tunnel, when the test ends.
const http = require('node:http')
const https = require('node:https')
const net = require('node:net')

const LOOPBACK = new Set(['127.0.0.1', 'localhost'])

/**
 * @param {import('ava').ExecutionContext} t
 * @param {{ credentials?: string, refuseWith?: number, tls?: { cert: string, key: string } }} [options]
 */
async function startHttpProxy(t, { credentials, refuseWith, tls } = {}) {
  const requests = []
  const sockets = new Set()
  const track = (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
  }
  const refuseRequests = (req, res) => {
    res.writeHead(405, { Connection: 'close' })
    res.end('this proxy takes CONNECT only\n')
  }
  const server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, refuseRequests) : http.createServer(refuseRequests)
  server.on('tlsClientError', () => {})
  const proxy = { url: '', port: 0, requests, accepted: 0 }
  server.on('connection', () => proxy.accepted++)
  server.on('connect', (req, client, head) => {
    track(client)
    const record = { target: req.url, authorization: req.headers['proxy-authorization'] ?? null }
    requests.push(record)
    const answer = (status, reason, extra = '') => client.end(`HTTP/1.1 ${status} ${reason}\r\n${extra}Content-Length: 0\r\n\r\n`)
    if (credentials !== undefined && record.authorization !== `Basic ${Buffer.from(credentials).toString('base64')}`) {
      return answer(407, 'Proxy Authentication Required', 'Proxy-Authenticate: Basic realm="test"\r\n')
    }
    if (refuseWith !== undefined) return answer(refuseWith, 'Refused')
    const colon = req.url.lastIndexOf(':')
    const host = req.url.slice(0, colon)
    const port = Number(req.url.slice(colon + 1))
    if (!LOOPBACK.has(host) || !port) return answer(403, 'Forbidden')
    const upstream = net.connect(port, host)
    track(upstream)
    upstream.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length > 0) upstream.write(head)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    upstream.once('error', () => {
      if (!client.destroyed) answer(502, 'Bad Gateway')
    })
    client.once('close', () => upstream.destroy())
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  )
  proxy.port = server.address().port
  proxy.url = `${tls ? 'https' : 'http'}://127.0.0.1:${proxy.port}`
  return proxy
}

module.exports = { startHttpProxy }
