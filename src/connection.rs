//! The connection task: one per instance, on the shared tokio runtime. It owns rumqttc's
//! EventLoop, connects when there is work, feeds acks to the outbox and messages to delivery,
//! and disconnects when the last observer has left and nothing is pending.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, Event, EventLoop, Packet};

use crate::client::{Core, Shared, MAX_BACKLOG};
use crate::delivery::Event as JsEvent;
use crate::errors::PubSubError;
use crate::options::ClientOptions;
use crate::outbox::Completion;
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

/// How long a goodbye (DISCONNECT) may take before the socket is simply dropped.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
/// Backlog size below which JS may publish again after being told to wait.
const WRITABLE_BELOW: usize = MAX_BACKLOG / 2;

enum End {
    Closed,
    Idle,
    Lost(PubSubError),
}

pub async fn run(shared: Arc<Shared>, mut eventloop: EventLoop) {
    while wait_for_work(&shared).await {
        if let Err(error) = connect(&shared, &mut eventloop).await {
            let mut core = shared.core.lock();
            forget_queued_requests(&mut eventloop);
            shared.fail_everything(&mut core, error);
            shared.set_state(&mut core, ConnectionState::Disconnected);
            continue;
        }
        match serve(&shared, &mut eventloop).await {
            End::Closed => break,
            End::Idle => {
                say_goodbye(&mut eventloop).await;
                let mut core = shared.core.lock();
                shared.set_state(&mut core, ConnectionState::Disconnected);
            }
            End::Lost(error) => {
                let mut core = shared.core.lock();
                forget_queued_requests(&mut eventloop);
                shared.fail_everything(&mut core, error);
                shared.set_state(&mut core, ConnectionState::Disconnected);
            }
        }
    }
    // Closed: everything pending was settled by `close()`; leave politely and say so.
    say_goodbye(&mut eventloop).await;
    let mut core = shared.core.lock();
    forget_queued_requests(&mut eventloop);
    shared.set_state(&mut core, ConnectionState::Disconnected);
    shared.delivery.push(JsEvent::Closed);
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

async fn connect(shared: &Shared, eventloop: &mut EventLoop) -> Result<(), PubSubError> {
    shared.set_state(&mut shared.core.lock(), ConnectionState::Connecting);
    tokio::select! {
        _ = until_closed(shared) => Err(PubSubError::Closed),
        outcome = attempt(shared, eventloop) => outcome,
    }
}

/// One connection attempt: credentials and a fresh signature first for AWS IoT, then the
/// transport and CONNECT/CONNACK, each within `connectTimeout`.
async fn attempt(shared: &Shared, eventloop: &mut EventLoop) -> Result<(), PubSubError> {
    let timeout = shared.options.connect_timeout;
    if let Some(aws) = &shared.aws {
        let credentials = aws.credentials.fetch(&shared.delivery, timeout).await?;
        aws.presigner.use_credentials(credentials);
    }
    match tokio::time::timeout(timeout, eventloop.poll()).await {
        Err(_elapsed) => Err(PubSubError::ConnectTimeout(timeout)),
        Ok(Err(error)) => match shared.aws.as_ref().and_then(|aws| aws.presigner.take_failure()) {
            Some(signing_failure) => Err(signing_failure),
            None => Err(describe_connect_failure(error, &shared.options)),
        },
        Ok(Ok(_connack)) => {
            shared.set_state(&mut shared.core.lock(), ConnectionState::Connected);
            Ok(())
        }
    }
}

async fn serve(shared: &Shared, eventloop: &mut EventLoop) -> End {
    loop {
        if let Some(end) = housekeeping(shared, &mut shared.core.lock()) {
            return end;
        }
        let event = tokio::select! {
            biased;
            // Close, or the last observer left: look again at the top of the loop.
            _ = shared.attention.notified() => continue,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let observers = shared.core.lock().subs.route(&publish.topic);
                if observers.is_empty() {
                    continue;
                }
                let message = JsEvent::Message {
                    observers,
                    topic: publish.topic,
                    payload: Vec::from(publish.payload),
                    qos: publish.qos,
                    retain: publish.retain,
                    dup: publish.dup,
                };
                // Waits while JS is behind: the socket is not read meanwhile.
                shared.delivery.push_message(message).await;
            }
            Ok(Event::Incoming(packet)) => {
                let mut core = shared.core.lock();
                for completion in core.outbox.on_incoming(&packet) {
                    complete(shared, &mut core, completion);
                }
            }
            Ok(Event::Outgoing(outgoing)) => {
                let mut core = shared.core.lock();
                if let Some(completion) = core.outbox.on_outgoing(&outgoing) {
                    complete(shared, &mut core, completion);
                }
            }
            Err(error) => return End::Lost(describe(error, &shared.options)),
        }
    }
}

/// Between events: refill rumqttc's channel, tell JS when it may publish again, and decide
/// whether the connection should end.
fn housekeeping(shared: &Shared, core: &mut Core) -> Option<End> {
    if core.closed {
        return Some(End::Closed);
    }
    core.outbox.pump(&shared.requests);
    if core.writable_wanted && core.outbox.backlog_len() < WRITABLE_BELOW {
        core.writable_wanted = false;
        shared.delivery.push(JsEvent::Writable);
    }
    if core.state == ConnectionState::ConnectedPendingDisconnect && core.outbox.is_idle() && !core.subs.has_observers() {
        return Some(End::Idle);
    }
    None
}

fn complete(shared: &Shared, core: &mut Core, completion: Completion) {
    match completion {
        Completion::Published(op) => shared.delivery.push(JsEvent::Published { op, error: None }),
        Completion::Subscribed(filter, granted) => {
            for (observer, result) in core.subs.on_suback(&filter, granted) {
                shared.delivery.push(JsEvent::Subscribed { observer, error: result.err() });
            }
        }
    }
}

/// Sends DISCONNECT if connected, then drops the socket. Requests still in rumqttc's channel
/// stay there for the next connection.
async fn say_goodbye(eventloop: &mut EventLoop) {
    if let Some(network) = eventloop.network.as_mut() {
        let _ = tokio::time::timeout(DISCONNECT_GRACE, async {
            network.write(Packet::Disconnect).await?;
            network.flush().await
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
    eventloop.clean();
    eventloop.pending.clear();
}

/// A failure before CONNACK. MQTT-level errors here mean the transport was up and the server
/// closed or reset it after our CONNECT: how AWS IoT refuses a client its policy does not allow.
fn describe_connect_failure(error: ConnectionError, options: &ClientOptions) -> PubSubError {
    match (&error, &options.aws) {
        (ConnectionError::MqttState(_), Some(aws)) => {
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
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
                PubSubError::ConnectRefused("CONNACK 'server unavailable'".into())
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
        ConnectionError::NetworkTimeout => PubSubError::ConnectTimeout(options.connect_timeout),
        ConnectionError::Io(e) => PubSubError::Connection(redact(&format!("Connection to {url} failed: {e}"))),
        other => PubSubError::Connection(redact(&format!("Connection to {url} failed: {other}"))),
    }
}
