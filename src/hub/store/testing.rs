//! Stores for tests of the seam: [`later`] wraps the in-memory stores so that every call is
//! carried out later, on another thread, after a random delay, and answered later — as a
//! remote engine does. Its publications travel the same way, in order, and may be dropped
//! (as Redis pub/sub may drop them); the [`Control`] makes every call fail on demand.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    Broker, Dedup, Done, Epoch, Joined, Left, MemoryBroker, MemoryPresence, NodeId, Position, PresenceEntry,
    PresenceStore, Publication, PublishError, Replay, Reply, Since, Sink, StoreError, Ticket, ToWorker,
};
use crate::hub::Stores;
use crate::hub::envelope::MessageId;

type Job = Box<dyn FnOnce() + Send>;

struct Timed {
    due: Instant,
    order: u64,
    job: Job,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Timed {}

impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timed {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // The earliest first (BinaryHeap is a max-heap).
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// How the test stores misbehave.
#[derive(Clone, Copy, Debug)]
pub struct Weather {
    /// Each call and each delivery waits up to this long (uniformly at random).
    pub max_delay: Duration,
    /// The chance that a delivery of a numbered publication is dropped (0 to 1).
    pub drop: f64,
}

/// Switches for the test stores.
#[derive(Debug, Default)]
pub struct Control {
    failing: AtomicBool,
    /// When set, no delivery is dropped whatever the weather.
    calm: AtomicBool,
    /// Calls carried out.
    pub calls: AtomicU64,
    /// Deliveries dropped.
    pub dropped: AtomicU64,
}

impl Control {
    /// Makes every call fail with [`StoreError::Unavailable`] (and `health` report it), or
    /// work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Stops (or resumes) dropping deliveries.
    pub fn set_calm(&self, calm: bool) {
        self.calm.store(calm, Ordering::SeqCst);
    }
}

struct Shared {
    weather: Weather,
    control: Arc<Control>,
    queue: Mutex<(Sender<Timed>, u64, Instant, Instant)>,
    sink: Mutex<Option<Sink>>,
    broker: MemoryBroker,
    presence: MemoryPresence,
}

impl Shared {
    fn delay(&self) -> Duration {
        self.weather.max_delay.mul_f64(rand::random::<f64>())
    }

    /// Runs `job` after a random delay, after every call (or every delivery) queued before
    /// it: calls keep their order, deliveries keep theirs, the two interleave at random.
    fn later(&self, delivery: bool, job: Job) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (sender, order, last_call, last_delivery) = &mut *queue;
        let chain = if delivery { last_delivery } else { last_call };
        let due = (Instant::now() + self.delay()).max(*chain);
        *chain = due;
        *order += 1;
        let _ = sender.send(Timed { due, order: *order, job });
    }

    fn answer(self: &Arc<Self>, ticket: Ticket, done: impl FnOnce(&Self) -> Done + Send + 'static) {
        let shared = Arc::clone(self);
        self.later(
            false,
            Box::new(move || {
                shared.control.calls.fetch_add(1, Ordering::Relaxed);
                let done = done(&shared);
                let sink = shared.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(sink) = sink {
                    sink(ticket.worker, ToWorker::Done(ticket.waiter, done));
                }
            }),
        );
    }

    fn unavailable(&self) -> Option<StoreError> {
        self.control.failing().then(|| StoreError::Unavailable("the test store is failing".into()))
    }
}

fn now<T>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(t) => t,
        Reply::Later => unreachable!("the in-memory stores answer at once"),
    }
}

fn run(receiver: &Receiver<Timed>) {
    let mut heap: BinaryHeap<Timed> = BinaryHeap::new();
    loop {
        let wait = heap.peek().map(|t| t.due.saturating_duration_since(Instant::now()));
        let received = match wait {
            Some(wait) => receiver.recv_timeout(wait),
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(timed) => heap.push(timed),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if heap.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(1)),
        }
        while heap.peek().is_some_and(|t| t.due <= Instant::now()) {
            if let Some(timed) = heap.pop() {
                (timed.job)();
            }
        }
    }
}

/// In-memory stores (sized by `history` messages per room) behind a seam that answers
/// everything later, in `weather`.
pub fn later(history: usize, weather: Weather) -> (Stores, Arc<Control>) {
    let (sender, receiver) = channel();
    std::thread::Builder::new()
        .name("hibiki-test-store".into())
        .spawn(move || run(&receiver))
        .expect("a thread for the test store");
    let control = Arc::new(Control::default());
    let now = Instant::now();
    let shared = Arc::new(Shared {
        weather,
        control: Arc::clone(&control),
        queue: Mutex::new((sender, 0, now, now)),
        sink: Mutex::new(None),
        broker: MemoryBroker::new(history, None),
        presence: MemoryPresence::default(),
    });
    let stores = Stores {
        broker: Arc::new(LaterBroker(Arc::clone(&shared))),
        presence: Arc::new(LaterPresence(shared)),
    };
    (stores, control)
}

struct LaterBroker(Arc<Shared>);

struct LaterPresence(Arc<Shared>);

impl Broker for LaterBroker {
    fn start(&self, node: &NodeId, workers: usize, sink: Sink) {
        *self.0.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&sink));
        // The inner broker's deliveries travel like the answers do, and may be lost.
        let shared = Arc::downgrade(&self.0);
        let relay: Sink = Arc::new(move |worker, what| {
            let Some(shared) = shared.upgrade() else { return };
            if let ToWorker::Deliver(message) = &what {
                let calm = shared.control.calm.load(Ordering::SeqCst);
                if message.seq > 0 && !calm && rand::random::<f64>() < shared.weather.drop {
                    shared.control.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            let sink = Arc::clone(&sink);
            shared.later(true, Box::new(move || sink(worker, what)));
        });
        self.0.broker.start(node, workers, relay);
    }

    fn subscribe(
        &self,
        room: &Arc<str>,
        worker: usize,
        since: Since,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        let room = Arc::clone(room);
        self.0.answer(ticket, move |s| match s.unavailable() {
            Some(e) => Done::Subscribed(Err(e)),
            None => Done::Subscribed(now(s.broker.subscribe(&room, worker, since, ticket))),
        });
        Reply::Later
    }

    fn unsubscribe(&self, room: &Arc<str>, worker: usize) {
        let room = Arc::clone(room);
        let shared = Arc::clone(&self.0);
        self.0.later(false, Box::new(move || shared.broker.unsubscribe(&room, worker)));
    }

    fn publish(
        &self,
        publication: Publication,
        dedup: Option<Dedup<'_>>,
        ticket: Ticket,
    ) -> Reply<Result<Position, PublishError>> {
        let dedup: Option<(String, MessageId, u64)> =
            dedup.map(|d| (d.user.to_owned(), d.id.clone(), d.fingerprint));
        self.0.answer(ticket, move |s| {
            if let Some(e) = s.unavailable() {
                return Done::Published(Err(e.into()));
            }
            let dedup =
                dedup.as_ref().map(|(user, id, fingerprint)| Dedup { user, id, fingerprint: *fingerprint });
            Done::Published(now(s.broker.publish(publication, dedup, ticket)))
        });
        Reply::Later
    }

    fn history(
        &self,
        room: &Arc<str>,
        after: u64,
        epoch: Option<&Epoch>,
        ticket: Ticket,
    ) -> Reply<Result<Replay, StoreError>> {
        let (room, epoch) = (Arc::clone(room), epoch.cloned());
        self.0.answer(ticket, move |s| match s.unavailable() {
            Some(e) => Done::History(Err(e)),
            None => Done::History(now(s.broker.history(&room, after, epoch.as_ref(), ticket))),
        });
        Reply::Later
    }

    fn emit(&self, publication: Publication) {
        let shared = Arc::clone(&self.0);
        self.0.later(
            false,
            Box::new(move || {
                if !shared.control.failing() {
                    shared.broker.emit(publication);
                }
            }),
        );
    }

    fn health(&self) -> Result<(), String> {
        match self.0.unavailable() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }
}

impl PresenceStore for LaterPresence {
    fn add(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        list_limit: usize,
        ticket: Ticket,
    ) -> Reply<Result<Joined, StoreError>> {
        let (room, entry) = (Arc::clone(room), entry.clone());
        self.0.answer(ticket, move |s| match s.unavailable() {
            Some(e) => Done::Joined(Err(e)),
            None => Done::Joined(now(s.presence.add(&room, &entry, list_limit, ticket))),
        });
        Reply::Later
    }

    fn remove(
        &self,
        room: &Arc<str>,
        entry: &PresenceEntry,
        ticket: Ticket,
    ) -> Reply<Result<Left, StoreError>> {
        let (room, entry) = (Arc::clone(room), entry.clone());
        self.0.answer(ticket, move |s| match s.unavailable() {
            Some(e) => Done::Left(Err(e)),
            None => Done::Left(now(s.presence.remove(&room, &entry, ticket))),
        });
        Reply::Later
    }
}
