'use strict'
// The README's JavaScript examples, read from README.md itself: each parses as the kind of module
// it is written as, imports only names the package exports, and the complete programs run as
// written against this file's fixtures, with only their endpoint changed (mosquitto for the
// generic provider; for AWS IoT the local IoT gateway, which verifies the SigV4 signature and
// forwards to mosquitto). As in older-docs.spec.js, the AWS IoT examples get their credentials
// from the AWS default chain (environment variables) and trust the gateway's test CA through
// SSL_CERT_FILE, so their code is untouched; the gateway's host names no region, so the one
// example that reads its region from the amazonaws.com host gets it as the `region` option.
//
// The examples use fixed topic names ('orders/+', 'myTopic', …): the tests run one at a time.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const test = require('ava')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { useIotGateway, sampleEnvironment } = require('./helpers/iot-gateway.js')
const { mqttJs, waitFor, sleep, runScript, printed, exitOf, running, TOPIC_KEY } = require('./helpers/pubsub.js')

const ROOT = path.join(__dirname, '..')
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
const REGION = 'eu-west-1'

const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: REGION, broker: broker.tcpUrl }))

/** A JavaScript string literal. */
const q = (value) => JSON.stringify(value)

/**
 * Every fenced code block of the README: `{ lang, line, section, code }`, `line` the README line
 * of its first line of code, `section` the `##` or `###` heading it is under, `code` with the
 * fence's indentation removed (a block inside a list item is indented).
 */
function codeBlocks() {
  const blocks = []
  let section = ''
  let open = null
  README.split('\n').forEach((text, index) => {
    const fence = /^(\s*)```(\w*)\s*$/.exec(text)
    if (fence && open) {
      blocks.push({ lang: open.lang, line: open.line, section: open.section, code: open.lines.join('\n') + '\n' })
      open = null
    } else if (fence) {
      open = { lang: fence[2], indent: fence[1].length, line: index + 2, section, lines: [] }
    } else if (open) {
      open.lines.push(text.slice(open.indent))
    } else if (/^#{2,3} /.test(text)) {
      section = text.replace(/^#+ /, '')
    }
  })
  return blocks
}

const jsBlocks = () => codeBlocks().filter((b) => b.lang === 'js')
const isModule = (code) => /^\s*import\b/m.test(code)

/** The one complete program (a js block that loads the package) of `section`; throws unless there is exactly one. */
function exampleOf(t, section) {
  const found = jsBlocks().filter((b) => b.section === section && /(from |require\()'native-pubsub/.test(b.code))
  if (found.length !== 1) throw new Error(`README.md has ${found.length} programs under '${section}', expected 1`)
  return found[0].code
}

/** `code` with `from` replaced by `to`: fails (throws) when `from` is not there, so the example cannot run unchanged against a real host. */
function pointed(code, from, to) {
  if (!code.includes(from)) throw new Error(`the example no longer holds ${from}:\n${code}`)
  return code.split(from).join(to)
}

/** Runs `code` as the README writes it: an ES module when it imports, CommonJS otherwise. */
function runExample(t, code, env = {}) {
  const unset = {}
  for (const name of Object.keys(process.env)) {
    if (name.startsWith('AWS_') || name.startsWith('SSL_CERT_')) unset[name] = undefined
  }
  return runScript(t, code, { ...unset, ...env }, { nodeArgs: [`--input-type=${isModule(code) ? 'module' : 'commonjs'}`], cwd: ROOT })
}

/** An MQTT.js client on mosquitto, subscribed to `topics`: what the examples publish arrives there. */
async function watcher(t, topics) {
  const watch = await mqttJs(t, broker.tcpUrl)
  await watch.client.subscribeAsync(topics, { qos: 1 })
  return watch
}

const iotEnvironment = (t) => sampleEnvironment(t, gateway, 'README')

const upgradesBy = (accessKeyId) => gateway.upgrades.filter((u) => u.accessKeyId === accessKeyId)

// ------------------------------------------------------------------------- every js block

test('every js example parses as the module it is written as: with import, an ES module without require; else CommonJS', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'native-pubsub-readme-check-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const blocks = jsBlocks()
  t.true(blocks.length >= 6, `${blocks.length} js blocks`)
  for (const { line, code } of blocks) {
    // A block that is one object (what stats() returns) is an expression, not statements.
    const source = code.trimStart().startsWith('{') ? `(${code})\n` : code
    const file = path.join(dir, `line-${line}.${isModule(code) ? 'mjs' : 'cjs'}`)
    fs.writeFileSync(file, source)
    const check = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8' })
    t.is(check.status, 0, `README.md line ${line}:\n${check.stderr}`)
    if (isModule(code)) t.false(/\brequire\(/.test(code), `README.md line ${line}: an ES module has no require`)
  }
})

test('every name a js example imports or requires from the package is one of its exports', async (t) => {
  let checked = 0
  for (const { line, code } of jsBlocks()) {
    const imports = [
      ...[...code.matchAll(/^import\s+(?:(\w+)\s*,?\s*)?(?:\{([^}]*)\})?\s*from\s+'(native-pubsub[^']*)'/gm)].map((m) => ({ fallback: m[1], names: m[2], from: m[3] })),
      ...[...code.matchAll(/\{([^}]*)\}\s*=\s*require\('(native-pubsub[^']*)'\)/g)].map((m) => ({ names: m[1], from: m[2] })),
    ]
    for (const { fallback, names, from } of imports) {
      const esm = await import(from)
      if (fallback) {
        t.not(esm.default, undefined, `README.md line ${line}: the default import of '${from}'`)
        checked++
      }
      for (const name of (names || '').split(',').map((n) => n.trim().split(/\s+(?:as|:)\s+/)[0]).filter(Boolean)) {
        t.true(name in esm, `README.md line ${line}: '${from}' exports no ${name}`)
        t.true(name in require(from), `README.md line ${line}: require('${from}') has no ${name}`)
        checked++
      }
    }
  }
  t.true(checked >= 6, `${checked} names checked`)
})

// ------------------------------------------------------------------------ the programs, run

test.serial('Quick start: the message arrives with its topic before close() completes the observer, and the script exits', async (t) => {
  const code = pointed(exampleOf(t, 'Quick start'), "'wss://broker.example.com/mqtt'", q(broker.wsUrl))
  const run = runExample(t, code)
  const { code: exitCode } = await exitOf(t, run)
  t.is(exitCode, 0, run.stderr)
  t.is(run.stdout, `orders/new { id: 1, ${TOPIC_KEY}: 'orders/new' }\nclosed\n`)
  t.is(run.stderr, '')
})

test.serial('AWS IoT Core: the example signs with the default chain, receives its own publish, and stays subscribed', async (t) => {
  const { env, keys } = iotEnvironment(t)
  const code = pointed(
    exampleOf(t, 'AWS IoT Core'),
    "'wss://a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com/mqtt', // region read from the host",
    `${q(gateway.url)}, region: ${q(REGION)}, // the gateway's host names no region`,
  )
  const run = runExample(t, code, env)
  await printed(run, `{ id: 1, ${TOPIC_KEY}: 'orders/new' }`)
  await sleep(300)
  t.true(running(run), 'an active subscription keeps the process alive')
  t.is(run.stderr, '')
  const upgrades = upgradesBy(keys.accessKeyId)
  t.is(upgrades.length, 1)
  t.is(upgrades[0].status, 101, upgrades[0].reason)
  t.is(upgrades[0].region, REGION)
  t.deepEqual(gateway.connects.filter((c) => c.accessKeyId === keys.accessKeyId).map((c) => c.clientId), ['orders-service-1'])
})

test.serial('Coming from Amplify: the changed import runs the Amplify example; the subscription stays', async (t) => {
  const diff = codeBlocks().filter((b) => b.section === 'Coming from Amplify' && b.lang === 'diff')
  t.is(diff.length, 1)
  // The example after the change: the removed line left out, the added line and the context kept.
  const after = diff[0].code
    .split('\n')
    .filter((line) => !line.startsWith('-'))
    .map((line) => line.slice(1))
    .join('\n')
  const run = runExample(t, pointed(after, "'wss://broker.example.com/mqtt'", q(broker.wsUrl)))
  await printed(run, `{ msg: 'Hello', ${TOPIC_KEY}: 'myTopic' }`)
  await sleep(300)
  t.true(running(run), 'an active subscription keeps the process alive')
  t.is(run.stderr, '')
})

test.serial('The older Amplify surface: the example publishes to both topics through the gateway, close runs, and it exits', async (t) => {
  const { env, keys } = iotEnvironment(t)
  const watch = await watcher(t, ['myTopic1', 'myTopic2'])
  const code = pointed(exampleOf(t, 'The older Amplify surface (v3–v5 docs)'), "'wss://a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com/mqtt'", q(gateway.url))
  const run = runExample(t, code, env)
  const { code: exitCode } = await exitOf(t, run)
  t.is(exitCode, 0, run.stderr)
  t.is(run.stdout, 'Done\n')
  t.is(run.stderr, '')
  await waitFor(() => watch.messages.length >= 2, 5_000, 'both publishes')
  t.deepEqual(watch.messages.map((m) => m.topic).sort(), ['myTopic1', 'myTopic2'])
  t.deepEqual(JSON.parse(watch.messages[0].payload), { msg: 'Hello to all subscribers!' })
  t.is(upgradesBy(keys.accessKeyId)[0].region, REGION)
})
