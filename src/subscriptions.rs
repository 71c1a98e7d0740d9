//! Which observers want which topic filters. Filters are reference-counted: the broker is sent
//! SUBSCRIBE when a filter gets its first observer and UNSUBSCRIBE when it loses its last.
//! Routing an incoming message gives each matching observer once, however many of its
//! filters match.

use std::collections::HashMap;

use rumqttc::QoS;

use crate::errors::PubSubError;
use crate::topic::{routing_filter, topic_matches};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterStatus {
    Pending,
    Granted,
}

#[derive(Debug)]
struct Filter {
    qos: QoS,
    status: FilterStatus,
    observers: Vec<u32>,
}

#[derive(Debug, Default)]
struct Observer {
    filters: Vec<String>,
    /// Filters whose SUBACK this observer still waits for.
    waiting: usize,
}

/// The outcome of SUBACK for one observer.
pub type ObserverAck = (u32, Result<(), PubSubError>);

#[derive(Debug, Default)]
pub struct Subscriptions {
    filters: HashMap<String, Filter>,
    observers: HashMap<u32, Observer>,
}

impl Subscriptions {
    /// Adds an observer of `filters`. Returns the filters to send SUBSCRIBE for, and whether
    /// every filter is already acknowledged (the observer is ready at once).
    pub fn add_observer(&mut self, id: u32, filters: Vec<String>, qos: QoS) -> (Vec<(String, QoS)>, bool) {
        let mut to_subscribe = Vec::new();
        let mut observer = Observer::default();
        for name in filters {
            if observer.filters.contains(&name) {
                continue;
            }
            let filter = self.filters.entry(name.clone()).or_insert_with(|| {
                to_subscribe.push((name.clone(), qos));
                Filter { qos, status: FilterStatus::Pending, observers: Vec::new() }
            });
            if qos > filter.qos {
                // A higher QoS replaces the broker's subscription for the filter.
                filter.qos = qos;
                filter.status = FilterStatus::Pending;
                to_subscribe.push((name.clone(), qos));
            }
            filter.observers.push(id);
            if filter.status == FilterStatus::Pending {
                observer.waiting += 1;
            }
            observer.filters.push(name);
        }
        let ready = observer.waiting == 0;
        self.observers.insert(id, observer);
        (to_subscribe, ready)
    }

    /// Removes an observer; returns the filters nobody observes any more (to UNSUBSCRIBE).
    pub fn remove_observer(&mut self, id: u32) -> Vec<String> {
        let Some(observer) = self.observers.remove(&id) else { return Vec::new() };
        let mut unused = Vec::new();
        for name in observer.filters {
            if let Some(filter) = self.filters.get_mut(&name) {
                filter.observers.retain(|o| *o != id);
                if filter.observers.is_empty() {
                    self.filters.remove(&name);
                    unused.push(name);
                }
            }
        }
        unused
    }

    /// Records the broker's SUBACK for `name` (`None`: refused) and returns the observers
    /// whose subscription is now settled.
    pub fn on_suback(&mut self, name: &str, granted: Option<QoS>) -> Vec<ObserverAck> {
        if granted.is_none() {
            return self.refuse(name, &PubSubError::subscribe_refused_by_suback(name));
        }
        let Some(filter) = self.filters.get_mut(name) else { return Vec::new() };
        if filter.status == FilterStatus::Granted {
            return Vec::new();
        }
        filter.status = FilterStatus::Granted;
        let mut settled = Vec::new();
        for id in &filter.observers {
            if let Some(observer) = self.observers.get_mut(id) {
                observer.waiting = observer.waiting.saturating_sub(1);
                if observer.waiting == 0 {
                    settled.push((*id, Ok(())));
                }
            }
        }
        settled
    }

    /// The broker holds no subscription for `name` and will not: its observers fail with
    /// `error`, and it is not subscribed again.
    pub fn refuse(&mut self, name: &str, error: &PubSubError) -> Vec<ObserverAck> {
        let Some(filter) = self.filters.remove(name) else { return Vec::new() };
        let mut settled = Vec::new();
        for id in filter.observers {
            if let Some(observer) = self.observers.get_mut(&id) {
                observer.filters.retain(|f| f != name);
                settled.push((id, Err(error.clone())));
            }
        }
        settled
    }

    /// The observers a message on `topic` goes to, each once.
    pub fn route(&self, topic: &str) -> Vec<u32> {
        let mut observers: Vec<u32> = Vec::new();
        for (name, filter) in &self.filters {
            if topic_matches(routing_filter(name), topic) {
                observers.extend(&filter.observers);
            }
        }
        if observers.len() > 1 {
            observers.sort_unstable();
            observers.dedup();
        }
        observers
    }

    /// The filters to subscribe again on a new connection, at their QoS: all of them for a
    /// new session; only those never acknowledged when the broker kept the session.
    pub fn renewal(&self, session_present: bool) -> Vec<(String, QoS)> {
        let mut renew: Vec<(String, QoS)> = self
            .filters
            .iter()
            .filter(|(_, f)| !session_present || f.status == FilterStatus::Pending)
            .map(|(name, f)| (name.clone(), f.qos))
            .collect();
        renew.sort_by(|a, b| a.0.cmp(&b.0));
        renew
    }

    pub fn has_observers(&self) -> bool {
        !self.observers.is_empty()
    }

    /// Forgets everything; returns the observers there were.
    pub fn clear(&mut self) -> Vec<u32> {
        self.filters.clear();
        self.observers.drain().map(|(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[(String, QoS)]) -> Vec<&str> {
        v.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn a_filter_is_subscribed_once_and_unsubscribed_with_its_last_observer() {
        let mut subs = Subscriptions::default();
        let (first, ready) = subs.add_observer(1, vec!["a/+".into()], QoS::AtMostOnce);
        assert_eq!(names(&first), ["a/+"]);
        assert!(!ready);
        let (second, _) = subs.add_observer(2, vec!["a/+".into()], QoS::AtMostOnce);
        assert!(second.is_empty());
        assert!(subs.remove_observer(1).is_empty());
        assert_eq!(subs.remove_observer(2), ["a/+"]);
        assert!(!subs.has_observers());
    }

    #[test]
    fn suback_settles_observers_when_all_their_filters_are_granted() {
        let mut subs = Subscriptions::default();
        subs.add_observer(7, vec!["x".into(), "y".into()], QoS::AtLeastOnce);
        assert!(subs.on_suback("x", Some(QoS::AtLeastOnce)).is_empty());
        let settled = subs.on_suback("y", Some(QoS::AtLeastOnce));
        assert_eq!(settled, vec![(7, Ok(()))]);
        let (none, ready) = subs.add_observer(8, vec!["x".into()], QoS::AtMostOnce);
        assert!(none.is_empty() && ready, "already granted filters are ready at once");
    }

    #[test]
    fn a_refused_filter_fails_its_observers() {
        let mut subs = Subscriptions::default();
        subs.add_observer(1, vec!["deny".into()], QoS::AtMostOnce);
        let settled = subs.on_suback("deny", None);
        assert_eq!(settled[0].0, 1);
        assert_eq!(settled[0].1.as_ref().unwrap_err().code(), "ERR_SUBSCRIBE_REFUSED");
        assert!(subs.route("deny").is_empty());
    }

    #[test]
    fn routing_gives_each_observer_once_even_when_two_filters_match() {
        let mut subs = Subscriptions::default();
        subs.add_observer(1, vec!["a/#".into(), "a/+".into()], QoS::AtMostOnce);
        subs.add_observer(2, vec!["a/b".into()], QoS::AtMostOnce);
        subs.add_observer(3, vec!["z".into()], QoS::AtMostOnce);
        assert_eq!(subs.route("a/b"), vec![1, 2]);
        assert!(subs.route("q").is_empty());
    }

    #[test]
    fn a_higher_qos_resubscribes_the_filter() {
        let mut subs = Subscriptions::default();
        subs.add_observer(1, vec!["t".into()], QoS::AtMostOnce);
        let (again, _) = subs.add_observer(2, vec!["t".into()], QoS::AtLeastOnce);
        assert_eq!(again, vec![("t".to_string(), QoS::AtLeastOnce)]);
    }

    #[test]
    fn renewal_is_every_filter_for_a_new_session_and_the_unacknowledged_ones_otherwise() {
        let mut subs = Subscriptions::default();
        subs.add_observer(1, vec!["a".into()], QoS::AtLeastOnce);
        subs.add_observer(2, vec!["b".into()], QoS::AtMostOnce);
        subs.on_suback("a", Some(QoS::AtLeastOnce));
        assert_eq!(subs.renewal(false), vec![("a".to_string(), QoS::AtLeastOnce), ("b".to_string(), QoS::AtMostOnce)]);
        assert_eq!(names(&subs.renewal(true)), ["b"]);
    }
}
