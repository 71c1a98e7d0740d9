'use strict'
// Publishes on their way into Rust. Each one is encoded at once into a segment: one buffer of
// payloads end to end, one Uint32Array of records (`[op, flags, payload length, topic count,
// topic index…]`, read by `client::PublishBatch` in Rust) and the segment's distinct topics (a
// burst is mostly one). Encoding at once takes the snapshot of the message that Amplify takes,
// without a JS string per message left for the garbage collector to copy: a burst's payloads
// wait off the V8 heap. The first publish of a tick is handed to Rust at once; the ones after it
// go in one call at the end of the tick, or when their segment is full, even in the middle of a
// synchronous burst, so that the connection sends while JS is still publishing. A burst's
// segments start small and double, so Rust gets the first of it early, and every path of `push`
// runs within its first few hundred publishes: a path first taken after V8 has optimised it
// costs a deoptimisation and a recompile in the middle of the burst (bench/FINDINGS.md, "Optimised code kept for the whole burst").
// When Rust's backlog is full, the rest waits here, in order, until the `writable` event or
// until the next segment fills.

/** Operations in one segment, handed over in one call. */
const SEGMENT_OPS = 4_096
/** Words of a record before its topic indexes. */
const RECORD_WORDS = 4
/** A record's flag (beside `qos | retain << 2`): aborted while held here; Rust skips it. */
const WITHDRAWN = 8
/**
 * Record words in one segment: room for SEGMENT_OPS single-topic publishes, which also bounds
 * the operations (every publish has at least one topic).
 */
const SEGMENT_WORDS = SEGMENT_OPS * (RECORD_WORDS + 1)
/** Record words of a burst's first segment (64 single-topic publishes); each next one doubles. */
const FIRST_WORDS = SEGMENT_WORDS / 64
/** Payload bytes in one segment; a larger payload gets a segment of its own. */
const SEGMENT_BYTES = 256 * 1024
/** UTF-8 takes at most 3 bytes per UTF-16 unit. */
const MAX_UTF8_PER_UNIT = 3

class Segment {
  constructor(bytes, words) {
    this.buffer = Buffer.allocUnsafe(bytes)
    this.words = new Uint32Array(words)
    /**
     * distinct topic -> the index the records use. Kept without an array beside it: a new
     * segment's empty array would have another elements kind than a used one, and optimised
     * code that has seen only one of them deoptimises on the other.
     */
    this.topicIndex = new Map()
    this.clear()
  }

  clear() {
    this.count = 0
    this.wordEnd = 0
    this.end = 0
    /** operations, and their words and payload bytes, already handed over */
    this.first = 0
    this.firstWord = 0
    this.firstByte = 0
    this.topicIndex.clear()
    /** a burst is mostly one topic: the last one looked up, and its index */
    this.lastTopic = null
    this.lastIndex = 0
  }

  /** Whether a standard segment (reusable once handed over). */
  get standard() {
    return this.buffer.length === SEGMENT_BYTES && this.words.length <= SEGMENT_WORDS
  }

  fits(topicCount, bytes) {
    return this.wordEnd + RECORD_WORDS + topicCount <= this.words.length && this.end + bytes <= this.buffer.length
  }

  add(op, topics, payload, flags) {
    const record = this.wordEnd
    let word = record + RECORD_WORDS
    const words = this.words
    for (const topic of topics) words[word++] = this.#indexOf(topic)
    const start = this.end
    if (typeof payload === 'string') {
      this.end += this.buffer.write(payload, start)
    } else {
      this.buffer.set(payload, start)
      this.end += payload.length
    }
    words[record] = op
    words[record + 1] = flags
    words[record + 2] = this.end - start
    words[record + 3] = topics.length
    this.wordEnd = word
    this.count++
  }

  #indexOf(topic) {
    if (topic === this.lastTopic) return this.lastIndex
    let index = this.topicIndex.get(topic)
    if (index === undefined) {
      index = this.topicIndex.size
      this.topicIndex.set(topic, index)
    }
    this.lastTopic = topic
    this.lastIndex = index
    return index
  }

  /** The distinct topics, in the order of their indexes. */
  get topics() {
    return Array.from(this.topicIndex.keys())
  }

  /** Hands the operations not yet taken to `native`; returns how many it took. */
  handOver(native) {
    const taken = native.publishBatch(
      this.words.subarray(this.firstWord, this.wordEnd),
      this.topics,
      this.buffer.subarray(this.firstByte, this.end),
    )
    this.take(taken)
    return taken
  }

  /** Marks the next `n` operations handed over (or settled). */
  take(n) {
    for (let i = 0; i < n; i++) {
      this.firstByte += this.words[this.firstWord + 2]
      this.firstWord += RECORD_WORDS + this.words[this.firstWord + 3]
    }
    this.first += n
  }

  get pending() {
    return this.count - this.first
  }

  /** The record offsets of the operations not handed over, and not withdrawn. */
  *pendingRecords() {
    for (let word = this.firstWord; word < this.wordEnd; word += RECORD_WORDS + this.words[word + 3]) {
      if ((this.words[word + 1] & WITHDRAWN) === 0) yield word
    }
  }
}

/**
 * The spare segment of the last queue close() gave up, for the next queue that needs one. A
 * closed instance keeps its spare (256 KiB off the V8 heap) until the garbage collector takes
 * the instance, which V8 puts off while little of its own heap is used: a server that opens and
 * closes instances would otherwise hold one per closed instance, tens of MB, until then.
 */
let closedSpare = null

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
    if (segment === undefined) {
      segment = this.#openSegment(topics.length, bytes, FIRST_WORDS)
    } else if (!segment.fits(topics.length, bytes)) {
      const burstWords = Math.min(Math.max(2 * segment.wordEnd, FIRST_WORDS), SEGMENT_WORDS)
      // Rust may have room again even if it turned publishes away: its `writable` event
      // cannot arrive before a synchronous burst ends, so a full segment offers itself anyway.
      this.#waitingWritable = false
      this.#flush()
      segment = this.#openSegment(topics.length, bytes, burstWords)
    }
    segment.add(op, topics, payload, flags)
    this.#pending++
    if (!this.#scheduled && !this.#waitingWritable) {
      // The tick's first publish goes at once, so that the connection sends it while the rest
      // of the tick runs; the ones after it go together at the end of the tick.
      this.#flush()
      this.#scheduled = true
      queueMicrotask(() => {
        this.#scheduled = false
        this.#flush()
      })
    }
  }

  /** Rust's backlog has room again. */
  writable() {
    this.#waitingWritable = false
    this.#flush()
  }

  /**
   * Withdraws those of publishes `ops` (anything with `has`) still here (their signal was
   * aborted): they will not be sent. Returns the set of them it found, in one pass.
   */
  withdraw(ops) {
    const found = new Set()
    for (const segment of this.#segments) {
      for (const record of segment.pendingRecords()) {
        const op = segment.words[record]
        if (ops.has(op)) {
          segment.words[record + 1] |= WITHDRAWN
          found.add(op)
        }
      }
    }
    return found
  }

  /** Takes back the operation ids of every publish not handed over (close(), a failure). */
  drain() {
    const ops = []
    for (const segment of this.#segments) {
      for (const record of segment.pendingRecords()) ops.push(segment.words[record])
    }
    this.#segments = []
    this.#pending = 0
    this.#waitingWritable = false
    return ops
  }

  /** Hands the spare segment on to the next queue that needs one (close()). */
  giveUpSpare() {
    if (this.#spare !== null) {
      closedSpare = this.#spare
      this.#spare = null
    }
  }

  /** Count and bytes (topics and payloads) of the publishes not handed over, for stats(). */
  load() {
    let operations = 0
    let bytes = 0
    for (const segment of this.#segments) {
      const { words, topics } = segment
      for (const record of segment.pendingRecords()) {
        const topicCount = words[record + 3]
        for (let t = 0; t < topicCount; t++) bytes += Buffer.byteLength(topics[words[record + RECORD_WORDS + t]]) + words[record + 2]
        operations += topicCount
      }
    }
    return { operations, bytes }
  }

  /** Room for a string's UTF-8: a bound for small ones, exact for large ones. */
  #textBytes(text) {
    const bound = text.length * MAX_UTF8_PER_UNIT
    return bound <= SEGMENT_BYTES ? bound : Buffer.byteLength(text)
  }

  /**
   * A segment with room for `bytes` and `topicCount`, and for `burstWords` of records: twice
   * the previous segment's when a burst fills one (a burst of large payloads fills the buffer
   * first, and its records stay small).
   */
  #openSegment(topicCount, bytes, burstWords) {
    const words = Math.max(RECORD_WORDS + topicCount, burstWords)
    if (this.#spare === null && closedSpare !== null) {
      this.#spare = closedSpare
      closedSpare = null
    }
    const spare = this.#spare
    let segment
    if (spare !== null && bytes <= SEGMENT_BYTES && words <= spare.words.length) {
      segment = spare
      this.#spare = null
    } else {
      // A spare too small stays for a later burst. Its records are not replaced with larger
      // ones: V8 treats a field never written after construction as constant, and the first
      // write in the middle of a burst would deoptimise the code that relied on it.
      segment = new Segment(Math.max(bytes, SEGMENT_BYTES), words)
    }
    this.#segments.push(segment)
    return segment
  }

  #flush() {
    while (this.#segments.length > 0 && !this.#waitingWritable) {
      const segment = this.#segments[0]
      const count = segment.pending
      let taken
      try {
        taken = segment.handOver(this.#native)
      } catch (error) {
        for (const record of segment.pendingRecords()) this.#reject(segment.words[record], error)
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
