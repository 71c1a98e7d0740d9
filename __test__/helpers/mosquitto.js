'use strict'
// Starts Debian's mosquitto on free loopback ports (one websockets and one MQTT listener) for
// a test file, and stops it when the test file ends, pass or fail. For fault-injection tests the
// broker can also be restarted, killed and started again (on the same ports, with the same
// config), and frozen (SIGSTOP) and thawed (SIGCONT).
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { useForFile } = require('./pubsub.js')
const { makeCertificates } = require('./certificates.js')

const INSTALL_HINT = 'mosquitto is not installed: run `apt-get install -y mosquitto` (or `bash .ci/run`, which installs it)'

/** How long a restarted mosquitto may take to bind its ports again before start() gives up. */
const RESTART_DEADLINE_MS = 10_000
/** How long SIGTERM may take before kill()/restart()/stop() fall back to SIGKILL. */
const TERM_GRACE_MS = 5_000
const STOP_GRACE_MS = 3_000

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Whether process `pid` holds a listening TCP socket on each of `ports` (Linux: from /proc), or
 * null when that cannot be told. An accepted connection alone does not prove the port is
 * mosquitto's: while it restarts, another process may hold the port (mosquitto then logs
 * "Address already in use" and exits a moment later).
 */
function holdsListeners(pid, ports) {
  let inodes
  try {
    inodes = new Set()
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
        if (match) inodes.add(match[1])
      } catch {
        // the fd closed meanwhile
      }
    }
  } catch {
    return null
  }
  const listening = new Set()
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text
    try {
      text = fs.readFileSync(table, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/)
      if (fields.length < 10 || fields[3] !== '0A' || !inodes.has(fields[9])) continue // 0A: LISTEN
      listening.add(parseInt(fields[1].split(':')[1], 16))
    }
  }
  return ports.every((port) => listening.has(port))
}

/**
 * Resolves once the child `proc` listens on `ports`; rejects if that takes over `timeoutMs`.
 * Without /proc, it settles for the ports accepting connections with the process still alive
 * 150 ms later.
 */
async function waitForListeners(proc, ports, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  await Promise.all(ports.map((port) => waitForPort(port, timeoutMs)))
  for (;;) {
    const holds = holdsListeners(proc.pid, ports)
    if (holds === null) {
      await sleep(150)
      return
    }
    if (holds) return
    if (Date.now() > deadline) throw new Error(`mosquitto did not listen on ${ports.join(' and ')} within ${timeoutMs} ms (another process has one of them)`)
    await sleep(25)
  }
}

/**
 * Kills process `pid` if this process dies without stopping it: when ava's timeout ends a test
 * file's worker (SIGTERM), its `after.always` hooks do not run, and a plain child mosquitto
 * would outlive it, holding its ports. A detached `sh` waits on a pipe from this process and
 * kills `pid` at end-of-file (this process's exit, however it happens). Kill the returned
 * watchdog once `pid` has exited.
 */
function watchdog(pid) {
  try {
    const dog = spawn('/bin/sh', ['-c', `read _; kill -9 ${pid} 2>/dev/null`], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
    })
    dog.on('error', () => {})
    dog.stdin.on('error', () => {})
    dog.unref()
    dog.stdin.unref()
    return dog
  } catch {
    return null
  }
}

/**
 * Makes `dir` writable by the user mosquitto runs as. Run as root, mosquitto drops its
 * privileges to the `user` of its config (default `mosquitto`, or `nobody` when that user does
 * not exist) right after binding its listeners, so a root-owned persistence folder would make
 * every save fail ("Error saving in-memory database ... Permission denied", logged, while the
 * broker keeps running without persistence).
 */
function makeWritableForBroker(dir, lines) {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return // mosquitto keeps our user
  const userLine = [...lines].reverse().find((line) => /^\s*user\s+\S+/.test(line))
  const user = userLine ? userLine.trim().split(/\s+/)[1] : 'mosquitto'
  if (user === 'root') return
  try {
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim())
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim())
    fs.chownSync(dir, uid, gid)
    fs.chmodSync(dir, 0o700)
  } catch {
    fs.chmodSync(dir, 0o777) // no such user (mosquitto then runs as nobody): anyone may write
  }
}

/**
 * Starts mosquitto on two free loopback ports.
 *
 * Settings:
 * - `lines`: extra config lines, appended last (`{ lines: ['acl_file x', 'max_queued_messages 100000'] }`).
 * - `persistence: true`: `persistence true` in `<dir>/persistence/` (owned by the broker's user)
 *   with `autosave_interval 1`, so sessions, subscriptions and queued QoS 1/2 messages survive
 *   `restart()` (SIGTERM saves on exit; mosquitto autosaves only when more than a whole second
 *   has passed since the last save, so a SIGKILL loses up to about 2 s of changes).
 *
 * The broker:
 * - `wsUrl`, `tcpUrl`, `wsPort`, `tcpPort`, `dir`: fixed for its whole life, restarts included.
 * - `log()`: everything mosquitto printed, across restarts (each later start adds a
 *   `--- mosquitto started again (pid N) ---` line).
 * - `await restart({ signal = 'SIGTERM', downMs = 0 })`: ends the process with `signal` (SIGTERM is
 *   a clean shutdown that writes persistence, SIGKILL a crash; SIGTERM falls back to SIGKILL
 *   after 5 s), waits for its exit, waits `downMs`, starts a new one with the same config on the
 *   same ports, and resolves once the new process listens on both (checked in /proc: not just
 *   any process accepting on the port), with
 *   `{ exit: { code, signal }, stopMs, startMs }`. A paused broker is resumed so it can exit.
 * - `await kill(signal = 'SIGKILL')`: ends the process without starting another (resolves after its
 *   exit); `await start()`: starts it again on the same ports (no-op while it runs). Both retry
 *   for up to 10 s while a port is still taken.
 * - `pause()` / `resume()`: SIGSTOP / SIGCONT, a frozen broker (connections stay open, nothing answers).
 * - `pid()`: the current process id, or null while it is down; `running()`: whether it is up.
 * - `await stop()`: ends it (paused or not) and removes `dir`; idempotent; later `start()`s throw.
 *
 * Operations (restart, kill, start, stop) run one after another in call order. If this process
 * dies without stop() (ava's timeout kills a worker before its after.always hooks), a small
 * detached watchdog (`sh`) kills the broker.
 * `settings.bin` runs another mosquitto binary (the benchmark's rebuilt one) instead of Debian's.
 * @param {{ lines?: string[], persistence?: boolean, bin?: string }} [settings]
 * @returns {Promise<{ wsUrl: string, tcpUrl: string, wsPort: number, tcpPort: number, dir: string,
 *   log(): string, stop(): Promise<void>, restart(options?: { signal?: NodeJS.Signals, downMs?: number }):
 *   Promise<{ exit: { code: number | null, signal: string | null }, stopMs: number, startMs: number }>,
 *   kill(signal?: NodeJS.Signals): Promise<void>, start(): Promise<void>, pause(): void, resume(): void,
 *   pid(): number | null, running(): boolean }>}
 */
async function startMosquitto(settings = {}) {
  const bin = settings.bin || mosquittoPath()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-mosquitto-'))
  let wsPort
  let tcpPort
  const lines = settings.lines || []
  let persistenceLines = ['persistence false']
  if (settings.persistence) {
    const location = path.join(dir, 'persistence')
    fs.mkdirSync(location)
    makeWritableForBroker(location, lines)
    fs.chmodSync(dir, 0o711) // let the broker's user reach it (mkdtemp makes 0700)
    persistenceLines = ['persistence true', `persistence_location ${location}/`, 'autosave_interval 1']
  }
  const config = () => [
    'per_listener_settings false',
    'allow_anonymous true',
    ...persistenceLines,
    `listener ${wsPort} 127.0.0.1`,
    'protocol websockets',
    'socket_domain ipv4',
    `listener ${tcpPort} 127.0.0.1`,
    'protocol mqtt',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    ...lines,
  ].join('\n')
  const configPath = path.join(dir, 'mosquitto.conf')

  let output = ''
  let child = null // the current process, null while none runs
  let exited = null // resolves with { code, signal } when `child` exits
  let paused = false
  let stopped = false
  let starts = 0

  const isRunning = () => child !== null && child.exitCode === null && child.signalCode === null

  /** One attempt: spawns mosquitto and waits until both ports accept connections, or it exits. */
  async function spawnOnce() {
    const proc = spawn(bin, ['-c', configPath], { stdio: ['ignore', 'pipe', 'pipe'] })
    const dog = proc.pid ? watchdog(proc.pid) : null
    const procExited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        if (dog && dog.exitCode === null && dog.signalCode === null) dog.kill('SIGKILL')
        resolve({ code, signal })
      })
      proc.once('error', (error) => {
        output += `${error.message}\n`
        resolve({ code: null, signal: null, error })
      })
    })
    if (starts++ > 0) output += `--- mosquitto started again (pid ${proc.pid}) ---\n`
    proc.stdout.on('data', (d) => (output += d))
    proc.stderr.on('data', (d) => (output += d))
    child = proc
    exited = procExited
    paused = false
    let exitedEarly = false
    try {
      await Promise.race([
        // The listeners `lines` adds too: mosquitto opens them after the two above.
        waitForListeners(proc, [wsPort, tcpPort, ...lines.flatMap((line) => /^listener (\d+)/.exec(line)?.[1] ?? []).map(Number)], 10_000),
        procExited.then(({ code, signal }) => {
          exitedEarly = true
          throw new Error(`mosquitto exited (${code ?? signal}) at start:\n${output}`)
        }),
      ])
    } catch (error) {
      proc.kill('SIGKILL')
      await procExited
      error.exitedEarly = exitedEarly
      throw error
    }
  }

  /** Starts again on the same ports, retrying while mosquitto exits at once (a port still taken). */
  async function startAgain() {
    if (stopped) throw new Error('this mosquitto was stopped: start another with startMosquitto()')
    if (isRunning()) return
    const deadline = Date.now() + RESTART_DEADLINE_MS
    for (;;) {
      try {
        return await spawnOnce()
      } catch (error) {
        if (!error.exitedEarly || stopped || Date.now() > deadline) throw error
        await sleep(100)
        if (stopped) throw new Error('this mosquitto was stopped while it was starting again')
      }
    }
  }

  /** Ends the current process with `signal` and resolves with its exit, after it exited. */
  async function endProcess(signal, graceMs) {
    if (!isRunning()) return exited ? exited : { code: null, signal: null }
    const proc = child
    proc.kill(signal)
    // A stopped process only acts on a pending signal (SIGKILL aside) once it is continued.
    if (paused) proc.kill('SIGCONT')
    paused = false
    const timer = setTimeout(() => {
      if (proc.exitCode === null && proc.signalCode === null) {
        output += `--- mosquitto did not exit within ${graceMs} ms of ${signal}: SIGKILL ---\n`
        proc.kill('SIGKILL')
      }
    }, graceMs)
    const result = await exited
    clearTimeout(timer)
    return result
  }

  // Operations that start or end processes run one at a time, in call order.
  let queue = Promise.resolve()
  const serialize = (operation) => {
    const run = queue.then(operation)
    queue = run.catch(() => {})
    return run
  }

  // A free port can be taken by another process before mosquitto binds it: pick others. The TCP
  // listener says "Address already in use"; libwebsockets only "Unable to create websockets
  // listener".
  for (let attempt = 1; ; attempt++) {
    wsPort = await freePort()
    tcpPort = await freePort()
    fs.writeFileSync(configPath, `${config()}\n`)
    try {
      await spawnOnce()
      break
    } catch (error) {
      if (!error.exitedEarly || !/Address already in use|Unable to create websockets listener/.test(output) || attempt === 5) throw error
      output = ''
      starts = 0
    }
  }

  let stopping = null
  return {
    wsUrl: `ws://127.0.0.1:${wsPort}/mqtt`,
    tcpUrl: `mqtt://127.0.0.1:${tcpPort}`,
    wsPort,
    tcpPort,
    dir,
    log: () => output,
    pid: () => (isRunning() ? child.pid : null),
    running: isRunning,
    restart({ signal = 'SIGTERM', downMs = 0 } = {}) {
      return serialize(async () => {
        if (stopped) throw new Error('this mosquitto was stopped: start another with startMosquitto()')
        const began = Date.now()
        const exit = await endProcess(signal, TERM_GRACE_MS)
        const stopMs = Date.now() - began
        if (downMs > 0) await sleep(downMs)
        const startBegan = Date.now()
        await startAgain()
        return { exit: { code: exit.code, signal: exit.signal }, stopMs, startMs: Date.now() - startBegan }
      })
    },
    kill(signal = 'SIGKILL') {
      return serialize(async () => {
        await endProcess(signal, TERM_GRACE_MS)
      })
    },
    start() {
      return serialize(startAgain)
    },
    pause() {
      if (!isRunning()) throw new Error('mosquitto is not running')
      child.kill('SIGSTOP')
      paused = true
    },
    resume() {
      if (!isRunning()) throw new Error('mosquitto is not running')
      child.kill('SIGCONT')
      paused = false
    },
    stop() {
      if (!stopping) {
        stopped = true
        // Not queued behind a pending restart: end whatever runs now, then again once the queue
        // settles (a restart in progress may have started a new process meanwhile).
        stopping = (async () => {
          await endProcess('SIGTERM', STOP_GRACE_MS)
          await queue
          await endProcess('SIGTERM', STOP_GRACE_MS)
          fs.rmSync(dir, { recursive: true, force: true })
        })()
      }
      return stopping
    },
  }
}

/** Starts mosquitto for the whole test file: `const broker = useMosquitto(test, settings)`. */
function useMosquitto(test, settings) {
  return useForFile(test, () => startMosquitto(settings))
}

/**
 * Starts mosquitto for the whole test file with two TLS listeners, mqtts:// and wss://, serving
 * a certificate of a test CA (`certs`: see certificates.js), besides its plain ones.
 * `listenerLines(certs)` go in both (`(certs) => [\`cafile ${certs.caFile}\`, 'require_certificate true']`). The handle has the broker's
 * members, `certs`, `mqttsPort`, `wssPort` and the URLs `mqtts` and `wss` (on 127.0.0.1).
 */
function useTlsMosquitto(test, { listenerLines = () => [] } = {}) {
  return useForFile(test, async () => {
    const certs = makeCertificates()
    try {
      const [mqttsPort, wssPort] = [await freePort(), await freePort()]
      const files = [`certfile ${certs.certFile}`, `keyfile ${certs.keyFile}`, ...listenerLines(certs)]
      const broker = await startMosquitto({
        lines: [`listener ${mqttsPort} 127.0.0.1`, 'protocol mqtt', ...files, `listener ${wssPort} 127.0.0.1`, 'protocol websockets', 'socket_domain ipv4', ...files],
      })
      return {
        ...broker,
        certs,
        mqttsPort,
        wssPort,
        mqtts: `mqtts://127.0.0.1:${mqttsPort}`,
        wss: `wss://127.0.0.1:${wssPort}/mqtt`,
        async stop() {
          await broker.stop()
          certs.remove()
        },
      }
    } catch (error) {
      certs.remove()
      throw error
    }
  })
}

module.exports = { startMosquitto, useMosquitto, useTlsMosquitto, freePort }
