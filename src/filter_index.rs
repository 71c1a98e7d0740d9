//! The topic filters of one connection, indexed by the topics they match, so that routing a
//! message looks only at the filters that can match it: a server subscribed to thousands of
//! per-device topics would otherwise compare every message with every filter. Filters without
//! wildcards are found by the topic itself; the others in a tree of topic levels.

use std::collections::HashMap;

use crate::topic::routing_filter;

#[derive(Debug, Default)]
pub struct FilterIndex {
    /// A topic → the filters that match exactly that topic (a filter, and shared subscriptions
    /// to it, which route as it).
    exact: HashMap<String, Vec<String>>,
    wildcard: LevelNode,
}

/// A level of the wildcard filters' tree: the filters whose last level it is, and the levels
/// after it by name (`+` and `#` among them, as levels of their own).
#[derive(Debug, Default)]
struct LevelNode {
    filters: Vec<String>,
    next: HashMap<String, LevelNode>,
}

/// Whether a filter has a wildcard level: without one it matches only the topic spelled as it
/// (a `+` or `#` inside a level is an ordinary character to `topic_matches`).
fn has_wildcard(filter: &str) -> bool {
    filter.split('/').any(|level| level == "+" || level == "#")
}

impl FilterIndex {
    /// Adds the filter `name`, which must not be in the index already.
    pub fn insert(&mut self, name: &str) {
        let routed = routing_filter(name);
        if !has_wildcard(routed) {
            self.exact.entry(routed.to_string()).or_default().push(name.to_string());
            return;
        }
        let mut node = &mut self.wildcard;
        for level in routed.split('/') {
            node = node.next.entry(level.to_string()).or_default();
        }
        node.filters.push(name.to_string());
    }

    /// Removes the filter `name`, and the tree levels nothing is filed under any more.
    pub fn remove(&mut self, name: &str) {
        let routed = routing_filter(name);
        if has_wildcard(routed) {
            self.wildcard.remove(routed.split('/'), name);
        } else if let Some(names) = self.exact.get_mut(routed) {
            names.retain(|n| n != name);
            if names.is_empty() {
                self.exact.remove(routed);
            }
        }
    }

    /// Calls `found` with each filter `topic` matches, as `topic_matches` decides it for their
    /// routing filters: each once for a topic name (one that holds a `+` or `#` level, which
    /// no broker sends, may find one twice). A callback, not a list: this runs per message.
    pub fn for_each_match<'a>(&'a self, topic: &str, found: &mut impl FnMut(&'a str)) {
        if let Some(names) = self.exact.get(topic) {
            names.iter().for_each(|name| found(name));
        }
        // MQTT-4.7.2-1: a wildcard at the first level does not match a topic starting with `$`.
        self.wildcard.for_each_match(topic.split('/'), !topic.starts_with('$'), found);
    }

    pub fn clear(&mut self) {
        self.exact.clear();
        self.wildcard = LevelNode::default();
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.filters.is_empty() && self.wildcard.next.is_empty()
    }
}

impl LevelNode {
    /// `levels`: the topic's levels after this node's; `wildcards_match`: whether `+` and `#`
    /// here match them.
    fn for_each_match<'a>(&'a self, mut levels: std::str::Split<'_, char>, wildcards_match: bool, found: &mut impl FnMut(&'a str)) {
        // `#` matches the rest, none included: `a/#` matches `a`.
        if let Some(rest) = self.next.get("#").filter(|_| wildcards_match) {
            rest.filters.iter().for_each(|name| found(name));
        }
        let Some(level) = levels.next() else {
            self.filters.iter().for_each(|name| found(name));
            return;
        };
        if let Some(named) = self.next.get(level) {
            named.for_each_match(levels.clone(), true, found);
        }
        if let Some(any) = self.next.get("+").filter(|_| wildcards_match) {
            any.for_each_match(levels, true, found);
        }
    }

    /// Removes `name` from the node `levels` lead to; returns whether this node is left empty.
    fn remove(&mut self, mut levels: std::str::Split<'_, char>, name: &str) -> bool {
        match levels.next() {
            None => self.filters.retain(|n| n != name),
            Some(level) => {
                if self.next.get_mut(level).is_some_and(|child| child.remove(levels, name)) {
                    self.next.remove(level);
                }
            }
        }
        self.filters.is_empty() && self.next.is_empty()
    }
}
