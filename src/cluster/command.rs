//! The command connection of a shard: one thread takes every call queued since its last
//! write and sends them as one pipeline (one `write`); another reads the replies in order
//! and completes each call. Calls are matched to replies by order (the calls in flight, a
//! queue per connection). Every call has a deadline: the keeper answers one that passed it
//! with [`Fail::Timeout`] (its late reply is dropped), a call made while the connection is
//! down is answered [`Fail::Down`] at once, and the thread reconnects with backoff and
//! jitter. A `NOSCRIPT` reply is retried with the script's source. Numbered publishes are
//! grouped per room at each flush ([`batch`](super::batch)): one script call per group.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{ServerErrorKind, Value};

use super::batch::{self, Counted, Publish};
use super::conn::{self, Reader};
use super::scripts::{SCRIPTS, Script};
use super::{Cluster, lock};
use crate::client::Backoff;
use crate::hub::store::StoreError;

/// Calls taken into one pipeline at most.
const MAX_BATCH: usize = 4096;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The connection is down (or went down with the call in flight).
    Down(String),
    /// No answer before the deadline.
    Timeout,
    /// Redis answered an error.
    Server(String),
}

impl From<Fail> for StoreError {
    fn from(fail: Fail) -> Self {
        match fail {
            Fail::Down(why) => Self::Unavailable(why),
            Fail::Timeout => Self::Timeout,
            Fail::Server(why) => Self::Unavailable(format!("redis answered: {why}")),
        }
    }
}

/// What a call does with its answer.
pub(crate) type OnReply = Box<dyn FnOnce(Result<Value, Fail>) + Send>;

/// A command or a script call.
pub(crate) enum Call {
    /// A plain command.
    Cmd(redis::Cmd),
    /// `EVALSHA` of a script (`EVAL` once Redis said it does not know it).
    Script { script: Script, keys: Vec<String>, args: Vec<Vec<u8>> },
    /// A numbered publish: sent within its room's group, as a publish script call.
    Publish(Box<Publish>),
}

impl Call {
    fn pack(&self, out: &mut Vec<u8>, source: bool) {
        match self {
            Self::Cmd(cmd) => cmd.write_packed_command(out),
            Self::Script { script, keys, args } => {
                let lua = script.lua();
                let mut cmd = if source { redis::cmd("EVAL") } else { redis::cmd("EVALSHA") };
                cmd.arg(if source { lua.source } else { lua.sha.as_str() }).arg(keys.len());
                for key in keys {
                    cmd.arg(key.as_str());
                }
                for arg in args {
                    cmd.arg(arg.as_slice());
                }
                cmd.write_packed_command(out);
            }
            // Never written as it is (the command thread groups publishes first); a PING
            // would keep the replies in step and answer it with an error.
            Self::Publish(_) => redis::cmd("PING").write_packed_command(out),
        }
    }
}

/// A call waiting to be sent or answered.
pub(crate) struct Job {
    call: Call,
    done: OnReply,
    deadline: Instant,
    source: bool,
}

impl Job {
    pub(crate) fn new(call: Call, timeout: Duration, done: OnReply) -> Self {
        Self::until(call, Instant::now() + timeout, done)
    }

    /// A call due by `deadline`.
    pub(crate) fn until(call: Call, deadline: Instant, done: OnReply) -> Self {
        Self { call, done, deadline, source: false }
    }

    /// The call.
    #[cfg(test)]
    pub(crate) fn call(&self) -> &Call {
        &self.call
    }

    /// The publish, for a numbered publish.
    pub(crate) fn publish(&self) -> Option<&Publish> {
        match &self.call {
            Call::Publish(p) => Some(p),
            _ => None,
        }
    }

    /// What answers the call.
    pub(crate) fn into_done(self) -> OnReply {
        self.done
    }

    /// Answers the call.
    pub(crate) fn finish(self, result: Result<Value, Fail>) {
        (self.done)(result);
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// One command connection: the calls in flight on it, in the order they were written.
pub(crate) struct Link {
    closer: TcpStream,
    flights: Mutex<VecDeque<Option<Job>>>,
    /// When a reply last came (or the link was made).
    last_reply: Mutex<Instant>,
    /// A call timed out and no reply came since.
    stalled: AtomicBool,
    broken: AtomicBool,
}

impl Link {
    fn close(&self) {
        self.broken.store(true, Ordering::SeqCst);
        conn::close(&self.closer);
    }
}

/// Numbered publishes waiting for a shard (queued, held or in flight) at most: past it a
/// publish fails at once (`unavailable`: overloaded) rather than waiting for a deadline it
/// would likely miss.
pub(crate) const MAX_WAITING: usize = 16_384;

/// A shard's command side, as the other threads see it.
pub(crate) struct Commands {
    /// Jobs for the thread; `None` wakes it (a flush with publishes was answered).
    sender: Sender<Option<Job>>,
    receiver: Mutex<Option<Receiver<Option<Job>>>>,
    link: Mutex<Option<Arc<Link>>>,
    up: AtomicBool,
    reason: Mutex<String>,
    /// Flushes with publishes waiting for their answers.
    flushes: Arc<AtomicUsize>,
    /// Numbered publishes waiting (see [`MAX_WAITING`]).
    pub(crate) waiting: Arc<AtomicUsize>,
}

impl Commands {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = std::sync::mpsc::channel();
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            link: Mutex::new(None),
            up: AtomicBool::new(false),
            reason: Mutex::new("not connected yet".into()),
            flushes: Arc::new(AtomicUsize::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queues a call.
    pub(crate) fn send(&self, job: Job) {
        if let Err(e) = self.sender.send(Some(job)) {
            if let Some(job) = e.0 {
                job.finish(Err(Fail::Down("stopped".into())));
            }
        }
    }

    /// Counts a publish as waiting until the guard is dropped; `None` when too many wait.
    pub(crate) fn admit(&self) -> Option<Counted> {
        (self.waiting.load(Ordering::SeqCst) < MAX_WAITING).then(|| Counted::new(&self.waiting, None))
    }

    /// Whether the connection is up (calls are sent rather than failed at once).
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Why the connection is down.
    pub(crate) fn reason(&self) -> String {
        lock(&self.reason).clone()
    }

    /// `Err(reason)` while calls cannot be answered.
    pub(crate) fn health(&self) -> Result<(), String> {
        if !self.is_up() {
            return Err(self.reason());
        }
        match &*lock(&self.link) {
            Some(link) if link.stalled.load(Ordering::SeqCst) => Err("not answering in time".into()),
            _ => Ok(()),
        }
    }

    /// Answers the calls in flight past their deadline with [`Fail::Timeout`]; closes a link
    /// that has not answered anything for `stall` while calls wait (it is reconnected).
    pub(crate) fn expire(&self, now: Instant, stall: Duration) {
        let Some(link) = lock(&self.link).clone() else { return };
        let mut expired = Vec::new();
        let silent = {
            let mut flights = lock(&link.flights);
            for flight in flights.iter_mut() {
                match flight {
                    Some(job) if job.deadline <= now => expired.extend(flight.take()),
                    Some(_) => break,
                    None => {}
                }
            }
            !flights.is_empty() && now.duration_since(*lock(&link.last_reply)) > stall
        };
        if !expired.is_empty() {
            link.stalled.store(true, Ordering::SeqCst);
        }
        for job in expired {
            job.finish(Err(Fail::Timeout));
        }
        if silent {
            tracing::warn!("redis command connection silent for {stall:?}: reconnecting");
            link.close();
        }
    }

    /// Closes the connection (it is reconnected unless stopped).
    pub(crate) fn close(&self) {
        if let Some(link) = lock(&self.link).as_ref() {
            link.close();
        }
    }

    fn set_down(&self, reason: String) {
        self.up.store(false, Ordering::SeqCst);
        *lock(&self.reason) = reason;
    }
}

/// The command thread of shard `index`.
pub(crate) fn run(cluster: Arc<Cluster>, index: usize) {
    let shard = &cluster.shards[index];
    let Some(receiver) = lock(&shard.commands.receiver).take() else { return };
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).max_attempts(None);
    let mut next_try = Instant::now();
    let mut batch: Vec<Job> = Vec::new();
    // Publishes held while flushes with publishes wait for their answers.
    let mut held: Vec<Job> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut writer: Option<(TcpStream, Arc<Link>)> = None;
    loop {
        if cluster.is_stopped() {
            if let Some((_, link)) = &writer {
                link.close();
            }
            for job in held.drain(..).chain(batch.drain(..)).chain(receiver.try_iter().flatten()) {
                job.finish(Err(Fail::Down("stopped".into())));
            }
            return;
        }
        match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(job) => batch.extend(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.extend(job),
                Err(_) => break,
            }
        }
        if writer.as_ref().is_some_and(|(_, link)| link.broken.load(Ordering::SeqCst)) {
            writer = None;
        }
        if writer.is_none() && Instant::now() >= next_try {
            match open(&cluster, index) {
                Ok(made) => {
                    backoff.reset();
                    writer = Some(made);
                }
                Err(why) => {
                    tracing::debug!(shard = index, "redis connect failed: {why}");
                    shard.commands.set_down(why);
                    next_try = Instant::now()
                        + backoff.next(rand::random::<f64>()).unwrap_or(Duration::from_secs(2));
                }
            }
        }
        let hold = shard.commands.flushes.load(Ordering::SeqCst) >= batch::MAX_FLUSHES_IN_FLIGHT;
        if batch.is_empty() && (hold || held.is_empty()) {
            continue;
        }
        let Some((stream, link)) = &mut writer else {
            let why = shard.commands.reason();
            for job in held.drain(..).chain(batch.drain(..)) {
                job.finish(Err(Fail::Down(why.clone())));
            }
            continue;
        };
        buf.clear();
        let now = Instant::now();
        let (due, late): (Vec<Job>, Vec<Job>) =
            held.drain(..).chain(batch.drain(..)).partition(|job| job.deadline > now);
        for job in late {
            job.finish(Err(Fail::Timeout));
        }
        let (mut jobs, kept) = batch::group(&cluster, due, hold);
        held = kept;
        // The flush's last publish call answered, all of its calls are (replies come in
        // order): the thread is woken to send what was held meanwhile.
        if let Some(last) = jobs
            .iter_mut()
            .rev()
            .find(|j| matches!(&j.call, Call::Script { script: Script::Publish, .. }) && !j.source)
        {
            let wake = shard.commands.sender.clone();
            let guard = Counted::new(
                &shard.commands.flushes,
                Some(Box::new(move || {
                    let _ = wake.send(None);
                })),
            );
            let done = std::mem::replace(&mut last.done, Box::new(|_| {}));
            last.done = Box::new(move |reply| {
                done(reply);
                drop(guard);
            });
        }
        {
            let mut flights = lock(&link.flights);
            for job in jobs {
                job.call.pack(&mut buf, job.source);
                flights.push_back(Some(job));
            }
        }
        if let Err(e) = stream.write_all(&buf) {
            tracing::warn!(shard = index, "redis write failed: {e}");
            // The reader fails what is in flight and marks the shard down.
            link.close();
        }
    }
}

/// Connects, loads the scripts, starts the reader.
fn open(cluster: &Arc<Cluster>, index: usize) -> Result<(TcpStream, Arc<Link>), String> {
    let shard = &cluster.shards[index];
    let name = format!("hibiki:{}:cmd", cluster.owner());
    let (mut stream, reader) = conn::connect(&shard.target, &name, cluster.settings.timeout)?;
    let closer = stream.try_clone().map_err(|e| e.to_string())?;
    let link = Arc::new(Link {
        closer,
        flights: Mutex::new(VecDeque::new()),
        last_reply: Mutex::new(Instant::now()),
        stalled: AtomicBool::new(false),
        broken: AtomicBool::new(false),
    });
    let mut buf = Vec::new();
    // The shard is up once Redis loaded every script (a server that cannot is of no use).
    let loading = Arc::new(AtomicUsize::new(SCRIPTS.len()));
    {
        let mut flights = lock(&link.flights);
        for lua in SCRIPTS.iter() {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(lua.source);
            cmd.write_packed_command(&mut buf);
            let (name, sha, check) = (lua.name, lua.sha.as_str(), Arc::clone(&link));
            let (c, loading) = (Arc::clone(cluster), Arc::clone(&loading));
            let done: OnReply = Box::new(move |r| {
                if !matches!(&r, Ok(Value::BulkString(b)) if b == sha.as_bytes()) {
                    tracing::warn!("SCRIPT LOAD {name} answered {r:?}: closing the connection");
                    check.close();
                    return;
                }
                if loading.fetch_sub(1, Ordering::SeqCst) == 1 && !check.broken.load(Ordering::SeqCst) {
                    c.shards[index].commands.up.store(true, Ordering::SeqCst);
                    c.on_commands_up(index);
                }
            });
            flights.push_back(Some(Job::new(Call::Cmd(redis::Cmd::new()), cluster.settings.timeout, done)));
        }
    }
    stream.write_all(&buf).map_err(|e| format!("{}: {e}", shard.target.addr()))?;
    let (c, l) = (Arc::clone(cluster), Arc::clone(&link));
    std::thread::Builder::new()
        .name(format!("hibiki-redis-{index}-r"))
        .spawn(move || read(&c, index, &l, reader))
        .map_err(|e| e.to_string())?;
    *lock(&shard.commands.link) = Some(Arc::clone(&link));
    *lock(&shard.commands.reason) = "loading the scripts".into();
    Ok((stream, link))
}

/// The reader of one command connection.
fn read(cluster: &Arc<Cluster>, index: usize, link: &Arc<Link>, mut reader: Reader) {
    let shard = &cluster.shards[index];
    let why = loop {
        let value = match reader.next() {
            Ok(value) => value,
            Err(e) => break format!("{}: {e}", shard.target.addr()),
        };
        *lock(&link.last_reply) = Instant::now();
        link.stalled.store(false, Ordering::SeqCst);
        let flight = lock(&link.flights).pop_front();
        let job = match flight {
            None => {
                break format!(
                    "{}: a reply nobody asked for: {}",
                    shard.target.addr(),
                    conn::describe(&value)
                );
            }
            Some(None) => continue,
            Some(Some(job)) => job,
        };
        match value {
            Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript) && !job.source => {
                // Redis restarted or flushed its scripts: once more with the source.
                shard.commands.send(Job { source: true, ..job });
            }
            Value::ServerError(e) => job.finish(Err(Fail::Server(e.to_string()))),
            value => job.finish(Ok(value)),
        }
    };
    link.close();
    let current = {
        let mut current = lock(&shard.commands.link);
        let same = current.as_ref().is_some_and(|l| Arc::ptr_eq(l, link));
        if same {
            *current = None;
        }
        same
    };
    if current && !cluster.is_stopped() {
        tracing::warn!(shard = index, "redis command connection lost: {why}");
        shard.commands.set_down(why.clone());
    }
    let flights: Vec<Job> = lock(&link.flights).drain(..).flatten().collect();
    for job in flights {
        job.finish(Err(Fail::Down(why.clone())));
    }
}
