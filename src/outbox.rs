//! Requests on their way to the broker and the acknowledgements that settle them.
//!
//! rumqttc reports `Outgoing::Publish(pkid)` (and Subscribe/Unsubscribe) in the order requests
//! entered its channel, but does not say which request got which packet id. So every request
//! we put in the channel is recorded in `in_channel`, in the same order, under the same lock;
//! each Outgoing event pops the front and, for QoS > 0, files it by packet id until the ack.
//!
//! When the connection is lost, what rumqttc still held (unacknowledged publishes, its channel)
//! comes back here with `requeue`, in the order it was first sent, and waits (`held`) until the
//! connection is back and the subscriptions are renewed (`release`).

use std::collections::{HashMap, VecDeque};

use rumqttc::{AsyncClient, ClientError, Outgoing, Packet, QoS, Request as MqttRequest, SubscribeFilter, SubscribeReasonCode};

/// Bytes a publish request accounts for in the queues and statistics.
fn publish_bytes(topic: &str, payload: &[u8]) -> usize {
    topic.len() + payload.len()
}

/// A request we make of the broker.
#[derive(Debug)]
pub enum Request {
    Publish { op: u32, topic: String, qos: QoS, retain: bool, payload: Vec<u8> },
    Subscribe { filters: Vec<(String, QoS)> },
    Unsubscribe { filter: String },
}

/// What we remember of a request once it is in rumqttc's channel.
#[derive(Debug)]
enum Sent {
    Publish { op: u32, qos: QoS, bytes: usize },
    Subscribe { filters: Vec<String> },
    Unsubscribe,
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

/// What `requeue` could not keep, and what it left to the next session.
#[derive(Debug, Default, PartialEq)]
pub struct Requeued {
    /// Publish ops that will not be sent again (the offline queue policy turned them away).
    pub rejected: Vec<u32>,
    /// QoS 2 publishes the broker has received (PUBREC) but not completed: PUBREL is due.
    pub pubrels: Vec<u16>,
}

/// Counts and bytes of publishes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub operations: usize,
    pub bytes: usize,
}

#[derive(Debug, Default)]
pub struct Outbox {
    backlog: VecDeque<Request>,
    /// Publishes in `backlog`, and their bytes.
    queued: Load,
    in_channel: VecDeque<Sent>,
    /// QoS 1/2 publishes written and not yet acknowledged: packet id → (op, bytes).
    awaiting_puback: HashMap<u16, (u32, usize)>,
    awaiting_suback: HashMap<u16, Vec<String>>,
    awaiting_unsuback: usize,
    /// A publish rumqttc parked because its packet id was still in use (Outgoing::AwaitAck).
    collided: Option<(u32, usize)>,
    /// The connection is down after a loss: requests wait in the backlog.
    held: bool,
}

fn try_send(client: &AsyncClient, request: Request) -> Result<Sent, Request> {
    match request {
        Request::Publish { op, topic, qos, retain, payload } => {
            let bytes = publish_bytes(&topic, &payload);
            match client.try_publish(topic, qos, retain, payload) {
                Ok(()) => Ok(Sent::Publish { op, qos, bytes }),
                // rumqttc hands back the request it could not queue (its channel is full).
                Err(ClientError::TryRequest(returned) | ClientError::Request(returned)) => match returned {
                    MqttRequest::Publish(p) => Err(Request::Publish { op, topic: p.topic, qos, retain, payload: Vec::from(p.payload) }),
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
            Ok(()) => Ok(Sent::Unsubscribe),
            Err(_) => Err(Request::Unsubscribe { filter }),
        },
    }
}

impl Outbox {
    /// Queues a request and moves what fits into rumqttc's channel.
    pub fn submit(&mut self, client: &AsyncClient, request: Request) {
        self.push_back(request);
        self.pump(client);
    }

    fn push_back(&mut self, request: Request) {
        if let Request::Publish { topic, payload, .. } = &request {
            self.queued.operations += 1;
            self.queued.bytes += publish_bytes(topic, payload);
        }
        self.backlog.push_back(request);
    }

    /// Moves backlog into rumqttc's channel while it has room, keeping order; nothing moves
    /// while the outbox is held.
    pub fn pump(&mut self, client: &AsyncClient) {
        while !self.held {
            let Some(request) = self.backlog.pop_front() else { break };
            let bytes = match &request {
                Request::Publish { topic, payload, .. } => Some(publish_bytes(topic, payload)),
                _ => None,
            };
            match try_send(client, request) {
                Ok(sent) => {
                    if let Some(bytes) = bytes {
                        self.queued.operations -= 1;
                        self.queued.bytes -= bytes;
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

    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Publishes waiting to be handed to rumqttc.
    pub fn queued(&self) -> Load {
        self.queued
    }

    /// Publishes handed to rumqttc and not yet done (written for QoS 0, acknowledged otherwise).
    pub fn in_flight(&self) -> Load {
        let mut load = Load::default();
        let sent = self.in_channel.iter().filter_map(|s| match s {
            Sent::Publish { bytes, .. } => Some(*bytes),
            _ => None,
        });
        for bytes in sent.chain(self.awaiting_puback.values().map(|(_, b)| *b)).chain(self.collided.map(|(_, b)| b)) {
            load.operations += 1;
            load.bytes += bytes;
        }
        load
    }

    /// Whether requests wait for the connection to come back.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// After a lost connection: takes back what rumqttc held (`pending`: its unacknowledged
    /// publishes, then its channel, as `EventLoop::clean` leaves them), keeps what `keeps`
    /// allows at the front of the backlog in the order first sent, and holds everything until
    /// `release`. Subscribe requests are dropped: `release` renews every live filter.
    pub fn requeue(&mut self, pending: impl IntoIterator<Item = MqttRequest>, keeps: impl Fn(QoS) -> bool) -> Requeued {
        self.held = true;
        let mut pubrels = Vec::new();
        let mut front = VecDeque::new();
        let mut in_channel = std::mem::take(&mut self.in_channel);
        // Rejections are decided when the backlog is rebuilt below, by the same `keeps`.
        let keep = |op: u32, publish: rumqttc::Publish, front: &mut VecDeque<Request>| {
            let rumqttc::Publish { topic, qos, retain, payload, .. } = publish;
            front.push_back(Request::Publish { op, topic, qos, retain, payload: Vec::from(payload) });
        };
        for request in pending {
            match request {
                // Written, unacknowledged: it had a packet id.
                MqttRequest::Publish(publish) if publish.pkid != 0 => {
                    let owner = self.awaiting_puback.remove(&publish.pkid).or_else(|| self.collided.take());
                    if let Some((op, _)) = owner {
                        keep(op, publish, &mut front);
                    }
                }
                MqttRequest::Publish(publish) => match in_channel.pop_front() {
                    Some(Sent::Publish { op, .. }) => keep(op, publish, &mut front),
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
        let mut requeued = Requeued::default();
        // Never expected: records rumqttc did not give back cannot be sent again.
        for sent in in_channel {
            if let Sent::Publish { op, .. } = sent {
                requeued.rejected.push(op);
            }
        }
        requeued.rejected.extend(self.awaiting_puback.iter().filter(|(pkid, _)| !pubrels.contains(pkid)).map(|(_, (op, _))| *op));
        self.awaiting_puback.retain(|pkid, _| pubrels.contains(pkid));
        requeued.pubrels = pubrels;
        requeued.rejected.extend(self.collided.take().map(|(op, _)| op));
        self.awaiting_suback.clear();
        self.awaiting_unsuback = 0;

        let earlier = std::mem::take(&mut self.backlog);
        self.queued = Load::default();
        for request in front.into_iter().chain(earlier) {
            match request {
                Request::Publish { op, qos, .. } if !keeps(qos) => requeued.rejected.push(op),
                Request::Subscribe { .. } => {}
                request => self.push_back(request),
            }
        }
        requeued.rejected.sort_unstable();
        requeued.rejected.dedup();
        requeued
    }

    /// The connection is back: renews `subscriptions` first, then sends what waited.
    pub fn release(&mut self, client: &AsyncClient, subscriptions: Vec<(String, QoS)>) {
        if !subscriptions.is_empty() {
            self.backlog.push_front(Request::Subscribe { filters: subscriptions });
        }
        self.held = false;
        self.pump(client);
    }

    /// The new session does not know the QoS 2 publishes awaiting PUBCOMP: the broker had
    /// received them (PUBREC), so they count as published.
    pub fn forget_pubrels(&mut self, pubrels: &[u16]) -> Vec<Completion> {
        pubrels.iter().flat_map(|pkid| self.settle_publish(*pkid)).collect()
    }

    /// Nothing queued, nothing unacknowledged.
    pub fn is_idle(&self) -> bool {
        self.backlog.is_empty()
            && self.in_channel.is_empty()
            && self.awaiting_puback.is_empty()
            && self.awaiting_suback.is_empty()
            && self.awaiting_unsuback == 0
            && self.collided.is_none()
    }

    pub fn on_outgoing(&mut self, outgoing: &Outgoing) -> Option<Completion> {
        match outgoing {
            Outgoing::Publish(pkid) => {
                if let Some(parked) = self.collided.take() {
                    // rumqttc sends the parked publish once its packet id is free again.
                    return self.await_ack(*pkid, parked);
                }
                match self.in_channel.pop_front() {
                    Some(Sent::Publish { op, qos: QoS::AtMostOnce, .. }) => Some(Completion::Published(op)),
                    Some(Sent::Publish { op, bytes, .. }) => self.await_ack(*pkid, (op, bytes)),
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
                    self.awaiting_suback.insert(*pkid, filters);
                    None
                }
                other => self.out_of_step(other),
            },
            Outgoing::Unsubscribe(_) => match self.in_channel.pop_front() {
                Some(Sent::Unsubscribe) => {
                    self.awaiting_unsuback += 1;
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

    /// Acks that settle requests. SUBACK can settle several filters at once.
    pub fn on_incoming(&mut self, packet: &Packet) -> Vec<Completion> {
        match packet {
            Packet::PubAck(ack) => self.settle_publish(ack.pkid),
            Packet::PubComp(comp) => self.settle_publish(comp.pkid),
            Packet::SubAck(ack) => match self.awaiting_suback.remove(&ack.pkid) {
                Some(filters) => filters
                    .into_iter()
                    .zip(ack.return_codes.iter().map(|code| match code {
                        SubscribeReasonCode::Success(qos) => Some(*qos),
                        SubscribeReasonCode::Failure => None,
                    }))
                    .map(|(filter, granted)| Completion::Subscribed(filter, granted))
                    .collect(),
                None => Vec::new(),
            },
            Packet::UnsubAck(_) => {
                self.awaiting_unsuback = self.awaiting_unsuback.saturating_sub(1);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn settle_publish(&mut self, pkid: u16) -> Vec<Completion> {
        self.awaiting_puback.remove(&pkid).map(|(op, _)| Completion::Published(op)).into_iter().collect()
    }

    /// Forgets everything outstanding; returns the publish ops that will never complete.
    pub fn abandon(&mut self) -> Vec<u32> {
        let mut ops: Vec<u32> = self.awaiting_puback.drain().map(|(_, (op, _))| op).collect();
        ops.extend(self.collided.take().map(|(op, _)| op));
        for sent in self.in_channel.drain(..) {
            if let Sent::Publish { op, .. } = sent {
                ops.push(op);
            }
        }
        for request in self.backlog.drain(..) {
            if let Request::Publish { op, .. } = request {
                ops.push(op);
            }
        }
        self.queued = Load::default();
        self.awaiting_suback.clear();
        self.awaiting_unsuback = 0;
        self.held = false;
        ops.sort_unstable();
        ops.dedup();
        ops
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{MqttOptions, PubComp};

    fn publish(op: u32, qos: QoS) -> Request {
        Request::Publish { op, topic: "t".into(), qos, retain: false, payload: vec![1] }
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
}
