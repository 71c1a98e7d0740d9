//! The client behind one `PubSub` instance: the operations JS calls (on the JS thread) and
//! the state they share with the connection task.

use std::sync::Arc;

use parking_lot::Mutex;
use rumqttc::{AsyncClient, NetworkOptions, QoS};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::aws_iot_limits::{self, PublishPace, QosOf};
use crate::connection::{self, ConnectionState};
use crate::credentials::CredentialSource;
use crate::delivery::{Delivery, Event, EventsFn};
use crate::errors::{PubSubError, Result};
use crate::options::{parse_qos, ClientOptions, MAX_PACKET_BYTES, MAX_WEBSOCKET_PACKET_BYTES};
use crate::outbox::{Load, Outbox, Rejected, Request, Withdrawn};
use crate::signing::Presigner;
use crate::subscriptions::Subscriptions;
use crate::topic::{validate_filter, validate_topic};
use crate::unclaimed::Unclaimed;

/// Publish operations handed over from JS in one call, as JS packs them: `words` holds one
/// record per operation, `[op, flags, payload length, topic count, topic index…]` (flags is
/// `qos | retain << 2 | withdrawn << 3`; the indexes point into `topics`, the batch's distinct
/// topics), and
/// `payloads` holds the payloads end to end, in the same order.
pub struct PublishBatch<'a> {
    pub words: &'a [u32],
    pub topics: &'a [String],
    pub payloads: &'a [u8],
}

/// Words of a record before its topic indexes.
const RECORD_HEADER_WORDS: usize = 4;

/// One operation of a `PublishBatch`.
pub struct BatchedPublish<'a> {
    pub op: u32,
    /// Indexes into `topic_table`, the batch's distinct topics.
    topic_indexes: &'a [u32],
    topic_table: &'a [String],
    pub payload: &'a [u8],
    pub qos: u32,
    pub retain: bool,
    /// Aborted while JS held it: taken, and neither sent nor settled (JS settled it).
    pub withdrawn: bool,
}

impl<'a> BatchedPublish<'a> {
    /// Its topics, in order (looked up, not collected: this runs per message).
    pub fn topics(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.topic_indexes.iter().filter_map(|&t| self.topic_table.get(t as usize)).map(String::as_str)
    }

    pub fn topic_count(&self) -> usize {
        self.topic_indexes.len()
    }
}

impl<'a> PublishBatch<'a> {
    /// The record starting at `word`: its header words, its topic indexes and where the next
    /// record starts.
    fn record_at(&self, word: usize) -> std::result::Result<(&'a [u32], &'a [u32], usize), &'static str> {
        let header = self.words.get(word..word + RECORD_HEADER_WORDS).ok_or("publish batch record cut short")?;
        let end = word + RECORD_HEADER_WORDS + header[3] as usize;
        let topic_indexes = self.words.get(word + RECORD_HEADER_WORDS..end).ok_or("publish batch topic indexes cut short")?;
        Ok((header, topic_indexes, end))
    }

    /// Checks that the records are whole, their topic indexes in range and their payload
    /// lengths add up to the payloads (JS packs them; a mismatch is our bug).
    pub fn check(&self) -> std::result::Result<(), String> {
        let (mut word, mut bytes) = (0usize, 0u64);
        while word < self.words.len() {
            let (header, topic_indexes, end) = self.record_at(word)?;
            if topic_indexes.iter().any(|&i| i as usize >= self.topics.len()) {
                return Err("publish batch topic index out of range".to_string());
            }
            bytes += u64::from(header[2]);
            word = end;
        }
        if bytes != self.payloads.len() as u64 {
            return Err(format!("publish batch payload lengths add up to {bytes} bytes, not {}", self.payloads.len()));
        }
        Ok(())
    }

    /// The operations of a checked batch.
    pub fn iter(&self) -> impl Iterator<Item = BatchedPublish<'a>> + '_ {
        let (mut word, mut payload_start) = (0usize, 0usize);
        std::iter::from_fn(move || {
            let (&[op, flags, length, _], topic_indexes, end) = self.record_at(word).ok()? else { return None };
            let payload_end = payload_start + length as usize;
            let payload = self.payloads.get(payload_start..payload_end)?;
            (word, payload_start) = (end, payload_end);
            Some(BatchedPublish {
                op,
                topic_indexes,
                topic_table: self.topics,
                payload,
                qos: flags & 3,
                retain: flags & 4 != 0,
                withdrawn: flags & 8 != 0,
            })
        })
    }
}

/// Requests rumqttc's channel holds; the rest wait in the outbox's backlog.
const REQUEST_CHANNEL_CAPACITY: usize = 1_024;
/// Publishes the backlog takes before `publish_batch` asks JS to wait for `writable`.
pub const MAX_BACKLOG: usize = 4_096;

/// Running totals for `stats()`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub reconnects: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    /// Incoming messages no observer wanted (arrived just after an unsubscribe).
    pub dropped_unrouted: u64,
    /// Publishes refused while the connection was down (offline queue policy).
    pub dropped_offline: u64,
    /// Publishes refused because the offline queue was full.
    pub dropped_queue_full: u64,
    /// Publishes accepted, then failed when the connection was lost before they were sent.
    pub dropped_connection_lost: u64,
}

pub struct Core {
    pub outbox: Outbox,
    pub subs: Subscriptions,
    pub state: ConnectionState,
    pub closed: bool,
    /// JS was told to hold publishes; tell it when there is room.
    pub writable_wanted: bool,
    /// The last observer left while the connection was not up: end it once it is.
    pub idle_disconnect_due: bool,
    pub counters: Counters,
    /// A persistent session's messages that no observer wanted yet; `None` for a clean session.
    pub unclaimed: Option<Unclaimed>,
    /// The instance has a will and has connected: the connection is its presence, kept (and
    /// made again after a loss) with nothing subscribed, until it is closed, ended at Node's
    /// exit, or fails for good.
    pub will_armed: bool,
    /// AWS IoT: the last observer left this connection, which stays up until then for the next
    /// subscription (`aws_iot_limits::IDLE_LINGER`).
    pub linger_until: Option<Instant>,
    /// AWS IoT: when the last connection attempt ended (`aws_iot_limits::MIN_CONNECT_INTERVAL`).
    pub last_connect: Option<Instant>,
}

impl Core {
    /// Whether the instance needs a connection now.
    pub fn wants_connection(&self) -> bool {
        !self.closed && (self.subs.has_observers() || !self.outbox.is_idle() || self.will_armed)
    }
}

/// What an AWS IoT instance signs its connections with.
pub struct AwsAuth {
    pub credentials: CredentialSource,
    pub presigner: Arc<Presigner>,
}

pub struct Shared {
    pub core: Mutex<Core>,
    pub requests: AsyncClient,
    pub delivery: Arc<Delivery>,
    /// Wakes the connection task: there is work while idle, the instance closed, or the last
    /// observer left.
    pub attention: Notify,
    pub options: ClientOptions,
    /// Set for the AWS IoT provider.
    pub aws: Option<AwsAuth>,
}

impl Shared {
    pub fn set_state(&self, core: &mut Core, state: ConnectionState) {
        if core.state != state {
            core.state = state;
            if state == ConnectionState::Disconnected {
                // No connection is coming that this could end.
                core.idle_disconnect_due = false;
            }
            self.delivery.push(Event::State(state));
        }
    }

    /// Rejects every publish still in the outbox with `error`.
    fn reject_pending_publishes(&self, core: &mut Core, error: &PubSubError) {
        for Rejected { op, sent } in core.outbox.abandon() {
            self.delivery.push(Event::PublishFailed { op, error: error.clone(), sent });
        }
    }

    /// Settles everything outstanding with `error`; the observers, and the publishes JS still
    /// holds (the backlog was full), are failed by JS on the `Failed` event.
    pub fn fail_everything(&self, core: &mut Core, error: PubSubError) {
        self.reject_pending_publishes(core, &error);
        core.writable_wanted = false;
        let observers = core.subs.clear();
        self.delivery.push_failed(error, observers);
    }

    /// Ends a connection nobody is subscribed on, with DISCONNECT once nothing is pending.
    /// Returns true when that has begun (a `Disconnected` state event will follow). While the
    /// connection is being (re)established, it is ended once it is up.
    pub fn begin_idle_disconnect(&self, core: &mut Core) -> bool {
        if core.closed || core.subs.has_observers() {
            return false;
        }
        core.will_armed = false;
        match core.state {
            ConnectionState::Connected => {
                core.idle_disconnect_due = false;
                // Amplify's sequence: Connected → ConnectedPendingDisconnect → Disconnected.
                self.set_state(core, ConnectionState::ConnectedPendingDisconnect);
                self.attention.notify_one();
                true
            }
            ConnectionState::Connecting | ConnectionState::ConnectionDisrupted => {
                core.idle_disconnect_due = true;
                false
            }
            // A connection is about to be made for what is pending (the UNSUBSCRIBE at least).
            ConnectionState::Disconnected => {
                core.idle_disconnect_due = core.wants_connection();
                false
            }
            ConnectionState::ConnectedPendingDisconnect => false,
        }
    }

    /// If JS was told to hold its publishes (the backlog was full), tells it to hand them over:
    /// what happens to them is decided now (queued, sent, or rejected).
    pub fn let_js_publish(&self, core: &mut Core) {
        if core.writable_wanted {
            core.writable_wanted = false;
            self.delivery.push_writable();
        }
    }
}

pub struct Client {
    shared: Arc<Shared>,
    pub client_id: String,
}

impl Client {
    /// `delivery` hands its events to JS through `callback` (see `delivery::JsSide`).
    pub fn new(options: ClientOptions, will_payload: Vec<u8>, delivery: Arc<Delivery>, callback: Arc<EventsFn>) -> Result<Self> {
        let mut mqtt_options = options.to_mqtt_options(will_payload)?;
        let aws = options.aws.clone().map(|aws| AwsAuth {
            credentials: CredentialSource::new(aws.credentials, aws.region.clone()),
            presigner: Arc::new(Presigner::new(aws.region)),
        });
        if let Some(aws) = &aws {
            // rumqttc runs this before every WebSocket connect: each one gets a fresh signature.
            let presigner = aws.presigner.clone();
            mqtt_options.set_request_modifier(move |request| {
                let signed = presigner.sign_request(request);
                async move { signed }
            });
        }
        let (requests, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CHANNEL_CAPACITY);
        let mut network = NetworkOptions::new();
        // Without TCP_NODELAY small QoS 1 exchanges wait on Nagle's algorithm.
        network.set_tcp_nodelay(true);
        // rumqttc counts whole seconds; rounded up, so that ours (`attempt`) is the one that fires.
        network.set_connection_timeout(options.connect_timeout.as_millis().div_ceil(1000).max(1) as u64);
        eventloop.set_network_options(network);

        let client_id = options.client_id.clone();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                outbox: Outbox::new(!options.clean_session, options.subscribe_limit(), options.aws_iot_broker.then(PublishPace::default)),
                subs: Subscriptions::default(),
                state: ConnectionState::Disconnected,
                closed: false,
                writable_wanted: false,
                idle_disconnect_due: false,
                counters: Counters::default(),
                unclaimed: (!options.clean_session).then(Unclaimed::default),
                will_armed: false,
                linger_until: None,
                last_connect: None,
            }),
            requests,
            delivery: delivery.clone(),
            attention: Notify::new(),
            options,
            aws,
        });
        napi::bindgen_prelude::spawn(delivery.run(callback));
        napi::bindgen_prelude::spawn(connection::run(shared.clone(), eventloop));
        Ok(Self { shared, client_id })
    }

    /// Queues a batch of publish operations, in order: one PUBLISH per topic of each. Returns
    /// how many operations were taken; the rest must wait for the `writable` event (the backlog
    /// is full). An operation that cannot be sent (bad topic, too large, refused by the offline
    /// queue, closed) is taken and settled at once with its error.
    pub fn publish_batch(&self, batch: PublishBatch<'_>) -> usize {
        let mut core = self.shared.core.lock();
        let unseen_failure = if core.closed { None } else { self.shared.delivery.unseen_failure() };
        let paced_until = core.outbox.paced_until();
        let mut taken = 0;
        for publish in batch.iter() {
            if publish.withdrawn {
                taken += 1;
                continue;
            }
            if unseen_failure.is_none() && !core.outbox.is_held() && core.outbox.backlog_len() >= MAX_BACKLOG {
                core.writable_wanted = true;
                break;
            }
            let published = match &unseen_failure {
                Some(error) => Err(error.clone()),
                None => self.publish_one(&mut core, &publish),
            };
            if let Err(error) = published {
                self.shared.delivery.push(Event::PublishFailed { op: publish.op, error, sent: false });
            }
            taken += 1;
        }
        if core.outbox.paced_until().is_some_and(|until| Some(until) != paced_until) {
            // The connection task must wake when the pace lets the next one go.
            self.shared.attention.notify_one();
        }
        self.wake_if_idle(&core);
        taken
    }

    fn publish_one(&self, core: &mut Core, publish: &BatchedPublish<'_>) -> Result<()> {
        if core.closed {
            return Err(PubSubError::Closed);
        }
        let qos = parse_qos(publish.qos)?;
        let payload = publish.payload;
        let aws_iot = self.shared.options.aws_iot_broker;
        if aws_iot {
            aws_iot_limits::check_qos(qos, QosOf::Publish)?;
            aws_iot_limits::check_payload(payload.len())?;
        }
        for topic in publish.topics() {
            validate_topic(topic)?;
            if aws_iot {
                aws_iot_limits::check_topic(topic)?;
            }
            check_packet_size(topic, payload.len())?;
            if self.shared.options.endpoint.is_websocket() {
                check_own_echo(&core.subs, topic, payload.len())?;
            }
        }
        if core.outbox.is_held() {
            // The connection is down: the offline queue decides.
            let bytes = publish.topics().map(|t| t.len() + payload.len()).sum();
            self.check_offline_queue(core, qos, publish.topic_count(), bytes)?;
        }
        for topic in publish.topics() {
            let request = Request::Publish { op: publish.op, topic: topic.to_string(), qos, retain: publish.retain, payload: payload.to_vec(), written: false };
            core.outbox.submit(&self.shared.requests, request);
        }
        Ok(())
    }

    /// Whether a publish of `messages` (`bytes`) may wait for the connection to come back.
    fn check_offline_queue(&self, core: &mut Core, qos: QoS, messages: usize, bytes: usize) -> Result<()> {
        let queue = &self.shared.options.offline_queue;
        if !queue.policy.keeps(qos) {
            core.counters.dropped_offline += 1;
            return Err(PubSubError::Connection(format!("Not published: the connection is down and {}", queue.policy.describe())));
        }
        let waiting = core.outbox.queued();
        if waiting.operations + messages > queue.max_messages || waiting.bytes + bytes > queue.max_bytes {
            core.counters.dropped_queue_full += 1;
            return Err(queue.full(waiting, false));
        }
        Ok(())
    }

    /// Takes publish ops `ops` back, as far as they can be (their signal was aborted): see
    /// `Outbox::withdraw`. Nothing is settled for what it took.
    pub fn withdraw(&self, ops: &[u32]) -> Vec<Withdrawn> {
        let mut core = self.shared.core.lock();
        let withdrawn = core.outbox.withdraw(ops);
        // Room in the backlog for what JS holds (with a frozen broker, nothing else would say so).
        if core.outbox.backlog_len() < MAX_BACKLOG {
            self.shared.let_js_publish(&mut core);
        }
        if core.outbox.paced_until().is_some() {
            // The publish the pace held back may be gone: the connection task pumps again.
            self.shared.attention.notify_one();
        }
        withdrawn
    }

    /// Counts for `stats()`: publishes waiting and in flight, and the running totals.
    pub fn stats(&self) -> (Load, Load, Counters, ConnectionState) {
        let core = self.shared.core.lock();
        (core.outbox.queued(), core.outbox.in_flight(), core.counters.clone(), core.state)
    }

    /// Registers observer `observer` for `filters`; an `Event::Subscribed` follows once the
    /// broker acknowledged them all.
    pub fn subscribe(&self, observer: u32, filters: Vec<String>, qos: u32) -> Result<()> {
        let qos = parse_qos(qos)?;
        if filters.is_empty() {
            return Err(PubSubError::InvalidTopic("subscribe needs at least one topic".into()));
        }
        let aws_iot = self.shared.options.aws_iot_broker;
        if aws_iot {
            aws_iot_limits::check_qos(qos, QosOf::Subscription)?;
        }
        for filter in &filters {
            validate_filter(filter)?;
            if aws_iot {
                aws_iot_limits::check_filter(filter)?;
            }
        }
        let mut core = self.shared.core.lock();
        if core.closed {
            return Err(PubSubError::Closed);
        }
        if let Some(error) = self.shared.delivery.unseen_failure() {
            // Told through the events, not thrown: an error callback that subscribes again would
            // otherwise be called again at once, with the same error, over and over. Its event
            // comes after the failure's, which clears this.
            self.shared.delivery.push(Event::Subscribed { observer, error: Some(error) });
            return Ok(());
        }
        // What a persistent session delivered for these filters before they were subscribed
        // again comes first, in order, ahead of what routing brings from now on.
        let (claimed, expired) = core.unclaimed.as_mut().map(|unclaimed| unclaimed.claim(&filters)).unwrap_or_default();
        core.counters.dropped_unrouted += expired as u64;
        for publish in claimed {
            self.shared.delivery.push(Event::Message { observers: vec![observer], publish });
        }
        let (to_subscribe, ready) = core.subs.add_observer(observer, filters, qos);
        if !to_subscribe.is_empty() {
            core.outbox.submit(&self.shared.requests, Request::Subscribe { filters: to_subscribe });
        }
        if ready {
            self.shared.delivery.push(Event::Subscribed { observer, error: None });
        }
        core.idle_disconnect_due = false;
        core.linger_until = None;
        if core.state == ConnectionState::ConnectedPendingDisconnect {
            // The disconnect begun (by Node's exit, or once the AWS IoT linger ran out) is called
            // off: the connection, still up, serves this subscription (with a will, it is the
            // instance's presence again).
            core.will_armed = self.shared.options.will.is_some();
            self.shared.set_state(&mut core, ConnectionState::Connected);
        }
        self.wake_if_idle(&core);
        Ok(())
    }

    /// Removes an observer. Returns true when that left nobody subscribed and the connection
    /// is now closing gracefully (ConnectedPendingDisconnect).
    pub fn unsubscribe(&self, observer: u32) -> bool {
        let mut core = self.shared.core.lock();
        if core.closed {
            return false;
        }
        for filter in core.subs.remove_observer(observer) {
            if let Some(unclaimed) = core.unclaimed.as_mut() {
                unclaimed.left(filter.clone());
            }
            core.outbox.submit(&self.shared.requests, Request::Unsubscribe { filter });
        }
        // With a will, the connection is the instance's presence: it stays open, as one opened
        // only to publish does (without keeping Node up), until close() or Node's exit, so that
        // the broker still publishes the will if the process dies.
        if self.shared.options.will.is_some() {
            return false;
        }
        if self.shared.options.aws_iot_broker && core.state == ConnectionState::Connected && !core.subs.has_observers() {
            // Like a connection opened only to publish, it does not keep Node up meanwhile.
            core.linger_until = Some(Instant::now() + aws_iot_limits::IDLE_LINGER);
            self.shared.attention.notify_one();
            return false;
        }
        self.shared.begin_idle_disconnect(&mut core)
    }

    /// See `Delivery::resume`.
    pub fn resume_delivery(&self) {
        self.shared.delivery.resume()
    }

    /// See `Shared::begin_idle_disconnect`.
    pub fn disconnect_when_idle(&self) -> bool {
        self.shared.begin_idle_disconnect(&mut self.shared.core.lock())
    }

    /// Rejects everything pending with ERR_CLOSED, completes observers, disconnects.
    pub fn close(&self) {
        let mut core = self.shared.core.lock();
        if core.closed {
            return;
        }
        core.closed = true;
        // Observers are completed (not failed) by JS when the `Closed` event arrives; the
        // connection task forgets the subscriptions once it has delivered what it read.
        self.shared.reject_pending_publishes(&mut core, &PubSubError::Closed);
        self.shared.attention.notify_one();
    }

    /// JS's answer for the credentials function (see `CredentialSource::answer`).
    pub fn answer_credentials(&self, request: u32, answer: std::result::Result<&serde_json::Value, (String, bool)>) {
        if let Some(aws) = &self.shared.aws {
            aws.credentials.answer(request, answer);
        }
    }

    /// After JS asked something of the broker: the connection task may be idle, or waiting for
    /// room while JS holds messages back and awaits the answer.
    fn wake_if_idle(&self, core: &Core) {
        if core.state == ConnectionState::Disconnected {
            self.shared.attention.notify_one();
        }
        self.shared.delivery.answer_awaited();
    }
}

impl Drop for Client {
    /// The JS object is gone: its Node environment was torn down (a worker thread terminated or
    /// ended) or it was garbage-collected. Nobody can close the instance any more, and the
    /// connection task, on the runtime that every environment of the process shares, would
    /// otherwise keep its connection open for as long as the process lives: end it as `close()`
    /// does (a no-op after `close()`).
    fn drop(&mut self) {
        self.close()
    }
}

/// The most bytes a PUBLISH of `payload_bytes` to `topic` takes: fixed header (5) + topic
/// length (2) + topic + packet id (2) + payload.
fn publish_packet_bytes(topic: &str, payload_bytes: usize) -> usize {
    payload_bytes + topic.len() + 9
}

/// Whether a publish of `payload_bytes` to `topic` fits in one MQTT packet.
fn check_packet_size(topic: &str, payload_bytes: usize) -> Result<()> {
    let packet = publish_packet_bytes(topic, payload_bytes);
    if packet > MAX_PACKET_BYTES {
        return Err(PubSubError::Payload(format!(
            "The message is {payload_bytes} bytes: with its topic ({} bytes) and the headers, it needs an MQTT packet of {packet} bytes, and MQTT allows at most {MAX_PACKET_BYTES}",
            topic.len()
        )));
    }
    Ok(())
}

/// A publish this instance subscribes to comes back to it, and over WebSocket a packet over
/// `MAX_WEBSOCKET_PACKET_BYTES` cannot be received: the connection would drop as it arrived, and
/// a QoS 1/2 publish, unacknowledged, would go again after each reconnect, for ever.
fn check_own_echo(subs: &Subscriptions, topic: &str, payload_bytes: usize) -> Result<()> {
    let packet = publish_packet_bytes(topic, payload_bytes);
    if packet <= MAX_WEBSOCKET_PACKET_BYTES {
        return Ok(());
    }
    match subs.first_match(topic) {
        None => Ok(()),
        Some(filter) => Err(PubSubError::Payload(format!(
            "The message is {payload_bytes} bytes: this instance subscribes to '{filter}', so the broker sends it back, in an MQTT packet of \
             about {packet} bytes, and over WebSocket this client receives at most {MAX_WEBSOCKET_PACKET_BYTES} (mqtt:// and mqtts:// \
             take up to {MAX_PACKET_BYTES}); publish it from an instance that does not subscribe to '{topic}', or connect with mqtts://"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_websocket_a_publish_too_large_to_come_back_is_refused_only_when_it_would_come_back() {
        let mut subs = Subscriptions::default();
        subs.add_observer(1, vec!["big/#".to_string()], QoS::AtLeastOnce);
        let largest = MAX_WEBSOCKET_PACKET_BYTES - 9 - "big/x".len();
        assert_eq!(check_own_echo(&subs, "big/x", largest), Ok(()));
        let error = check_own_echo(&subs, "big/x", largest + 1).unwrap_err();
        assert_eq!(error.code(), "ERR_PAYLOAD");
        assert!(error.to_string().contains("subscribes to 'big/#'"), "{error}");
        assert_eq!(check_own_echo(&subs, "other/x", largest + 1), Ok(()));
    }

    #[test]
    fn a_publish_too_large_for_one_packet_names_its_sizes() {
        let largest = MAX_PACKET_BYTES - 9 - "a/b".len();
        assert_eq!(check_packet_size("a/b", largest), Ok(()));
        let error = check_packet_size("a/b", largest + 1).unwrap_err();
        assert_eq!(error.code(), "ERR_PAYLOAD");
        let message = error.to_string();
        for part in [
            format!("The message is {} bytes", largest + 1),
            "its topic (3 bytes)".to_string(),
            format!("an MQTT packet of {} bytes", MAX_PACKET_BYTES + 1),
            format!("at most {MAX_PACKET_BYTES}"),
        ] {
            assert!(message.contains(&part), "'{part}' missing from: {message}");
        }
    }

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_publish_batch_reads_each_record_with_its_topics_flags_and_payload() {
        let topics = topics(&["a/b", "c"]);
        // op 7: QoS 1 to a/b and c, "xy"; op 8: QoS 0 retained to a/b, empty; op 9: QoS 2 to c, "z".
        let words = [7, 1, 2, 2, 0, 1, 8, 4, 0, 1, 0, 9, 2, 1, 1, 1];
        let batch = PublishBatch { words: &words, topics: &topics, payloads: b"xyz" };
        assert_eq!(batch.check(), Ok(()));
        let read: Vec<_> = batch
            .iter()
            .map(|p| (p.op, p.topics().collect::<Vec<_>>(), p.qos, p.retain, String::from_utf8_lossy(p.payload).into_owned()))
            .collect();
        assert_eq!(
            read,
            vec![
                (7, vec!["a/b", "c"], 1, false, "xy".to_string()),
                (8, vec!["a/b"], 0, true, String::new()),
                (9, vec!["c"], 2, false, "z".to_string()),
            ]
        );
    }

    #[test]
    fn a_publish_batch_that_does_not_add_up_is_refused_before_anything_is_read() {
        let topics = topics(&["t"]);
        let check = |words: &[u32], payloads: &[u8]| PublishBatch { words, topics: &topics, payloads }.check();
        assert!(check(&[1, 0, 1], b"x").unwrap_err().contains("record cut short"));
        assert!(check(&[1, 0, 1, 2, 0], b"x").unwrap_err().contains("topic indexes cut short"));
        assert!(check(&[1, 0, 1, 1, 1], b"x").unwrap_err().contains("out of range"));
        assert!(check(&[1, 0, 2, 1, 0], b"x").unwrap_err().contains("add up to 2 bytes, not 1"));
        assert!(check(&[1, 0, 1, 1, 0], b"xy").unwrap_err().contains("add up to 1 bytes, not 2"));
        assert_eq!(check(&[], b""), Ok(()));
    }
}
