'use strict'

/** The largest id: Rust reads ids as u32. */
const MAX_ID = 2 ** 32 - 1

/**
 * Ids 1..2^32-1 for one kind of operation, in order, wrapping after the last; an id still in use
 * (`live.has(id)`) is skipped, so a long-lived instance never hands Rust an id it cannot hold nor
 * one that two operations share.
 */
class IdAllocator {
  #live
  #next

  /** @param live the operations in use, by id (anything with `has`) */
  constructor(live, first = 1) {
    this.#live = live
    this.#next = first
  }

  next() {
    // Ends: at most live.size ids are skipped, and live is far smaller than 2^32.
    for (;;) {
      const id = this.#next
      this.#next = id === MAX_ID ? 1 : id + 1
      if (!this.#live.has(id)) return id
    }
  }
}

module.exports = { IdAllocator, MAX_ID }
