'use strict'
// npm run bench [-- --quick] [-- --cases qos0-64,paced-4k] [-- --reps 3] [-- --clients ours,mqtt.js] [-- --warmup 5000]
//
// Side by side over MQTT 3.1.1 on WebSockets, through a local mosquitto (bench/mosquitto.js):
//   ours          native-pubsub/mqtt as a user calls it (JSON objects, promises, observers)
//   mqtt.js       `mqtt` from npm, the same JSON work in JS
//   rust ceiling  rumqttc with no JS and no JSON (bench/ceiling): what the broker and socket allow
// One process per case run, a fresh broker per run, repetitions interleaved (rep 1: every case
// and client, then rep 2, ...) so that machine noise hits every client alike. Prints a table and
// writes bench/results/latest.json (every run, the medians and the machine).

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const { isStale } = require('./stale')
const { ensureMosquitto, startBroker } = require('./mosquitto')
const { judgeTargets, targetLines } = require('./targets')

const ROOT = path.join(__dirname, '..')
const ADDON = path.join(ROOT, 'native-pubsub.linux-x64-gnu.node')
const CEILING_DIR = path.join(__dirname, 'ceiling')
const CEILING_BIN = path.join(CEILING_DIR, 'target', 'release', 'bench-ceiling')
const RESULTS = path.join(__dirname, 'results', 'latest.json')
const DEBUG_ADDON_BYTES = 40 * 1024 * 1024

const CASES = [
  { id: 'qos0-64', qos: 0, size: 64, n: 50000, mode: 'burst' },
  { id: 'qos0-4k', qos: 0, size: 4096, n: 50000, mode: 'burst' },
  { id: 'qos1-64', qos: 1, size: 64, n: 20000, mode: 'burst' },
  { id: 'qos1-4k', qos: 1, size: 4096, n: 20000, mode: 'burst' },
  { id: 'paced-64', qos: 0, size: 64, n: 2000, mode: 'paced', rate: 1000 },
  { id: 'paced-4k', qos: 0, size: 4096, n: 2000, mode: 'paced', rate: 1000 },
]

const CLIENTS = [
  { name: 'ours', command: () => [process.execPath, [path.join(__dirname, 'clients', 'native.js')]] },
  { name: 'mqtt.js', command: () => [process.execPath, [path.join(__dirname, 'clients', 'mqttjs.js')]] },
  { name: 'rust ceiling', command: () => [CEILING_BIN, []] },
]

function log(message) {
  process.stderr.write(`${message}\n`)
}

function parseOptions(argv) {
  const options = { quick: false, cases: null, reps: null, clients: null, warmup: 0 }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = () => {
      const eq = arg.indexOf('=')
      return eq >= 0 ? arg.slice(eq + 1) : argv[++i]
    }
    if (arg === '--quick') options.quick = true
    else if (arg.startsWith('--cases')) options.cases = value().split(',').filter(Boolean)
    else if (arg.startsWith('--reps')) options.reps = Number(value())
    else if (arg.startsWith('--clients')) options.clients = value().split(',').filter(Boolean)
    else if (arg.startsWith('--warmup')) options.warmup = Number(value())
    else if (arg === '--help' || arg === '-h') {
      log('usage: npm run bench -- [--quick] [--cases qos0-64,qos0-4k,qos1-64,qos1-4k,paced-64,paced-4k] [--reps N] [--clients ours,mqtt.js,rust ceiling] [--warmup MESSAGES]')
      process.exit(0)
    } else throw new Error(`unknown option ${arg} (try --help)`)
  }
  if (!Number.isInteger(options.warmup) || options.warmup < 0) throw new Error('--warmup takes a number of messages (0 or more)')
  return options
}

/** 'release' or 'debug', from the addon's size (debug ≈ 150 MB, release ≈ 16 MB). */
function addonBuild() {
  if (!fs.existsSync(ADDON)) return { kind: 'missing', bytes: 0, mtime: null }
  const { size, mtime } = fs.statSync(ADDON)
  return { kind: size > DEBUG_ADDON_BYTES ? 'debug' : 'release', bytes: size, mtime: mtime.toISOString() }
}

/** Builds bench/ceiling (release, its own target dir) when the binary is missing or stale. */
function ensureCeiling() {
  const sources = [
    path.join(CEILING_DIR, 'src'),
    path.join(CEILING_DIR, 'Cargo.toml'),
    path.join(CEILING_DIR, 'Cargo.lock'),
    // the patched rumqttc it shares with the addon
    path.join(ROOT, 'vendor', 'rumqttc'),
  ]
  if (!isStale(CEILING_BIN, sources)) return
  log('building the rust ceiling program (cargo build --release --manifest-path bench/ceiling/Cargo.toml)...')
  const started = Date.now()
  const result = spawnSync('cargo', ['build', '--release', '--manifest-path', path.join(CEILING_DIR, 'Cargo.toml')], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: path.join(CEILING_DIR, 'target') },
  })
  if (result.status !== 0) throw new Error(`building bench/ceiling failed (exit ${result.status})`)
  // cargo leaves the binary's mtime alone when nothing changed: mark it fresh.
  const t = new Date()
  fs.utimesSync(CEILING_BIN, t, t)
  log(`built in ${((Date.now() - started) / 1000).toFixed(1)} s`)
}

function firstLine(command, args) {
  const r = spawnSync(command, args, { encoding: 'utf8' })
  return r.status === 0 ? (r.stdout || '').trim().split('\n')[0] : null
}

function machine(addon, broker) {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8')
  const model = (cpuinfo.match(/^model name\s*:\s*(.+)$/m) || [])[1] || os.cpus()[0]?.model || 'unknown'
  const count = (cpuinfo.match(/^processor\s*:/gm) || []).length || os.cpus().length
  const memKb = Number((fs.readFileSync('/proc/meminfo', 'utf8').match(/^MemTotal:\s+(\d+)/m) || [])[1] || 0)
  const osRelease = fs.existsSync('/etc/os-release')
    ? (fs.readFileSync('/etc/os-release', 'utf8').match(/^PRETTY_NAME="?([^"\n]+)"?/m) || [])[1]
    : os.type()
  return {
    cpu: model,
    cpus: count,
    ramGB: Math.round((memKb / 1048576) * 10) / 10,
    os: `${osRelease}, Linux ${os.release()}`,
    node: process.version,
    rustc: firstLine('rustc', ['--version']),
    addonBuild: addon.kind,
    addonBytes: addon.bytes,
    addonBuiltAt: addon.mtime,
    mqttJs: require('mqtt/package.json').version,
    broker: broker.rebuilt
      ? `${broker.info.mosquitto} rebuilt with static ${broker.info.libwebsockets} (LWS_WITH_EXTERNAL_POLL)`
      : `Debian's packaged mosquitto (${broker.bin}) — stalls websockets under bursts`,
  }
}

/** Runs one case with one client against a fresh broker; resolves to its result (or failure). */
async function runOne(client, spec, rep, warmup) {
  const broker = await startBroker((await ensureMosquitto()).bin)
  const input = { url: broker.wsUrl, qos: spec.qos, size: spec.size, n: spec.n, mode: spec.mode, rate: spec.rate || 1000, timeoutSec: 60, warmup }
  const [command, args] = client.command()
  const started = Date.now()
  try {
    const { code, signal, stdout, stderr, timedOut } = await new Promise((resolve) => {
      const child = spawn(command, [...args, JSON.stringify(input)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d) => (stdout += d))
      child.stderr.on('data', (d) => {
        stderr += d
        if (stderr.length > 100000) stderr = stderr.slice(-50000)
      })
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        child.kill('SIGKILL')
      }, 150000)
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        resolve({ code, signal, stdout, stderr, timedOut })
      })
    })
    const line = stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop()
    const base = { case: spec.id, client: client.name, rep, runSec: (Date.now() - started) / 1000 }
    const stderrTail = stderr.trim() ? stderr.trim().split('\n').slice(-8).join('\n') : undefined
    if (code !== 0 || !line) {
      return { ...base, failed: true, exitCode: code, signal, timedOut, stderrTail, brokerLog: broker.log().slice(-2000) || undefined }
    }
    return { ...base, ...JSON.parse(line), stderrTail, brokerLog: broker.log().trim() ? broker.log().slice(-2000) : undefined }
  } finally {
    await broker.stop()
  }
}

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return null
  const mid = Math.floor(v.length / 2)
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}

function spread(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x))
  return v.length ? { min: Math.min(...v), max: Math.max(...v) } : null
}

const FIELDS = ['deliveredPerSec', 'acceptedPerSec', 'p50Ms', 'p99Ms', 'rssConnectedMB', 'rssPeakMB', 'cpuSec', 'wallSec']

function summarize(runs, cases, clients) {
  const summary = {}
  for (const spec of cases) {
    summary[spec.id] = {}
    for (const client of clients) {
      const all = runs.filter((r) => r.case === spec.id && r.client === client.name)
      const ok = all.filter((r) => !r.failed)
      const s = { runs: all.length, failed: all.length - ok.length }
      for (const f of FIELDS) s[f] = { median: median(ok.map((r) => r[f])), ...(spread(ok.map((r) => r[f])) || {}) }
      s.lost = ok.reduce((a, r) => a + (r.lost || 0), 0)
      s.duplicated = ok.reduce((a, r) => a + (r.duplicated || 0), 0)
      s.errors = ok.reduce((a, r) => a + (r.errors || 0), 0)
      summary[spec.id][client.name] = s
    }
    const ours = summary[spec.id].ours?.deliveredPerSec.median
    const mqttjs = summary[spec.id]['mqtt.js']?.deliveredPerSec.median
    const ceiling = summary[spec.id]['rust ceiling']?.deliveredPerSec.median
    summary[spec.id].ratios = {
      oursOverMqttJs: ours && mqttjs ? ours / mqttjs : null,
      oursOverCeiling: ours && ceiling ? ours / ceiling : null,
    }
  }
  return summary
}

// ---- the table ---------------------------------------------------------------------------------

const int = (x) => (x === null || x === undefined ? '–' : Math.round(x).toLocaleString('en-US'))
const dec = (x, d = 1) => (x === null || x === undefined ? '–' : x.toFixed(d))
const withSpread = (s, fmt) => (s.median === null ? '–' : s.min === s.max ? fmt(s.median) : `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`)

function caseTitle(spec) {
  const size = spec.size >= 1024 ? `${spec.size / 1024} KiB` : `${spec.size} B`
  return spec.mode === 'paced'
    ? `${spec.id}: QoS ${spec.qos}, ${size}, ${spec.n.toLocaleString('en-US')} msgs paced at ${spec.rate}/s`
    : `${spec.id}: QoS ${spec.qos}, ${size}, ${spec.n.toLocaleString('en-US')} msgs burst`
}

function table(summary, cases, clients, reps) {
  const lines = []
  lines.push(`Medians of ${reps} run${reps === 1 ? '' : 's'}, (min–max) when they differ; lost/dup/errors summed over the runs.`)
  lines.push('')
  lines.push('| case | client | delivered msg/s | accepted msg/s | lost/dup/err | p50 / p99 ms | RSS connected / peak MB | CPU s | vs MQTT.js | vs ceiling |')
  lines.push('|---|---|---|---|---|---|---|---|---|---|')
  for (const spec of cases) {
    const s = summary[spec.id]
    for (const client of clients) {
      const c = s[client.name]
      if (!c || c.runs === 0) continue
      const isOurs = client.name === 'ours'
      // Delivered msg/s ratios; a paced run's rate is fixed, so there they say nothing.
      const ratio = (x, pct) =>
        !isOurs ? '' : spec.mode === 'paced' || x === null ? '–' : pct ? `${Math.round(x * 100)} %` : `${x.toFixed(2)}×`
      lines.push(
        [
          '',
          caseTitle(spec).split(':')[0],
          client.name + (c.failed ? ` (${c.failed} failed)` : ''),
          withSpread(c.deliveredPerSec, int),
          withSpread(c.acceptedPerSec, int),
          `${c.lost}/${c.duplicated}/${c.errors}`,
          spec.mode === 'paced' ? `${withSpread(c.p50Ms, (x) => dec(x, 3))} / ${withSpread(c.p99Ms, (x) => dec(x, 3))}` : '',
          `${withSpread(c.rssConnectedMB, dec)} / ${withSpread(c.rssPeakMB, dec)}`,
          withSpread(c.cpuSec, (x) => dec(x, 2)),
          ratio(s.ratios.oursOverMqttJs, false),
          ratio(s.ratios.oursOverCeiling, true),
          '',
        ].join(' | ').trim(),
      )
    }
  }
  lines.push('')
  for (const spec of cases) lines.push(`- ${caseTitle(spec)}`)
  return lines.join('\n')
}

// ---- main --------------------------------------------------------------------------------------

async function main() {
  const options = parseOptions(process.argv.slice(2))
  const benchStarted = Date.now()
  const addon = addonBuild()
  log(`addon: ${path.basename(ADDON)}, ${(addon.bytes / 1048576).toFixed(1)} MB → ${addon.kind} build`)
  if (addon.kind === 'missing') throw new Error(`${ADDON} is missing: build the addon first (npm run build)`)
  if (addon.kind === 'debug') {
    const bar = '!'.repeat(78)
    log(`\n${bar}\n!! The addon is a DEBUG build (${(addon.bytes / 1048576).toFixed(0)} MB > 40 MB): 'ours' is measured unoptimised.\n!! Release builds are what count: run \`npm run build\`, then the benchmark again.\n${bar}\n`)
  }

  ensureCeiling()
  const broker = await ensureMosquitto({ ceilingBin: CEILING_BIN })
  log(`broker: ${broker.bin}${broker.rebuilt ? ' (rebuilt, no websockets stall)' : ''}`)

  let cases = CASES
  if (options.cases) {
    const unknown = options.cases.filter((id) => !CASES.some((c) => c.id === id))
    if (unknown.length) throw new Error(`unknown case(s) ${unknown.join(', ')}; known: ${CASES.map((c) => c.id).join(', ')}`)
    cases = CASES.filter((c) => options.cases.includes(c.id))
  }
  if (options.quick) cases = cases.map((c) => ({ ...c, n: Math.round(c.n / 10) }))
  let clients = CLIENTS
  if (options.clients) clients = CLIENTS.filter((c) => options.clients.includes(c.name))
  const reps = options.reps || (options.quick ? 1 : 3)

  const info = {
    startedAt: new Date(benchStarted).toISOString(),
    options: { quick: options.quick, reps, warmup: options.warmup, cases: cases.map((c) => c.id), clients: clients.map((c) => c.name) },
    machine: machine(addon, broker),
    cases,
    warnings: [
      ...(addon.kind === 'debug' ? ['The addon was a debug build: the figures of ours are not representative.'] : []),
      ...(broker.warning ? [broker.warning] : []),
    ],
    brokerBuild: broker.info,
  }
  const runs = []
  const save = (complete) => {
    fs.mkdirSync(path.dirname(RESULTS), { recursive: true })
    const summary = summarize(runs, cases, clients)
    const targets = judgeTargets(summary, cases, { quick: options.quick })
    fs.writeFileSync(RESULTS, `${JSON.stringify({ ...info, complete, totalSec: (Date.now() - benchStarted) / 1000, summary, targets, runs }, null, 2)}\n`)
    return { summary, targets }
  }

  const total = reps * cases.length * clients.length
  let done = 0
  for (let rep = 1; rep <= reps; rep++) {
    for (const spec of cases) {
      // Rotate the client order each repetition, so none always runs first or last.
      const order = clients.map((_, i) => clients[(i + rep - 1) % clients.length])
      for (const client of order) {
        const r = await runOne(client, spec, rep, options.warmup)
        runs.push(r)
        done++
        const what = r.failed
          ? `FAILED (exit ${r.exitCode}${r.signal ? `, ${r.signal}` : ''}${r.timedOut ? ', timed out' : ''})${r.stderrTail ? `\n    ${r.stderrTail.replace(/\n/g, '\n    ')}` : ''}`
          : `${int(r.deliveredPerSec)} delivered/s, ${int(r.acceptedPerSec)} accepted/s, lost ${r.lost}, dup ${r.duplicated}` +
            (r.mode === 'paced' ? `, p50 ${dec(r.p50Ms, 3)} ms, p99 ${dec(r.p99Ms, 3)} ms` : '') +
            `, RSS ${dec(r.rssConnectedMB)}/${dec(r.rssPeakMB)} MB, CPU ${dec(r.cpuSec, 2)} s` +
            (r.errors ? `, ${r.errors} errors: ${(r.errorSamples || []).join('; ')}` : '') +
            (r.closeTimedOut ? ', close() TIMED OUT' : '')
        log(`[${done}/${total}] rep ${rep} ${spec.id} ${client.name}: ${what}`)
        save(false)
      }
    }
  }
  const { summary, targets } = save(true)
  const header = [
    `native-pubsub benchmark — ${info.machine.cpu} × ${info.machine.cpus}, ${info.machine.ramGB} GB, ${info.machine.os}`,
    `Node ${info.machine.node}, ${info.machine.rustc}, MQTT.js ${info.machine.mqttJs}, addon: ${addon.kind} build; broker: ${info.machine.broker}`,
    `MQTT 3.1.1 over WebSockets on loopback, one publisher and one subscriber connection per client${options.quick ? '; QUICK run (N/10)' : ''}`,
    options.warmup > 0 ? `Each process first sent an unmeasured burst of ${options.warmup.toLocaleString('en-US')} messages (--warmup): warm figures, JIT compilation excluded` : 'Cold: each process measured its first burst (JIT compilation included; see --warmup)',
  ]
  console.log(`\n${header.join('\n')}\n`)
  console.log(table(summary, cases, clients, reps))
  console.log(`\n${targetLines(targets).join('\n')}`)
  for (const w of info.warnings) console.log(`\nWARNING: ${w}`)
  console.log(`\nAll runs: ${path.relative(process.cwd(), RESULTS)} (${((Date.now() - benchStarted) / 1000).toFixed(0)} s)`)
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error)
  process.exit(1)
})
