//! AWS IoT's WebSocket URL: SigV4-presigned for `GET /mqtt`, service `iotdevicegateway`,
//! signed header `host`, with the session token left out of the signature and appended after
//! it as `X-Amz-Security-Token` (what AWS IoT wants). Signed afresh before every connect.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SessionTokenMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use aws_sigv4::sign::v4;
use parking_lot::Mutex;

use crate::credentials::Credentials;
use crate::errors::{PubSubError, Result};

pub const SERVICE: &str = "iotdevicegateway";
/// The URL is used at once; a short life limits what a leaked one is worth.
const EXPIRES_IN: Duration = Duration::from_secs(300);
/// Query parameters whose values are secret or derived from secrets.
const SECRET_PARAMS: &[&str] = &["x-amz-signature=", "x-amz-credential=", "x-amz-security-token="];

/// Signs WebSocket upgrade requests with the credentials fetched for the current connect.
pub struct Presigner {
    region: String,
    credentials: Mutex<Option<Credentials>>,
    /// Why the last request could not be signed (rumqttc's request hook cannot fail).
    failure: Mutex<Option<PubSubError>>,
}

impl Presigner {
    pub fn new(region: String) -> Self {
        Self { region, credentials: Mutex::new(None), failure: Mutex::new(None) }
    }

    /// The credentials the next upgrade request is signed with.
    pub fn use_credentials(&self, credentials: Credentials) {
        *self.credentials.lock() = Some(credentials);
        *self.failure.lock() = None;
    }

    /// Why signing failed during the last connect, if it did.
    pub fn take_failure(&self) -> Option<PubSubError> {
        self.failure.lock().take()
    }

    /// rumqttc's request modifier: adds the signature to the upgrade request's URL.
    pub fn sign_request(&self, mut request: http::Request<()>) -> http::Request<()> {
        if let Err(error) = self.presign(&mut request, SystemTime::now()) {
            *self.failure.lock() = Some(error);
        }
        request
    }

    fn presign(&self, request: &mut http::Request<()>, time: SystemTime) -> Result<()> {
        let failed = |why: String| PubSubError::Credentials(format!("Cannot sign the AWS IoT URL: {why}"));
        let credentials = self.credentials.lock().clone().ok_or_else(|| failed("no credentials were fetched".into()))?;
        let host = match request.headers().get(http::header::HOST).map(|h| h.to_str()) {
            Some(Ok(host)) => host.to_string(),
            _ => request.uri().authority().map(|a| a.to_string()).ok_or_else(|| failed("the URL has no host".into()))?,
        };
        let identity = credentials.into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.session_token_mode = SessionTokenMode::Exclude;
        settings.expires_in = Some(EXPIRES_IN);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| failed(e.to_string()))?
            .into();
        let uri = request.uri().to_string();
        let signable = SignableRequest::new("GET", &uri, std::iter::once(("host", host.as_str())), SignableBody::Bytes(&[]))
            .map_err(|e| failed(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| failed(e.to_string()))?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// `text` with the values of `X-Amz-Signature`, `X-Amz-Credential` and `X-Amz-Security-Token`
/// replaced by `***`: for any message that may show a presigned URL.
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while let Some((start, name)) = SECRET_PARAMS.iter().filter_map(|p| lower[at..].find(p).map(|i| (at + i, p))).min() {
        let value_start = start + name.len();
        let value_end = lower[value_start..]
            .find(|c: char| c == '&' || c == '#' || c == '"' || c == '\'' || c.is_whitespace())
            .map_or(text.len(), |i| value_start + i);
        out.push_str(&text[copied..value_start]);
        out.push_str("***");
        copied = value_end;
        at = value_end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_url(token: Option<&str>) -> String {
        let presigner = Presigner::new("us-east-1".into());
        presigner.use_credentials(Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token.map(String::from), None, "test"));
        let mut request = http::Request::builder()
            .uri("wss://abc-ats.iot.us-east-1.amazonaws.com/mqtt")
            .header("host", "abc-ats.iot.us-east-1.amazonaws.com")
            .body(())
            .unwrap();
        // 2015-08-30T12:36:00Z, the date of AWS's own SigV4 examples.
        presigner.presign(&mut request, SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)).unwrap();
        request.uri().to_string()
    }

    #[test]
    fn the_url_is_signed_for_iot_with_the_token_after_the_signature() {
        let url = signed_url(Some("TOKEN/+="));
        assert!(url.starts_with("wss://abc-ats.iot.us-east-1.amazonaws.com/mqtt?X-Amz-Algorithm=AWS4-HMAC-SHA256"), "{url}");
        assert!(url.contains("X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fiotdevicegateway%2Faws4_request"), "{url}");
        assert!(url.contains("X-Amz-Date=20150830T123600Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature="), "{url}");
        let signature_at = url.find("X-Amz-Signature=").unwrap();
        let token_at = url.find("X-Amz-Security-Token=TOKEN%2F%2B%3D").unwrap();
        assert!(token_at > signature_at, "{url}");
        // The token is not signed: the signature is the same with or without it.
        let signature = |u: &str| u.split("X-Amz-Signature=").nth(1).unwrap()[..64].to_string();
        assert_eq!(signature(&url), signature(&signed_url(None)));
    }

    #[test]
    fn a_request_that_could_not_be_signed_says_why_once() {
        let presigner = Presigner::new("us-east-1".into());
        let request = http::Request::builder().uri("wss://abc-ats.iot.us-east-1.amazonaws.com/mqtt").body(()).unwrap();
        let request = presigner.sign_request(request);
        assert_eq!(request.uri().query(), None, "not signed");
        let failure = presigner.take_failure().expect("why it was not signed");
        assert_eq!(failure.code(), "ERR_CREDENTIALS");
        assert!(failure.to_string().contains("no credentials were fetched"), "{failure}");
        assert!(presigner.take_failure().is_none());
    }

    #[test]
    fn redaction_hides_signature_credential_and_token_only() {
        let url = signed_url(Some("TOKEN"));
        let shown = redact(&format!("failed: {url} (again)"));
        assert!(!shown.contains("AKIDEXAMPLE") && !shown.contains("TOKEN"), "{shown}");
        assert!(shown.contains("X-Amz-Signature=***&X-Amz-Security-Token=***"), "{shown}");
        assert!(shown.contains("X-Amz-Credential=***&X-Amz-Date=20150830T123600Z"), "{shown}");
        assert!(shown.ends_with(" (again)"), "{shown}");
        assert_eq!(redact("x-amz-signature=abc"), "x-amz-signature=***");
        // A value ends at '&', '#', a quote or a space.
        assert_eq!(
            redact("\"X-Amz-Signature=abc\" 'X-Amz-Credential=def' X-Amz-Security-Token=ghi#frag x-amz-signature=jkl\tend"),
            "\"X-Amz-Signature=***\" 'X-Amz-Credential=***' X-Amz-Security-Token=***#frag x-amz-signature=***\tend"
        );
    }
}
