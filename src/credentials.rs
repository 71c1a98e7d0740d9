//! AWS credentials for signing, fetched before every connect: from the `credentials` option
//! (static keys, or a JS function that JS calls when asked) or else the AWS default chain
//! (aws-config: environment, shared profiles, SSO, web identity, ECS, instance metadata).
//! No message here ever contains a key, a secret or a token: values are described, never
//! echoed, and text from outside (a `credential_process`'s stderr) is masked.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::ProvideCredentials;
pub use aws_credential_types::Credentials;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::delivery::{Delivery, Event};
use crate::errors::{PubSubError, Result};

/// Where an instance's credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialsOption {
    /// Keys given in the `credentials` option.
    Static(Credentials),
    /// A JS function, called (by JS) before each connect.
    Function,
    /// The AWS default chain.
    DefaultChain,
}

/// Reads `{ accessKeyId, secretAccessKey, sessionToken?, expiration? }`; `expiration` is in
/// milliseconds since the epoch (JS turns a `Date`, a date string or a number of seconds into that). `what` names the value in
/// messages. Values are described by type only, never echoed.
pub fn parse_credentials(value: &Value, what: &str) -> std::result::Result<Credentials, String> {
    let Value::Object(map) = value else {
        return Err(format!("{what} must be an object {{ accessKeyId, secretAccessKey, sessionToken?, expiration? }}, got {}", kind(value)));
    };
    let required = |key: &str| match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("{what}: '{key}' is empty")),
        None | Some(Value::Null) => Err(format!("{what}: '{key}' is missing")),
        Some(other) => Err(format!("{what}: '{key}' must be a string, got {}", kind(other))),
    };
    let access_key_id = required("accessKeyId")?;
    if !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("{what}: 'accessKeyId' must be letters and digits only (like AKIA… or ASIA…)"));
    }
    let secret_access_key = required("secretAccessKey")?;
    let session_token = match map.get("sessionToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("{what}: 'sessionToken' must be a string, got {}", kind(other))),
    };
    let expiry = match map.get("expiration") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(ms) if ms >= 0.0 => Some(UNIX_EPOCH + Duration::from_millis(ms as u64)),
            _ => return Err(format!("{what}: 'expiration' must be a Date or a time in milliseconds since 1970")),
        },
        Some(other) => {
            return Err(format!("{what}: 'expiration' must be a Date or a time in milliseconds since 1970, got {}", kind(other)))
        }
    };
    Ok(Credentials::new(access_key_id, secret_access_key, session_token, expiry, "native-pubsub"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null or undefined",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An error and its causes, as one line; a cause that only repeats the one before it (as the
/// chain's wrappers do) is left out.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut last = line.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if text != last {
            line.push_str(": ");
            line.push_str(&text);
        }
        last = text;
        source = cause.source();
    }
    line.trim_end().to_string()
}

/// The longest chain reason passed on: a `credential_process` may write pages to stderr.
const MAX_REASON_CHARS: usize = 500;

/// `text` from outside this process (a `credential_process`'s stderr, a provider's reply) with
/// every run of base64 characters that could be a key, a secret or a token replaced by
/// `[redacted]`: 16 or more with a digit or `+` in it, or in capitals and digits only, and
/// any of 32 or more. Words and most paths survive, so a diagnostic such as "run aws sso login"
/// still reaches the user; the text is cut at `MAX_REASON_CHARS`.
fn mask_secret_like(text: &str) -> String {
    // Without '=': base64 has it only as padding, and `NAME=value` must stay two runs.
    let is_base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/');
    let looks_secret = |run: &str| {
        let length = run.chars().count();
        length >= 32
            || (length >= 16
                && (run.contains(|c: char| c.is_ascii_digit() || c == '+')
                    || run.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())))
    };
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let run_end = rest.find(|c: char| !is_base64(c)).unwrap_or(rest.len());
        let (run, after) = rest.split_at(run_end);
        masked.push_str(if looks_secret(run) { "[redacted]" } else { run });
        let gap_end = after.find(is_base64).unwrap_or(after.len());
        masked.push_str(&after[..gap_end]);
        rest = &after[gap_end..];
    }
    match masked.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &masked[..cut]),
        None => masked,
    }
}

/// The default chain's failure, with the chain's reason, secret-like parts masked. Every one is
/// `CredentialsUnavailable`: the chain reads the environment and the profile files afresh on
/// each fetch, so "none found" or "invalid configuration" on a reconnect may be a file being
/// rewritten, and asking again can help. A first connect still fails at once with it.
fn describe_chain_failure(error: &CredentialsError) -> PubSubError {
    let reason = mask_secret_like(&with_sources(error));
    PubSubError::CredentialsUnavailable(match error {
        CredentialsError::CredentialsNotLoaded(_) => format!(
            "No AWS credentials found: pass the 'credentials' option, or set up the AWS default chain \
             (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials or SSO, \
             web identity, ECS or EC2 instance metadata). The chain said: {reason}"
        ),
        CredentialsError::InvalidConfiguration(_) => {
            format!("The AWS configuration for the default credential chain is invalid: {reason}")
        }
        _ => format!("Could not fetch AWS credentials from the default chain: {reason}"),
    })
}

/// Fetches credentials for one instance.
pub struct CredentialSource {
    option: CredentialsOption,
    region: String,
    /// The request JS is answering for the credentials function, if any.
    waiting: Mutex<Option<(u32, oneshot::Sender<Result<Credentials>>)>>,
    next_request: AtomicU32,
}

impl CredentialSource {
    pub fn new(option: CredentialsOption, region: String) -> Self {
        Self { option, region, waiting: Mutex::new(None), next_request: AtomicU32::new(1) }
    }

    /// Credentials that are not expired, within `timeout`. A source that can be asked again
    /// (the function, the default chain) fails with `CredentialsUnavailable` when it did not
    /// answer, failed or answered expired credentials; malformed or expired static ones fail with
    /// `Credentials`.
    pub async fn fetch(&self, delivery: &Delivery, timeout: Duration) -> Result<Credentials> {
        let credentials = match tokio::time::timeout(timeout, self.fetch_unbounded(delivery)).await {
            Ok(result) => result?,
            Err(_) => {
                let source = match self.option {
                    CredentialsOption::Function => "the credentials function did not settle",
                    _ => "the AWS default credential chain did not answer",
                };
                return Err(PubSubError::CredentialsUnavailable(format!(
                    "No credentials within {} ms (connectTimeout): {source}",
                    timeout.as_millis()
                )));
            }
        };
        if let Some(expiry) = credentials.expiry() {
            if let Ok(ago) = SystemTime::now().duration_since(expiry) {
                let (source, advice, error): (_, _, fn(String) -> PubSubError) = match self.option {
                    CredentialsOption::Static(_) => (
                        "The credentials in the 'credentials' option",
                        "pass a function that returns fresh ones",
                        PubSubError::Credentials,
                    ),
                    CredentialsOption::Function => (
                        "The credentials the credentials function returned",
                        "the function must return fresh ones",
                        PubSubError::CredentialsUnavailable,
                    ),
                    CredentialsOption::DefaultChain => (
                        "The credentials from the AWS default chain",
                        "refresh their source (the profile, `aws sso login`, the credential process) or pass a function that returns fresh ones",
                        PubSubError::CredentialsUnavailable,
                    ),
                };
                return Err(error(format!("{source} expired {} s ago (their 'expiration'); {advice}", ago.as_secs())));
            }
        }
        Ok(credentials)
    }

    async fn fetch_unbounded(&self, delivery: &Delivery) -> Result<Credentials> {
        match &self.option {
            CredentialsOption::Static(credentials) => Ok(credentials.clone()),
            CredentialsOption::Function => {
                let (sender, receiver) = oneshot::channel();
                let request = self.next_request.fetch_add(1, Ordering::Relaxed);
                *self.waiting.lock() = Some((request, sender));
                delivery.push(Event::CredentialsWanted { request });
                receiver.await.unwrap_or_else(|_| Err(PubSubError::Closed))
            }
            CredentialsOption::DefaultChain => {
                // Built for each fetch: a chain caches the profile files it parsed, and tools
                // that rotate keys rewrite them.
                let region = aws_config::Region::new(self.region.clone());
                let chain = DefaultCredentialsChain::builder().region(region).build().await;
                chain.provide_credentials().await.map_err(|error| describe_chain_failure(&error))
            }
        }
    }

    /// JS's answer to `Event::CredentialsWanted { request }`: the function's value, or why it
    /// failed and whether its value was malformed. Answers to a request no longer waited for
    /// are ignored.
    pub fn answer(&self, request: u32, answer: std::result::Result<&Value, (String, bool)>) {
        let mut waiting = self.waiting.lock();
        if !matches!(&*waiting, Some((id, _)) if *id == request) {
            return;
        }
        if let Some((_, sender)) = waiting.take() {
            // The function failing may heal; a malformed value is a bug in it that will not.
            let result = match answer {
                Ok(value) => parse_credentials(value, "The credentials function's result").map_err(PubSubError::Credentials),
                Err((reason, true)) => Err(PubSubError::Credentials(reason)),
                Err((reason, false)) => Err(PubSubError::CredentialsUnavailable(reason)),
            };
            let _ = sender.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_parse_with_optional_token_and_expiration() {
        let c = parse_credentials(&json!({ "accessKeyId": "AKID1", "secretAccessKey": "s", "sessionToken": "t", "expiration": 1000 }), "x").unwrap();
        assert_eq!((c.access_key_id(), c.secret_access_key(), c.session_token()), ("AKID1", "s", Some("t")));
        assert_eq!(c.expiry(), Some(UNIX_EPOCH + Duration::from_secs(1)));
    }

    #[test]
    fn every_chain_failure_may_heal_and_says_whether_nothing_was_found() {
        let failed = describe_chain_failure(&CredentialsError::provider_error("Non-success status: 503"));
        assert!(matches!(&failed, PubSubError::CredentialsUnavailable(m)
            if m.starts_with("Could not fetch AWS credentials from the default chain: ") && m.contains("503")), "{failed:?}");
        let timed_out = describe_chain_failure(&CredentialsError::provider_timed_out(Duration::from_secs(5)));
        assert!(matches!(timed_out, PubSubError::CredentialsUnavailable(_)), "{timed_out:?}");
        let none = describe_chain_failure(&CredentialsError::not_loaded("no providers in chain provided credentials"));
        assert!(matches!(&none, PubSubError::CredentialsUnavailable(m) if m.starts_with("No AWS credentials found")), "{none:?}");
    }

    #[test]
    fn chain_failures_mask_what_could_be_a_key_a_secret_or_a_token() {
        let stderr = "Stderr: export AWS_ACCESS_KEY_ID=AKIAIOSFODNNQEXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY \
                      token IQoJb3JpZ2luX2VjEHkaCXVzLWVhc3QtMSJHMEUCIQD, key b64longtextwithoutdigitsbutlong; \
                      the SSO session has expired: run aws sso login --profile dev-admin (see /home/runner/.aws/sso/cache)";
        let masked = mask_secret_like(stderr);
        for secret in ["AKIAIOSFODNNQEXAMPLE", "wJalrXUtnFEMI", "bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEHkaCXVzLWVhc3QtMSJHMEUCIQD", "b64longtextwithoutdigitsbutlong"] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains("AWS_ACCESS_KEY_ID=[redacted] AWS_SECRET_ACCESS_KEY=[redacted] token [redacted], key [redacted];"), "{masked}");
        assert!(masked.ends_with("the SSO session has expired: run aws sso login --profile dev-admin (see /home/runner/.aws/sso/cache)"), "{masked}");
        let failed = describe_chain_failure(&CredentialsError::provider_error(format!("external process exited with code 1. {stderr}")));
        assert!(matches!(&failed, PubSubError::CredentialsUnavailable(m) if m.contains("[redacted]") && !m.contains("wJalrXUtnFEMI")), "{failed:?}");
    }

    #[test]
    fn chain_failures_are_cut_at_a_length_a_message_can_carry() {
        let masked = mask_secret_like(&"é diagnostic ".repeat(100));
        assert_eq!(masked.chars().count(), MAX_REASON_CHARS + 1);
        assert!(masked.starts_with("é diagnostic é") && masked.ends_with('…'), "{masked}");
        assert_eq!(mask_secret_like("Non-success status: 503"), "Non-success status: 503");
    }

    #[test]
    fn malformed_credentials_say_what_is_wrong_without_echoing_values() {
        for (value, expected) in [
            (json!("AKID:secret"), "must be an object"),
            (json!({ "secretAccessKey": "hush" }), "'accessKeyId' is missing"),
            (json!({ "accessKeyId": "AKID", "secretAccessKey": 5 }), "'secretAccessKey' must be a string, got a number"),
            (json!({ "accessKeyId": "AK ID", "secretAccessKey": "hush" }), "letters and digits"),
            (json!({ "accessKeyId": "AKID", "secretAccessKey": "hush", "expiration": "soon" }), "'expiration'"),
        ] {
            let message = parse_credentials(&value, "X").unwrap_err();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("hush") && !message.contains("AK ID") && !message.contains("AKID:"), "{message}");
        }
    }
}
