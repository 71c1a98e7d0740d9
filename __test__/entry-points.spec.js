'use strict'
// Every entry point loads through both require and import, and exports what index.d.ts declares.
const test = require('ava')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync, spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const SHARED = [
  'AWSIoTProvider',
  'Amplify',
  'CONNECTION_STATE_CHANGE',
  'CONTROL_MSG',
  'ConnectionState',
  'Hub',
  'MqttOverWSProvider',
  'PubSub',
  'TOPIC',
  'mqttTopicMatch',
]

/** The value exports a declaration file names (`export declare const|function|class X`). */
function declaredValues(file) {
  const text = fs.readFileSync(path.join(root, file), 'utf8')
  return [...text.matchAll(/export declare (?:const|function|class|enum) (\w+)/g)].map((m) => m[1])
}

for (const entry of ['native-pubsub', 'native-pubsub/mqtt', 'native-pubsub/iot']) {
  test(`require('${entry}') exports the shared API`, (t) => {
    t.deepEqual(Object.keys(require(entry)).sort(), SHARED)
  })

  test(`import '${entry}' exports the same objects as require`, async (t) => {
    const esm = await import(entry)
    const cjs = require(entry)
    for (const name of SHARED) t.is(esm[name], cjs[name], name)
  })
}

test("ConnectionState holds Amplify's eight state strings, each its own name, and CONNECTION_STATE_CHANGE is Amplify's event name", (t) => {
  const { ConnectionState, CONNECTION_STATE_CHANGE } = require('native-pubsub')
  const amplifyStates = [
    'Connected',
    'ConnectedPendingDisconnect',
    'ConnectedPendingKeepAlive',
    'ConnectedPendingNetwork',
    'ConnectionDisrupted',
    'ConnectionDisruptedPendingNetwork',
    'Connecting',
    'Disconnected',
  ]
  t.deepEqual({ ...ConnectionState }, Object.fromEntries(amplifyStates.map((state) => [state, state])))
  t.true(Object.isFrozen(ConnectionState))
  t.is(CONNECTION_STATE_CHANGE, 'ConnectionStateChange')
})

test("CONTROL_MSG holds the strings @aws-amplify/pubsub exports under that name, so that code importing it by name loads", async (t) => {
  const { CONTROL_MSG } = require('native-pubsub')
  t.deepEqual(
    { ...CONTROL_MSG },
    {
      CONNECTION_CLOSED: 'Connection closed',
      CONNECTION_FAILED: 'Connection failed',
      REALTIME_SUBSCRIPTION_INIT_ERROR: 'AppSync Realtime subscription init error',
      SUBSCRIPTION_ACK: 'Subscription ack',
      TIMEOUT_DISCONNECT: 'Timeout disconnect',
    },
  )
  t.true(Object.isFrozen(CONTROL_MSG))
  // A named ES import of a missing export fails when the module links: this is what broke.
  const { stdout } = spawnSync(process.execPath, ['--input-type=module', '-e', "import { PubSub, CONTROL_MSG } from 'native-pubsub'; console.log(typeof PubSub, CONTROL_MSG.CONNECTION_CLOSED)"], {
    cwd: root,
    encoding: 'utf8',
  })
  t.is(stdout.trim(), 'function Connection closed')
})

test('index.d.ts declares exactly the values the root exports', (t) => {
  t.deepEqual(declaredValues('index.d.ts').sort(), SHARED)
})

test('mqtt.d.ts re-exports the shared values and declares its own PubSub', (t) => {
  const text = fs.readFileSync(path.join(root, 'mqtt.d.ts'), 'utf8')
  for (const name of SHARED.filter((n) => n !== 'PubSub')) t.regex(text, new RegExp(`\\b${name}\\b`))
  t.deepEqual(declaredValues('mqtt.d.ts'), ['PubSub'])
})

test('the generic and IoT entry points export different PubSub classes, sharing the rest', (t) => {
  const mqtt = require('native-pubsub/mqtt')
  const iot = require('native-pubsub/iot')
  t.not(mqtt.PubSub, iot.PubSub)
  t.is(mqtt.Hub, iot.Hub)
  t.is(mqtt.TOPIC, iot.TOPIC)
  t.is(require('native-pubsub').PubSub, iot.PubSub)
})

test('the PubSub of each entry point names its provider as Amplify does', async (t) => {
  const iot = new (require('native-pubsub').PubSub)({ endpoint: 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt' })
  const mqtt = new (require('native-pubsub/mqtt').PubSub)({ endpoint: 'ws://127.0.0.1:1/mqtt' })
  t.is(iot.getProviderName(), 'AWSIoTProvider')
  t.is(mqtt.getProviderName(), 'MqttOverWSProvider')
  await Promise.all([iot.close(), mqtt.close()])
})

test('the documented TypeScript usage typechecks and misuse does not (tsc --noEmit)', (t) => {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  try {
    execFileSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types')], { encoding: 'utf8' })
    t.pass()
  } catch (error) {
    t.fail(`tsc reported:\n${error.stdout}${error.stderr}`)
  }
})

/**
 * Requires the package from a temporary node_modules holding its JS but no native addon (as an
 * install without its platform package leaves it), after `setup(dir)`; returns stderr.
 */
function requireWithoutAddon(t, { setup, preload } = {}) {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'native-pubsub-noaddon-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const pkg = path.join(dir, 'node_modules', 'native-pubsub')
  fs.mkdirSync(pkg, { recursive: true })
  for (const file of ['package.json', 'index.js', 'iot.js', 'mqtt.js', 'binding.js', 'lib']) {
    fs.cpSync(path.join(root, file), path.join(pkg, file), { recursive: true })
  }
  if (setup) setup(dir)
  const env = { ...process.env }
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH
  delete env.NODE_PATH
  const args = [...(preload ? ['--require', preload] : []), '-e', "require('native-pubsub')"]
  const result = spawnSync(process.execPath, args, { cwd: dir, env, encoding: 'utf8' })
  t.not(result.status, 0)
  return result.stderr
}

test('without its native addon, require names the platform package to install, not an npm bug', (t) => {
  const { platformName, PREBUILT } = loadErrorHelpers()
  const platform = platformName()
  t.true(PREBUILT.includes(platform), `tests run on a platform with a prebuilt binary (${platform})`)
  const stderr = requireWithoutAddon(t)
  t.regex(stderr, /ERR_NATIVE_ADDON/)
  t.true(stderr.includes(`its native addon for ${platform} is not installed`), stderr)
  t.true(stderr.includes(`optional dependency native-pubsub-${platform}@${require('../package.json').version}`), stderr)
  // The error thrown is this one; napi-rs's ("npm has a bug …, try npm i again") is only its cause.
  t.regex(stderr.split('\n').find((line) => /^\w*Error\b/.test(line)) || '', /^Error: native-pubsub: /)
})

test('a platform package that is there but does not load: its error is in the message', (t) => {
  const { platformName } = loadErrorHelpers()
  const stderr = requireWithoutAddon(t, {
    setup(dir) {
      const pkg = path.join(dir, 'node_modules', `native-pubsub-${platformName()}`)
      fs.mkdirSync(pkg, { recursive: true })
      fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: path.basename(pkg), version: '0.1.0', main: 'addon.node' }))
      fs.writeFileSync(path.join(pkg, 'addon.node'), 'not a shared library')
    },
  })
  t.true(stderr.includes(`its native addon for ${platformName()} was found but did not load`), stderr)
  t.regex(stderr, /addon\.node: (file too short|invalid ELF header|.*not a valid)/)
})

test('on a platform without a prebuilt binary (musl), the error says so and lists those there are', (t) => {
  if (process.platform !== 'linux') return t.pass('a linux-only simulation')
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'native-pubsub-musl-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  // What process.report says on musl: no glibcVersionRuntime.
  const preload = path.join(dir, 'musl.js')
  fs.writeFileSync(
    preload,
    `const getReport = process.report.getReport.bind(process.report)
process.report.getReport = () => { const r = getReport(); delete r.header.glibcVersionRuntime; return r }`,
  )
  const stderr = requireWithoutAddon(t, { preload })
  t.true(stderr.includes(`no prebuilt native addon for linux-${process.arch}-musl`), stderr)
  t.true(stderr.includes('linux-x64-gnu') && stderr.includes('NAPI_RS_NATIVE_LIBRARY_PATH'), stderr)
})

test('the platforms the load error calls prebuilt are the npm/ packages and package.json napi targets', (t) => {
  const { PREBUILT } = loadErrorHelpers()
  t.deepEqual([...PREBUILT].sort(), fs.readdirSync(path.join(root, 'npm')).sort())
  t.is(require('../package.json').napi.targets.length, PREBUILT.length)
})

/** lib/native.js's helpers (it loads the addon, which the test process has). */
function loadErrorHelpers() {
  return require('../lib/native')
}

/** The addon built from source beside the package, as `npm install` in a clone leaves it. */
function localBuilds() {
  return fs.readdirSync(root).filter((name) => /^native-pubsub\..+\.node$/.test(name))
}

test('a package packed from a build from source carries its addon, as an install from git needs', (t) => {
  const builds = localBuilds()
  t.true(builds.length > 0, 'the test suite runs on a build from source')
  // --ignore-scripts: packing would otherwise run `prepare`, a release build.
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' }))
  const files = packed.files.map((f) => f.path)
  for (const build of builds) t.true(files.includes(build), `${build} in ${files.join(', ')}`)
  t.true(files.includes('binding.js') && files.includes('lib/native.js'), files.join(', '))
  // MIT asks for its notice in every copy, and the CA roots in the addon for theirs.
  t.true(files.includes('LICENSE') && files.includes('LICENSE-webpki-roots'), files.join(', '))
})

test('each platform package carries both licence texts, as its licence field says', (t) => {
  for (const platform of fs.readdirSync(path.join(root, 'npm'))) {
    const dir = path.join(root, 'npm', platform)
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
    t.is(manifest.license, 'MIT AND CDLA-Permissive-2.0', platform)
    const [packed] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: dir, encoding: 'utf8' }))
    const files = packed.files.map((f) => f.path)
    t.true(files.includes('LICENSE') && files.includes('LICENSE-webpki-roots'), `${platform}: ${files.join(', ')}`)
    t.is(fs.readFileSync(path.join(dir, 'LICENSE'), 'utf8'), fs.readFileSync(path.join(root, 'LICENSE'), 'utf8'), platform)
  }
})

test('npm publish refuses while a build from source is beside the package', (t) => {
  const builds = localBuilds()
  t.true(builds.length > 0, 'the test suite runs on a build from source')
  const run = spawnSync(process.execPath, [path.join(root, 'scripts', 'prepublish.js')], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, npm_config_dry_run: 'true' },
  })
  t.is(run.status, 1, run.stdout + run.stderr)
  t.true(run.stderr.includes(`${builds.join(', ')}: a build from source, which must not be published`), run.stderr)
  t.false(run.stdout.includes('napi pre-publish'), 'napi pre-publish is not reached')
})
