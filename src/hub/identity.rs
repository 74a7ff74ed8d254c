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

impl Identity {
    /// Whether this user may join `room`. `user:ID` rooms belong to their user alone (others
    /// reach them with `direct`).
    pub fn may_join(&self, room: &str) -> bool {
        if let Some(owner) = room.strip_prefix("user:") {
            return owner == &*self.user;
        }
        match &self.rooms {
            None => true,
            Some(patterns) => patterns.iter().any(|p| pattern_matches(p, room)),
        }
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
    fn patterns() {
        assert!(pattern_matches("game:*", "game:1"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("user:42", "user:42"));
        assert!(!pattern_matches("user:42", "user:421"));
        assert!(!pattern_matches("chat:*", "game:1"));
    }
}
