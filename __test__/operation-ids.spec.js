'use strict'
// Publish operations and observers are known to Rust by u32 ids. A long-lived instance hands out
// more than 2^32 of them: the ids wrap within u32 and skip the ones still in use.
const path = require('node:path')
const test = require('ava')
const { IdAllocator, MAX_ID } = require('../lib/ids.js')
const { useAedes } = require('./helpers/aedes.js')
const { topicNamer, runScript, printed } = require('./helpers/pubsub.js')

const broker = useAedes(test)
const uniqueTopic = topicNamer('operation-ids')
const IDS_JS = path.join(__dirname, '..', 'lib', 'ids.js')

function take(allocator, n) {
  return Array.from({ length: n }, () => allocator.next())
}

test('ids wrap from 2^32 - 1 to 1: never 0, never beyond u32', (t) => {
  t.is(MAX_ID, 0xffff_ffff)
  t.deepEqual(take(new IdAllocator(new Map(), MAX_ID - 1), 4), [MAX_ID - 1, MAX_ID, 1, 2])
})

test('ids still in use are skipped, before and after the wrap', (t) => {
  const live = new Map([[MAX_ID, 'pending'], [1, 'pending'], [3, 'pending']])
  const allocator = new IdAllocator(live, MAX_ID - 1)
  t.deepEqual(take(allocator, 3), [MAX_ID - 1, 2, 4])
  // Released ids come back on the next lap.
  live.clear()
  t.deepEqual(take(new IdAllocator(live, MAX_ID), 2), [MAX_ID, 1])
})

test('an instance whose ids wrap keeps publishing and delivering across the wrap', async (t) => {
  // The child swaps in an allocator that starts 3 ids before the wrap, before loading the
  // package, and records every id the instance takes from it.
  const source = `
    const ids = require(process.env.IDS_JS)
    const handed = []
    ids.IdAllocator = class extends ids.IdAllocator {
      constructor(live) {
        super(live, ids.MAX_ID - 2)
      }
      next() {
        const id = super.next()
        handed.push(id)
        return id
      }
    }
    const { PubSub } = require(process.env.MQTT_JS)
    const pubsub = new PubSub({ endpoint: process.env.BROKER })
    const topic = process.env.TOPIC
    ;(async () => {
      const received = [[], [], [], [], []]
      const subs = received.map((values) => pubsub.subscribe(topic).subscribe({ next: (v) => values.push(v) }))
      await Promise.all(subs.map((sub) => sub.ready))
      await Promise.all([1, 2, 3, 4, 5].map((n) => pubsub.publish(topic, n, { qos: 1 })))
      while (received.some((values) => values.length < 5)) await new Promise((r) => setTimeout(r, 20))
      await pubsub.close()
      console.log(JSON.stringify({ handed, received }))
      console.log('done')
    })()
  `
  const run = runScript(t, source, { BROKER: broker.wsUrl, IDS_JS, TOPIC: uniqueTopic('wrap') })
  await printed(run, 'done', 15_000)
  const { handed, received } = JSON.parse(run.stdout.split('\n')[0])
  const aroundTheWrap = [MAX_ID - 2, MAX_ID - 1, MAX_ID, 1, 2]
  t.deepEqual(handed, [...aroundTheWrap, ...aroundTheWrap], 'five observer ids, then five publish ids')
  t.deepEqual(received, Array(5).fill([1, 2, 3, 4, 5]))
})
