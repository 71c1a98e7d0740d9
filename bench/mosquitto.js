'use strict'
// The benchmark's broker: mosquitto rebuilt from Debian's own sources against a static
// libwebsockets with LWS_WITH_EXTERNAL_POLL=ON. Debian's packaged mosquitto links a libwebsockets
// built without it and stalls websockets subscribers under bursts (upstream mosquitto #2252; see
// shared/STACK.md), which would make the benchmark measure the broker, not the clients.
//
//   const { ensureMosquitto, startBenchBroker } = require('./mosquitto')
//   const broker = await startBenchBroker()   // { wsUrl, tcpUrl, stop() }
//
// `node bench/mosquitto.js` builds (or reuses) the binary, checks it does not stall and says so.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
// The test suite's broker starter, pointed at the rebuilt binary.
const { startMosquitto } = require('../__test__/helpers/mosquitto.js')

const CACHE = path.join(__dirname, '.cache')
const BIN = path.join(CACHE, 'mosquitto')
const INFO = path.join(CACHE, 'mosquitto.json')
const BUILD_DIR = path.join(CACHE, 'mosquitto-build')
const BUILD_LOG = path.join(CACHE, 'mosquitto-build.log')
const PACKAGED = '/usr/sbin/mosquitto'
const DEFAULT_CEILING = path.join(__dirname, 'ceiling', 'target', 'release', 'bench-ceiling')
const ARCHIVE_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg'

let chosen = null

function log(message) {
  process.stderr.write(`[bench/mosquitto] ${message}\n`)
}

function loudWarning(lines) {
  const bar = '!'.repeat(78)
  process.stderr.write(`\n${bar}\n${lines.map((l) => `!! ${l}`).join('\n')}\n${bar}\n\n`)
}

function have(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0
}

/** Runs a command, appending its output to the build log; throws with the log's tail on failure. */
function run(command, args, options = {}) {
  fs.appendFileSync(BUILD_LOG, `\n$ ${command} ${args.join(' ')}${options.cwd ? `   (in ${options.cwd})` : ''}\n`)
  const out = fs.openSync(BUILD_LOG, 'a')
  const result = spawnSync(command, args, {
    stdio: ['ignore', out, out],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', ...(options.env || {}) },
    cwd: options.cwd,
  })
  fs.closeSync(out)
  if (result.status !== 0) {
    const tail = fs.readFileSync(BUILD_LOG, 'utf8').split('\n').slice(-25).join('\n')
    throw new Error(`${command} ${args.join(' ')} failed (exit ${result.status}${result.error ? `, ${result.error.message}` : ''}):\n${tail}`)
  }
}

/** build-essential, cmake and dpkg-dev (for `apt-get source`), installed with apt-get if missing. */
function ensureBuildTools() {
  const missing = []
  if (!have('cc') || !have('make')) missing.push('build-essential')
  if (!have('cmake')) missing.push('cmake')
  if (!have('dpkg-source')) missing.push('dpkg-dev')
  if (missing.length === 0) return
  log(`installing ${missing.join(', ')} with apt-get`)
  run('apt-get', ['update'])
  run('apt-get', ['install', '-y', '--no-install-recommends', ...missing])
}

/**
 * The suites the system's own apt sources name (bookworm, bookworm-updates, bookworm-security...),
 * as `deb-src` lines: the sources of exactly the packages this system installs.
 */
function debSrcLines() {
  const lines = new Set()
  const add = (uri, suite, components) => {
    if (!/^https?:\/\/(deb|security)\.debian\.org\//.test(uri)) return
    const signedBy = fs.existsSync(ARCHIVE_KEYRING) ? `[signed-by=${ARCHIVE_KEYRING}] ` : ''
    lines.add(`deb-src ${signedBy}${uri} ${suite} ${components}`)
  }
  const files = []
  if (fs.existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list')
  if (fs.existsSync('/etc/apt/sources.list.d')) {
    for (const f of fs.readdirSync('/etc/apt/sources.list.d')) {
      if (f.endsWith('.list') || f.endsWith('.sources')) files.push(path.join('/etc/apt/sources.list.d', f))
    }
  }
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8')
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name) => (stanza.match(new RegExp(`^${name}:\\s*(.+)$`, 'mi')) || [])[1]
        const uris = field('URIs')
        const suites = field('Suites')
        const components = field('Components') || 'main'
        if (!uris || !suites || /^enabled:\s*no/im.test(stanza)) continue
        for (const uri of uris.split(/\s+/)) for (const suite of suites.split(/\s+/)) add(uri, suite, components)
      }
    } else {
      for (const line of text.split('\n')) {
        const m = line.match(/^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$/)
        if (m) add(m[1], m[2], m[3].trim())
      }
    }
  }
  if (lines.size === 0) {
    const codename = (fs.readFileSync('/etc/os-release', 'utf8').match(/^VERSION_CODENAME=(.+)$/m) || [])[1] || 'bookworm'
    add('http://deb.debian.org/debian', codename, 'main')
    add('http://deb.debian.org/debian', `${codename}-updates`, 'main')
    add('http://deb.debian.org/debian-security', `${codename}-security`, 'main')
  }
  return [...lines]
}

/** `apt-get source` of Debian's packages through a private apt state: the system's is not touched. */
function fetchSources(work) {
  const apt = path.join(CACHE, 'apt')
  for (const dir of ['state/lists/partial', 'cache/archives/partial', 'etc/sources.list.d', 'etc/preferences.d']) {
    fs.mkdirSync(path.join(apt, dir), { recursive: true })
  }
  const sourcelist = path.join(apt, 'etc/sources.list')
  fs.writeFileSync(sourcelist, `${debSrcLines().join('\n')}\n`)
  const aptOptions = [
    '-o', `Dir::Etc::sourcelist=${sourcelist}`,
    '-o', `Dir::Etc::sourceparts=${path.join(apt, 'etc/sources.list.d')}`,
    '-o', `Dir::Etc::preferencesparts=${path.join(apt, 'etc/preferences.d')}`,
    '-o', `Dir::State=${path.join(apt, 'state')}`,
    '-o', `Dir::State::status=/var/lib/dpkg/status`,
    '-o', `Dir::Cache=${path.join(apt, 'cache')}`,
    '-o', 'APT::Sandbox::User=root',
  ]
  run('apt-get', [...aptOptions, 'update'])
  run('apt-get', [...aptOptions, 'source', 'libwebsockets', 'mosquitto'], { cwd: work })
}

function sourceDir(work, prefix) {
  const dir = fs.readdirSync(work).find((d) => d.startsWith(prefix) && fs.statSync(path.join(work, d)).isDirectory())
  if (!dir) throw new Error(`no ${prefix}* source folder in ${work}`)
  return path.join(work, dir)
}

/** Builds the binary into BIN; returns what was built. Throws on any failure. */
function build() {
  const started = Date.now()
  fs.mkdirSync(CACHE, { recursive: true })
  fs.writeFileSync(BUILD_LOG, `mosquitto rebuild, ${new Date().toISOString()}\n`)
  ensureBuildTools()
  fs.rmSync(BUILD_DIR, { recursive: true, force: true })
  fs.mkdirSync(BUILD_DIR, { recursive: true })
  log('fetching Debian sources of libwebsockets and mosquitto (apt-get source, private apt state)')
  fetchSources(BUILD_DIR)
  const jobs = String(Math.max(1, os.cpus().length))

  const lwsSrc = sourceDir(BUILD_DIR, 'libwebsockets-')
  const lwsPrefix = path.join(BUILD_DIR, 'lws-prefix')
  log(`building ${path.basename(lwsSrc)} (static, LWS_WITH_EXTERNAL_POLL=ON, LWS_WITH_SSL=OFF)`)
  run('cmake', [
    '-S', lwsSrc, '-B', path.join(lwsSrc, 'build-bench'),
    '-DCMAKE_BUILD_TYPE=Release',
    `-DCMAKE_INSTALL_PREFIX=${lwsPrefix}`,
    '-DCMAKE_INSTALL_LIBDIR=lib',
    '-DLWS_WITH_EXTERNAL_POLL=ON',
    '-DLWS_WITH_SSL=OFF',
    '-DLWS_WITH_STATIC=ON',
    '-DLWS_WITH_SHARED=OFF',
    '-DLWS_WITHOUT_TESTAPPS=ON',
    '-DLWS_WITH_MINIMAL_EXAMPLES=OFF',
    '-DLWS_WITH_LIBUV=OFF',
    '-DLWS_WITH_LIBEV=OFF',
    '-DLWS_WITH_LIBEVENT=OFF',
    '-DLWS_WITH_GLIB=OFF',
    '-DLWS_IPV6=ON',
    '-DLWS_WITH_ZLIB=OFF',
    '-DLWS_WITH_ZIP_FOPS=OFF',
    '-DDISABLE_WERROR=ON',
  ])
  run('cmake', ['--build', path.join(lwsSrc, 'build-bench'), '--parallel', jobs])
  run('cmake', ['--install', path.join(lwsSrc, 'build-bench')])

  const mosqSrc = sourceDir(BUILD_DIR, 'mosquitto-')
  log(`building ${path.basename(mosqSrc)} against it`)
  run('make', [
    '-C', 'src', `-j${jobs}`,
    'WITH_WEBSOCKETS=yes', 'WITH_TLS=no', 'WITH_CJSON=no', 'WITH_DOCS=no', 'WITH_SRV=no',
    'WITH_SYSTEMD=no', 'WITH_WRAP=no',
    `CPPFLAGS=-I${path.join(lwsPrefix, 'include')}`,
    `LDFLAGS=-L${path.join(lwsPrefix, 'lib')} -pthread`,
    `LIBS=-lm -ldl`,
  ], { cwd: mosqSrc })
  const built = path.join(mosqSrc, 'src', 'mosquitto')
  const ldd = spawnSync('ldd', [built], { encoding: 'utf8' }).stdout || ''
  if (/libwebsockets/.test(ldd)) throw new Error(`the rebuilt mosquitto links a shared libwebsockets:\n${ldd}`)
  fs.copyFileSync(built, `${BIN}.tmp`)
  fs.chmodSync(`${BIN}.tmp`, 0o755)
  fs.renameSync(`${BIN}.tmp`, BIN)
  const info = {
    libwebsockets: path.basename(lwsSrc),
    mosquitto: path.basename(mosqSrc),
    buildSec: Math.round((Date.now() - started) / 100) / 10,
    builtAt: new Date().toISOString(),
  }
  fs.rmSync(BUILD_DIR, { recursive: true, force: true })
  return info
}

/** Starts `bin` on free loopback ports, set up for the benchmark. */
async function startBroker(bin) {
  const broker = await startMosquitto({
    bin,
    // mosquitto's default of 20 QoS 1 messages in flight per client would cap every client alike.
    lines: ['max_queued_messages 1000000', 'max_inflight_messages 0', 'set_tcp_nodelay true'],
  })
  broker.bin = bin
  return broker
}

/**
 * The stall check of STACK.md, as MQTT.js sees it: 5,000 × 4 KiB QoS 0 over websockets from an
 * MQTT.js publisher to an MQTT.js subscriber (one process). Returns { delivered, n, seconds }.
 * Note: on this machine MQTT.js alone does not set off the stall of Debian's packaged mosquitto
 * (it delivers all in about a second); the rumqttc ceiling program does (below).
 */
async function stallCheckMqttjs(bin, { n = 5000, size = 4096, timeoutMs = 20000 } = {}) {
  const mqtt = require('mqtt')
  const broker = await startBroker(bin)
  const topic = 'stall/check'
  const connect = () =>
    new Promise((resolve, reject) => {
      const c = mqtt.connect(broker.wsUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      c.once('connect', () => resolve(c))
      c.once('error', reject)
    })
  let sub
  let pub
  try {
    sub = await connect()
    pub = await connect()
    await sub.subscribeAsync(topic, { qos: 0 })
    let delivered = 0
    const started = Date.now()
    const done = new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      sub.on('message', () => {
        if (++delivered === n) {
          clearTimeout(timer)
          resolve()
        }
      })
    })
    const payload = Buffer.alloc(size, 'x')
    for (let i = 0; i < n; i++) pub.publish(topic, payload, { qos: 0 })
    await done
    return { delivered, n, seconds: (Date.now() - started) / 1000 }
  } finally {
    if (sub) sub.end(true)
    if (pub) pub.end(true)
    await broker.stop()
  }
}

/**
 * The same burst through the rumqttc ceiling program (bench/ceiling): one rumqttc publisher and
 * one subscriber. This is what sets the stall off here: on Debian's packaged mosquitto about
 * 1,500 of the 5,000 arrive, then about 26 a second.
 */
async function stallCheckCeiling(bin, ceilingBin, { n = 5000, size = 4096 } = {}) {
  const broker = await startBroker(bin)
  try {
    const spec = JSON.stringify({ url: broker.wsUrl, qos: 0, size, n, mode: 'burst', timeoutSec: 10 })
    const result = spawnSync(ceilingBin, [spec], { encoding: 'utf8', timeout: 30000 })
    const line = (result.stdout || '').trim().split('\n').pop()
    const r = JSON.parse(line)
    return { delivered: n - r.lost, n, seconds: Math.round(r.wallSec * 1000) / 1000 }
  } finally {
    await broker.stop()
  }
}

const passed = (check) => Boolean(check) && check.delivered === check.n && check.seconds < 5

/** Runs the checks not yet passed; returns info with `checks` and `verified`. */
async function verify(bin, info, ceilingBin) {
  info.checks = info.checks || {}
  if (!passed(info.checks.mqttjs)) info.checks.mqttjs = await stallCheckMqttjs(bin)
  if (ceilingBin && fs.existsSync(ceilingBin) && !passed(info.checks.ceiling)) {
    info.checks.ceiling = await stallCheckCeiling(bin, ceilingBin)
  }
  info.verified = passed(info.checks.mqttjs) && (info.checks.ceiling === undefined || passed(info.checks.ceiling))
  return info
}

function readInfo() {
  try {
    return JSON.parse(fs.readFileSync(INFO, 'utf8'))
  } catch {
    return null
  }
}

/**
 * Makes sure a mosquitto that does not stall is there (built once, cached in bench/.cache) and
 * returns { bin, rebuilt: boolean, info, warning }. With `ceilingBin` (the built ceiling program)
 * the stall check also runs through rumqttc. Falls back to Debian's packaged binary, with a loud
 * warning, if the rebuild fails or still stalls.
 */
async function ensureMosquitto({ ceilingBin = DEFAULT_CEILING } = {}) {
  if (chosen) return chosen
  let info = readInfo()
  let failure = null
  try {
    if (!fs.existsSync(BIN) || !info) {
      log(`no cached rebuilt mosquitto in ${BIN}: building it (log: ${BUILD_LOG})`)
      info = build()
      log(`built in ${info.buildSec} s (${info.mosquitto}, ${info.libwebsockets})`)
    }
    const before = JSON.stringify(info)
    info = await verify(BIN, info, ceilingBin)
    if (JSON.stringify(info) !== before) {
      fs.writeFileSync(INFO, `${JSON.stringify(info, null, 2)}\n`)
      const { mqttjs, ceiling } = info.checks
      log(`stall check, 5,000 × 4 KiB QoS 0 over ws: MQTT.js ${mqttjs.delivered}/${mqttjs.n} in ${mqttjs.seconds} s` +
        (ceiling ? `, rumqttc ${ceiling.delivered}/${ceiling.n} in ${ceiling.seconds} s` : ' (rumqttc check not run: the ceiling program is not built yet)'))
    }
    if (!info.verified) throw new Error(`the rebuilt mosquitto stalls: ${JSON.stringify(info.checks)}`)
  } catch (error) {
    failure = error
  }
  if (!failure) {
    chosen = { bin: BIN, rebuilt: true, info, warning: null }
    return chosen
  }
  if (!fs.existsSync(PACKAGED)) {
    throw new Error(`Could not build mosquitto (${failure.message}) and ${PACKAGED} is missing: apt-get install -y mosquitto`)
  }
  const warning = 'Using Debian\'s packaged mosquitto, which STALLS websockets subscribers under bursts: the ws results measure the broker, not the clients.'
  loudWarning([
    'Could not build a mosquitto without the websockets stall:',
    ...String(failure.message).split('\n').slice(0, 12),
    '',
    warning,
    `Build log: ${BUILD_LOG}`,
  ])
  chosen = { bin: PACKAGED, rebuilt: false, info: null, warning, failure: failure.message }
  return chosen
}

/** Starts the benchmark's broker on free loopback ports: { wsUrl, tcpUrl, stop() }. */
async function startBenchBroker() {
  const { bin } = await ensureMosquitto()
  return startBroker(bin)
}

module.exports = { ensureMosquitto, startBenchBroker, startBroker, stallCheckMqttjs, stallCheckCeiling, BIN, PACKAGED }

if (require.main === module) {
  // node bench/mosquitto.js [--compare-packaged]
  ;(async () => {
    const m = await ensureMosquitto()
    console.log(JSON.stringify({ bin: m.bin, rebuilt: m.rebuilt, info: m.info, warning: m.warning }, null, 2))
    if (process.argv.includes('--compare-packaged')) {
      console.log('packaged, MQTT.js:', JSON.stringify(await stallCheckMqttjs(PACKAGED)))
      if (fs.existsSync(DEFAULT_CEILING)) console.log('packaged, rumqttc:', JSON.stringify(await stallCheckCeiling(PACKAGED, DEFAULT_CEILING)))
    }
  })().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
