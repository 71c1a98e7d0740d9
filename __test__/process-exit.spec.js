'use strict'
// Like a socket, a PubSub keeps Node running while it has work (a subscription, a pending
// publish, a close in progress) and lets the process exit on its own when it has none. Each
// test runs a small script in a child Node process and watches how, and how fast, it ends.
const path = require('node:path')
const { spawn } = require('node:child_process')
const test = require('ava')
const { PubSub } = require('../mqtt.js')
const { useMosquitto, freePort } = require('./helpers/mosquitto.js')

const MQTT_JS = path.join(__dirname, '..', 'mqtt.js')
/** How long a script that should end by itself may take. */
const EXIT_LIMIT_MS = 10_000
const broker = useMosquitto(test)

let counter = 0
function uniqueTopic(name) {
  counter += 1
  return `process-exit/${name}/${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`
}

function open(t, options) {
  const pubsub = new PubSub(options)
  t.teardown(() => pubsub.close())
  return pubsub
}

/**
 * Runs `source` with `node -e`. The script finds the package in MQTT_JS, the broker in BROKER and
 * its topic in TOPIC. The child is killed when the test ends, whatever happens.
 */
function runScript(t, source, env = {}) {
  const child = spawn(process.execPath, ['-e', source], {
    env: { ...process.env, MQTT_JS, BROKER: broker.wsUrl, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const run = { child, stdout: '', stderr: '', started: Date.now() }
  child.stdout.on('data', (d) => (run.stdout += d))
  child.stderr.on('data', (d) => (run.stderr += d))
  run.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal, ms: Date.now() - run.started }))
  })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return run
}

/** Waits for the script to end by itself; kills it and fails the test if it does not in time. */
async function exitOf(t, run, limitMs = EXIT_LIMIT_MS) {
  let timer
  const outcome = await Promise.race([
    run.exited,
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), limitMs)
    }),
  ])
  clearTimeout(timer)
  if (outcome === null) {
    run.child.kill('SIGKILL')
    t.fail(`the script was still running after ${limitMs} ms\nstdout: ${run.stdout}\nstderr: ${run.stderr}`)
    return { code: null, signal: 'SIGKILL', ms: limitMs }
  }
  return outcome
}

/** Resolves once the script printed `line`. */
function printed(run, line, timeoutMs = EXIT_LIMIT_MS) {
  return new Promise((resolve, reject) => {
    const check = () => run.stdout.split('\n').includes(line)
    if (check()) return resolve()
    const timer = setTimeout(() => {
      run.child.stdout.off('data', onData)
      reject(new Error(`the script did not print '${line}' within ${timeoutMs} ms\nstdout: ${run.stdout}\nstderr: ${run.stderr}`))
    }, timeoutMs)
    const onData = () => {
      if (!check()) return
      clearTimeout(timer)
      run.child.stdout.off('data', onData)
      resolve()
    }
    run.child.stdout.on('data', onData)
    run.exited.then(() => {
      if (check()) return
      clearTimeout(timer)
      reject(new Error(`the script exited without printing '${line}'\nstdout: ${run.stdout}\nstderr: ${run.stderr}`))
    })
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const stillRunning = (run) => run.child.exitCode === null && run.child.signalCode === null

test('a script that only publishes exits by itself once the publish resolves', async (t) => {
  const topic = uniqueTopic('publish-only')
  const watcher = open(t, { endpoint: broker.wsUrl })
  const values = []
  const sub = watcher.subscribe(topic).subscribe({ next: (v) => values.push(v) })
  await sub.ready

  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     pubsub.publish(process.env.TOPIC, { from: 'child' }, { qos: 1 }).then(() => console.log('published'))`,
    { TOPIC: topic },
  )
  const { code, signal } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(signal, null)
  t.is(run.stdout, 'published\n')
  t.is(run.stderr, '')
  await sleep(100)
  t.like(values[0], { from: 'child' })
})

test('a script that only publishes and exits by itself leaves the broker cleanly', async (t) => {
  const willTopic = uniqueTopic('publish-only-will')
  const will = await watchWill(t, willTopic)
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER, will: { topic: process.env.WILL, message: 'abrupt', qos: 1 } })
     pubsub.publish(process.env.TOPIC, 'x', { qos: 1 }).then(() => console.log('published'))`,
    { TOPIC: uniqueTopic('publish-only'), WILL: willTopic },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'published\n')
  t.deepEqual(await will.settle(), [], 'a normal end of the program is not an abrupt disconnect: no will')
})

test('a script with an active subscription stays alive and keeps receiving', async (t) => {
  const topic = uniqueTopic('stays-alive')
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next: (value) => console.log('got ' + value) })
     sub.ready.then(() => console.log('ready'))`,
    { TOPIC: topic },
  )
  await printed(run, 'ready')
  await sleep(1_500)
  t.true(stillRunning(run), `the script ended: ${run.stderr}`)

  const publisher = open(t, { endpoint: broker.wsUrl })
  await publisher.publish(topic, 'still listening', { qos: 1 })
  await printed(run, 'got still listening')
  t.true(stillRunning(run))

  run.child.kill('SIGTERM')
  const { signal } = await exitOf(t, run)
  t.is(signal, 'SIGTERM', 'it ended only because the test killed it')
})

test('a script that subscribes and then unsubscribes exits by itself', async (t) => {
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
     sub.ready.then(() => { console.log('ready'); sub.unsubscribe() })`,
    { TOPIC: uniqueTopic('unsubscribe') },
  )
  const { code, signal } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(signal, null)
  t.is(run.stdout, 'ready\n')
})

/**
 * Watches `topic` (a will topic) from this process. `settle()` publishes a control message
 * and resolves with everything that arrived before it: the will, if the broker sent one.
 */
async function watchWill(t, topic) {
  const watcher = open(t, { endpoint: broker.wsUrl })
  const values = []
  const sub = watcher.subscribe(topic, { format: 'string' }).subscribe({ next: (v) => values.push(v) })
  await sub.ready
  return {
    async settle() {
      await sleep(300)
      await watcher.publish(topic, 'control', { qos: 1 })
      const deadline = Date.now() + 5_000
      while (!values.includes('"control"') && Date.now() < deadline) await sleep(10)
      return values.filter((v) => v !== '"control"')
    },
  }
}

test('after the last unsubscribe, Node stays up until the disconnect has finished: the broker sees no abrupt drop', async (t) => {
  const willTopic = uniqueTopic('unsubscribe-will')
  const will = await watchWill(t, willTopic)
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER, will: { topic: process.env.WILL, message: 'abrupt', qos: 1 } })
     const states = []
     pubsub.on('ConnectionStateChange', (state) => states.push(state))
     process.on('exit', () => console.log(states.join(' → ')))
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
     sub.ready.then(() => { console.log('ready'); sub.unsubscribe() })`,
    { TOPIC: uniqueTopic('unsubscribe'), WILL: willTopic },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(
    run.stdout,
    'ready\nConnecting → Connected → ConnectedPendingDisconnect → Disconnected\n',
    'Node stays up until the disconnect the last unsubscribe started has finished',
  )
  t.deepEqual(await will.settle(), [], 'the broker saw a clean DISCONNECT, so it did not publish the will')
})

test('a script that unsubscribes before the subscription is acknowledged exits by itself', async (t) => {
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {} })
     sub.unsubscribe()
     console.log('unsubscribed')`,
    { TOPIC: uniqueTopic('early-unsubscribe') },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'unsubscribed\n')
})

test('a script that subscribes and then calls close() exits with code 0', async (t) => {
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({ next() {}, complete: () => console.log('complete') })
     sub.ready.then(() => pubsub.close()).then(() => console.log('closed'))`,
    { TOPIC: uniqueTopic('close') },
  )
  const { code, signal } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(signal, null)
  t.is(run.stdout, 'complete\nclosed\n')
  t.is(run.stderr, '')
})

test('a subscriber whose next callback throws keeps running, warns on stderr, and exits 0 after close()', async (t) => {
  const topic = uniqueTopic('throwing')
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     let reported = 0
     pubsub.on('callbackError', () => reported++)
     const sub = pubsub.subscribe(process.env.TOPIC).subscribe({
       next(value) {
         console.log('got ' + value)
         if (value === 'close') pubsub.close().then(() => console.log('closed after ' + reported + ' callbackErrors'))
         throw new Error('boom from ' + value)
       },
     })
     sub.ready.then(() => console.log('ready'))`,
    { TOPIC: topic },
  )
  await printed(run, 'ready')
  const publisher = open(t, { endpoint: broker.wsUrl })
  await publisher.publish(topic, 'first', { qos: 1 })
  await printed(run, 'got first')
  await sleep(500)
  t.true(stillRunning(run), `a throwing callback ended the process: ${run.stderr}`)

  await publisher.publish(topic, 'second', { qos: 1 })
  await printed(run, 'got second')
  await publisher.publish(topic, 'close', { qos: 1 })
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'ready\ngot first\ngot second\ngot close\nclosed after 3 callbackErrors\n')
  t.regex(run.stderr, /NativePubSubWarning: A subscriber callback threw .*boom from first/)
  t.is(run.stderr.match(/NativePubSubWarning/g).length, 1, 'one warning, not one per throw')
})

test('a script that catches a constructor error exits with code 0', async (t) => {
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     try {
       new PubSub({ endpoint: 'http://127.0.0.1/mqtt' })
     } catch (error) {
       console.log(error.code)
     }`,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'ERR_INVALID_ENDPOINT\n')
})

test('a script whose publish fails to connect exits once it has handled the rejection', async (t) => {
  const port = await freePort()
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     pubsub.publish('a/b', 'x', { qos: 1 }).catch((error) => console.log(error.code))`,
    { BROKER: `mqtt://127.0.0.1:${port}` },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'ERR_CONNECTION\n')
})

test('a pending publish keeps the script alive until it settles', async (t) => {
  const topic = uniqueTopic('pending')
  // Awaited nowhere: only the pending operation itself can keep the process running.
  const run = runScript(
    t,
    `const { PubSub } = require(process.env.MQTT_JS)
     const pubsub = new PubSub({ endpoint: process.env.BROKER })
     pubsub.publish(process.env.TOPIC, 'x', { qos: 2 }).then(() => console.log('settled'))`,
    { TOPIC: topic },
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, 'settled\n', 'Node did not exit before the QoS 2 handshake completed')
})
