//! The connection task: one per instance, on the shared tokio runtime. It owns rumqttc's
//! EventLoop, connects when there is work, feeds acks to the outbox and messages to delivery,
//! and disconnects when the last observer has left and nothing is pending.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, PubRel, Publish, Request as MqttRequest, StateError};
use tokio::time::Instant;

use crate::client::{Core, Shared, MAX_BACKLOG};
use crate::delivery::Event as JsEvent;
use crate::errors::PubSubError;
use crate::options::ClientOptions;
use crate::reconnect::{
    Backoff, Unacknowledged, Verdict, CLOSED_BEFORE_CONNACK_STREAK, REFUSED_PUBLISH_STREAK, REFUSED_SUBSCRIBE_STREAK, TAKEOVER_STREAK,
};
use crate::outbox::{Completion, Written};
use crate::signing::redact;

/// Amplify's connection states that a Node process can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Disconnected,
    Connecting,
    Connected,
    ConnectionDisrupted,
    ConnectedPendingDisconnect,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "Disconnected",
            Self::Connecting => "Connecting",
            Self::Connected => "Connected",
            Self::ConnectionDisrupted => "ConnectionDisrupted",
            Self::ConnectedPendingDisconnect => "ConnectedPendingDisconnect",
        }
    }
}

/// How long a goodbye (DISCONNECT, then the broker closing) may take before the socket is simply
/// dropped.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
/// Backlog size below which JS may publish again after being told to wait.
const WRITABLE_BELOW: usize = MAX_BACKLOG / 2;

enum End {
    Closed,
    Idle,
    /// `by_broker`: the broker closed the socket (EOF), rather than an error or our timeout.
    /// `not_a_refusal`: we gave up waiting (PINGRESP, flush), or the transport refused what the
    /// server sent (a text frame, a WebSocket message over the limit): not the broker dropping
    /// the connection for what we sent.
    Lost { error: PubSubError, by_broker: bool, not_a_refusal: bool },
}

pub async fn run(shared: Arc<Shared>, mut eventloop: EventLoop) {
    let mut backoff = shared.options.reconnect.clone().map(Backoff::new);
    // Connection attempts that failed since the last connection ended.
    let mut failed_attempts = 0u32;
    // QoS 2 publishes awaiting PUBCOMP from the previous connection (their PUBREL is due).
    let mut pubrels: Vec<u16> = Vec::new();
    while wait_for_work(&shared).await {
        let session_present = match connect(&shared, &mut eventloop, backoff.as_mut()).await {
            Ok(session_present) => {
                if let Some(backoff) = backoff.as_mut() {
                    backoff.connected();
                }
                session_present
            }
            Err(error) => {
                failed_attempts += 1;
                after_failure(&shared, &mut eventloop, error, backoff.as_mut(), &mut pubrels, None).await;
                continue;
            }
        };
        resume(&shared, &mut eventloop, session_present, &mut pubrels);
        let first_try = std::mem::take(&mut failed_attempts) == 0;
        let connected_at = Instant::now();
        match serve(&shared, &mut eventloop).await {
            End::Closed => break,
            End::Idle => {
                if let Some(backoff) = backoff.as_mut() {
                    backoff.ended_by_us();
                }
                discard_buffered_events(&shared, &mut shared.core.lock(), &mut eventloop);
                say_goodbye(&shared, &mut eventloop).await;
                let mut core = shared.core.lock();
                shared.set_state(&mut core, ConnectionState::Disconnected);
            }
            End::Lost { error, by_broker, not_a_refusal } => {
                // A broker that refuses a publish or a subscription drops the connection when it
                // arrives; a timeout of ours, or what we refused to read, says nothing about them.
                let mut unacknowledged = if not_a_refusal { Unacknowledged::default() } else { oldest_unacknowledged(&shared, &mut eventloop) };
                unacknowledged.new_suspects = shared.core.lock().outbox.suspect_subscribes(unacknowledged.subscribe.clone());
                let lasted = connected_at.elapsed();
                let verdict = match backoff.as_mut() {
                    Some(backoff) => backoff.connection_ended(lasted, by_broker, first_try, unacknowledged),
                    None => Verdict::Transient,
                };
                let (error, refused) = match verdict {
                    Verdict::Transient => (error, None),
                    Verdict::Takeover => (takeover(&shared.options), None),
                    Verdict::RefusedPublish(publish) => (error, Some(publish)),
                    Verdict::RefusedSubscribe(filters) => {
                        refuse_subscribe(&shared, &filters);
                        (error, None)
                    }
                };
                after_failure(&shared, &mut eventloop, error, backoff.as_mut(), &mut pubrels, refused.as_ref()).await;
            }
        }
    }
    // Closed: everything pending was settled by `close()`; leave politely and say so.
    say_goodbye(&shared, &mut eventloop).await;
    let mut core = shared.core.lock();
    forget_queued_requests(&mut eventloop);
    shared.set_state(&mut core, ConnectionState::Disconnected);
    shared.delivery.push(JsEvent::Closed);
}

/// ERR_PAYLOAD rather than ERR_CONNECTION: the fault is this one message (its size, or its
/// topic under the broker's policy), and sending it again fails the same way, while
/// ERR_CONNECTION means a loss that a retry later may heal.
fn refused_publish(publish: &Written, options: &ClientOptions) -> PubSubError {
    let dropped = dropped_each_time(
        options,
        &format!("this publish to '{}'", publish.topic),
        REFUSED_PUBLISH_STREAK,
        "AWS IoT does this for a message over its 128 KB limit, or one its IoT policy does not allow (iot:Publish on the topic)",
        "brokers do this for a packet over their maximum packet size (mosquitto's max_packet_size, for one), or one \
         their access rules refuse",
    );
    PubSubError::Payload(format!("Not published: the broker {dropped}"))
}

/// Why `what` is not sent again: `on_aws` or `on_brokers` says what makes a broker do that.
fn dropped_each_time(options: &ClientOptions, what: &str, streak: u32, on_aws: &str, on_brokers: &str) -> String {
    let why = if options.aws.is_some() { on_aws } else { on_brokers };
    format!("dropped the connection each time {what} arrived ({streak} times in a row), so it is not sent again; {why}")
}

fn takeover(options: &ClientOptions) -> PubSubError {
    let iot_also = if options.aws.is_some() {
        " On AWS IoT this also happens when a subscription or publish is outside the IoT policy."
    } else {
        ""
    };
    PubSubError::ClientIdTakeover(format!(
        "The broker closed the connection {TAKEOVER_STREAK} times in a row soon after accepting it: another client is \
         probably connecting with the same client id '{}', each taking the connection from the other. Give every \
         client its own clientId.{iot_also}",
        options.client_id
    ))
}

/// A connection attempt failed or a connection was lost. A transient failure with reconnect on:
/// take back what was pending (the offline queue policy decides what waits, and a `refused`
/// publish fails alone), announce ConnectionDisrupted and wait out the backoff. Otherwise fail
/// everything pending.
async fn after_failure(
    shared: &Shared,
    eventloop: &mut EventLoop,
    error: PubSubError,
    backoff: Option<&mut Backoff>,
    pubrels: &mut Vec<u16>,
    refused: Option<&Written>,
) {
    let backoff = match backoff {
        Some(backoff) if !error.is_permanent(backoff.has_connected()) => backoff,
        _ => {
            let mut core = shared.core.lock();
            forget_queued_requests(eventloop);
            pubrels.clear();
            if !core.closed {
                shared.fail_everything(&mut core, error);
            }
            shared.set_state(&mut core, ConnectionState::Disconnected);
            return;
        }
    };
    let delay = backoff.next_delay();
    {
        let mut core = shared.core.lock();
        if core.closed {
            return;
        }
        requeue(shared, &mut core, eventloop, pubrels, &error, refused);
        if core.state == ConnectionState::ConnectedPendingDisconnect {
            // The last observer had left: a connection made again for what is still pending (an
            // UNSUBSCRIBE sent again) ends once that is done.
            core.idle_disconnect_due = true;
        }
        shared.set_state(&mut core, ConnectionState::ConnectionDisrupted);
        // The state says only that it failed; this says why, and when it is tried again.
        shared.delivery.push(JsEvent::Disrupted { error, retry_in: delay });
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = until_closed(shared) => {}
    }
    let mut core = shared.core.lock();
    if !core.closed && !core.wants_connection() {
        // Everything was unsubscribed and settled meanwhile: no need to reconnect.
        core.outbox.release(&shared.requests, Vec::new());
        shared.set_state(&mut core, ConnectionState::Disconnected);
    }
}

/// The oldest publish and the filters of the SUBSCRIBEs written on the lost connection and
/// still unacknowledged, once the acks read with the close are accounted for (they may have
/// settled them).
fn oldest_unacknowledged(shared: &Shared, eventloop: &mut EventLoop) -> Unacknowledged {
    let mut core = shared.core.lock();
    account_buffered_events(shared, &mut core, eventloop);
    // Takes rumqttc's unacknowledged publishes into `pending` (poll() did already after an
    // error); `requeue` takes them from there.
    eventloop.clean();
    Unacknowledged {
        publish: core.outbox.oldest_unacknowledged(&eventloop.pending),
        subscribe: core.outbox.unacknowledged_subscribes(),
        new_suspects: false,
    }
}

/// The broker dropped the connection each time these filters' SUBSCRIBE arrived: their
/// observers fail, and they are not subscribed again.
fn refuse_subscribe(shared: &Shared, filters: &[String]) {
    let mut core = shared.core.lock();
    for filter in filters {
        let dropped = dropped_each_time(
            &shared.options,
            &format!("the subscription to '{filter}'"),
            REFUSED_SUBSCRIBE_STREAK,
            "AWS IoT does this for a topic filter its IoT policy does not allow (iot:Subscribe on topicfilter/…)",
            "brokers do this for a filter their access rules refuse",
        );
        let error = PubSubError::SubscribeRefused(format!("The broker {dropped}"));
        for (observer, result) in core.subs.refuse(filter, &error) {
            shared.delivery.push(JsEvent::Subscribed { observer, error: result.err() });
        }
    }
}

/// Takes back from rumqttc what the lost connection left (unacknowledged publishes, its
/// channel) into the outbox, which holds it until the next connection.
fn requeue(shared: &Shared, core: &mut Core, eventloop: &mut EventLoop, pubrels: &mut Vec<u16>, error: &PubSubError, refused: Option<&Written>) {
    account_buffered_events(shared, core, eventloop);
    // rumqttc already cleaned up after an error while connected; this also takes what JS put
    // in its channel since, and is harmless when there is nothing left.
    eventloop.clean();
    if let Some(parked) = eventloop.state.collision.take() {
        eventloop.pending.push_front(MqttRequest::Publish(parked));
    }
    let policy = shared.options.offline_queue.policy;
    let requeued = core.outbox.requeue(eventloop.pending.drain(..), |qos| policy.keeps(qos), refused);
    if let (Some(op), Some(publish)) = (requeued.refused, refused) {
        shared.delivery.push(JsEvent::Published { op, error: Some(refused_publish(publish, &shared.options)) });
    }
    let lost = PubSubError::Connection(format!("Not published: the connection failed or was lost before it was sent ({error})"));
    for op in requeued.rejected {
        core.counters.dropped_connection_lost += 1;
        shared.delivery.push(JsEvent::Published { op, error: Some(lost.clone()) });
    }
    // rumqttc sends these first on a resumed session, and forgets them on a new one.
    eventloop.pending.extend(requeued.pubrels.iter().map(|pkid| MqttRequest::PubRel(PubRel::new(*pkid))));
    *pubrels = requeued.pubrels;
    // The offline queue decides now what JS held back.
    shared.let_js_publish(core);
}

/// After CONNACK: renew the subscriptions, then let what waited go out. A resumed session gets
/// the publishes it has unacknowledged first, as they were (rumqttc writes its pending list
/// before its channel), with the PUBRELs due.
fn resume(shared: &Shared, eventloop: &mut EventLoop, session_present: bool, pubrels: &mut Vec<u16>) {
    let mut core = shared.core.lock();
    if !session_present {
        for completion in core.outbox.forget_pubrels(pubrels) {
            complete(shared, &mut core, completion);
        }
    }
    pubrels.clear();
    if core.outbox.is_held() {
        core.counters.reconnects += 1;
        let resends = core.outbox.resume(session_present);
        for publish in resends.into_iter().rev() {
            eventloop.pending.push_front(MqttRequest::Publish(publish));
        }
        let renewal = core.subs.renewal(session_present);
        core.outbox.release(&shared.requests, renewal);
    }
    if core.idle_disconnect_due {
        // The last observer left while connecting: Connected → ConnectedPendingDisconnect now.
        shared.begin_idle_disconnect(&mut core);
    }
}

/// Waits until the instance needs a connection (true) or is closed (false).
async fn wait_for_work(shared: &Shared) -> bool {
    loop {
        {
            let core = shared.core.lock();
            if core.closed {
                return false;
            }
            if core.wants_connection() {
                return true;
            }
        }
        shared.attention.notified().await;
    }
}

async fn until_closed(shared: &Shared) {
    loop {
        shared.attention.notified().await;
        if shared.core.lock().closed {
            return;
        }
    }
}

/// Connects; `Ok(session_present)` once the broker accepted.
async fn connect(shared: &Shared, eventloop: &mut EventLoop, backoff: Option<&mut Backoff>) -> Result<bool, PubSubError> {
    shared.set_state(&mut shared.core.lock(), ConnectionState::Connecting);
    tokio::select! {
        _ = until_closed(shared) => Err(PubSubError::Closed),
        outcome = attempt(shared, eventloop, backoff) => outcome,
    }
}

/// One connection attempt: credentials and a fresh signature first for AWS IoT, then the
/// transport and CONNECT/CONNACK, each within `connectTimeout`.
async fn attempt(shared: &Shared, eventloop: &mut EventLoop, backoff: Option<&mut Backoff>) -> Result<bool, PubSubError> {
    let timeout = shared.options.connect_timeout;
    if let Some(aws) = &shared.aws {
        let credentials = aws.credentials.fetch(&shared.delivery, timeout).await?;
        aws.presigner.use_credentials(credentials);
    }
    match tokio::time::timeout(timeout, eventloop.poll()).await {
        Err(_elapsed) => Err(PubSubError::ConnectTimeout(timeout)),
        Ok(Err(error)) => match shared.aws.as_ref().and_then(|aws| aws.presigner.take_failure()) {
            Some(signing_failure) => Err(signing_failure),
            None => Err(describe_connect_failure(error, &shared.options, backoff)),
        },
        Ok(Ok(event)) => {
            shared.set_state(&mut shared.core.lock(), ConnectionState::Connected);
            Ok(matches!(event, Event::Incoming(Packet::ConnAck(ConnAck { session_present: true, .. }))))
        }
    }
}

async fn serve(shared: &Shared, eventloop: &mut EventLoop) -> End {
    // A PINGREQ unanswered for half a keep-alive, with nothing else from the broker meanwhile,
    // means the broker or the path to it is dead: found within 1.5 × keepAlive, not when the OS
    // gives up on the socket.
    let ping_timeout = shared.options.keep_alive / 2;
    let mut ping_deadline: Option<Instant> = None;
    // Whether the broker sent anything since the deadline was set: then it is alive, and its
    // PINGRESP is late behind what it queued for a slow subscriber, not missing.
    let mut heard_since_ping = false;
    loop {
        if let Some(end) = housekeeping(shared, &mut shared.core.lock()) {
            return end;
        }
        // poll() is not cancel-safe: dropped while it writes, it loses the packet it had already
        // recorded (packet id taken, Outgoing event queued), so that publish never settles. A
        // wake-up that does not end the connection goes on polling the same future; it is dropped
        // only when the connection ends (closed: all was rejected; idle: nothing is pending;
        // lost: `clean()` takes back what rumqttc recorded).
        let event = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    biased;
                    // Close, or the last observer left.
                    _ = shared.attention.notified() => {
                        if let Some(end) = housekeeping(shared, &mut shared.core.lock()) {
                            return end;
                        }
                    }
                    // Before the deadline: after a wait in push_message (a slow subscriber) what
                    // the broker sent may already be buffered or in the socket.
                    event = &mut poll => break event,
                    _ = sleep_until_some(ping_deadline) => {
                        if std::mem::take(&mut heard_since_ping) {
                            ping_deadline = Some(Instant::now() + ping_timeout);
                            continue;
                        }
                        let error = PubSubError::Connection(format!(
                            "No PINGRESP within {} ms of PINGREQ: the broker stopped answering (frozen, or the network drops packets)",
                            ping_timeout.as_millis()
                        ));
                        return End::Lost { error, by_broker: false, not_a_refusal: true };
                    }
                }
            }
        };
        if ping_deadline.is_some() && matches!(event, Ok(Event::Incoming(_))) {
            heard_since_ping = true;
            // rumqttc drops the connection when its next PINGREQ is due before the PINGRESP
            // came; the deadline above decides instead.
            eventloop.state.await_pingresp = false;
        }
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let message = message_for_observers(&mut shared.core.lock(), publish);
                if let Some(message) = message {
                    // Waits while JS is behind: the socket is not read meanwhile.
                    shared.delivery.push_message(message).await;
                    // JS is behind, and all that was read is queued: let the broker run before
                    // the next read. Where it shares a core with us, reading as soon as a little
                    // data arrives takes a flow in small pieces, a wake-up for both each time
                    // (bench/FINDINGS.md, "The burst, then the drain").
                    if eventloop.state.events.is_empty() && shared.delivery.is_behind() {
                        std::thread::yield_now();
                    }
                }
            }
            Ok(Event::Incoming(Packet::PingResp)) => ping_deadline = None,
            Ok(Event::Outgoing(Outgoing::PingReq)) => {
                ping_deadline.get_or_insert_with(|| {
                    heard_since_ping = false;
                    Instant::now() + ping_timeout
                });
            }
            Ok(event) => account(shared, &mut shared.core.lock(), event),
            Err(error) => {
                let by_broker = matches!(error, ConnectionError::MqttState(StateError::ConnectionAborted));
                let not_a_refusal = match &error {
                    ConnectionError::FlushTimeout | ConnectionError::NetworkTimeout => true,
                    // The transport refused what the server sent (vendored rumqttc, framed.rs `ended`).
                    ConnectionError::MqttState(StateError::Io(e)) => e.kind() == ErrorKind::InvalidData,
                    _ => false,
                };
                return End::Lost { error: describe(error, &shared.options), by_broker, not_a_refusal };
            }
        }
    }
}

/// The event for an incoming message, counted; `None` when no observer wants it (any more).
fn message_for_observers(core: &mut Core, publish: Publish) -> Option<JsEvent> {
    let observers = core.subs.route(&publish.topic);
    if observers.is_empty() {
        count_unrouted(core);
        return None;
    }
    core.counters.messages_received += 1;
    Some(JsEvent::Message { observers, publish })
}

/// Feeds an ack or a sent request to the outbox and settles what it completes.
fn account(shared: &Shared, core: &mut Core, event: Event) {
    match event {
        Event::Incoming(packet) => {
            for completion in core.outbox.on_incoming(&packet) {
                complete(shared, core, completion);
            }
        }
        Event::Outgoing(outgoing) => {
            if matches!(outgoing, Outgoing::Publish(_)) {
                core.counters.messages_sent += 1;
            }
            if let Some(completion) = core.outbox.on_outgoing(&outgoing) {
                complete(shared, core, completion);
            }
        }
    }
}

/// Events rumqttc had buffered when the connection failed (acks read in the same batch, a
/// publish it recorded but could not write): accounted before requeueing, so that the outbox
/// knows exactly what is still unacknowledged. Messages among them go to JS as usual.
fn account_buffered_events(shared: &Shared, core: &mut Core, eventloop: &mut EventLoop) {
    for event in std::mem::take(&mut eventloop.state.events) {
        match event {
            Event::Incoming(Packet::Publish(publish)) => {
                if let Some(message) = message_for_observers(core, publish) {
                    shared.delivery.push(message);
                }
            }
            // rumqttc hands out buffered events before any new I/O, so one still here was
            // recorded in the batch whose write or flush failed. A QoS 0 publish (packet id 0)
            // is not given back like QoS 1/2: it was not (wholly) written, and fails.
            Event::Outgoing(Outgoing::Publish(0)) => match core.outbox.on_outgoing(&Outgoing::Publish(0)) {
                Some(Completion::Published(op)) => {
                    core.counters.dropped_connection_lost += 1;
                    let error = PubSubError::Connection(
                        "Outcome unknown: the connection failed while this QoS 0 publish was being written (the broker may \
                         have all of it or none); QoS 0 is not sent again"
                            .into(),
                    );
                    shared.delivery.push(JsEvent::Published { op, error: Some(error) });
                }
                Some(completion) => complete(shared, core, completion),
                None => {}
            },
            event => account(shared, core, event),
        }
    }
}

/// Before an idle disconnect: what rumqttc read together with the last UNSUBACK (a message the
/// broker still had in flight, its PUBACK) stays in its event queue, and the next connection's
/// first poll would hand it to a new observer as a new message. The subscription it came
/// through is gone, so it counts as unrouted; acks go to the outbox as usual.
fn discard_buffered_events(shared: &Shared, core: &mut Core, eventloop: &mut EventLoop) {
    for event in std::mem::take(&mut eventloop.state.events) {
        match event {
            Event::Incoming(Packet::Publish(_)) => count_unrouted(core),
            event => account(shared, core, event),
        }
    }
}

/// A message that arrived when no subscription could take it any more.
fn count_unrouted(core: &mut Core) {
    core.counters.messages_received += 1;
    core.counters.dropped_unrouted += 1;
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Between events: refill rumqttc's channel, tell JS when it may publish again, and decide
/// whether the connection should end.
fn housekeeping(shared: &Shared, core: &mut Core) -> Option<End> {
    if core.closed {
        return Some(End::Closed);
    }
    core.outbox.pump(&shared.requests);
    if core.outbox.backlog_len() < WRITABLE_BELOW {
        shared.let_js_publish(core);
    }
    if core.state == ConnectionState::ConnectedPendingDisconnect && core.outbox.is_idle() && !core.subs.has_observers() {
        return Some(End::Idle);
    }
    None
}

fn complete(shared: &Shared, core: &mut Core, completion: Completion) {
    match completion {
        Completion::Published(op) => shared.delivery.push(JsEvent::Published { op, error: None }),
        // Not expected since rumqttc keeps an id until PUBCOMP (vendor/rumqttc/PATCHED.md).
        Completion::IdReused(op) => {
            let error = PubSubError::Connection(
                "Outcome unknown: its packet id was given to another publish before its acknowledgement came".into(),
            );
            shared.delivery.push(JsEvent::Published { op, error: Some(error) });
        }
        Completion::Subscribed(filter, granted) => {
            for (observer, result) in core.subs.on_suback(&filter, granted) {
                shared.delivery.push(JsEvent::Subscribed { observer, error: result.err() });
            }
        }
    }
}

/// Sends DISCONNECT if connected, reads what the broker still sends until it closes the
/// connection (messages count as unrouted: nobody takes them now, and one at QoS 1 or 2 stays
/// unacknowledged, so a persistent session keeps it), then drops the socket. Requests still in
/// rumqttc's channel stay there for the next connection.
///
/// The reading matters: closing a TCP socket that holds unread data sends RST, not FIN, and a
/// broker that gets the RST before it has read the DISCONNECT loses it with the connection,
/// and publishes the will (a subscriber closed while messages pour in, or while its JS is behind).
async fn say_goodbye(shared: &Shared, eventloop: &mut EventLoop) {
    if let Some(network) = eventloop.network.as_mut() {
        let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
            if network.write(Packet::Disconnect).await.is_ok() && network.flush().await.is_ok() {
                while let Ok(packet) = network.read().await {
                    if let Packet::Publish(_) = packet {
                        count_unrouted(&mut shared.core.lock());
                    }
                }
            }
        })
        .await;
    }
    eventloop.network = None;
    // Resets ping and in-flight bookkeeping; nothing is in flight when we get here.
    eventloop.state.clean();
}

/// Drops what rumqttc still holds (its channel and retransmit list): the outbox has settled
/// those operations, so they must not go out on a later connection.
fn forget_queued_requests(eventloop: &mut EventLoop) {
    eventloop.state.events.clear();
    eventloop.clean();
    eventloop.pending.clear();
    eventloop.state.collision = None;
}

/// A failure before CONNACK. MQTT-level errors here mean the transport was up and the server
/// closed or reset it after our CONNECT: how AWS IoT refuses a client its policy does not allow,
/// and also how throttling or a back-end hiccup look. Once the instance has connected, only a
/// close that keeps happening counts as a refusal (`backoff` keeps the streak), and a reset
/// never does. A server that answered with what we cannot read (bytes that are not MQTT, a
/// frame the WebSocket rules refuse) did not close anything: it is said so, and never taken for
/// a refusal.
fn describe_connect_failure(error: ConnectionError, options: &ClientOptions, backoff: Option<&mut Backoff>) -> PubSubError {
    match &error {
        // A packet cut short by the close: a close.
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(_))) => {}
        ConnectionError::MqttState(StateError::Deserialization(not_mqtt)) => {
            return PubSubError::Connection(redact(&format!(
                "{} answered CONNECT with what is not MQTT 3.1.1 ({not_mqtt}): is it an MQTT 3.1.1 broker?",
                options.endpoint.shown()
            )));
        }
        ConnectionError::MqttState(StateError::Io(io)) if io.kind() == ErrorKind::InvalidData => return describe(error, options),
        _ => {}
    }
    match (&error, &options.aws) {
        (ConnectionError::MqttState(state_error), Some(aws)) => {
            let has_connected = backoff.as_ref().is_some_and(|b| b.has_connected());
            if has_connected && transport_reset(state_error) {
                return describe(error, options);
            }
            // Without reconnect there is no streak to wait for: a refusal at once, as before.
            if !backoff.is_none_or(Backoff::closed_before_connack) {
                return PubSubError::Connection(redact(&format!(
                    "AWS IoT closed the connection after CONNECT without a CONNACK ({state_error}). It accepted this \
                     client before, so this is taken for throttling or a back-end hiccup until it happens \
                     {CLOSED_BEFORE_CONNACK_STREAK} times in a row"
                )));
            }
            PubSubError::NotAuthorized(format!(
                "AWS IoT closed the connection right after CONNECT, without a CONNACK. This is how it refuses a client \
                 its IoT policy does not allow: check that the policy attached to these credentials allows iot:Connect \
                 on arn:aws:iot:{}:<account-id>:client/{}",
                aws.region, options.client_id
            ))
        }
        (ConnectionError::MqttState(error), None) => PubSubError::Connection(redact(&format!(
            "{} closed the connection after CONNECT without a CONNACK ({error})",
            options.endpoint.shown()
        ))),
        _ => describe(error, options),
    }
}

/// The packet's type, as the MQTT specification names it.
fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

/// Whether the transport broke under the MQTT exchange (a reset, a broken pipe) rather than
/// the server closing it.
fn transport_reset(error: &StateError) -> bool {
    match error {
        StateError::Io(io) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)) => {
            matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
        }
        _ => false,
    }
}

/// Whether rustls refused the server's certificate, wherever in the error's chain it is
/// (rumqttc and tungstenite wrap it in I/O errors).
fn certificate_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) = error.downcast_ref() {
            return true;
        }
        next = match error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

/// tokio-util's error when the stream ends with part of a packet read.
const CLOSED_MID_PACKET: &str = "bytes remaining on stream";

/// Turns rumqttc's error into one a user can act on. No message shows a signature, a key id
/// or a token.
fn describe(error: ConnectionError, options: &ClientOptions) -> PubSubError {
    let url = options.endpoint.shown();
    match error {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => PubSubError::NotAuthorized(format!(
                "{url} rejected the user name or password (CONNACK 'bad user name or password')"
            )),
            ConnectReturnCode::NotAuthorized => {
                PubSubError::NotAuthorized(format!("{url} does not allow this client to connect (CONNACK 'not authorized')"))
            }
            ConnectReturnCode::BadClientId => PubSubError::ConnectRefused(format!(
                "CONNACK 'identifier rejected' for client id '{}'",
                options.client_id
            )),
            ConnectReturnCode::RefusedProtocolVersion => {
                PubSubError::ConnectRefused("CONNACK 'unacceptable protocol version' (the broker does not speak MQTT 3.1.1)".into())
            }
            // Temporary by definition: reconnecting may succeed.
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
                PubSubError::Connection(format!("{url} answered CONNACK 'server unavailable'"))
            }
        },
        ConnectionError::Websocket(tungstenite::Error::Http(response)) => {
            // The body is not shown: a gateway may echo the key id in it.
            let status = response.status();
            let detail = format!("the WebSocket upgrade to {url} was answered HTTP {status}");
            match (status.as_u16(), &options.aws) {
                (401 | 403, Some(aws)) => PubSubError::NotAuthorized(format!(
                    "AWS IoT did not accept the request signature: {detail}. Likely causes: an unknown or inactive \
                     access key, a wrong secret access key, expired credentials or session token, a region other than \
                     the endpoint's (signed for '{}'), or this machine's clock more than 5 minutes off",
                    aws.region
                )),
                (401 | 403, None) => PubSubError::NotAuthorized(detail),
                _ => PubSubError::Connection(format!("Cannot connect: {detail}")),
            }
        }
        // tungstenite's own message is "Attack attempt detected".
        ConnectionError::Websocket(tungstenite::Error::AttackAttempt) => PubSubError::Connection(format!(
            "Connection to {url} failed: the server's answer to the WebSocket upgrade was over 64 KiB or came in too \
             many small pieces (limits of the WebSocket library against a hostile server)"
        )),
        ConnectionError::NetworkTimeout => PubSubError::ConnectTimeout(options.connect_timeout),
        // rumqttc's own message prints the packet, and an echoing server sends back our CONNECT
        // with its password.
        ConnectionError::NotConnAck(packet) => PubSubError::Connection(format!(
            "{url} answered CONNECT with a {} packet instead of CONNACK: is it an MQTT 3.1.1 broker?",
            packet_name(&packet)
        )),
        other if certificate_refused(&other) => PubSubError::Untrusted(redact(&format!(
            "Connection to {url} failed: {other}; {}",
            crate::tls::trust_store_note(options.ca.is_some())
        ))),
        // rumqttc reports the socket's errors while reading or writing a packet as
        // (de)serialization errors: they are I/O errors all the same.
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(e)))
            if e.kind() == ErrorKind::Other && e.to_string() == CLOSED_MID_PACKET =>
        {
            PubSubError::Connection(format!("Connection to {url} failed: the server closed the connection in the middle of a packet"))
        }
        ConnectionError::Io(e)
        | ConnectionError::MqttState(StateError::Io(e) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(e))) => {
            PubSubError::Connection(redact(&format!("Connection to {url} failed: {e}")))
        }
        other => PubSubError::Connection(redact(&format!("Connection to {url} failed: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Provider;
    use serde_json::json;

    fn options(provider: Provider) -> ClientOptions {
        let mut options = json!({ "endpoint": "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt" });
        if provider == Provider::Iot {
            options["credentials"] = json!({ "accessKeyId": "AKID", "secretAccessKey": "s" });
        }
        ClientOptions::from_js(&options, provider, false).unwrap()
    }

    #[test]
    fn an_answer_to_connect_that_is_not_mqtt_is_neither_a_close_nor_a_policy_refusal() {
        for provider in [Provider::Mqtt, Provider::Iot] {
            let not_mqtt = ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::MalformedRemainingLength));
            let error = describe_connect_failure(not_mqtt, &options(provider), None);
            assert_eq!(error.code(), "ERR_CONNECTION");
            assert!(error.to_string().contains("answered CONNECT with what is not MQTT 3.1.1 (Malformed remaining length)"), "{error}");
        }
        // Whereas AWS IoT closing the connection is how its policy refuses a client.
        let closed = ConnectionError::MqttState(StateError::ConnectionAborted);
        assert_eq!(describe_connect_failure(closed, &options(Provider::Iot), None).code(), "ERR_NOT_AUTHORIZED");
    }
}
