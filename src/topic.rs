//! MQTT 3.1.1 topic names and topic filters: validation and matching.

use crate::errors::{PubSubError, Result};

const MAX_TOPIC_BYTES: usize = 65_535;

fn check_common(kind: &str, topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(PubSubError::InvalidTopic(format!("The {kind} must not be empty")));
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(PubSubError::InvalidTopic(format!(
            "The {kind} is {} bytes of UTF-8; MQTT allows at most {MAX_TOPIC_BYTES}",
            topic.len()
        )));
    }
    if topic.contains('\0') {
        return Err(PubSubError::InvalidTopic(format!("The {kind} must not contain a NUL character")));
    }
    if let Some((c, what)) = unwelcome_char(topic) {
        return Err(PubSubError::InvalidTopic(format!(
            "The {kind} '{}' holds U+{:04X} ({what}), which MQTT says topics should not hold; brokers such as mosquitto close the connection when one arrives",
            topic.escape_debug(),
            c as u32
        )));
    }
    Ok(())
}

/// The first code point of `text` that MQTT 3.1.1 says its UTF-8 strings should not hold
/// (§1.5.3: the control characters U+0001..U+001F and U+007F..U+009F, and Unicode's
/// noncharacters), with what it is. A receiver may close the connection for one, and mosquitto
/// does: a topic, client id or user name holding one costs the connection, not one refusal.
/// U+0000, which they must not hold, is checked apart.
pub fn unwelcome_char(text: &str) -> Option<(char, &'static str)> {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    text.chars().find_map(|c| {
        let n = c as u32;
        if n != 0 && (n <= 0x1f || (0x7f..=0x9f).contains(&n)) {
            Some((c, "a control character"))
        } else if (0xfdd0..=0xfdef).contains(&n) || n & 0xfffe == 0xfffe {
            Some((c, "a Unicode noncharacter"))
        } else {
            None
        }
    })
}

/// A topic name for PUBLISH: no wildcards.
pub fn validate_topic(topic: &str) -> Result<()> {
    check_common("topic", topic)?;
    if topic.contains(['+', '#']) {
        return Err(PubSubError::InvalidTopic(format!(
            "Invalid topic '{topic}': wildcards '+' and '#' are only allowed in subscription filters"
        )));
    }
    Ok(())
}

/// The prefix of a shared subscription (`$share/<group>/<filter>`), which mosquitto, AWS IoT
/// and most brokers support on MQTT 3.1.1 as they do in MQTT 5.
const SHARE_PREFIX: &str = "$share/";

/// The filter that topics match: a shared subscription's messages arrive on their own topic,
/// so `$share/<group>/a/+` routes as `a/+`.
pub fn routing_filter(filter: &str) -> &str {
    match filter.strip_prefix(SHARE_PREFIX).and_then(|rest| rest.split_once('/')) {
        Some((_group, shared)) => shared,
        None => filter,
    }
}

/// A topic filter for SUBSCRIBE: `+` fills a whole level, `#` only as the whole last level;
/// a shared subscription names a group without wildcards, then a filter.
pub fn validate_filter(filter: &str) -> Result<()> {
    check_common("topic filter", filter)?;
    if let Some(rest) = filter.strip_prefix(SHARE_PREFIX) {
        let ok = rest.split_once('/').is_some_and(|(group, shared)| {
            !group.is_empty() && !group.contains(['+', '#']) && !shared.is_empty()
        });
        if !ok {
            return Err(PubSubError::InvalidTopic(format!(
                "Invalid shared subscription '{filter}': write it as '$share/<group>/<filter>', with a group name free of '+' and '#'"
            )));
        }
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        let bad = (level.contains('+') && *level != "+")
            || (level.contains('#') && (*level != "#" || i != last));
        if bad {
            return Err(PubSubError::InvalidTopic(format!(
                "Invalid topic filter '{filter}': '+' must fill a whole level and '#' must be the whole last level"
            )));
        }
    }
    Ok(())
}

/// Whether `topic` matches `filter`, per MQTT 3.1.1 §4.7 (including the rule that
/// wildcards at the first level do not match topics starting with `$`).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_single_level_wildcards() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/c"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("+", "a"));
        assert!(!topic_matches("+", "a/b"));
        assert!(topic_matches("a/+", "a/"));
    }

    #[test]
    fn multi_level_wildcard_includes_parent() {
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("a/#", "b/c"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!topic_matches("#", "$SYS/load"));
        assert!(!topic_matches("+/load", "$SYS/load"));
        assert!(topic_matches("$SYS/#", "$SYS/load"));
    }

    #[test]
    fn topic_names_reject_wildcards_nul_and_empty() {
        assert!(validate_topic("a/b").is_ok());
        for bad in ["", "a/+", "a/#", "a\0b"] {
            assert_eq!(validate_topic(bad).unwrap_err().code(), "ERR_INVALID_TOPIC", "{bad:?}");
        }
        assert!(validate_topic(&"x".repeat(65_536)).is_err());
        assert!(validate_topic(&"x".repeat(65_535)).is_ok());
    }

    #[test]
    fn topics_and_filters_reject_control_characters_and_noncharacters() {
        for (bad, shown) in [("a\n", "U+000A"), ("a/\u{1f}", "U+001F"), ("\u{7f}", "U+007F"), ("a\u{9f}", "U+009F"), ("a/\u{fdd0}", "U+FDD0"), ("a\u{ffff}", "U+FFFF"), ("a\u{10fffe}", "U+10FFFE")] {
            let err = validate_topic(bad).unwrap_err().to_string();
            assert!(err.contains(shown), "{err}");
            assert!(validate_filter(&format!("{bad}/#")).is_err(), "{bad:?}");
        }
        // Printable text in any script, and the characters around the refused ranges, are fine.
        for good in ["a b/~", "\u{a0}caf\u{e9}/\u{fdcf}/\u{fdf0}/\u{fffd}", "\u{1f600}/\u{10fffd}"] {
            assert!(validate_topic(good).is_ok(), "{good:?}");
        }
        assert_eq!(unwelcome_char("worker-1\n"), Some(('\n', "a control character")));
        assert_eq!(unwelcome_char("plain"), None);
    }

    #[test]
    fn filters_allow_wildcards_only_in_whole_levels() {
        for good in ["a/+/c", "#", "a/#", "+", "+/+", "a//b"] {
            assert!(validate_filter(good).is_ok(), "{good}");
        }
        for bad in ["a+", "a/#/b", "a/b#", "", "a\0"] {
            assert!(validate_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shared_subscriptions_route_on_the_filter_after_their_group() {
        for good in ["$share/g/a/+", "$share/g/#", "$share/workers/t"] {
            assert!(validate_filter(good).is_ok(), "{good}");
        }
        for bad in ["$share/g", "$share//a", "$share/g/", "$share/+/a", "$share/g/a/#/b"] {
            assert_eq!(validate_filter(bad).unwrap_err().code(), "ERR_INVALID_TOPIC", "{bad:?}");
        }
        assert_eq!(routing_filter("$share/g/a/+"), "a/+");
        assert_eq!(routing_filter("$share/g/#"), "#");
        assert_eq!(routing_filter("a/+"), "a/+");
        assert_eq!(routing_filter("$SYS/#"), "$SYS/#");
        assert!(topic_matches(routing_filter("$share/g/a/+"), "a/b"));
    }
}
