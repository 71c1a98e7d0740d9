//! Tests of the changes made to the vendored rumqttc's `MqttState` (vendor/rumqttc/PATCHED.md),
//! through its public API: the vendored crate's own tests need dev-dependencies it was copied
//! without.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use rumqttc::{
    ConnAck, Event, EventLoop, Incoming, MqttOptions, MqttState, Outgoing, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Request, SubAck,
    Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};

fn publish(qos: QoS) -> Request {
    Request::Publish(Publish::new("t", qos, vec![1, 2, 3]))
}

fn sent_pkid(packet: Option<Packet>) -> u16 {
    match packet {
        Some(Packet::Publish(publish)) => publish.pkid,
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

#[test]
fn a_collided_publish_sent_on_pubcomp_is_in_flight_and_its_puback_accepted() {
    // Two packet ids: 1 (QoS 2) and 2 (QoS 1); 2 is acked, the next publish wraps to 1 and
    // waits for it.
    let mut state = MqttState::new(2, false);
    assert_eq!(sent_pkid(state.handle_outgoing_packet(publish(QoS::ExactlyOnce)).unwrap()), 1);
    assert_eq!(sent_pkid(state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap()), 2);
    state.handle_incoming_packet(Incoming::PubAck(PubAck::new(2))).unwrap();
    assert!(state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap().is_none());
    assert_eq!(state.collision.as_ref().map(|publish| publish.pkid), Some(1));
    state.handle_incoming_packet(Incoming::PubRec(PubRec::new(1))).unwrap();

    let resent = state.handle_incoming_packet(Incoming::PubComp(PubComp::new(1))).unwrap();
    assert_eq!(sent_pkid(resent), 1);
    assert_eq!(state.inflight(), 1);

    // Its PUBACK is expected (upstream refused it as unsolicited, dropping the connection).
    state.handle_incoming_packet(Incoming::PubAck(PubAck::new(1))).unwrap();
    assert_eq!(state.inflight(), 0);
}

#[test]
fn a_collided_publish_sent_on_pubcomp_is_resent_after_a_reconnect() {
    let mut state = MqttState::new(2, false);
    state.handle_outgoing_packet(publish(QoS::ExactlyOnce)).unwrap();
    state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap();
    state.handle_incoming_packet(Incoming::PubAck(PubAck::new(2))).unwrap();
    state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap();
    state.handle_incoming_packet(Incoming::PubRec(PubRec::new(1))).unwrap();
    state.handle_incoming_packet(Incoming::PubComp(PubComp::new(1))).unwrap();

    let pending = state.clean();
    assert!(matches!(pending.as_slice(), [Request::Publish(publish)] if publish.pkid == 1), "{pending:?}");
}

#[test]
fn a_pubrel_for_an_unknown_packet_id_is_answered_with_pubcomp() {
    // The QoS 2 message was received and PUBREC sent before a reconnect; clean() forgot its id,
    // and the broker re-sends PUBREL on the resumed session (MQTT 3.1.1 4.3.3: answer with
    // PUBCOMP). Upstream failed with Unsolicited, dropping every reconnect of that session.
    let mut state = MqttState::new(10, false);
    let mut incoming = Publish::new("t", QoS::ExactlyOnce, vec![1]);
    incoming.pkid = 5;
    state.handle_incoming_packet(Incoming::Publish(incoming)).unwrap();
    state.clean();

    for pkid in [5, u16::MAX] {
        match state.handle_incoming_packet(Incoming::PubRel(PubRel::new(pkid))) {
            Ok(Some(Packet::PubComp(pubcomp))) => assert_eq!(pubcomp.pkid, pkid),
            other => panic!("expected PUBCOMP {pkid}, got {other:?}"),
        }
    }
}

#[test]
fn a_qos2_packet_id_is_not_given_to_another_publish_while_its_pubcomp_is_due() {
    // Two packet ids: 1 (QoS 2, PUBREC came, PUBCOMP due) and 2 (QoS 1, acked); the counter
    // wraps to 1. Upstream freed the id at PUBREC and sent the next publish with it, so the late
    // PUBCOMP completed that publish instead of the QoS 2 one.
    let mut state = MqttState::new(2, false);
    assert_eq!(sent_pkid(state.handle_outgoing_packet(publish(QoS::ExactlyOnce)).unwrap()), 1);
    match state.handle_incoming_packet(Incoming::PubRec(PubRec::new(1))).unwrap() {
        Some(Packet::PubRel(pubrel)) => assert_eq!(pubrel.pkid, 1),
        other => panic!("expected PUBREL 1, got {other:?}"),
    }
    assert_eq!(sent_pkid(state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap()), 2);
    state.handle_incoming_packet(Incoming::PubAck(PubAck::new(2))).unwrap();

    // Parked until the PUBCOMP, as for an id awaiting its PUBACK.
    assert!(state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap().is_none());
    assert_eq!(state.collision.as_ref().map(|publish| publish.pkid), Some(1));

    let resent = state.handle_incoming_packet(Incoming::PubComp(PubComp::new(1))).unwrap();
    assert_eq!(sent_pkid(resent), 1);
    assert!(state.collision.is_none());
    state.handle_incoming_packet(Incoming::PubAck(PubAck::new(1))).unwrap();
    assert_eq!(state.inflight(), 0);
}

#[test]
fn a_qos2_packet_id_whose_pubrel_is_resent_on_a_resumed_session_is_not_reused() {
    // After a reconnect the PUBREL is sent again (save_pubrel); the id stays taken until PUBCOMP.
    let mut state = MqttState::new(2, false);
    state.handle_outgoing_packet(publish(QoS::ExactlyOnce)).unwrap();
    state.handle_incoming_packet(Incoming::PubRec(PubRec::new(1))).unwrap();
    let pending = state.clean();
    assert!(matches!(pending.as_slice(), [Request::PubRel(pubrel)] if pubrel.pkid == 1), "{pending:?}");
    for request in pending {
        state.handle_outgoing_packet(request).unwrap();
    }
    assert_eq!(sent_pkid(state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap()), 2);
    state.handle_incoming_packet(Incoming::PubAck(PubAck::new(2))).unwrap();
    assert!(state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap().is_none());
    assert_eq!(sent_pkid(state.handle_incoming_packet(Incoming::PubComp(PubComp::new(1))).unwrap()), 1);
}

fn incoming_qos2(pkid: u16, dup: bool) -> Incoming {
    let mut publish = Publish::new("t", QoS::ExactlyOnce, vec![1]);
    publish.pkid = pkid;
    publish.dup = dup;
    Incoming::Publish(publish)
}

#[test]
fn a_qos2_publish_sent_again_before_its_pubrel_is_answered_with_pubrec_and_not_delivered_again() {
    // Received and delivered, then the connection dropped before the broker had our PUBREC: the
    // resumed session sends the PUBLISH again (DUP). Upstream forgot the id in clean() and
    // delivered it a second time.
    let mut state = MqttState::new(10, false);
    state.handle_incoming_packet(incoming_qos2(5, false)).unwrap();
    assert!(matches!(state.events.pop_front(), Some(Event::Incoming(Packet::Publish(_)))));
    state.events.clear();
    state.clean();

    match state.handle_incoming_packet(incoming_qos2(5, true)).unwrap() {
        Some(Packet::PubRec(pubrec)) => assert_eq!(pubrec.pkid, 5),
        other => panic!("expected PUBREC 5, got {other:?}"),
    }
    assert_eq!(Vec::from(std::mem::take(&mut state.events)), [Event::Outgoing(Outgoing::PubRec(5))]);

    // Released: the id is free, and a new message with it is delivered.
    state.handle_incoming_packet(Incoming::PubRel(PubRel::new(5))).unwrap();
    state.events.clear();
    state.handle_incoming_packet(incoming_qos2(5, false)).unwrap();
    assert!(matches!(state.events.front(), Some(Event::Incoming(Packet::Publish(publish))) if publish.pkid == 5));
}

#[test]
fn a_qos2_publish_sent_again_is_answered_with_pubrec_even_with_manual_acks() {
    // The user never sees it, so cannot ack it.
    let mut state = MqttState::new(10, true);
    assert!(state.handle_incoming_packet(incoming_qos2(5, false)).unwrap().is_none());
    state.events.clear();
    assert!(matches!(state.handle_incoming_packet(incoming_qos2(5, true)).unwrap(), Some(Packet::PubRec(pubrec)) if pubrec.pkid == 5));
    assert_eq!(Vec::from(std::mem::take(&mut state.events)), [Event::Outgoing(Outgoing::PubRec(5))]);
}

/// One MQTT packet from a blocking socket: (first byte, body).
/// The ack a packet sent with an id awaits, and which one frees that id.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Awaits {
    PubAck,
    PubRec,
    PubComp,
    SubAck,
    UnsubAck,
}

/// Packet ids of the packets sent and not yet acknowledged, as the broker sees them.
#[derive(Default)]
struct Wire {
    awaiting: HashMap<u16, Awaits>,
}

impl Wire {
    /// Records a packet the client wrote; fails if it takes an id still awaiting an ack.
    fn sent(&mut self, packet: Option<Packet>) {
        let (pkid, awaits) = match packet {
            Some(Packet::Publish(p)) if p.qos == QoS::AtLeastOnce => (p.pkid, Awaits::PubAck),
            Some(Packet::Publish(p)) if p.qos == QoS::ExactlyOnce => (p.pkid, Awaits::PubRec),
            Some(Packet::Subscribe(s)) => (s.pkid, Awaits::SubAck),
            Some(Packet::Unsubscribe(u)) => (u.pkid, Awaits::UnsubAck),
            // PUBREL keeps the id its PUBLISH had; a parked publish (None) has none yet.
            _ => return,
        };
        if let Some(holder) = self.awaiting.insert(pkid, awaits) {
            panic!("packet id {pkid} sent again for a new {awaits:?} while it still awaits {holder:?}");
        }
    }
}

/// Drives the state as the event loop does: a request is taken only while `inflight` is under
/// the window and no publish is parked on a collision; the broker acks in any order.
fn packet_ids_stay_unique(seed: u64, window: u16, steps: usize) {
    let mut state = MqttState::new(window, false);
    let mut wire = Wire::default();
    let mut random = seed;
    let mut next = |bound: usize| {
        random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (random >> 33) as usize % bound
    };
    for step in 0..steps {
        let may_take = state.inflight() < window && state.collision.is_none();
        if may_take && (wire.awaiting.is_empty() || next(2) == 0) {
            let request = match next(4) {
                0 => publish(QoS::AtLeastOnce),
                1 => publish(QoS::ExactlyOnce),
                2 => Request::Subscribe(Subscribe::new(format!("f/{step}"), QoS::AtLeastOnce)),
                _ => Request::Unsubscribe(Unsubscribe::new(format!("f/{step}"))),
            };
            wire.sent(state.handle_outgoing_packet(request).unwrap());
            continue;
        }
        let mut ids: Vec<u16> = wire.awaiting.keys().copied().collect();
        ids.sort_unstable();
        let pkid = ids[next(ids.len())];
        let awaits = wire.awaiting.remove(&pkid).unwrap();
        let ack = match awaits {
            Awaits::PubAck => Incoming::PubAck(PubAck::new(pkid)),
            Awaits::PubRec => {
                wire.awaiting.insert(pkid, Awaits::PubComp);
                Incoming::PubRec(PubRec::new(pkid))
            }
            Awaits::PubComp => Incoming::PubComp(PubComp::new(pkid)),
            Awaits::SubAck => Incoming::SubAck(SubAck::new(pkid, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)])),
            Awaits::UnsubAck => Incoming::UnsubAck(UnsubAck::new(pkid)),
        };
        wire.sent(state.handle_incoming_packet(ack).unwrap());
    }
}

#[test]
fn a_packet_id_is_never_given_to_a_new_packet_while_another_awaits_its_ack() {
    // MQTT-2.3.1-2. Upstream numbered SUBSCRIBEs and UNSUBSCRIBEs from the publish counter
    // without looking at the ids in use: once publishes filled the window, or more SUBSCRIBEs
    // than the window were outstanding, the next one took an id still in flight.
    for seed in 0..20 {
        packet_ids_stay_unique(seed, 8, 5_000);
    }
    packet_ids_stay_unique(7, 1_024, 50_000);
}

#[test]
fn subscribes_awaiting_their_suback_fill_the_window_as_publishes_do() {
    // The event loop takes no request while `inflight` is at the window, so every SUBSCRIBE it
    // takes finds a free id.
    let mut state = MqttState::new(3, false);
    for filter in ["a", "b", "c"] {
        state.handle_outgoing_packet(Request::Subscribe(Subscribe::new(filter, QoS::AtMostOnce))).unwrap();
    }
    assert_eq!(state.inflight(), 3);
    state.handle_incoming_packet(Incoming::SubAck(SubAck::new(2, vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]))).unwrap();
    assert_eq!(state.inflight(), 2);
    // An ack for an id that awaits none changes nothing.
    state.handle_incoming_packet(Incoming::UnsubAck(UnsubAck::new(2))).unwrap();
    assert_eq!(state.inflight(), 2);
    match state.handle_outgoing_packet(publish(QoS::AtLeastOnce)).unwrap() {
        Some(Packet::Publish(p)) => assert_eq!(p.pkid, 2),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
    // A reconnect forgets them: the addon renews subscriptions itself.
    state.clean();
    assert_eq!(state.inflight(), 0);
}

fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut byte = [0u8];
    stream.read_exact(&mut byte).unwrap();
    let kind = byte[0];
    let (mut length, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte).unwrap();
        length |= usize::from(byte[0] & 127) << shift;
        shift += 7;
        if byte[0] & 128 == 0 {
            break;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (kind, body)
}

async fn next_event(eventloop: &mut EventLoop) -> Result<Event, rumqttc::ConnectionError> {
    tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await.expect("an event within 5 s")
}

#[tokio::test]
async fn qos2_ids_awaiting_pubrel_survive_a_resumed_session_and_are_forgotten_by_a_new_one() {
    // A broker on loopback: each connection gets CONNACK (session present or not) and the QoS 2
    // PUBLISH id 1 (DUP on the resumed session), then closes once it has our PUBREC.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = std::thread::spawn(move || {
        for (session_present, dup) in [(false, false), (true, true), (false, false)] {
            let (mut stream, _) = listener.accept().unwrap();
            assert_eq!(read_packet(&mut stream).0 >> 4, 1, "CONNECT");
            let first = 0x34 | if dup { 0x08 } else { 0 };
            stream.write_all(&[0x20, 0x02, u8::from(session_present), 0x00]).unwrap();
            stream.write_all(&[first, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'a']).unwrap();
            assert_eq!(read_packet(&mut stream), (0x50, vec![0x00, 0x01]), "PUBREC 1");
        }
    });
    let mut options = MqttOptions::new("qos2-ids", "127.0.0.1", port);
    options.set_clean_session(false);
    let mut eventloop = EventLoop::new(options, 10);

    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut events = Vec::new();
        while let Ok(event) = next_event(&mut eventloop).await {
            events.push(event);
        }
        connections.push(events);
    }
    broker.join().unwrap();

    let connack = |session_present| Event::Incoming(Packet::ConnAck(ConnAck { session_present, code: rumqttc::ConnectReturnCode::Success }));
    let delivered = |events: &[Event]| events.iter().filter(|e| matches!(e, Event::Incoming(Packet::Publish(_)))).count();
    let pubrec = Event::Outgoing(Outgoing::PubRec(1));
    assert_eq!(connections[0][0], connack(false));
    assert_eq!(delivered(&connections[0]), 1);
    // Resumed session: the DUP is answered, not delivered again.
    assert_eq!(connections[1], [connack(true), pubrec.clone()]);
    // New session: id 1 is a new message.
    assert_eq!(connections[2][0], connack(false));
    assert_eq!(delivered(&connections[2]), 1);
    assert!(connections[2].contains(&pubrec));
}
