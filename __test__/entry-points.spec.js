'use strict'
// Every entry point loads through both require and import, and exports what index.d.ts declares.
const test = require('ava')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const SHARED = [
  'AWSIoTProvider',
  'Amplify',
  'CONNECTION_STATE_CHANGE',
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
  return [...text.matchAll(/export declare (?:const|function|class) (\w+)/g)].map((m) => m[1])
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
