'use strict'
// Every sample of the older Amplify PubSub docs (../shared/reference: amplify-pubsub-v3-docs.md,
// amplify-pubsub-v4-docs.md and its Japanese translation, whose code is the same) runs with only
// its import line changed. Each test runs the samples as an ES module in a child Node process,
// written as the docs write them; the only other changes are the endpoint and region values,
// which point at this file's fixtures: mosquitto for MqttOverWSProvider, and for
// AWSIoTProvider the local IoT gateway (it verifies the SigV4 signature, then forwards to
// mosquitto). The AWS IoT samples get their credentials from the AWS default chain (environment
// variables), and trust the gateway's test CA through SSL_CERT_FILE, so their code is untouched.
// Lines added around a sample to observe it or end it are marked `// test:`.
//
// The samples use fixed topic names ('myTopic', 'myTopic1', …): the tests run one at a time.
const fs = require('node:fs')
const path = require('node:path')
const test = require('ava')
const { useMosquitto } = require('./helpers/mosquitto.js')
const { useIotGateway, sampleEnvironment } = require('./helpers/iot-gateway.js')
const { mqttJs, waitFor, sleep, runScript, exitOf, running, TOPIC_KEY } = require('./helpers/pubsub.js')

const ROOT = path.join(__dirname, '..')

const broker = useMosquitto(test)
const gateway = useIotGateway(test, () => ({ region: 'us-east-1', broker: broker.tcpUrl }))

/** A JavaScript string literal. */
const q = (value) => JSON.stringify(value)

/**
 * Runs `source` as an ES module (`node --input-type=module`) from the package folder, so
 * `import … from 'native-pubsub'` resolves to this package. `env` replaces the AWS and TLS
 * variables of this process's environment. Killed when the test ends, whatever happens.
 */
function runModule(t, source, env = {}) {
  const unset = {}
  for (const name of Object.keys(process.env)) {
    if (name.startsWith('AWS_') || name.startsWith('SSL_CERT_')) unset[name] = undefined
  }
  return runScript(t, source, { ...unset, ...env }, { nodeArgs: ['--input-type=module'], cwd: ROOT })
}

/** How many times `text` occurs in what the script printed. */
const count = (run, text) => run.stdout.split(text).length - 1

/** Resolves once the script printed `text` `times` times; rejects (with its output) otherwise. */
function printedTimes(run, text, times, timeoutMs = 10_000) {
  return waitFor(() => count(run, text) >= times || !running(run), timeoutMs, `'${text}' printed ${times} time(s)`).then(
    () => {
      if (count(run, text) < times) throw new Error(`the script printed '${text}' ${count(run, text)} time(s), not ${times}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`)
    },
    (error) => {
      throw new Error(`${error.message}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`)
    },
  )
}

/** An MQTT.js client on mosquitto, subscribed to `topics`: what the samples publish arrives there. */
async function watcher(t, topics) {
  const watch = await mqttJs(t, broker.tcpUrl)
  await watch.client.subscribeAsync(topics, { qos: 1 })
  return watch
}

/** Publishes a retained message (and removes it when the test ends): a subscriber gets it at once. */
async function retain(t, topic, message) {
  const { client } = await mqttJs(t, broker.tcpUrl)
  await client.publishAsync(topic, JSON.stringify(message), { qos: 1, retain: true })
  t.teardown(async () => {
    const cleaner = await require('mqtt').connectAsync(broker.tcpUrl, { reconnectPeriod: 0 })
    await cleaner.publishAsync(topic, '', { qos: 1, retain: true })
    await cleaner.endAsync()
  })
}

// ----------------------------------------------------------------- AWS IoT: credentials, CA

const iotEnvironment = (t) => sampleEnvironment(t, gateway, 'OLDDOCS')

/** The gateway's records of WebSocket upgrades signed with `accessKeyId`. */
const upgradesBy = (accessKeyId) => gateway.upgrades.filter((u) => u.accessKeyId === accessKeyId)

// -------------------------------------------------------------------- Third Party MQTT Providers

/** v3 and v4, "Third Party MQTT Providers": the setup, endpoint pointed at mosquitto. */
function mqttSetup() {
  return `
// Apply plugin with configuration
Amplify.addPluggable(new MqttOverWSProvider({
    aws_pubsub_endpoint: ${q(broker.wsUrl)},
}));
`
}

// The docs' snippet is `import { PubSub } from 'aws-amplify';` and
// `import { MqttOverWSProvider } from "@aws-amplify/pubsub/lib/Providers";`, then it calls
// `Amplify.addPluggable` without importing Amplify (the AWS IoT snippet above it does). The
// changed import line imports Amplify too, as that snippet does.
const MQTT_IMPORTS = `import Amplify, { PubSub } from 'native-pubsub';
import { MqttOverWSProvider } from "native-pubsub/lib/Providers";`

/** "Subscribe to a topic", as the docs write it. */
const SUBSCRIBE_TO_A_TOPIC = `
PubSub.subscribe('myTopic').subscribe({
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});
`

test.serial('Third Party MQTT Providers, then "Subscribe to a topic": messages arrive, the subscription keeps Node running', async (t) => {
  await retain(t, 'myTopic', { msg: 'retained for myTopic' })
  const run = runModule(t, MQTT_IMPORTS + mqttSetup() + SUBSCRIBE_TO_A_TOPIC)
  await printedTimes(run, 'Message received', 1)
  t.regex(run.stdout, /Message received \{\n {2}provider: MqttOverWSProvider \{/)
  t.true(run.stdout.includes(`value: { msg: 'retained for myTopic', ${TOPIC_KEY}: 'myTopic' }`), run.stdout)

  // A message published by another client after the subscription is active arrives too.
  const other = await mqttJs(t, broker.tcpUrl)
  await other.client.publishAsync('myTopic', JSON.stringify({ msg: 'Hello to all subscribers!' }), { qos: 1 })
  await printedTimes(run, 'Message received', 2)
  t.regex(run.stdout, /value: \{ msg: 'Hello to all subscribers!'/)

  await sleep(500)
  t.true(running(run), 'an active subscription keeps the process alive')
  t.is(run.stderr, '')
})

test.serial('"Subscribe to multiple topics" (as written, myTopic1 twice), then both "Publish" samples', async (t) => {
  const watch = await watcher(t, ['myTopic1', 'myTopic2'])
  const run = runModule(
    t,
    `${MQTT_IMPORTS}
${mqttSetup()}
PubSub.subscribe(['myTopic1','myTopic1']).subscribe({
    // ...
    // test: the docs elide the observer ('// ...'); these are the three callbacks of the sample above.
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});

await PubSub.publish('myTopic1', { msg: 'Hello to all subscribers!' });

await PubSub.publish(['myTopic1','myTopic2'], { msg: 'Hello to all subscribers!' });

setTimeout(() => PubSub.removePluggable('MqttOverWSProvider'), 500); // test: end the run
`,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  // Each publish reached myTopic1 once: a topic listed twice is one subscription.
  t.is(count(run, 'Message received'), 2, run.stdout)
  t.is(count(run, `${TOPIC_KEY}: 'myTopic1'`), 2)
  t.is(count(run, 'myTopic2'), 0)
  // removePluggable completed the subscription: `close` ran, and Node exited by itself.
  t.true(run.stdout.endsWith('Done\n'), run.stdout)
  t.is(run.stderr, '')
  await waitFor(() => watch.messages.length === 3, 5_000, 'the three published messages')
  t.deepEqual(
    watch.messages.map((m) => [m.topic, JSON.parse(m.payload)]).sort(),
    [
      ['myTopic1', { msg: 'Hello to all subscribers!' }],
      ['myTopic1', { msg: 'Hello to all subscribers!' }],
      ['myTopic2', { msg: 'Hello to all subscribers!' }],
    ],
  )
})

test.serial('"Subscribe to multiple topics" with two different topics receives from both', async (t) => {
  const run = runModule(
    t,
    `${MQTT_IMPORTS}
${mqttSetup()}
PubSub.subscribe(['myTopic1','myTopic2']).subscribe({
    // test: the docs' '// ...', as above
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});

await PubSub.publish(['myTopic1','myTopic2'], { msg: 'Hello to all subscribers!' });

setTimeout(() => PubSub.removePluggable('MqttOverWSProvider'), 500); // test: end the run
`,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(count(run, 'Message received'), 2, run.stdout)
  t.is(count(run, `${TOPIC_KEY}: 'myTopic1'`), 1)
  t.is(count(run, `${TOPIC_KEY}: 'myTopic2'`), 1)
  t.true(run.stdout.endsWith('Done\n'), run.stdout)
})

test.serial('"Publish to a topic" and to multiple topics: a script that only publishes exits by itself', async (t) => {
  const watch = await watcher(t, ['myTopic1', 'myTopic2'])
  const run = runModule(
    t,
    `${MQTT_IMPORTS}
${mqttSetup()}
await PubSub.publish('myTopic1', { msg: 'Hello to all subscribers!' });

await PubSub.publish(['myTopic1','myTopic2'], { msg: 'Hello to all subscribers!' });
`,
  )
  const { code, signal } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(signal, null)
  t.is(run.stdout, '')
  t.is(run.stderr, '')
  await waitFor(() => watch.messages.length === 3, 5_000, 'the three published messages')
  t.deepEqual(
    watch.messages.map((m) => `${m.topic} ${m.payload}`).sort(),
    ['myTopic1 {"msg":"Hello to all subscribers!"}', 'myTopic1 {"msg":"Hello to all subscribers!"}', 'myTopic2 {"msg":"Hello to all subscribers!"}'],
  )
})

test.serial('"Unsubscribe from a topic": close runs, no message arrives, and Node exits by itself', async (t) => {
  const run = runModule(
    t,
    `${MQTT_IMPORTS}
${mqttSetup()}
const sub1 = PubSub.subscribe('myTopicA').subscribe({
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});

sub1.unsubscribe();
// You will no longer get messages for 'myTopicA'

await PubSub.publish('myTopicA', { msg: 'after unsubscribe' }, { qos: 1 }); // test
await new Promise((resolve) => setTimeout(resolve, 300)); // test: time for it to arrive, if it did
console.log('published'); // test
`,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  // The docs' table: "close — Triggered when you unsubscribe from the topic".
  t.is(run.stdout, 'Done\npublished\n')
  t.is(run.stderr, '')
})

test.serial('"Unsubscribe from a topic" after messages arrived: none arrives after it', async (t) => {
  const run = runModule(
    t,
    `${MQTT_IMPORTS}
${mqttSetup()}
const sub1 = PubSub.subscribe('myTopicA').subscribe({
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});
await sub1.ready; // test: the broker acknowledged the subscription
await PubSub.publish('myTopicA', { msg: 'before' }, { qos: 1 }); // test
await new Promise((resolve) => setTimeout(resolve, 300)); // test

sub1.unsubscribe();
// You will no longer get messages for 'myTopicA'

await PubSub.publish('myTopicA', { msg: 'after' }, { qos: 1 }); // test
await new Promise((resolve) => setTimeout(resolve, 300)); // test
`,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(count(run, 'Message received'), 1, run.stdout)
  t.regex(run.stdout, /msg: 'before'/)
  t.notRegex(run.stdout, /msg: 'after'/)
  t.true(run.stdout.endsWith('Done\n'))
})

// ----------------------------------------------------------------------- Using Modular Imports

test.serial('"Using Modular Imports": the default export is the PubSub singleton, configure() and then the API', async (t) => {
  const run = runModule(
    t,
    `import Pubsub from 'native-pubsub';

Pubsub.configure();

// test: the docs stop here; plug a provider in and use the API through the default export.
const { MqttOverWSProvider } = await import('native-pubsub/lib/Providers');
await Pubsub.addPluggable(new MqttOverWSProvider({ aws_pubsub_endpoint: ${q(broker.wsUrl)} }));
const sub = Pubsub.subscribe('myTopic1').subscribe({
    next: data => console.log('Message received', data),
    close: () => console.log('Done'),
});
await sub.ready;
await Pubsub.publish('myTopic1', { msg: 'Hello to all subscribers!' });
await new Promise((resolve) => setTimeout(resolve, 300));
await Pubsub.removePluggable('MqttOverWSProvider');
`,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(count(run, 'Message received'), 1, run.stdout)
  t.regex(run.stdout, /value: \{ msg: 'Hello to all subscribers!'/)
  t.true(run.stdout.endsWith('Done\n'))
})

test.serial('"Using Modular Imports" as v4 writes it (PubSub.configure()) with the generic entry point', async (t) => {
  const run = runModule(
    t,
    `import PubSub from 'native-pubsub/mqtt';

PubSub.configure();

console.log(JSON.stringify(PubSub.configure())); // test: nothing is configured
await PubSub.publish('myTopic1', 1).catch((error) => console.log(error.code)); // test: no provider yet
`,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, '{}\nERR_NO_PROVIDER\n')
})

// ---------------------------------------------------------------------------------- AWS IoT

test.serial('v3 "AWS IoT" (AWSIoTProvider from native-pubsub/lib/Providers), subscribe and publish through the signing gateway', async (t) => {
  const { env, keys } = iotEnvironment(t)
  const run = runModule(
    t,
    `import Amplify, { PubSub } from 'native-pubsub';
import { AWSIoTProvider } from 'native-pubsub/lib/Providers';

// Apply plugin with configuration
Amplify.addPluggable(new AWSIoTProvider({
     aws_pubsub_region: 'us-east-1',
     aws_pubsub_endpoint: ${q(gateway.url)},
   }));

PubSub.subscribe('myTopic').subscribe({
    next: data => console.log('Message received', data),
    error: error => console.error(error),
    close: () => console.log('Done'),
});

await PubSub.publish('myTopic', { msg: 'Hello to all subscribers!' });

setTimeout(() => PubSub.removePluggable('AWSIoTProvider'), 500); // test: end the run
`,
    env,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(count(run, 'Message received'), 1, run.stdout)
  t.regex(run.stdout, /provider: AWSIoTProvider \{/)
  t.true(run.stdout.includes(`value: { msg: 'Hello to all subscribers!', ${TOPIC_KEY}: 'myTopic' }`), run.stdout)
  t.true(run.stdout.endsWith('Done\n'))
  t.is(run.stderr, '')
  const upgrades = upgradesBy(keys.accessKeyId)
  t.is(upgrades.length, 1)
  t.is(upgrades[0].status, 101, upgrades[0].reason)
  t.is(upgrades[0].region, 'us-east-1')
})

test.serial('v4 "AWS IoT" (AWSIoTProvider from the root export): publishing to several topics through the gateway, then exiting', async (t) => {
  const { env, keys } = iotEnvironment(t)
  const watch = await watcher(t, ['myTopic1', 'myTopic2'])
  const run = runModule(
    t,
    `import Amplify, { PubSub } from 'native-pubsub';
import { AWSIoTProvider } from 'native-pubsub';

// Apply plugin with configuration
Amplify.addPluggable(new AWSIoTProvider({
     aws_pubsub_region: 'us-east-1',
     aws_pubsub_endpoint: ${q(gateway.url)},
   }));

await PubSub.publish('myTopic1', { msg: 'Hello to all subscribers!' });

await PubSub.publish(['myTopic1','myTopic2'], { msg: 'Hello to all subscribers!' });
`,
    env,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  t.is(run.stdout, '')
  t.is(run.stderr, '')
  await waitFor(() => watch.messages.length === 3, 5_000, 'the three published messages')
  t.deepEqual(watch.messages.map((m) => m.topic).sort(), ['myTopic1', 'myTopic1', 'myTopic2'])
  t.is(upgradesBy(keys.accessKeyId)[0].status, 101)
})

test.serial('v4 "AWS IoT" and "Third Party MQTT Providers" together: options.provider picks one, without it a publish goes through both', async (t) => {
  const { env, keys } = iotEnvironment(t)
  const run = runModule(
    t,
    `import Amplify, { PubSub } from 'native-pubsub';
import { AWSIoTProvider } from 'native-pubsub';
import { MqttOverWSProvider } from "native-pubsub/lib/Providers";

// Apply plugin with configuration
Amplify.addPluggable(new AWSIoTProvider({
     aws_pubsub_region: 'us-east-1',
     aws_pubsub_endpoint: ${q(gateway.url)},
   }));

// Apply plugin with configuration
Amplify.addPluggable(new MqttOverWSProvider({
    aws_pubsub_endpoint: ${q(broker.wsUrl)},
}));

// test: each message says which provider it came through
const sub = PubSub.subscribe('myTopic', { provider: 'MqttOverWSProvider' }).subscribe({
    next: data => console.log('Message received via', data.provider.getProviderName(), data.value.msg),
});
await sub.ready;
await PubSub.publish('myTopic', { msg: 'through both' });
await PubSub.publish('myTopic', { msg: 'by name' }, { provider: 'AWSIoTProvider' });
await PubSub.publish('myTopic', { msg: 'generic' }, { provider: 'MqttOverWSProvider' });
await new Promise((resolve) => setTimeout(resolve, 300));
await Promise.all([PubSub.removePluggable('AWSIoTProvider'), PubSub.removePluggable('MqttOverWSProvider')]);
`,
    env,
  )
  const { code } = await exitOf(t, run)
  t.is(code, 0, run.stderr)
  // Both providers reach the same broker here: the publish through both arrives twice.
  t.deepEqual(run.stdout.trim().split('\n').sort(), [
    'Message received via MqttOverWSProvider by name',
    'Message received via MqttOverWSProvider generic',
    'Message received via MqttOverWSProvider through both',
    'Message received via MqttOverWSProvider through both',
  ])
  // AWS IoT was used (one signed connection); singleton.spec.js tells apart which publish went where.
  t.is(upgradesBy(keys.accessKeyId).length, 1)
  t.is(upgradesBy(keys.accessKeyId)[0].status, 101)
})
