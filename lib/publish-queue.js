'use strict'
// Publishes on their way into Rust. Each one is encoded at once into a segment: one buffer of
// payloads end to end, typed arrays of operation ids, topic counts, topic indexes and flags, and
// the segment's distinct topics (a burst is mostly one). Encoding at once takes the snapshot of
// the message that Amplify takes, without a JS string per message left for the garbage
// collector to copy: a burst's payloads wait off the V8 heap. A segment is handed to Rust in one
// call when it is full, even in the middle of a synchronous burst, so that the connection sends
// while JS is still publishing, and at the end of the tick. When Rust's backlog is full, the
// rest waits here, in order, until the `writable` event or until the next segment fills.

/** Operations (and topics) in one segment, handed over in one call. */
const SEGMENT_OPS = 4_096
/** A segment's arrays start this small and double as it fills: large payloads fill its buffer first. */
const FIRST_OPS = 64
/** Payload bytes in one segment; a larger payload gets a segment of its own. */
const SEGMENT_BYTES = 256 * 1024
/** UTF-8 takes at most 3 bytes per UTF-16 unit. */
const MAX_UTF8_PER_UNIT = 3

/** A typed array of twice the length with the same contents. */
function grown(array) {
  const bigger = new array.constructor(array.length * 2)
  bigger.set(array)
  return bigger
}

class Segment {
  constructor(bytes, topicSlots) {
    this.buffer = Buffer.allocUnsafe(bytes)
    this.ops = new Uint32Array(FIRST_OPS)
    this.topicCounts = new Uint32Array(FIRST_OPS)
    this.payloadEnds = new Uint32Array(FIRST_OPS)
    this.flags = new Uint8Array(FIRST_OPS)
    this.topicIndexes = new Uint32Array(Math.max(FIRST_OPS, topicSlots))
    /** distinct topics; `topicIndexes` point into it */
    this.topics = []
    this.topicIndex = new Map()
    this.clear()
  }

  clear() {
    this.count = 0
    this.slots = 0
    this.end = 0
    /** operations (and their topic slots) already handed over */
    this.first = 0
    this.firstSlot = 0
    this.topics.length = 0
    this.topicIndex.clear()
  }

  /** Whether a standard segment (reusable once handed over). */
  get standard() {
    return this.buffer.length === SEGMENT_BYTES && this.topicIndexes.length <= SEGMENT_OPS
  }

  fits(topicCount, bytes) {
    return this.count < SEGMENT_OPS && this.slots + topicCount <= SEGMENT_OPS && this.end + bytes <= this.buffer.length
  }

  add(op, topics, payload, flags) {
    if (this.count === this.ops.length) this.#grow()
    while (this.slots + topics.length > this.topicIndexes.length) this.topicIndexes = grown(this.topicIndexes)
    const i = this.count++
    this.ops[i] = op
    this.topicCounts[i] = topics.length
    this.flags[i] = flags
    for (const topic of topics) this.topicIndexes[this.slots++] = this.#indexOf(topic)
    if (typeof payload === 'string') {
      this.end += this.buffer.write(payload, this.end)
    } else {
      this.buffer.set(payload, this.end)
      this.end += payload.length
    }
    this.payloadEnds[i] = this.end
  }

  #grow() {
    this.ops = grown(this.ops)
    this.topicCounts = grown(this.topicCounts)
    this.payloadEnds = grown(this.payloadEnds)
    this.flags = grown(this.flags)
  }

  #indexOf(topic) {
    const last = this.topics.length - 1
    if (last >= 0 && this.topics[last] === topic) return last
    let index = this.topicIndex.get(topic)
    if (index === undefined) {
      index = this.topics.push(topic) - 1
      this.topicIndex.set(topic, index)
    }
    return index
  }

  /** Hands the operations not yet taken to `native`; returns how many it took. */
  handOver(native) {
    const { first, count } = this
    let payloadStart = 0
    let payloadEnds = this.payloadEnds.subarray(0, count)
    if (first > 0) {
      // What is left of a segment Rust took part of: its payload offsets start again at 0.
      payloadStart = this.payloadEnds[first - 1]
      payloadEnds = payloadEnds.slice(first).map((end) => end - payloadStart)
    }
    const taken = native.publishBatch(
      this.ops.subarray(first, count),
      this.topicCounts.subarray(first, count),
      this.topicIndexes.subarray(this.firstSlot, this.slots),
      this.topics,
      this.buffer.subarray(payloadStart, this.end),
      payloadEnds,
      this.flags.subarray(first, count),
    )
    this.take(taken)
    return taken
  }

  /** Marks the next `n` operations handed over (or settled). */
  take(n) {
    for (let i = this.first; i < this.first + n; i++) this.firstSlot += this.topicCounts[i]
    this.first += n
  }

  get pending() {
    return this.count - this.first
  }
}

class PublishQueue {
  #native
  #reject
  /** segments not fully handed over, oldest first; the last one takes new publishes */
  #segments = []
  /** one segment kept for reuse */
  #spare = null
  #pending = 0
  #scheduled = false
  #waitingWritable = false

  /** `reject(op, error)` settles an operation the native side refused outright. */
  constructor(native, reject) {
    this.#native = native
    this.#reject = reject
  }

  /** Publishes not yet handed over. */
  get length() {
    return this.#pending
  }

  /** Queues a publish of `payload` (JSON text or bytes) to `topics`; `flags` is `qos | retain << 2`. */
  push(op, topics, payload, flags) {
    const bytes = typeof payload === 'string' ? this.#textBytes(payload) : payload.length
    let segment = this.#segments[this.#segments.length - 1]
    if (segment === undefined || !segment.fits(topics.length, bytes)) {
      if (segment !== undefined) {
        // Rust may have room again even if it turned publishes away: its `writable` event
        // cannot arrive before a synchronous burst ends, so a full segment offers itself anyway.
        this.#waitingWritable = false
        this.#flush()
      }
      segment = this.#openSegment(topics.length, bytes)
    }
    segment.add(op, topics, payload, flags)
    this.#pending++
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

  /** Takes back the operation ids of every publish not handed over (close()). */
  drain() {
    const ops = []
    for (const segment of this.#segments) {
      for (let i = segment.first; i < segment.count; i++) ops.push(segment.ops[i])
    }
    this.#segments = []
    this.#pending = 0
    this.#waitingWritable = false
    return ops
  }

  /** Count and bytes (topics and payloads) of the publishes not handed over, for stats(). */
  load() {
    let operations = 0
    let bytes = 0
    for (const segment of this.#segments) {
      let slot = segment.firstSlot
      for (let i = segment.first; i < segment.count; i++) {
        const size = segment.payloadEnds[i] - (i === 0 ? 0 : segment.payloadEnds[i - 1])
        for (let t = 0; t < segment.topicCounts[i]; t++) {
          bytes += Buffer.byteLength(segment.topics[segment.topicIndexes[slot++]]) + size
        }
        operations += segment.topicCounts[i]
      }
    }
    return { operations, bytes }
  }

  /** Room for a string's UTF-8: a bound for small ones, exact for large ones. */
  #textBytes(text) {
    const bound = text.length * MAX_UTF8_PER_UNIT
    return bound <= SEGMENT_BYTES ? bound : Buffer.byteLength(text)
  }

  #openSegment(topicCount, bytes) {
    let segment
    if (bytes <= SEGMENT_BYTES && topicCount <= SEGMENT_OPS) {
      segment = this.#spare ?? new Segment(SEGMENT_BYTES, FIRST_OPS)
      this.#spare = null
    } else {
      segment = new Segment(Math.max(bytes, SEGMENT_BYTES), topicCount)
    }
    this.#segments.push(segment)
    return segment
  }

  #flush() {
    this.#scheduled = false
    while (this.#segments.length > 0 && !this.#waitingWritable) {
      const segment = this.#segments[0]
      const count = segment.pending
      let taken
      try {
        taken = segment.handOver(this.#native)
      } catch (error) {
        for (let i = segment.first; i < segment.count; i++) this.#reject(segment.ops[i], error)
        segment.take(count)
        taken = count
      }
      this.#pending -= taken
      if (taken < count) {
        this.#waitingWritable = true
      } else {
        // Fully handed over (Rust copied what it keeps): reuse it.
        this.#segments.shift()
        if (segment.standard) {
          segment.clear()
          this.#spare = segment
        }
      }
    }
  }
}

module.exports = { PublishQueue }
