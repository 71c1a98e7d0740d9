'use strict'
const { pubsubTypeError, describeValue } = require('./errors')

/** Accepts an observer object (`complete` or the older docs' `close`) or up to three functions. */
function toObserver(observerOrNext, error, complete) {
  if (typeof observerOrNext === 'function' || observerOrNext == null) {
    return { next: observerOrNext, error, complete }
  }
  if (typeof observerOrNext !== 'object') {
    throw pubsubTypeError('ERR_INVALID_OPTION', 'subscribe(observer): observer must be an object or a function')
  }
  const target = observerOrNext
  const bind = (name) => {
    const member = target[name]
    if (typeof member === 'function') return member.bind(target)
    // Left out, it is not called; given as anything else, every call would be lost in silence.
    if (member !== undefined && member !== null) {
      throw pubsubTypeError('ERR_INVALID_OPTION', `subscribe(observer): observer.${name} must be a function, got ${describeValue(member)}`)
    }
    return undefined
  }
  const onComplete = bind('complete')
  const onClose = bind('close')
  return {
    next: bind('next'),
    error: bind('error'),
    // Both called when both are there; what they return is handed on, so that the rejection of
    // an async one is reported as a throw would be.
    complete:
      onComplete && onClose
        ? () => {
            let completed
            try {
              completed = onComplete()
            } finally {
              const closed = onClose()
              if (completed === undefined) completed = closed
              else if (closed !== undefined) completed = Promise.all([completed, closed])
            }
            return completed
          }
        : onComplete || onClose,
  }
}

/**
 * `subscription[FLOW](false)` asks the source to hold its messages back (at the source: the
 * connection stops reading its socket), `subscription[FLOW](true)` lets them come again. A
 * `for await` loop that falls behind uses it, so that its buffer stays bounded; a subscription
 * without it (one that failed at once) simply has nothing to hold back.
 */
const FLOW = Symbol('flow')
/** Messages a `for await` loop buffers before it holds its source back; half of it resumes. */
const ITERATOR_HIGH_WATER = 256

/** A cold observable: nothing happens until `subscribe`, which returns a subscription. */
class Observable {
  #start

  /** @param start (observer) => subscription; called once per `subscribe`. */
  constructor(start) {
    this.#start = start
    // A Symbol.observable polyfill (symbol-observable, zen-observable) may load after this
    // module, before RxJS: RxJS then looks only for that key, so it is defined once it exists.
    if (typeof Symbol.observable === 'symbol' && !Object.hasOwn(Observable.prototype, Symbol.observable)) {
      defineInterop(Symbol.observable)
    }
  }

  subscribe(observerOrNext, error, complete) {
    return this.#start(toObserver(observerOrNext, error, complete))
  }

  /** `for await (const message of observable)`; leaving the loop unsubscribes. */
  [Symbol.asyncIterator]() {
    const buffered = []
    /** next() calls waiting for a value, oldest first */
    const waiters = []
    let finished = false
    let failure = null
    let heldBack = false
    let subscription = null
    const flow = (flowing) => {
      heldBack = !flowing
      if (subscription !== null && typeof subscription[FLOW] === 'function') subscription[FLOW](flowing)
    }
    const settle = () => {
      while (waiters.length > 0) {
        if (buffered.length > 0) waiters.shift().resolve({ value: buffered.shift(), done: false })
        else if (failure) waiters.shift().reject(failure)
        else if (finished) waiters.shift().resolve({ value: undefined, done: true })
        else break
      }
      if (heldBack && buffered.length <= ITERATOR_HIGH_WATER / 2) flow(true)
    }
    subscription = this.subscribe({
      next(value) {
        if (finished) return
        buffered.push(value)
        settle()
        if (!heldBack && buffered.length >= ITERATOR_HIGH_WATER) flow(false)
      },
      error(err) {
        failure = err
        settle()
      },
      complete() {
        finished = true
        settle()
      },
    })
    return {
      next() {
        return new Promise((resolve, reject) => {
          waiters.push({ resolve, reject })
          settle()
        })
      },
      return() {
        subscription.unsubscribe()
        finished = true
        buffered.length = 0
        settle()
        return Promise.resolve({ value: undefined, done: true })
      },
      [Symbol.asyncIterator]() {
        return this
      },
    }
  }
}

/**
 * Interop under `key`: RxJS and zen-observable look for Symbol.observable when it exists,
 * '@@observable' otherwise, and call it for the observable itself.
 */
function defineInterop(key) {
  Object.defineProperty(Observable.prototype, key, {
    value() {
      return this
    },
  })
}

defineInterop('@@observable')

module.exports = { Observable, FLOW }
