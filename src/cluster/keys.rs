//! Key and channel names. Every key of a room carries the room as a hash tag (`{room}`), so
//! a Redis Cluster would keep a room's keys on one slot and each script stays on one server.

use std::sync::Arc;

/// Names under one prefix (`hibiki:` by default; tests and tenants share a Redis by it).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: Arc::from(prefix) }
    }

    fn room_key(&self, room: &str, suffix: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + room.len() + suffix.len() + 2);
        key.push_str(&self.prefix);
        key.push('{');
        key.push_str(room);
        key.push('}');
        key.push_str(suffix);
        key
    }

    /// The room's pub/sub channel.
    pub(crate) fn channel(&self, room: &str) -> String {
        self.room_key(room, "")
    }

    /// The room a channel of [`channel`](Self::channel) belongs to.
    pub(crate) fn room_of<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b"{")?.strip_suffix(b"}")?;
        std::str::from_utf8(rest).ok()
    }

    /// The room's numbering: a hash with `e` (epoch) and `s` (last seq).
    pub(crate) fn meta(&self, room: &str) -> String {
        self.room_key(room, ".m")
    }

    /// The room's history: a stream whose entry ids are `0-SEQ`.
    pub(crate) fn stream(&self, room: &str) -> String {
        self.room_key(room, ".x")
    }

    /// A publish id's first answer (`fingerprint:seq:epoch`), kept for the idempotency window.
    pub(crate) fn publish_id(&self, room: &str, user: &str, id: &str) -> String {
        let mut key = self.room_key(room, ".i.");
        key.push_str(&user.len().to_string());
        key.push(':');
        key.push_str(user);
        key.push(':');
        key.push_str(id);
        key
    }

    /// A node life's presence entries in a room: a hash `conn -> user`.
    pub(crate) fn entries(&self, room: &str, owner: &str) -> String {
        let mut key = self.room_key(room, ".e.");
        key.push_str(owner);
        key
    }

    /// A room's users: a hash `user -> connections`, across nodes.
    pub(crate) fn users(&self, room: &str) -> String {
        self.room_key(room, ".u")
    }

    /// The node lives known to this server (a set).
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// A node life's heartbeat (a key with a TTL).
    pub(crate) fn heartbeat(&self, owner: &str) -> String {
        format!("{}hb.{owner}", self.prefix)
    }

    /// The rooms where a node life has presence entries (a set).
    pub(crate) fn owner_rooms(&self, owner: &str) -> String {
        format!("{}rooms.{owner}", self.prefix)
    }

    /// The channel a node life probes its own pub/sub connection on.
    pub(crate) fn probe(&self, owner: &str) -> String {
        format!("{}probe.{owner}", self.prefix)
    }
}

/// The shard that keeps `room`, of `shards`: FNV-1a of the name, stable across processes,
/// builds and versions (every node must agree).
pub(crate) fn shard_of(room: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_share_a_hash_tag_and_channels_map_back() {
        let keys = Keys::new("t:");
        assert_eq!(keys.meta("chat:1"), "t:{chat:1}.m");
        assert_eq!(keys.stream("chat:1"), "t:{chat:1}.x");
        assert_eq!(keys.entries("chat:1", "n1.ab"), "t:{chat:1}.e.n1.ab");
        assert_eq!(keys.publish_id("r", "ann", "\"7\""), "t:{r}.i.3:ann:\"7\"");
        assert_eq!(keys.room_of(keys.channel("a{b}c").as_bytes()), Some("a{b}c"));
        assert_eq!(keys.room_of(b"t:probe.n1"), None);
        assert_eq!(keys.room_of(b"other:{r}"), None);
    }

    #[test]
    fn the_shard_of_a_room_is_stable_and_spread() {
        assert_eq!(shard_of("chat:1", 1), 0);
        // Fixed values: every node and every version must agree.
        assert_eq!(shard_of("chat:1", 3), shard_of("chat:1", 3));
        assert_eq!(shard_of("", 2), (0xcbf2_9ce4_8422_2325u64 % 2) as usize);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[shard_of(&format!("room:{i}"), 3)] += 1;
        }
        assert!(counts.iter().all(|&n| n > 800), "{counts:?}");
    }
}
