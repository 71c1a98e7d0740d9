//! AWS IoT Core's message-broker limits that cannot be raised ("AWS IoT Core endpoints and
//! quotas", and "AWS IoT differences from MQTT specifications"). AWS IoT answers a packet past
//! one of them by closing the connection (which costs every subscription a reconnect, and a
//! QoS 1 publish three of them before it is given up), or, for QoS 2, by never acknowledging it
//! (the publish or subscription would wait for ever). They are checked before anything is
//! sent when the broker is AWS IoT Core (`ClientOptions::aws_iot_broker`: the IoT provider, or
//! the generic one on an AWS IoT host); other brokers have other limits. Its per-connection
//! rates are kept by pacing (`PublishPace`): past them AWS IoT throttles, and never
//! acknowledges a throttled QoS 1 publish.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::errors::{shortened, PubSubError, Result};
use crate::topic::routing_filter;

/// The MQTT client id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Packets awaiting AWS IoT's ack at once ("Maximum inbound unacknowledged messages"): past it
/// AWS IoT takes no new message from the client until it has acked one, and MQTT 3.1.1 gives it
/// no way to say so, so a publish past it could wait for ever.
pub const MAX_INFLIGHT: u16 = 100;
/// Topic filters in one SUBSCRIBE: AWS IoT closes the connection of a client that sends more.
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 8;
/// The payload of one PUBLISH, the will's included ("128 KB"; AWS's KB here are KiB).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// A publish topic, in bytes of UTF-8, not counting a Basic Ingest prefix.
pub const MAX_TOPIC_BYTES: usize = 256;
/// How much of a topic a message shows.
const SHOWN_CHARS: usize = 80;
/// Between two CONNECTs of one client id: AWS IoT takes one per second, and refuses the others.
pub const MIN_CONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a connection stays up after its last observer left, for the next subscription: a
/// request/response flow subscribes to each reply topic, and a CONNECT for each would be held
/// back by `MIN_CONNECT_INTERVAL`.
pub const IDLE_LINGER: Duration = Duration::from_secs(1);
/// Forward slashes in a topic or topic filter (so at most 8 levels), not counting a Basic
/// Ingest or shared-subscription prefix.
pub const MAX_SLASHES: usize = 7;

/// PUBLISHes one connection may send in a second ("Publish requests per second per
/// connection"); AWS IoT throttles what goes past it, and a throttled QoS 1 publish is never
/// acknowledged.
pub const MAX_PUBLISHES_PER_SECOND: usize = 100;
/// Bytes of PUBLISHes one connection may send in a second ("Throughput per connection").
pub const MAX_PUBLISH_BYTES_PER_SECOND: usize = 512 * 1024;
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Bytes of a PUBLISH besides its topic and payload, at most: fixed header (5), topic length
/// (2), packet id (2).
const PUBLISH_OVERHEAD_BYTES: usize = 9;

/// Keeps one connection's publishes within AWS IoT's per-connection rates: in any second, at
/// most `MAX_PUBLISHES_PER_SECOND` of them written and `MAX_PUBLISH_BYTES_PER_SECOND`. A publish
/// counts from when it is written (`written`): one handed to rumqttc earlier may wait there for
/// the connection or for room in the in-flight window, and then goes with the others at once.
/// One handed over and not yet written could be written at any moment, so it takes a place in
/// the window from the hand-over. A sliding window rather than a token bucket, whose burst and
/// refill would allow twice the rate across the turn of a second.
#[derive(Debug, Default)]
pub struct PublishPace {
    /// When each publish of the last second was written, and its bytes; oldest first.
    recent: VecDeque<(Instant, usize)>,
    /// The bytes in `recent`.
    bytes: usize,
}

/// When the next publish may be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Now,
    /// When enough of those written have left the window (or earlier, should the unwritten ones
    /// be taken back).
    At(Instant),
    /// Once some of those handed over are written and then leave the window.
    AfterWrites,
}

impl PublishPace {
    /// When a publish of `message_bytes` (topic and payload) may be handed over, with
    /// `unwritten` publishes of `unwritten_bytes` handed over and not yet written.
    pub fn next_slot(&mut self, now: Instant, message_bytes: usize, unwritten: usize, unwritten_bytes: usize) -> Slot {
        while let Some(&(at, bytes)) = self.recent.front() {
            if now.duration_since(at) < RATE_WINDOW {
                break;
            }
            self.recent.pop_front();
            self.bytes -= bytes;
        }
        let publishes_over = (self.recent.len() + unwritten + 1).saturating_sub(MAX_PUBLISHES_PER_SECOND);
        let claimed_bytes = self.bytes + unwritten_bytes + (unwritten + 1) * PUBLISH_OVERHEAD_BYTES + message_bytes;
        let bytes_over = claimed_bytes.saturating_sub(MAX_PUBLISH_BYTES_PER_SECOND);
        if publishes_over == 0 && bytes_over == 0 {
            return Slot::Now;
        }
        // The oldest written must leave the window first, enough of them for both limits.
        let (mut leaving, mut freed) = (0, 0);
        for &(at, bytes) in &self.recent {
            leaving += 1;
            freed += bytes;
            if leaving >= publishes_over && freed >= bytes_over {
                return Slot::At(at + RATE_WINDOW);
            }
        }
        // Even an empty window would not take it beside the unwritten ones. (Alone, it always
        // fits: a payload is at most `MAX_PAYLOAD_BYTES`.)
        Slot::AfterWrites
    }

    /// A publish of `message_bytes` was written at `now`.
    pub fn written(&mut self, now: Instant, message_bytes: usize) {
        let bytes = message_bytes + PUBLISH_OVERHEAD_BYTES;
        self.recent.push_back((now, bytes));
        self.bytes += bytes;
    }
}

/// What a QoS is asked for.
#[derive(Debug, Clone, Copy)]
pub enum QosOf {
    Publish,
    Subscription,
    Will,
}

/// QoS 2, which AWS IoT Core does not support.
pub fn check_qos(qos: QoS, of: QosOf) -> Result<()> {
    if qos != QoS::ExactlyOnce {
        return Ok(());
    }
    let (what, consequence) = match of {
        QosOf::Publish => ("publish", ": it never acknowledges a QoS 2 publish, which would wait for ever"),
        QosOf::Subscription => ("subscription", ": it never acknowledges a QoS 2 subscription, which would wait for ever"),
        QosOf::Will => ("will", ""),
    };
    Err(PubSubError::InvalidOption(format!(
        "AWS IoT Core does not support QoS 2 (only 0 and 1) for a {what}{consequence}. Use qos 1 (at least once)"
    )))
}

/// A publish's payload size.
pub fn check_payload(bytes: usize) -> Result<()> {
    if bytes > MAX_PAYLOAD_BYTES {
        return Err(PubSubError::Payload(format!(
            "The message is {bytes} bytes, and AWS IoT Core takes at most {MAX_PAYLOAD_BYTES} (128 KiB) per publish: it closes the connection for a larger one. Split it, or store it elsewhere (S3) and publish a reference"
        )));
    }
    Ok(())
}

/// A publish topic (already valid MQTT): its size and its levels.
pub fn check_topic(topic: &str) -> Result<()> {
    let counted = without_basic_ingest_prefix(topic);
    if counted.len() > MAX_TOPIC_BYTES {
        let prefix_note = if counted.len() < topic.len() { ", not counting its '$aws/rules/<rule>/' prefix" } else { "" };
        return Err(PubSubError::InvalidTopic(format!(
            "The topic '{}' is {} bytes of UTF-8{prefix_note}, and AWS IoT Core takes at most {MAX_TOPIC_BYTES}: it closes the connection for a longer one",
            shortened(topic, SHOWN_CHARS),
            counted.len()
        )));
    }
    check_slashes("topic", topic, counted, "a '$aws/rules/<rule>/' prefix")
}

/// Subscriptions one connection may hold by default ("Subscriptions per connection": AWS can
/// raise it for an account).
pub const DEFAULT_SUBSCRIPTIONS_PER_CONNECTION: usize = 50;

/// AWS IoT answered SUBACK with a failure for `filter`: its two reasons, which the generic
/// message would leave the user to guess.
pub fn subscribe_refused(filter: &str) -> PubSubError {
    PubSubError::SubscribeRefused(format!(
        "AWS IoT refused the subscription to '{filter}' (SUBACK failure): its IoT policy does not allow iot:Subscribe on \
         topicfilter/{filter}, or this connection already has as many subscriptions as AWS IoT allows one \
         ({DEFAULT_SUBSCRIPTIONS_PER_CONNECTION} unless your account's quota was raised)"
    ))
}

/// A subscription's topic filter (already valid MQTT): its levels.
pub fn check_filter(filter: &str) -> Result<()> {
    let counted = without_basic_ingest_prefix(routing_filter(filter));
    check_slashes("topic filter", filter, counted, "a '$share/<group>/' or '$aws/rules/<rule>/' prefix")
}

fn check_slashes(kind: &str, whole: &str, counted: &str, prefixes: &str) -> Result<()> {
    let slashes = counted.bytes().filter(|&b| b == b'/').count();
    if slashes > MAX_SLASHES {
        return Err(PubSubError::InvalidTopic(format!(
            "The {kind} '{}' has {slashes} '/', and AWS IoT Core takes at most {MAX_SLASHES} (8 levels, not counting {prefixes}): it refuses a deeper one",
            shortened(whole, SHOWN_CHARS)
        )));
    }
    Ok(())
}

/// What follows `$aws/rules/<rule>/` (a Basic Ingest topic, which AWS IoT does not count), or
/// the whole topic. The prefix is matched without regard to case, as AWS IoT does.
fn without_basic_ingest_prefix(topic: &str) -> &str {
    const RULES: &str = "$aws/rules/";
    let rest = match topic.get(..RULES.len()) {
        Some(head) if head.eq_ignore_ascii_case(RULES) => &topic[RULES.len()..],
        _ => return topic,
    };
    match rest.split_once('/') {
        Some((rule, counted)) if !rule.is_empty() && !counted.is_empty() => counted,
        _ => topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(n: usize) -> String {
        vec!["l"; n].join("/")
    }

    #[test]
    fn qos_2_is_refused_and_qos_0_and_1_pass() {
        for of in [QosOf::Publish, QosOf::Subscription, QosOf::Will] {
            assert!(check_qos(QoS::AtMostOnce, of).is_ok());
            assert!(check_qos(QoS::AtLeastOnce, of).is_ok());
            let err = check_qos(QoS::ExactlyOnce, of).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_OPTION");
            assert!(err.to_string().contains("does not support QoS 2"), "{err}");
        }
    }

    #[test]
    fn payload_of_128_kib_passes_and_one_byte_more_is_refused() {
        assert!(check_payload(131_072).is_ok());
        let err = check_payload(131_073).unwrap_err();
        assert_eq!(err.code(), "ERR_PAYLOAD");
        assert!(err.to_string().contains("131073 bytes"), "{err}");
    }

    #[test]
    fn topic_of_256_bytes_passes_and_257_is_refused() {
        assert!(check_topic(&"é".repeat(128)).is_ok());
        let err = check_topic(&format!("{}a", "é".repeat(128))).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_TOPIC");
        assert!(err.to_string().contains("257 bytes"), "{err}");
        // The message shows the start of the topic, not all of it.
        assert!(err.to_string().contains(&format!("{}…", "é".repeat(80))), "{err}");
    }

    #[test]
    fn eight_levels_pass_and_nine_are_refused_for_topics_and_filters() {
        assert!(check_topic(&levels(8)).is_ok());
        assert!(check_filter(&format!("{}/+/#", levels(6))).is_ok());
        assert!(check_topic("$aws/things/thing-1/shadow/name/main/update/accepted").is_ok());
        for err in [check_topic(&levels(9)).unwrap_err(), check_filter(&format!("{}/#", levels(8))).unwrap_err()] {
            assert_eq!(err.code(), "ERR_INVALID_TOPIC");
            assert!(err.to_string().contains("has 8 '/'"), "{err}");
        }
    }

    #[test]
    fn basic_ingest_and_shared_subscription_prefixes_are_not_counted() {
        let ingest = format!("$aws/rules/store_it/{}", levels(8));
        assert!(check_topic(&ingest).is_ok());
        assert!(check_topic(&format!("$AWS/Rules/store_it/{}", levels(8))).is_ok());
        assert!(check_topic(&format!("$aws/rules/store_it/{}", "a".repeat(256))).is_ok());
        let err = check_topic(&format!("$aws/rules/store_it/{}", "a".repeat(257))).unwrap_err();
        assert!(err.to_string().contains("257 bytes of UTF-8, not counting"), "{err}");
        assert!(check_topic(&format!("$aws/rules/store_it/{}", levels(9))).is_err());
        assert!(check_filter(&format!("$share/workers/{}", levels(8))).is_ok());
        assert!(check_filter(&format!("$share/workers/$aws/rules/r/{}", levels(8))).is_ok());
        assert!(check_filter(&format!("$share/workers/{}", levels(9))).is_err());
        // Only a whole prefix counts: without a rule name, or with nothing after it, the topic
        // is counted whole.
        for whole in ["$aws/rules//a/b", "$aws/rules/store_it", "$aws/rules/store_it/", "$aws/rule/x/y"] {
            assert_eq!(without_basic_ingest_prefix(whole), whole);
        }
        assert!(check_topic("$aws/rules//a/b/c/d/e/f").is_err());
    }

    #[test]
    fn a_hundred_publishes_are_written_in_a_second_and_the_next_when_the_first_is_a_second_old() {
        let start = Instant::now();
        let mut pace = PublishPace::default();
        for i in 0..MAX_PUBLISHES_PER_SECOND {
            let at = start + Duration::from_millis(i as u64);
            assert_eq!(pace.next_slot(at, 10, 0, 0), Slot::Now, "publish {i}");
            pace.written(at, 10);
        }
        let later = start + Duration::from_millis(500);
        assert_eq!(pace.next_slot(later, 10, 0, 0), Slot::At(start + RATE_WINDOW));
        assert_eq!(pace.next_slot(start + RATE_WINDOW, 10, 0, 0), Slot::Now, "the first left the window");
        pace.written(start + RATE_WINDOW, 10);
        assert_eq!(pace.next_slot(start + RATE_WINDOW, 10, 0, 0), Slot::At(start + RATE_WINDOW + Duration::from_millis(1)));
    }

    #[test]
    fn publishes_handed_over_and_not_yet_written_take_their_places_in_the_window() {
        let start = Instant::now();
        let mut pace = PublishPace::default();
        assert_eq!(pace.next_slot(start, 10, 99, 990), Slot::Now);
        assert_eq!(pace.next_slot(start, 10, 100, 1_000), Slot::AfterWrites, "before the connection is up, say");
        // Written two seconds later, all at once: the window counts from then.
        let written_at = start + Duration::from_secs(2);
        for _ in 0..60 {
            pace.written(written_at, 10);
        }
        assert_eq!(pace.next_slot(written_at, 10, 40, 400), Slot::At(written_at + RATE_WINDOW));
        assert_eq!(pace.next_slot(written_at, 10, 39, 390), Slot::Now);
    }

    #[test]
    fn the_bytes_of_a_second_stay_within_512_kib() {
        let start = Instant::now();
        let mut pace = PublishPace::default();
        let message = 100 * 1024;
        for i in 0..5 {
            let at = start + Duration::from_millis(10 * i);
            assert_eq!(pace.next_slot(at, message, 0, 0), Slot::Now, "publish {i}");
            pace.written(at, message);
        }
        // 500 KiB and 45 bytes were written: a sixth of 100 KiB must wait for the first to leave.
        let now = start + Duration::from_millis(100);
        assert_eq!(pace.next_slot(now, message, 0, 0), Slot::At(start + RATE_WINDOW));
        assert_eq!(pace.next_slot(now, 1024, 0, 0), Slot::Now, "a small one still fits");
        assert_eq!(pace.next_slot(now, 1024, 1, 11 * 1024), Slot::At(start + RATE_WINDOW), "but not beside 11 KiB unwritten");
        // One of 128 KiB must wait for the first two (100 KiB each) to leave.
        assert_eq!(pace.next_slot(now, MAX_PAYLOAD_BYTES, 0, 0), Slot::At(start + RATE_WINDOW + Duration::from_millis(10)));
        // An empty window takes the largest publish AWS IoT allows.
        assert_eq!(PublishPace::default().next_slot(start, MAX_PAYLOAD_BYTES, 0, 0), Slot::Now);
        assert_eq!(PublishPace::default().next_slot(start, MAX_PAYLOAD_BYTES, 3, 3 * MAX_PAYLOAD_BYTES), Slot::AfterWrites);
    }
}
