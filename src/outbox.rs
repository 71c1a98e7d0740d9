//! Requests on their way to the broker and the acknowledgements that settle them.
//!
//! rumqttc reports `Outgoing::Publish(pkid)` (and Subscribe/Unsubscribe) in the order requests
//! entered its channel, but does not say which request got which packet id. So every request
//! we put in the channel is recorded in `in_channel`, in the same order, under the same lock;
//! each Outgoing event pops the front and, for QoS > 0, files it by packet id until the ack.

use std::collections::{HashMap, VecDeque};

use rumqttc::{AsyncClient, ClientError, Outgoing, Packet, QoS, Request as MqttRequest, SubscribeFilter, SubscribeReasonCode};

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
    Publish { op: u32, qos: QoS },
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

#[derive(Debug, Default)]
pub struct Outbox {
    backlog: VecDeque<Request>,
    in_channel: VecDeque<Sent>,
    awaiting_puback: HashMap<u16, u32>,
    awaiting_suback: HashMap<u16, Vec<String>>,
    awaiting_unsuback: usize,
    /// A publish rumqttc parked because its packet id was still in use (Outgoing::AwaitAck).
    collided: Option<u32>,
}

fn try_send(client: &AsyncClient, request: Request) -> Result<Sent, Request> {
    match request {
        Request::Publish { op, topic, qos, retain, payload } => {
            match client.try_publish(topic.clone(), qos, retain, payload) {
                Ok(()) => Ok(Sent::Publish { op, qos }),
                // rumqttc hands back the request it could not queue (its channel is full).
                Err(ClientError::TryRequest(returned) | ClientError::Request(returned)) => match returned {
                    MqttRequest::Publish(p) => Err(Request::Publish { op, topic, qos, retain, payload: Vec::from(p.payload) }),
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
        self.backlog.push_back(request);
        self.pump(client);
    }

    /// Moves backlog into rumqttc's channel while it has room, keeping order.
    pub fn pump(&mut self, client: &AsyncClient) {
        while let Some(request) = self.backlog.pop_front() {
            match try_send(client, request) {
                Ok(sent) => self.in_channel.push_back(sent),
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
                if let Some(op) = self.collided.take() {
                    // rumqttc sends the parked publish once its packet id is free again.
                    self.awaiting_puback.insert(*pkid, op);
                    return None;
                }
                match self.in_channel.pop_front() {
                    Some(Sent::Publish { op, qos: QoS::AtMostOnce }) => Some(Completion::Published(op)),
                    Some(Sent::Publish { op, .. }) => {
                        self.awaiting_puback.insert(*pkid, op);
                        None
                    }
                    other => self.out_of_step(other),
                }
            }
            Outgoing::AwaitAck(_) => match self.in_channel.pop_front() {
                Some(Sent::Publish { op, .. }) => {
                    self.collided = Some(op);
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
        self.awaiting_puback.remove(&pkid).map(Completion::Published).into_iter().collect()
    }

    /// Forgets everything outstanding; returns the publish ops that will never complete.
    pub fn abandon(&mut self) -> Vec<u32> {
        let mut ops: Vec<u32> = self.awaiting_puback.drain().map(|(_, op)| op).collect();
        ops.extend(self.collided.take());
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
        self.awaiting_suback.clear();
        self.awaiting_unsuback = 0;
        ops.sort_unstable();
        ops.dedup();
        ops
    }
}

