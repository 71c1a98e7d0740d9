'use strict'
// A throwaway certificate authority, a server certificate for 127.0.0.1 and a client
// certificate (for mutual TLS) it issued, made with the openssl command line, for TLS tests
// (mqtts:// and wss://).
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

function openssl(args, cwd) {
  try {
    execFileSync('openssl', args, { cwd, stdio: 'pipe' })
  } catch (error) {
    if (error.code === 'ENOENT') throw new Error('openssl is not installed: run `apt-get install -y openssl`')
    throw new Error(`openssl ${args.join(' ')} failed: ${error.stderr}`)
  }
}

/**
 * @returns {{ dir: string, caFile: string, caPem: string, certFile: string, keyFile: string,
 *   clientCertPem: string, clientKeyPem: string, remove(): void }}
 */
function makeCertificates() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-tls-'))
  // mosquitto drops root privileges before reading certificates: let its user read them.
  fs.chmodSync(dir, 0o755)
  fs.writeFileSync(
    path.join(dir, 'server.ext'),
    ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth', 'subjectAltName=IP:127.0.0.1'].join('\n'),
  )
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=native-pubsub test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir)
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'], dir)
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext'], dir)
  fs.writeFileSync(path.join(dir, 'client.ext'), ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature', 'extendedKeyUsage=clientAuth'].join('\n'))
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=native-pubsub test client'], dir)
  openssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', '-days', '2', '-extfile', 'client.ext'], dir)
  for (const file of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, file), 0o644)
  return {
    dir,
    caFile: path.join(dir, 'ca.crt'),
    caPem: fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8'),
    certFile: path.join(dir, 'server.crt'),
    keyFile: path.join(dir, 'server.key'),
    clientCertPem: fs.readFileSync(path.join(dir, 'client.crt'), 'utf8'),
    clientKeyPem: fs.readFileSync(path.join(dir, 'client.key'), 'utf8'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  }
}

/**
 * A self-signed certificate made the usual way (the one-line openssl recipe of many tutorials),
 * for localhost and 127.0.0.1. openssl makes it a CA certificate (basicConstraints CA:TRUE),
 * which TLS refuses as a server's own certificate.
 * @returns {{ dir: string, certPem: string, keyPem: string, remove(): void }}
 */
function makeSelfSignedCertificate() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-self-signed-'))
  try {
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'self.key', '-out', 'self.crt', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], dir)
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true })
    throw error
  }
  return {
    dir,
    certPem: fs.readFileSync(path.join(dir, 'self.crt'), 'utf8'),
    keyPem: fs.readFileSync(path.join(dir, 'self.key'), 'utf8'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  }
}

module.exports = { makeCertificates, makeSelfSignedCertificate }
