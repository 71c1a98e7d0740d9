//! The napi surface: thin exports only. Each concern lives in its own module:
//! options, connection (the event loop task), client (operations), subscriptions (routing),
//! filter_index (the filters a topic matches), outbox (ack correlation), delivery (batched
//! events to JS), topic, tls, errors.

mod aws_iot_limits;
mod client;
mod connection;
mod credentials;
mod delivery;
mod errors;
mod filter_index;
mod options;
mod outbox;
mod proxy;
mod reconnect;
#[cfg(test)]
mod rumqttc_state_tests;
mod signing;
mod subscriptions;
mod tls;
mod topic;
mod unclaimed;

use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, BufferSlice, Env, Function, Uint32Array, Uint32ArraySlice};
use napi_derive::napi;

use crate::delivery::{BatchArgs, Delivery, EventsFn, JsSide};
use crate::errors::{js, ErrorCode};

/// One worker thread for every instance's tasks: the JS thread, the broker and this share the
/// machine's cores, and a single worker saves a thread hop (and its wake-up latency) between
/// the connection task and the delivery task, and memory per thread.
#[napi_derive::module_init]
fn init() {
    if let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
    }
}

/// What the JS layer tells the native client besides the user's plain-data options.
#[napi(object)]
pub struct NativeSetup {
    /// `'mqtt'` (any broker) or `'iot'` (AWS IoT Core, SigV4-signed).
    pub provider: String,
    /// The will message, already encoded.
    pub will_payload: Option<Buffer>,
    /// The user gave a function as `credentials`: ask JS for them before each connect.
    pub credentials_function: bool,
}

/// `stats()` as Rust knows them; JS adds what it holds itself.
#[napi(object)]
pub struct NativeStats {
    pub connection_state: String,
    pub queued_operations: u32,
    pub queued_bytes: f64,
    pub in_flight_operations: u32,
    pub in_flight_bytes: f64,
    pub reconnects: f64,
    pub messages_received: f64,
    pub messages_sent: f64,
    pub dropped_unrouted: f64,
    pub dropped_offline: f64,
    pub dropped_queue_full: f64,
    pub dropped_connection_lost: f64,
}

/// One MQTT connection, shared by every subscription of a JS `PubSub` instance.
#[napi]
pub struct NativeClient {
    client: client::Client,
    events: Arc<EventsFn>,
}

#[napi]
impl NativeClient {
    /// `options` is the plain-data part of the user's options; `onEvents` receives batches
    /// of events (see `delivery::batch_args`) and returns `true` to hold the next ones back
    /// until `resumeDelivery`.
    #[napi(
        constructor,
        ts_args_type = "options: any, setup: NativeSetup, onEvents: (frame: ArrayBuffer | null, topics: Array<string> | null, events: Array<NativeEvent> | null) => boolean | undefined"
    )]
    pub fn new(options: serde_json::Value, setup: NativeSetup, on_events: Function<BatchArgs, Option<bool>>) -> napi::Result<Self, ErrorCode> {
        let provider = js(options::Provider::from_name(&setup.provider))?;
        let options = js(options::ClientOptions::from_js(&options, provider, setup.credentials_function))?;
        let delivery = Arc::new(Delivery::default());
        let js_side = JsSide::new(&delivery);
        let events: EventsFn = on_events
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_| Ok(js_side.batch_args()))
            .map_err(|e| napi::Error::new("ERR_INTERNAL", e.reason))?;
        let events = Arc::new(events);
        let will_payload = setup.will_payload.map(|b| b.to_vec()).unwrap_or_default();
        let client = js(client::Client::new(options, will_payload, delivery, events.clone()))?;
        Ok(Self { client, events })
    }

    #[napi(getter)]
    pub fn client_id(&self) -> String {
        self.client.client_id.clone()
    }

    /// Publish operations packed by JS (see `client::PublishBatch`). Returns how many were
    /// taken; the rest wait for the `writable` event. The arrays are borrowed for the call
    /// (slices): owning them would cost a napi reference each, per call.
    #[napi]
    pub fn publish_batch(&self, words: Uint32ArraySlice, topics: Vec<String>, payloads: BufferSlice) -> napi::Result<u32, ErrorCode> {
        let batch = client::PublishBatch { words: &words, topics: &topics, payloads: &payloads };
        batch.check().map_err(|reason| napi::Error::new("ERR_INTERNAL", reason))?;
        Ok(self.client.publish_batch(batch) as u32)
    }

    /// Takes publishes `ops` back as far as they can be (their AbortSignal was aborted). For
    /// each, three numbers of packets (one per topic): never written, written before (the broker
    /// may have them), and past recall (they settle the publish as usual).
    #[napi]
    pub fn withdraw(&self, ops: Uint32Array) -> Uint32Array {
        let counts: Vec<u32> = self.client.withdraw(&ops).into_iter().flat_map(|w| [w.unsent as u32, w.written as u32, w.held as u32]).collect();
        Uint32Array::new(counts)
    }

    #[napi]
    pub fn subscribe(&self, observer: u32, filters: Vec<String>, qos: u32) -> napi::Result<(), ErrorCode> {
        js(self.client.subscribe(observer, filters, qos))
    }

    /// True when this left nobody subscribed and a graceful disconnect has begun.
    #[napi]
    pub fn unsubscribe(&self, observer: u32) -> bool {
        self.client.unsubscribe(observer)
    }

    /// Lets the next batch of events come after the callback returned `true` (held back).
    #[napi]
    pub fn resume_delivery(&self) {
        self.client.resume_delivery()
    }

    /// Starts a graceful disconnect if nobody is subscribed; true when one has begun.
    #[napi]
    pub fn disconnect_when_idle(&self) -> bool {
        self.client.disconnect_when_idle()
    }

    /// The credentials function's value for the `credentials` event `request`.
    #[napi]
    pub fn credentials_resolved(&self, request: u32, credentials: serde_json::Value) {
        self.client.answer_credentials(request, Ok(&credentials))
    }

    /// Why the credentials function failed for the `credentials` event `request`. `malformed`:
    /// it answered a value JS could not hand over (asking again will not help), rather than
    /// failing to answer.
    #[napi]
    pub fn credentials_rejected(&self, request: u32, reason: String, malformed: Option<bool>) {
        self.client.answer_credentials(request, Err((reason, malformed.unwrap_or(false))))
    }

    #[napi]
    pub fn stats(&self) -> NativeStats {
        let (queued, in_flight, counters, state) = self.client.stats();
        NativeStats {
            connection_state: state.as_str().to_string(),
            queued_operations: queued.operations as u32,
            queued_bytes: queued.bytes as f64,
            in_flight_operations: in_flight.operations as u32,
            in_flight_bytes: in_flight.bytes as f64,
            reconnects: counters.reconnects as f64,
            messages_received: counters.messages_received as f64,
            messages_sent: counters.messages_sent as f64,
            dropped_unrouted: counters.dropped_unrouted as f64,
            dropped_offline: counters.dropped_offline as f64,
            dropped_queue_full: counters.dropped_queue_full as f64,
            dropped_connection_lost: counters.dropped_connection_lost as f64,
        }
    }

    #[napi]
    pub fn close(&self) {
        self.client.close()
    }

    /// Whether this instance keeps Node's event loop alive (JS says so while anything is
    /// subscribed or pending, as a socket would).
    #[napi]
    pub fn keep_alive(&self, env: Env, keep: bool) {
        // SAFETY: called on the JS thread with a live env; the function outlives this call.
        unsafe {
            let raw = self.events.raw();
            if keep {
                napi::sys::napi_ref_threadsafe_function(env.raw(), raw);
            } else {
                napi::sys::napi_unref_threadsafe_function(env.raw(), raw);
            }
        }
    }
}

/// The option names a provider (`'mqtt'` or `'iot'`) accepts: the one list, for the older
/// surface's `configure`.
#[napi]
pub fn known_options(provider: String) -> napi::Result<Vec<String>, ErrorCode> {
    let provider = js(options::Provider::from_name(&provider))?;
    Ok(provider.known_options().into_iter().map(String::from).collect())
}

/// Whether an MQTT topic filter (with `+`/`#`) matches a topic name, as delivery decides it: a
/// shared subscription (`$share/<group>/<filter>`) by the filter after its group.
#[napi]
pub fn mqtt_topic_match(filter: String, topic: String) -> bool {
    topic::topic_matches(topic::routing_filter(&filter), &topic)
}
