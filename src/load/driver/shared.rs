//! What the threads of a run share (the clock, the timeline, the start line, progress
//! counters), how the run opens connections, and what each thread counted about them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::ClientConfig;

use crate::load::report::FailureCause;
use crate::load::scenarios::histogram;
use crate::load::target::Route;
use crate::proto::deflate::DeflateConfig;

/// Nanoseconds since the run started, for every thread.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Clock(pub(super) Instant);

impl Clock {
    pub(crate) fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The phases of the run, in nanoseconds on the [`Clock`].
#[derive(Copy, Clone, Debug)]
pub(crate) struct Timeline {
    /// Traffic starts (warmup).
    pub(crate) start: u64,
    /// The measured window starts.
    pub(crate) measure: u64,
    /// The measured window ends; no more sends.
    pub(crate) end: u64,
}

impl Timeline {
    /// Whether `t` is in the measured window.
    pub(crate) fn measuring(&self, t: u64) -> bool {
        t >= self.measure && t < self.end
    }
}

/// What the threads of one run share: the clock, the start line, progress counters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) threads: usize,
    pub(super) warmup: u64,
    pub(super) duration: u64,
    pub(super) ready: AtomicUsize,
    pub(super) t0: AtomicU64,
    pub(super) abort: AtomicBool,
    pub(super) released: AtomicBool,
    /// Broadcast: messages published, added by each thread when its publishing stops.
    pub(crate) published: AtomicU64,
    /// Broadcast: threads whose publishing stopped.
    pub(crate) publish_done: AtomicUsize,
    pub(super) opened: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) received: AtomicU64,
}

impl Shared {
    pub(crate) fn new(threads: usize, warmup: Duration, duration: Duration) -> Self {
        Self {
            clock: Clock(Instant::now()),
            threads,
            warmup: warmup.as_nanos() as u64,
            duration: duration.as_nanos() as u64,
            ready: AtomicUsize::new(0),
            t0: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
            released: AtomicBool::new(false),
            published: AtomicU64::new(0),
            publish_done: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// The timeline, once every thread has its connections.
    pub(crate) fn timeline(&self) -> Option<Timeline> {
        let start = self.t0.load(Ordering::Acquire);
        (start != u64::MAX).then(|| {
            let measure = start + self.warmup;
            Timeline { start, measure, end: measure + self.duration }
        })
    }

    /// Whether the run was called off: no connection opened anywhere.
    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Lets the drivers close their connections (after the server was sampled).
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// A thread that cannot run (no event loop) counts as ready and calls the run off.
    pub(crate) fn give_up(&self) {
        self.abort.store(true, Ordering::Release);
        self.ready.fetch_add(1, Ordering::AcqRel);
    }

    /// (opened, failed, received) so far, over all threads.
    pub(crate) fn progress(&self) -> (u64, u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// How a run opens connections.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Which target each slot connects to.
    pub(crate) route: Route,
    /// Connection slots over all threads; thread `t` has slots `t, t + threads, ...`.
    pub(crate) slots: usize,
    pub(crate) connect_timeout: u64,
    pub(crate) drain: u64,
    pub(crate) max_pending: usize,
    /// Connect scenario: a slot opens a new connection as soon as the last one ended.
    pub(crate) recycle: bool,
    /// Idle scenario: give the buffers of idle connections back.
    pub(crate) lean: bool,
    /// The TLS configuration, when a target is `wss://`.
    pub(crate) tls: Option<Arc<ClientConfig>>,
    /// Offer permessage-deflate with these settings (`None`: offer nothing).
    pub(crate) deflate: Option<DeflateConfig>,
}

/// What one thread counted about connections.
#[derive(Clone, Debug)]
pub(crate) struct DriverStats {
    pub(crate) attempts: u64,
    pub(crate) opened: u64,
    pub(crate) failures: BTreeMap<FailureCause, u64>,
    pub(crate) failed_after_open: u64,
    /// Connect to 101, µs (connect scenario: in the window only).
    pub(crate) handshake: Histogram<u64>,
    /// Handshakes completed in the window.
    pub(crate) handshakes_measured: u64,
    /// Connections whose server accepted permessage-deflate.
    pub(crate) deflated: u64,
    /// Connections open when traffic started.
    pub(crate) members: u64,
    /// Connections open when the window ended.
    pub(crate) open_at_end: u64,
    /// This thread's CPU ticks in the window.
    pub(crate) cpu_ticks: u64,
    /// Nanoseconds this thread waited for a CPU in the window.
    pub(crate) cpu_wait: Option<u64>,
}

impl DriverStats {
    pub(crate) fn new() -> Self {
        Self {
            attempts: 0,
            opened: 0,
            failures: BTreeMap::new(),
            failed_after_open: 0,
            handshake: histogram(),
            handshakes_measured: 0,
            deflated: 0,
            members: 0,
            open_at_end: 0,
            cpu_ticks: 0,
            cpu_wait: None,
        }
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        self.attempts += other.attempts;
        self.opened += other.opened;
        for (cause, n) in &other.failures {
            *self.failures.entry(cause.clone()).or_default() += n;
        }
        self.failed_after_open += other.failed_after_open;
        let _ = self.handshake.add(&other.handshake);
        self.handshakes_measured += other.handshakes_measured;
        self.deflated += other.deflated;
        self.members += other.members;
        self.open_at_end += other.open_at_end;
        self.cpu_ticks += other.cpu_ticks;
        self.cpu_wait = match (self.cpu_wait, other.cpu_wait) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    pub(super) fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}
