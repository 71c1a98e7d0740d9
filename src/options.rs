//! Constructor options: read from the JS object, checked, and turned into rumqttc's options.
//! Every mistake is reported here, synchronously, with the option's name in the message.

use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, Transport};
use serde_json::{Map, Value};
use url::Url;

use crate::aws_iot_limits::{self, QosOf};
use crate::credentials::{parse_credentials, CredentialsOption};
use crate::errors::{PubSubError, Result};
use crate::outbox::{Load, SubscribeLimit, MAX_SUBSCRIBE_BYTES};
use crate::proxy::{self, HttpProxy};
use crate::signing::redact;
use crate::tls;
use crate::topic::{unwelcome_char, validate_topic};

/// Largest MQTT packet (the protocol's own limit, 256 MiB − 1).
pub const MAX_PACKET_BYTES: usize = 268_435_455;
/// Largest MQTT packet received over WebSocket: tungstenite's frame limit, which the vendored
/// rumqttc keeps (see `websocket_config` there), and brokers send each packet as one frame.
pub const MAX_WEBSOCKET_PACKET_BYTES: usize = 16 << 20;
/// QoS 1/2 publishes awaiting their ack at once. rumqttc allocates one 64-byte slot per possible
/// packet id up front, for every connection: 32,767 would cost 2 MiB each; 1,024 costs 64 KiB and
/// still keeps loopback QoS 1 bursts from waiting on acks. More wait in the outbox's backlog.
/// AWS IoT takes fewer (`aws_iot_limits::MAX_INFLIGHT`).
const MAX_INFLIGHT: u16 = 1_024;

/// Options both providers take. The generic one accepts the region aliases too, unused, so
/// that Amplify setup code pasted as is keeps working.
const COMMON_OPTIONS: &[&str] = &[
    "endpoint",
    "aws_pubsub_endpoint",
    "region",
    "aws_pubsub_region",
    "clientId",
    "keepAlive",
    "connectTimeout",
    "cleanSession",
    "will",
    "ca",
    "reconnect",
    "offlineQueue",
    "proxy",
];
const MQTT_OPTIONS: &[&str] = &["username", "password", "cert", "key"];
const IOT_OPTIONS: &[&str] = &["credentials"];

/// Which of the two providers an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Any MQTT broker (`native-pubsub/mqtt`).
    Mqtt,
    /// AWS IoT Core, SigV4-signed (`native-pubsub`, `native-pubsub/iot`).
    Iot,
}

impl Provider {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "mqtt" => Ok(Self::Mqtt),
            "iot" => Ok(Self::Iot),
            other => Err(invalid(format!("Unknown provider '{other}'"))),
        }
    }

    /// The option names this provider's constructor accepts.
    pub fn known_options(self) -> Vec<&'static str> {
        let own = match self {
            Self::Mqtt => MQTT_OPTIONS,
            Self::Iot => IOT_OPTIONS,
        };
        COMMON_OPTIONS.iter().chain(own).copied().collect()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Mqtt => "generic MQTT provider",
            Self::Iot => "AWS IoT provider",
        }
    }
}

/// Automatic reconnection: exponential backoff with full jitter between `min_delay` and a cap
/// that doubles per failed attempt up to `max_delay`; the attempt count starts again once a
/// connection has lasted `reset_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub reset_after: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { min_delay: Duration::from_secs(1), max_delay: Duration::from_secs(120), reset_after: Duration::from_secs(30) }
    }
}

/// Which publishes wait for the connection to come back (aws-crt's offline queue policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflinePolicy {
    /// Every publish waits.
    All,
    /// QoS 1 and 2 wait; QoS 0 made while the connection is down is rejected.
    Qos1,
    /// Nothing waits: publishes made while the connection is down are rejected.
    None,
}

impl OfflinePolicy {
    /// Whether a publish at `qos` waits for the connection to come back.
    pub fn keeps(self, qos: QoS) -> bool {
        match self {
            Self::All => true,
            Self::Qos1 => qos != QoS::AtMostOnce,
            Self::None => false,
        }
    }

    /// What the policy keeps, for the message of a publish it refused.
    pub fn describe(self) -> &'static str {
        match self {
            Self::All => "offlineQueue 'all' keeps every publish",
            Self::Qos1 => "offlineQueue 'qos1' keeps only QoS 1 and 2 publishes",
            Self::None => "offlineQueue 'none' keeps nothing",
        }
    }
}

/// The bounded queue of publishes waiting while the connection is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineQueue {
    pub policy: OfflinePolicy,
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl OfflineQueue {
    /// The most that may wait: `maxMessages` publish packets, `maxBytes` bytes.
    pub fn bounds(&self) -> Load {
        Load { operations: self.max_messages, bytes: self.max_bytes }
    }

    /// ERR_QUEUE_FULL for a publish turned away while `waiting` waits.
    /// `written`: the publish was written on the connection that was lost, and is not sent again.
    pub fn full(&self, waiting: Load, written: bool) -> PubSubError {
        let outcome = match written {
            true => "not sent again (it was written before the connection was lost, and not acknowledged: the broker may have it)",
            false => "not published",
        };
        PubSubError::QueueFull(format!(
            "The offline queue is full ({} messages, {} bytes waiting; offlineQueue.maxMessages {}, maxBytes {}): {outcome}",
            waiting.operations, waiting.bytes, self.max_messages, self.max_bytes
        ))
    }
}

impl Default for OfflineQueue {
    fn default() -> Self {
        Self { policy: OfflinePolicy::Qos1, max_messages: 65_536, max_bytes: 64 * 1024 * 1024 }
    }
}

/// What signing an AWS IoT connection needs.
#[derive(Debug, Clone)]
pub struct AwsIot {
    pub region: String,
    pub credentials: CredentialsOption,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
    Mqtt,
    Mqtts,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// The URL as given (normalised), used whole for WebSocket connections.
    pub url: String,
}

impl Endpoint {
    /// Whether the connection is MQTT over WebSocket (`ws://`, `wss://`).
    pub fn is_websocket(&self) -> bool {
        matches!(self.scheme, Scheme::Ws | Scheme::Wss)
    }

    /// The URL as messages may show it (`shown_url`).
    pub fn shown(&self) -> String {
        shown_url(&self.url)
    }
}

#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub endpoint: Endpoint,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub clean_session: bool,
    pub will: Option<Will>,
    /// Extra trusted CA certificates (PEM) for wss:// and mqtts://.
    pub ca: Option<String>,
    /// A client certificate and key for mutual TLS (generic provider, wss:// and mqtts://).
    pub identity: Option<tls::ClientIdentity>,
    /// Set for the AWS IoT provider.
    pub aws: Option<AwsIot>,
    /// The broker is AWS IoT Core (the IoT provider, or the generic one on an AWS IoT host, as
    /// with client certificates on port 8883): its fixed limits are checked before sending.
    pub aws_iot_broker: bool,
    /// `None`: `reconnect: false`, a lost connection fails what is pending.
    pub reconnect: Option<Reconnect>,
    pub offline_queue: OfflineQueue,
    /// Connect through this HTTP proxy.
    pub proxy: Option<HttpProxy>,
}

fn invalid(msg: String) -> PubSubError {
    PubSubError::InvalidOption(msg)
}

/// One object of options; `prefix` names nested ones in messages (`will.`).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl Fields<'_> {
    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(format!("Option '{}{key}' must be a string, got {}", self.prefix, type_name(other)))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(invalid(format!("Option '{}{key}' must be a boolean, got {}", self.prefix, type_name(other)))),
        }
    }

    fn number(&self, key: &str, min: f64, max: f64, unit: &str) -> Result<Option<f64>> {
        let prefix = self.prefix;
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v >= min && v <= max => Ok(Some(v)),
                _ => Err(invalid(format!("Option '{prefix}{key}' must be between {min} and {max} {unit}, got {n}"))),
            },
            Some(other) => Err(invalid(format!("Option '{prefix}{key}' must be a number of {unit}, got {}", type_name(other)))),
        }
    }

    /// A number that must be whole (a count, or MQTT's whole seconds): 2.5 messages would
    /// otherwise be cut to 2 without a word.
    fn whole_number(&self, key: &str, min: f64, max: f64, unit: &str) -> Result<Option<f64>> {
        match self.number(key, min, max, unit)? {
            Some(v) if v.fract() != 0.0 => Err(invalid(format!("Option '{}{key}' must be a whole number of {unit}, got {v}", self.prefix))),
            whole => Ok(whole),
        }
    }

    fn qos(&self, key: &str) -> Result<Option<QoS>> {
        match self.number(key, 0.0, 2.0, "(0, 1 or 2)")? {
            None => Ok(None),
            Some(v) if v.fract() == 0.0 => parse_qos(v as u32).map(Some),
            Some(v) => Err(invalid(format!("Option '{}{key}' must be 0, 1 or 2, got {v}", self.prefix))),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn parse_qos(value: u32) -> Result<QoS> {
    match value {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        other => Err(invalid(format!("qos must be 0, 1 or 2, got {other}"))),
    }
}

/// The query parameters of a SigV4 presigned URL, which signing adds to the endpoint's query.
const SIGV4_QUERY_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// What an unknown option probably meant, in parentheses: another spelling of a known one, or
/// MQTT.js's or aws-crt's name for something this API takes otherwise.
fn unknown_option_hint(unknown: &str, known: &[&str]) -> String {
    // Also aws-crt's snake_case: client_id, clean_session.
    let unsnaked = unknown.replace('_', "");
    if let Some(option) = known.iter().find(|option| option.eq_ignore_ascii_case(&unsnaked)) {
        return format!(" (did you mean '{option}'?)");
    }
    let instead = match unknown {
        "keep_alive_secs" => "aws-crt's; here 'keepAlive', in seconds",
        "reconnect_min_sec" | "reconnect_max_sec" => "aws-crt's; here 'reconnect': { minDelayMs, maxDelayMs }, or false",
        "host_name" => "aws-crt's; give the whole URL as 'endpoint', e.g. 'wss://<prefix>-ats.iot.<region>.amazonaws.com/mqtt'",
        "clean" => "MQTT.js's name for 'cleanSession'",
        "reconnectPeriod" => "MQTT.js's; here 'reconnect': { minDelayMs, maxDelayMs }, or false",
        "rejectUnauthorized" => "TLS is always verified here: pass a private CA as 'ca'",
        "protocolVersion" | "protocolId" | "properties" => "this client speaks MQTT 3.1.1 only",
        "host" | "hostname" | "port" | "protocol" | "path" | "servers" => "give the whole URL as 'endpoint', e.g. 'mqtt://broker.example.com:1883'",
        _ => return String::new(),
    };
    format!(" ({instead})")
}

/// `raw` refused for `why`, shown without its `user:password@` part or presigned secrets.
fn invalid_endpoint(raw: &str, why: &str) -> PubSubError {
    PubSubError::InvalidEndpoint(format!("Invalid endpoint '{}': {why}", shown_url(raw)))
}

/// Parses `ws://`, `wss://`, `mqtt://` and `mqtts://` endpoints, and the names MQTT.js also
/// takes for the last two: `tcp://`, and `ssl://` or `tls://`.
pub fn parse_endpoint(raw: &str) -> Result<Endpoint> {
    let bad = |why: &str| invalid_endpoint(raw, why);
    if raw.trim().is_empty() {
        return Err(bad(&format!("it is empty; give the broker's URL, e.g. {EXAMPLE_URLS}")));
    }
    if let Some(placeholder) = placeholder(raw) {
        return Err(bad(&format!("'{placeholder}' is a placeholder (from an example or the docs): replace it with your own value")));
    }
    let url = match Url::parse(raw) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => return Err(bad(&no_scheme(raw))),
        Err(e) => return Err(bad(&e.to_string())),
    };
    let scheme = match url.scheme() {
        "ws" => Scheme::Ws,
        "wss" => Scheme::Wss,
        "mqtt" | "tcp" => Scheme::Mqtt,
        "mqtts" | "ssl" | "tls" => Scheme::Mqtts,
        // `localhost:1883` parses as the scheme `localhost:`.
        _ if !raw.contains("://") && raw.split_once(':').is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit())) => {
            return Err(bad(&no_scheme(raw)))
        }
        other => return Err(bad(&format!("unsupported scheme '{other}:'; use ws://, wss://, mqtt:// or mqtts://"))),
    };
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err(bad("no host")),
    };
    let port = url.port_or_known_default().unwrap_or(match scheme {
        Scheme::Mqtt => 1883,
        Scheme::Mqtts => 8883,
        Scheme::Ws => 80,
        Scheme::Wss => 443,
    });
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not supported; use the username and password options"));
    }
    Ok(Endpoint { scheme, host, port, url: url.to_string() })
}

/// Endpoints of both kinds, for messages.
const EXAMPLE_URLS: &str = "'mqtt://broker.example.com:1883' (MQTT over TCP; mqtts:// with TLS) or 'wss://broker.example.com/mqtt' \
     (MQTT over WebSocket with TLS; ws:// without)";

/// Why an endpoint without `scheme://` is refused: the same host and port with each scheme,
/// when it looks like a host (and port), or examples.
fn no_scheme(raw: &str) -> String {
    let shown = shown_url(raw.trim());
    let host_like = shown.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:[]/*@%".contains(c));
    if !host_like {
        return format!("it is not a URL; give the broker's URL with its scheme, e.g. {EXAMPLE_URLS}");
    }
    let (authority, path) = match shown.find('/') {
        Some(slash) => (&shown[..slash], &shown[slash..]),
        None => (shown.as_str(), "/mqtt"),
    };
    format!(
        "it has no scheme; add one, e.g. 'mqtt://{authority}' (MQTT over TCP; mqtts:// with TLS) or 'ws://{authority}{path}' \
         (MQTT over WebSocket; wss:// with TLS)"
    )
}

/// A documentation placeholder left in the endpoint: `<YOUR-AWS-REGION>`, `{endpoint}`. Looked
/// for in the URL as it may be shown, so that a `user:password@` part is never quoted.
fn placeholder(raw: &str) -> Option<String> {
    let shown = shown_url(raw);
    for (open, close) in [('<', '>'), ('{', '}')] {
        if let Some(start) = shown.find(open) {
            let end = shown[start..].find(close).map_or(shown.len(), |end| start + end + 1);
            return Some(shown[start..end].chars().take(60).collect());
        }
    }
    None
}

/// Query parameters whose values a message may show: they name things and hold no secret.
const SHOWN_QUERY_PARAMS: &[&str] = &["x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-signedheaders", "x-amz-customauthorizer-name"];

/// An endpoint as messages may show it: no `user:password@` part, and no query value but those
/// of `SHOWN_QUERY_PARAMS`. A broker may take a token, a password or a signature in the query
/// under any name (a custom authorizer's token key is the user's choice).
pub fn shown_url(raw: &str) -> String {
    let url = without_userinfo(raw);
    let Some(start) = url.find('?') else {
        return redact(&url);
    };
    let end = url[start..].find('#').map_or(url.len(), |i| start + i);
    let query: Vec<String> = url[start + 1..end]
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SHOWN_QUERY_PARAMS.iter().any(|shown| shown.eq_ignore_ascii_case(name)) => pair.to_string(),
            Some((name, _)) => format!("{name}=***"),
            None if pair.is_empty() => String::new(),
            None => "***".to_string(),
        })
        .collect();
    redact(&format!("{}?{}{}", &url[..start], query.join("&"), &url[end..]))
}

/// The URL as it may be shown: a `user:password@` part is replaced, never echoed. Everything
/// up to the last `@` goes, not only up to the first `/`, `?` or `#` (where URL parsing ends the
/// authority): a password holding one of those unencoded is a mistake, but still a password.
/// An `@` in a path or query hides more than needed, never less. Without a scheme (AWS IoT
/// takes a bare host) the authority starts at the beginning.
fn without_userinfo(raw: &str) -> String {
    let authority_start = raw.find("://").map_or(0, |i| i + 3);
    match raw[authority_start..].rfind('@') {
        Some(at) => format!("{}***@{}", &raw[..authority_start], &raw[authority_start + at + 1..]),
        None => raw.to_string(),
    }
}

fn parse_reconnect(value: Option<&Value>) -> Result<Option<Reconnect>> {
    let map = match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => return Ok(Some(Reconnect::default())),
        Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(invalid(format!("Option 'reconnect' must be false or {{ minDelayMs, maxDelayMs, resetAfterMs }}, got {}", type_name(other))))
        }
    };
    let fields = Fields { map, prefix: "reconnect." };
    if let Some(unknown) = map.keys().find(|k| !["minDelayMs", "maxDelayMs", "resetAfterMs"].contains(&k.as_str())) {
        return Err(invalid(format!("Unknown option 'reconnect.{unknown}'; known are minDelayMs, maxDelayMs, resetAfterMs")));
    }
    let defaults = Reconnect::default();
    let ms = |key: &str, default: Duration| -> Result<Duration> {
        Ok(fields.number(key, 1.0, 86_400_000.0, "milliseconds")?.map_or(default, |v| Duration::from_millis(v as u64)))
    };
    let reconnect = Reconnect {
        min_delay: ms("minDelayMs", defaults.min_delay)?,
        max_delay: ms("maxDelayMs", defaults.max_delay)?,
        reset_after: ms("resetAfterMs", defaults.reset_after)?,
    };
    if reconnect.min_delay > reconnect.max_delay {
        return Err(invalid("Option 'reconnect.minDelayMs' must not exceed 'reconnect.maxDelayMs'".into()));
    }
    Ok(Some(reconnect))
}

fn parse_offline_policy(name: &str) -> Result<OfflinePolicy> {
    match name {
        "all" => Ok(OfflinePolicy::All),
        "qos1" => Ok(OfflinePolicy::Qos1),
        "none" => Ok(OfflinePolicy::None),
        other => Err(invalid(format!("Option 'offlineQueue' policy must be 'all', 'qos1' or 'none', got '{other}'"))),
    }
}

fn parse_offline_queue(value: Option<&Value>) -> Result<OfflineQueue> {
    let defaults = OfflineQueue::default();
    let map = match value {
        None | Some(Value::Null) => return Ok(defaults),
        Some(Value::String(policy)) => return Ok(OfflineQueue { policy: parse_offline_policy(policy)?, ..defaults }),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(invalid(format!(
                "Option 'offlineQueue' must be 'all', 'qos1', 'none' or {{ policy, maxMessages, maxBytes }}, got {}",
                type_name(other)
            )))
        }
    };
    let fields = Fields { map, prefix: "offlineQueue." };
    if let Some(unknown) = map.keys().find(|k| !["policy", "maxMessages", "maxBytes"].contains(&k.as_str())) {
        return Err(invalid(format!("Unknown option 'offlineQueue.{unknown}'; known are policy, maxMessages, maxBytes")));
    }
    Ok(OfflineQueue {
        policy: fields.string("policy")?.as_deref().map_or(Ok(defaults.policy), parse_offline_policy)?,
        max_messages: fields.whole_number("maxMessages", 1.0, 100_000_000.0, "messages")?.map_or(defaults.max_messages, |v| v as usize),
        max_bytes: fields.whole_number("maxBytes", 1.0, 1e12, "bytes")?.map_or(defaults.max_bytes, |v| v as usize),
    })
}

/// An option MQTT carries as a UTF-8 string (the client id, the user name): without U+0000,
/// which MQTT forbids, nor a character it says strings should not hold, which brokers such as
/// mosquitto close the connection for before CONNACK (retried for ever). The value is not
/// echoed.
fn mqtt_string(name: &str, value: String) -> Result<String> {
    if value.contains('\0') {
        return Err(invalid(format!("Option '{name}' must not contain a NUL character (MQTT forbids it)")));
    }
    if let Some((c, what)) = unwelcome_char(&value) {
        let at = value.chars().position(|x| x == c).unwrap_or_default();
        return Err(invalid(format!(
            "Option '{name}' holds U+{:04X} ({what}) at character {at}, which MQTT says strings should not hold; brokers such as mosquitto close the connection for it. A value read from a file or an environment variable may end with a newline",
            c as u32
        )));
    }
    Ok(value)
}

/// The `cert` and `key` options (mutual TLS): both or neither, on a TLS endpoint.
fn parse_identity(fields: &Fields, endpoint: &Endpoint) -> Result<Option<tls::ClientIdentity>> {
    let (cert_pem, key_pem) = match (fields.string("cert")?, fields.string("key")?) {
        (None, None) => return Ok(None),
        (Some(cert_pem), Some(key_pem)) => (cert_pem, key_pem),
        (Some(_), None) => return Err(invalid("Option 'cert' needs 'key' too: the private key of the client certificate".into())),
        (None, Some(_)) => return Err(invalid("Option 'key' needs 'cert' too: the client certificate (chain) of that key".into())),
    };
    if !matches!(endpoint.scheme, Scheme::Wss | Scheme::Mqtts) {
        return Err(invalid(format!(
            "Options 'cert' and 'key' are a client certificate for TLS, and '{}' is not a TLS endpoint: use wss:// or mqtts://",
            endpoint.shown()
        )));
    }
    let identity = tls::ClientIdentity { cert_pem, key_pem };
    identity.check()?;
    Ok(Some(identity))
}

fn parse_will(value: &Value) -> Result<Option<Will>> {
    let map = match value {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        other => return Err(invalid(format!("Option 'will' must be an object, got {}", type_name(other)))),
    };
    let fields = Fields { map, prefix: "will." };
    let topic = fields.string("topic")?.ok_or_else(|| invalid("Option 'will.topic' is required".into()))?;
    validate_topic(&topic).map_err(|e| invalid(format!("Option 'will.topic': {e}")))?;
    let qos = fields.qos("qos")?.unwrap_or(QoS::AtMostOnce);
    let retain = fields.bool("retain")?.unwrap_or(false);
    Ok(Some(Will { topic, qos, retain }))
}

/// An AWS IoT endpoint: `wss://host/mqtt`, also accepted as the bare host that
/// `aws iot describe-endpoint` prints, or without the `/mqtt` path.
fn parse_iot_endpoint(raw: &str) -> Result<Endpoint> {
    // Pasted from a terminal or a file: the scheme is added below, so spaces around the host
    // would otherwise read as part of it ("invalid international domain name").
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("wss://{raw}") };
    let bad = |why: String| invalid_endpoint(raw, &why);
    // The Amplify docs' `wss://xxxxxxxxxxxxx-ats.iot.<YOUR-AWS-REGION>.amazonaws.com/mqtt`.
    let example_host = Url::parse(&with_scheme).ok().and_then(|url| url.host_str().map(str::to_owned)).filter(|host| {
        let first = host.split('.').next().unwrap_or_default();
        let prefix = first.strip_suffix("-ats").unwrap_or(first);
        prefix.len() >= 3 && prefix.bytes().all(|b| b == b'x')
    });
    if let Some(shown) = placeholder(raw).or(example_host) {
        return Err(bad(format!(
            "'{shown}' is a placeholder from an example: replace it with your account's endpoint, the host \
             `aws iot describe-endpoint --endpoint-type iot:Data-ATS` prints (e.g. 'a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com')"
        )));
    }
    // Two mistakes the generic messages would mislead on: the user name and password options
    // they point to do not exist here, and ws:// (which they list) is refused too.
    if let Ok(url) = Url::parse(&with_scheme) {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("AWS IoT takes no user name or password in the URL: its connections are signed with AWS \
                 credentials, from the 'credentials' option or the AWS default chain"
                .into()));
        }
        if let ("https" | "http", Some(host)) = (url.scheme(), url.host_str()) {
            let port = url.port().map_or_else(String::new, |p| format!(":{p}"));
            return Err(bad(format!(
                "AWS IoT takes MQTT over WebSockets, not {}://: use 'wss://{host}{port}/mqtt' (or just the host)",
                url.scheme()
            )));
        }
    }
    let mut endpoint = parse_endpoint(&with_scheme)?;
    if endpoint.scheme != Scheme::Wss {
        return Err(bad("AWS IoT takes MQTT over WebSockets at wss://<prefix>-ats.iot.<region>.amazonaws.com/mqtt \
             (for other brokers use require('native-pubsub/mqtt'))"
            .into()));
    }
    let mut url = Url::parse(&endpoint.url).map_err(|e| PubSubError::InvalidEndpoint(e.to_string()))?;
    if url.path() == "/" {
        url.set_path("/mqtt");
        endpoint.url = url.to_string();
    }
    // AWS IoT answers WebSocket upgrades on /mqtt only; anything else fails at every connect.
    if url.path() != "/mqtt" {
        return Err(bad(format!("AWS IoT takes MQTT over WebSockets at the path /mqtt only, not '{}'", url.path())));
    }
    // Its 8883 is MQTT over TLS without WebSockets: an upgrade there fails at every connect with
    // a TLS or protocol error that names neither the port nor the fix. Only AWS's own hosts are
    // checked: a gateway or proxy in front of it may listen anywhere.
    if let (Some(host), Some(port)) = (url.host_str(), url.port()) {
        if aws_domain(host).is_some() {
            return Err(bad(format!(
                "AWS IoT serves MQTT over WebSockets on port 443 only, not {port}: use 'wss://{host}/mqtt' (or just the host)"
            )));
        }
    }
    // A presigned URL pasted as the endpoint (from a browser's network panel, a log, an older
    // SDK): every connect adds its own signature, and AWS IoT refuses a query that carries two
    // of a parameter, so each connect would fail with a 403 that blames the keys or the clock.
    let mut presign_params: Vec<String> = Vec::new();
    for (name, _) in url.query_pairs() {
        if SIGV4_QUERY_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(&name)) && !presign_params.iter().any(|n| *n == name) {
            presign_params.push(name.into_owned());
        }
    }
    // The IoT provider signs every connect with SigV4; a custom authorizer's connection is not
    // signed, and AWS IoT refuses one that is both.
    if url.query_pairs().any(|(name, _)| name.eq_ignore_ascii_case("x-amz-customauthorizer-name")) {
        return Err(bad(
            "it names a custom authorizer (x-amz-customauthorizer-name), and this provider signs every connect with SigV4 \
             credentials: for a custom authorizer use the generic provider (import { PubSub } from 'native-pubsub/mqtt') \
             with this endpoint; see the README, 'AWS IoT custom authorizers'"
                .to_string(),
        ));
    }
    if !presign_params.is_empty() {
        let host = url.host_str().unwrap_or_default();
        let port = url.port().map_or_else(String::new, |p| format!(":{p}"));
        return Err(bad(format!(
            "it already carries a SigV4 signature ({}), as a presigned URL does: pass the URL without it \
             ('wss://{host}{port}/mqtt'); each connect is signed afresh with the credentials",
            presign_params.join(", ")
        )));
    }
    Ok(endpoint)
}

/// The region in an AWS host: `<prefix>-ats.iot.<region>.amazonaws.com`, also `.amazonaws.com.cn`
/// and VPC endpoint hosts (`….iot.<region>.vpce.amazonaws.com`).
pub fn region_from_host(host: &str) -> Option<String> {
    let rest = aws_domain(host)?;
    let labels: Vec<&str> = rest.split('.').collect();
    let after_iot = labels.iter().position(|l| *l == "iot").and_then(|i| labels.get(i + 1)).copied();
    let region = [after_iot, labels.last().copied()].into_iter().flatten().find(|l| looks_like_region(l));
    region.map(String::from)
}

/// Whether `host` is an AWS IoT Core data endpoint (`<prefix>-ats.iot.<region>.amazonaws.com`,
/// a VPC endpoint's `….iot.<region>.vpce.amazonaws.com`, also in China's partition).
pub fn is_aws_iot_host(host: &str) -> bool {
    // Host names are case-insensitive, and the URL parser lowercases them for ws(s):// only.
    let host = host.to_ascii_lowercase();
    aws_domain(&host).is_some_and(|rest| {
        let labels: Vec<&str> = rest.split('.').collect();
        labels.windows(2).any(|pair| matches!(pair[0], "iot" | "iot-fips") && looks_like_region(pair[1]))
    })
}

/// Whether `host` is one of AWS's own (`….amazonaws.com`, `….amazonaws.com.cn`), rather than a
/// custom domain or another broker.
pub fn is_aws_host(host: &str) -> bool {
    aws_domain(host).is_some()
}

/// What comes before `.amazonaws.com` (or `.amazonaws.com.cn`) in an AWS host, written with or
/// without the DNS root's trailing dot.
fn aws_domain(host: &str) -> Option<&str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))
}

/// A host label that is a region: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`…
/// (a region name starting with a two-letter word, so that no other label is taken for one).
fn looks_like_region(label: &str) -> bool {
    is_region_name(label) && label.split('-').next().is_some_and(|first| first.len() == 2)
}

/// An AWS region name's shape: lowercase words and a number, joined by '-' (`us-east-1`,
/// `us-gov-west-1`, `eusc-de-east-1`): any region AWS adds passes.
fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let (Some(number), words) = (parts.last(), &parts[..parts.len() - 1]) else { return false };
    words.len() >= 2
        && words.iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

fn parse_aws(fields: &Fields, endpoint: &Endpoint, credentials_function: bool) -> Result<AwsIot> {
    let from_host = region_from_host(&endpoint.host);
    let region = match fields.string("region")?.or(fields.string("aws_pubsub_region")?) {
        Some(region) if !is_region_name(&region) => {
            return Err(invalid("Option 'region' must be an AWS region name like 'us-east-1'".into()))
        }
        // AWS IoT refuses a signature for any region but its endpoint's: every connect would
        // fail with a 403. Custom domains name no region, so only those need the option.
        Some(region) => match from_host {
            Some(host_region) if host_region != region => {
                return Err(invalid(format!(
                    "Option 'region' is '{region}' but the endpoint host '{}' is in '{host_region}', and AWS IoT only \
                     accepts connections signed for its own region: remove the 'region' option or set it to '{host_region}'",
                    endpoint.host
                )))
            }
            _ => region,
        },
        None => from_host.ok_or_else(|| {
            invalid(format!(
                "Cannot tell the AWS region from the endpoint host '{}' (not an *.iot.<region>.amazonaws.com host): pass the 'region' option, e.g. region: 'us-east-1'",
                endpoint.host
            ))
        })?,
    };
    let credentials = match (fields.map.get("credentials"), credentials_function) {
        (_, true) => CredentialsOption::Function,
        (None | Some(Value::Null), false) => CredentialsOption::DefaultChain,
        (Some(value), false) => CredentialsOption::Static(parse_credentials(value, "Option 'credentials'").map_err(invalid)?),
    };
    Ok(AwsIot { region, credentials })
}

impl ClientOptions {
    /// `credentials_function`: the user gave a function as `credentials` (JS calls it).
    pub fn from_js(value: &Value, provider: Provider, credentials_function: bool) -> Result<Self> {
        let map = match value {
            Value::Object(map) => map,
            other => return Err(invalid(format!("PubSub options must be an object, got {}", type_name(other)))),
        };
        let fields = Fields { map, prefix: "" };
        let known = provider.known_options();
        if let Some(unknown) = map.keys().map(String::as_str).chain(credentials_function.then_some("credentials")).find(|k| !known.contains(k)) {
            return Err(invalid(format!(
                "Unknown option '{unknown}' for the {}{}; known options are {}",
                provider.name(),
                unknown_option_hint(unknown, &known),
                known.join(", ")
            )));
        }
        // Each setting and its Amplify v5 alias: given both with different values, neither can be
        // taken over the other in silence. (Values unshown: an endpoint may hold a password.)
        for (name, alias) in [("endpoint", "aws_pubsub_endpoint"), ("region", "aws_pubsub_region")] {
            if let (Some(value), Some(aliased)) = (fields.string(name)?, fields.string(alias)?) {
                if value != aliased {
                    return Err(invalid(format!(
                        "Options '{name}' and '{alias}' are one setting (the second is its Amplify v5 name) but were given different values: give only one"
                    )));
                }
            }
        }
        let raw_endpoint = match fields.string("endpoint")? {
            Some(e) => e,
            None => fields.string("aws_pubsub_endpoint")?.ok_or_else(|| {
                PubSubError::InvalidEndpoint("Option 'endpoint' is required, e.g. 'wss://broker.example.com/mqtt'".into())
            })?,
        };
        let endpoint = match provider {
            Provider::Mqtt => parse_endpoint(&raw_endpoint)?,
            Provider::Iot => parse_iot_endpoint(&raw_endpoint)?,
        };
        let aws = match provider {
            Provider::Mqtt => None,
            Provider::Iot => Some(parse_aws(&fields, &endpoint, credentials_function)?),
        };
        let aws_iot_broker = provider == Provider::Iot || is_aws_iot_host(&endpoint.host);

        let client_id = match fields.string("clientId")? {
            Some(id) if id.is_empty() || id.len() > 65_535 => {
                return Err(invalid("Option 'clientId' must be a non-empty string of at most 65,535 bytes".into()))
            }
            // AWS IoT's limit cannot be raised; it closes the connection after such a CONNECT,
            // which looks like a policy refusal.
            Some(id) if aws_iot_broker && id.len() > aws_iot_limits::MAX_CLIENT_ID_BYTES => {
                return Err(invalid(format!(
                    "Option 'clientId' is {} bytes (UTF-8) but AWS IoT allows at most {}",
                    id.len(),
                    aws_iot_limits::MAX_CLIENT_ID_BYTES
                )))
            }
            Some(id) => mqtt_string("clientId", id)?,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let username = fields.string("username")?.map(|name| mqtt_string("username", name)).transpose()?;
        let password = fields.string("password")?;
        if password.is_some() && username.is_none() {
            return Err(invalid("Option 'password' needs 'username' too (MQTT 3.1.1)".into()));
        }
        // keepAlive in seconds like MQTT.js and the MQTT spec; 0 turns keep-alive off.
        // MQTT carries whole seconds: 1.5 would silently become 1, and 0.5 turn keep-alive off.
        let keep_alive_s = fields.whole_number("keepAlive", 0.0, 65_535.0, "seconds")?.unwrap_or(60.0);
        // connectTimeout in milliseconds like MQTT.js.
        let connect_timeout_ms = fields.number("connectTimeout", 1.0, 600_000.0, "milliseconds")?.unwrap_or(30_000.0);
        let clean_session = fields.bool("cleanSession")?.unwrap_or(true);
        let will = map.get("will").map(parse_will).transpose()?.flatten();
        if let (Some(will), true) = (&will, aws_iot_broker) {
            aws_iot_limits::check_qos(will.qos, QosOf::Will)
                .and_then(|()| aws_iot_limits::check_topic(&will.topic))
                .map_err(|e| invalid(format!("Option 'will': {e}")))?;
        }
        let ca = fields.string("ca")?;
        if let Some(pem) = &ca {
            tls::parse_certificates("ca", pem)?;
        }
        let identity = parse_identity(&fields, &endpoint)?;
        let proxy = fields.string("proxy")?.map(|raw| proxy::parse(&raw)).transpose()?.flatten();
        Ok(Self {
            endpoint,
            client_id,
            username,
            password,
            keep_alive: Duration::from_secs(keep_alive_s as u64),
            connect_timeout: Duration::from_millis(connect_timeout_ms as u64),
            clean_session,
            will,
            ca,
            identity,
            aws,
            aws_iot_broker,
            reconnect: parse_reconnect(map.get("reconnect"))?,
            offline_queue: parse_offline_queue(map.get("offlineQueue"))?,
            proxy,
        })
    }

    /// No CONNACK within `connectTimeout`, through the proxy if there is one.
    pub fn connect_timeout_error(&self) -> PubSubError {
        PubSubError::ConnectTimeout { after: self.connect_timeout, proxy: self.proxy.as_ref().map(|proxy| proxy.shown.clone()) }
    }

    /// What one SUBSCRIBE may carry: on AWS IoT its filter quota as well as the byte budget.
    pub fn subscribe_limit(&self) -> SubscribeLimit {
        SubscribeLimit { filters: self.aws_iot_broker.then_some(aws_iot_limits::MAX_FILTERS_PER_SUBSCRIBE), bytes: MAX_SUBSCRIBE_BYTES }
    }

    /// The ALPN protocol to offer over mqtts://. AWS IoT's port 443 is its HTTPS port unless
    /// asked for MQTT: `x-amzn-mqtt-ca` with a client certificate, `mqtt` for a custom
    /// authorizer (the username names it).
    fn alpn(&self) -> &'static [&'static [u8]] {
        match (self.aws_iot_broker && self.endpoint.port == 443, self.identity.is_some()) {
            (true, true) => &[b"x-amzn-mqtt-ca"],
            (true, false) => &[b"mqtt"],
            (false, _) => &[],
        }
    }

    /// rumqttc's options for these. `will_payload` is the will message already encoded by JS.
    pub fn to_mqtt_options(&self, will_payload: Vec<u8>) -> Result<MqttOptions> {
        let ep = &self.endpoint;
        // For WebSockets rumqttc takes the whole URL as the host; the port argument is ignored.
        let broker = match ep.scheme {
            Scheme::Ws | Scheme::Wss => ep.url.clone(),
            Scheme::Mqtt | Scheme::Mqtts => ep.host.clone(),
        };
        let mut options = MqttOptions::new(self.client_id.clone(), broker, ep.port);
        options.set_transport(match ep.scheme {
            Scheme::Ws => Transport::Ws,
            Scheme::Mqtt => Transport::Tcp,
            Scheme::Wss => Transport::Wss(tls::client_config(self.ca.as_deref(), self.identity.as_ref(), &[])?),
            Scheme::Mqtts => Transport::Tls(tls::client_config(self.ca.as_deref(), self.identity.as_ref(), self.alpn())?),
        });
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(if self.aws_iot_broker { aws_iot_limits::MAX_INFLIGHT } else { MAX_INFLIGHT });
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(will) = &self.will {
            if self.aws_iot_broker {
                aws_iot_limits::check_payload(will_payload.len()).map_err(|e| invalid(format!("Option 'will.message': {e}")))?;
            }
            options.set_last_will(LastWill::new(will.topic.clone(), will_payload, will.qos, will.retain));
        }
        if let Some(proxy) = &self.proxy {
            options.set_proxy(proxy.to_rumqttc(self.ca.as_deref())?);
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mqtt(value: &Value) -> Result<ClientOptions> {
        ClientOptions::from_js(value, Provider::Mqtt, false)
    }

    fn iot(value: &Value) -> Result<ClientOptions> {
        ClientOptions::from_js(value, Provider::Iot, false)
    }

    #[test]
    fn endpoints_of_every_scheme_parse_with_default_ports() {
        let ws = parse_endpoint("ws://127.0.0.1:9001/mqtt").unwrap();
        assert_eq!((ws.scheme, ws.port, ws.host.as_str()), (Scheme::Ws, 9001, "127.0.0.1"));
        assert_eq!(parse_endpoint("wss://example.com/mqtt").unwrap().port, 443);
        assert_eq!(parse_endpoint("mqtt://localhost").unwrap().port, 1883);
        assert_eq!(parse_endpoint("mqtts://localhost").unwrap().port, 8883);
    }

    #[test]
    fn malformed_endpoints_are_rejected_with_their_code() {
        for bad in ["", "not a url", "http://x/mqtt", "ws://", "ws://user:pw@host/"] {
            assert_eq!(parse_endpoint(bad).unwrap_err().code(), "ERR_INVALID_ENDPOINT", "{bad}");
        }
    }

    #[test]
    fn mqtt_js_scheme_names_are_taken_for_mqtt_and_mqtts() {
        assert_eq!(parse_endpoint("tcp://localhost").map(|e| (e.scheme, e.port)).unwrap(), (Scheme::Mqtt, 1883));
        for tls in ["ssl://localhost", "tls://localhost"] {
            assert_eq!(parse_endpoint(tls).map(|e| (e.scheme, e.port)).unwrap(), (Scheme::Mqtts, 8883));
        }
    }

    #[test]
    fn an_endpoint_without_a_scheme_says_to_add_one() {
        for (raw, tcp, ws) in [
            ("127.0.0.1:1883", "'mqtt://127.0.0.1:1883'", "'ws://127.0.0.1:1883/mqtt'"),
            ("localhost:1883", "'mqtt://localhost:1883'", "'ws://localhost:1883/mqtt'"),
            ("broker.example.com", "'mqtt://broker.example.com'", "'ws://broker.example.com/mqtt'"),
            ("broker.example.com:8080/ws", "'mqtt://broker.example.com:8080'", "'ws://broker.example.com:8080/ws'"),
        ] {
            let message = parse_endpoint(raw).unwrap_err().to_string();
            assert!(message.contains("it has no scheme; add one, e.g.") && message.contains(tcp) && message.contains(ws), "{message}");
        }
        // Still an unsupported scheme, not a missing one.
        assert!(parse_endpoint("mailto:someone").unwrap_err().to_string().contains("unsupported scheme 'mailto:'"));
        // A user:password@ without a scheme is not echoed in the suggestions either.
        let message = parse_endpoint("bob:1234secret@host:1883").unwrap_err().to_string();
        assert!(!message.contains("secret") && !message.contains("bob"), "{message}");
    }

    #[test]
    fn a_placeholder_left_in_the_endpoint_is_named_as_one() {
        let message = parse_endpoint("wss://xxxxxxxxxxxxx-ats.iot.<YOUR-AWS-REGION>.amazonaws.com/mqtt").unwrap_err().to_string();
        assert!(message.ends_with("'<YOUR-AWS-REGION>' is a placeholder (from an example or the docs): replace it with your own value"), "{message}");
        let message = iot(&json!({ "endpoint": "xxxxxxxxxxxxx-ats.iot.us-east-1.amazonaws.com" })).unwrap_err().to_string();
        assert!(message.contains("is a placeholder from an example") && message.contains("aws iot describe-endpoint"), "{message}");
        // A real prefix is not one.
        assert!(iot(&json!({ "endpoint": "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com" })).is_ok());
        // A password in the URL is not quoted as a placeholder.
        let message = parse_endpoint("ws://bob:<secret>@host/mqtt").unwrap_err().to_string();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn credentials_in_an_endpoint_are_never_echoed() {
        let err = parse_endpoint("ws://bob:s3cret@127.0.0.1/mqtt").unwrap_err().to_string();
        assert!(!err.contains("s3cret") && !err.contains("bob"), "{err}");
        assert!(err.contains("ws://***@127.0.0.1/mqtt"), "{err}");
        let err = parse_endpoint("gopher://u:p@h/x").unwrap_err().to_string();
        assert!(!err.contains("u:p"), "{err}");
        // '/', '?' and '#' end the authority for URL parsing, so the password was shown from there.
        for raw in ["ws://bob:pa/s3cret@127.0.0.1/mqtt", "ws://bob:pa?s3cret@127.0.0.1/mqtt", "ws://bob:pa#s3cret@127.0.0.1/mqtt"] {
            let err = parse_endpoint(raw).unwrap_err().to_string();
            assert!(!err.contains("s3cret") && !err.contains("bob"), "{err}");
        }
        // AWS IoT takes a bare host: user info before it is hidden too.
        let err = parse_iot_endpoint("AKID:s3cret@abc-ats.iot.us-east-1.amazonaws.com").unwrap_err().to_string();
        assert!(!err.contains("s3cret") && !err.contains("AKID"), "{err}");
    }

    #[test]
    fn will_errors_name_the_will_field_and_qos_must_be_whole() {
        for (will, field) in [
            (json!({ "topic": "a", "qos": 1.5 }), "will.qos"),
            (json!({ "topic": "a", "qos": 3 }), "will.qos"),
            (json!({ "topic": 5 }), "will.topic"),
            (json!({ "topic": "a", "retain": "yes" }), "will.retain"),
        ] {
            let err = mqtt(&json!({ "endpoint": "ws://h/", "will": will })).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let o = mqtt(&json!({ "endpoint": "ws://127.0.0.1:1/mqtt" })).unwrap();
        assert_eq!(o.keep_alive, Duration::from_secs(60));
        assert_eq!(o.connect_timeout, Duration::from_secs(30));
        assert!(o.clean_session);
        assert_eq!(uuid::Uuid::parse_str(&o.client_id).unwrap().get_version_num(), 4);
        // Reconnect: 1 s min, 120 s max, reset after 30 s connected; a bounded offline queue.
        let r = o.reconnect.unwrap();
        assert_eq!((r.min_delay, r.max_delay, r.reset_after), (Duration::from_secs(1), Duration::from_secs(120), Duration::from_secs(30)));
        assert_eq!(o.offline_queue, OfflineQueue { policy: OfflinePolicy::Qos1, max_messages: 65_536, max_bytes: 64 * 1024 * 1024 });
    }

    #[test]
    fn client_id_and_username_refuse_what_mqtt_strings_must_or_should_not_hold() {
        for (options, said) in [
            (json!({ "endpoint": "ws://h/", "clientId": "a\u{0}b" }), "'clientId' must not contain a NUL"),
            (json!({ "endpoint": "ws://h/", "clientId": "worker-1\n" }), "'clientId' holds U+000A (a control character) at character 8"),
            (json!({ "endpoint": "ws://h/", "username": "u\u{ffff}", "password": "p" }), "'username' holds U+FFFF"),
        ] {
            let err = mqtt(&options).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_OPTION");
            assert!(err.to_string().contains(said), "{err}");
        }
        assert!(mqtt(&json!({ "endpoint": "ws://h/", "clientId": "caf\u{e9}-1", "username": "\u{1f600}" })).is_ok());
    }

    #[test]
    fn wrong_types_name_the_option() {
        let err = mqtt(&json!({ "endpoint": "ws://h/", "keepAlive": "60" })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
        assert!(err.to_string().contains("keepAlive"), "{err}");
        let err = mqtt(&json!({ "endpoint": "ws://h/", "keepalive": 5 })).unwrap_err();
        assert!(err.to_string().contains("Unknown option 'keepalive'"), "{err}");
        let err = mqtt(&json!({ "endpoint": "ws://h/", "will": { "topic": "a/#" } })).unwrap_err();
        assert!(err.to_string().contains("will.topic"), "{err}");
    }

    #[test]
    fn the_v5_endpoint_alias_is_accepted() {
        let o = mqtt(&json!({ "aws_pubsub_endpoint": "wss://h/mqtt" })).unwrap();
        assert_eq!(o.endpoint.scheme, Scheme::Wss);
    }

    #[test]
    fn the_region_comes_from_aws_hosts() {
        for (host, region) in [
            ("a1b2c3-ats.iot.us-east-1.amazonaws.com", Some("us-east-1")),
            ("a1b2c3-ats.iot.eu-central-2.amazonaws.com", Some("eu-central-2")),
            ("a1b2c3.ats.iot.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            ("a1b2c3-ats.iot.us-gov-west-1.amazonaws.com", Some("us-gov-west-1")),
            ("vpce-0123-abcd.data.iot.ap-southeast-2.vpce.amazonaws.com", Some("ap-southeast-2")),
            // A fully qualified name, as some DNS tooling prints it.
            ("a1b2c3-ats.iot.us-west-2.amazonaws.com.", Some("us-west-2")),
            ("iot.example.com", None),
            ("amazonaws.com.evil.example", None),
            ("a.iot.notaregion.amazonaws.com", None),
        ] {
            assert_eq!(region_from_host(host).as_deref(), region, "{host}");
        }
    }

    #[test]
    fn aws_iot_hosts_take_websockets_on_port_443_only() {
        let err = iot(&json!({ "endpoint": "x-ats.iot.us-east-1.amazonaws.com:8883" })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ENDPOINT");
        assert!(err.to_string().contains("port 443 only, not 8883: use 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt'"), "{err}");
        for endpoint in ["wss://x-ats.iot.us-east-1.amazonaws.com:443/mqtt", "x-ats.iot.us-east-1.amazonaws.com"] {
            assert!(iot(&json!({ "endpoint": endpoint })).is_ok(), "{endpoint}");
        }
        // Not AWS's host: a gateway or a proxy may listen on any port.
        let o = iot(&json!({ "endpoint": "wss://iot-gateway.example.com:8883/mqtt", "region": "us-east-1" })).unwrap();
        assert_eq!(o.endpoint.port, 8883);
    }

    #[test]
    fn iot_options_take_the_region_from_the_option_or_the_host() {
        let o = iot(&json!({ "endpoint": "wss://x-ats.iot.eu-west-1.amazonaws.com/mqtt" })).unwrap();
        assert_eq!(o.aws.unwrap().region, "eu-west-1");
        let o = iot(&json!({ "aws_pubsub_endpoint": "wss://iot.example.com/mqtt", "aws_pubsub_region": "us-west-2" })).unwrap();
        assert_eq!(o.aws.unwrap().region, "us-west-2");
        let err = iot(&json!({ "endpoint": "wss://mqtt.example.com/mqtt" })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
        assert!(err.to_string().contains("pass the 'region' option"), "{err}");
        let err = iot(&json!({ "endpoint": "wss://mqtt.example.com/mqtt", "region": "US East" })).unwrap_err();
        assert!(err.to_string().contains("'region'"), "{err}");
    }

    #[test]
    fn iot_endpoints_may_be_a_bare_host_and_must_be_wss() {
        let o = iot(&json!({ "endpoint": "x-ats.iot.us-east-1.amazonaws.com" })).unwrap();
        assert_eq!(o.endpoint.url, "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt");
        let o = iot(&json!({ "endpoint": "wss://x-ats.iot.us-east-1.amazonaws.com" })).unwrap();
        assert_eq!(o.endpoint.url, "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt");
        let err = iot(&json!({ "endpoint": "ws://x-ats.iot.us-east-1.amazonaws.com/mqtt" })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ENDPOINT");
    }

    #[test]
    fn a_region_option_that_contradicts_the_endpoint_host_is_refused() {
        let endpoint = "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt";
        let err = iot(&json!({ "endpoint": endpoint, "region": "eu-west-1" })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
        assert!(err.to_string().contains("Option 'region' is 'eu-west-1' but the endpoint host"), "{err}");
        assert!(err.to_string().contains("set it to 'us-east-1'"), "{err}");
        let err = iot(&json!({ "endpoint": "x.iot.cn-north-1.amazonaws.com.cn", "aws_pubsub_region": "us-east-1" })).unwrap_err();
        assert!(err.to_string().contains("is in 'cn-north-1'"), "{err}");
        // Agreeing with the host, or a custom domain: the option is used.
        assert_eq!(iot(&json!({ "endpoint": endpoint, "region": "us-east-1" })).unwrap().aws.unwrap().region, "us-east-1");
        let o = iot(&json!({ "endpoint": "wss://iot.example.com/mqtt", "region": "eusc-de-east-1" })).unwrap();
        assert_eq!(o.aws.unwrap().region, "eusc-de-east-1");
        for bad in ["useast1", "us-east", "-1", "us--1", "US-EAST-1"] {
            let err = iot(&json!({ "endpoint": "wss://iot.example.com/mqtt", "region": bad })).unwrap_err();
            assert!(err.to_string().contains("must be an AWS region name"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_iot_endpoint_path_other_than_mqtt_is_refused() {
        for path in ["/other", "/mqtt/", "/MQTT", "/mqtt/x"] {
            let err = iot(&json!({ "endpoint": format!("wss://x-ats.iot.us-east-1.amazonaws.com{path}") })).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_ENDPOINT", "{path}");
            assert!(err.to_string().contains("at the path /mqtt only"), "{err}");
        }
        // The generic provider takes any path.
        assert!(mqtt(&json!({ "endpoint": "wss://h/other" })).is_ok());
    }

    #[test]
    fn an_iot_endpoint_that_is_already_presigned_is_refused_and_other_queries_kept() {
        let host = "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt";
        let err = iot(&json!({ "endpoint": format!("{host}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDPASTED%2Fx&x-amz-signature=abc") })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ENDPOINT");
        let message = err.to_string();
        assert!(message.contains("already carries a SigV4 signature (X-Amz-Algorithm, X-Amz-Credential, x-amz-signature)"), "{message}");
        assert!(message.contains(&format!("'{host}'")) && !message.contains("AKIDPASTED"), "{message}");
        let o = iot(&json!({ "endpoint": format!("{host}?custom=1") })).unwrap();
        assert_eq!(o.endpoint.url, format!("{host}?custom=1"));
        let o = iot(&json!({ "endpoint": "  x-ats.iot.us-east-1.amazonaws.com \n" })).unwrap();
        assert_eq!(o.endpoint.url, host);
    }

    #[test]
    fn an_iot_client_id_over_128_bytes_is_refused() {
        let endpoint = "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt";
        assert!(iot(&json!({ "endpoint": endpoint, "clientId": "a".repeat(128) })).is_ok());
        let err = iot(&json!({ "endpoint": endpoint, "clientId": "a".repeat(129) })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
        assert!(err.to_string().contains("'clientId' is 129 bytes (UTF-8) but AWS IoT allows at most 128"), "{err}");
        // Bytes, not characters: 43 three-byte characters are 129 bytes.
        assert!(iot(&json!({ "endpoint": endpoint, "clientId": "€".repeat(43) })).is_err());
        assert!(mqtt(&json!({ "endpoint": "ws://h/", "clientId": "a".repeat(1000) })).is_ok());
    }

    #[test]
    fn the_generic_provider_on_an_aws_iot_host_keeps_aws_iot_limits_too() {
        for host in [
            "a1b2c3-ats.iot.eu-west-1.amazonaws.com",
            "vpce-1.data.iot.us-east-1.vpce.amazonaws.com",
            "x-ats.iot.cn-north-1.amazonaws.com.cn",
            "data.iot-fips.us-east-1.amazonaws.com",
            "A1B2C3-ATS.IOT.EU-WEST-1.AMAZONAWS.COM",
        ] {
            assert!(is_aws_iot_host(host), "{host}");
            let o = mqtt(&json!({ "endpoint": format!("mqtts://{host}:8883") })).unwrap();
            assert!(o.aws_iot_broker && o.subscribe_limit().filters == Some(8), "{host}");
            assert_eq!(o.to_mqtt_options(Vec::new()).unwrap().inflight(), aws_iot_limits::MAX_INFLIGHT, "{host}");
            let err = mqtt(&json!({ "endpoint": format!("mqtts://{host}:8883"), "clientId": "c".repeat(129) })).unwrap_err();
            assert!(err.to_string().contains("AWS IoT allows at most 128"), "{err}");
        }
        for host in ["broker.example.com", "sqs.us-east-1.amazonaws.com", "iot.example.com", "127.0.0.1"] {
            assert!(!is_aws_iot_host(host), "{host}");
            let o = mqtt(&json!({ "endpoint": format!("mqtts://{host}:8883"), "clientId": "c".repeat(129), "will": { "topic": "a", "qos": 2 } })).unwrap();
            assert!(!o.aws_iot_broker && o.subscribe_limit().filters.is_none(), "{host}");
            assert_eq!(o.to_mqtt_options(Vec::new()).unwrap().inflight(), MAX_INFLIGHT, "{host}");
        }
        let err = mqtt(&json!({ "endpoint": "mqtts://a-ats.iot.eu-west-1.amazonaws.com:8883", "will": { "topic": "a", "qos": 2 } })).unwrap_err();
        assert!(err.to_string().contains("does not support QoS 2"), "{err}");
    }

    #[test]
    fn an_endpoint_is_shown_without_its_query_values_but_those_that_name_things() {
        assert_eq!(
            shown_url("wss://h/mqtt?x-amz-customauthorizer-name=auth&token=SECRET&SECRET&&x=#frag"),
            "wss://h/mqtt?x-amz-customauthorizer-name=auth&token=***&***&&x=***#frag"
        );
        assert_eq!(shown_url("wss://user:pw@h/mqtt?X-Amz-Date=20150830T123600Z&X-Amz-Signature=abc"), "wss://***@h/mqtt?X-Amz-Date=20150830T123600Z&X-Amz-Signature=***");
        assert_eq!(shown_url("mqtt://h:1883"), "mqtt://h:1883");
        let err = mqtt(&json!({ "endpoint": "http://h/mqtt?password=SECRET" })).unwrap_err();
        assert!(!err.to_string().contains("SECRET") && err.to_string().contains("password=***"), "{err}");
    }

    #[test]
    fn the_iot_provider_refuses_a_custom_authorizer_endpoint_naming_the_generic_provider() {
        let err = iot(&json!({ "endpoint": "wss://a-ats.iot.eu-west-1.amazonaws.com/mqtt?x-amz-customauthorizer-name=mine&token=SECRET" })).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("native-pubsub/mqtt") && message.contains("custom authorizer"), "{message}");
        assert!(!message.contains("SECRET"), "{message}");
    }

    #[test]
    fn mqtts_to_aws_iot_on_port_443_offers_alpn_x_amzn_mqtt_ca_with_a_client_certificate_and_mqtt_without() {
        let with_identity = |endpoint: &str| {
            let mut o = mqtt(&json!({ "endpoint": endpoint })).unwrap();
            o.identity = Some(tls::ClientIdentity { cert_pem: String::new(), key_pem: String::new() });
            o
        };
        assert_eq!(with_identity("mqtts://a-ats.iot.eu-west-1.amazonaws.com:443").alpn(), [b"x-amzn-mqtt-ca"]);
        assert!(with_identity("mqtts://a-ats.iot.eu-west-1.amazonaws.com:8883").alpn().is_empty());
        assert!(with_identity("mqtts://broker.example.com:443").alpn().is_empty());
        // A custom authorizer: no certificate, the username names the authorizer.
        let custom = json!({ "endpoint": "mqtts://a-ats.iot.eu-west-1.amazonaws.com:443", "username": "device?x-amz-customauthorizer-name=mine" });
        assert_eq!(mqtt(&custom).unwrap().alpn(), [b"mqtt"]);
        assert!(mqtt(&json!({ "endpoint": "mqtts://a-ats.iot.eu-west-1.amazonaws.com:8883" })).unwrap().alpn().is_empty());
        assert!(mqtt(&json!({ "endpoint": "mqtts://broker.example.com:443" })).unwrap().alpn().is_empty());
        match tls::client_config(None, None, &[b"x-amzn-mqtt-ca"]).unwrap() {
            rumqttc::TlsConfiguration::Rustls(config) => assert_eq!(config.alpn_protocols, [b"x-amzn-mqtt-ca".to_vec()]),
            _ => panic!("a rustls configuration"),
        }
    }

    #[test]
    fn an_iot_will_within_aws_iot_limits_is_taken_and_one_past_them_is_refused() {
        let endpoint = "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt";
        let fine = iot(&json!({ "endpoint": endpoint, "will": { "topic": "a/b/c/d/e/f/g/h", "qos": 1 } })).unwrap();
        assert!(fine.to_mqtt_options(vec![b'x'; 128 * 1024]).is_ok());
        let err = fine.to_mqtt_options(vec![b'x'; 128 * 1024 + 1]).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
        assert!(err.to_string().starts_with("Option 'will.message': The message is 131073 bytes"), "{err}");
        for (will, says) in [
            (json!({ "topic": "a", "qos": 2 }), "does not support QoS 2"),
            (json!({ "topic": "a/b/c/d/e/f/g/h/i" }), "has 8 '/'"),
            (json!({ "topic": "t".repeat(257) }), "is 257 bytes"),
        ] {
            let err = iot(&json!({ "endpoint": endpoint, "will": will })).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_OPTION");
            assert!(err.to_string().starts_with("Option 'will': ") && err.to_string().contains(says), "{err}");
            // Other brokers have other limits: the generic provider sends these.
            let generic = mqtt(&json!({ "endpoint": "ws://h/", "will": will })).unwrap();
            assert!(generic.to_mqtt_options(vec![b'x'; 128 * 1024 + 1]).is_ok());
        }
    }

    #[test]
    fn https_and_user_info_in_an_iot_endpoint_say_what_to_do() {
        let err = iot(&json!({ "endpoint": "https://x-ats.iot.us-east-1.amazonaws.com" })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ENDPOINT");
        assert!(err.to_string().contains("use 'wss://x-ats.iot.us-east-1.amazonaws.com/mqtt'"), "{err}");
        let err = iot(&json!({ "endpoint": "http://u:pw@h.example:8443/x" })).unwrap_err();
        assert!(err.to_string().contains("no user name or password in the URL"), "{err}");
        let err = iot(&json!({ "endpoint": "https://h.example:8443/x" })).unwrap_err();
        assert!(err.to_string().contains("use 'wss://h.example:8443/mqtt'"), "{err}");
        let err = iot(&json!({ "endpoint": "wss://AKID:s3cret@x-ats.iot.us-east-1.amazonaws.com/mqtt" })).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ENDPOINT");
        let message = err.to_string();
        assert!(message.contains("signed with AWS credentials") && message.contains("'credentials' option"), "{message}");
        assert!(!message.contains("s3cret") && !message.contains("AKID") && !message.contains("username"), "{message}");
    }

    #[test]
    fn an_unknown_option_says_what_it_probably_meant() {
        for (option, says) in [
            ("keepalive", "(did you mean 'keepAlive'?)"),
            ("clientID", "(did you mean 'clientId'?)"),
            ("clean", "(MQTT.js's name for 'cleanSession')"),
            ("reconnectPeriod", "'reconnect': { minDelayMs, maxDelayMs }, or false"),
            ("rejectUnauthorized", "TLS is always verified here"),
            ("protocolVersion", "MQTT 3.1.1 only"),
            ("port", "give the whole URL as 'endpoint'"),
            ("client_id", "(did you mean 'clientId'?)"),
            ("clean_session", "(did you mean 'cleanSession'?)"),
            ("keep_alive_secs", "(aws-crt's; here 'keepAlive', in seconds)"),
            ("reconnect_max_sec", "'reconnect': { minDelayMs, maxDelayMs }"),
            ("host_name", "give the whole URL as 'endpoint'"),
        ] {
            let err = mqtt(&json!({ "endpoint": "ws://h/", option: 1 })).unwrap_err();
            assert!(err.to_string().starts_with(&format!("Unknown option '{option}' for the generic MQTT provider (")), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
        let err = mqtt(&json!({ "endpoint": "ws://h/", "colour": 1 })).unwrap_err();
        assert!(err.to_string().starts_with("Unknown option 'colour' for the generic MQTT provider; known options are"), "{err}");
    }

    #[test]
    fn each_provider_refuses_the_other_ones_options() {
        let endpoint = "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt";
        let err = iot(&json!({ "endpoint": endpoint, "username": "u" })).unwrap_err();
        assert!(err.to_string().contains("Unknown option 'username' for the AWS IoT provider"), "{err}");
        let err = mqtt(&json!({ "endpoint": endpoint, "credentials": {} })).unwrap_err();
        assert!(err.to_string().contains("Unknown option 'credentials'"), "{err}");
        let err = ClientOptions::from_js(&json!({ "endpoint": endpoint }), Provider::Mqtt, true).unwrap_err();
        assert!(err.to_string().contains("Unknown option 'credentials'"), "{err}");
    }

    #[test]
    fn iot_credentials_are_static_a_function_or_the_default_chain() {
        let endpoint = "wss://x-ats.iot.us-east-1.amazonaws.com/mqtt";
        let o = iot(&json!({ "endpoint": endpoint, "credentials": { "accessKeyId": "AKID", "secretAccessKey": "s" } })).unwrap();
        assert!(matches!(o.aws.unwrap().credentials, CredentialsOption::Static(c) if c.access_key_id() == "AKID"));
        let o = ClientOptions::from_js(&json!({ "endpoint": endpoint }), Provider::Iot, true).unwrap();
        assert!(matches!(o.aws.unwrap().credentials, CredentialsOption::Function));
        assert!(matches!(iot(&json!({ "endpoint": endpoint })).unwrap().aws.unwrap().credentials, CredentialsOption::DefaultChain));
        let err = iot(&json!({ "endpoint": endpoint, "credentials": { "accessKeyId": "AKID" } })).unwrap_err();
        assert!(err.to_string().contains("'secretAccessKey' is missing"), "{err}");
    }

    #[test]
    fn reconnect_is_on_by_default_off_with_false_and_bounded_by_an_object() {
        let endpoint = "ws://h/";
        assert_eq!(mqtt(&json!({ "endpoint": endpoint })).unwrap().reconnect, Some(Reconnect::default()));
        assert_eq!(mqtt(&json!({ "endpoint": endpoint, "reconnect": false })).unwrap().reconnect, None);
        let o = mqtt(&json!({ "endpoint": endpoint, "reconnect": { "minDelayMs": 50, "maxDelayMs": 400 } })).unwrap();
        let r = o.reconnect.unwrap();
        assert_eq!((r.min_delay, r.max_delay, r.reset_after), (Duration::from_millis(50), Duration::from_millis(400), Duration::from_secs(30)));
        for bad in [json!({ "minDelayMs": 500, "maxDelayMs": 100 }), json!({ "minDelay": 5 }), json!("yes"), json!({ "maxDelayMs": -1 })] {
            let err = mqtt(&json!({ "endpoint": endpoint, "reconnect": bad })).unwrap_err();
            assert!(err.to_string().contains("reconnect"), "{err}");
        }
    }

    #[test]
    fn the_offline_queue_takes_a_policy_name_or_an_object() {
        let endpoint = "ws://h/";
        assert_eq!(mqtt(&json!({ "endpoint": endpoint })).unwrap().offline_queue, OfflineQueue::default());
        assert_eq!(mqtt(&json!({ "endpoint": endpoint, "offlineQueue": "all" })).unwrap().offline_queue.policy, OfflinePolicy::All);
        let q = mqtt(&json!({ "endpoint": endpoint, "offlineQueue": { "policy": "none", "maxMessages": 10, "maxBytes": 1000 } })).unwrap().offline_queue;
        assert_eq!(q, OfflineQueue { policy: OfflinePolicy::None, max_messages: 10, max_bytes: 1000 });
        for bad in [json!("some"), json!({ "maxMessages": 0 }), json!({ "maxMessages": 2.5 }), json!({ "maxBytes": 1e3 + 0.5 }), json!({ "size": 1 }), json!(5)] {
            let err = mqtt(&json!({ "endpoint": endpoint, "offlineQueue": bad })).unwrap_err();
            assert!(err.to_string().contains("offlineQueue"), "{err}");
        }
    }
}
