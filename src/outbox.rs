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
}

/// One QoS 1/2 publish packet that was written: its op and topic (an op publishing to several
/// topics has one packet each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub op: u32,
    pub topic: String,
}

/// What `requeue` could not keep, and what it left to the next session.
#[derive(Debug, Default, PartialEq)]
pub struct Requeued {
    /// Publish ops that will not be sent again (the offline queue policy turned them away).
    pub rejected: Vec<u32>,
    /// The op of the publish that the broker refused by dropping the connection: not sent again.
    pub refused: Option<u32>,
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

    /// The first publish in rumqttc's `pending` (after `EventLoop::clean`: its unacknowledged
    /// publishes from the oldest packet id on) that was written and is still unacknowledged.
    pub fn oldest_unacknowledged<'a>(&self, pending: impl IntoIterator<Item = &'a MqttRequest>) -> Option<Written> {
        pending.into_iter().find_map(|request| match request {
            // Only written publishes have a packet id; a PUBREC'd QoS 2 one is a PubRel here.
            MqttRequest::Publish(publish) if publish.pkid != 0 => {
                let (op, _) = self.awaiting_puback.get(&publish.pkid)?;
                Some(Written { op: *op, topic: publish.topic.clone() })
            }
            _ => None,
        })
    }

    /// After a lost connection: takes back what rumqttc held (`pending`: its unacknowledged
    /// publishes, then its channel, as `EventLoop::clean` leaves them), keeps what `keeps`
    /// allows at the front of the backlog in the order first sent, and holds everything until
    /// `release`. Subscribe requests are dropped: `release` renews every live filter. The
    /// `refused` publish, if written and unacknowledged, is not kept but reported.
    pub fn requeue(
        &mut self,
        pending: impl IntoIterator<Item = MqttRequest>,
        keeps: impl Fn(QoS) -> bool,
        refused: Option<&Written>,
    ) -> Requeued {
        let mut refused_op = None;
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
                    match owner {
                        Some((op, _)) if refused_op.is_none() && refused.is_some_and(|r| r.op == op && r.topic == publish.topic) => {
                            refused_op = Some(op);
                        }
                        Some((op, _)) => keep(op, publish, &mut front),
                        None => {}
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
        let mut requeued = Requeued { refused: refused_op, ..Requeued::default() };
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
                    self.awaiting_puback.insert(*pkid, parked);
                    return None;
                }
                match self.in_channel.pop_front() {
                    Some(Sent::Publish { op, qos: QoS::AtMostOnce, .. }) => Some(Completion::Published(op)),
                    Some(Sent::Publish { op, bytes, .. }) => {
                        self.awaiting_puback.insert(*pkid, (op, bytes));
                        None
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

    fn written_publish(pkid: u16, topic: &str) -> MqttRequest {
        let mut publish = rumqttc::Publish::new(topic, QoS::AtLeastOnce, vec![0u8; 4]);
        publish.pkid = pkid;
        MqttRequest::Publish(publish)
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

    fn backlog_ops(outbox: &Outbox) -> Vec<(u32, String)> {
        outbox
            .backlog
            .iter()
            .filter_map(|r| match r {
                Request::Publish { op, topic, .. } => Some((*op, topic.clone())),
                _ => None,
            })
            .collect()
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
}
