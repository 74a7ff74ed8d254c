//! The Lua scripts: each a single Redis call, atomic on the server, run by `EVALSHA` (and
//! `EVAL` after a `NOSCRIPT`: a Redis that restarted or flushed its script cache).

use std::sync::LazyLock;

/// A script: its source and SHA-1 (what `EVALSHA` names it by).
#[derive(Debug)]
pub(crate) struct Lua {
    pub(crate) name: &'static str,
    pub(crate) source: &'static str,
    pub(crate) sha: String,
}

impl Lua {
    fn new(name: &'static str, source: &'static str) -> Self {
        Self { name, source, sha: redis::Script::new(source).get_hash().to_owned() }
    }
}

/// Publish numbered messages of one room, in order: per message the idempotency check on
/// `(user, client id)` (one `SET NX GET`, Redis 7: it claims the id for the seq it would get,
/// or answers the first use), the next seq, the append to the room's stream under that seq; then
/// the trim and one `PUBLISH` carrying every message numbered — in one call, so numbering,
/// storing before delivering and the order are the same for every node (the stream is trimmed
/// once per call: an exact trim walks the stream's first node). The node sends every
/// publish of a room pending at a flush as one call (one message is a batch of one).
///
/// KEYS: meta, stream, then per message its publish id's key (the meta key for one without
/// an id). ARGV: channel, epoch for a new life, history size, history TTL in ms (0: none), id
/// window in ms, then per message its fingerprint ('': no id) and its payload.
///
/// Answers one `{code, seq, epoch}` per message, in order: `{2, seq, epoch}` (published),
/// `{0, seq, epoch}` (a repeat: the first answer) or `{1, seq, epoch}` (the id was used for
/// another message). An id repeated within the batch is a repeat of its first use there.
///
/// The channel gets `SEQ:EPOCH:PAYLOAD` for one message numbered, and
/// `*COUNT:FIRST:EPOCH:` then `LEN:PAYLOAD` per message for several: their seqs are
/// `FIRST`, `FIRST + 1`, ... (consecutive: repeats take none).
const PUBLISH: &str = r"
local n = (#ARGV - 5) / 2
local m = redis.call('HMGET', KEYS[1], 'e', 's')
local e, s = m[1], tonumber(m[2] or '0')
local fresh = not e
if fresh then
  e = ARGV[2]
  s = 0
end
local answers, parts = {}, {}
local first
local count = 0
for i = 1, n do
  local fp, payload = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  local seen = false
  if fp ~= '' then
    -- Claims the id for the seq it would get; an id already claimed answers its first use.
    seen = redis.call('SET', KEYS[2 + i], fp .. ':' .. (s + 1) .. ':' .. e, 'NX', 'GET', 'PX', ARGV[5])
  end
  if seen then
    local f, ss, se = string.match(seen, '^([^:]*):([^:]*):(.*)$')
    if f == fp then answers[i] = {0, tonumber(ss), se} else answers[i] = {1, tonumber(ss), se} end
  else
    if fresh then
      fresh = false
      redis.call('DEL', KEYS[2])
      redis.call('HSET', KEYS[1], 'e', e)
    end
    s = s + 1
    redis.call('XADD', KEYS[2], '0-' .. s, 'd', payload)
    count = count + 1
    if count == 1 then first = s end
    parts[#parts + 1] = #payload .. ':'
    parts[#parts + 1] = payload
    answers[i] = {2, s, e}
  end
end
if count > 0 then
  redis.call('HSET', KEYS[1], 's', s)
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '=', ARGV[3])
  if ARGV[4] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
  if count == 1 then
    redis.call('PUBLISH', ARGV[1], s .. ':' .. e .. ':' .. parts[2])
  else
    redis.call('PUBLISH', ARGV[1], '*' .. count .. ':' .. first .. ':' .. e .. ':' .. table.concat(parts))
  end
end
return answers
";

/// A room's position, and the messages after a seq: one call for a join, a resume or a
/// history fetch. A room without state (new, or lost by Redis) starts a new epoch; so does a
/// room whose numbering went back behind what this node already delivered of the same epoch
/// (Redis lost its last writes).
///
/// KEYS: meta, stream. ARGV: epoch for a new life, after ('': the position only), the
/// epoch `after` belongs to ('': any), the epoch and seq this node delivered up to ('', 0).
///
/// Answers `{epoch, seq}` or `{epoch, seq, entries}`, entries as `XRANGE` gives them (after
/// `after` of this epoch, or all of them when `after` is of another epoch or past the seq).
const READ: &str = r"
local m = redis.call('HMGET', KEYS[1], 'e', 's')
local e = m[1]
local s = tonumber(m[2] or '0')
if e and ARGV[4] == e and tonumber(ARGV[5]) > s then e = false end
if not e then
  e = ARGV[1]
  s = 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 's', 0)
end
if ARGV[2] == '' then return {e, s} end
local after = tonumber(ARGV[2])
if (ARGV[3] ~= '' and ARGV[3] ~= e) or after > s then after = 0 end
return {e, s, redis.call('XRANGE', KEYS[2], '(0-' .. after, '+')}
";

/// Adds a connection to a room's presence (a no-op for one already there).
///
/// KEYS: the node life's entries in the room, the room's users. ARGV: conn, user, list
/// limit. Answers `{newcomer, count}` or `{newcomer, count, users}` within the limit.
const PRESENCE_ADD: &str = r"
local newcomer = 0
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then newcomer = 1 end
end
local count = redis.call('HLEN', KEYS[2])
if count <= tonumber(ARGV[3]) then return {newcomer, count, redis.call('HKEYS', KEYS[2])} end
return {newcomer, count}
";

/// Removes a connection from a room's presence (a no-op for one not there).
///
/// KEYS: as for add. ARGV: conn, user. Answers `{gone, count}`.
const PRESENCE_REMOVE: &str = r"
local gone = 0
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    gone = 1
  end
end
return {gone, redis.call('HLEN', KEYS[2])}
";

/// Removes every entry of a (dead) node life from a room.
///
/// KEYS: as for add. Answers `{count, users gone}`: each user is gone once, for whoever
/// removed their last entry, so only one survivor announces a leave.
const PRESENCE_FORGET: &str = r"
local entries = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 2, #entries, 2 do
  local user = entries[i]
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    table.insert(gone, user)
  end
end
redis.call('DEL', KEYS[1])
return {redis.call('HLEN', KEYS[2]), gone}
";

/// The scripts, loaded on every new command connection.
pub(crate) static SCRIPTS: LazyLock<[Lua; 5]> = LazyLock::new(|| {
    [
        Lua::new("publish", PUBLISH),
        Lua::new("read", READ),
        Lua::new("presence_add", PRESENCE_ADD),
        Lua::new("presence_remove", PRESENCE_REMOVE),
        Lua::new("presence_forget", PRESENCE_FORGET),
    ]
});

/// Which script.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    Publish = 0,
    Read = 1,
    PresenceAdd = 2,
    PresenceRemove = 3,
    PresenceForget = 4,
}

impl Script {
    pub(crate) fn lua(self) -> &'static Lua {
        &SCRIPTS[self as usize]
    }
}
