//! Tests of the changes made to the vendored rumqttc's `MqttState` (vendor/rumqttc/PATCHED.md),
//! through its public API: the vendored crate's own tests need dev-dependencies it was copied
//! without.

use rumqttc::{Incoming, MqttState, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Request};

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
