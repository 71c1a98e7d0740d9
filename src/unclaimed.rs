//! Messages of a persistent session that arrive before the application has subscribed to them
//! again. The broker keeps a session's subscriptions (`cleanSession: false`), and on connecting
//! it sends what it queued for all of them at once; an application that makes its subscriptions
//! one after another (awaiting each `ready`), or publishes first, has made only some of them yet.
//! Those messages were acknowledged as they were read: dropped, they would be lost for good.
//! They wait here, bounded in number, bytes and time, for the first observer whose filter
//! matches them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::Publish;

use crate::topic::{routing_filter, topic_matches};

/// At most this many messages wait; past it, the oldest are dropped (counted as unrouted).
pub const MAX_MESSAGES: usize = 10_000;
/// At most this many bytes (topics and payloads) wait.
pub const MAX_BYTES: usize = 16 << 20;
/// A message waits at most this long: a restarted application subscribes within seconds, and
/// a session subscription it no longer makes would otherwise keep the store full.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The filters left most recently that are remembered (see `left`).
const LEFT_REMEMBERED: usize = 64;

#[derive(Debug, Default)]
pub struct Unclaimed {
    /// Oldest first, with when each arrived.
    messages: VecDeque<(Instant, Publish)>,
    bytes: usize,
    /// How many of `messages` there are per first topic level: most subscriptions (a unique
    /// reply topic, say) can tell at once that they claim nothing.
    first_levels: HashMap<String, usize>,
    /// Filters this instance unsubscribed from most recently (and has not subscribed to again):
    /// what the broker still sends through them, in flight or buffered when the UNSUBSCRIBE
    /// arrived, is not kept for a later observer.
    left: VecDeque<String>,
}

fn size(publish: &Publish) -> usize {
    publish.topic.len() + publish.payload.len()
}

fn first_level(topic: &str) -> &str {
    topic.split('/').next().unwrap_or(topic)
}

fn matches_any(filters: &[String], publish: &Publish) -> bool {
    filters.iter().any(|filter| topic_matches(routing_filter(filter), &publish.topic))
}

impl Unclaimed {
    /// Keeps `publish`, which no observer wanted. Returns how many messages were dropped: it
    /// (a filter this instance left), or the oldest ones kept, past the bounds.
    pub fn keep(&mut self, publish: Publish) -> usize {
        if self.left.iter().any(|filter| topic_matches(routing_filter(filter), &publish.topic)) {
            return 1;
        }
        let now = Instant::now();
        self.bytes += size(&publish);
        *self.first_levels.entry(first_level(&publish.topic).to_string()).or_default() += 1;
        self.messages.push_back((now, publish));
        let mut dropped = 0;
        while self.messages.len() > MAX_MESSAGES
            || self.bytes > MAX_BYTES
            || self.messages.front().is_some_and(|(arrived, _)| now.duration_since(*arrived) > MAX_WAIT)
        {
            self.drop_oldest();
            dropped += 1;
        }
        dropped
    }

    fn drop_oldest(&mut self) {
        if let Some((_, oldest)) = self.messages.pop_front() {
            self.forget(&oldest);
        }
    }

    /// Takes `publish`, gone from `messages`, out of the counts.
    fn forget(&mut self, publish: &Publish) {
        self.bytes -= size(publish);
        let level = first_level(&publish.topic);
        if let Some(count) = self.first_levels.get_mut(level) {
            *count -= 1;
            if *count == 0 {
                self.first_levels.remove(level);
            }
        }
    }

    /// Whether a message on a topic that one of `filters` matches may be kept.
    fn may_hold(&self, filters: &[String]) -> bool {
        filters.iter().any(|filter| match first_level(routing_filter(filter)) {
            "+" | "#" => !self.messages.is_empty(),
            level => self.first_levels.contains_key(level),
        })
    }

    /// Takes out the kept messages that one of `filters` matches, oldest first, for the observer
    /// that has just subscribed to them. Returns them, and how many waited too long and were
    /// dropped.
    pub fn claim(&mut self, filters: &[String]) -> (Vec<Publish>, usize) {
        self.left.retain(|filter| !filters.contains(filter));
        let mut expired = 0;
        while self.messages.front().is_some_and(|(arrived, _)| arrived.elapsed() > MAX_WAIT) {
            self.drop_oldest();
            expired += 1;
        }
        // Most subscriptions claim nothing: the store is rebuilt only when one does.
        if !self.may_hold(filters) || !self.messages.iter().any(|(_, publish)| matches_any(filters, publish)) {
            return (Vec::new(), expired);
        }
        let (claimed, kept): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.messages).into_iter().partition(|(_, publish)| matches_any(filters, publish));
        self.messages = kept;
        let claimed: Vec<Publish> = claimed.into_iter().map(|(_, publish)| publish).collect();
        for publish in &claimed {
            self.forget(publish);
        }
        (claimed, expired)
    }

    /// This instance unsubscribed from `filter`.
    pub fn left(&mut self, filter: String) {
        self.left.retain(|known| *known != filter);
        self.left.push_back(filter);
        if self.left.len() > LEFT_REMEMBERED {
            self.left.pop_front();
        }
    }

    /// Drops every kept message (the instance closed); returns how many there were.
    pub fn clear(&mut self) -> usize {
        self.bytes = 0;
        self.first_levels.clear();
        std::mem::take(&mut self.messages).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn message(topic: &str, bytes: usize) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, vec![0u8; bytes])
    }

    fn topics(messages: &[Publish]) -> Vec<&str> {
        messages.iter().map(|m| m.topic.as_str()).collect()
    }

    #[test]
    fn an_observer_claims_the_kept_messages_its_filters_match_oldest_first() {
        let mut unclaimed = Unclaimed::default();
        for topic in ["cmd/1", "jobs/1", "cmd/2", "other"] {
            assert_eq!(unclaimed.keep(message(topic, 10)), 0);
        }
        assert_eq!(topics(&unclaimed.claim(&["cmd/#".into()]).0), ["cmd/1", "cmd/2"]);
        assert!(unclaimed.claim(&["cmd/#".into()]).0.is_empty(), "claimed once");
        assert_eq!(topics(&unclaimed.claim(&["$share/g/jobs/+".into()]).0), ["jobs/1"]);
        assert_eq!(unclaimed.bytes, "other".len() + 10, "topics and payloads");
        assert_eq!(unclaimed.first_levels, HashMap::from([("other".to_string(), 1)]));
        assert!(unclaimed.claim(&["reply/123".into(), "$share/g/cmd/x".into()]).0.is_empty());
        assert_eq!(topics(&unclaimed.claim(&["+".into()]).0), ["other"]);
        assert!(unclaimed.first_levels.is_empty() && unclaimed.bytes == 0);
        unclaimed.keep(message("again", 1));
        assert_eq!(unclaimed.clear(), 1);
    }

    #[test]
    fn messages_through_a_filter_this_instance_left_are_not_kept_until_it_subscribes_again() {
        let mut unclaimed = Unclaimed::default();
        unclaimed.left("jobs/+".into());
        assert_eq!(unclaimed.keep(message("jobs/1", 1)), 1);
        assert_eq!(unclaimed.keep(message("cmd/1", 1)), 0);
        assert!(unclaimed.claim(&["jobs/+".into()]).0.is_empty());
        assert_eq!(unclaimed.keep(message("jobs/2", 1)), 0);
        assert_eq!(topics(&unclaimed.claim(&["jobs/+".into()]).0), ["jobs/2"]);
        // Only the filters left most recently are remembered: unique reply topics come and go.
        for i in 0..=LEFT_REMEMBERED {
            unclaimed.left(format!("reply/{i}"));
        }
        assert_eq!(unclaimed.left.len(), LEFT_REMEMBERED);
        assert_eq!(unclaimed.keep(message("reply/0", 1)), 0, "the oldest one is forgotten");
        assert_eq!(unclaimed.keep(message(&format!("reply/{LEFT_REMEMBERED}"), 1)), 1);
    }

    #[test]
    fn messages_that_waited_too_long_are_dropped() {
        let mut unclaimed = Unclaimed::default();
        unclaimed.keep(message("old/1", 1));
        unclaimed.keep(message("old/2", 1));
        // (A machine up for less than a minute has no such instant to give.)
        let Some(long_ago) = Instant::now().checked_sub(MAX_WAIT + Duration::from_secs(1)) else { return };
        unclaimed.messages[0].0 = long_ago;
        assert_eq!(unclaimed.claim(&["nothing".into()]), (Vec::new(), 1));
        unclaimed.messages[0].0 = long_ago;
        assert_eq!(unclaimed.keep(message("new", 1)), 1);
        assert_eq!(topics(&unclaimed.claim(&["#".into()]).0), ["new"]);
        assert_eq!(unclaimed.bytes, 0);
    }

    #[test]
    fn past_the_bounds_the_oldest_messages_are_dropped() {
        let mut unclaimed = Unclaimed::default();
        let dropped: usize = (0..MAX_MESSAGES + 5).map(|i| unclaimed.keep(message(&format!("t/{i}"), 1))).sum();
        assert_eq!((dropped, unclaimed.messages.len()), (5, MAX_MESSAGES));
        assert_eq!(unclaimed.messages[0].1.topic, "t/5");
        let mut unclaimed = Unclaimed::default();
        assert_eq!(unclaimed.keep(message("a", MAX_BYTES - 10)), 0);
        assert_eq!(unclaimed.keep(message("b", 20)), 1);
        assert_eq!((unclaimed.messages[0].1.topic.as_str(), unclaimed.bytes), ("b", 21));
        // Topics count: 10,000 long topics with empty payloads are bounded too.
        let mut unclaimed = Unclaimed::default();
        let long = "t".repeat(4_000);
        let dropped: usize = (0..5_000).map(|_| unclaimed.keep(message(&long, 0))).sum();
        assert!(dropped > 0 && unclaimed.bytes <= MAX_BYTES, "{dropped} dropped, {} bytes", unclaimed.bytes);
    }
}
