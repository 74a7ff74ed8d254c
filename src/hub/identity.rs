//! Who a connection is, and which rooms it may enter.

use std::sync::Arc;

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id.
    pub user: Arc<str>,
    /// A display name.
    pub name: Option<String>,
    /// Room patterns allowed; `None`: any.
    pub rooms: Option<Vec<String>>,
}

/// The room `hibiki serve` publishes its counters to, once a second: every client may join
/// it, whatever its token's `rooms` claim says.
pub const STATS_ROOM: &str = "hibiki:stats";

impl Identity {
    /// Whether this user may join `room`. `user:ID` rooms belong to their user alone (others
    /// reach them with `direct`); the stats room ([`STATS_ROOM`]) is open to everyone.
    pub fn may_join(&self, room: &str) -> bool {
        if let Some(owner) = room.strip_prefix("user:") {
            return owner == &*self.user;
        }
        if room == STATS_ROOM {
            return true;
        }
        match &self.rooms {
            None => true,
            Some(patterns) => patterns.iter().any(|p| pattern_matches(p, room)),
        }
    }

    /// Whether this user may publish to `room`: where it may join, except `hibiki:` rooms,
    /// which only the server publishes to.
    pub fn may_publish(&self, room: &str) -> bool {
        !room.starts_with("hibiki:") && self.may_join(room)
    }
}

/// Whether `name` matches `pattern`: exact, or a prefix when the pattern ends with `*`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_room_is_open_to_read_and_closed_to_publish() {
        let limited = Identity { user: Arc::from("ann"), name: None, rooms: Some(vec!["chat:*".into()]) };
        assert!(limited.may_join(STATS_ROOM), "whatever the rooms claim says");
        assert!(!limited.may_join("hibiki:other"));
        assert!(!limited.may_join("game:1"));
        assert!(limited.may_publish("chat:1"));
        assert!(!limited.may_publish(STATS_ROOM), "only the server publishes there");
        let any = Identity { user: Arc::from("bob"), name: None, rooms: None };
        assert!(any.may_join("hibiki:other") && !any.may_publish("hibiki:other"));
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("game:*", "game:1"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("user:42", "user:42"));
        assert!(!pattern_matches("user:42", "user:421"));
        assert!(!pattern_matches("chat:*", "game:1"));
    }
}
