//! Every failure the product reports, with its stable `code`. This is the one place where a
//! Rust error becomes something JavaScript sees: synchronous throws go through [`to_napi`];
//! asynchronous failures travel as `{ code, message }` in the event stream and JS builds the
//! `Error` from exactly these two strings.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubError {
    /// An option is missing, of the wrong type or out of range.
    InvalidOption(String),
    /// The endpoint URL cannot be used.
    InvalidEndpoint(String),
    /// A topic name or topic filter breaks the MQTT rules.
    InvalidTopic(String),
    /// A payload that cannot be sent (too large), or a publish the broker dropped the
    /// connection for each time it arrived.
    Payload(String),
    /// The broker refused the connection for a reason other than authorisation.
    ConnectRefused(String),
    /// The broker (or gateway) refused our credentials or identity.
    NotAuthorized(String),
    /// AWS credentials are missing, malformed or expired, and asking again cannot help.
    Credentials(String),
    /// AWS credentials could not be fetched (the credentials function failed or did not settle,
    /// the default chain failed or found none, or they came back expired): asking again may work.
    CredentialsUnavailable(String),
    /// No CONNACK `after` connectTimeout; `proxy`: the proxy the connection went through, shown.
    ConnectTimeout { after: Duration, proxy: Option<String> },
    /// The transport failed: DNS, TCP, TLS, WebSocket, or the connection dropped.
    Connection(String),
    /// The server's TLS certificate is not one we trust: a connection failure that retrying
    /// cannot heal.
    Untrusted(String),
    /// The broker answered SUBACK with a failure for this filter (`PubSubError::subscribe_refused_by_suback`),
    /// or dropped the connection each time its SUBSCRIBE arrived.
    SubscribeRefused(String),
    /// The offline queue is full: the publish was not queued.
    QueueFull(String),
    /// The broker keeps closing our connections soon after accepting them: most likely
    /// another client connects with the same client id.
    ClientIdTakeover(String),
    /// The instance was closed.
    Closed,
}

impl PubSubError {
    /// The broker answered SUBACK with a failure for `filter`.
    pub fn subscribe_refused_by_suback(filter: &str) -> Self {
        Self::SubscribeRefused(format!(
            "The broker refused the subscription to '{filter}' (SUBACK failure); check the filter and the broker's access rules"
        ))
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidOption(_) => "ERR_INVALID_OPTION",
            Self::InvalidEndpoint(_) => "ERR_INVALID_ENDPOINT",
            Self::InvalidTopic(_) => "ERR_INVALID_TOPIC",
            Self::Payload(_) => "ERR_PAYLOAD",
            Self::ConnectRefused(_) => "ERR_CONNECT_REFUSED",
            Self::NotAuthorized(_) => "ERR_NOT_AUTHORIZED",
            Self::Credentials(_) | Self::CredentialsUnavailable(_) => "ERR_CREDENTIALS",
            Self::ConnectTimeout { .. } => "ERR_CONNECT_TIMEOUT",
            Self::Connection(_) | Self::Untrusted(_) => "ERR_CONNECTION",
            Self::SubscribeRefused(_) => "ERR_SUBSCRIBE_REFUSED",
            Self::QueueFull(_) => "ERR_QUEUE_FULL",
            Self::ClientIdTakeover(_) => "ERR_CLIENT_ID_TAKEOVER",
            Self::Closed => "ERR_CLOSED",
        }
    }

    /// Whether trying again cannot help: reconnecting stops and everything pending fails.
    /// Unreachable brokers, timeouts and dropped connections heal; refusals do not. Credentials
    /// that could not be fetched heal too once the instance has connected (`has_connected`):
    /// the outage that cut the connection often cuts the credential source as well. Before
    /// that, a misconfiguration is the likelier cause, so it is reported at once.
    pub fn is_permanent(&self, has_connected: bool) -> bool {
        match self {
            Self::Connection(_) | Self::ConnectTimeout { .. } => false,
            Self::CredentialsUnavailable(_) => !has_connected,
            _ => true,
        }
    }

    /// The error as a JS exception with `err.code` set.
    pub fn to_napi(&self) -> napi::Error<ErrorCode> {
        napi::Error::new(self.code(), self.to_string())
    }
}

impl fmt::Display for PubSubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOption(m)
            | Self::InvalidEndpoint(m)
            | Self::InvalidTopic(m)
            | Self::Payload(m)
            | Self::Credentials(m)
            | Self::CredentialsUnavailable(m)
            | Self::QueueFull(m)
            | Self::SubscribeRefused(m)
            | Self::ClientIdTakeover(m)
            | Self::Connection(m)
            | Self::Untrusted(m) => f.write_str(m),
            Self::ConnectRefused(m) => write!(f, "The broker refused the connection: {m}"),
            Self::NotAuthorized(m) => write!(f, "Not authorized: {m}"),
            Self::ConnectTimeout { after, proxy } => {
                write!(f, "No CONNACK from the broker within {} ms (connectTimeout); check the endpoint and that the broker is reachable", after.as_millis())?;
                match proxy {
                    Some(proxy) => write!(f, " through the proxy {proxy}, and that the proxy answers"),
                    None => Ok(()),
                }
            }
            Self::Closed => f.write_str("The PubSub instance is closed"),
        }
    }
}

impl std::error::Error for PubSubError {}

pub type Result<T> = std::result::Result<T, PubSubError>;

/// The errors in `error`'s chain, outermost first: rumqttc, tungstenite and proxies wrap what
/// rustls and the socket said in I/O errors, whose `source()` does not lead to what they wrap.
pub fn causes<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| match error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
        None => error.source(),
    })
}

/// `text` for a message: its first `max_chars` characters and "…" when it is longer (a topic,
/// or a name from a certificate, may be long).
pub fn shortened(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The `code` of a JS exception thrown by a `#[napi]` export (`napi::Result<T, ErrorCode>`).
pub type ErrorCode = &'static str;

/// Turns our errors into coded JS exceptions in `lib.rs`.
pub fn js<T>(result: Result<T>) -> napi::Result<T, ErrorCode> {
    result.map_err(|e| e.to_napi())
}
