//! The connection task: one per instance, on the shared tokio runtime. It owns rumqttc's
//! EventLoop, connects when there is work, feeds acks to the outbox and messages to delivery,
//! and disconnects when the last observer has left and nothing is pending.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, PubRel, Publish, Request as MqttRequest, StateError};
use tokio::time::Instant;

use crate::aws_iot_limits;
use crate::client::{Core, Shared, MAX_BACKLOG};
use crate::delivery::Event as JsEvent;
use crate::errors::{causes, PubSubError};
use crate::credentials::CredentialsOption;
use crate::options::{is_aws_host, region_from_host, ClientOptions, Endpoint, Scheme};
use crate::proxy::HttpProxy;
use crate::reconnect::{
    Backoff, Unacknowledged, Verdict, REFUSED_PUBLISH_STREAK, REFUSED_SUBSCRIBE_STREAK, TAKEOVER_STREAK,
};
use crate::outbox::{Completion, Rejected, Written};
use crate::signing::redact;
use crate::tls;
use crate::unclaimed::Unclaimed;

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
                shared.core.lock().will_armed = shared.options.will.is_some();
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
                core.outbox.on_disconnected();
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
    // Closed: everything pending was settled by `close()`. The messages rumqttc read in its
    // last batch were acknowledged with it: they go to the observers (ahead of the `closed`
    // event that completes them), or a persistent session would lose them. Then leave politely
    // and say so.
    deliver_buffered_messages(&shared, &mut shared.core.lock(), &mut eventloop);
    say_goodbye(&shared, &mut eventloop).await;
    let mut core = shared.core.lock();
    core.subs.clear();
    let unclaimed = core.unclaimed.as_mut().map_or(0, Unclaimed::clear);
    core.counters.dropped_unrouted += unclaimed as u64;
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
        "AWS IoT does this for a publish its IoT policy does not allow (iot:Publish on the topic)",
        "brokers do this for a packet over their maximum packet size (mosquitto's max_packet_size, for one), or one \
         their access rules refuse",
    );
    PubSubError::Payload(format!("Probably refused: the broker {dropped}"))
}

/// Why `what` is not sent again: `on_aws` or `on_brokers` says what makes a broker do that.
fn dropped_each_time(options: &ClientOptions, what: &str, streak: u32, on_aws: &str, on_brokers: &str) -> String {
    let why = if options.aws_iot_broker { on_aws } else { on_brokers };
    format!("dropped the connection each time {what} arrived ({streak} times in a row), so it is not sent again; {why}")
}

fn takeover(options: &ClientOptions) -> PubSubError {
    let iot_also = if options.aws_iot_broker {
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
    // The last observer had left (AWS IoT keeps the connection a second for the next): a
    // connection made again for what is pending ends once that is done, as below.
    let lingering = shared.core.lock().linger_until.take().is_some();
    let backoff = match backoff {
        Some(backoff) if !error.is_permanent(backoff.has_connected()) => backoff,
        _ => {
            let mut core = shared.core.lock();
            forget_queued_requests(eventloop);
            pubrels.clear();
            core.will_armed = false;
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
        if core.state == ConnectionState::ConnectedPendingDisconnect || lingering {
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
    core.outbox.take_back_parked(&mut eventloop.pending, eventloop.state.collision.take());
    let queue = &shared.options.offline_queue;
    let requeued = core.outbox.requeue(eventloop.pending.drain(..), |qos| queue.policy.keeps(qos), refused);
    if let (Some(op), Some(publish)) = (requeued.refused, refused) {
        shared.delivery.push(JsEvent::PublishFailed { op, error: refused_publish(publish, &shared.options), sent: true });
    }
    let unsent = PubSubError::Connection(format!("Not published: the connection failed or was lost before it was sent ({error})"));
    // offlineQueue 'none' turns away what was written and not yet acknowledged too.
    let unacknowledged = PubSubError::Connection(format!(
        "Outcome unknown: the connection failed or was lost after this publish was written, before its acknowledgement \
         (the broker may have it), and {} ({error})",
        queue.policy.describe()
    ));
    for Rejected { op, sent } in requeued.rejected {
        core.counters.dropped_connection_lost += 1;
        let error = if sent { unacknowledged.clone() } else { unsent.clone() };
        shared.delivery.push(JsEvent::PublishFailed { op, error, sent });
    }
    // What was accepted while connected (or before the first attempt) is now in the offline
    // queue, whose bounds hold for it as for a publish made while the connection is down.
    let turned_away = core.outbox.turn_away_beyond(queue.bounds());
    if !turned_away.is_empty() {
        let waiting = core.outbox.queued();
        for Rejected { op, sent } in turned_away {
            core.counters.dropped_queue_full += 1;
            shared.delivery.push(JsEvent::PublishFailed { op, error: queue.full(waiting, sent), sent });
        }
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
    core.outbox.on_connack();
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
        let credentials = aws.credentials.fetch(&shared.delivery, timeout).await.map_err(|error| not_an_aws_host(error, &shared.options))?;
        aws.presigner.use_credentials(credentials);
    }
    if shared.options.aws_iot_broker {
        let last_connect = shared.core.lock().last_connect;
        if let Some(last_connect) = last_connect {
            tokio::time::sleep_until(last_connect + aws_iot_limits::MIN_CONNECT_INTERVAL).await;
        }
    }
    let outcome = tokio::time::timeout(timeout, eventloop.poll()).await;
    if shared.options.aws_iot_broker {
        // Once the attempt is over: its CONNECT went after the handshakes, which the next
        // attempt's may take less time for.
        shared.core.lock().last_connect = Some(Instant::now());
    }
    match outcome {
        Err(_elapsed) => Err(shared.options.connect_timeout_error()),
        Ok(Err(error)) => match shared.aws.as_ref().and_then(|aws| aws.presigner.take_failure()) {
            Some(signing_failure) => Err(signing_failure),
            None => Err(describe_connect_failure(error, &shared.options, backoff.as_deref())),
        },
        Ok(Ok(event)) => {
            shared.set_state(&mut shared.core.lock(), ConnectionState::Connected);
            Ok(matches!(event, Event::Incoming(Packet::ConnAck(ConnAck { session_present: true, .. }))))
        }
    }
}

/// The default chain found or fetched no credentials, for an endpoint that is not an AWS host:
/// perhaps an AWS IoT custom domain, which needs them, but perhaps another broker, given to this
/// entry point by mistake (it is the package's main one). Says which entry point is for that.
fn not_an_aws_host(error: PubSubError, options: &ClientOptions) -> PubSubError {
    let default_chain = options.aws.as_ref().is_some_and(|aws| matches!(aws.credentials, CredentialsOption::DefaultChain));
    if !default_chain || is_aws_host(&options.endpoint.host) {
        return error;
    }
    let hint = format!(
        " The endpoint's host '{}' is not an AWS host: this entry point (require('native-pubsub') and \
         'native-pubsub/iot') signs every connection with AWS credentials, for AWS IoT (on a custom domain too); for \
         any other MQTT broker use require('native-pubsub/mqtt')",
        options.endpoint.host
    );
    let add = |message: String| {
        let message = message.trim_end().to_string();
        let stop = if message.ends_with('.') { "" } else { "." };
        format!("{message}{stop}{hint}")
    };
    match error {
        PubSubError::CredentialsUnavailable(message) => PubSubError::CredentialsUnavailable(add(message)),
        PubSubError::Credentials(message) => PubSubError::Credentials(add(message)),
        other => other,
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
        let (mut linger_until, mut paced_until) = {
            let mut core = shared.core.lock();
            if let Some(end) = housekeeping(shared, &mut core) {
                return end;
            }
            (core.linger_until, core.outbox.paced_until())
        };
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
                    // Close, the last observer left, or a publish waits for the pace.
                    _ = shared.attention.notified() => {
                        let mut core = shared.core.lock();
                        if let Some(end) = housekeeping(shared, &mut core) {
                            return end;
                        }
                        linger_until = core.linger_until;
                        paced_until = core.outbox.paced_until();
                    }
                    // AWS IoT's rates let the next publish go.
                    _ = sleep_until_some(paced_until.map(Instant::from_std)) => {
                        let mut core = shared.core.lock();
                        if let Some(end) = housekeeping(shared, &mut core) {
                            return end;
                        }
                        paced_until = core.outbox.paced_until();
                    }
                    // The last observer left a while ago: Connected → ConnectedPendingDisconnect.
                    _ = sleep_until_some(linger_until) => {
                        let mut core = shared.core.lock();
                        linger_until = None;
                        core.linger_until = None;
                        shared.begin_idle_disconnect(&mut core);
                        if let Some(end) = housekeeping(shared, &mut core) {
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
                    shared.delivery.push_message(message, || !shared.core.lock().outbox.is_idle()).await;
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
                // EOF: a clean close, or one over TLS without close_notify (rustls's UnexpectedEof).
                let by_broker = match &error {
                    ConnectionError::MqttState(StateError::ConnectionAborted) => true,
                    ConnectionError::MqttState(StateError::Io(io)) => io.kind() == ErrorKind::UnexpectedEof,
                    _ => false,
                };
                let not_a_refusal = match &error {
                    ConnectionError::FlushTimeout | ConnectionError::NetworkTimeout => true,
                    // The transport refused what the server sent (vendored rumqttc, framed.rs `ended`).
                    ConnectionError::MqttState(StateError::Io(e)) => e.kind() == ErrorKind::InvalidData,
                    _ => false,
                };
                return End::Lost { error: describe(error, &shared.options, Stage::Connected), by_broker, not_a_refusal };
            }
        }
    }
}

/// The event for an incoming message, counted; `None` when no observer wants it (any more):
/// a persistent session keeps it for an observer still to come (`Unclaimed`).
fn message_for_observers(core: &mut Core, publish: Publish) -> Option<JsEvent> {
    let observers = core.subs.route(&publish.topic);
    core.counters.messages_received += 1;
    if observers.is_empty() {
        let dropped = match core.unclaimed.as_mut() {
            Some(unclaimed) => unclaimed.keep(publish),
            None => 1,
        };
        core.counters.dropped_unrouted += dropped as u64;
        return None;
    }
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
            Event::Incoming(Packet::Publish(publish)) => deliver(shared, core, publish),
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
                    shared.delivery.push(JsEvent::PublishFailed { op, error, sent: true });
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

/// On close: the messages rumqttc read (and acknowledged) but had not handed over go to their
/// observers; the acks and sent requests among its events concern operations `close()` settled.
fn deliver_buffered_messages(shared: &Shared, core: &mut Core, eventloop: &mut EventLoop) {
    for event in std::mem::take(&mut eventloop.state.events) {
        if let Event::Incoming(Packet::Publish(publish)) = event {
            deliver(shared, core, publish);
        }
    }
}

/// Hands a message rumqttc had buffered to its observers, without waiting for JS.
fn deliver(shared: &Shared, core: &mut Core, publish: Publish) {
    if let Some(message) = message_for_observers(core, publish) {
        shared.delivery.push(message);
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
        Completion::Published(op) => shared.delivery.push(JsEvent::Published { op }),
        // Not expected since rumqttc keeps an id until PUBCOMP (vendor/rumqttc/PATCHED.md).
        Completion::IdReused(op) => {
            let error = PubSubError::Connection(
                "Outcome unknown: its packet id was given to another publish before its acknowledgement came".into(),
            );
            shared.delivery.push(JsEvent::PublishFailed { op, error, sent: true });
        }
        Completion::Subscribed(filter, granted) => {
            let settled = match granted {
                // AWS IoT's two reasons, which the broker-neutral message leaves to guess.
                None if shared.options.aws_iot_broker => core.subs.refuse(&filter, &aws_iot_limits::subscribe_refused(&filter)),
                granted => core.subs.on_suback(&filter, granted),
            };
            for (observer, result) in settled {
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
/// and also how throttling or an outage behind it look. Once the instance has connected (as
/// `backoff` knows), neither a close nor a reset counts as a refusal: it is retried. A server
/// that answered with what we cannot read (bytes that are not MQTT, a frame the WebSocket rules
/// refuse) did not close anything: it is said so, and never taken for a refusal.
fn describe_connect_failure(error: ConnectionError, options: &ClientOptions, backoff: Option<&Backoff>) -> PubSubError {
    if let (ConnectionError::Proxy(proxy_error), Some(proxy)) = (&error, &options.proxy) {
        let destination = format!("{}:{}", options.endpoint.host, options.endpoint.port);
        return proxy.describe_failure(proxy_error, &destination, options.ca.is_some());
    }
    // TLS said why: in TLS 1.3 the server judges the client certificate after the client's
    // side of the handshake is done, so its alert comes once CONNECT has gone out.
    if rustls_error(&error).is_some() {
        return describe(error, options, Stage::Connecting);
    }
    match &error {
        // A packet cut short by the close: a close.
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(_))) => {}
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::HttpAnswer)) => return http_answer(options),
        ConnectionError::MqttState(StateError::Deserialization(not_mqtt)) => {
            return PubSubError::Connection(redact(&format!(
                "{} answered CONNECT with what is not MQTT 3.1.1 ({not_mqtt}): is it an MQTT 3.1.1 broker?",
                options.endpoint.shown()
            )));
        }
        ConnectionError::MqttState(StateError::Io(io)) if io.kind() == ErrorKind::InvalidData => return describe(error, options, Stage::Connecting),
        _ => {}
    }
    match (&error, options.aws_iot_broker) {
        (ConnectionError::MqttState(state_error), true) => {
            if backoff.is_some_and(|b| b.has_connected()) && transport_reset(state_error) {
                return describe(error, options, Stage::Connecting);
            }
            let region = match &options.aws {
                Some(aws) => aws.region.clone(),
                None => region_from_host(&options.endpoint.host).unwrap_or_else(|| "<region>".into()),
            };
            // The IoT provider signs with credentials; the generic one on an AWS IoT host
            // connects with a client certificate (port 8883, X.509) or an authorizer.
            let principal = match (&options.aws, &options.identity) {
                (Some(_), _) => "these credentials",
                (None, Some(_)) => "this client certificate",
                (None, None) => "this client",
            };
            let resource = format!("arn:aws:iot:{region}:<account-id>:client/{}", options.client_id);
            // Without reconnect, nothing tells the two apart later: a refusal at once, as before.
            if backoff.is_some_and(|backoff| !backoff.closed_before_connack()) {
                return PubSubError::Connection(redact(&format!(
                    "AWS IoT closed the connection after CONNECT without a CONNACK{}. It accepted this client before, \
                     so this is taken for an outage or throttling, and retried; should it go on, check that the IoT policy \
                     attached to {principal} still allows iot:Connect on {resource}",
                    close_detail(state_error)
                )));
            }
            PubSubError::NotAuthorized(format!(
                "AWS IoT closed the connection right after CONNECT, without a CONNACK. This is how it refuses a client \
                 its IoT policy does not allow: check that the policy attached to {principal} allows iot:Connect \
                 on {resource}"
            ))
        }
        (ConnectionError::MqttState(state_error), false) => PubSubError::Connection(redact(&closed_after_connect(&options.endpoint, state_error))),
        _ => describe(error, options, Stage::Connecting),
    }
}

/// The server ended the connection after our CONNECT without answering CONNACK.
fn closed_after_connect(endpoint: &Endpoint, error: &StateError) -> String {
    let url = endpoint.shown();
    match error {
        StateError::Io(io) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)) if transport_reset(error) => {
            // What a TLS port does with plain MQTT (mosquitto's, for one).
            let tls_port = if endpoint.scheme == Scheme::Mqtt {
                format!(": a TLS port does this to plain MQTT; if it is one, use mqtts://{}", authority(endpoint))
            } else {
                String::new()
            };
            format!("{url} reset the connection after CONNECT, without a CONNACK ({io}){tls_port}")
        }
        _ => format!("{url} closed the connection after CONNECT without a CONNACK{}", close_detail(error)),
    }
}

/// What more there is to say about a close after CONNECT, in parentheses, or nothing.
fn close_detail(error: &StateError) -> String {
    match error {
        StateError::ConnectionAborted => String::new(),
        // rustls: the server closed the TCP connection without ending TLS first.
        StateError::Io(io) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)) if io.kind() == ErrorKind::UnexpectedEof => String::new(),
        StateError::Io(io) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)) if io.to_string() == CLOSED_MID_PACKET => {
            " (in the middle of a packet)".into()
        }
        StateError::Io(io) | StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io)) => format!(" ({io})"),
        other => format!(" ({other})"),
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

/// Whether the connection had been made (it was lost) or was being made (the attempt failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Connected,
}

/// What rustls said, wherever in the error's chain it is.
fn rustls_error(error: &ConnectionError) -> Option<&rustls::Error> {
    causes(error).find_map(|cause| cause.downcast_ref::<rustls::Error>())
}

/// The innermost I/O error in the error's chain: what the socket said.
fn io_error(error: &ConnectionError) -> Option<&std::io::Error> {
    causes(error).filter_map(|cause| cause.downcast_ref::<std::io::Error>()).last()
}

/// tokio-util's error when the stream ends with part of a packet read.
const CLOSED_MID_PACKET: &str = "bytes remaining on stream";

/// The host and port as a URL authority (an IPv6 address in brackets).
fn authority(endpoint: &Endpoint) -> String {
    if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    }
}

/// The endpoint without TLS: wss:// → ws://, mqtts:// → mqtt://.
fn without_tls(endpoint: &Endpoint) -> String {
    let shown = endpoint.shown();
    match endpoint.scheme {
        Scheme::Wss => shown.replacen("wss://", "ws://", 1),
        Scheme::Mqtts => format!("mqtt://{}", authority(endpoint)),
        Scheme::Ws | Scheme::Mqtt => shown,
    }
}

/// The endpoint's host and port as MQTT without WebSocket: ws:// → mqtt://, wss:// → mqtts://.
fn over_tcp(endpoint: &Endpoint) -> String {
    let scheme = if endpoint.scheme == Scheme::Wss { "mqtts" } else { "mqtt" };
    format!("{scheme}://{}", authority(endpoint))
}

/// The question for a server that did not take the WebSocket upgrade, with the URLs of what it
/// may be instead: a TLS port (for ws://), or MQTT without WebSocket.
fn not_a_websocket_port(options: &ClientOptions) -> String {
    let endpoint = &options.endpoint;
    if let Some(proxy) = &options.proxy {
        return through_proxy(proxy);
    }
    match endpoint.scheme {
        Scheme::Ws => format!(
            "is it a plain WebSocket port? A TLS one takes {}, and an MQTT (not WebSocket) one {}",
            endpoint.shown().replacen("ws://", "wss://", 1),
            over_tcp(endpoint)
        ),
        _ => format!("is it a WebSocket port? An MQTT (not WebSocket) one takes {}", over_tcp(endpoint)),
    }
}

/// Behind a proxy, a tunnel that ends at once says little about the port: the proxy may end
/// tunnels to destinations it does not allow, or the server is not what the scheme says.
fn through_proxy(proxy: &HttpProxy) -> String {
    format!(
        "this went through the proxy {}, which may have ended the tunnel (a destination it does not allow), or the server \
         is not what the endpoint's scheme says",
        proxy.shown
    )
}

/// The endpoint's host and port as MQTT over WebSocket, on the usual path: mqtt:// → ws://…/mqtt,
/// mqtts:// → wss://…/mqtt.
fn over_websocket(endpoint: &Endpoint) -> String {
    let scheme = if endpoint.scheme == Scheme::Mqtts { "wss" } else { "ws" };
    format!("{scheme}://{}/mqtt", authority(endpoint))
}

/// Which handshake an attempt failed in, for words and a likely cause.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handshake {
    None,
    Tls,
    WebSocket,
}

impl Handshake {
    fn of(error: &ConnectionError, endpoint: &Endpoint, stage: Stage) -> Self {
        // The vendored rumqttc makes a wss:// connection's TLS before its upgrade, so a TLS
        // failure is `Tls` there too, and a `Websocket` one came after the TLS handshake.
        match (error, stage) {
            (_, Stage::Connected) => Self::None,
            (ConnectionError::Tls(_), _) => Self::Tls,
            (ConnectionError::Websocket(_), _) if endpoint.is_websocket() => Self::WebSocket,
            _ => Self::None,
        }
    }

    fn during(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Tls => " during the TLS handshake",
            Self::WebSocket => " during the WebSocket upgrade",
        }
    }

    /// What a server that ends this handshake at once probably is.
    fn likely_cause(self, options: &ClientOptions) -> String {
        match (self, &options.proxy) {
            (Self::None, _) => String::new(),
            (_, Some(proxy)) => format!(": {}", through_proxy(proxy)),
            (Self::Tls, None) => format!(": is it a TLS port? A plain port takes {}", without_tls(&options.endpoint)),
            (Self::WebSocket, None) => format!(": {}", not_a_websocket_port(options)),
        }
    }
}

/// What the socket's error means, in words; the OS's own text is kept in parentheses where it
/// names the error ("Connection refused (os error 111)").
fn io_reason(io: &std::io::Error, options: &ClientOptions, stage: Stage, handshake: Handshake) -> String {
    let endpoint = &options.endpoint;
    let during = handshake.during();
    let text = io.to_string();
    match (io.kind(), stage) {
        (ErrorKind::ConnectionRefused, _) => format!(
            "nothing accepts connections on {} ({io}): is the broker running, and listening on that port?",
            authority(endpoint)
        ),
        (ErrorKind::ConnectionReset, Stage::Connecting) => {
            format!("the server reset the connection{during} ({io}){}", handshake.likely_cause(options))
        }
        (ErrorKind::ConnectionReset, Stage::Connected) => format!("the server or the network reset it ({io})"),
        (ErrorKind::ConnectionAborted, _) => format!("the connection was aborted{during} ({io})"),
        (ErrorKind::TimedOut, Stage::Connecting) => {
            format!("the network timed out{during} ({io}): is the host reachable from here, and the port open?")
        }
        (ErrorKind::TimedOut, Stage::Connected) => format!("the network timed out ({io})"),
        (ErrorKind::BrokenPipe, _) => format!("the connection broke while this client was sending{during} ({io}): the server had closed it"),
        (ErrorKind::UnexpectedEof, Stage::Connecting) => {
            format!("the server closed the connection{during}{}", handshake.likely_cause(options))
        }
        (ErrorKind::UnexpectedEof, Stage::Connected) => "the server closed the connection".into(),
        (ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable, _) => {
            format!("no route to {} ({io}): check the host, and this machine's network", endpoint.host)
        }
        (ErrorKind::Other, _) if text == CLOSED_MID_PACKET => "the server closed the connection in the middle of a packet".into(),
        // ws_stream_tungstenite's only word for tungstenite refusing to send, a WebSocket the
        // server has closed (its close frame came first) most of all.
        (ErrorKind::Other, _) if endpoint.is_websocket() && text == std::io::Error::from(ErrorKind::Other).to_string() => {
            format!("the server closed the WebSocket while this client was sending{during}")
        }
        // ws_stream_tungstenite's word for sending on a WebSocket tungstenite saw closed.
        (ErrorKind::NotConnected, _) if endpoint.is_websocket() => format!("the server closed the WebSocket{during}"),
        // getaddrinfo's failures have no kind of their own.
        _ if text.starts_with("failed to lookup address information") => {
            format!("the host name '{}' cannot be resolved ({io}): check it, and this machine's DNS", endpoint.host)
        }
        // Already words: the WebSocket rules the server broke (vendored rumqttc, framed.rs `ended`).
        _ => text,
    }
}

/// Why a connection attempt failed or a connection was lost, in words: rumqttc's and
/// tungstenite's own texts ("Mqtt state: …", "Websocket: IO error: …") are not shown.
fn reason(error: &ConnectionError, options: &ClientOptions, stage: Stage) -> String {
    let endpoint = &options.endpoint;
    let handshake = Handshake::of(error, endpoint, stage);
    if let Some(tls_error) = rustls_error(error) {
        return match (tls_error, stage) {
            // The first bytes of the answer to our ClientHello are no TLS record: an HTTP 400, or
            // whatever a plain port says.
            (rustls::Error::InvalidMessage(_), Stage::Connecting) => {
                format!("the server did not answer TLS: is it a plain port? Then use {}", without_tls(endpoint))
            }
            (rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure), _) => {
                let certificate = if options.identity.is_some() {
                    "it did not accept the client certificate given as 'cert'"
                } else {
                    "it wants a client certificate: pass it as the 'cert' and 'key' options"
                };
                format!("the server refused the TLS handshake (no cipher suite in common, or {certificate})")
            }
            (rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion), _) => {
                "the server refused the TLS handshake: no TLS version in common (this client speaks TLS 1.2 and 1.3)".into()
            }
            (rustls::Error::AlertReceived(rustls::AlertDescription::UnrecognisedName), _) => {
                format!("the server does not serve the host name '{}' (TLS SNI): check the endpoint's host", endpoint.host)
            }
            (other, _) => format!("TLS failed: {other}"),
        };
    }
    if let Some(io) = io_error(error) {
        return io_reason(io, options, stage, handshake);
    }
    match error {
        ConnectionError::MqttState(StateError::ConnectionAborted) => "the server closed the connection".into(),
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::HttpAnswer)) => {
            "the server sent HTTP, not MQTT".into()
        }
        ConnectionError::MqttState(StateError::Deserialization(not_mqtt)) => format!("the server sent what is not MQTT 3.1.1 ({not_mqtt})"),
        ConnectionError::MqttState(state @ (StateError::Unsolicited(_) | StateError::WrongPacket)) => {
            format!("the server broke the MQTT 3.1.1 rules ({state})")
        }
        ConnectionError::MqttState(other) => other.to_string(),
        ConnectionError::Websocket(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete)) => {
            format!("the server closed the connection before answering the WebSocket upgrade: {}", not_a_websocket_port(options))
        }
        ConnectionError::Websocket(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HttparseError(_))) => {
            format!("the server's answer to the WebSocket upgrade is not HTTP: {}", not_a_websocket_port(options))
        }
        ConnectionError::Websocket(other) => other.to_string(),
        ConnectionError::FlushTimeout => "writing to the server timed out: the network or the server stopped taking data".into(),
        other => other.to_string(),
    }
}

/// The server answered CONNECT with HTTP: `mqtt://` or `mqtts://` pointed at a WebSocket port.
/// None of its bytes are shown past "HTTP/": an echoing server sends back our CONNECT.
fn http_answer(options: &ClientOptions) -> PubSubError {
    let endpoint = &options.endpoint;
    let advice = match endpoint.scheme {
        Scheme::Mqtt | Scheme::Mqtts => format!(
            "it is probably a WebSocket port; use {} (with the path the server takes MQTT on, /mqtt on most brokers)",
            over_websocket(endpoint)
        ),
        Scheme::Ws | Scheme::Wss => "is it an MQTT broker?".into(),
    };
    PubSubError::Connection(redact(&format!("{} answered CONNECT with HTTP ('HTTP/…'), not MQTT: {advice}", endpoint.shown())))
}

/// Turns rumqttc's error into one a user can act on: a connection attempt that `failed`, or a
/// connection that `was lost` (`stage`). No message shows a signature, a key id or a token.
fn describe(error: ConnectionError, options: &ClientOptions, stage: Stage) -> PubSubError {
    let url = options.endpoint.shown();
    let outcome = match stage {
        Stage::Connecting => "failed",
        Stage::Connected => "was lost",
    };
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
                (404, _) => {
                    let path = url::Url::parse(&options.endpoint.url).map(|url| url.path().to_string()).unwrap_or_default();
                    let usual = if path == "/mqtt" { "" } else { " ('/mqtt' on most brokers)" };
                    PubSubError::Connection(format!("Cannot connect: {detail}: the server takes MQTT over WebSocket on another path{usual}"))
                }
                _ => PubSubError::Connection(format!("Cannot connect: {detail}")),
            }
        }
        // tungstenite's own message is "Attack attempt detected".
        ConnectionError::Websocket(tungstenite::Error::AttackAttempt) => PubSubError::Connection(format!(
            "Connection to {url} {outcome}: the server's answer to the WebSocket upgrade was over 64 KiB or came in too \
             many small pieces (limits of the WebSocket library against a hostile server)"
        )),
        ConnectionError::NetworkTimeout => options.connect_timeout_error(),
        // rumqttc's own message prints the packet, and an echoing server sends back our CONNECT
        // with its password.
        ConnectionError::NotConnAck(packet) => PubSubError::Connection(format!(
            "{url} answered CONNECT with a {} packet instead of CONNACK: is it an MQTT 3.1.1 broker?",
            packet_name(&packet)
        )),
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::HttpAnswer)) if stage == Stage::Connecting => {
            http_answer(options)
        }
        other => {
            let tls_error = rustls_error(&other);
            // Like a refused password: connecting again cannot help.
            let identity_refused = tls_error.and_then(|alert| tls::client_certificate_refused(alert, options.identity.is_some()));
            match (tls_error, identity_refused) {
                (Some(refused @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)), _) => {
                    PubSubError::Untrusted(redact(&format!(
                        "Connection to {url} {outcome}: {}",
                        tls::refused_certificate(refused, &options.endpoint.host, options.ca.is_some())
                    )))
                }
                (_, Some(why)) => PubSubError::NotAuthorized(redact(&format!("{url} {why}"))),
                _ => PubSubError::Connection(redact(&format!("Connection to {url} {outcome}: {}", reason(&other, options, stage)))),
            }
        }
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

    fn on(endpoint: &str) -> ClientOptions {
        ClientOptions::from_js(&json!({ "endpoint": endpoint }), Provider::Mqtt, false).unwrap()
    }

    fn io(kind: ErrorKind, text: &str) -> std::io::Error {
        std::io::Error::new(kind, text.to_string())
    }

    #[test]
    fn a_lost_connection_was_lost_and_a_failed_attempt_failed_in_words() {
        let options = on("ws://127.0.0.1:9001/mqtt");
        let closed = describe(ConnectionError::MqttState(StateError::ConnectionAborted), &options, Stage::Connected);
        assert_eq!(closed.to_string(), "Connection to ws://127.0.0.1:9001/mqtt was lost: the server closed the connection");
        let reset = ConnectionError::MqttState(StateError::Io(io(ErrorKind::ConnectionReset, "Connection reset by peer (os error 104)")));
        assert_eq!(
            describe(reset, &options, Stage::Connected).to_string(),
            "Connection to ws://127.0.0.1:9001/mqtt was lost: the server or the network reset it (Connection reset by peer (os error 104))"
        );
        let refused = ConnectionError::Io(io(ErrorKind::ConnectionRefused, "Connection refused (os error 111)"));
        assert_eq!(
            describe(refused, &options, Stage::Connecting).to_string(),
            "Connection to ws://127.0.0.1:9001/mqtt failed: nothing accepts connections on 127.0.0.1:9001 (Connection refused (os error \
             111)): is the broker running, and listening on that port?"
        );
        let pipe = ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io(ErrorKind::BrokenPipe, "Broken pipe (os error 32)"))));
        let message = describe(pipe, &options, Stage::Connected).to_string();
        assert!(message.starts_with("Connection to ws://127.0.0.1:9001/mqtt was lost: the connection broke while this client was sending (Broken pipe (os error 32))"), "{message}");
        let timed_out = ConnectionError::Io(io(ErrorKind::TimedOut, "Connection timed out (os error 110)"));
        assert!(describe(timed_out, &options, Stage::Connecting).to_string().contains("failed: the network timed out (Connection timed out (os error 110))"));
        // ws_stream_tungstenite says no more than "other error" when tungstenite refuses to send.
        let refused_send = ConnectionError::MqttState(StateError::Io(std::io::Error::from(ErrorKind::Other)));
        assert_eq!(
            describe(refused_send, &options, Stage::Connected).to_string(),
            "Connection to ws://127.0.0.1:9001/mqtt was lost: the server closed the WebSocket while this client was sending"
        );
        let closed_websocket = ConnectionError::MqttState(StateError::Io(std::io::Error::from(ErrorKind::NotConnected)));
        assert_eq!(describe(closed_websocket, &options, Stage::Connected).to_string(), "Connection to ws://127.0.0.1:9001/mqtt was lost: the server closed the WebSocket");
        let flush = describe(ConnectionError::FlushTimeout, &options, Stage::Connected).to_string();
        assert!(flush.contains("was lost: writing to the server timed out"), "{flush}");
        for message in [closed.to_string(), flush] {
            assert!(!message.contains("Mqtt state") && !message.contains("I/O:") && !message.contains("Websocket:"), "{message}");
        }
    }

    #[test]
    fn an_http_answer_to_connect_says_to_use_websocket() {
        for (endpoint, use_instead) in [("mqtt://127.0.0.1:9001", "use ws://127.0.0.1:9001/mqtt"), ("mqtts://[::1]:8081", "use wss://[::1]:8081/mqtt")] {
            let http = ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::HttpAnswer));
            let error = describe_connect_failure(http, &on(endpoint), None);
            assert_eq!(error.code(), "ERR_CONNECTION");
            let message = error.to_string();
            assert!(message.starts_with(&format!("{endpoint} answered CONNECT with HTTP ('HTTP/…'), not MQTT: it is probably a WebSocket port; {use_instead}")), "{message}");
        }
    }

    #[test]
    fn a_reset_after_connect_on_mqtt_suggests_a_tls_port() {
        let reset = ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(io(ErrorKind::ConnectionReset, "Connection reset by peer (os error 104)"))));
        assert_eq!(
            describe_connect_failure(reset, &on("mqtt://127.0.0.1:8883"), None).to_string(),
            "mqtt://127.0.0.1:8883 reset the connection after CONNECT, without a CONNACK (Connection reset by peer (os error 104)): a TLS \
             port does this to plain MQTT; if it is one, use mqtts://127.0.0.1:8883"
        );
        let closed = describe_connect_failure(ConnectionError::MqttState(StateError::ConnectionAborted), &on("mqtt://127.0.0.1:1883"), None);
        assert_eq!(closed.to_string(), "mqtt://127.0.0.1:1883 closed the connection after CONNECT without a CONNACK");
        // A TLS connection closed without close_notify is closed: rustls's text is not shown.
        let tls_eof = io(ErrorKind::UnexpectedEof, "peer closed connection without sending TLS close_notify: https://docs.rs/rustls/");
        let closed = describe_connect_failure(ConnectionError::MqttState(StateError::Io(tls_eof)), &on("mqtts://127.0.0.1:8883"), None);
        assert_eq!(closed.to_string(), "mqtts://127.0.0.1:8883 closed the connection after CONNECT without a CONNACK");
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
        let closed = || ConnectionError::MqttState(StateError::ConnectionAborted);
        assert_eq!(describe_connect_failure(closed(), &options(Provider::Iot), None).code(), "ERR_NOT_AUTHORIZED");
        // Also to the generic provider on an AWS IoT host (X.509 devices on port 8883).
        let mut x509 = on("mqtts://a1-ats.iot.eu-west-1.amazonaws.com:8883");
        x509.identity = Some(tls::ClientIdentity { cert_pem: String::new(), key_pem: String::new() });
        let refused = describe_connect_failure(closed(), &x509, None);
        assert_eq!(refused.code(), "ERR_NOT_AUTHORIZED");
        assert!(
            refused.to_string().contains("the policy attached to this client certificate allows iot:Connect on arn:aws:iot:eu-west-1:<account-id>:client/"),
            "{refused}"
        );
    }
}
