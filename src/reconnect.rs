//! When to try again after a lost connection: exponential backoff with full jitter, and the
//! watches for failures that, repeated, are no longer bad luck: a client id taken over by
//! another connection (the broker closing each new connection soon after accepting it), AWS IoT
//! closing each attempt before its CONNACK (its policy refusing the client), and the broker
//! dropping the connection each time one publish arrives (too large for it, or refused by its
//! policy) or one SUBSCRIBE does (its access rules refusing the filter).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::options::Reconnect;
use crate::outbox::Written;

/// Connections in a row that the broker closed soon after accepting them before we call it a
/// client id takeover rather than bad luck.
pub const TAKEOVER_STREAK: u32 = 3;
/// Besides four minimum delays, how soon after connecting a close may come to count as a
/// kick: time to connect (AWS IoT spaces CONNECTs a second apart).
const KICK_CONNECT_SLACK: Duration = Duration::from_secs(1);
/// How soon a close may come to count as a kick at least, whatever our minimum delay: the
/// twin's may be longer (MQTT.js reconnects after a second).
const MIN_KICK_WINDOW: Duration = Duration::from_secs(5);
/// Connections in a row lost with the same publish written and unacknowledged before we take
/// it for the broker refusing that publish (by dropping the connection) rather than bad luck.
/// Each loss after the first is right after re-sending it, which goes out first on a reconnect.
pub const REFUSED_PUBLISH_STREAK: u32 = 3;
/// Connections in a row lost with the same filter among those unacknowledged before we take it
/// for the broker refusing that filter (by dropping the connection).
pub const REFUSED_SUBSCRIBE_STREAK: u32 = 3;

/// The same suspicious failure, counted while it repeats; `K` tells apart what it is about
/// (a publish), `()` when there is only one kind.
struct Streak<K = ()> {
    count: u32,
    about: Option<K>,
}

impl<K> Default for Streak<K> {
    fn default() -> Self {
        Self { count: 0, about: None }
    }
}

impl Streak {
    /// One more in a row; whether there have now been `limit`.
    fn extend(&mut self, limit: u32) -> bool {
        self.extend_about((), limit)
    }
}

impl<K: PartialEq> Streak<K> {
    /// One more about `about` in a row (about something else, a new streak starts); whether
    /// there have now been `limit`.
    fn extend_about(&mut self, about: K, limit: u32) -> bool {
        if self.about.as_ref() != Some(&about) {
            self.count = 0;
            self.about = Some(about);
        }
        self.count = self.count.saturating_add(1);
        self.count >= limit
    }

    /// Whether the streak is about `about` and this would make it longer than one.
    fn continues(&self, about: &K) -> bool {
        self.about.as_ref() == Some(about)
    }

    /// A connection lost with `about` written first and unacknowledged (or nothing): whether
    /// that continues the streak, and `about` when the streak now has `limit` (it then starts
    /// over).
    fn lost_with(&mut self, about: Option<K>, limit: u32) -> (bool, Option<K>)
    where
        K: Clone,
    {
        let Some(about) = about else {
            self.reset();
            return (false, None);
        };
        let again = self.continues(&about);
        if self.extend_about(about.clone(), limit) {
            self.reset();
            return (again, Some(about));
        }
        (again, None)
    }

    fn reset(&mut self) {
        self.count = 0;
        self.about = None;
    }
}

/// What a lost connection left unacknowledged that the broker may have dropped it for.
#[derive(Debug, Default)]
pub struct Unacknowledged {
    /// The oldest QoS 1/2 publish written on it.
    pub publish: Option<Written>,
    /// The filters of the SUBSCRIBEs written on it (none: empty).
    pub subscribe: Vec<String>,
    /// Some of `subscribe` were not left unacknowledged by the losses before (`Outbox::suspects`):
    /// this loss may be the broker's answer to their SUBSCRIBE (one over its size limit, say).
    pub new_suspects: bool,
}

/// Connections lost in a row with SUBSCRIBEs unacknowledged, about the filters all of those
/// losses had unacknowledged: the first loss may leave several (a SUBSCRIBE of several filters,
/// or several SUBSCRIBEs), and after it the suspects go one at a time (`Outbox::suspects`), so
/// the streak narrows down to the one the broker drops.
#[derive(Default)]
struct SubscribeStreak {
    count: u32,
    filters: Vec<String>,
}

impl SubscribeStreak {
    /// A connection lost with SUBSCRIBEs of `filters` unacknowledged (none: empty); the filters
    /// refused when the streak now has `limit` (it then starts over).
    fn lost_with(&mut self, filters: Vec<String>, limit: u32) -> Option<Vec<String>> {
        if filters.is_empty() {
            *self = Self::default();
            return None;
        }
        let common: Vec<String> = self.filters.iter().filter(|f| filters.contains(f)).cloned().collect();
        if common.is_empty() {
            *self = Self { count: 1, filters };
        } else {
            *self = Self { count: self.count.saturating_add(1), filters: common };
        }
        if self.count < limit {
            return None;
        }
        Some(std::mem::take(self).filters)
    }
}

/// How a lost connection is judged.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Bad luck: reconnect.
    Transient,
    /// Another client takes the client id each time.
    Takeover,
    /// The broker drops the connection each time this publish arrives.
    RefusedPublish(Written),
    /// The broker drops the connection each time a SUBSCRIBE of these filters arrives.
    RefusedSubscribe(Vec<String>),
}

pub struct Backoff {
    policy: Reconnect,
    /// Failed attempts (or short-lived connections) since the last lasting connection.
    attempt: u32,
    /// Consecutive connections closed by the broker soon after a first-try reconnect.
    kicked: Streak,
    /// Consecutive connections lost with the same publish written and unacknowledged.
    lost_after_publish: Streak<Written>,
    /// Consecutive connections lost with the same filter among the unacknowledged ones.
    lost_after_subscribe: SubscribeStreak,
    /// Whether the broker ever accepted a connection of this instance.
    has_connected: bool,
}

impl Backoff {
    pub fn new(policy: Reconnect) -> Self {
        Self {
            policy,
            attempt: 0,
            kicked: Streak::default(),
            lost_after_publish: Streak::default(),
            lost_after_subscribe: SubscribeStreak::default(),
            has_connected: false,
        }
    }

    /// The broker accepted a connection (CONNACK).
    pub fn connected(&mut self) {
        self.has_connected = true;
    }

    /// Whether the broker ever accepted a connection of this instance: failures after that are
    /// more likely an outage than a misconfiguration.
    pub fn has_connected(&self) -> bool {
        self.has_connected
    }

    /// AWS IoT closed an attempt after CONNECT, without a CONNACK. Returns whether that is a
    /// refusal by its policy: only before the instance ever connected. Afterwards it is also
    /// how an outage behind AWS IoT's front end looks, however long it lasts, and a failure
    /// for good would end a service's subscriptions for a hiccup (a trial: a 6 s outage did).
    pub fn closed_before_connack(&self) -> bool {
        !self.has_connected
    }

    /// The wait before the next attempt: uniform between the minimum and a cap that doubles
    /// with each attempt, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let min = self.policy.min_delay.as_millis() as u64;
        let max = self.policy.max_delay.as_millis() as u64;
        let cap = min.saturating_mul(1u64 << self.attempt.min(32)).min(max);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(min + random_below(cap - min + 1))
    }

    /// We ended the connection (DISCONNECT: nobody subscribed, nothing pending). The broker did
    /// not close it, so the connections it closed soon after accepting them are no longer in a
    /// row: a takeover's twin kicks every connection. Otherwise an instance whose connections
    /// come and go would be called taken over after any three broker restarts over its life.
    pub fn ended_by_us(&mut self) {
        self.kicked.reset();
    }

    /// How soon after connecting a close by the broker is a kick. A twin with the same client
    /// id and backoff reconnects within one, two, then four minimum delays of being kicked
    /// itself, so its first three kicks come within four of our connecting; a twin of another
    /// make, within a few seconds. Closes that come later (a NAT's or proxy's idle timeout, a
    /// rolling broker restart) are not kicks.
    fn kick_window(&self) -> Duration {
        (self.policy.min_delay * 4 + KICK_CONNECT_SLACK).max(MIN_KICK_WINDOW).min(self.policy.reset_after)
    }

    /// A connection ended after lasting `lasted`; `closed_by_broker` when the broker closed it
    /// without an error of ours or the network's; `unacknowledged`: the oldest publish and the
    /// oldest SUBSCRIBE written on it and not acknowledged, when the far end closed or reset it
    /// (not our timeout).
    pub fn connection_ended(&mut self, lasted: Duration, closed_by_broker: bool, first_try: bool, unacknowledged: Unacknowledged) -> Verdict {
        if lasted >= self.policy.reset_after {
            self.attempt = 0;
        }
        let new_suspects = unacknowledged.new_suspects;
        // Lost again with the same publish unacknowledged: it was sent first on this connection
        // and the broker dropped it before acknowledging, so that loss is the publish's doing,
        // not a takeover (which the broker's prompt PUBACK between kicks tells apart).
        let (same_publish_again, refused) = self.lost_after_publish.lost_with(unacknowledged.publish, REFUSED_PUBLISH_STREAK);
        if let Some(publish) = refused {
            self.kicked.reset();
            return Verdict::RefusedPublish(publish);
        }
        // A SUBSCRIBE goes right after CONNACK, and a twin's kick may come before its SUBACK:
        // those losses still count as kicks, and the SUBSCRIBE is judged first.
        if let Some(filters) = self.lost_after_subscribe.lost_with(unacknowledged.subscribe, REFUSED_SUBSCRIBE_STREAK) {
            self.kicked.reset();
            return Verdict::RefusedSubscribe(filters);
        }
        if closed_by_broker && first_try && lasted < self.kick_window() && !same_publish_again {
            // Neither a kick nor the end of a streak: filters unacknowledged for the first time
            // go one at a time next, and a twin's kicks count again then. A broker that closes
            // on SUBSCRIBEs over its size drops a new one at each of the first losses.
            if !new_suspects && self.kicked.extend(TAKEOVER_STREAK) {
                return Verdict::Takeover;
            }
        } else {
            self.kicked.reset();
        }
        Verdict::Transient
    }
}

/// A random number in `0..bound` (`bound` > 0). Jitter needs no cryptographic randomness:
/// std's randomly keyed hasher is enough and adds no dependency.
fn random_below(bound: u64) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    hasher.finish() % bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Reconnect {
        Reconnect { min_delay: Duration::from_millis(100), max_delay: Duration::from_millis(1_000), reset_after: Duration::from_secs(30) }
    }

    #[test]
    fn delays_stay_within_the_doubling_cap_and_the_bounds() {
        for _ in 0..200 {
            let mut backoff = Backoff::new(policy());
            for cap in [100, 200, 400, 800, 1_000, 1_000, 1_000] {
                let delay = backoff.next_delay().as_millis() as u64;
                assert!((100..=cap).contains(&delay), "{delay} not in 100..={cap}");
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let mut backoff = Backoff::new(policy());
        backoff.attempt = 5;
        let delays: std::collections::HashSet<_> = (0..50).map(|_| {
            backoff.attempt = 5;
            backoff.next_delay()
        }).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn a_lasting_connection_resets_the_attempts() {
        let mut backoff = Backoff::new(policy());
        for _ in 0..6 {
            backoff.next_delay();
        }
        backoff.connection_ended(Duration::from_secs(31), false, true, Unacknowledged::default());
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    /// A kick by the broker soon after a first-try connection, with `unacknowledged` written.
    fn kick(backoff: &mut Backoff, first_try: bool, unacknowledged: Unacknowledged) -> Verdict {
        backoff.connection_ended(Duration::from_secs(1), true, first_try, unacknowledged)
    }

    fn written(op: u32) -> Unacknowledged {
        Unacknowledged { publish: Some(Written { op, topic: "t".into() }), ..Unacknowledged::default() }
    }

    fn subscribe(filters: &[&str]) -> Unacknowledged {
        Unacknowledged { subscribe: filters.iter().map(|f| f.to_string()).collect(), ..Unacknowledged::default() }
    }

    #[test]
    fn repeated_kicks_right_after_connecting_make_a_takeover_streak() {
        let mut backoff = Backoff::new(policy());
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Takeover);
        // A failed reconnect in between (a broker restart) or a network error breaks the streak.
        let mut backoff = Backoff::new(policy());
        kick(&mut backoff, true, Unacknowledged::default());
        kick(&mut backoff, false, Unacknowledged::default());
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Transient);
        // Kicks with a different publish unacknowledged each time (acknowledged in between)
        // are still a takeover.
        let mut backoff = Backoff::new(policy());
        assert_eq!(kick(&mut backoff, true, written(1)), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, written(2)), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, written(3)), Verdict::Takeover);
    }

    #[test]
    fn closes_that_come_later_than_a_twin_would_kick_are_not_a_takeover() {
        // An idle timeout on the way (a NAT, a proxy) closing quiet connections after 25 s, or
        // brokers restarted one after another: closes in a row, but not soon after connecting.
        let mut backoff = Backoff::new(policy());
        let window = backoff.kick_window();
        assert_eq!(window, MIN_KICK_WINDOW, "four minimum delays and a second (1.4 s) at the least");
        let slow = Reconnect { min_delay: Duration::from_secs(2), ..policy() };
        assert_eq!(Backoff::new(slow).kick_window(), Duration::from_secs(9), "four minimum delays and a second");
        for lasted in [Duration::from_secs(25), window, Duration::from_secs(10), window, window] {
            assert_eq!(backoff.connection_ended(lasted, true, true, Unacknowledged::default()), Verdict::Transient);
        }
        // One of them in a row of kicks ends it.
        kick(&mut backoff, true, Unacknowledged::default());
        kick(&mut backoff, true, Unacknowledged::default());
        backoff.connection_ended(window, true, true, Unacknowledged::default());
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Transient);
        // The window is never past resetAfterMs.
        let short = Reconnect { min_delay: Duration::from_secs(10), ..policy() };
        assert_eq!(Backoff::new(short).kick_window(), Duration::from_secs(30));
    }

    #[test]
    fn kicks_with_a_connection_we_ended_in_between_are_not_a_takeover() {
        let mut backoff = Backoff::new(policy());
        for _ in 0..5 {
            assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Transient);
            backoff.ended_by_us();
        }
        kick(&mut backoff, true, Unacknowledged::default());
        kick(&mut backoff, true, Unacknowledged::default());
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Takeover, "three in a row still are");
    }

    #[test]
    fn losses_right_after_the_same_publish_make_it_refused_not_a_takeover() {
        // The broker closes (EOF) each time: the takeover streak would end it at the third too.
        let mut backoff = Backoff::new(policy());
        for _ in 1..REFUSED_PUBLISH_STREAK {
            assert_eq!(kick(&mut backoff, true, written(7)), Verdict::Transient);
        }
        assert_eq!(kick(&mut backoff, true, written(7)), Verdict::RefusedPublish(Written { op: 7, topic: "t".into() }));
        // Both streaks start over: the next publish and the next kicks are judged afresh.
        assert_eq!(kick(&mut backoff, true, written(8)), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Transient);

        // Resets (RST, not by the broker's close), however long the connections lasted.
        let mut backoff = Backoff::new(policy());
        for _ in 1..REFUSED_PUBLISH_STREAK {
            assert_eq!(backoff.connection_ended(Duration::from_secs(60), false, false, written(7)), Verdict::Transient);
        }
        assert!(matches!(backoff.connection_ended(Duration::ZERO, false, true, written(7)), Verdict::RefusedPublish(_)));
    }

    #[test]
    fn a_loss_right_after_the_same_publish_again_is_not_counted_as_a_kick() {
        // A kick, then a publish the broker drops: the loss right after sending it again is the
        // publish's doing. Counted as a kick it made a takeover of the third loss, before the
        // publish streak could name the publish.
        let mut backoff = Backoff::new(policy());
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, written(7)), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, written(7)), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, written(7)), Verdict::RefusedPublish(Written { op: 7, topic: "t".into() }));
    }

    #[test]
    fn a_connection_that_lasted_the_kick_window_is_not_a_kick() {
        let mut backoff = Backoff::new(policy());
        let window = backoff.kick_window();
        for _ in 0..TAKEOVER_STREAK {
            assert_eq!(backoff.connection_ended(window, true, true, Unacknowledged::default()), Verdict::Transient);
        }
        // Just under it, the same closes are kicks.
        let just_under = window - Duration::from_millis(1);
        for _ in 1..TAKEOVER_STREAK {
            assert_eq!(backoff.connection_ended(just_under, true, true, Unacknowledged::default()), Verdict::Transient);
        }
        assert_eq!(backoff.connection_ended(just_under, true, true, Unacknowledged::default()), Verdict::Takeover);
    }

    #[test]
    fn a_loss_with_another_or_no_publish_unacknowledged_breaks_the_publish_streak() {
        let mut backoff = Backoff::new(policy());
        let lost = |backoff: &mut Backoff, unacknowledged| backoff.connection_ended(Duration::from_secs(1), false, true, unacknowledged);
        lost(&mut backoff, written(7));
        lost(&mut backoff, written(7));
        lost(&mut backoff, Unacknowledged::default());
        lost(&mut backoff, written(7));
        lost(&mut backoff, written(7));
        lost(&mut backoff, Unacknowledged { publish: Some(Written { op: 7, topic: "another topic of the same op".into() }), ..Unacknowledged::default() });
        assert_eq!(lost(&mut backoff, written(7)), Verdict::Transient);
        assert_eq!(lost(&mut backoff, written(7)), Verdict::Transient);
        assert!(matches!(lost(&mut backoff, written(7)), Verdict::RefusedPublish(Written { op: 7, .. })));
    }

    #[test]
    fn losses_right_after_the_same_subscribe_make_it_refused_not_a_takeover() {
        let mut backoff = Backoff::new(policy());
        // The user's SUBSCRIBE of two filters, then the renewals, one filter each: the streak
        // narrows down to the filter the broker drops, and wins over the takeover streak.
        assert_eq!(kick(&mut backoff, true, subscribe(&["allowed", "denied"])), Verdict::Transient);
        for _ in 2..REFUSED_SUBSCRIBE_STREAK {
            assert_eq!(kick(&mut backoff, true, subscribe(&["denied"])), Verdict::Transient);
        }
        assert_eq!(kick(&mut backoff, true, subscribe(&["denied"])), Verdict::RefusedSubscribe(vec!["denied".into()]));
        // Another filter, or none unacknowledged, starts it over; kicks still count meanwhile.
        let mut backoff = Backoff::new(policy());
        assert_eq!(kick(&mut backoff, true, subscribe(&["a"])), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, subscribe(&["b"])), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Takeover);
        // A publish the broker keeps dropping is judged first.
        let mut backoff = Backoff::new(policy());
        let both = || Unacknowledged { subscribe: vec!["s".into()], ..written(7) };
        for _ in 1..REFUSED_PUBLISH_STREAK {
            assert_eq!(kick(&mut backoff, true, both()), Verdict::Transient);
        }
        assert!(matches!(kick(&mut backoff, true, both()), Verdict::RefusedPublish(_)));
    }

    #[test]
    fn losses_with_filters_unacknowledged_for_the_first_time_are_not_kicks() {
        // A broker that closes on SUBSCRIBEs over its size: each of the first losses leaves a new
        // big SUBSCRIBE unacknowledged. Counted as kicks, three made a takeover (40,000 filters).
        let first_lost = |filters: &[&str]| Unacknowledged { new_suspects: true, ..subscribe(filters) };
        let mut backoff = Backoff::new(policy());
        for part in ["a", "b", "c", "d", "e"] {
            assert_eq!(kick(&mut backoff, true, first_lost(&[part])), Verdict::Transient);
        }
        // Nor do they end a takeover streak.
        let mut backoff = Backoff::new(policy());
        kick(&mut backoff, true, Unacknowledged::default());
        kick(&mut backoff, true, Unacknowledged::default());
        assert_eq!(kick(&mut backoff, true, first_lost(&["a"])), Verdict::Transient);
        assert_eq!(kick(&mut backoff, true, Unacknowledged::default()), Verdict::Takeover);
    }

    #[test]
    fn closes_before_connack_are_a_refusal_only_before_the_first_connection() {
        let mut backoff = Backoff::new(policy());
        assert!(backoff.closed_before_connack(), "before any CONNACK");
        backoff.connected();
        for _ in 0..10 {
            assert!(!backoff.closed_before_connack());
        }
    }
}
