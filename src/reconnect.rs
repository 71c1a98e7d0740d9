//! When to try again after a lost connection: exponential backoff with full jitter, and the
//! watches for failures that, repeated, are no longer bad luck: a client id taken over by
//! another connection (the broker closing each new connection soon after accepting it), and
//! AWS IoT closing each attempt before its CONNACK (its policy refusing the client).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::options::Reconnect;

/// Connections in a row that the broker closed soon after accepting them before we call it a
/// client id takeover rather than bad luck.
pub const TAKEOVER_STREAK: u32 = 3;
/// Attempts in a row that AWS IoT closed before CONNACK, once it had accepted this instance,
/// before we call it a policy refusal rather than throttling or a back-end hiccup.
pub const CLOSED_BEFORE_CONNACK_STREAK: u32 = 3;

/// The same suspicious failure, counted while it repeats.
#[derive(Default)]
struct Streak(u32);

impl Streak {
    /// One more in a row; whether there have now been `limit`.
    fn extend(&mut self, limit: u32) -> bool {
        self.0 = self.0.saturating_add(1);
        self.0 >= limit
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

pub struct Backoff {
    policy: Reconnect,
    /// Failed attempts (or short-lived connections) since the last lasting connection.
    attempt: u32,
    /// Consecutive connections closed by the broker soon after a first-try reconnect.
    kicked: Streak,
    /// Consecutive attempts closed by AWS IoT after CONNECT, without a CONNACK.
    closed_before_connack: Streak,
    /// Whether the broker ever accepted a connection of this instance.
    has_connected: bool,
}

impl Backoff {
    pub fn new(policy: Reconnect) -> Self {
        Self { policy, attempt: 0, kicked: Streak::default(), closed_before_connack: Streak::default(), has_connected: false }
    }

    /// The broker accepted a connection (CONNACK).
    pub fn connected(&mut self) {
        self.has_connected = true;
        self.closed_before_connack.reset();
    }

    /// Whether the broker ever accepted a connection of this instance: failures after that are
    /// more likely an outage than a misconfiguration.
    pub fn has_connected(&self) -> bool {
        self.has_connected
    }

    /// AWS IoT closed an attempt after CONNECT, without a CONNACK. Returns whether that is a
    /// refusal by its policy: before the instance ever connected, or when it keeps happening.
    pub fn closed_before_connack(&mut self) -> bool {
        self.closed_before_connack.extend(CLOSED_BEFORE_CONNACK_STREAK) || !self.has_connected
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

    /// A connection ended after lasting `lasted`; `closed_by_broker` when the broker closed it
    /// without an error of ours or the network's. Returns true when this makes a takeover streak.
    pub fn connection_ended(&mut self, lasted: Duration, closed_by_broker: bool, first_try: bool) -> bool {
        if lasted >= self.policy.reset_after {
            self.attempt = 0;
        }
        if closed_by_broker && first_try && lasted < self.policy.reset_after {
            self.kicked.extend(TAKEOVER_STREAK)
        } else {
            self.kicked.reset();
            false
        }
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
        backoff.connection_ended(Duration::from_secs(31), false, true);
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn repeated_kicks_right_after_connecting_make_a_takeover_streak() {
        let mut backoff = Backoff::new(policy());
        assert!(!backoff.connection_ended(Duration::from_secs(1), true, true));
        assert!(!backoff.connection_ended(Duration::from_secs(1), true, true));
        assert!(backoff.connection_ended(Duration::from_secs(1), true, true));
        // A failed reconnect in between (a broker restart) or a network error breaks the streak.
        let mut backoff = Backoff::new(policy());
        backoff.connection_ended(Duration::from_secs(1), true, true);
        backoff.connection_ended(Duration::from_secs(1), true, false);
        assert!(!backoff.connection_ended(Duration::from_secs(1), true, true));
    }

    #[test]
    fn closes_before_connack_are_a_refusal_at_first_or_when_they_repeat() {
        let mut backoff = Backoff::new(policy());
        assert!(backoff.closed_before_connack(), "before any CONNACK");
        backoff.connected();
        for _ in 1..CLOSED_BEFORE_CONNACK_STREAK {
            assert!(!backoff.closed_before_connack());
        }
        assert!(backoff.closed_before_connack());
        // A CONNACK in between breaks the streak.
        backoff.connected();
        assert!(!backoff.closed_before_connack());
    }
}
