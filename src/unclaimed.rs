//! Messages of a persistent session that arrive before the application has subscribed to them
//! again. The broker keeps a session's subscriptions (`cleanSession: false`), and on connecting
//! it sends what it queued for all of them at once; an application that makes its subscriptions
//! one after another (awaiting each `ready`), or publishes first, has made only some of them yet.
//! Those messages were acknowledged as they were read: dropped, they would be lost for good.
//! They wait here, bounded, for the first observer whose filter matches them.

use std::collections::{HashSet, VecDeque};

use rumqttc::Publish;

use crate::topic::{routing_filter, topic_matches};

/// At most this many messages wait; past it, the oldest are dropped (counted as unrouted).
pub const MAX_MESSAGES: usize = 10_000;
/// At most this many payload bytes wait.
pub const MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub struct Unclaimed {
    messages: VecDeque<Publish>,
    bytes: usize,
    /// Filters this instance unsubscribed from (and has not subscribed to again): what the
    /// broker still sends through them is not kept for a later observer.
    left: HashSet<String>,
}

impl Unclaimed {
    /// Keeps `publish`, which no observer wanted. Returns how many messages were dropped: it
    /// (a filter this instance left), or the oldest ones kept, past the bounds.
    pub fn keep(&mut self, publish: Publish) -> usize {
        if self.left.iter().any(|filter| topic_matches(routing_filter(filter), &publish.topic)) {
            return 1;
        }
        self.bytes += publish.payload.len();
        self.messages.push_back(publish);
        let mut dropped = 0;
        while self.messages.len() > MAX_MESSAGES || self.bytes > MAX_BYTES {
            if let Some(oldest) = self.messages.pop_front() {
                self.bytes -= oldest.payload.len();
                dropped += 1;
            }
        }
        dropped
    }

    /// Takes out the kept messages that one of `filters` matches, oldest first, for the observer
    /// that has just subscribed to them.
    pub fn claim(&mut self, filters: &[String]) -> Vec<Publish> {
        for filter in filters {
            self.left.remove(filter);
        }
        if self.messages.is_empty() {
            return Vec::new();
        }
        let (claimed, kept): (VecDeque<Publish>, VecDeque<Publish>) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|publish| filters.iter().any(|filter| topic_matches(routing_filter(filter), &publish.topic)));
        self.messages = kept;
        self.bytes -= claimed.iter().map(|publish| publish.payload.len()).sum::<usize>();
        claimed.into()
    }

    /// This instance unsubscribed from `filter`.
    pub fn left(&mut self, filter: String) {
        self.left.insert(filter);
    }

    /// Drops every kept message (the instance closed); returns how many there were.
    pub fn clear(&mut self) -> usize {
        self.bytes = 0;
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
        assert_eq!(topics(&unclaimed.claim(&["cmd/#".into()])), ["cmd/1", "cmd/2"]);
        assert!(unclaimed.claim(&["cmd/#".into()]).is_empty(), "claimed once");
        assert_eq!(topics(&unclaimed.claim(&["$share/g/jobs/+".into()])), ["jobs/1"]);
        assert_eq!(unclaimed.bytes, 10);
        assert_eq!(unclaimed.clear(), 1);
    }

    #[test]
    fn messages_through_a_filter_this_instance_left_are_not_kept_until_it_subscribes_again() {
        let mut unclaimed = Unclaimed::default();
        unclaimed.left("jobs/+".into());
        assert_eq!(unclaimed.keep(message("jobs/1", 1)), 1);
        assert_eq!(unclaimed.keep(message("cmd/1", 1)), 0);
        assert!(unclaimed.claim(&["jobs/+".into()]).is_empty());
        assert_eq!(unclaimed.keep(message("jobs/2", 1)), 0);
        assert_eq!(topics(&unclaimed.claim(&["jobs/+".into()])), ["jobs/2"]);
    }

    #[test]
    fn past_the_bounds_the_oldest_messages_are_dropped() {
        let mut unclaimed = Unclaimed::default();
        let dropped: usize = (0..MAX_MESSAGES + 5).map(|i| unclaimed.keep(message(&format!("t/{i}"), 1))).sum();
        assert_eq!((dropped, unclaimed.messages.len()), (5, MAX_MESSAGES));
        assert_eq!(unclaimed.messages[0].topic, "t/5");
        let mut unclaimed = Unclaimed::default();
        assert_eq!(unclaimed.keep(message("a", MAX_BYTES - 10)), 0);
        assert_eq!(unclaimed.keep(message("b", 20)), 1);
        assert_eq!((topics(&unclaimed.messages.iter().cloned().collect::<Vec<_>>()), unclaimed.bytes), (vec!["b"], 20));
    }
}
