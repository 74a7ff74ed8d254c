//! What a Redis server says about itself: `INFO cpu` and `INFO commandstats`, read at the
//! edges of the window over one plain TCP connection speaking RESP (an array of bulk strings
//! out, bulk strings back: a few lines, no client library).

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

/// Largest reply accepted (`INFO commandstats` of a busy server is a few KiB).
const MAX_REPLY: usize = 1 << 20;

/// A Redis server to read `INFO` from.
#[derive(Clone)]
pub(crate) struct Redis {
    /// The URL as given, its password masked.
    pub(crate) url: String,
    addr: SocketAddr,
    /// `AUTH` arguments: the password, after the user name if there is one.
    auth: Vec<String>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("url", &self.url).field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// `url` with the password of its user information (if any) replaced by `***`.
pub(crate) fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{hostport}{}", &rest[end..])
        }
        None => url.to_string(),
    }
}

/// What `INFO` said at one moment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    /// `used_cpu_sys + used_cpu_user`, seconds since the server started.
    pub(crate) cpu_secs: f64,
    /// Calls per command since the server started (or since `CONFIG RESETSTAT`).
    pub(crate) calls: BTreeMap<String, u64>,
}

impl Sample {
    /// Calls per command from `self` to `later`, leaving out `info` (the sampling itself)
    /// and the `auth` of the later sample when this reader authenticates.
    pub(crate) fn calls_until(&self, later: &Self, authenticated: bool) -> BTreeMap<String, u64> {
        later
            .calls
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, &n)| {
                let mut delta = n.saturating_sub(self.calls.get(name).copied().unwrap_or(0));
                if authenticated && name == "auth" {
                    delta = delta.saturating_sub(1);
                }
                (name.clone(), delta)
            })
            .filter(|&(_, delta)| delta > 0)
            .collect()
    }
}

/// Commands that are only ever top-level calls (a script cannot call them): the script
/// calls. `INFO commandstats` also counts every command a script runs inside as a call of its
/// own, so those of `calls` past these are partly top-level and partly run inside scripts.
pub(crate) const SCRIPT_COMMANDS: [&str; 6] =
    ["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"];

/// Script calls (top-level by necessity) among `commands`.
pub(crate) fn script_calls(commands: &BTreeMap<String, u64>) -> u64 {
    SCRIPT_COMMANDS.iter().filter_map(|name| commands.get(*name)).sum()
}

impl Redis {
    /// `redis://[[USER]:PASSWORD@]HOST[:PORT][/[DB]]`, port 6379 by default (the database
    /// does not matter to `INFO`).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("expected redis://HOST[:PORT]/ (rediss:// and unix sockets are not supported)")?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let auth = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            None => Vec::new(),
            Some(("", password)) => vec![password.to_string()],
            Some((user, password)) => vec![user.to_string(), password.to_string()],
        };
        let (host, port) = match hostport.strip_prefix('[') {
            Some(inner) => {
                let (host, after) = inner.split_once(']').ok_or("unclosed [ in the host")?;
                (host, after.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            },
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        let port = match port {
            None => 6379,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or("invalid port")?,
        };
        let addrs: Vec<SocketAddr> =
            (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        Ok(Self { url: masked(url), addr, auth })
    }

    /// Whether this reader sends `AUTH` first.
    pub(crate) fn authenticates(&self) -> bool {
        !self.auth.is_empty()
    }

    /// Connects, authenticates if asked to, and reads `INFO cpu` and `INFO commandstats`,
    /// all within `timeout`.
    ///
    /// # Errors
    ///
    /// The reason, for a person: unreachable, no answer in time, an error reply, or a reply
    /// that is not RESP or lacks the CPU fields.
    pub(crate) fn sample(&self, timeout: Duration) -> Result<Sample, String> {
        let deadline = Instant::now() + timeout;
        let mut stream = TcpStream::connect_timeout(&self.addr, timeout)
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let mut request = Vec::new();
        if self.authenticates() {
            let mut args = vec!["AUTH"];
            args.extend(self.auth.iter().map(String::as_str));
            command(&mut request, &args);
        }
        command(&mut request, &["INFO", "cpu"]);
        command(&mut request, &["INFO", "commandstats"]);
        stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        stream.write_all(&request).map_err(|e| format!("cannot send INFO: {e}"))?;
        let mut reader = Replies { stream, buf: Vec::new(), deadline };
        if self.authenticates() {
            reader.reply().map_err(|e| format!("AUTH: {e}"))?;
        }
        let cpu = reader.reply().map_err(|e| format!("INFO cpu: {e}"))?;
        let stats = reader.reply().map_err(|e| format!("INFO commandstats: {e}"))?;
        Ok(Sample { cpu_secs: cpu_secs(&cpu)?, calls: command_calls(&stats) })
    }
}

/// Appends a command as a RESP array of bulk strings.
fn command(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
}

/// Replies read off one connection, in order.
struct Replies {
    stream: TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Replies {
    /// The next reply: a bulk or simple string's text, or the error Redis answered.
    fn reply(&mut self) -> Result<String, String> {
        let line = self.line()?;
        let rest = line.get(1..).unwrap_or("");
        match line.as_bytes()[0] {
            b'+' => Ok(rest.to_string()),
            b'-' => Err(format!("Redis answered an error: {rest}")),
            b'$' => {
                let len: i64 = rest.parse().map_err(|_| format!("bad bulk length {rest:?}"))?;
                if len < 0 {
                    return Err("Redis answered nil".into());
                }
                let len = len as usize;
                if len > MAX_REPLY {
                    return Err(format!("a reply of {len} bytes is larger than {MAX_REPLY}"));
                }
                self.fill(len + 2)?;
                if &self.buf[len..len + 2] != b"\r\n" {
                    return Err("a bulk string without its CRLF".into());
                }
                let text = String::from_utf8_lossy(&self.buf[..len]).into_owned();
                self.buf.drain(..len + 2);
                Ok(text)
            }
            _ => {
                Err(format!("not a Redis reply (it begins {:?})", line.chars().take(32).collect::<String>()))
            }
        }
    }

    /// The next line, without its CRLF.
    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                if line.is_empty() {
                    return Err("an empty line where a reply should begin".into());
                }
                return Ok(line);
            }
            if self.buf.len() > 512 {
                let start = String::from_utf8_lossy(&self.buf[..32]).into_owned();
                return Err(format!("not a Redis reply (it begins {start:?})"));
            }
            self.read_more()?;
        }
    }

    /// Reads until `len` bytes are buffered.
    fn fill(&mut self, len: usize) -> Result<(), String> {
        while self.buf.len() < len {
            self.read_more()?;
        }
        Ok(())
    }

    fn read_more(&mut self) -> Result<(), String> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("no answer in time")?;
        self.stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err("the connection closed before the reply was complete".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err("no answer in time".into())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `used_cpu_sys + used_cpu_user` of an `INFO cpu` reply.
fn cpu_secs(info: &str) -> Result<f64, String> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':')?.parse::<f64>().ok())
            .ok_or_else(|| format!("the reply has no {name} (is this Redis?)"))
    };
    Ok(field("used_cpu_sys")? + field("used_cpu_user")?)
}

/// The `calls=` of each `cmdstat_NAME:calls=...,usec=...` line.
fn command_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim_end().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields.split(',').find_map(|f| f.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn parses_urls() {
        let r = Redis::parse("redis://127.0.0.1:6390/0").unwrap();
        assert_eq!((r.addr.port(), r.auth.len()), (6390, 0));
        assert_eq!(Redis::parse("redis://127.0.0.1").unwrap().addr.port(), 6379);
        assert_eq!(Redis::parse("redis://:pw@127.0.0.1/").unwrap().auth, ["pw"]);
        assert_eq!(Redis::parse("redis://me:pw@127.0.0.1/").unwrap().auth, ["me", "pw"]);
        assert_eq!(Redis::parse("redis://[::1]:7000").unwrap().addr.port(), 7000);
        assert!(Redis::parse("127.0.0.1:6379").is_err());
        assert!(Redis::parse("rediss://127.0.0.1").is_err());
        assert!(Redis::parse("redis://:6379").is_err());
        assert!(Redis::parse("redis://127.0.0.1:0").is_err());
        assert_eq!(masked("redis://me:secret@h:1/0"), "redis://me:***@h:1/0");
        assert_eq!(masked("redis://:secret@h/"), "redis://:***@h/");
        assert_eq!(masked("redis://h:1/"), "redis://h:1/");
        assert!(!format!("{:?}", Redis::parse("redis://:pw@127.0.0.1/").unwrap()).contains("pw"));
    }

    #[test]
    fn reads_info_fields() {
        let cpu = "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\nused_cpu_sys_children:9.0\r\n\
                   used_cpu_sys_main_thread:1.0\r\n";
        assert_eq!(cpu_secs(cpu), Ok(3.75));
        assert!(cpu_secs("# CPU\r\nused_cpu_user:1\r\n").unwrap_err().contains("used_cpu_sys"));
        let stats = "# Commandstats\r\ncmdstat_publish:calls=10,usec=5,usec_per_call=0.5,rejected_calls=0\r\n\
                     cmdstat_info:calls=4,usec=1\r\ncmdstat_auth:calls=2,usec=1\r\ncmdstat_bad:usec=1\r\n";
        let before = Sample { cpu_secs: 0.0, calls: command_calls(stats) };
        assert_eq!(before.calls.len(), 3);
        let mut after = before.clone();
        after.calls.insert("publish".into(), 25);
        after.calls.insert("info".into(), 8);
        after.calls.insert("auth".into(), 3);
        after.calls.insert("evalsha".into(), 7);
        let delta = before.calls_until(&after, true);
        assert_eq!(delta, BTreeMap::from([("evalsha".into(), 7), ("publish".into(), 15)]));
        assert_eq!(script_calls(&delta), 7, "publish may run inside a script: not counted");
        let mixed = BTreeMap::from([("eval".into(), 2), ("fcall".into(), 1), ("get".into(), 9)]);
        assert_eq!(script_calls(&mixed), 3);
        assert_eq!(before.calls_until(&after, false).get("auth"), Some(&1));
    }

    /// A server that answers one connection with `reply`, then holds it open for `hold`.
    fn fake(reply: &'static [u8], hold: Duration) -> (Redis, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(reply);
            std::thread::sleep(hold);
            // Close our side, then wait for the reader to close its own (so that nothing
            // unread turns our close into a reset).
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.read(&mut buf);
        });
        (Redis { url: "redis://fake/".into(), addr, auth: Vec::new() }, thread)
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let cases: [(&[u8], &str); 6] = [
            (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a Redis reply"),
            (b"-NOAUTH Authentication required.\r\n", "NOAUTH"),
            (b"$5\r\nhello\r\n$5\r\nworld\r\n", "no used_cpu_sys"),
            (b"$99999999999\r\n", "larger than"),
            (b"$x\r\n", "bad bulk length"),
            (b"$10\r\nabc", "closed before the reply was complete"),
        ];
        for (reply, expected) in cases {
            let (redis, thread) = fake(reply, Duration::ZERO);
            let err = redis.sample(Duration::from_secs(5)).unwrap_err();
            assert!(err.contains(expected), "{reply:?}: {err}");
            thread.join().unwrap();
        }
        // Half a reply, then silence: the deadline ends the wait.
        let (redis, thread) = fake(b"$10\r\nabc", Duration::from_secs(1));
        let err = redis.sample(Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("no answer in time"), "{err}");
        thread.join().unwrap();
        let (redis, thread) = fake(&[0xff; 600], Duration::ZERO);
        assert!(redis.sample(Duration::from_secs(5)).unwrap_err().contains("not a Redis reply"));
        thread.join().unwrap();
        let (redis, thread) = fake(b"$18\r\nused_cpu_sys:1.0\r\n\r\n$0\r\n\r\n", Duration::ZERO);
        let err = redis.sample(Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("no used_cpu_user"), "{err}");
        thread.join().unwrap();
    }
}
