'use strict'
// Publishes on their way into Rust. Those made within one tick are packed into one buffer and a
// few typed arrays and handed over in a single call: the cost of crossing into native code is
// paid per batch, not per message. When Rust's backlog is full, the rest waits here, in order,
// until the `writable` event.

/** Publish operations handed over per call. */
const MAX_BATCH = 4_096
/** The packing buffer is kept between calls up to this size. */
const KEEP_SCRATCH_BYTES = 1024 * 1024

class PublishQueue {
  #native
  #reject
  /** records `{ op, topics, payload (JSON text or bytes), qos, retain }`; those before #head are gone */
  #records = []
  #head = 0
  #scheduled = false
  #waitingWritable = false
  #scratch = Buffer.allocUnsafe(64 * 1024)

  /** `reject(op, error)` settles an operation the native side refused outright. */
  constructor(native, reject) {
    this.#native = native
    this.#reject = reject
  }

  /** Publishes not yet handed over. */
  get length() {
    return this.#records.length - this.#head
  }

  push(record) {
    this.#records.push(record)
    if (!this.#scheduled && !this.#waitingWritable) {
      this.#scheduled = true
      queueMicrotask(() => this.#flush())
    }
  }

  /** Rust's backlog has room again. */
  writable() {
    this.#waitingWritable = false
    this.#flush()
  }

  /** Takes back every publish not handed over (close()). */
  drain() {
    const rest = this.#records.slice(this.#head)
    this.#records = []
    this.#head = 0
    this.#waitingWritable = false
    return rest
  }

  /** Count and bytes (topics and payloads) of the publishes not handed over, for stats(). */
  load() {
    let operations = 0
    let bytes = 0
    for (let i = this.#head; i < this.#records.length; i++) {
      const { topics, payload } = this.#records[i]
      const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
      operations += topics.length
      for (const topic of topics) bytes += Buffer.byteLength(topic) + size
    }
    return { operations, bytes }
  }

  #flush() {
    this.#scheduled = false
    while (this.length > 0 && !this.#waitingWritable) {
      const count = Math.min(this.length, MAX_BATCH)
      if (this.#handOver(count) < count) this.#waitingWritable = true
    }
    if (this.length === 0) {
      this.#records = []
      this.#head = 0
    }
  }

  /** Packs the next `count` records and hands them to Rust; returns how many it took. */
  #handOver(count) {
    const ops = new Uint32Array(count)
    const topicCounts = new Uint32Array(count)
    const payloadEnds = new Uint32Array(count)
    const flags = new Uint8Array(count)
    const topics = []
    let buffer = this.#scratch
    let end = 0
    for (let i = 0; i < count; i++) {
      const { op, topics: list, payload, qos, retain } = this.#records[this.#head + i]
      ops[i] = op
      topicCounts[i] = list.length
      flags[i] = qos | (retain ? 4 : 0)
      for (const topic of list) topics.push(topic)
      const text = typeof payload === 'string'
      // UTF-8 takes at most 3 bytes per UTF-16 unit.
      const room = text ? payload.length * 3 : payload.length
      if (end + room > buffer.length) {
        const bigger = Buffer.allocUnsafe(Math.max(buffer.length * 2, end + room))
        buffer.copy(bigger, 0, 0, end)
        buffer = bigger
      }
      if (text) {
        end += buffer.write(payload, end)
      } else {
        buffer.set(payload, end)
        end += payload.length
      }
      payloadEnds[i] = end
    }
    if (buffer.length <= KEEP_SCRATCH_BYTES) this.#scratch = buffer
    let taken
    try {
      taken = this.#native.publishBatch(ops, topicCounts, topics, buffer.subarray(0, end), payloadEnds, flags)
    } catch (error) {
      for (const op of ops) this.#reject(op, error)
      taken = count
    }
    for (let i = 0; i < taken; i++) this.#records[this.#head + i] = undefined
    this.#head += taken
    return taken
  }
}

module.exports = { PublishQueue }
