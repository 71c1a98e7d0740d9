//! AWS credentials for signing, fetched before every connect: from the `credentials` option
//! (static keys, or a JS function that JS calls when asked) or else the AWS default chain
//! (aws-config: environment, shared profiles, SSO, web identity, ECS, instance metadata).
//! No message here ever contains a key, a secret or a token: values are described, never
//! echoed, and text from outside (the credentials function's error, a `credential_process`'s
//! stderr) is masked, for the secrets this process knows of and for anything shaped like one.

use std::collections::VecDeque;
use std::path::PathBuf;
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

/// The longest text from outside passed on in a message (a credentials function's error, the
/// chain's reason): a `credential_process` may write pages to stderr. Long enough for the
/// chain's list of the providers it tried, each with its reason.
const MAX_REASON_CHARS: usize = 1000;

/// Known secrets shorter than this are not looked for in text: a real secret access key has 40
/// characters and a session token hundreds, while a value this short (a test's `"s"`) is found
/// inside ordinary words, which masking it would garble.
const MIN_KNOWN_SECRET_CHARS: usize = 8;

/// How many secret values (secret access keys, session tokens) given or fetched in this process
/// are remembered for masking, the most recent ones.
const REMEMBERED_SECRETS: usize = 32;

/// Secret access keys and session tokens given as static credentials or fetched (from a
/// function or the default chain) by any instance of this process: text from outside is masked
/// for them whichever instance it reaches.
static SEEN_SECRETS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Remembers `credentials`' secret access key and session token, for [`known_secrets`].
fn remember_secrets(credentials: &Credentials) {
    remember_in(&mut SEEN_SECRETS.lock(), credentials);
}

/// Remembers `credentials`' secret values in `seen`, the most recent [`REMEMBERED_SECRETS`] of
/// those long enough to look for.
fn remember_in(seen: &mut VecDeque<String>, credentials: &Credentials) {
    for value in std::iter::once(credentials.secret_access_key()).chain(credentials.session_token()) {
        if value.chars().count() < MIN_KNOWN_SECRET_CHARS {
            continue;
        }
        if let Some(at) = seen.iter().position(|s| s == value) {
            seen.remove(at);
        }
        seen.push_back(value.to_string());
        if seen.len() > REMEMBERED_SECRETS {
            seen.pop_front();
        }
    }
}

/// The shared config and credentials files (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`,
/// else `~/.aws/config` and `~/.aws/credentials`), read as they are now: their secrets are
/// masked, and their profiles tell whether `AWS_PROFILE` names one that exists.
struct ProfileFiles {
    /// (path, is the config file rather than the credentials file, its text if it could be read)
    files: Vec<(PathBuf, bool, Option<String>)>,
}

impl ProfileFiles {
    /// Files over this size are not read: no profile file is that large.
    const MAX_BYTES: u64 = 1 << 20;

    fn read() -> Self {
        let home = ["HOME", "USERPROFILE"].iter().find_map(|name| std::env::var_os(name).filter(|v| !v.is_empty())).map(PathBuf::from);
        let path = |variable: &str, default: &str| {
            let given = std::env::var_os(variable).filter(|v| !v.is_empty()).map(PathBuf::from);
            let path = given.unwrap_or_else(|| PathBuf::from(default));
            match (path.strip_prefix("~"), &home) {
                (Ok(rest), Some(home)) => home.join(rest),
                _ => path,
            }
        };
        let read = |path: &PathBuf| {
            let file = std::fs::File::open(path).ok()?;
            if file.metadata().ok()?.len() > Self::MAX_BYTES {
                return None;
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut { file }, &mut text).ok()?;
            Some(text)
        };
        let files = [(path("AWS_CONFIG_FILE", "~/.aws/config"), true), (path("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), false)]
            .into_iter()
            .map(|(path, is_config)| {
                let text = read(&path);
                (path, is_config, text)
            })
            .collect();
        Self { files }
    }

    fn secrets(&self) -> Vec<String> {
        self.files.iter().filter_map(|(_, _, text)| text.as_deref()).flat_map(secrets_in_profile_file).collect()
    }

    /// When `AWS_PROFILE` names a profile neither file defines, a sentence that says so. aws-config
    /// says it only when the files define other profiles; with no files, its chain just reports
    /// the profile provider as "not enabled".
    fn missing_profile_hint(&self, selected: Option<&str>, known: &[String]) -> Option<String> {
        let selected = selected.filter(|name| !name.is_empty())?;
        let defined = self
            .files
            .iter()
            .any(|(_, is_config, text)| text.as_deref().is_some_and(|text| profiles_in_file(text, *is_config).any(|name| name == selected)));
        if defined {
            return None;
        }
        let looked: Vec<String> = self
            .files
            .iter()
            .map(|(path, _, text)| format!("{}{}", path.display(), if text.is_some() { "" } else { " (not found)" }))
            .collect();
        // Known secrets only: the paths are ours to show, and a temporary directory's random
        // name (`…-y6Fr6I/credentials`) has the shape of a secret.
        Some(mask_known(
            &format!("AWS_PROFILE is '{selected}', but no profile of that name is defined (looked in {}).", looked.join(" and ")),
            known,
        ))
    }
}

/// The values of `aws_secret_access_key` and `aws_session_token` in a shared config or
/// credentials file, whatever its sections (read leniently: a file aws-config cannot parse
/// still has its secrets masked).
fn secrets_in_profile_file(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| {
            matches!(key.trim().to_ascii_lowercase().as_str(), "aws_secret_access_key" | "aws_session_token" | "aws_security_token")
        })
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
        .collect()
}

/// The names of the profiles a file defines: `[default]` and `[profile name]` in the config
/// file (`[name]` too, which aws-config ignores with a warning), `[name]` in the credentials file.
fn profiles_in_file(text: &str, is_config: bool) -> impl Iterator<Item = &str> {
    text.lines().filter_map(move |line| {
        let header = line.trim().strip_prefix('[')?.split(']').next()?.trim();
        let name = match header.split_once(char::is_whitespace) {
            Some((kind, name)) if is_config && kind == "profile" => name.trim(),
            Some(_) => return None,
            None => header,
        };
        (!name.is_empty()).then_some(name)
    })
}

/// Every secret value this process knows of, longest first, each also as it reads
/// percent-encoded (in a URL): those seen in credentials given or fetched, those of the
/// environment and those of the shared profile files.
fn known_secrets(files: &ProfileFiles) -> Vec<String> {
    let environment = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"].into_iter().filter_map(|name| std::env::var(name).ok());
    let mut known: Vec<String> = SEEN_SECRETS.lock().iter().cloned().chain(environment).chain(files.secrets()).collect();
    let encoded: Vec<String> = known
        .iter()
        .filter(|value| value.contains(['/', '+', '=']))
        .map(|value| value.replace('/', "%2F").replace('+', "%2B").replace('=', "%3D"))
        .collect();
    known.extend(encoded);
    known.retain(|value| value.chars().count() >= MIN_KNOWN_SECRET_CHARS);
    known.sort_by_key(|value| std::cmp::Reverse(value.len()));
    known.dedup();
    known
}

/// A run of base64 characters that is a name rather than a secret: capitalised words (the first
/// may be lower case), each of two letters or more, one of four or more, with at most one group
/// of up to three digits followed by a word or the end, as in `Ec2InstanceMetadata` (the chain's
/// instance-metadata provider) or `Sha256Checksum`. Random base64 is almost never like this,
/// and AWS's shapes never are (key ids are capitals and digits; secrets and tokens are longer
/// than the runs this is asked about).
fn is_camel_case_name(run: &str) -> bool {
    let bytes = run.as_bytes();
    let (mut i, mut digit_groups, mut long_word) = (0, 0, false);
    while i < bytes.len() {
        let start = i;
        if bytes[i].is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            digit_groups += 1;
            if digit_groups > 1 || i - start > 3 || start == 0 || (i < bytes.len() && !bytes[i].is_ascii_uppercase()) {
                return false;
            }
            continue;
        }
        if bytes[i].is_ascii_uppercase() {
            i += 1;
        } else if start != 0 || !bytes[i].is_ascii_lowercase() {
            return false;
        }
        while i < bytes.len() && bytes[i].is_ascii_lowercase() {
            i += 1;
        }
        if i - start < 2 || (i < bytes.len() && !bytes[i].is_ascii_alphanumeric()) {
            return false;
        }
        long_word |= i - start >= 4;
    }
    long_word
}

/// `text` with every `known` secret value replaced by `[redacted]`.
fn mask_known(text: &str, known: &[String]) -> String {
    let mut text = text.to_string();
    for secret in known {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "[redacted]");
        }
    }
    text
}

/// `text` from outside this process (a credentials function's error, a `credential_process`'s
/// stderr, a provider's reply) with every `known` secret value, and every run of base64
/// characters that could be a key, a secret or a token, replaced by `[redacted]`: 16 or more
/// with a digit or `+` in it, or in capitals and digits only, unless it is a CamelCase name
/// ([`is_camel_case_name`]), and any of 32 or more. Words, names (providers', environment
/// variables') and most paths survive, so a diagnostic such as "run aws sso login" still reaches
/// the user.
fn redact(text: &str, known: &[String]) -> String {
    let text = mask_known(text, known);
    // Without '=': base64 has it only as padding, and `NAME=value` must stay two runs.
    let is_base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/');
    let looks_secret = |run: &str| {
        let length = run.chars().count();
        length >= 32
            || (length >= 16
                && (run.contains(|c: char| c.is_ascii_digit() || c == '+')
                    || run.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
                && !is_camel_case_name(run))
    };
    let mut masked = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let run_end = rest.find(|c: char| !is_base64(c)).unwrap_or(rest.len());
        let (run, after) = rest.split_at(run_end);
        masked.push_str(if looks_secret(run) { "[redacted]" } else { run });
        let gap_end = after.find(is_base64).unwrap_or(after.len());
        masked.push_str(&after[..gap_end]);
        rest = &after[gap_end..];
    }
    masked
}

/// `text` cut to about `MAX_REASON_CHARS` characters: at the last line break in the second half
/// of that length, else at the last space there, else at the length, followed by a marker that
/// says how much was left out.
fn cut_long(text: &str) -> String {
    let Some((limit, _)) = text.char_indices().nth(MAX_REASON_CHARS) else {
        return text.to_string();
    };
    // Up to and with the character at the limit: a break there cuts nothing more.
    let head = &text[..limit + text[limit..].chars().next().map_or(0, char::len_utf8)];
    let at_break = |is_break: fn(char) -> bool| head.rfind(is_break).filter(|&at| at >= limit / 2);
    let cut = at_break(|c| c == '\n').or_else(|| at_break(char::is_whitespace)).unwrap_or(limit);
    let kept = text[..cut].trim_end();
    let left_out = text[kept.len()..].trim().chars().count();
    format!("{kept} … [{left_out} more characters cut]")
}

/// Text from outside, as a message may carry it: secrets masked ([`redact`]), then cut
/// ([`cut_long`]).
fn redact_and_cut(text: &str, known: &[String]) -> String {
    cut_long(&redact(text, known))
}

/// The default chain's failure, with the chain's reason, secrets masked (`known`, and by shape),
/// and `profile_hint` (see [`ProfileFiles::missing_profile_hint`]) first when nothing was found.
/// Every one is `CredentialsUnavailable`: the chain reads the environment and the profile files
/// afresh on each fetch, so "none found" or "invalid configuration" on a reconnect may be a file
/// being rewritten, and asking again can help. A first connect still fails at once with it.
fn describe_chain_failure(error: &CredentialsError, known: &[String], profile_hint: Option<String>) -> PubSubError {
    let reason = redact_and_cut(&with_sources(error), known);
    PubSubError::CredentialsUnavailable(match error {
        CredentialsError::CredentialsNotLoaded(_) => {
            let advice = "the 'credentials' option, or set up the AWS default chain (AWS_ACCESS_KEY_ID and \
                          AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials or SSO, web identity, ECS or \
                          EC2 instance metadata)";
            match profile_hint {
                Some(hint) => format!("No AWS credentials found: {hint} Pass {advice}. The chain said: {reason}"),
                None => format!("No AWS credentials found: pass {advice}. The chain said: {reason}"),
            }
        }
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
        if let CredentialsOption::Static(credentials) = &option {
            remember_secrets(credentials);
        }
        Self { option, region, waiting: Mutex::new(None), next_request: AtomicU32::new(1) }
    }

    /// Credentials that are not expired, within `timeout`. A source that can be asked again
    /// (the function, the default chain) fails with `CredentialsUnavailable` when it did not
    /// answer, failed or answered expired credentials; malformed or expired static ones fail with
    /// `Credentials`.
    pub async fn fetch(&self, delivery: &Delivery, timeout: Duration) -> Result<Credentials> {
        let credentials = match tokio::time::timeout(timeout, self.fetch_unbounded(delivery)).await {
            Ok(result) => {
                let credentials = result?;
                // Expired or not, they are secrets that later text from outside may repeat.
                remember_secrets(&credentials);
                credentials
            }
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
                // What the function threw is the user's text, which may quote a secret: masked
                // here, off the JS thread, as it reads the profile files.
                let known = || known_secrets(&ProfileFiles::read());
                receiver.await.unwrap_or_else(|_| Err(PubSubError::Closed)).map_err(|error| match error {
                    PubSubError::Credentials(reason) => PubSubError::Credentials(redact_and_cut(&reason, &known())),
                    PubSubError::CredentialsUnavailable(reason) => PubSubError::CredentialsUnavailable(redact_and_cut(&reason, &known())),
                    other => other,
                })
            }
            CredentialsOption::DefaultChain => {
                // Built for each fetch: a chain caches the profile files it parsed, and tools
                // that rotate keys rewrite them.
                let region = aws_config::Region::new(self.region.clone());
                let chain = DefaultCredentialsChain::builder().region(region).build().await;
                chain.provide_credentials().await.map_err(|error| {
                    let files = ProfileFiles::read();
                    let known = known_secrets(&files);
                    let profile = std::env::var("AWS_PROFILE").ok();
                    describe_chain_failure(&error, &known, files.missing_profile_hint(profile.as_deref(), &known))
                })
            }
        }
    }

    /// JS's answer to `Event::CredentialsWanted { request }`: the function's value, or why it
    /// failed (the text of what it threw, as it is: `fetch_unbounded` masks it) and whether its
    /// value was malformed. Answers to a request no longer waited for are ignored.
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
        let c = parse_credentials(&json!({ "accessKeyId": "AKID1", "secretAccessKey": "s", "sessionToken": "" }), "x").unwrap();
        assert_eq!(c.session_token(), None, "an empty session token is none");
    }

    #[test]
    fn every_chain_failure_may_heal_and_says_whether_nothing_was_found() {
        let failed = describe_chain_failure(&CredentialsError::provider_error("Non-success status: 503"), &[], None);
        assert!(matches!(&failed, PubSubError::CredentialsUnavailable(m)
            if m.starts_with("Could not fetch AWS credentials from the default chain: ") && m.contains("503")), "{failed:?}");
        let timed_out = describe_chain_failure(&CredentialsError::provider_timed_out(Duration::from_secs(5)), &[], None);
        assert!(matches!(timed_out, PubSubError::CredentialsUnavailable(_)), "{timed_out:?}");
        let none = describe_chain_failure(&CredentialsError::not_loaded("no providers in chain provided credentials"), &[], None);
        assert!(matches!(&none, PubSubError::CredentialsUnavailable(m) if m.starts_with("No AWS credentials found")), "{none:?}");
        let invalid = describe_chain_failure(&CredentialsError::invalid_configuration("profile 'p' has no region"), &[], None);
        assert!(matches!(&invalid, PubSubError::CredentialsUnavailable(m)
            if m.starts_with("The AWS configuration for the default credential chain is invalid: ") && m.contains("no region")), "{invalid:?}");
    }

    #[test]
    fn chain_failures_mask_what_could_be_a_key_a_secret_or_a_token() {
        let stderr = "Stderr: export AWS_ACCESS_KEY_ID=AKIAIOSFODNNQEXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY \
                      token IQoJb3JpZ2luX2VjEHkaCXVzLWVhc3QtMSJHMEUCIQD, key b64longtextwithoutdigitsbutlong; \
                      the SSO session has expired: run aws sso login --profile dev-admin (see /home/runner/.aws/sso/cache)";
        let masked = redact(stderr, &[]);
        for secret in ["AKIAIOSFODNNQEXAMPLE", "wJalrXUtnFEMI", "bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEHkaCXVzLWVhc3QtMSJHMEUCIQD", "b64longtextwithoutdigitsbutlong"] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains("AWS_ACCESS_KEY_ID=[redacted] AWS_SECRET_ACCESS_KEY=[redacted] token [redacted], key [redacted];"), "{masked}");
        assert!(masked.ends_with("the SSO session has expired: run aws sso login --profile dev-admin (see /home/runner/.aws/sso/cache)"), "{masked}");
        let failed = describe_chain_failure(&CredentialsError::provider_error(format!("external process exited with code 1. {stderr}")), &[], None);
        assert!(matches!(&failed, PubSubError::CredentialsUnavailable(m) if m.contains("[redacted]") && !m.contains("wJalrXUtnFEMI")), "{failed:?}");
    }

    /// What aws-config 1.13's chain says when it finds nothing (HOME empty, IMDS disabled).
    const NOTHING_FOUND: &str = "the credential provider was not enabled: no credentials found in chain. Attempted:\n  \
        Environment: the credential provider was not enabled: environment variable not set\n  \
        Profile: the credential provider was not enabled\n  \
        WebIdentityToken: the credential provider was not enabled: $AWS_WEB_IDENTITY_TOKEN_FILE was not set\n  \
        EcsContainer: the credential provider was not enabled: ECS provider not configured\n  \
        Ec2InstanceMetadata: the credential provider was not enabled: IMDS disabled by AWS_EC2_METADATA_DISABLED env var set to `true`";

    #[test]
    fn provider_and_environment_variable_names_are_not_taken_for_secrets() {
        // Before: "[redacted]: the credential provider was not enabled: IMDS disabled by
        // AWS_EC2_METADATA_DISAB…" (Ec2InstanceMetadata has 19 characters and a digit; the text was
        // cut at 500 characters, in the middle of a word).
        assert_eq!(redact_and_cut(NOTHING_FOUND, &[]), NOTHING_FOUND);
        let none = describe_chain_failure(&CredentialsError::not_loaded(NOTHING_FOUND), &[], None).to_string();
        assert!(none.ends_with("Ec2InstanceMetadata: the credential provider was not enabled: IMDS disabled by AWS_EC2_METADATA_DISABLED env var set to `true`"), "{none}");
        for name in ["Ec2InstanceMetadata", "Sha256Checksum", "ProfileFileCredentials", "ssoOidc2Client", "WebIdentityToken", "InstanceMetadata123"] {
            assert!(is_camel_case_name(name), "{name}");
        }
        for shape in [
            "AKIAIOSFODNNQEXAMPLE", "ASIA2EXAMPLE3KEYID", "wJalrXUtnFEMI7K7MDENG", "Ab1Cd2Ef3Gh4Ij5Kl", "Abcd12345Efghijkl",
            "5f3c9a1b2d4e6f70aa", "Ec2Instance/Metadata", "Ec2Instance+Metadata", "AbcdE2Fghijklmnop", "2InstanceMetadata",
            // Two groups of digits; words of two letters only, with a group of digits.
            "Ec2Instance3Metadata", "AbCdEfGh12IjKlMnOp",
        ] {
            assert!(!is_camel_case_name(shape), "{shape}");
        }
        assert_eq!(redact("AKIAIOSFODNNQEXAMPLE, Ab1Cd2Ef3Gh4Ij5Kl", &[]), "[redacted], [redacted]");
        // Under 32 characters, a run needs a digit or a '+' (or to be all capitals) to be masked:
        // a path survives.
        assert_eq!(redact("see /usr/share/nginx/html abcdefgh+ijklmnop", &[]), "see /usr/share/nginx/html [redacted]");
    }

    #[test]
    fn known_secrets_are_masked_whatever_their_shape_and_also_percent_encoded() {
        let known = vec!["vault-canary-secret".to_string(), "tok/en+canary=".to_string(), "tok%2Fen%2Bcanary%3D".to_string()];
        let text = "vault said no for key vault-canary-secret (token tok/en+canary=, in a URL tok%2Fen%2Bcanary%3D)";
        assert_eq!(redact(text, &known), "vault said no for key [redacted] (token [redacted], in a URL [redacted])");
    }

    #[test]
    fn the_secrets_this_process_knows_of_include_those_given_or_fetched_before() {
        let given = Credentials::new("AKIDREMEMBERED", "remembered-secret-value", Some("remembered-token-value".into()), None, "test");
        remember_secrets(&given);
        let files = ProfileFiles { files: vec![(PathBuf::from("config"), true, Some("[profile p]\naws_secret_access_key = from-a-profile-file/x\n".into()))] };
        let known = known_secrets(&files);
        for value in ["remembered-secret-value", "remembered-token-value", "from-a-profile-file/x", "from-a-profile-file%2Fx"] {
            assert!(known.iter().any(|k| k == value), "{value} in {known:?}");
        }
        // Too short to look for: it would be found inside words.
        remember_secrets(&Credentials::new("AKID", "s", Some("short".into()), None, "test"));
        assert!(!known_secrets(&files).iter().any(|k| k == "s" || k == "short"));
        assert!(known.windows(2).all(|pair| pair[0].len() >= pair[1].len()), "longest first: {known:?}");
    }

    #[test]
    fn the_32_most_recent_secrets_of_8_characters_or_more_are_remembered() {
        // Its own list: the process's is shared by the tests running alongside.
        let mut seen = VecDeque::new();
        let secret = |i: usize| format!("secret-{i:02}");
        for i in 0..REMEMBERED_SECRETS {
            remember_in(&mut seen, &Credentials::new("AKID", secret(i), None, None, "test"));
        }
        assert_eq!(seen.len(), REMEMBERED_SECRETS);
        assert_eq!(seen.front(), Some(&secret(0)));
        // Given again, a secret is the most recent one; the 33rd pushes out the oldest.
        remember_in(&mut seen, &Credentials::new("AKID", secret(0), None, None, "test"));
        assert_eq!(seen.back(), Some(&secret(0)));
        remember_in(&mut seen, &Credentials::new("AKID", "secret-new", Some("1234567".into()), None, "test"));
        assert_eq!(seen.len(), REMEMBERED_SECRETS);
        assert!(!seen.contains(&secret(1)) && seen.contains(&secret(2)) && seen.back().is_some_and(|s| s == "secret-new"));
        assert!(!seen.iter().any(|s| s == "1234567"), "7 characters: too short to look for");
        remember_in(&mut seen, &Credentials::new("AKID", "8-chars!", None, None, "test"));
        assert_eq!(seen.back().map(String::as_str), Some("8-chars!"));
    }

    #[test]
    fn profile_files_give_their_secrets_and_profile_names() {
        let credentials = "[default]\naws_access_key_id = AKIDFILE\n aws_secret_access_key=file-secret-one \n\n[dev]\nAWS_SESSION_TOKEN = file-token-two\n# aws_secret_access_key\n";
        assert_eq!(secrets_in_profile_file(credentials), ["file-secret-one", "file-token-two"]);
        assert_eq!(profiles_in_file(credentials, false).collect::<Vec<_>>(), ["default", "dev"]);
        let config = "[default]\nregion = eu-west-1\n[profile dev-admin]\nsso_session = corp\n[sso-session corp]\n[services s3]\n[legacy]\n";
        assert_eq!(profiles_in_file(config, true).collect::<Vec<_>>(), ["default", "dev-admin", "legacy"]);
    }

    #[test]
    fn a_profile_no_file_defines_is_named_first() {
        let missing = ProfileFiles { files: vec![(PathBuf::from("/h/.aws/config"), true, None), (PathBuf::from("/h/.aws/credentials"), false, None)] };
        let hint = missing.missing_profile_hint(Some("nope"), &[]);
        assert_eq!(
            hint.as_deref(),
            Some("AWS_PROFILE is 'nope', but no profile of that name is defined (looked in /h/.aws/config (not found) and /h/.aws/credentials (not found)).")
        );
        let none = describe_chain_failure(&CredentialsError::not_loaded(NOTHING_FOUND), &[], hint).to_string();
        assert!(none.starts_with("No AWS credentials found: AWS_PROFILE is 'nope', but no profile of that name is defined"), "{none}");
        assert!(none.contains("(not found)). Pass the 'credentials' option, or set up the AWS default chain"), "{none}");
        assert_eq!(missing.missing_profile_hint(None, &[]), None);
        assert_eq!(missing.missing_profile_hint(Some(""), &[]), None);
        let defined = ProfileFiles { files: vec![(PathBuf::from("config"), true, Some("[profile nope]\nregion = x\n".into()))] };
        assert_eq!(defined.missing_profile_hint(Some("nope"), &[]), None);
        let elsewhere = ProfileFiles { files: vec![(PathBuf::from("credentials"), false, Some("[other]\n".into()))] };
        assert!(elsewhere.missing_profile_hint(Some("nope"), &[]).unwrap().contains("looked in credentials)"));
        // A temporary directory's random name has the shape of a secret; the path is shown whole.
        let temporary = ProfileFiles { files: vec![(PathBuf::from("/tmp/native-pubsub-aws-y6Fr6I/credentials"), false, None)] };
        assert!(temporary.missing_profile_hint(Some("nope"), &[]).unwrap().contains("looked in /tmp/native-pubsub-aws-y6Fr6I/credentials (not found)"));
    }

    #[test]
    fn long_text_is_cut_at_a_line_or_a_word_with_a_marker() {
        // Before: cut at 500 characters wherever that fell, with "…" alone.
        let lines: String = (1..=40).map(|i| format!("line {i}: é diagnostic text of some length\n")).collect();
        let cut = redact_and_cut(&lines, &[]);
        let (kept, marker) = cut.split_once(" … [").unwrap();
        assert!(kept.ends_with(": é diagnostic text of some length") && kept.chars().count() <= MAX_REASON_CHARS, "{cut}");
        assert_eq!(marker, format!("{} more characters cut]", lines[kept.len()..].trim().chars().count()));
        assert!(lines[kept.len()..].starts_with('\n'), "cut at a line break");
        let words = "word ".repeat(300);
        let cut = cut_long(&words);
        assert!(cut.starts_with("word word") && cut.ends_with("word … [499 more characters cut]"), "{cut}");
        assert!(!cut.contains("wor …"), "{cut}");
        let unbroken = "x".repeat(MAX_REASON_CHARS + 10);
        assert_eq!(cut_long(&unbroken), format!("{} … [10 more characters cut]", "x".repeat(MAX_REASON_CHARS)));
        assert_eq!(cut_long("Non-success status: 503"), "Non-success status: 503");
        // A break in the first half is not taken: too much would be lost.
        let early_break = format!("first\n{}", "x".repeat(MAX_REASON_CHARS + 10));
        assert_eq!(cut_long(&early_break), format!("first\n{} … [16 more characters cut]", "x".repeat(MAX_REASON_CHARS - 6)));
        // Cut at a character, not inside one.
        assert_eq!(cut_long(&"é".repeat(MAX_REASON_CHARS + 10)), format!("{} … [10 more characters cut]", "é".repeat(MAX_REASON_CHARS)));
    }

    #[test]
    fn malformed_credentials_say_what_is_wrong_without_echoing_values() {
        for (value, expected) in [
            (json!("AKID:secret"), "must be an object"),
            (json!({ "secretAccessKey": "hush" }), "'accessKeyId' is missing"),
            (json!({ "accessKeyId": "AKID", "secretAccessKey": 5 }), "'secretAccessKey' must be a string, got a number"),
            (json!({ "accessKeyId": "AK ID", "secretAccessKey": "hush" }), "letters and digits"),
            (json!({ "accessKeyId": "AKID", "secretAccessKey": "hush", "expiration": "soon" }), "'expiration'"),
            (json!({ "accessKeyId": "AKID", "secretAccessKey": "hush", "expiration": -1 }), "'expiration' must be a Date or a time in milliseconds"),
            (json!({ "accessKeyId": "", "secretAccessKey": "hush" }), "'accessKeyId' is empty"),
            (json!({ "accessKeyId": "AKID", "secretAccessKey": "" }), "'secretAccessKey' is empty"),
        ] {
            let message = parse_credentials(&value, "X").unwrap_err();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("hush") && !message.contains("AK ID") && !message.contains("AKID:"), "{message}");
        }
    }
}
