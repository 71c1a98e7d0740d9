//! Requests on their way to the broker and the acknowledgements that settle them.
//!
//! rumqttc reports `Outgoing::Publish(pkid)` (and Subscribe/Unsubscribe) in the order requests
//! entered its channel, but does not say which request got which packet id. So every request
//! we put in the channel is recorded in `in_channel`, in the same order, under the same lock;
//! each Outgoing event pops the front and, for QoS > 0, files it by packet id until the ack.
//!
//! When the connection is lost, what rumqttc still held (unacknowledged publishes, its channel)
//! comes back here with `requeue`, in the order it was first sent, and waits (`held`) until the
//! connection is back and the subscriptions are renewed (`release`). Publishes that were written
//! wait apart (`resend`): a resumed session gets them again as they were, with their packet ids
//! and DUP set (MQTT-4.4.0-1); a new session gets them as new publishes (`resume`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use rumqttc::{AsyncClient, ClientError, Outgoing, Packet, QoS, Request as MqttRequest, SubscribeFilter, SubscribeReasonCode};

use crate::aws_iot_limits::{PublishPace, Slot};

/// Bytes a publish request accounts for in the queues and statistics.
fn publish_bytes(topic: &str, payload: &[u8]) -> usize {
    topic.len() + payload.len()
}

/// The most bytes of one encoded SUBSCRIBE. A broker closes the connection on a packet over its
/// maximum size (EMQX's default is 1 MB, mosquitto's is its `max_packet_size`, embedded brokers'
/// often far less), and would close it again for the renewal after every reconnect. 64 KiB still
/// carries a thousand filters of 60 bytes: a renewal of 10,000 takes ten SUBSCRIBEs.
pub const MAX_SUBSCRIBE_BYTES: usize = 64 * 1024;

/// What one SUBSCRIBE may carry: filters go into it, in order, until the next would break
/// either limit; a filter alone goes whatever its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeLimit {
    /// The most topic filters (AWS IoT's quota); `None`: any number.
    pub filters: Option<usize>,
    /// The most bytes of the encoded packet.
    pub bytes: usize,
}

impl Default for SubscribeLimit {
    fn default() -> Self {
        SubscribeLimit { filters: None, bytes: MAX_SUBSCRIBE_BYTES }
    }
}

/// Bytes a filter adds to a SUBSCRIBE (MQTT 3.1.1): its 2-byte length, itself, its QoS byte.
fn subscribe_filter_bytes(filter: &str) -> usize {
    2 + filter.len() + 1
}

/// Bytes of a SUBSCRIBE whose filters add `filter_bytes`: the type byte, the remaining length
/// (1 to 4 bytes), the packet id, the filters.
fn subscribe_bytes(filter_bytes: usize) -> usize {
    let remaining = 2 + filter_bytes;
    let remaining_length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + remaining_length_bytes + remaining
}

/// A request we make of the broker.
#[derive(Debug)]
pub enum Request {
    /// `written`: on a connection that was lost, before a new session forgot its packet id (the
    /// broker may have it).
    Publish { op: u32, topic: String, qos: QoS, retain: bool, payload: Vec<u8>, written: bool },
    Subscribe { filters: Vec<(String, QoS)> },
    Unsubscribe { filter: String },
}

/// What we remember of a request once it is in rumqttc's channel.
#[derive(Debug)]
enum Sent {
    Publish { op: u32, qos: QoS, bytes: usize, written: bool },
    Subscribe { filters: Vec<String> },
    Unsubscribe { filter: String },
}

/// Something the broker (or the socket) confirmed.
#[derive(Debug, PartialEq)]
pub enum Completion {
    /// A publish op is done: written (QoS 0), PUBACK (QoS 1) or PUBCOMP (QoS 2).
    Published(u32),
    /// SUBACK for one filter: the granted QoS, or `None` when refused.
    Subscribed(String, Option<QoS>),
    /// A publish op whose packet id rumqttc gave to another publish before its ack came: which
    /// of the two a later ack is for cannot be known, so it fails rather than wait forever.
    IdReused(u32),
}

/// One QoS 1/2 publish packet that was written: its op and topic (an op publishing to several
/// topics has one packet each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub op: u32,
    pub topic: String,
}

/// A publish op that will not complete, and whether some of it had been handed to the
/// connection (written, or in rumqttc's channel to be): then the broker may have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub op: u32,
    pub sent: bool,
}

/// `rejected` in op order, each op once: sent when any of its packets (one per topic) was.
fn each_op_once(mut rejected: Vec<Rejected>) -> Vec<Rejected> {
    rejected.sort_unstable_by_key(|r| (r.op, !r.sent));
    rejected.dedup_by_key(|r| r.op);
    rejected
}

/// What `requeue` could not keep, and what it left to the next session.
#[derive(Debug, Default, PartialEq)]
pub struct Requeued {
    /// Publish ops that will not be sent again (the offline queue policy turned them away).
    pub rejected: Vec<Rejected>,
    /// The op of the publish that the broker refused by dropping the connection: not sent again.
    pub refused: Option<u32>,
    /// QoS 2 publishes the broker has received (PUBREC) but not completed: PUBREL is due.
    pub pubrels: Vec<u16>,
}

/// What `withdraw` took out of a publish op, and what it left: packets of it (one per topic).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Withdrawn {
    /// Never written: they will not be.
    pub unsent: usize,
    /// Written on a lost connection and not acknowledged: not written again (the broker may
    /// have them).
    pub written: usize,
    /// Handed to rumqttc (in its channel, written and awaiting their ack): past recall, they
    /// settle the op as usual.
    pub held: usize,
}

/// Counts and bytes of publishes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub operations: usize,
    pub bytes: usize,
}

/// A QoS 1/2 publish written on a lost connection and not acknowledged, as it was sent.
#[derive(Debug)]
struct Resend {
    op: u32,
    bytes: usize,
    publish: rumqttc::Publish,
}

#[derive(Debug, Default)]
pub struct Outbox {
    backlog: VecDeque<Request>,
    /// Publishes in `backlog`, and their bytes.
    queued: Load,
    in_channel: VecDeque<Sent>,
    /// QoS 1/2 publishes written and not yet acknowledged: packet id → (op, bytes).
    awaiting_puback: HashMap<u16, (u32, usize)>,
    /// SUBSCRIBEs written and not yet acknowledged, in the order sent: packet id → filters.
    awaiting_suback: VecDeque<(u16, Vec<String>)>,
    /// How many SUBSCRIBEs not yet acknowledged (in `backlog`, `in_channel` or
    /// `awaiting_suback`) name each filter. Counted as they come and go rather than gathered
    /// from those queues on every SUBACK, which made n subscribe calls cost O(n²).
    subscribing: HashMap<String, usize>,
    /// UNSUBSCRIBEs written and not yet acknowledged, in the order sent: packet id → filter.
    awaiting_unsuback: VecDeque<(u16, String)>,
    /// The broker may resume the session (cleanSession: false): an UNSUBSCRIBE it may not have
    /// received goes again after a loss, or the resumed session keeps that subscription.
    session_may_resume: bool,
    /// What one SUBSCRIBE carries: the filters of a request or renewal beyond it go in several.
    subscribe_limit: SubscribeLimit,
    /// A publish rumqttc parked because its packet id was still in use (Outgoing::AwaitAck).
    collided: Option<(u32, usize)>,
    /// The filters of the SUBSCRIBEs connections were lost with unacknowledged, each until a
    /// SUBACK answers it. While there are any, they are renewed one per SUBSCRIBE, after the
    /// others, and nothing more is handed to rumqttc while a SUBSCRIBE awaits its SUBACK: if the
    /// broker drops the connection for one filter, the next loss shows which (a broker may close
    /// before acknowledging the good ones written with it). They add up over losses in a row:
    /// a broker that drops every SUBSCRIBE over its size limit drops the others' first one each
    /// time, and so all of them, a piece per loss, end up renewed alone. Cleared once no
    /// SUBSCRIBE is outstanding or waiting.
    suspects: HashSet<String>,
    /// The connection is down after a loss: requests wait in the backlog.
    held: bool,
    /// Between CONNACK and the loss of that connection: what is in rumqttc's channel may be
    /// written. Before it, rumqttc writes nothing from its channel.
    connected: bool,
    /// Written, unacknowledged publishes of the lost connection, in the order sent (counted in
    /// `queued`); `resume` decides how they go out again.
    resend: VecDeque<Resend>,
    /// Outgoing::Publish events still due for the resends `resume` put in rumqttc's pending
    /// list: rumqttc writes that list before anything from its channel.
    resending: usize,
    /// Their bytes, for the pace: handed over, not yet written.
    resending_bytes: usize,
    /// AWS IoT: publishes are handed to rumqttc so that they are written within its
    /// per-connection rates.
    pace: Option<PublishPace>,
    /// When the publish at the front of the backlog may go, if the pace holds it back until
    /// then (rather than until more is written, which the connection task hears of anyway).
    paced_until: Option<Instant>,
}

fn try_send(client: &AsyncClient, request: Request) -> Result<Sent, Request> {
    match request {
        Request::Publish { op, topic, qos, retain, payload, written } => {
            let bytes = publish_bytes(&topic, &payload);
            match client.try_publish(topic, qos, retain, payload) {
                Ok(()) => Ok(Sent::Publish { op, qos, bytes, written }),
                // rumqttc hands back the request it could not queue (its channel is full).
                Err(ClientError::TryRequest(returned) | ClientError::Request(returned)) => match returned {
                    MqttRequest::Publish(p) => Err(publish_again(op, p, written)),
                    other => unreachable!("rumqttc returned {other:?} for a publish"),
                },
            }
        }
        Request::Subscribe { filters } => {
            let packet = filters.iter().map(|(f, q)| SubscribeFilter::new(f.clone(), *q));
            match client.try_subscribe_many(packet) {
                Ok(()) => Ok(Sent::Subscribe { filters: filters.into_iter().map(|(f, _)| f).collect() }),
                Err(_) => Err(Request::Subscribe { filters }),
            }
        }
        Request::Unsubscribe { filter } => match client.try_unsubscribe(filter.clone()) {
            Ok(()) => Ok(Sent::Unsubscribe { filter }),
            Err(_) => Err(Request::Unsubscribe { filter }),
        },
    }
}

/// Op `op`'s publish that rumqttc gave back, as a new request (a new packet id once sent);
/// `written`: the broker may have it already.
fn publish_again(op: u32, publish: rumqttc::Publish, written: bool) -> Request {
    let rumqttc::Publish { topic, qos, retain, payload, .. } = publish;
    Request::Publish { op, topic, qos, retain, payload: Vec::from(payload), written }
}

impl Outbox {
    /// `session_may_resume`: the client connects with cleanSession false. `pace`: publishes
    /// go no faster than it allows.
    pub fn new(session_may_resume: bool, subscribe_limit: SubscribeLimit, pace: Option<PublishPace>) -> Self {
        Outbox { session_may_resume, subscribe_limit, pace, ..Outbox::default() }
    }

    /// Queues a request and moves what fits into rumqttc's channel.
    pub fn submit(&mut self, client: &AsyncClient, request: Request) {
        match request {
            Request::Subscribe { filters } => {
                for subscribe in self.subscribes(filters) {
                    self.push_back(subscribe);
                }
            }
            request => self.push_back(request),
        }
        self.pump(client);
    }

    /// SUBSCRIBEs for `filters`, in order, each within `subscribe_limit`.
    fn subscribes(&self, filters: Vec<(String, QoS)>) -> Vec<Request> {
        let most_filters = self.subscribe_limit.filters.unwrap_or(usize::MAX);
        let mut subscribes = Vec::new();
        let mut packet: Vec<(String, QoS)> = Vec::new();
        let mut packet_filter_bytes = 0;
        for (filter, qos) in filters {
            let bytes = subscribe_filter_bytes(&filter);
            let full = packet.len() >= most_filters || subscribe_bytes(packet_filter_bytes + bytes) > self.subscribe_limit.bytes;
            if full && !packet.is_empty() {
                subscribes.push(Request::Subscribe { filters: std::mem::take(&mut packet) });
                packet_filter_bytes = 0;
            }
            packet_filter_bytes += bytes;
            packet.push((filter, qos));
        }
        if !packet.is_empty() {
            subscribes.push(Request::Subscribe { filters: packet });
        }
        subscribes
    }

    fn push_back(&mut self, request: Request) {
        match &request {
            Request::Publish { topic, payload, .. } => {
                self.queued.operations += 1;
                self.queued.bytes += publish_bytes(topic, payload);
            }
            Request::Subscribe { filters } => self.count_subscribing(filters),
            Request::Unsubscribe { .. } => {}
        }
        self.backlog.push_back(request);
    }

    fn count_subscribing(&mut self, filters: &[(String, QoS)]) {
        for (filter, _) in filters {
            *self.subscribing.entry(filter.clone()).or_default() += 1;
        }
    }

    /// Counts off an acknowledged SUBSCRIBE of `filter`; returns whether another one is still
    /// outstanding.
    fn count_off_subscribe(&mut self, filter: &str) -> bool {
        match self.subscribing.get_mut(filter) {
            Some(count) if *count > 1 => {
                *count -= 1;
                true
            }
            _ => {
                self.subscribing.remove(filter);
                false
            }
        }
    }

    /// Moves backlog into rumqttc's channel while it has room, keeping order; nothing moves
    /// while the outbox is held, nor while the pace holds the next publish back
    /// (`paced_until`).
    pub fn pump(&mut self, client: &AsyncClient) {
        self.paced_until = None;
        let now = self.pace.as_ref().map(|_| Instant::now());
        let mut unwritten = Load::default();
        if now.is_some() {
            // The resends of a resumed session go first, unpaced: they count as unwritten too.
            unwritten = self.unwritten_publishes();
            unwritten.operations += self.resending;
            unwritten.bytes += self.resending_bytes;
        }
        while self.may_hand_over() {
            let Some(request) = self.backlog.pop_front() else { break };
            let bytes = match &request {
                Request::Publish { topic, payload, .. } => Some(publish_bytes(topic, payload)),
                _ => None,
            };
            if let (Some(pace), Some(now), Some(bytes)) = (&mut self.pace, now, bytes) {
                match pace.next_slot(now, bytes, unwritten.operations, unwritten.bytes) {
                    Slot::Now => {}
                    slot => {
                        self.paced_until = if let Slot::At(at) = slot { Some(at) } else { None };
                        self.backlog.push_front(request);
                        break;
                    }
                }
            }
            match try_send(client, request) {
                Ok(sent) => {
                    if let Some(bytes) = bytes {
                        self.queued.operations -= 1;
                        self.queued.bytes -= bytes;
                        unwritten.operations += 1;
                        unwritten.bytes += bytes;
                    }
                    self.in_channel.push_back(sent);
                }
                Err(request) => {
                    self.backlog.push_front(request);
                    break;
                }
            }
        }
    }

    /// After a lost connection, before `requeue`: the publish rumqttc parked on a packet id
    /// collision (`Outgoing::AwaitAck`), if any, goes into `pending`. It was never written, and
    /// its packet id is another publish's (awaiting its PUBACK or PUBCOMP): it goes again as a
    /// new publish, first of the requests rumqttc took from its channel.
    pub fn take_back_parked(&mut self, pending: &mut VecDeque<MqttRequest>, parked: Option<rumqttc::Publish>) {
        let Some(mut publish) = parked else { return };
        if let Some((op, bytes)) = self.collided.take() {
            publish.pkid = 0;
            self.in_channel.push_front(Sent::Publish { op, qos: publish.qos, bytes, written: false });
        }
        pending.push_front(MqttRequest::Publish(publish));
    }

    /// Adds the filters a lost connection left unacknowledged to `suspects`; returns whether
    /// some were not suspects yet.
    pub fn suspect_subscribes(&mut self, suspects: Vec<String>) -> bool {
        let mut new = false;
        for filter in suspects {
            new |= self.suspects.insert(filter);
        }
        new
    }

    /// Whether the backlog may go to rumqttc now.
    fn may_hand_over(&self) -> bool {
        if self.held {
            return false;
        }
        self.suspects.is_empty() || !self.subscribe_outstanding()
    }

    fn subscribe_outstanding(&self) -> bool {
        !self.awaiting_suback.is_empty() || self.in_channel.iter().any(|sent| matches!(sent, Sent::Subscribe { .. }))
    }

    /// When the pace lets the next publish go (then `pump` again), if it holds it back until then.
    pub fn paced_until(&self) -> Option<Instant> {
        self.paced_until
    }

    /// Publishes handed to rumqttc and not yet written: in its channel, or parked on a
    /// packet id collision.
    fn unwritten_publishes(&self) -> Load {
        let mut load = Load::default();
        let in_channel = self.in_channel.iter().filter_map(|sent| match sent {
            Sent::Publish { bytes, .. } => Some(*bytes),
            _ => None,
        });
        for bytes in in_channel.chain(self.collided.map(|(_, bytes)| bytes)) {
            load.operations += 1;
            load.bytes += bytes;
        }
        load
    }

    /// A publish of `bytes` was written: it counts for the pace from now.
    fn count_written(&mut self, bytes: usize) {
        if let Some(pace) = &mut self.pace {
            pace.written(Instant::now(), bytes);
        }
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Publishes waiting to be handed to rumqttc.
    pub fn queued(&self) -> Load {
        self.queued
    }

    /// Publishes handed to rumqttc and not yet done (written for QoS 0, acknowledged otherwise).
    pub fn in_flight(&self) -> Load {
        let mut load = self.unwritten_publishes();
        for (_, bytes) in self.awaiting_puback.values() {
            load.operations += 1;
            load.bytes += bytes;
        }
        load
    }

    /// Whether requests wait for the connection to come back.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// The oldest publish (first published) written on the lost connection and still
    /// unacknowledged, from rumqttc's `pending` after `EventLoop::clean`.
    pub fn oldest_unacknowledged<'a>(&self, pending: impl IntoIterator<Item = &'a MqttRequest>) -> Option<Written> {
        let (op, publish) = pending
            .into_iter()
            .filter_map(|request| match request {
                // Only publishes given a packet id; a PUBREC'd QoS 2 one is a PubRel here.
                MqttRequest::Publish(publish) if publish.pkid != 0 => Some(publish),
                _ => None,
            })
            // rumqttc lists first what was left of its pending list: the resends not written
            // again on this connection, which the broker cannot have refused this time.
            .skip(self.resending)
            .filter_map(|publish| self.awaiting_puback.get(&publish.pkid).map(|(op, _)| (*op, publish)))
            .min_by_key(|(op, _)| *op)?;
        Some(Written { op, topic: publish.topic.clone() })
    }

    /// After a lost connection: takes back what rumqttc held (`pending`: its unacknowledged
    /// publishes, then its channel, as `EventLoop::clean` leaves them), keeps what `keeps`
    /// allows at the front of the backlog in the order first sent, and holds everything until
    /// `release`. Subscribe requests are dropped: `release` renews every live filter. An
    /// UNSUBSCRIBE never written is kept; one written and unacknowledged too when the session
    /// may resume. The `refused` publish, if written and unacknowledged, is not kept but reported.
    pub fn requeue(
        &mut self,
        pending: impl IntoIterator<Item = MqttRequest>,
        keeps: impl Fn(QoS) -> bool,
        refused: Option<&Written>,
    ) -> Requeued {
        let mut refused_op = None;
        self.held = true;
        self.connected = false;
        let mut pubrels = Vec::new();
        // Written UNSUBSCRIBEs go again first, before those never written; a new session forgets
        // the subscriptions anyway.
        let unacknowledged = std::mem::take(&mut self.awaiting_unsuback);
        let mut front: VecDeque<Request> = match self.session_may_resume {
            true => unacknowledged.into_iter().map(|(_, filter)| Request::Unsubscribe { filter }).collect(),
            false => VecDeque::new(),
        };
        let mut in_channel = std::mem::take(&mut self.in_channel);
        // Resends of an earlier loss that `resume` has not taken (no connection since) stay first.
        let mut resend = std::mem::take(&mut self.resend);
        self.resending = 0;
        self.resending_bytes = 0;
        for request in pending {
            match request {
                // Written, unacknowledged: it had a packet id.
                MqttRequest::Publish(publish) if publish.pkid != 0 => {
                    let owner = self.awaiting_puback.remove(&publish.pkid).or_else(|| self.collided.take());
                    match owner {
                        Some((op, _)) if refused_op.is_none() && refused.is_some_and(|r| r.op == op && r.topic == publish.topic) => {
                            refused_op = Some(op);
                        }
                        Some((op, bytes)) => resend.push_back(Resend { op, bytes, publish }),
                        None => {}
                    }
                }
                MqttRequest::Publish(publish) => match in_channel.pop_front() {
                    // Rejections are decided when the backlog is rebuilt below, by the same `keeps`.
                    Some(Sent::Publish { op, written, .. }) => front.push_back(publish_again(op, publish, written)),
                    other => in_channel.extend(other),
                },
                // The op keeps waiting for PUBCOMP under its packet id.
                MqttRequest::PubRel(pubrel) => pubrels.push(pubrel.pkid),
                MqttRequest::Subscribe(_) => {
                    in_channel.pop_front();
                }
                MqttRequest::Unsubscribe(unsubscribe) => {
                    in_channel.pop_front();
                    front.extend(unsubscribe.topics.into_iter().map(|filter| Request::Unsubscribe { filter }));
                }
                _ => {}
            }
        }
        let mut requeued = Requeued { refused: refused_op, ..Requeued::default() };
        // Never expected: records rumqttc did not give back cannot be sent again.
        // Nor what rumqttc lost of what it had: whether it was written is unknown.
        for sent in in_channel {
            if let Sent::Publish { op, .. } = sent {
                requeued.rejected.push(Rejected { op, sent: true });
            }
        }
        let lost = self.awaiting_puback.iter().filter(|(pkid, _)| !pubrels.contains(pkid));
        requeued.rejected.extend(lost.map(|(_, (op, _))| Rejected { op: *op, sent: true }));
        self.awaiting_puback.retain(|pkid, _| pubrels.contains(pkid));
        requeued.pubrels = pubrels;
        requeued.rejected.extend(self.collided.take().map(|(op, _)| Rejected { op, sent: true }));
        // No SUBSCRIBE is left: those unacknowledged are dropped above and below.
        self.awaiting_suback.clear();
        self.subscribing.clear();

        let earlier = std::mem::take(&mut self.backlog);
        self.queued = Load::default();
        // rumqttc lists what it had not written yet of a previous resend before what it had:
        // ops are numbered in the order published.
        resend.make_contiguous().sort_by_key(|r| r.op);
        for entry in resend {
            if keeps(entry.publish.qos) {
                self.queued.operations += 1;
                self.queued.bytes += entry.bytes;
                self.resend.push_back(entry);
            } else {
                requeued.rejected.push(Rejected { op: entry.op, sent: true });
            }
        }
        for request in front.into_iter().chain(earlier) {
            match request {
                Request::Publish { op, qos, written, .. } if !keeps(qos) => requeued.rejected.push(Rejected { op, sent: written }),
                Request::Subscribe { .. } => {}
                request => self.push_back(request),
            }
        }
        requeued.rejected = self.sent_with_what_stays(requeued.rejected);
        requeued
    }

    /// While the connection is down: turns away the newest publishes, whole ops, until what
    /// waits is within `max` (the offline queue's bounds). What was accepted before the loss (or
    /// before a first attempt that failed) was bounded only by the backlog. Returns their ops.
    pub fn turn_away_beyond(&mut self, max: Load) -> Vec<Rejected> {
        if self.queued.operations <= max.operations && self.queued.bytes <= max.bytes {
            return Vec::new();
        }
        let mut kept = Load::default();
        let mut turned_away: Vec<u32> = Vec::new();
        for (op, bytes) in self.waiting_publishes() {
            let fits = kept.operations < max.operations && kept.bytes + bytes <= max.bytes;
            if turned_away.is_empty() && fits {
                kept.operations += 1;
                kept.bytes += bytes;
            } else if turned_away.last() != Some(&op) {
                turned_away.push(op);
            }
        }
        // The op that did not fit may have packets (topics) before the one that did not.
        let away: HashSet<u32> = turned_away.iter().copied().collect();
        // A resend was written on the lost connection.
        let mut rejected: Vec<Rejected> = self.resend.iter().filter(|r| away.contains(&r.op)).map(|r| Rejected { op: r.op, sent: true }).collect();
        rejected.extend(self.backlog.iter().filter_map(|request| match request {
            Request::Publish { op, written, .. } if away.contains(op) => Some(Rejected { op: *op, sent: *written }),
            _ => None,
        }));
        self.resend.retain(|r| !away.contains(&r.op));
        self.backlog.retain(|request| !matches!(request, Request::Publish { op, .. } if away.contains(op)));
        self.recount_queued();
        self.sent_with_what_stays(rejected)
    }

    /// `rejected` each op once, sent also when another packet of its op (another topic) stays
    /// handed over: a QoS 2 one awaiting PUBCOMP, say, which the broker has.
    fn sent_with_what_stays(&self, rejected: Vec<Rejected>) -> Vec<Rejected> {
        let mut rejected = each_op_once(rejected);
        if rejected.iter().any(|r| !r.sent) {
            let in_channel = self.in_channel.iter().filter_map(|sent| match sent {
                Sent::Publish { op, .. } => Some(*op),
                _ => None,
            });
            let awaiting = self.awaiting_puback.values().map(|(op, _)| *op);
            let resends = self.resend.iter().map(|r| r.op);
            let stays: HashSet<u32> = in_channel.chain(awaiting).chain(resends).chain(self.collided.map(|(op, _)| op)).collect();
            for r in rejected.iter_mut() {
                r.sent |= stays.contains(&r.op);
            }
        }
        rejected
    }

    /// Takes publish ops `ops` out of what waits to be handed to rumqttc, and says, for each,
    /// what of it is past recall. One pass over each queue, however many ops: a burst sharing
    /// one AbortSignal withdraws thousands at once.
    pub fn withdraw(&mut self, ops: &[u32]) -> Vec<Withdrawn> {
        let index: HashMap<u32, usize> = ops.iter().enumerate().map(|(i, op)| (*op, i)).collect();
        let mut withdrawn: Vec<Withdrawn> = ops.iter().map(|_| Withdrawn::default()).collect();
        let mut removed = false;
        self.backlog.retain(|request| match request {
            Request::Publish { op, written, .. } => match index.get(op) {
                Some(&i) => {
                    match written {
                        true => withdrawn[i].written += 1,
                        false => withdrawn[i].unsent += 1,
                    }
                    removed = true;
                    false
                }
                None => true,
            },
            _ => true,
        });
        self.resend.retain(|resend| match index.get(&resend.op) {
            Some(&i) => {
                withdrawn[i].written += 1;
                removed = true;
                false
            }
            None => true,
        });
        if removed {
            self.recount_queued();
        }
        let in_channel = self.in_channel.iter().filter_map(|sent| match sent {
            Sent::Publish { op, .. } => Some(*op),
            _ => None,
        });
        let awaiting = self.awaiting_puback.values().map(|(op, _)| *op);
        for op in in_channel.chain(awaiting).chain(self.collided.map(|(op, _)| op)) {
            if let Some(&i) = index.get(&op) {
                withdrawn[i].held += 1;
            }
        }
        withdrawn
    }

    /// Counts `queued` again after publishes were taken out of the resends or the backlog.
    fn recount_queued(&mut self) {
        self.queued = self.waiting_publishes().fold(Load::default(), |load, (_, bytes)| Load { operations: load.operations + 1, bytes: load.bytes + bytes });
    }

    /// The publishes `queued` counts, in the order they go out: (op, bytes) per packet.
    fn waiting_publishes(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        let resends = self.resend.iter().map(|r| (r.op, r.bytes));
        resends.chain(self.backlog.iter().filter_map(|request| match request {
            Request::Publish { op, topic, payload, .. } => Some((*op, publish_bytes(topic, payload))),
            _ => None,
        }))
    }

    /// CONNACK: from now on, what is in rumqttc's channel may be written.
    pub fn on_connack(&mut self) {
        self.connected = true;
    }

    /// The connection was ended by us (nothing was left to do): what is handed over next waits
    /// for the next CONNACK. A lost connection goes through `requeue` instead.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
    }

    /// After CONNACK, before `release`: the publishes written on the lost connection. For a
    /// resumed session they are returned to go first, unchanged but for DUP, and filed under
    /// their packet ids; for a new session, which forgot those ids, they become new publishes
    /// at the front of the backlog.
    pub fn resume(&mut self, session_present: bool) -> Vec<rumqttc::Publish> {
        let resend = std::mem::take(&mut self.resend);
        if !session_present {
            for Resend { op, publish, .. } in resend.into_iter().rev() {
                self.backlog.push_front(publish_again(op, publish, true));
            }
            return Vec::new();
        }
        // They go first, all at once (unpaced), and count for the pace as they are written.
        self.resending = resend.len();
        self.resending_bytes = resend.iter().map(|r| r.bytes).sum();
        resend
            .into_iter()
            .map(|Resend { op, bytes, mut publish }| {
                self.queued.operations -= 1;
                self.queued.bytes -= bytes;
                self.awaiting_puback.insert(publish.pkid, (op, bytes));
                publish.dup = true;
                publish
            })
            .collect()
    }

    /// The connection is back: renews `subscriptions` first, then sends what waited. The
    /// suspects go last, one per SUBSCRIBE.
    pub fn release(&mut self, client: &AsyncClient, subscriptions: Vec<(String, QoS)>) {
        // A filter renewed has observers: an UNSUBSCRIBE of it still waiting is from before they
        // came (its last observer left and another took it again while the connection was down).
        // Sent after the renewal, it would end the subscription they are waiting on.
        if !subscriptions.is_empty() {
            let renewed: HashSet<&str> = subscriptions.iter().map(|(filter, _)| filter.as_str()).collect();
            self.backlog.retain(|request| !matches!(request, Request::Unsubscribe { filter } if renewed.contains(filter.as_str())));
        }
        for request in self.renewal(subscriptions).into_iter().rev() {
            if let Request::Subscribe { filters } = &request {
                self.count_subscribing(filters);
            }
            self.backlog.push_front(request);
        }
        self.held = false;
        self.pump(client);
    }

    /// The SUBSCRIBEs that renew `subscriptions`: as few as `subscribe_limit` allows for all
    /// but the suspects, then one for each suspect.
    fn renewal(&self, subscriptions: Vec<(String, QoS)>) -> Vec<Request> {
        let (suspects, others): (Vec<_>, Vec<_>) = subscriptions.into_iter().partition(|(filter, _)| self.suspects.contains(filter));
        let mut renewal = self.subscribes(others);
        renewal.extend(suspects.into_iter().map(|filter| Request::Subscribe { filters: vec![filter] }));
        renewal
    }

    /// The new session does not know the QoS 2 publishes awaiting PUBCOMP: the broker had
    /// received them (PUBREC), so they count as published.
    pub fn forget_pubrels(&mut self, pubrels: &[u16]) -> Vec<Completion> {
        pubrels.iter().flat_map(|pkid| self.settle_publish(*pkid)).collect()
    }

    /// Nothing queued, nothing unacknowledged.
    pub fn is_idle(&self) -> bool {
        self.backlog.is_empty()
            && self.resend.is_empty()
            && self.in_channel.is_empty()
            && self.awaiting_puback.is_empty()
            && self.awaiting_suback.is_empty()
            && self.awaiting_unsuback.is_empty()
            && self.collided.is_none()
    }

    pub fn on_outgoing(&mut self, outgoing: &Outgoing) -> Option<Completion> {
        match outgoing {
            Outgoing::Publish(pkid) => {
                if self.resending > 0 {
                    // A resend from rumqttc's pending list: `resume` filed it already.
                    self.resending -= 1;
                    if let Some(&(_, bytes)) = self.awaiting_puback.get(pkid) {
                        self.resending_bytes = self.resending_bytes.saturating_sub(bytes);
                        self.count_written(bytes);
                    }
                    return None;
                }
                if let Some(parked) = self.collided.take() {
                    // rumqttc sends the parked publish once its packet id is free again.
                    self.count_written(parked.1);
                    return self.await_ack(*pkid, parked);
                }
                match self.in_channel.pop_front() {
                    Some(Sent::Publish { op, qos, bytes, .. }) => {
                        self.count_written(bytes);
                        match qos {
                            QoS::AtMostOnce => Some(Completion::Published(op)),
                            _ => self.await_ack(*pkid, (op, bytes)),
                        }
                    }
                    other => self.out_of_step(other),
                }
            }
            Outgoing::AwaitAck(_) => match self.in_channel.pop_front() {
                Some(Sent::Publish { op, bytes, .. }) => {
                    self.collided = Some((op, bytes));
                    None
                }
                other => self.out_of_step(other),
            },
            Outgoing::Subscribe(pkid) => match self.in_channel.pop_front() {
                Some(Sent::Subscribe { filters }) => {
                    self.awaiting_suback.push_back((*pkid, filters));
                    None
                }
                other => self.out_of_step(other),
            },
            Outgoing::Unsubscribe(pkid) => match self.in_channel.pop_front() {
                Some(Sent::Unsubscribe { filter }) => {
                    self.awaiting_unsuback.push_back((*pkid, filter));
                    None
                }
                other => self.out_of_step(other),
            },
            _ => None,
        }
    }

    /// Files a written QoS 1/2 publish under its packet id until its ack. An op already filed
    /// there is never dropped in silence (its promise would never settle, not even on close).
    fn await_ack(&mut self, pkid: u16, entry: (u32, usize)) -> Option<Completion> {
        self.awaiting_puback.insert(pkid, entry).map(|(op, _)| Completion::IdReused(op))
    }

    /// Never expected: it would mean rumqttc reordered requests. Put the entry back rather
    /// than settle the wrong operation.
    fn out_of_step(&mut self, entry: Option<Sent>) -> Option<Completion> {
        if let Some(entry) = entry {
            self.in_channel.push_front(entry);
        }
        None
    }

    /// The filters of the SUBSCRIBEs written on the lost connection and not acknowledged: a
    /// broker that refuses a filter by dropping the connection dropped it for one of them.
    pub fn unacknowledged_subscribes(&self) -> Vec<String> {
        self.awaiting_suback.iter().flat_map(|(_, filters)| filters.iter().cloned()).collect()
    }

    /// Acks that settle requests. SUBACK can settle several filters at once.
    pub fn on_incoming(&mut self, packet: &Packet) -> Vec<Completion> {
        match packet {
            Packet::PubAck(ack) => self.settle_publish(ack.pkid),
            Packet::PubComp(comp) => self.settle_publish(comp.pkid),
            Packet::SubAck(ack) => match self.awaiting_suback.iter().position(|(pkid, _)| *pkid == ack.pkid) {
                Some(index) => {
                    let filters = self.awaiting_suback.remove(index).map(|(_, filters)| filters).unwrap_or_default();
                    // A filter the broker gave no return code for is not subscribed: a refusal,
                    // rather than an observer waiting forever.
                    let mut granted = ack.return_codes.iter().map(|code| match code {
                        SubscribeReasonCode::Success(qos) => Some(*qos),
                        SubscribeReasonCode::Failure => None,
                    });
                    let mut completions = Vec::new();
                    for filter in filters {
                        let granted = granted.next().flatten();
                        self.suspects.remove(&filter);
                        // A later SUBSCRIBE of the same filter (subscribed again after an
                        // unsubscribe, or at a higher QoS) settles it: this ack is from before
                        // the broker had it.
                        if !self.count_off_subscribe(&filter) {
                            completions.push(Completion::Subscribed(filter, granted));
                        }
                    }
                    if self.subscribing.is_empty() {
                        self.suspects.clear();
                    }
                    completions
                }
                None => Vec::new(),
            },
            Packet::UnsubAck(ack) => {
                if let Some(index) = self.awaiting_unsuback.iter().position(|(pkid, _)| *pkid == ack.pkid) {
                    self.awaiting_unsuback.remove(index);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn settle_publish(&mut self, pkid: u16) -> Vec<Completion> {
        self.awaiting_puback.remove(&pkid).map(|(op, _)| Completion::Published(op)).into_iter().collect()
    }

    /// Forgets everything outstanding; returns the publish ops that will never complete.
    pub fn abandon(&mut self) -> Vec<Rejected> {
        let mut ops: Vec<Rejected> = self.awaiting_puback.drain().map(|(_, (op, _))| Rejected { op, sent: true }).collect();
        ops.extend(self.collided.take().map(|(op, _)| Rejected { op, sent: true }));
        for sent in self.in_channel.drain(..) {
            if let Sent::Publish { op, written, .. } = sent {
                ops.push(Rejected { op, sent: written || self.connected });
            }
        }
        for request in self.backlog.drain(..) {
            if let Request::Publish { op, written, .. } = request {
                ops.push(Rejected { op, sent: written });
            }
        }
        ops.extend(self.resend.drain(..).map(|r| Rejected { op: r.op, sent: true }));
        self.resending = 0;
        self.resending_bytes = 0;
        self.queued = Load::default();
        self.awaiting_suback.clear();
        self.subscribing.clear();
        self.awaiting_unsuback.clear();
        self.held = false;
        each_op_once(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{MqttOptions, PubComp};

    fn publish(op: u32, qos: QoS) -> Request {
        Request::Publish { op, topic: "t".into(), qos, retain: false, payload: vec![1], written: false }
    }

    #[test]
    fn an_op_awaiting_its_ack_is_never_overwritten_in_silence() {
        // Only reachable if rumqttc reuses an id before its ack: the op it displaced used to
        // vanish, its promise settled by nothing, not even close().
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = Outbox::default();
        outbox.submit(&client, publish(1, QoS::ExactlyOnce));
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(7)), None);
        outbox.submit(&client, publish(2, QoS::AtLeastOnce));
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(7)), Some(Completion::IdReused(1)));
        assert_eq!(outbox.on_incoming(&Packet::PubComp(PubComp::new(7))), vec![Completion::Published(2)]);
        assert!(outbox.is_idle());
    }

    #[test]
    fn a_withdrawn_publish_leaves_what_was_never_written_and_says_what_is_past_recall() {
        // A channel with room for one request: op 1 goes in, ops 2 and 3 wait.
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 1);
        let mut outbox = Outbox::default();
        outbox.submit(&client, publish(1, QoS::AtLeastOnce));
        outbox.submit(&client, publish(2, QoS::AtLeastOnce));
        outbox.submit(&client, publish(3, QoS::AtLeastOnce));
        assert_eq!(outbox.withdraw(&[2]), vec![Withdrawn { unsent: 1, written: 0, held: 0 }]);
        assert_eq!(backlog_ops(&outbox), vec![(3, "t".to_string())]);
        assert_eq!(outbox.queued(), Load { operations: 1, bytes: 2 });
        assert_eq!(
            outbox.withdraw(&[1, 2]),
            vec![Withdrawn { unsent: 0, written: 0, held: 1 }, Withdrawn::default()],
            "op 1 is in rumqttc's channel, op 2 gone"
        );
        // Written on a lost connection and unacknowledged: taken out of the resends.
        let (mut lost, pending) = in_flight();
        lost.requeue(pending, |_| true, None);
        assert_eq!(lost.withdraw(&[2]), vec![Withdrawn { unsent: 0, written: 2, held: 0 }]);
        assert_eq!(lost.queued(), Load { operations: 2, bytes: 10 });
        assert_eq!(lost.resume(true).iter().map(|p| p.pkid).collect::<Vec<_>>(), vec![1, 4], "ops 1 and 3 go again");
    }

    #[test]
    fn a_paced_outbox_hands_over_what_the_pace_allows_and_counts_it_from_when_it_is_written() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 1_000);
        let mut outbox = Outbox::new(false, SubscribeLimit::default(), Some(PublishPace::default()));
        for op in 0..150 {
            outbox.submit(&client, publish(op, QoS::AtMostOnce));
        }
        outbox.submit(&client, Request::Subscribe { filters: vec![("s".into(), QoS::AtLeastOnce)] });
        assert_eq!(outbox.in_flight().operations, 100, "a second's worth in rumqttc's channel");
        assert_eq!(outbox.backlog_len(), 51, "the rest, and the SUBSCRIBE after them, wait in order");
        assert_eq!(outbox.paced_until(), None, "until those are written (once connected, say), no time is known");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let written_at = Instant::now();
        for op in 0..100 {
            assert_eq!(outbox.on_outgoing(&Outgoing::Publish(0)), Some(Completion::Published(op)));
        }
        outbox.pump(&client);
        assert_eq!(outbox.backlog_len(), 51, "nothing goes before the first written is a second old");
        let due = outbox.paced_until().expect("paced");
        assert!(due >= written_at + std::time::Duration::from_secs(1) && due <= Instant::now() + std::time::Duration::from_secs(1), "{due:?}");
        assert_eq!(Outbox::default().paced_until(), None);
    }

    #[test]
    fn a_publish_counts_as_queued_until_rumqttcs_channel_takes_it_then_as_in_flight_until_done() {
        // A channel with room for one request; `publish` is 2 bytes (topic "t", one byte).
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 1);
        let mut outbox = Outbox::default();
        outbox.submit(&client, publish(1, QoS::AtLeastOnce));
        outbox.submit(&client, publish(2, QoS::AtMostOnce));
        assert_eq!(outbox.backlog_len(), 1, "op 2 waits: the channel holds op 1");
        assert_eq!(outbox.queued(), Load { operations: 1, bytes: 2 });
        assert_eq!(outbox.in_flight(), Load { operations: 1, bytes: 2 });
        // rumqttc takes op 1 from its channel and writes it: op 2 fits in.
        eventloop.clean();
        assert_eq!(eventloop.pending.len(), 1);
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(1)), None);
        outbox.pump(&client);
        assert_eq!(outbox.backlog_len(), 0);
        assert_eq!(outbox.queued(), Load::default());
        assert_eq!(outbox.in_flight(), Load { operations: 2, bytes: 4 }, "op 1 awaits its PUBACK, op 2 is in the channel");
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(0)), Some(Completion::Published(2)), "QoS 0: done once written");
        assert_eq!(outbox.in_flight(), Load { operations: 1, bytes: 2 });
        assert_eq!(outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(1))), vec![Completion::Published(1)]);
        assert_eq!(outbox.in_flight(), Load::default());
        assert!(outbox.is_idle());
    }

    #[test]
    fn requests_still_in_rumqttcs_channel_when_the_connection_is_lost_wait_for_the_next_one() {
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = Outbox::default();
        outbox.submit(&client, publish(1, QoS::AtLeastOnce));
        outbox.submit(&client, Request::Subscribe { filters: vec![("s".into(), QoS::AtLeastOnce)] });
        outbox.submit(&client, publish(2, QoS::AtMostOnce));
        outbox.submit(&client, Request::Unsubscribe { filter: "u".into() });
        outbox.submit(&client, publish(3, QoS::ExactlyOnce));
        assert!(!outbox.is_held());
        // Lost before rumqttc took any of them: `clean` gives them all back, none with a packet id.
        eventloop.clean();
        let requeued = outbox.requeue(eventloop.pending.drain(..), |_| true, None);
        assert_eq!(requeued, Requeued::default(), "nothing rejected");
        assert!(outbox.is_held(), "they wait for the connection");
        assert_eq!(backlog_ops(&outbox), [(1, "t".to_string()), (2, "t".to_string()), (3, "t".to_string())]);
        assert_eq!(outbox.queued(), Load { operations: 3, bytes: 6 });
        assert_eq!(outbox.in_flight(), Load::default());
        // On the next connection: the renewal (which covers "s"), then the rest in order.
        outbox.release(&client, vec![("s".into(), QoS::AtLeastOnce)]);
        assert!(!outbox.is_held());
        let sent = channel_requests(&outbox);
        assert_eq!(sent, ["SUBSCRIBE s", "PUBLISH 1", "PUBLISH 2", "UNSUBSCRIBE u", "PUBLISH 3"]);

        // The offline queue policy decides for them as for a publish made while disconnected.
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = Outbox::default();
        outbox.submit(&client, publish(1, QoS::AtLeastOnce));
        outbox.submit(&client, publish(2, QoS::AtMostOnce));
        eventloop.clean();
        let requeued = outbox.requeue(eventloop.pending.drain(..), |qos| qos != QoS::AtMostOnce, None);
        assert_eq!(requeued.rejected, rejected(&[(2, false)]), "given back by rumqttc: it was never written");
        assert_eq!(backlog_ops(&outbox), [(1, "t".to_string())]);
    }

    #[test]
    fn a_publish_parked_on_a_packet_id_collision_when_the_connection_is_lost_goes_again_as_a_new_one() {
        // rumqttc with two packet ids: op 1 (QoS 2) gets id 1, op 2 id 2 (acknowledged); op 3
        // comes round to id 1, still op 1's, and is parked (never written); PUBREC for op 1; op 4
        // waits in the channel. Then the connection is lost.
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = Outbox::default();
        let topic = |op: u32, qos| Request::Publish { op, topic: format!("t{op}"), qos, retain: false, payload: vec![1], written: false };
        outbox.submit(&client, topic(1, QoS::ExactlyOnce));
        outbox.submit(&client, topic(2, QoS::AtLeastOnce));
        outbox.submit(&client, topic(3, QoS::AtLeastOnce));
        outbox.submit(&client, topic(4, QoS::AtMostOnce));
        eventloop.clean();
        let mut channel: VecDeque<MqttRequest> = eventloop.pending.drain(..).collect();
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(1)), None);
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(2)), None);
        assert_eq!(outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(2))), vec![Completion::Published(2)]);
        assert_eq!(outbox.on_outgoing(&Outgoing::AwaitAck(1)), None);
        assert_eq!(outbox.in_flight().operations, 3, "op 1 awaits PUBCOMP, op 3 is parked, op 4 is in the channel");
        // What rumqttc gives back: the PUBREL due, the channel's op 4, and the parked op 3 (with id 1).
        let mut parked = match channel.drain(..3).nth(2) {
            Some(MqttRequest::Publish(publish)) => publish,
            other => panic!("op 3's publish, not {other:?}"),
        };
        parked.pkid = 1;
        let mut pending: VecDeque<MqttRequest> = [MqttRequest::PubRel(rumqttc::PubRel::new(1))].into_iter().chain(channel).collect();
        outbox.take_back_parked(&mut pending, Some(parked));
        let requeued = outbox.requeue(pending, |_| true, None);
        // Before, op 1 took op 3's publish (same packet id) and op 3 failed, although its
        // message went out again: as op 1's, with id 1 again while op 1's PUBCOMP was due.
        assert_eq!(requeued, Requeued { pubrels: vec![1], ..Requeued::default() });
        assert_eq!(backlog_ops(&outbox), [(3, "t3".to_string()), (4, "t4".to_string())]);
        outbox.release(&client, Vec::new());
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(2)), None, "op 3 gets an id of its own");
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(0)), Some(Completion::Published(4)));
        assert_eq!(outbox.on_incoming(&Packet::PubComp(PubComp::new(1))), vec![Completion::Published(1)]);
        assert_eq!(outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(2))), vec![Completion::Published(3)]);
        assert!(outbox.is_idle());

        // Op 1 at QoS 1, unacknowledged when the connection is lost, and the session resumed: op 1
        // goes again as it was, op 3 after it with an id of its own.
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = Outbox::default();
        for op in 1..=3 {
            outbox.submit(&client, topic(op, QoS::AtLeastOnce));
        }
        eventloop.clean();
        let mut channel: Vec<rumqttc::Publish> = eventloop.pending.drain(..).filter_map(|r| if let MqttRequest::Publish(p) = r { Some(p) } else { None }).collect();
        outbox.on_outgoing(&Outgoing::Publish(1));
        outbox.on_outgoing(&Outgoing::Publish(2));
        outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(2)));
        outbox.on_outgoing(&Outgoing::AwaitAck(1));
        for publish in &mut channel {
            publish.pkid = 1;
        }
        let parked = channel.pop();
        let mut pending: VecDeque<MqttRequest> = [MqttRequest::Publish(channel.swap_remove(0))].into();
        outbox.take_back_parked(&mut pending, parked);
        assert_eq!(outbox.requeue(pending, |_| true, None), Requeued::default());
        let resends: Vec<(u16, String)> = outbox.resume(true).into_iter().map(|p| (p.pkid, p.topic)).collect();
        assert_eq!(resends, [(1, "t1".to_string())]);
        outbox.release(&client, Vec::new());
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(1)), None);
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(2)), None);
        // Before, op 1 and op 3 were both filed under id 1: op 1 never settled.
        assert_eq!(outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(1))), vec![Completion::Published(1)]);
        assert_eq!(outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(2))), vec![Completion::Published(3)]);
        assert!(outbox.is_idle());
    }

    #[test]
    fn a_qos2_publish_the_broker_received_before_the_loss_waits_for_its_pubcomp() {
        // Op 1 (packet id 5) got PUBREC: rumqttc gives back its PUBREL, not the publish.
        let lost = || {
            let mut outbox = Outbox::default();
            outbox.in_channel.push_back(Sent::Publish { op: 1, qos: QoS::ExactlyOnce, bytes: 2, written: false });
            outbox.on_outgoing(&Outgoing::Publish(5));
            let requeued = outbox.requeue(vec![MqttRequest::PubRel(rumqttc::PubRel::new(5))], |_| true, None);
            assert_eq!(requeued, Requeued { pubrels: vec![5], ..Requeued::default() }, "not rejected: PUBREL is due");
            outbox
        };
        // A resumed session completes it.
        let mut outbox = lost();
        assert!(!outbox.is_idle());
        assert_eq!(outbox.on_incoming(&Packet::PubComp(PubComp::new(5))), vec![Completion::Published(1)]);
        assert!(outbox.is_idle());
        // A new session does not know it: the broker had it, so it is published.
        let mut outbox = lost();
        assert_eq!(outbox.forget_pubrels(&[5]), vec![Completion::Published(1)]);
        assert!(outbox.is_idle());
    }

    #[test]
    fn the_subscribe_size_is_what_rumqttc_encodes_whatever_the_length_of_its_remaining_length() {
        // A filter of n bytes makes a SUBSCRIBE whose remaining length is n + 5: 1, 2 and 3 bytes
        // of it on either side of 127 and 16,383.
        for len in [1, 122, 123, 16_378, 16_379, 65_535] {
            let filter = long_filter(len);
            assert_eq!(subscribe_bytes(subscribe_filter_bytes(&filter.0)), encoded_bytes(std::slice::from_ref(&filter)), "filter of {len} bytes");
        }
        let filters: Vec<(String, QoS)> = (0..3).map(|i| (format!("t/{i}"), QoS::AtLeastOnce)).collect();
        let filter_bytes: usize = filters.iter().map(|(f, _)| subscribe_filter_bytes(f)).sum();
        assert_eq!(subscribe_bytes(filter_bytes), encoded_bytes(&filters));
    }

    fn written_publish(pkid: u16, topic: &str) -> MqttRequest {
        let mut publish = rumqttc::Publish::new(topic, QoS::AtLeastOnce, vec![0u8; 4]);
        publish.pkid = pkid;
        MqttRequest::Publish(publish)
    }

    fn rejected(ops: &[(u32, bool)]) -> Vec<Rejected> {
        ops.iter().map(|&(op, sent)| Rejected { op, sent }).collect()
    }

    /// Ops 1, 2 (two topics), 3 written as packet ids 1 to 4, none acknowledged.
    fn in_flight() -> (Outbox, Vec<MqttRequest>) {
        let mut outbox = Outbox::default();
        let sent = [(1, 1, "a"), (2, 2, "b"), (3, 2, "c"), (4, 3, "d")];
        for (pkid, op, _) in sent {
            outbox.awaiting_puback.insert(pkid, (op, 5));
        }
        (outbox, sent.iter().map(|(pkid, _, topic)| written_publish(*pkid, topic)).collect())
    }

    /// `in_flight` lost, then its session resumed: the resends as rumqttc's pending list holds them.
    fn resumed() -> (Outbox, VecDeque<MqttRequest>) {
        let (mut outbox, pending) = in_flight();
        outbox.requeue(pending, |_| true, None);
        let resends = outbox.resume(true).into_iter().map(MqttRequest::Publish).collect();
        (outbox, resends)
    }

    /// Op 1's resend (packet id 1) is written again, then the connection is lost: rumqttc lists
    /// the unwritten rest of its pending list first, then what it had written.
    fn first_resend_written_then_lost(outbox: &mut Outbox, pending: &mut VecDeque<MqttRequest>) {
        outbox.on_outgoing(&Outgoing::Publish(1));
        pending.rotate_left(1);
    }

    /// Publishes held for the next connection: the resends, then the backlog.
    /// What the outbox handed to rumqttc's channel, in order, as words.
    fn channel_requests(outbox: &Outbox) -> Vec<String> {
        outbox
            .in_channel
            .iter()
            .map(|sent| match sent {
                Sent::Subscribe { filters } => format!("SUBSCRIBE {}", filters.join(" ")),
                Sent::Unsubscribe { filter } => format!("UNSUBSCRIBE {filter}"),
                Sent::Publish { op, .. } => format!("PUBLISH {op}"),
            })
            .collect()
    }

    fn backlog_ops(outbox: &Outbox) -> Vec<(u32, String)> {
        let resends = outbox.resend.iter().map(|r| (r.op, r.publish.topic.clone()));
        let backlog = outbox.backlog.iter().filter_map(|r| match r {
            Request::Publish { op, topic, .. } => Some((*op, topic.clone())),
            _ => None,
        });
        resends.chain(backlog).collect()
    }

    #[test]
    fn the_oldest_unacknowledged_publish_is_the_first_written_one_in_pending() {
        let (outbox, mut pending) = in_flight();
        // A PUBREL due and requests never written (no packet id) are not candidates.
        pending.insert(0, MqttRequest::PubRel(rumqttc::PubRel::new(9)));
        pending.insert(0, written_publish(0, "never written"));
        assert_eq!(outbox.oldest_unacknowledged(&pending), Some(Written { op: 1, topic: "a".into() }));
        assert_eq!(Outbox::default().oldest_unacknowledged(&pending), None, "no op known for those packet ids");
    }

    #[test]
    fn resends_not_written_again_are_not_the_oldest_unacknowledged() {
        let (mut outbox, mut pending) = resumed();
        first_resend_written_then_lost(&mut outbox, &mut pending);
        assert_eq!(outbox.oldest_unacknowledged(&pending), Some(Written { op: 1, topic: "a".into() }));
        // Ops 1 and 2 (pkids 1, 2) written again, listed by packet id from the last one acked.
        let (mut outbox, mut pending) = resumed();
        outbox.on_outgoing(&Outgoing::Publish(1));
        outbox.on_outgoing(&Outgoing::Publish(2));
        let first = pending.pop_front().unwrap();
        let second = pending.pop_front().unwrap();
        pending.extend([second, first]);
        assert_eq!(outbox.oldest_unacknowledged(&pending), Some(Written { op: 1, topic: "a".into() }));
    }

    #[test]
    fn a_refused_publish_alone_is_taken_out_of_the_requeue() {
        let (mut outbox, pending) = in_flight();
        let refused = Written { op: 2, topic: "c".into() };
        let requeued = outbox.requeue(pending, |_| true, Some(&refused));
        assert_eq!(requeued.refused, Some(2));
        assert!(requeued.rejected.is_empty());
        // The op's other topic and the publishes around it go out again, in their order.
        let expected: Vec<(u32, String)> = vec![(1, "a".into()), (2, "b".into()), (3, "d".into())];
        assert_eq!(backlog_ops(&outbox), expected);
        assert_eq!(outbox.queued(), Load { operations: 3, bytes: 15 });
    }

    #[test]
    fn without_a_refused_publish_everything_unacknowledged_is_requeued() {
        let (mut outbox, pending) = in_flight();
        let requeued = outbox.requeue(pending, |_| true, None);
        assert_eq!(requeued, Requeued::default());
        assert_eq!(backlog_ops(&outbox).len(), 4);
        // Not written on this connection (no packet id): nothing is refused.
        let (mut outbox, _) = in_flight();
        let requeued = outbox.requeue(vec![written_publish(7, "x")], |_| true, Some(&Written { op: 9, topic: "x".into() }));
        assert_eq!(requeued.refused, None);
    }

    #[test]
    fn a_resumed_session_gets_the_written_publishes_again_with_their_packet_ids_and_dup() {
        let (mut outbox, pending) = in_flight();
        outbox.requeue(pending, |_| true, None);
        outbox.push_back(publish(5, QoS::AtLeastOnce));
        let resends = outbox.resume(true);
        let sent: Vec<(u16, String, bool)> = resends.iter().map(|p| (p.pkid, p.topic.clone(), p.dup)).collect();
        let expected: Vec<(u16, String, bool)> =
            vec![(1, "a".into(), true), (2, "b".into(), true), (3, "c".into(), true), (4, "d".into(), true)];
        assert_eq!(sent, expected);
        assert_eq!(outbox.queued(), Load { operations: 1, bytes: 2 }, "in flight again, not queued: only op 5 is");
        assert_eq!(outbox.in_flight().operations, 4);
        // rumqttc reports writing them before anything of its channel: they do not take the
        // channel's records.
        outbox.in_channel.push_back(Sent::Publish { op: 9, qos: QoS::AtLeastOnce, bytes: 1, written: false });
        for pkid in 1..=4 {
            assert_eq!(outbox.on_outgoing(&Outgoing::Publish(pkid)), None);
        }
        assert_eq!(outbox.on_outgoing(&Outgoing::Publish(5)), None);
        assert_eq!(outbox.awaiting_puback.get(&5), Some(&(9, 1)), "the channel's publish, under its own id");
        assert_eq!(outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(2))), vec![Completion::Published(2)]);
        assert_eq!(outbox.on_incoming(&Packet::PubAck(rumqttc::PubAck::new(4))), vec![Completion::Published(3)]);
    }

    #[test]
    fn a_resend_lost_again_before_it_was_written_is_kept_with_its_op() {
        let (mut outbox, mut resends) = resumed();
        first_resend_written_then_lost(&mut outbox, &mut resends);
        outbox.requeue(resends, |_| true, None);
        let expected: Vec<(u32, String)> = vec![(1, "a".into()), (2, "b".into()), (2, "c".into()), (3, "d".into())];
        assert_eq!(backlog_ops(&outbox), expected, "in the order first published");
        assert_eq!(outbox.resume(true).iter().map(|p| p.pkid).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_new_session_gets_the_written_publishes_as_new_ones_first() {
        let (mut outbox, pending) = in_flight();
        outbox.backlog.push_back(Request::Publish { op: 5, topic: "e".into(), qos: QoS::AtLeastOnce, retain: false, payload: vec![], written: false });
        outbox.requeue(pending, |_| true, None);
        assert!(outbox.resume(false).is_empty());
        let expected: Vec<(u32, String)> = vec![(1, "a".into()), (2, "b".into()), (2, "c".into()), (3, "d".into()), (5, "e".into())];
        assert_eq!(backlog_ops(&outbox), expected);
        assert!(outbox.awaiting_puback.is_empty());
        assert_eq!(outbox.queued().operations, 5);
    }

    #[test]
    fn what_waits_beyond_the_offline_bounds_is_turned_away_newest_first_whole_ops() {
        let held = || {
            let (mut outbox, pending) = in_flight();
            outbox.requeue(pending, |_| true, None);
            outbox.push_back(publish(4, QoS::AtLeastOnce));
            outbox.push_back(Request::Unsubscribe { filter: "f".into() });
            outbox.push_back(publish(5, QoS::AtMostOnce));
            outbox
        };
        let mut outbox = held();
        assert_eq!(outbox.turn_away_beyond(Load { operations: 6, bytes: 24 }), []);
        assert_eq!(outbox.queued(), Load { operations: 6, bytes: 24 });
        // Op 2's first packet would fit the count, its second would not: op 2 goes whole.
        for max in [Load { operations: 2, bytes: 1000 }, Load { operations: 100, bytes: 12 }] {
            let mut outbox = held();
            // Ops 2 and 3 were written on the lost connection; 4 and 5 never were.
            assert_eq!(outbox.turn_away_beyond(max), rejected(&[(2, true), (3, true), (4, false), (5, false)]));
            assert_eq!(backlog_ops(&outbox), vec![(1, "a".to_string())]);
            assert_eq!(outbox.queued(), Load { operations: 1, bytes: 5 });
            assert!(matches!(outbox.backlog.front(), Some(Request::Unsubscribe { .. })), "an UNSUBSCRIBE is not a publish: it stays");
        }
        let mut outbox = held();
        assert_eq!(outbox.turn_away_beyond(Load { operations: 4, bytes: 1000 }), rejected(&[(4, false), (5, false)]));
        assert_eq!(backlog_ops(&outbox).len(), 4);
        // Bytes add up to the bound exactly: all but op 5's 2 bytes.
        let mut outbox = held();
        assert_eq!(outbox.turn_away_beyond(Load { operations: 100, bytes: 22 }), rejected(&[(5, false)]));
        assert_eq!(outbox.queued(), Load { operations: 5, bytes: 22 });
    }

    #[test]
    fn the_offline_policy_and_abandon_cover_the_resends() {
        let (mut outbox, pending) = in_flight();
        let requeued = outbox.requeue(pending, |qos| qos == QoS::AtMostOnce, None);
        assert_eq!(requeued.rejected, rejected(&[(1, true), (2, true), (3, true)]), "written, unacknowledged: the broker may have them");
        assert!(outbox.is_idle());
        let (mut outbox, pending) = in_flight();
        outbox.requeue(pending, |_| true, None);
        assert!(!outbox.is_idle());
        assert_eq!(outbox.abandon(), rejected(&[(1, true), (2, true), (3, true)]));
        assert!(outbox.is_idle());
    }

    #[test]
    fn abandon_says_of_each_op_once_whether_some_of_it_was_handed_to_the_connection() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let abandoned = |connected: bool| {
            let (mut outbox, _) = in_flight();
            if connected {
                outbox.on_connack();
            }
            // Op 4 went into rumqttc's channel; op 5 waits in the backlog (held); op 3 has a
            // second topic's packet there too.
            outbox.submit(&client, publish(4, QoS::AtLeastOnce));
            outbox.held = true;
            outbox.submit(&client, publish(5, QoS::AtLeastOnce));
            outbox.submit(&client, publish(3, QoS::AtLeastOnce));
            let rejected = outbox.abandon();
            assert!(outbox.is_idle());
            rejected
        };
        assert_eq!(abandoned(true), rejected(&[(1, true), (2, true), (3, true), (4, true), (5, false)]));
        // Before CONNACK rumqttc writes nothing from its channel.
        assert_eq!(abandoned(false), rejected(&[(1, true), (2, true), (3, true), (4, false), (5, false)]));
    }

    #[test]
    fn a_publish_written_before_a_new_session_still_counts_as_written_until_it_is_written_again() {
        // Op 1 (packet id 1) was written, then the connection was lost; the next session is new.
        let lost_then_new_session = || {
            let mut outbox = Outbox::default();
            outbox.awaiting_puback.insert(1, (1, 5));
            outbox.requeue(vec![written_publish(1, "a")], |_| true, None);
            outbox.on_connack();
            assert_eq!(outbox.resume(false), vec![]);
            outbox
        };
        assert_eq!(lost_then_new_session().abandon(), rejected(&[(1, true)]));
        assert_eq!(lost_then_new_session().withdraw(&[1]), vec![Withdrawn { written: 1, ..Withdrawn::default() }]);
        assert_eq!(lost_then_new_session().turn_away_beyond(Load::default()), rejected(&[(1, true)]));
        // Handed over again and lost again before it was written: still the broker may have it.
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = lost_then_new_session();
        outbox.release(&client, Vec::new());
        eventloop.clean();
        let requeued = outbox.requeue(eventloop.pending.drain(..), |_| false, None);
        assert_eq!(requeued.rejected, rejected(&[(1, true)]));
    }

    #[test]
    fn a_topic_turned_away_is_sent_when_another_topic_of_its_publish_awaits_its_pubcomp() {
        // Op 1 to two topics at QoS 2: packet id 5 got PUBREC, the other was never written.
        let mut outbox = Outbox::default();
        outbox.awaiting_puback.insert(5, (1, 2));
        let never_written = rumqttc::Publish::new("b", QoS::ExactlyOnce, vec![1]);
        outbox.in_channel.push_back(Sent::Publish { op: 1, qos: QoS::ExactlyOnce, bytes: 2, written: false });
        let pending = vec![MqttRequest::PubRel(rumqttc::PubRel::new(5)), MqttRequest::Publish(never_written)];
        let requeued = outbox.requeue(pending, |_| false, None);
        assert_eq!(requeued.rejected, rejected(&[(1, true)]), "the broker has the other topic's");
        assert_eq!(requeued.pubrels, vec![5]);
    }

    #[test]
    fn an_unacknowledged_unsubscribe_goes_again_when_the_session_may_resume() {
        let filters = |outbox: &Outbox| -> Vec<String> {
            outbox.backlog.iter().filter_map(|r| match r {
                Request::Unsubscribe { filter } => Some(filter.clone()),
                _ => None,
            }).collect()
        };
        for session_may_resume in [true, false] {
            let mut outbox = Outbox::new(session_may_resume, SubscribeLimit::default(), None);
            for filter in ["acked", "a", "b"] {
                outbox.in_channel.push_back(Sent::Unsubscribe { filter: filter.into() });
            }
            for pkid in [1, 2, 3] {
                outbox.on_outgoing(&Outgoing::Unsubscribe(pkid));
            }
            outbox.on_incoming(&Packet::UnsubAck(rumqttc::UnsubAck::new(1)));
            assert!(!outbox.is_idle());
            // "c" was never written: rumqttc gives it back in `pending`.
            let never_written = MqttRequest::Unsubscribe(rumqttc::Unsubscribe::new("c"));
            outbox.in_channel.push_back(Sent::Unsubscribe { filter: "c".into() });
            outbox.requeue(vec![never_written], |_| true, None);
            let expected: &[&str] = if session_may_resume { &["a", "b", "c"] } else { &["c"] };
            assert_eq!(filters(&outbox), expected);
        }
    }

    /// The filters of each SUBSCRIBE among `requests`.
    fn subscribe_packets(requests: Vec<Request>) -> Vec<Vec<(String, QoS)>> {
        requests.into_iter().filter_map(|r| if let Request::Subscribe { filters } = r { Some(filters) } else { None }).collect()
    }

    /// The bytes of a SUBSCRIBE of `filters` as rumqttc encodes it.
    fn encoded_bytes(filters: &[(String, QoS)]) -> usize {
        rumqttc::Subscribe::new_many(filters.iter().map(|(f, q)| SubscribeFilter::new(f.clone(), *q))).size()
    }

    const AWS_IOT: SubscribeLimit = SubscribeLimit { filters: Some(8), bytes: MAX_SUBSCRIBE_BYTES };

    #[test]
    fn subscribes_and_renewals_carry_at_most_the_filters_one_subscribe_may() {
        let filters = |count: usize| (0..count).map(|i| (format!("t/{i}"), QoS::AtLeastOnce)).collect::<Vec<_>>();
        let aws_iot = Outbox::new(false, AWS_IOT, None);
        let subscribes = subscribe_packets(aws_iot.subscribes(filters(20)));
        assert_eq!(subscribes.iter().map(Vec::len).collect::<Vec<_>>(), [8, 8, 4]);
        assert_eq!(subscribes.concat(), filters(20), "in order");
        assert_eq!(subscribe_packets(aws_iot.renewal(filters(16))).iter().map(Vec::len).collect::<Vec<_>>(), [8, 8]);
        assert_eq!(subscribe_packets(Outbox::default().renewal(filters(20))).len(), 1, "no filter quota: one SUBSCRIBE");

        // Each SUBACK settles the filters of its own SUBSCRIBE.
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = Outbox::new(false, AWS_IOT, None);
        outbox.submit(&client, Request::Subscribe { filters: filters(10) });
        outbox.on_outgoing(&Outgoing::Subscribe(1));
        outbox.on_outgoing(&Outgoing::Subscribe(2));
        let granted = |pkid, count| Packet::SubAck(rumqttc::SubAck::new(pkid, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); count]));
        let settled = |completions: Vec<Completion>| completions.len();
        assert_eq!(settled(outbox.on_incoming(&granted(1, 8))), 8);
        assert_eq!(settled(outbox.on_incoming(&granted(2, 2))), 2);
        assert!(outbox.is_idle());
    }

    #[test]
    fn subscribes_and_renewals_stay_within_the_byte_budget_in_order() {
        // 5,000 filters of 46 bytes: about 245 KB in one SUBSCRIBE, which brokers with a
        // maximum packet size drop.
        let filters: Vec<(String, QoS)> = (0..5_000).map(|i| (format!("fleet/devices/{i:05}/status/temperature/celsius"), QoS::AtLeastOnce)).collect();
        let outbox = Outbox::default();
        for (requests, what) in [(outbox.subscribes(filters.clone()), "subscribe"), (outbox.renewal(filters.clone()), "renewal")] {
            let packets = subscribe_packets(requests);
            assert_eq!(packets.len(), 4, "{what}");
            assert_eq!(packets.concat(), filters, "{what}: every filter, in order");
            for (index, packet) in packets.iter().enumerate() {
                assert!(encoded_bytes(packet) <= MAX_SUBSCRIBE_BYTES, "{what}: SUBSCRIBE {index} has {} bytes", encoded_bytes(packet));
                // Full: the next filter would have taken it over the budget.
                if let Some(next) = packets.get(index + 1).and_then(|p| p.first()) {
                    assert!(encoded_bytes(&[packet.clone(), vec![next.clone()]].concat()) > MAX_SUBSCRIBE_BYTES, "{what}: SUBSCRIBE {index} could take one more");
                }
            }
        }
    }

    fn long_filter(len: usize) -> (String, QoS) {
        ("f".repeat(len), QoS::AtLeastOnce)
    }

    #[test]
    fn a_subscribe_is_filled_up_to_the_byte_budget_and_a_filter_over_it_goes_alone() {
        let outbox = Outbox::default();
        // Filters adding up to the budget exactly go in one SUBSCRIBE; a byte more, in two.
        let exactly = vec![long_filter(32_762), long_filter(32_762)];
        assert_eq!(encoded_bytes(&exactly), MAX_SUBSCRIBE_BYTES);
        assert_eq!(subscribe_packets(outbox.subscribes(exactly.clone())), vec![exactly]);
        assert_eq!(subscribe_packets(outbox.subscribes(vec![long_filter(32_762), long_filter(32_763)])).len(), 2);

        // A filter over the budget on its own (65,535 bytes, the most MQTT allows) goes alone.
        let small = |name: &str| (name.to_string(), QoS::AtLeastOnce);
        let largest = long_filter(65_535);
        assert!(encoded_bytes(std::slice::from_ref(&largest)) > MAX_SUBSCRIBE_BYTES);
        let expected = vec![vec![small("a"), small("b")], vec![largest.clone()], vec![small("c")]];
        assert_eq!(subscribe_packets(outbox.subscribes(vec![small("a"), small("b"), largest.clone(), small("c")])), expected);
        assert_eq!(subscribe_packets(outbox.renewal(vec![largest.clone(), largest.clone()])), vec![vec![largest.clone()], vec![largest]]);
    }

    #[test]
    fn on_aws_iot_a_subscribe_keeps_within_both_the_filter_quota_and_the_byte_budget() {
        let aws_iot = Outbox::new(false, AWS_IOT, None);
        let sizes = |requests: Vec<Request>| subscribe_packets(requests).iter().map(Vec::len).collect::<Vec<_>>();
        // 6 filters of 10,000 bytes take 60,024; a seventh would take 70,027.
        assert_eq!(sizes(aws_iot.subscribes(vec![long_filter(10_000); 8])), [6, 2]);
        assert_eq!(sizes(aws_iot.renewal(vec![long_filter(10_000); 8])), [6, 2]);
        assert_eq!(sizes(aws_iot.subscribes(vec![long_filter(10); 20])), [8, 8, 4]);
    }

    #[test]
    fn suspects_are_renewed_last_one_at_a_time_until_none_is_left() {
        let mut outbox = Outbox { held: true, ..Outbox::default() };
        outbox.suspect_subscribes(vec!["a".into(), "b".into()]);
        let renewal = outbox.renewal(["a", "b", "c", "d"].map(|f| (f.to_string(), QoS::AtLeastOnce)).to_vec());
        let filters: Vec<Vec<&str>> = renewal
            .iter()
            .map(|r| match r {
                Request::Subscribe { filters } => filters.iter().map(|(f, _)| f.as_str()).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(filters, vec![vec!["c", "d"], vec!["a"], vec!["b"]]);
        let granted = |pkid| Packet::SubAck(rumqttc::SubAck::new(pkid, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]));
        outbox.held = false;
        // The others in one SUBSCRIBE (as `pump` moves it); nothing more goes until its SUBACK.
        for request in renewal.into_iter().skip(1) {
            outbox.push_back(request);
        }
        subscribe_in_channel(&mut outbox, &["c", "d"]);
        assert!(!outbox.may_hand_over(), "c and d are in rumqttc's channel");
        outbox.on_outgoing(&Outgoing::Subscribe(1));
        assert!(!outbox.may_hand_over(), "c and d await their SUBACK");
        outbox.on_incoming(&granted(1));
        assert!(outbox.may_hand_over(), "a may go now");
        outbox.backlog.pop_front();
        outbox.in_channel.push_back(Sent::Subscribe { filters: vec!["a".into()] });
        outbox.on_outgoing(&Outgoing::Subscribe(2));
        assert_eq!(outbox.unacknowledged_subscribes(), vec!["a".to_string()]);
        outbox.on_incoming(&granted(2));
        assert!(!outbox.suspects.is_empty(), "b is still waiting");
        outbox.backlog.pop_front();
        outbox.in_channel.push_back(Sent::Subscribe { filters: vec!["b".into()] });
        outbox.on_outgoing(&Outgoing::Subscribe(3));
        outbox.on_incoming(&granted(3));
        assert!(outbox.suspects.is_empty(), "nothing left to probe: back to writing everything at once");
        assert!(outbox.subscribing.is_empty());
    }

    #[test]
    fn suspects_add_up_over_losses_and_each_stays_one_until_a_suback_answers_it() {
        // A broker that drops every SUBSCRIBE over its size: each loss leaves the others' first
        // SUBSCRIBE unacknowledged. Replacing the suspects with it made the renewal alternate
        // between the same big SUBSCRIBEs, dropped every time, forever.
        let subscriptions = || ["a", "b", "c", "d", "e"].map(|f| (f.to_string(), QoS::AtLeastOnce)).to_vec();
        let mut outbox = Outbox { held: true, ..Outbox::default() };
        assert!(outbox.suspect_subscribes(vec!["a".into(), "b".into()]));
        assert!(outbox.suspect_subscribes(vec!["b".into(), "c".into()]), "c is new");
        let filters = |requests: Vec<Request>| -> Vec<Vec<String>> {
            subscribe_packets(requests).into_iter().map(|p| p.into_iter().map(|(f, _)| f).collect()).collect()
        };
        assert_eq!(filters(outbox.renewal(subscriptions())), [vec!["d", "e"], vec!["a"], vec!["b"], vec!["c"]]);

        outbox.held = false;
        subscribe_in_channel(&mut outbox, &["a"]);
        subscribe_in_channel(&mut outbox, &["b"]);
        outbox.on_outgoing(&Outgoing::Subscribe(1));
        outbox.on_incoming(&Packet::SubAck(rumqttc::SubAck::new(1, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])));
        // a is answered; b and c are still suspect after the next loss, which adds d.
        assert!(!outbox.suspect_subscribes(vec!["b".into()]), "b was a suspect already");
        assert!(outbox.suspect_subscribes(vec!["d".into()]));
        assert_eq!(filters(outbox.renewal(subscriptions())), [vec!["a", "e"], vec!["b"], vec!["c"], vec!["d"]]);
    }

    #[test]
    fn a_subscribe_given_up_with_its_connection_does_not_hold_back_the_suback_of_the_next() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let granted = |pkid| Packet::SubAck(rumqttc::SubAck::new(pkid, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]));
        let subscribed_a = || vec![Completion::Subscribed("a".into(), Some(QoS::AtLeastOnce))];
        let mut outbox = Outbox::default();
        outbox.submit(&client, Request::Subscribe { filters: vec![("a".into(), QoS::AtLeastOnce)] });
        outbox.on_outgoing(&Outgoing::Subscribe(1));
        // Lost before its SUBACK: the renewal on the next connection subscribes it again.
        outbox.requeue(Vec::new(), |_| true, None);
        outbox.release(&client, vec![("a".into(), QoS::AtLeastOnce)]);
        outbox.on_outgoing(&Outgoing::Subscribe(1));
        assert_eq!(outbox.on_incoming(&granted(1)), subscribed_a());
        assert!(outbox.is_idle() && outbox.subscribing.is_empty());

        // Abandoned (the connection failed for good), then subscribed again.
        outbox.submit(&client, Request::Subscribe { filters: vec![("a".into(), QoS::AtLeastOnce)] });
        outbox.on_outgoing(&Outgoing::Subscribe(2));
        outbox.abandon();
        outbox.submit(&client, Request::Subscribe { filters: vec![("a".into(), QoS::AtLeastOnce)] });
        outbox.on_outgoing(&Outgoing::Subscribe(3));
        assert_eq!(outbox.on_incoming(&granted(3)), subscribed_a());
        assert!(outbox.is_idle() && outbox.subscribing.is_empty());
    }

    #[test]
    fn an_unsubscribe_from_before_its_filter_was_subscribed_again_is_not_sent_after_the_renewal() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("outbox-test", "127.0.0.1", 1883), 10);
        let mut outbox = Outbox::default();
        // Lost: requests wait. The last observer of "a" leaves and another takes it again; the
        // last observer of "c" leaves for good.
        outbox.requeue(Vec::new(), |_| true, None);
        outbox.submit(&client, Request::Unsubscribe { filter: "a".into() });
        outbox.submit(&client, Request::Subscribe { filters: vec![("a".into(), QoS::AtLeastOnce)] });
        outbox.submit(&client, Request::Unsubscribe { filter: "c".into() });
        // An attempt fails: the SUBSCRIBE is dropped (the renewal covers it), the UNSUBSCRIBEs wait.
        outbox.requeue(Vec::new(), |_| true, None);
        outbox.release(&client, vec![("a".into(), QoS::AtLeastOnce), ("b".into(), QoS::AtLeastOnce)]);
        let sent = channel_requests(&outbox);
        // Before, "UNSUBSCRIBE a" followed the renewal, and the broker dropped "a" for good.
        assert_eq!(sent, ["SUBSCRIBE a b", "UNSUBSCRIBE c"]);
    }

    /// A SUBSCRIBE of `filters` in rumqttc's channel, counted as `submit` counts it.
    fn subscribe_in_channel(outbox: &mut Outbox, filters: &[&str]) {
        outbox.count_subscribing(&filters.iter().map(|f| (f.to_string(), QoS::AtLeastOnce)).collect::<Vec<_>>());
        outbox.in_channel.push_back(Sent::Subscribe { filters: filters.iter().map(|f| f.to_string()).collect() });
    }

    #[test]
    fn a_suback_is_ignored_for_a_filter_subscribed_again_since() {
        let mut outbox = Outbox::default();
        let granted = |pkid| Packet::SubAck(rumqttc::SubAck::new(pkid, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]));
        subscribe_in_channel(&mut outbox, &["a"]);
        outbox.on_outgoing(&Outgoing::Subscribe(1));
        outbox.in_channel.push_back(Sent::Unsubscribe { filter: "a".into() });
        outbox.on_outgoing(&Outgoing::Unsubscribe(2));
        // Subscribed again: still in rumqttc's channel, then written.
        subscribe_in_channel(&mut outbox, &["a"]);
        assert_eq!(outbox.on_incoming(&granted(1)), vec![]);
        outbox.on_outgoing(&Outgoing::Subscribe(3));
        outbox.on_incoming(&Packet::UnsubAck(rumqttc::UnsubAck::new(2)));
        assert_eq!(outbox.on_incoming(&granted(3)), vec![Completion::Subscribed("a".into(), Some(QoS::AtLeastOnce))]);
        assert!(outbox.is_idle());
    }
}
