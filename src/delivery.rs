//! Everything JS learns from Rust (messages, settled operations, state changes) goes through
//! one ordered, bounded queue and crosses into JS in batches: one ThreadsafeFunction call per
//! batch, never one per message, and the next batch only after JS has handled the last. When
//! the queue is full the connection task stops reading the socket, so a slow subscriber
//! pushes back on TCP and the broker instead of growing memory.
//!
//! The frequent events travel packed (`Frame`): publishes that succeeded and messages (ids,
//! lengths, flags, observers and payloads) in one ArrayBuffer, so that a batch costs JS one
//! ArrayBuffer and an array of topics rather than objects per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use napi::bindgen_prelude::{FnArgs, ToNapiValue};
use napi::check_status;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use parking_lot::Mutex;
use rumqttc::Publish;
use tokio::sync::Notify;

use crate::connection::ConnectionState;
use crate::errors::PubSubError;

/// Messages (and their bytes) that may wait for JS before we stop reading the socket.
const MAX_QUEUED_MESSAGES: usize = 8_192;
const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// The same while the instance awaits answers from the broker (acks of its publishes, SUBACKs):
/// they come behind the messages, and the code holding JS back may be awaiting one (a `for
/// await` loop that publishes a reply and awaits it); stopping at the limit above would then
/// never end. The offline queue's default bounds.
const MAX_QUEUED_MESSAGES_AWAITING: usize = 65_536;
const MAX_QUEUED_BYTES_AWAITING: usize = 64 * 1024 * 1024;
/// Messages waiting for JS from which it is behind (`Delivery::is_behind`).
const BEHIND_MESSAGES: usize = 64;
/// Events handed to JS in one call.
const MAX_BATCH: usize = 4_096;
/// Payload bytes handed to JS in one call (at least one message). A batch's payloads live in
/// one external buffer that V8 frees only when it next collects garbage, so several can be alive
/// at once: 256 KiB rather than 1 MiB (and 4 MiB queued rather than 8) took ~20 MB off the peak
/// RSS of the bench's 50,000 × 4 KiB burst, at the same throughput.
const MAX_BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub enum Event {
    /// A message for these observers, as rumqttc read it (its payload is not copied).
    Message { observers: Vec<u32>, publish: Publish },
    /// A publish operation finished (all its topics report separately).
    Published { op: u32 },
    /// A publish operation failed; `sent`: some of it had been handed to the connection, so
    /// that the broker may have it.
    PublishFailed { op: u32, error: PubSubError, sent: bool },
    /// An observer's filters are all acknowledged, or one was refused.
    Subscribed { observer: u32, error: Option<PubSubError> },
    /// Failure `number` of the instance (see `Delivery::push_failed`): these observers fail with
    /// this error, and so do the publishes JS still holds.
    Failed { error: PubSubError, observers: Vec<u32>, number: u64 },
    State(ConnectionState),
    /// A transient failure (the connection will be tried again after `retry_in`): its reason,
    /// which the state change alone does not tell.
    Disrupted { error: PubSubError, retry_in: Duration },
    /// The publish backlog has room again after a publish was turned away.
    Writable,
    /// The connection task waits for the credentials function's answer to `request`.
    CredentialsWanted { request: u32 },
    /// The instance is closed; the last event.
    Closed,
}

/// An event that is not packed: one object, `kind` says which fields are set.
#[napi(object)]
pub struct NativeEvent {
    pub kind: String,
    pub id: Option<u32>,
    pub state: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// Milliseconds until the next connection attempt (`disrupted` only).
    pub retry_in_ms: Option<u32>,
    /// The observers that fail (`failed` only).
    pub observers: Option<Vec<u32>>,
    /// Some of the publish had been handed to the connection: the broker may have it (`published`
    /// with an error only).
    pub sent: Option<bool>,
}

impl NativeEvent {
    fn new(kind: &'static str, id: Option<u32>) -> Self {
        Self { kind: kind.to_string(), id, state: None, code: None, message: None, retry_in_ms: None, observers: None, sent: None }
    }

    fn with_error(mut self, error: Option<PubSubError>) -> Self {
        if let Some(error) = error {
            self.code = Some(error.code().to_string());
            self.message = Some(error.to_string());
        }
        self
    }
}

/// The packed events of a batch (publishes that succeeded, messages) as one JS ArrayBuffer,
/// created by copy: u32 words, then bytes. The words are
/// `[word count, published count, message count]`, the ids of the publish operations that
/// completed, then per message
/// `[topic index, qos | retain << 2 | dup << 3, payload length, observer count, observer ids…]`;
/// the payloads follow the words, end to end. One plain ArrayBuffer costs JS far less than an
/// object of typed arrays over Rust memory (each one a napi call and a finalizer), and less than
/// a Buffer made in C++ (which sets its prototype); JS makes its views of it.
pub struct Frame {
    words: Vec<u32>,
    payloads: Vec<Bytes>,
    payload_bytes: usize,
}

impl ToNapiValue for Frame {
    unsafe fn to_napi_value(env: napi::sys::napi_env, frame: Self) -> napi::Result<napi::sys::napi_value> {
        let word_bytes = frame.words.len() * 4;
        let mut data = std::ptr::null_mut();
        let mut buffer = std::ptr::null_mut();
        // SAFETY: called on the JS thread with its env; napi_create_arraybuffer hands back `len`
        // writable bytes at `data`, which are filled here before JS sees the buffer.
        unsafe {
            check_status!(napi::sys::napi_create_arraybuffer(env, word_bytes + frame.payload_bytes, &mut data, &mut buffer))?;
            let mut at = data.cast::<u8>();
            std::ptr::copy_nonoverlapping(frame.words.as_ptr().cast::<u8>(), at, word_bytes);
            at = at.add(word_bytes);
            for payload in &frame.payloads {
                std::ptr::copy_nonoverlapping(payload.as_ptr(), at, payload.len());
                at = at.add(payload.len());
            }
        }
        Ok(buffer)
    }
}

/// The JS callback's arguments for one batch: the `Frame` (if any packed events), the topics
/// its messages index (each once: a burst is mostly one), and the other events in order. JS
/// handles the frame first: a batch never holds a packed event that came after one of those.
pub type BatchArgs = FnArgs<(Option<Frame>, Option<Vec<String>>, Option<Vec<NativeEvent>>)>;

/// Whether an event travels packed.
fn is_packed(event: &Event) -> bool {
    matches!(event, Event::Message { .. } | Event::Published { .. })
}

/// Packs a batch taken by `take_batch` into the callback's arguments.
pub fn batch_args(batch: Vec<Event>) -> BatchArgs {
    const HEADER_WORDS: usize = 3;
    // The header is filled in at the end, when the counts are known. The capacity fits messages
    // with one observer each (the usual case) without growing.
    let mut words = Vec::with_capacity(HEADER_WORDS + 5 * batch.len());
    words.resize(HEADER_WORDS, 0);
    // Completed publishes come first in the frame, messages after them.
    words.extend(batch.iter().filter_map(|event| match event {
        Event::Published { op } => Some(*op),
        _ => None,
    }));
    let published = words.len() - HEADER_WORDS;
    let mut payloads = Vec::with_capacity(batch.len() - published);
    let mut payload_bytes = 0;
    let mut topics: Vec<String> = Vec::new();
    let mut events = Vec::new();
    for event in batch {
        match event {
            Event::Published { .. } => {}
            Event::Message { observers, publish: Publish { topic, payload, qos, retain, dup, .. } } => {
                // Most recent topics first: bursts repeat the last one.
                let index = match topics.iter().rev().take(8).position(|t| *t == topic) {
                    Some(back) => topics.len() - 1 - back,
                    None => {
                        topics.push(topic);
                        topics.len() - 1
                    }
                };
                let flags = qos as u32 | u32::from(retain) << 2 | u32::from(dup) << 3;
                words.extend([index as u32, flags, payload.len() as u32, observers.len() as u32]);
                words.extend_from_slice(&observers);
                payload_bytes += payload.len();
                payloads.push(payload);
            }
            Event::PublishFailed { op, error, sent } => {
                events.push(NativeEvent { sent: Some(sent), ..NativeEvent::new("published", Some(op)).with_error(Some(error)) })
            }
            Event::Subscribed { observer, error } => {
                events.push(NativeEvent::new("subscribed", Some(observer)).with_error(error))
            }
            Event::Failed { error, observers, .. } => {
                events.push(NativeEvent { observers: Some(observers), ..NativeEvent::new("failed", None).with_error(Some(error)) })
            }
            Event::State(state) => {
                events.push(NativeEvent { state: Some(state.as_str().to_string()), ..NativeEvent::new("state", None) })
            }
            Event::Disrupted { error, retry_in } => {
                // Saturates rather than wraps: reconnect delays are far below u32::MAX ms anyway.
                let retry_in_ms = Some(u32::try_from(retry_in.as_millis()).unwrap_or(u32::MAX));
                events.push(NativeEvent { retry_in_ms, ..NativeEvent::new("disrupted", None).with_error(Some(error)) })
            }
            Event::Writable => events.push(NativeEvent::new("writable", None)),
            Event::CredentialsWanted { request } => events.push(NativeEvent::new("credentials", Some(request))),
            Event::Closed => events.push(NativeEvent::new("closed", None)),
        }
    }
    let messages = payloads.len();
    let header = [words.len() as u32, published as u32, messages as u32];
    words[..HEADER_WORDS].copy_from_slice(&header);
    let frame = (published + messages > 0).then_some(Frame { words, payloads, payload_bytes });
    FnArgs::from((frame, (!topics.is_empty()).then_some(topics), (!events.is_empty()).then_some(events)))
}

/// The JS callback: weak, so it keeps Node alive only while `keep_alive(true)` says so. It
/// returns `true` when JS wants no further batch until it calls `resume` (a `for await` loop has
/// fallen behind); anything else lets the next batch come.
///
/// Its calls carry no data: the batch waits in `Delivery::handed` and the JS thread takes it
/// (`JsSide`) when it makes the call. When Node tears an environment down (a Worker terminated,
/// or ended by `process.exit()`), it drops the calls still queued, and napi-rs frees nothing of
/// them (its `call_js_cb` returns at once on a null env): a batch carried in the call, and the
/// `Arc<Delivery>` its completion held, leaked with each such Worker.
pub type EventsFn = ThreadsafeFunction<(), Option<bool>, BatchArgs, Status, false, true>;

/// What the events function's JS-thread callback holds: the delivery whose batches it hands to
/// JS. Node drops it when it finalizes the function: after the last `EventsFn` is dropped, or
/// when it tears the environment down. The latter is the only word Rust gets that JS is gone,
/// and a call queued then never runs nor says so: without it, the delivery task would wait for
/// that call's completion for ever, and the connection task, once the queue is full, for room.
pub struct JsSide(Weak<Delivery>);

impl JsSide {
    pub fn new(delivery: &Arc<Delivery>) -> Self {
        Self(Arc::downgrade(delivery))
    }

    /// The arguments of the call being made: the batch the delivery task handed over.
    pub fn batch_args(&self) -> BatchArgs {
        batch_args(self.0.upgrade().map(|delivery| delivery.take_handed()).unwrap_or_default())
    }
}

impl Drop for JsSide {
    fn drop(&mut self) {
        if let Some(delivery) = self.0.upgrade() {
            delivery.js_gone();
        }
    }
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    messages: usize,
    bytes: usize,
}

/// An event that settles a publish (or lets one be made): JS gets these while it holds messages
/// back, since the code holding them may be awaiting one (a `for await` loop that publishes a
/// reply and awaits it). Failures and `Closed` keep their place behind the messages.
fn is_settlement(event: &Event) -> bool {
    matches!(event, Event::Published { .. } | Event::PublishFailed { .. } | Event::Writable | Event::CredentialsWanted { .. })
}

/// The bytes a message holds in the queue (0 for other events).
fn message_size(event: &Event) -> usize {
    match event {
        Event::Message { publish, .. } => publish.payload.len() + publish.topic.len(),
        _ => 0,
    }
}

impl Queue {
    fn add(&mut self, event: Event) {
        if let Event::Message { .. } = event {
            self.messages += 1;
            self.bytes += message_size(&event);
        }
        self.events.push_back(event);
    }
}

#[derive(Default)]
pub struct Delivery {
    queue: Mutex<Queue>,
    /// The batch of the call being made, until the JS thread takes it.
    handed: Mutex<Vec<Event>>,
    /// JS is handling a batch.
    in_js: AtomicBool,
    /// JS asked for no more messages until `resume` (a `for await` loop fell behind): only
    /// `is_settlement` events go to it meanwhile.
    held: AtomicBool,
    /// The JS side is gone (`JsSide` was dropped): nothing more will be delivered.
    gone: AtomicBool,
    ready: Notify,
    room: Notify,
    /// The number of the last `Failed` event, and its error until JS has begun handling it.
    failure: Mutex<(u64, Option<PubSubError>)>,
    /// Whether `failure` holds an error: batches are handed to JS without looking otherwise.
    failure_unseen: AtomicBool,
}

impl Delivery {
    /// Queues an event without waiting: control events, which are few and must not be lost, and
    /// the odd message that cannot wait (read just before a connection failed).
    pub fn push(&self, event: Event) {
        self.queue.lock().add(event);
        self.ready.notify_one();
    }

    /// Tells JS that the publish backlog has room again, ahead of the events already waiting:
    /// nothing in them has to be handled first, and behind a burst's thousands of completions and
    /// messages the backlog would run dry before JS refilled it.
    pub fn push_writable(&self) {
        self.queue.lock().events.push_front(Event::Writable);
        self.ready.notify_one();
    }

    /// Queues the `Failed` event of a failure that settled everything pending. Until JS begins
    /// handling it, `unseen_failure` returns its error: what JS asks for before it could know
    /// (the rest of a synchronous burst, or of the tick) fails with it as what Rust held did,
    /// rather than starting another connection. What JS asks for from then on (an observer's
    /// error callback subscribing again) starts one.
    pub fn push_failed(&self, error: PubSubError, observers: Vec<u32>) {
        let number = {
            let mut failure = self.failure.lock();
            failure.0 += 1;
            failure.1 = Some(error.clone());
            self.failure_unseen.store(true, Ordering::Release);
            failure.0
        };
        self.push(Event::Failed { error, observers, number });
    }

    /// The error of the last `Failed` event, if JS has not begun handling it.
    pub fn unseen_failure(&self) -> Option<PubSubError> {
        if !self.failure_unseen.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().1.clone()
    }

    /// JS begins handling `batch`.
    fn handing_to_js(&self, batch: &[Event]) {
        if !self.failure_unseen.load(Ordering::Acquire) {
            return;
        }
        let seen = batch.iter().rev().find_map(|event| match event {
            Event::Failed { number, .. } => Some(*number),
            _ => None,
        });
        let mut failure = self.failure.lock();
        // A later failure stays unseen until JS reaches its own event.
        if seen == Some(failure.0) {
            failure.1 = None;
            self.failure_unseen.store(false, Ordering::Release);
        }
    }

    /// Whether JS is behind: so many messages wait that reading more at once only queues them.
    /// A paced flow never has more than a few waiting.
    pub fn is_behind(&self) -> bool {
        self.queue.lock().messages >= BEHIND_MESSAGES
    }

    /// Queues a message, waiting while the queue is full: fuller while `awaiting()` (the
    /// instance awaits answers from the broker). Only the connection task calls it.
    pub async fn push_message(&self, mut event: Event, awaiting: impl Fn() -> bool) {
        loop {
            if self.gone.load(Ordering::Acquire) {
                // Nobody will read it, and nobody would make room.
                return;
            }
            event = match self.queue_within(event, MAX_QUEUED_MESSAGES, MAX_QUEUED_BYTES) {
                Ok(()) => return,
                // Asked without the queue's lock: `awaiting` takes the client's, which is held
                // while events are pushed.
                Err(event) if awaiting() => match self.queue_within(event, MAX_QUEUED_MESSAGES_AWAITING, MAX_QUEUED_BYTES_AWAITING) {
                    Ok(()) => return,
                    Err(event) => event,
                },
                Err(event) => event,
            };
            self.room.notified().await;
        }
    }

    /// Queues a message if the queue holds fewer than `max_messages` and its bytes stay within
    /// `max_bytes` (always when it holds none); gives it back otherwise.
    fn queue_within(&self, event: Event, max_messages: usize, max_bytes: usize) -> Result<(), Event> {
        let mut queue = self.queue.lock();
        if queue.messages > 0 && (queue.messages >= max_messages || queue.bytes + message_size(&event) > max_bytes) {
            return Err(event);
        }
        queue.add(event);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// JS asked something of the broker: a connection task waiting for room in a full queue
    /// checks whether it may now read on (see `push_message`).
    pub fn answer_awaited(&self) {
        self.room.notify_one();
    }

    /// The next batch: packed events up to the first other one, then other events up to the
    /// next packed one (see `BatchArgs` for why).
    fn take_batch(&self) -> Vec<Event> {
        let mut queue = self.queue.lock();
        let mut bytes = 0;
        let packed = queue
            .events
            .iter()
            .take(MAX_BATCH)
            .take_while(|e| {
                let fits = bytes == 0 || bytes + message_size(e) <= MAX_BATCH_BYTES;
                bytes += message_size(e);
                fits && is_packed(e)
            })
            .count();
        let others = queue.events.iter().skip(packed).take(MAX_BATCH - packed).take_while(|e| !is_packed(e)).count();
        let batch: Vec<Event> = queue.events.drain(..packed + others).collect();
        for event in &batch {
            if let Event::Message { .. } = event {
                queue.messages -= 1;
                queue.bytes -= message_size(event);
            }
        }
        batch
    }

    /// The batch the delivery task handed over for the call being made, on the JS thread.
    fn take_handed(&self) -> Vec<Event> {
        let batch = std::mem::take(&mut *self.handed.lock());
        self.handing_to_js(&batch);
        batch
    }

    /// The JS side is gone: the delivery task ends, and the connection task no longer waits for
    /// room (its messages are dropped).
    fn js_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.ready.notify_one();
        self.room.notify_one();
    }

    /// JS may have the next batch: it finished the last one, or asks again after holding back.
    pub fn resume(&self) {
        self.held.store(false, Ordering::Release);
        self.in_js.store(false, Ordering::Release);
        if !self.queue.lock().events.is_empty() {
            self.ready.notify_one();
        }
    }

    /// JS finished the last batch and wants no more messages until `resume`; what settles its
    /// publishes still goes to it.
    fn hold(&self) {
        self.held.store(true, Ordering::Release);
        self.in_js.store(false, Ordering::Release);
        if self.queue.lock().events.iter().any(is_settlement) {
            self.ready.notify_one();
        }
    }

    /// While JS holds messages back: the events that settle publishes, taken out of the queue
    /// from wherever they wait (the rest keeps its order).
    fn take_settlements(&self) -> Vec<Event> {
        let mut queue = self.queue.lock();
        if !queue.events.iter().any(is_settlement) {
            return Vec::new();
        }
        let mut settlements = Vec::new();
        let mut rest = VecDeque::with_capacity(queue.events.len());
        for event in queue.events.drain(..) {
            match is_settlement(&event) && settlements.len() < MAX_BATCH {
                true => settlements.push(event),
                false => rest.push_back(event),
            }
        }
        queue.events = rest;
        settlements
    }

    /// Feeds batches to JS until the `Closed` event has been delivered. The next batch goes
    /// only after JS has handled the last; JS wakes this task then only if events are waiting,
    /// so a quiet connection costs no extra wake-up per message.
    pub async fn run(self: Arc<Self>, callback: Arc<EventsFn>) {
        loop {
            if self.gone.load(Ordering::Acquire) {
                return;
            }
            if self.in_js.load(Ordering::Acquire) {
                self.ready.notified().await;
                continue;
            }
            let batch = match self.held.load(Ordering::Acquire) {
                true => self.take_settlements(),
                false => self.take_batch(),
            };
            if batch.is_empty() {
                self.ready.notified().await;
                continue;
            }
            self.room.notify_one();
            let last = batch.iter().any(|e| matches!(e, Event::Closed));
            self.in_js.store(true, Ordering::Release);
            *self.handed.lock() = batch;
            // Weak: a call Node drops unrun (see `EventsFn`) keeps only this pointer's allocation.
            let delivery = Arc::downgrade(&self);
            // A throw in JS is caught there; this runs on the JS thread once it returned. While
            // JS holds the batches back, the queue fills and the connection stops reading.
            let status = callback.call_with_return_value((), ThreadsafeFunctionCallMode::NonBlocking, move |paused, _| {
                if let Some(delivery) = delivery.upgrade() {
                    match paused {
                        Ok(Some(true)) => delivery.hold(),
                        _ => delivery.resume(),
                    }
                }
                Ok(())
            });
            // Anything but Ok means Node is shutting down.
            if last || status != Status::Ok {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn message(observers: Vec<u32>, topic: &str, payload: &str, qos: QoS) -> Event {
        Event::Message { observers, publish: Publish::new(topic, qos, payload) }
    }

    #[test]
    fn a_batch_packs_completed_publishes_and_messages_into_one_frame_and_keeps_other_events_in_order() {
        let batch = vec![
            message(vec![1, 2], "a", "xy", QoS::AtLeastOnce),
            Event::Published { op: 7 },
            message(vec![3], "b", "z", QoS::AtMostOnce),
            message(vec![3], "a", "", QoS::AtMostOnce),
            Event::Writable,
            Event::PublishFailed { op: 8, error: PubSubError::Closed, sent: true },
        ];
        let FnArgs { data: (frame, topics, events) } = batch_args(batch);
        let frame = frame.expect("a frame");
        // Word count, published count, message count; the published op ids; per message its
        // topic index, flags (qos 1 = 1), payload length, observer count and observer ids.
        let words = [20, 1, 3, 7, 0, 1, 2, 2, 1, 2, 1, 0, 1, 1, 3, 0, 0, 0, 1, 3];
        assert_eq!(frame.words, words);
        let payloads: Vec<u8> = frame.payloads.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(payloads, b"xyz");
        assert_eq!(frame.payload_bytes, 3);
        assert_eq!(topics.expect("topics"), ["a", "b"]);
        let events = events.expect("events");
        assert_eq!(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["writable", "published"]);
        assert_eq!((events[1].id, events[1].code.as_deref(), events[1].sent), (Some(8), Some("ERR_CLOSED"), Some(true)));
    }

    #[test]
    fn a_batch_of_other_events_has_no_frame() {
        let FnArgs { data: (frame, topics, events) } = batch_args(vec![Event::State(ConnectionState::Connected), Event::Closed]);
        assert!(frame.is_none() && topics.is_none());
        let events = events.expect("events");
        assert_eq!((events[0].kind.as_str(), events[0].state.as_deref()), ("state", Some("Connected")));
        assert_eq!(events[1].kind, "closed");
    }

    #[test]
    fn a_batch_of_messages_alone_or_of_completed_publishes_alone_has_a_frame() {
        let FnArgs { data: (frame, topics, events) } = batch_args(vec![message(vec![4], "a", "xy", QoS::AtMostOnce)]);
        assert_eq!(frame.expect("a frame").words, [8, 0, 1, 0, 0, 2, 1, 4]);
        assert_eq!(topics.expect("topics"), ["a"]);
        assert!(events.is_none());
        let FnArgs { data: (frame, topics, events) } = batch_args(vec![Event::Published { op: 9 }]);
        assert_eq!(frame.expect("a frame").words, [4, 1, 0, 9]);
        assert!(topics.is_none() && events.is_none());
    }

    #[test]
    fn a_message_s_flags_carry_its_qos_retain_and_dup() {
        let flagged = |qos, retain, dup| {
            let mut publish = Publish::new("t", qos, "x");
            publish.retain = retain;
            publish.dup = dup;
            let FnArgs { data: (frame, _, _) } = batch_args(vec![Event::Message { observers: vec![1], publish }]);
            frame.expect("a frame").words[4]
        };
        assert_eq!(flagged(QoS::AtMostOnce, false, false), 0);
        assert_eq!(flagged(QoS::ExactlyOnce, false, false), 2);
        assert_eq!(flagged(QoS::AtMostOnce, true, false), 4);
        assert_eq!(flagged(QoS::AtMostOnce, false, true), 8);
        assert_eq!(flagged(QoS::AtLeastOnce, true, true), 1 | 4 | 8);
        assert_eq!(flagged(QoS::ExactlyOnce, true, true), 2 | 4 | 8);
    }

    /// A message whose topic and payload take `bytes` in the queue.
    fn message_of(topic_len: usize, bytes: usize) -> Event {
        Event::Message { observers: vec![1], publish: Publish::new("t".repeat(topic_len), QoS::AtMostOnce, vec![0u8; bytes - topic_len]) }
    }

    /// Whether the queue takes `event` now, rather than make the connection task wait for room.
    async fn takes(delivery: &Delivery, event: Event) -> bool {
        tokio::time::timeout(Duration::from_millis(50), delivery.push_message(event, || false)).await.is_ok()
    }

    #[tokio::test]
    async fn the_queue_holds_at_most_4_mib_of_messages_topics_included() {
        let delivery = Delivery::default();
        for _ in 0..4 {
            assert!(takes(&delivery, message_of(100, MAX_QUEUED_BYTES / 4)).await);
        }
        assert_eq!(delivery.queue.lock().bytes, 4 * 1024 * 1024);
        // Full to the byte: a message of 2 bytes waits for room.
        assert!(!takes(&delivery, message_of(1, 2)).await, "the queue took a message beyond 4 MiB");
        // JS took a batch (one message of 1 MiB): room again.
        assert_eq!(delivery.take_batch().len(), 1);
        assert_eq!(delivery.queue.lock().bytes, 3 * 1024 * 1024);
        assert!(takes(&delivery, message_of(1, 2)).await);
        assert_eq!(delivery.queue.lock().messages, 4);
        // However large, a message is taken into an empty queue.
        assert!(takes(&Delivery::default(), message_of(1, MAX_QUEUED_BYTES + 1)).await);
    }

    #[tokio::test]
    async fn while_the_instance_awaits_answers_the_queue_takes_up_to_64_mib_then_waits() {
        let delivery = Delivery::default();
        for _ in 0..4 {
            assert!(takes(&delivery, message_of(100, MAX_QUEUED_BYTES / 4)).await);
        }
        assert!(!takes(&delivery, message_of(1, 2)).await, "full, and nothing awaited");
        let awaiting = |event| async { tokio::time::timeout(Duration::from_millis(50), delivery.push_message(event, || true)).await.is_ok() };
        for _ in 0..60 {
            assert!(awaiting(message_of(100, 1024 * 1024)).await);
        }
        assert_eq!(delivery.queue.lock().bytes, MAX_QUEUED_BYTES_AWAITING);
        assert!(!awaiting(message_of(1, 2)).await, "the queue took a message beyond 64 MiB");
    }

    #[test]
    fn while_js_holds_messages_back_it_gets_what_settles_publishes_and_the_rest_keeps_its_order() {
        let delivery = Delivery::default();
        delivery.push(message(vec![1], "a", "1", QoS::AtLeastOnce));
        delivery.push(Event::Published { op: 7 });
        delivery.push(Event::State(ConnectionState::ConnectionDisrupted));
        delivery.push(message(vec![1], "a", "2", QoS::AtLeastOnce));
        delivery.push(Event::PublishFailed { op: 8, error: PubSubError::Closed, sent: false });
        delivery.push(Event::Closed);
        let settled = delivery.take_settlements();
        assert!(matches!(settled.as_slice(), [Event::Published { op: 7 }, Event::PublishFailed { op: 8, .. }]), "{settled:?}");
        assert!(delivery.take_settlements().is_empty());
        let mut rest = Vec::new();
        loop {
            let batch = delivery.take_batch();
            if batch.is_empty() {
                break;
            }
            rest.extend(batch);
        }
        let order: Vec<&str> = rest
            .iter()
            .map(|e| match e {
                Event::Message { .. } => "message",
                Event::State(_) => "state",
                Event::Closed => "closed",
                _ => "other",
            })
            .collect();
        assert_eq!(order, ["message", "state", "message", "closed"]);
    }

    #[test]
    fn a_batch_carries_at_most_256_kib_of_messages_and_at_least_one() {
        let delivery = Delivery::default();
        for _ in 0..5 {
            delivery.push(message_of(1, 64 * 1024));
        }
        delivery.push(message_of(1, MAX_BATCH_BYTES + 1));
        delivery.push(message_of(1, 1));
        let sizes = |batch: Vec<Event>| batch.iter().map(message_size).collect::<Vec<_>>();
        assert_eq!(sizes(delivery.take_batch()), [64 * 1024; 4], "256 KiB exactly");
        assert_eq!(sizes(delivery.take_batch()), [64 * 1024], "the next would take it over 256 KiB");
        assert_eq!(sizes(delivery.take_batch()), [MAX_BATCH_BYTES + 1], "alone, whatever its size");
        assert_eq!(sizes(delivery.take_batch()), [1]);
        assert!(delivery.take_batch().is_empty());
    }

    #[test]
    fn a_batch_carries_at_most_4096_events() {
        let delivery = Delivery::default();
        for op in 0..5_000 {
            delivery.push(Event::Published { op });
        }
        assert_eq!(delivery.take_batch().len(), MAX_BATCH);
        assert_eq!(delivery.take_batch().len(), 5_000 - MAX_BATCH);
        // Packed events and the other events after them count together.
        delivery.push(Event::Published { op: 0 });
        for _ in 0..5_000 {
            delivery.push(Event::Writable);
        }
        let batch = delivery.take_batch();
        assert_eq!(batch.len(), MAX_BATCH);
        assert!(matches!(batch.first(), Some(Event::Published { .. })) && matches!(batch.last(), Some(Event::Writable)));
    }

    #[test]
    fn js_is_behind_from_64_messages_waiting_whatever_else_waits() {
        let delivery = Delivery::default();
        delivery.push(Event::State(ConnectionState::Connected));
        for _ in 1..BEHIND_MESSAGES {
            delivery.push(message(vec![1], "t", "x", QoS::AtMostOnce));
            delivery.push(Event::Published { op: 1 });
        }
        assert!(!delivery.is_behind(), "63 messages");
        delivery.push(message(vec![1], "t", "x", QoS::AtMostOnce));
        assert!(delivery.is_behind(), "64 messages");
        // JS took the state change, then the messages and completions.
        assert!(matches!(delivery.take_batch().as_slice(), [Event::State(_)]));
        assert_eq!(delivery.take_batch().len(), 2 * BEHIND_MESSAGES - 1);
        assert!(!delivery.is_behind());
    }

    #[test]
    fn a_disruption_carries_its_error_and_the_wait_in_milliseconds() {
        let error = PubSubError::Connection("Connection refused".into());
        let disrupted = Event::Disrupted { error, retry_in: Duration::from_millis(1_234) };
        let FnArgs { data: (frame, _, events) } = batch_args(vec![disrupted]);
        assert!(frame.is_none());
        let event = &events.expect("events")[0];
        assert_eq!(event.kind, "disrupted");
        assert_eq!(event.code.as_deref(), Some("ERR_CONNECTION"));
        assert_eq!(event.message.as_deref(), Some("Connection refused"));
        assert_eq!(event.retry_in_ms, Some(1_234));
    }

    #[tokio::test]
    async fn once_the_js_side_is_gone_a_full_queue_no_longer_holds_the_connection_task() {
        let delivery = Arc::new(Delivery::default());
        let js_side = JsSide::new(&delivery);
        for _ in 0..MAX_QUEUED_MESSAGES {
            delivery.push_message(message(vec![1], "t", "x", QoS::AtMostOnce), || false).await;
        }
        // Full: the next message waits for room.
        let waiting = tokio::time::timeout(Duration::from_millis(50), delivery.push_message(message(vec![1], "t", "x", QoS::AtMostOnce), || false));
        assert!(waiting.await.is_err());
        // Node finalized the events function (its environment was torn down).
        drop(js_side);
        let dropped = tokio::time::timeout(Duration::from_secs(5), delivery.push_message(message(vec![1], "t", "x", QoS::AtMostOnce), || false));
        assert!(dropped.await.is_ok(), "push_message still waits for room nobody will make");
        assert_eq!(delivery.queue.lock().messages, MAX_QUEUED_MESSAGES);
    }

    #[test]
    fn writable_reaches_js_before_the_events_already_waiting() {
        let delivery = Delivery::default();
        for op in 0..3 {
            delivery.push(Event::Published { op });
        }
        delivery.push(Event::State(ConnectionState::Connected));
        delivery.push_writable();
        let first = delivery.take_batch();
        assert!(matches!(first.as_slice(), [Event::Writable]), "{first:?}");
        // The rest as they were queued.
        let rest = delivery.take_batch();
        assert!(
            matches!(
                rest.as_slice(),
                [Event::Published { op: 0, .. }, Event::Published { op: 1, .. }, Event::Published { op: 2, .. }, Event::State(ConnectionState::Connected)]
            ),
            "{rest:?}"
        );
    }

    #[test]
    fn a_failure_is_unseen_until_js_takes_the_batch_of_its_own_failed_event() {
        let delivery = Delivery::default();
        assert!(delivery.unseen_failure().is_none());
        delivery.push_failed(PubSubError::Connection("first".into()), vec![1, 2]);
        let first = delivery.take_batch();
        delivery.push_failed(PubSubError::Connection("second".into()), vec![]);
        let second = delivery.take_batch();
        assert!(delivery.unseen_failure().is_some(), "taken by the delivery task, not yet by JS");
        // JS begins the first failure's batch: the second is still unseen.
        *delivery.handed.lock() = first;
        let FnArgs { data: (_, _, events) } = batch_args(delivery.take_handed());
        let events = events.expect("the failed event");
        assert_eq!((events[0].kind.as_str(), events[0].observers.as_deref()), ("failed", Some(&[1, 2][..])));
        assert_eq!(delivery.unseen_failure().map(|e| e.to_string()), Some(PubSubError::Connection("second".into()).to_string()));
        *delivery.handed.lock() = second;
        delivery.take_handed();
        assert!(delivery.unseen_failure().is_none());
    }
}
