'use strict'
// The Observable that `pubsub.subscribe()` returns: cold, Amplify/zen-observable shaped,
// async-iterable, and reference-counted at the broker. An in-process aedes broker lets the
// tests see exactly which SUBSCRIBE and UNSUBSCRIBE packets arrive.
const test = require('ava')
const { TOPIC } = require('../mqtt.js')
const { useAedes, startAedes } = require('./helpers/aedes.js')
const { freePort } = require('./helpers/mosquitto.js')
const { topicNamer, pubsubOn, receiver, observe, subscribed, plain } = require('./helpers/pubsub.js')

const broker = useAedes(test)

const uniqueTopic = topicNamer('spec/observable')
const newPubSub = pubsubOn(broker)

/**
 * Records the SUBSCRIBE and UNSUBSCRIBE requests the broker handles for `filters`.
 * aedes emits 'subscribe' before its SUBACK leaves, so once `sub.ready` resolves the
 * matching SUBSCRIBE is already recorded.
 */
function brokerLog(t, ...filters) {
  const log = { subscribes: [], unsubscribes: [] }
  const onSubscribe = (subscriptions) => {
    for (const { topic, qos } of subscriptions) {
      if (filters.includes(topic)) log.subscribes.push({ topic, qos })
    }
  }
  const onUnsubscribe = (topics) => {
    for (const topic of topics) {
      if (filters.includes(topic)) log.unsubscribes.push(topic)
    }
  }
  broker.aedes.on('subscribe', onSubscribe)
  broker.aedes.on('unsubscribe', onUnsubscribe)
  t.teardown(() => {
    broker.aedes.off('subscribe', onSubscribe)
    broker.aedes.off('unsubscribe', onUnsubscribe)
  })
  return log
}

/** Resolves when the broker has handled an UNSUBSCRIBE for `filter`. */
function brokerUnsubscribes(filter) {
  const unsubscribed = broker.waitFor('unsubscribe', (topics) => topics.includes(filter))
  // Awaited later in the test; a test that failed before then must not also report this.
  unsubscribed.catch(() => {})
  return unsubscribed
}

/** `promise`, or a rejection when it takes longer than `ms`. */
function within(promise, ms, what) {
  let timer
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}

/** A fresh topic, the broker's log of SUBSCRIBE/UNSUBSCRIBE for it, and a PubSub. */
function setup(t, name) {
  const topic = uniqueTopic(name)
  return { topic, log: brokerLog(t, topic), pubsub: newPubSub(t) }
}

test('the observable is cold: nothing is subscribed at the broker until .subscribe() is called', async (t) => {
  const { topic, log, pubsub } = setup(t, 'cold')

  const observable = pubsub.subscribe(topic, { qos: 1 })
  // A full round trip on the same connection: a SUBSCRIBE sent by pubsub.subscribe() would
  // have gone out before this PUBLISH and been handled before its PUBACK came back.
  await pubsub.publish(`${topic}/probe`, 'probe', { qos: 1 })
  t.deepEqual(log.subscribes, [])

  const subscription = observable.subscribe(() => {})
  await subscription.ready
  t.deepEqual(log.subscribes, [{ topic, qos: 1 }])
})

test('each .subscribe() on one observable is a subscription of its own', async (t) => {
  const topic = uniqueTopic('independent')
  const pubsub = newPubSub(t)
  const observable = pubsub.subscribe(topic)
  const first = observe(observable)
  const second = observe(observable)
  t.not(first.subscription, second.subscription)
  await Promise.all([first.subscription.ready, second.subscription.ready])

  first.subscription.unsubscribe()
  await pubsub.publish(topic, { n: 1 }, { qos: 1 })

  t.deepEqual((await second.take(1)).map(plain), [{ n: 1 }])
  t.true(first.subscription.closed)
  t.is(first.received.length, 0)
})

test('.subscribe(nextFn) takes a bare function as the next callback', async (t) => {
  const topic = uniqueTopic('next-fn')
  const pubsub = newPubSub(t)
  const inbox = receiver()

  const subscription = pubsub.subscribe(topic).subscribe((value) => inbox.observer.next(value))
  await subscription.ready
  await pubsub.publish(topic, { hello: 'function' }, { qos: 1 })

  const [message] = await inbox.take(1)
  t.deepEqual(plain(message), { hello: 'function' })
  t.is(message[TOPIC], topic)
  t.is(typeof subscription.unsubscribe, 'function')
})

test('an observer without next (only error or complete) is given no messages, and that is no callback error', async (t) => {
  const topic = uniqueTopic('no-next')
  const pubsub = newPubSub(t)
  const callbackErrors = []
  pubsub.on('callbackError', (error) => callbackErrors.push(error))
  let completed = 0
  const withoutNext = pubsub.subscribe(topic).subscribe({ error() {}, complete: () => completed++ })
  const inbox = await subscribed(pubsub, topic)
  await withoutNext.ready

  await pubsub.publish(topic, 'for the observer with next', { qos: 1 })
  // Both observers' share of the message is handed out together: once one has it, so has the other.
  t.deepEqual(await inbox.take(1), ['for the observer with next'])
  t.deepEqual(callbackErrors, [])

  await pubsub.close()
  t.is(completed, 1)
})

test('.subscribe(next, error, complete) takes three functions, and complete runs when the PubSub closes', async (t) => {
  const topic = uniqueTopic('three-fns')
  const pubsub = newPubSub(t)
  const inbox = receiver()
  let completed = 0
  const errors = []

  const subscription = pubsub.subscribe(topic).subscribe(
    (value) => inbox.observer.next(value),
    (error) => errors.push(error),
    () => completed++,
  )
  await subscription.ready
  await pubsub.publish(topic, 'three', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['three'])

  await pubsub.close()
  t.is(completed, 1)
  t.deepEqual(errors, [])
  t.true(subscription.closed)
})

test('for await iterates messages, and leaving the loop unsubscribes at the broker', async (t) => {
  const { topic, log, pubsub } = setup(t, 'for-await')
  const subscribedAtBroker = broker.waitFor('subscribe', (subs) => subs.some((s) => s.topic === topic))
  const unsubscribedAtBroker = brokerUnsubscribes(topic)

  const publishing = (async () => {
    await subscribedAtBroker
    for (let n = 1; n <= 3; n++) await pubsub.publish(topic, { n }, { qos: 1 })
  })()

  const seen = []
  const iterating = (async () => {
    for await (const message of pubsub.subscribe(topic, { qos: 1 })) {
      seen.push(plain(message))
      if (seen.length === 2) break
    }
  })()
  await within(Promise.all([iterating, publishing]), 5_000, 'the loop to take two messages')

  t.deepEqual(seen, [{ n: 1 }, { n: 2 }])
  await unsubscribedAtBroker
  t.deepEqual(log.unsubscribes, [topic])
})

test('a for await loop throws the error that ends its subscription (an invalid filter, a connection failed for good)', async (t) => {
  const loop = async (observable) => {
    for await (const message of observable) t.fail(`unexpected message ${String(message)}`)
  }
  const pubsub = newPubSub(t)
  await t.throwsAsync(within(loop(pubsub.subscribe('orders/#/late')), 5_000, 'the loop to end'), { code: 'ERR_INVALID_TOPIC' })

  const port = await freePort()
  const unreachable = newPubSub(t, { endpoint: `ws://127.0.0.1:${port}/mqtt`, reconnect: false })
  const error = await t.throwsAsync(within(loop(unreachable.subscribe(uniqueTopic('unreachable'))), 5_000, 'the loop to end'), { code: 'ERR_CONNECTION' })
  t.true(error.message.includes(`127.0.0.1:${port}`), error.message)
})

test('for await yields messages that arrived before next() was called, in order', async (t) => {
  const topic = uniqueTopic('for-await-buffered')
  const pubsub = newPubSub(t)
  const observable = pubsub.subscribe(topic, { qos: 1 })
  const iterator = observable[Symbol.asyncIterator]()
  t.teardown(() => iterator.return())
  // A second observer of the same filter tells us when the iterator's messages have arrived.
  const witness = observe(observable)
  await witness.subscription.ready

  for (let n = 1; n <= 3; n++) await pubsub.publish(topic, n, { qos: 1 })
  await witness.take(3)

  const values = []
  for (let i = 0; i < 3; i++) {
    const { value, done } = await iterator.next()
    t.false(done)
    values.push(value)
  }
  t.deepEqual(values, [1, 2, 3])
})

test('a for await loop whose subscription fails still yields the messages that arrived before, then throws the error', async (t) => {
  const ownBroker = await startAedes()
  t.teardown(() => ownBroker.stop())
  const topic = uniqueTopic('before-failure')
  const pubsub = newPubSub(t, { endpoint: ownBroker.wsUrl, reconnect: false })
  const observable = pubsub.subscribe(topic, { qos: 1 })
  const iterator = observable[Symbol.asyncIterator]()
  // A second observer of the same filter tells us when the iterator's messages and error have arrived.
  const witness = observe(observable)
  await witness.subscription.ready
  for (let n = 1; n <= 2; n++) await pubsub.publish(topic, n, { qos: 1 })
  await witness.take(2)

  await ownBroker.stop() // the connection is lost, and without reconnect that is for good
  await t.throwsAsync(witness.take(3), { code: 'ERR_CONNECTION' })
  t.deepEqual(await iterator.next(), { value: 1, done: false })
  t.deepEqual(await iterator.next(), { value: 2, done: false })
  await t.throwsAsync(iterator.next(), { code: 'ERR_CONNECTION' })
})

test('next() calls made before messages arrive are answered in order, one message each', async (t) => {
  const topic = uniqueTopic('next-queue')
  const pubsub = newPubSub(t)
  const subscribedAtBroker = broker.waitFor('subscribe', (subs) => subs.some((s) => s.topic === topic))
  const iterator = pubsub.subscribe(topic, { qos: 1 })[Symbol.asyncIterator]()
  t.teardown(() => iterator.return())

  // Two outstanding requests, as Promise.all or a read-ahead consumer makes them.
  const first = iterator.next()
  const second = iterator.next()
  await subscribedAtBroker
  await pubsub.publish(topic, 1, { qos: 1 })
  await pubsub.publish(topic, 2, { qos: 1 })

  t.deepEqual(await within(first, 2_000, 'the first next() to settle'), { value: 1, done: false })
  t.deepEqual(await within(second, 2_000, 'the second next() to settle'), { value: 2, done: false })
})

test('return() settles a next() that is still waiting with done: true', async (t) => {
  const { topic, log, pubsub } = setup(t, 'return-pending')
  const subscribedAtBroker = broker.waitFor('subscribe', (subs) => subs.some((s) => s.topic === topic))
  const unsubscribedAtBroker = brokerUnsubscribes(topic)
  const iterator = pubsub.subscribe(topic)[Symbol.asyncIterator]()
  await subscribedAtBroker

  // A consumer waiting for the next message while another part of the program stops it.
  const waiting = iterator.next()
  t.deepEqual(await iterator.return(), { value: undefined, done: true })

  t.deepEqual(await within(waiting, 2_000, 'the waiting next() to settle'), { value: undefined, done: true })
  await unsubscribedAtBroker
  t.deepEqual(log.unsubscribes, [topic])
})

test('after return(), next() is done: the messages that were waiting in the loop are dropped', async (t) => {
  const topic = uniqueTopic('return-buffered')
  const pubsub = newPubSub(t)
  const observable = pubsub.subscribe(topic, { qos: 1 })
  const iterator = observable[Symbol.asyncIterator]()
  const witness = observe(observable)
  await witness.subscription.ready
  for (let n = 1; n <= 2; n++) await pubsub.publish(topic, n, { qos: 1 })
  await witness.take(2) // the iterator holds both, unread

  t.deepEqual(await iterator.return(), { value: undefined, done: true })
  t.deepEqual(await iterator.next(), { value: undefined, done: true })
})

test("['@@observable']() returns the observable itself, for RxJS and zen-observable interop", async (t) => {
  const topic = uniqueTopic('interop')
  const pubsub = newPubSub(t)
  const observable = pubsub.subscribe(topic)

  t.is(typeof observable['@@observable'], 'function')
  t.is(observable['@@observable'](), observable)
  if (typeof Symbol.observable === 'symbol') t.is(observable[Symbol.observable](), observable)

  const inbox = observe(observable['@@observable']())
  await inbox.subscription.ready
  await pubsub.publish(topic, 'through interop', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['through interop'])
})

test("RxJS's from() takes the observable: operators work, and unsubscribing through RxJS unsubscribes at the broker", async (t) => {
  // Required here, not at the top: the test after this one checks that nothing loaded so far
  // defines Symbol.observable (RxJS 7 reads it but does not define it).
  const { from, firstValueFrom, filter, take, toArray } = require('rxjs')
  const topic = uniqueTopic('rxjs')
  const pubsub = newPubSub(t)
  const subscribedAtBroker = broker.waitFor('subscribe', (subscriptions) => subscriptions.some((s) => s.topic === topic))
  const firstTwoEven = firstValueFrom(
    from(pubsub.subscribe(topic)).pipe(
      filter((message) => message.n % 2 === 0),
      take(2),
      toArray(),
    ),
  )
  await subscribedAtBroker
  const unsubscribed = broker.waitFor('unsubscribe', (topics) => topics.includes(topic))
  for (let n = 1; n <= 5; n++) await pubsub.publish(topic, { n }, { qos: 1 })
  t.deepEqual((await firstTwoEven).map(plain), [{ n: 2 }, { n: 4 }])
  await unsubscribed // take(2) ended the RxJS subscription, which unsubscribed ours
})

test('a Symbol.observable polyfill loaded after native-pubsub still finds the interop method (as RxJS from() looks for it)', async (t) => {
  t.is(Symbol.observable, undefined, 'nothing loaded so far defines Symbol.observable')
  // What symbol-observable or zen-observable do when they load, after the package here.
  Symbol.observable = Symbol('observable')
  t.teardown(() => delete Symbol.observable)
  const topic = uniqueTopic('late-polyfill')
  const pubsub = newPubSub(t)
  const observable = pubsub.subscribe(topic)

  t.is(typeof observable[Symbol.observable], 'function')
  t.is(observable[Symbol.observable](), observable)
  const inbox = observe(observable[Symbol.observable]())
  await inbox.subscription.ready
  await pubsub.publish(topic, 'through the late key', { qos: 1 })
  t.deepEqual(await inbox.take(1), ['through the late key'])
  const unsubscribed = broker.waitFor('unsubscribe', (topics) => topics.includes(topic))
  inbox.subscription.unsubscribe()
  await unsubscribed
})

test('sub.closed is false while subscribed and true after unsubscribe(), which may be called twice', async (t) => {
  const topic = uniqueTopic('closed')
  const pubsub = newPubSub(t)

  const subscription = pubsub.subscribe(topic).subscribe(() => {})
  t.false(subscription.closed)
  await subscription.ready
  t.false(subscription.closed)

  subscription.unsubscribe()
  t.true(subscription.closed)
  t.notThrows(() => subscription.unsubscribe())
  t.true(subscription.closed)
})

test('sub.ready settles, instead of staying pending forever, when unsubscribe() comes before the SUBACK', async (t) => {
  const topic = uniqueTopic('ready-early-unsubscribe')
  const pubsub = newPubSub(t)

  const subscription = pubsub.subscribe(topic).subscribe(() => {})
  subscription.unsubscribe()

  // Resolving or rejecting are both fine; never settling hangs whoever awaits it.
  const settled = subscription.ready.then(
    () => 'resolved',
    (error) => `rejected with ${error.code}`,
  )
  await t.notThrowsAsync(within(settled, 2_000, 'sub.ready to settle after unsubscribe()'))
})

test('unsubscribing stops delivery to that observer', async (t) => {
  const topic = uniqueTopic('stops')
  const pubsub = newPubSub(t)
  const gone = observe(pubsub.subscribe(topic))
  // A different filter matching the same topics keeps the connection and the messages coming.
  const stays = observe(pubsub.subscribe(`${topic}/#`))
  await Promise.all([gone.subscription.ready, stays.subscription.ready])

  await pubsub.publish(topic, 'before', { qos: 1 })
  t.deepEqual(await gone.take(1), ['before'])
  gone.subscription.unsubscribe()
  await pubsub.publish(topic, 'after', { qos: 1 })

  t.deepEqual(await stays.take(2), ['before', 'after'])
  t.deepEqual(gone.received, ['before'])
})

test('sub.ready resolves once the broker acknowledged the SUBSCRIBE, so a publish right after it is received', async (t) => {
  const { topic, log, pubsub: subscriber } = setup(t, 'ready')
  const publisher = newPubSub(t)

  const inbox = observe(subscriber.subscribe(topic, { qos: 1 }))
  const { subscription } = inbox
  t.true(subscription.ready instanceof Promise)
  t.is(await subscription.ready, undefined)
  t.deepEqual(log.subscribes, [{ topic, qos: 1 }])

  await publisher.publish(topic, { first: true }, { qos: 1 })
  const [message] = await inbox.take(1)
  t.deepEqual(plain(message), { first: true })
})

test('two observers of one filter share a single SUBSCRIBE at the broker', async (t) => {
  const { topic, log, pubsub } = setup(t, 'refcount-subscribe')

  const first = observe(pubsub.subscribe(topic))
  const second = observe(pubsub.subscribe(topic))
  await Promise.all([first.subscription.ready, second.subscription.ready])
  // A message through the broker after both: any second SUBSCRIBE has been handled by now.
  await pubsub.publish(topic, 'both', { qos: 1 })
  t.deepEqual(await first.take(1), ['both'])
  t.deepEqual(await second.take(1), ['both'])

  t.deepEqual(log.subscribes, [{ topic, qos: 0 }])
})

test('an observer that joins an acknowledged filter is ready without another SUBSCRIBE', async (t) => {
  const { topic, log, pubsub } = setup(t, 'refcount-late')

  await subscribed(pubsub, topic)
  const late = await subscribed(pubsub, topic)
  await pubsub.publish(topic, 'x', { qos: 1 })

  t.deepEqual(await late.take(1), ['x'])
  t.deepEqual(log.subscribes, [{ topic, qos: 0 }])
})

test('the broker gets UNSUBSCRIBE only when the last observer of a filter leaves', async (t) => {
  const { topic, log, pubsub } = setup(t, 'refcount-unsubscribe')
  const first = observe(pubsub.subscribe(topic))
  const last = observe(pubsub.subscribe(topic))
  await Promise.all([first.subscription.ready, last.subscription.ready])

  first.subscription.unsubscribe()
  // Still subscribed at the broker: the remaining observer goes on receiving.
  await pubsub.publish(topic, 'still here', { qos: 1 })
  t.deepEqual(await last.take(1), ['still here'])
  t.deepEqual(log.unsubscribes, [])

  const unsubscribed = brokerUnsubscribes(topic)
  last.subscription.unsubscribe()
  await unsubscribed
  t.deepEqual(log.unsubscribes, [topic])
})

test('leaving an observer of several filters unsubscribes only the filters nobody else observes', async (t) => {
  const shared = uniqueTopic('refcount-shared')
  const own = uniqueTopic('refcount-own')
  const log = brokerLog(t, shared, own)
  const pubsub = newPubSub(t)
  const both = pubsub.subscribe([shared, own]).subscribe(() => {})
  const sharedOnly = observe(pubsub.subscribe(shared))
  await Promise.all([both.ready, sharedOnly.subscription.ready])

  const ownUnsubscribed = brokerUnsubscribes(own)
  both.unsubscribe()
  await ownUnsubscribed
  await pubsub.publish(shared, 'shared is kept', { qos: 1 })

  t.deepEqual(await sharedOnly.take(1), ['shared is kept'])
  t.deepEqual(log.unsubscribes, [own])
})

test('an observer asking for a higher QoS upgrades the broker subscription of the filter', async (t) => {
  const { topic, log, pubsub } = setup(t, 'refcount-qos')

  const low = await subscribed(pubsub, topic, { qos: 0 })
  const high = await subscribed(pubsub, topic, { qos: 1, format: 'message' })
  await pubsub.publish(topic, 'upgraded', { qos: 1 })

  t.deepEqual(log.subscribes, [
    { topic, qos: 0 },
    { topic, qos: 1 },
  ])
  const [message] = await high.take(1)
  t.is(message.qos, 1)
  t.deepEqual(await low.take(1), ['upgraded'])
})
