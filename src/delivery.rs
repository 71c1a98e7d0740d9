//! Everything JS learns from Rust (messages, settled operations, state changes) goes through
//! one ordered, bounded queue and crosses into JS in batches: one ThreadsafeFunction call per
//! batch, never one per message, and the next batch only after JS has handled the last. When
//! the queue is full the connection task stops reading the socket, so a slow subscriber
//! pushes back on TCP and the broker instead of growing memory.

use std::collections::VecDeque;
use std::sync::Arc;

use napi::bindgen_prelude::Buffer;
use napi::threadsafe_function::ThreadsafeFunction;
use napi::Status;
use napi_derive::napi;
use parking_lot::Mutex;
use rumqttc::QoS;
use tokio::sync::Notify;

use crate::connection::ConnectionState;
use crate::errors::PubSubError;

/// Messages (and their bytes) that may wait for JS before we stop reading the socket.
const MAX_QUEUED_MESSAGES: usize = 8_192;
const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// Events handed to JS in one call.
const MAX_BATCH: usize = 4_096;

#[derive(Debug)]
pub enum Event {
    Message { observers: Vec<u32>, topic: String, payload: Vec<u8>, qos: QoS, retain: bool, dup: bool },
    /// A publish operation finished (all its topics report separately).
    Published { op: u32, error: Option<PubSubError> },
    /// An observer's filters are all acknowledged, or one was refused.
    Subscribed { observer: u32, error: Option<PubSubError> },
    /// Every observer fails with this error (the instance cannot go on).
    Failed { error: PubSubError },
    State(ConnectionState),
    /// The publish backlog has room again after a publish was turned away.
    Writable,
    /// The connection task waits for the credentials function's answer to `request`.
    CredentialsWanted { request: u32 },
    /// The instance is closed; the last event.
    Closed,
}

/// The shape JS receives: one object per event, `kind` says which fields are set.
#[napi(object)]
pub struct NativeEvent {
    pub kind: String,
    pub id: Option<u32>,
    pub observers: Option<Vec<u32>>,
    pub topic: Option<String>,
    pub payload: Option<Buffer>,
    pub qos: Option<u32>,
    pub retain: Option<bool>,
    pub dup: Option<bool>,
    pub state: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}

impl NativeEvent {
    fn new(kind: &'static str) -> Self {
        Self {
            kind: kind.to_string(),
            id: None,
            observers: None,
            topic: None,
            payload: None,
            qos: None,
            retain: None,
            dup: None,
            state: None,
            code: None,
            message: None,
        }
    }

    fn with_error(mut self, error: Option<PubSubError>) -> Self {
        if let Some(error) = error {
            self.code = Some(error.code().to_string());
            self.message = Some(error.to_string());
        }
        self
    }
}

impl From<Event> for NativeEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Message { observers, topic, payload, qos, retain, dup } => Self {
                observers: Some(observers),
                topic: Some(topic),
                payload: Some(payload.into()),
                qos: Some(qos as u32),
                retain: Some(retain),
                dup: Some(dup),
                ..Self::new("message")
            },
            Event::Published { op, error } => Self { id: Some(op), ..Self::new("published") }.with_error(error),
            Event::Subscribed { observer, error } => {
                Self { id: Some(observer), ..Self::new("subscribed") }.with_error(error)
            }
            Event::Failed { error } => Self::new("failed").with_error(Some(error)),
            Event::State(state) => Self { state: Some(state.as_str().to_string()), ..Self::new("state") },
            Event::Writable => Self::new("writable"),
            Event::CredentialsWanted { request } => Self { id: Some(request), ..Self::new("credentials") },
            Event::Closed => Self::new("closed"),
        }
    }
}

/// The JS callback: weak, so it keeps Node alive only while `keep_alive(true)` says so.
pub type EventsFn = ThreadsafeFunction<Vec<Event>, (), Vec<NativeEvent>, Status, false, true>;

#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    messages: usize,
    bytes: usize,
}

/// The bytes a message holds in the queue (0 for other events).
fn message_size(event: &Event) -> usize {
    match event {
        Event::Message { payload, topic, .. } => payload.len() + topic.len(),
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
    ready: Notify,
    room: Notify,
}

impl Delivery {
    /// Queues an event without waiting: control events, which are few and must not be lost, and
    /// the odd message that cannot wait (read just before a connection failed).
    pub fn push(&self, event: Event) {
        self.queue.lock().add(event);
        self.ready.notify_one();
    }

    /// Queues a message, waiting while the queue is full. Only the connection task calls it.
    pub async fn push_message(&self, event: Event) {
        let size = message_size(&event);
        loop {
            {
                let mut queue = self.queue.lock();
                if queue.messages == 0 || (queue.messages < MAX_QUEUED_MESSAGES && queue.bytes + size <= MAX_QUEUED_BYTES) {
                    queue.add(event);
                    drop(queue);
                    self.ready.notify_one();
                    return;
                }
            }
            self.room.notified().await;
        }
    }

    fn take_batch(&self) -> Vec<Event> {
        let mut queue = self.queue.lock();
        let n = queue.events.len().min(MAX_BATCH);
        let batch: Vec<Event> = queue.events.drain(..n).collect();
        for event in &batch {
            if let Event::Message { .. } = event {
                queue.messages -= 1;
                queue.bytes -= message_size(event);
            }
        }
        batch
    }

    /// Feeds batches to JS until the `Closed` event has been delivered.
    pub async fn run(self: Arc<Self>, callback: Arc<EventsFn>) {
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                self.ready.notified().await;
                continue;
            }
            self.room.notify_one();
            let last = batch.iter().any(|e| matches!(e, Event::Closed));
            // A throw in JS is caught there; an Err here means Node is shutting down.
            if callback.call_async_catch(batch).await.is_err() && callback.aborted() {
                return;
            }
            if last {
                return;
            }
        }
    }
}
