'use strict'
// Starts Debian's mosquitto on free loopback ports (one websockets and one MQTT listener) for
// a test file, and stops it when the test file ends, pass or fail.
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { useForFile } = require('./pubsub.js')

const INSTALL_HINT = 'mosquitto is not installed: run `apt-get install -y mosquitto` (or `bash .ci/run`, which installs it)'

function mosquittoPath() {
  for (const candidate of [process.env.MOSQUITTO_BIN, '/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) {
    if (candidate && fs.existsSync(candidate)) return candidate
  }
  try {
    return execFileSync('which', ['mosquitto'], { encoding: 'utf8' }).trim()
  } catch {
    throw new Error(INSTALL_HINT)
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

function waitForPort(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve()
      })
      socket.once('error', () => {
        socket.destroy()
        if (Date.now() > deadline) reject(new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms`))
        else setTimeout(attempt, 25)
      })
    }
    attempt()
  })
}

/**
 * @param {object} [settings] extra config lines (`{ lines: ['acl_file x'] }`)
 * @returns {Promise<{ wsUrl: string, tcpUrl: string, stop(): Promise<void>, log(): string }>}
 */
async function startMosquitto(settings = {}) {
  const bin = mosquittoPath()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-mosquitto-'))
  const wsPort = await freePort()
  const tcpPort = await freePort()
  const config = [
    'per_listener_settings false',
    'allow_anonymous true',
    'persistence false',
    `listener ${wsPort} 127.0.0.1`,
    'protocol websockets',
    'socket_domain ipv4',
    `listener ${tcpPort} 127.0.0.1`,
    'protocol mqtt',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    ...(settings.lines || []),
  ].join('\n')
  const configPath = path.join(dir, 'mosquitto.conf')
  fs.writeFileSync(configPath, `${config}\n`)
  let output = ''
  const child = spawn(bin, ['-c', configPath], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.on('data', (d) => (output += d))
  child.stderr.on('data', (d) => (output += d))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  try {
    await Promise.race([
      Promise.all([waitForPort(wsPort, 10_000), waitForPort(tcpPort, 10_000)]),
      exited.then((code) => {
        throw new Error(`mosquitto exited (${code}) at start:\n${output}`)
      }),
    ])
  } catch (error) {
    child.kill('SIGKILL')
    throw error
  }
  return {
    wsUrl: `ws://127.0.0.1:${wsPort}/mqtt`,
    tcpUrl: `mqtt://127.0.0.1:${tcpPort}`,
    dir,
    log: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 3_000)
        await exited
        clearTimeout(timer)
      }
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Starts mosquitto for the whole test file: `const broker = useMosquitto(test, settings)`. */
function useMosquitto(test, settings) {
  return useForFile(test, () => startMosquitto(settings))
}

module.exports = { startMosquitto, useMosquitto, freePort }
