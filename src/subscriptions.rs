//! Which observers want which topic filters. Filters are reference-counted: the broker is sent
//! SUBSCRIBE when a filter gets its first observer and UNSUBSCRIBE when it loses its last.
//! Routing an incoming message gives each matching observer once, however many of its
//! filters match.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use rumqttc::QoS;

use crate::errors::PubSubError;
use crate::filter_index::FilterIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterStatus {
    Pending,
    Granted,
}

#[derive(Debug)]
struct Filter {
    qos: QoS,
    status: FilterStatus,
    /// A set, not a list: n observers of one filter leaving one by one was O(n²).
    observers: BTreeSet<u32>,
}

#[derive(Debug, Default)]
struct Observer {
    /// The filters it subscribed to. A filter refused since stays named here: the filter of
    /// that name (if another observer made it again) does not have this observer.
    filters: Vec<String>,
    /// Filters whose SUBACK this observer still waits for.
    waiting: usize,
}

/// The outcome of SUBACK for one observer.
pub type ObserverAck = (u32, Result<(), PubSubError>);

#[derive(Debug, Default)]
pub struct Subscriptions {
    filters: HashMap<String, Filter>,
    /// The names of `filters`, by the topics they match.
    index: FilterIndex,
    observers: HashMap<u32, Observer>,
}

impl Subscriptions {
    /// Adds an observer of `filters`. Returns the filters to send SUBSCRIBE for, and whether
    /// every filter is already acknowledged (the observer is ready at once).
    pub fn add_observer(&mut self, id: u32, filters: Vec<String>, qos: QoS) -> (Vec<(String, QoS)>, bool) {
        let mut to_subscribe = Vec::new();
        let mut observer = Observer::default();
        for name in filters {
            let filter = match self.filters.entry(name.clone()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    self.index.insert(&name);
                    to_subscribe.push((name.clone(), qos));
                    entry.insert(Filter { qos, status: FilterStatus::Pending, observers: BTreeSet::new() })
                }
            };
            if !filter.observers.insert(id) {
                // Named twice in `filters`: this observer was added to it just now.
                continue;
            }
            if qos > filter.qos {
                // A higher QoS replaces the broker's subscription for the filter.
                filter.qos = qos;
                filter.status = FilterStatus::Pending;
                to_subscribe.push((name.clone(), qos));
            }
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
                if filter.observers.remove(&id) && filter.observers.is_empty() {
                    self.filters.remove(&name);
                    self.index.remove(&name);
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
        self.index.remove(name);
        // Each observer's `filters` keeps the name (see `Observer`): taking it out of each
        // made a SUBACK refusing n filters of one observer O(n²).
        filter
            .observers
            .into_iter()
            .filter(|id| self.observers.contains_key(id))
            .map(|id| (id, Err(error.clone())))
            .collect()
    }

    /// The observers a message on `topic` goes to, each once.
    pub fn route(&self, topic: &str) -> Vec<u32> {
        let mut observers: Vec<u32> = Vec::new();
        self.index.for_each_match(topic, &mut |name| {
            if let Some(filter) = self.filters.get(name) {
                observers.extend(&filter.observers);
            }
        });
        if observers.len() > 1 {
            observers.sort_unstable();
            observers.dedup();
        }
        observers
    }

    /// A filter of this instance that `topic` matches, if any.
    pub fn first_match(&self, topic: &str) -> Option<&str> {
        let mut first = None;
        self.index.for_each_match(topic, &mut |name| {
            first = first.or(Some(name));
        });
        first
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
        self.index.clear();
        self.observers.drain().map(|(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{routing_filter, topic_matches, validate_filter, validate_topic};

    fn names(v: &[(String, QoS)]) -> Vec<&str> {
        v.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn a_filter_is_subscribed_once_and_unsubscribed_with_its_last_observer() {
        let mut subs = Subscriptions::default();
        assert!(!subs.has_observers());
        let (first, ready) = subs.add_observer(1, vec!["a/+".into()], QoS::AtMostOnce);
        assert_eq!(names(&first), ["a/+"]);
        assert!(!ready);
        assert!(subs.has_observers());
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
    fn a_refused_filter_subscribed_again_by_another_observer_stays_when_the_first_one_leaves() {
        let mut subs = Subscriptions::default();
        subs.add_observer(1, vec!["deny".into(), "other".into()], QoS::AtMostOnce);
        assert_eq!(subs.on_suback("deny", None).len(), 1);
        let (again, _) = subs.add_observer(2, vec!["deny".into()], QoS::AtMostOnce);
        assert_eq!(names(&again), ["deny"], "a refused filter is asked for afresh");
        assert_eq!(subs.remove_observer(1), ["other"], "'deny' is observer 2's now");
        assert_eq!(subs.route("deny"), [2]);
        assert_eq!(subs.remove_observer(2), ["deny"]);
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

    /// Every name of up to `depth` levels taken from `levels`.
    fn names_from(levels: &[&str], depth: u32) -> Vec<String> {
        let mut names: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
        let mut last = names.clone();
        for _ in 1..depth {
            last = last.iter().flat_map(|name| levels.iter().map(move |l| format!("{name}/{l}"))).collect();
            names.extend(last.iter().cloned());
        }
        names
    }

    /// What routing must give: the observers of the filters whose routing filter
    /// `topic_matches`, each once, in order.
    fn routed_by_scanning(subs: &Subscriptions, topic: &str) -> Vec<u32> {
        let mut observers: Vec<u32> = subs
            .filters
            .iter()
            .filter(|(name, _)| topic_matches(routing_filter(name), topic))
            .flat_map(|(_, filter)| filter.observers.iter().copied())
            .collect();
        observers.sort_unstable();
        observers.dedup();
        observers
    }

    #[test]
    fn routing_gives_what_matching_every_filter_gives_for_every_small_filter_and_topic() {
        // Levels that exercise each rule: equal and unequal names, empty levels, `$` topics
        // (which a leading wildcard does not match), `+`, `#` (also matching its parent).
        let filters: Vec<String> = names_from(&["a", "b", "", "$s", "+", "#"], 3)
            .into_iter()
            .flat_map(|filter| [format!("$share/g/{filter}"), format!("$share/h/{filter}"), filter])
            .filter(|filter| validate_filter(filter).is_ok())
            .collect();
        let topics: Vec<String> = names_from(&["a", "b", "", "$s"], 4).into_iter().filter(|t| validate_topic(t).is_ok()).collect();
        let mut subs = Subscriptions::default();
        for (id, filter) in (1..).zip(&filters) {
            subs.add_observer(id, vec![filter.clone()], QoS::AtMostOnce);
        }
        // One observer of every filter: given once, however many of them match.
        const OF_ALL: u32 = 100_000;
        subs.add_observer(OF_ALL, filters.clone(), QoS::AtMostOnce);
        let check = |subs: &Subscriptions| {
            for topic in &topics {
                assert_eq!(subs.route(topic), routed_by_scanning(subs, topic), "topic {topic:?}");
            }
        };
        check(&subs);
        assert!(subs.route("$s/a").len() < subs.route("a/a").len(), "'#', '+/a' and their shares do not take '$s/a'");

        // Unsubscribing takes filters out of the index: every other observer leaves, then the
        // observer of all (so that the filters of those who left are gone).
        for id in (1..=filters.len() as u32).step_by(2) {
            subs.remove_observer(id);
        }
        subs.remove_observer(OF_ALL);
        check(&subs);
        assert!(subs.route("a").iter().all(|id| id % 2 == 0));
        for id in (2..=filters.len() as u32).step_by(2) {
            subs.remove_observer(id);
        }
        assert!(subs.index.is_empty(), "no filter, nor a tree level, is left behind in the index");
        assert!(topics.iter().all(|topic| subs.route(topic).is_empty()));
    }

    #[test]
    fn routing_among_thousands_of_device_topics_finds_the_exact_and_wildcard_filters_of_one() {
        let mut subs = Subscriptions::default();
        let devices: Vec<String> = (0..10_000).map(|i| format!("devices/{i}/status")).collect();
        subs.add_observer(1, devices, QoS::AtLeastOnce);
        subs.add_observer(2, vec!["devices/7/status".into()], QoS::AtMostOnce);
        subs.add_observer(3, vec!["devices/+/alarm".into(), "devices/+/status".into()], QoS::AtMostOnce);
        subs.add_observer(4, vec!["devices/#".into(), "$share/workers/devices/7/+".into()], QoS::AtMostOnce);
        subs.add_observer(5, vec!["$SYS/#".into(), "+/+/status".into()], QoS::AtMostOnce);
        assert_eq!(subs.route("devices/7/status"), vec![1, 2, 3, 4, 5]);
        assert_eq!(subs.route("devices/12/status"), vec![1, 3, 4, 5]);
        assert_eq!(subs.route("devices/7/alarm"), vec![3, 4]);
        assert_eq!(subs.route("devices/10000/status"), vec![3, 4, 5]);
        assert_eq!(subs.route("devices"), vec![4]);
        assert_eq!(subs.route("$SYS/broker/status"), vec![5], "'+/+/status' does not take a $ topic");
        assert_eq!(subs.route("other/7/status"), vec![5]);
        subs.remove_observer(3);
        assert_eq!(subs.route("devices/8/alarm"), vec![4]);
        // A refused filter leaves the index too.
        subs.on_suback("devices/#", None);
        assert_eq!(subs.route("devices/8/alarm"), Vec::<u32>::new());
        assert_eq!(subs.route("devices/7/alarm"), vec![4], "the shared subscription still routes");
    }

    #[test]
    fn a_filter_named_twice_in_one_subscribe_is_subscribed_and_observed_once() {
        let mut subs = Subscriptions::default();
        let (to_subscribe, _) = subs.add_observer(1, vec!["a".into(), "b/+".into(), "a".into(), "b/+".into()], QoS::AtMostOnce);
        assert_eq!(names(&to_subscribe), ["a", "b/+"]);
        assert_eq!(subs.observers[&1].filters, ["a", "b/+"]);
        assert_eq!(subs.filters["a"].observers, BTreeSet::from([1]));
        subs.add_observer(2, vec!["a".into(), "a".into()], QoS::AtMostOnce);
        assert_eq!(subs.filters["a"].observers, BTreeSet::from([1, 2]));
        assert_eq!(subs.on_suback("a", Some(QoS::AtMostOnce)), vec![(2, Ok(()))], "observer 2 waited for 'a' once");
    }

    #[test]
    fn a_higher_qos_resubscribes_the_filter() {
        let mut subs = Subscriptions::default();
        subs.add_observer(1, vec!["t".into()], QoS::AtMostOnce);
        let (again, _) = subs.add_observer(2, vec!["t".into()], QoS::AtLeastOnce);
        assert_eq!(again, vec![("t".to_string(), QoS::AtLeastOnce)]);
    }

    #[test]
    fn clear_forgets_every_filter_and_returns_every_observer() {
        let mut subs = Subscriptions::default();
        subs.add_observer(3, vec!["a/+".into(), "b".into()], QoS::AtMostOnce);
        subs.add_observer(5, vec!["a/+".into()], QoS::AtLeastOnce);
        let mut observers = subs.clear();
        observers.sort_unstable();
        assert_eq!(observers, [3, 5]);
        assert!(!subs.has_observers() && subs.renewal(false).is_empty() && subs.route("a/x").is_empty());
        assert!(subs.index.is_empty(), "nothing is left behind in the index");
        // The same filters subscribed again route once.
        subs.add_observer(7, vec!["a/+".into()], QoS::AtMostOnce);
        assert_eq!(subs.route("a/x"), [7]);
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
