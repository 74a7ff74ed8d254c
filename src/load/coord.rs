//! The coordinator: starts the driver threads, shows progress, samples the server at the edges
//! of the measured window, and assembles the [`Summary`].

use std::net::SocketAddr;
use std::thread::{self, ScopedJoinHandle};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::driver::{Driver, DriverStats, Plan, Shared, Timeline};
use super::redis::{self, Redis};
use super::report::{
    BroadcastStats, ConnectStats, ConnectionStats, Curves, MemoryStats, MessageStats, NodeStats, Percentiles,
    RedisUsage, RoomStats, ServerUsage, Summary, UsageStats, group, group_f,
};
use super::scenarios::{App, AppPlan, Broadcast, Connect, Echo, Idle, Tally, account};
use super::target::Route;
use super::{LoadConfig, LoadError, Scenario, procfs, scrape};
use crate::proto::deflate::DeflateConfig;

/// How long a `/metrics` request may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long reading a Redis server's `INFO` may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// What one driver thread hands back.
type Part = Option<(DriverStats, Tally)>;

/// Runs one scenario to the end and summarizes it.
///
/// Failed connections are not errors: they are counted by cause in the summary (see
/// [`Summary::all_failed`]).
///
/// # Errors
///
/// A configuration out of range, a URL that does not parse or resolve, a target that refuses
/// TCP connections altogether (one probe of each before the run), a Redis server that does
/// not answer `INFO`, or a failure of the tool itself.
pub fn run_scenario(config: &LoadConfig) -> Result<Summary, LoadError> {
    config.validate()?;
    let publishers = config.publisher_slots();
    let publish = if publishers == 0 { config.subscribe_targets() } else { config.publish_targets() };
    let route = Route::resolve(publish, config.subscribe_targets(), publishers)?;
    let tls = match route.nodes.iter().any(|n| n.target.tls.is_some()) {
        true => Some(super::tls::config(&config.ca_files, config.insecure)?),
        false => None,
    };
    for node in &route.nodes {
        node.target.probe(config.connect_timeout)?;
    }
    let mut redis = Vec::with_capacity(config.redis.len());
    for url in &config.redis {
        let fail = |reason| LoadError::Redis { url: redis::masked(url), reason };
        let server = Redis::parse(url).map_err(fail)?;
        server.sample(REDIS_TIMEOUT).map_err(fail)?;
        redis.push(server);
    }
    let slots = config.slots();
    let threads = config.threads.clamp(1, slots.max(1));
    let shared = Shared::new(threads, config.warmup, config.duration);
    let plan = Plan {
        route,
        slots,
        connect_timeout: config.connect_timeout.as_nanos() as u64,
        drain: config.drain.as_nanos() as u64,
        max_pending: config.max_pending,
        recycle: config.scenario == Scenario::Connect,
        lean: config.scenario == Scenario::Idle,
        tls,
        deflate: config.deflate.then(DeflateConfig::default),
    };
    let rss_before = rss_kib(&config.server_pids);
    let progress = Progress::new(config.progress, slots);
    // Tick: the late ticks of every node.
    let mut metrics: Vec<(SocketAddr, String)> = Vec::new();
    if config.scenario == Scenario::Tick {
        for node in &plan.route.nodes {
            if !metrics.iter().any(|(addr, _)| *addr == node.target.addr) {
                metrics.push((node.target.addr, node.target.host.clone()));
            }
        }
    }
    let probes = Probes { pids: &config.server_pids, metrics: &metrics, redis: &redis };
    let (parts, server) = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let (shared, plan) = (&shared, &plan);
            let spawned = thread::Builder::new()
                .name(format!("hibiki-load-{index}"))
                .spawn_scoped(scope, move || drive(index, config, shared, plan));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(_) => shared.give_up(),
            }
        }
        let server = watch(&probes, &shared, &handles, &progress);
        let parts: Vec<Part> = handles.into_iter().map(|h| h.join().ok().flatten()).collect();
        (parts, server)
    });
    progress.bar.finish_and_clear();
    if parts.iter().all(Option::is_none) {
        return Err(LoadError::Io(std::io::Error::other("no driver thread could start")));
    }
    let mut stats = DriverStats::new();
    let mut tally = Tally::new();
    for (s, t) in parts.into_iter().flatten() {
        stats.merge(&s);
        tally.merge(t);
    }
    let mut summary = summarize(config, &plan.route, threads, stats, tally, &server, rss_before, &redis);
    if let Some(timeline) = shared.timeline() {
        summary.connections.setup_secs = timeline.start as f64 / 1e9;
    } else {
        // Called off before any traffic: nothing was measured.
        summary.warmup_secs = 0.0;
        summary.duration_secs = 0.0;
    }
    Ok(summary)
}

/// Calls the run off if a driver thread panics, so that the others stop waiting for it.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.give_up();
        }
    }
}

/// One thread: its driver with the scenario's workload.
fn drive(index: usize, config: &LoadConfig, shared: &Shared, plan: &Plan) -> Part {
    let _guard = PanicGuard(shared);
    let result = match config.scenario {
        Scenario::Echo => {
            let rate = config.rate.map(|r| r / shared.threads as f64);
            let work = Echo::new(config.in_flight, config.payload, rate);
            Driver::new(index, shared, plan, work).map(Driver::run)
        }
        Scenario::Broadcast => {
            let rate = config.rate.unwrap_or(100.0);
            let work = Broadcast::new(shared, config.publishers, rate, config.window, config.payload, false);
            Driver::new(index, shared, plan, work).map(Driver::run)
        }
        Scenario::Game => {
            let work = Broadcast::new(shared, 1, config.tick_hz, None, config.payload, true);
            Driver::new(index, shared, plan, work).map(Driver::run)
        }
        Scenario::Connect => Driver::new(index, shared, plan, Connect).map(Driver::run),
        Scenario::Idle => Driver::new(index, shared, plan, Idle).map(Driver::run),
        Scenario::Room | Scenario::Tick => {
            let tick = config.scenario == Scenario::Tick;
            let publishers = config.publisher_slots();
            let rate = config.rate.unwrap_or(config.scenario.default_rate());
            // Twice what the schedule can publish, and some: a member's bitmap never needs more
            // (closed loop: as if at a million per second).
            let rate_bound = if config.window.is_some() { 1e6 } else { rate };
            let schedule = publishers as f64 * rate_bound * (config.warmup + config.duration).as_secs_f64();
            let app = AppPlan {
                room: config.room_name().to_string(),
                publishers,
                rate,
                window: config.window,
                payload: config.payload,
                tick_hz: tick.then_some(config.tick_hz),
                settle: config.connect_timeout.as_nanos() as u64,
                span: (schedule * 2.0).min(1e15) as u64 + (1 << 16),
            };
            Driver::new(index, shared, plan, App::new(shared, &plan.route, &app)).map(Driver::run)
        }
    };
    match result {
        Ok(part) => Some(part),
        Err(_) => {
            shared.give_up();
            None
        }
    }
}

/// What is sampled at the edges of the window.
#[derive(Debug)]
struct Probes<'a> {
    /// Server processes: CPU time, run-queue wait (and RSS at the end).
    pids: &'a [u32],
    /// Tick: the nodes whose `/metrics` are read.
    metrics: &'a [(SocketAddr, String)],
    /// Redis servers: `INFO`.
    redis: &'a [Redis],
}

/// One edge of the window.
#[derive(Debug, Default)]
struct Edge {
    /// Per server pid: CPU ticks and run-queue wait, ns.
    cpu: Vec<Option<u64>>,
    wait: Vec<Option<u64>>,
    /// Per Redis server.
    redis: Vec<Result<redis::Sample, String>>,
    /// Tick: per node, `/metrics`.
    metrics: Vec<Option<String>>,
}

impl Probes<'_> {
    /// The processes and the Redis servers (quick: /proc and one round trip each).
    fn sample(&self) -> Edge {
        Edge {
            cpu: self.pids.iter().map(|&pid| procfs::process_cpu_ticks(pid)).collect(),
            wait: self.pids.iter().map(|&pid| procfs::process_cpu_wait_ns(pid)).collect(),
            redis: self.redis.iter().map(|r| r.sample(REDIS_TIMEOUT)).collect(),
            metrics: Vec::new(),
        }
    }

    /// Every node's `/metrics` (tick).
    fn scrape(&self) -> Vec<Option<String>> {
        self.metrics.iter().map(|(addr, host)| scrape::fetch(*addr, host, SCRAPE_TIMEOUT)).collect()
    }
}

/// What was sampled at the edges of the window.
#[derive(Debug, Default)]
struct ServerSample {
    start: Edge,
    end: Edge,
    /// Summed over the server pids (idle).
    rss_after: Option<u64>,
}

/// Resident memory summed over `pids` (`None` if any is unreadable, or none given).
fn rss_kib(pids: &[u32]) -> Option<u64> {
    sum_all(pids.iter().map(|&pid| procfs::rss_kib(pid)))
}

/// The sum of the values, if there is at least one and every one is known.
fn sum_all<T: std::iter::Sum<T>>(values: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let values: Option<Vec<T>> = values.into_iter().collect();
    values.filter(|v| !v.is_empty()).map(|v| v.into_iter().sum())
}

/// Shows progress until the drivers finish; samples the servers when the window opens and
/// closes, then lets the drivers close their connections.
fn watch(
    probes: &Probes<'_>,
    shared: &Shared,
    handles: &[ScopedJoinHandle<'_, Part>],
    progress: &Progress,
) -> ServerSample {
    let mut sample = ServerSample::default();
    let (mut started, mut released) = (false, false);
    let mut rate = RateMeter::default();
    while !handles.iter().all(ScopedJoinHandle::is_finished) {
        let now = shared.clock.now();
        let mut sleep = 100_000_000u64;
        match shared.timeline() {
            None => {
                progress.connecting(shared.progress());
                if shared.aborted() && !released {
                    shared.release();
                    released = true;
                }
            }
            Some(tl) => {
                if !started && now >= tl.measure {
                    sample.start = probes.sample();
                    sample.start.metrics = probes.scrape();
                    started = true;
                }
                if !released && now >= tl.end {
                    sample.end = probes.sample();
                    sample.rss_after = rss_kib(probes.pids);
                    shared.release();
                    sample.end.metrics = probes.scrape();
                    released = true;
                }
                let (opened, failed, received) = shared.progress();
                progress.running(now, tl, opened, failed, rate.update(now, received));
                // Wake right at the edges of the window.
                for edge in [tl.measure, tl.end] {
                    if edge > now {
                        sleep = sleep.min(edge - now);
                    }
                }
            }
        }
        thread::sleep(Duration::from_nanos(sleep));
    }
    sample
}

/// Messages per second over the last second or so, for the progress bar.
#[derive(Debug, Default)]
struct RateMeter {
    at: u64,
    count: u64,
    rate: f64,
}

impl RateMeter {
    fn update(&mut self, now: u64, count: u64) -> f64 {
        let dt = now.saturating_sub(self.at);
        if dt >= 500_000_000 {
            self.rate = count.saturating_sub(self.count) as f64 * 1e9 / dt as f64;
            self.at = now;
            self.count = count;
        }
        self.rate
    }
}

/// The progress bar on stderr (drawn only when stderr is a terminal).
#[derive(Debug)]
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(enabled: bool, slots: usize) -> Self {
        let target =
            if enabled { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(slots as u64), target);
        if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:32}] {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix("connecting");
        Self { bar }
    }

    fn connecting(&self, (opened, failed, _): (u64, u64, u64)) {
        self.bar.set_position(opened + failed);
        self.bar.set_message(format!("{} open, {} failed", group(opened), group(failed)));
    }

    fn running(&self, now: u64, tl: Timeline, opened: u64, failed: u64, rate: f64) {
        let total = (tl.end - tl.start) / 1_000_000;
        self.bar.set_length(total.max(1));
        self.bar.set_position((now.saturating_sub(tl.start) / 1_000_000).min(total));
        self.bar.set_prefix(if now < tl.measure {
            "warmup"
        } else if now < tl.end {
            "measuring"
        } else {
            "draining"
        });
        self.bar.set_message(format!(
            "{}/s · {} open · {} failed",
            group_f(rate),
            group(opened),
            group(failed)
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    config: &LoadConfig,
    route: &Route,
    threads: usize,
    stats: DriverStats,
    tally: Tally,
    server: &ServerSample,
    rss_before: Option<u64>,
    redis: &[Redis],
) -> Summary {
    let scenario = config.scenario;
    let seconds = config.duration.as_secs_f64();
    let ticks = procfs::ticks_per_second() as f64;
    let broadcasting =
        matches!(scenario, Scenario::Broadcast | Scenario::Game | Scenario::Room | Scenario::Tick);
    let counted = match scenario {
        Scenario::Connect => stats.handshakes_measured,
        _ => tally.received,
    };
    let delta = |start: &[Option<u64>], end: &[Option<u64>], i: usize| match (start.get(i), end.get(i)) {
        (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(*a)),
        _ => None,
    };
    let (start, end) = (&server.start, &server.end);
    let servers: Vec<ServerUsage> = config
        .server_pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| ServerUsage {
            pid,
            cpu_secs: delta(&start.cpu, &end.cpu, i).map(|t| t as f64 / ticks),
            cpu_wait_secs: delta(&start.wait, &end.wait, i).map(|ns| ns as f64 / 1e9),
        })
        .collect();
    let server_cpu_secs = sum_all(servers.iter().map(|s| s.cpu_secs));
    let per_server_cpu_sec = match (scenario, server_cpu_secs) {
        (Scenario::Idle, _) | (_, None) => None,
        (_, Some(cpu)) => Some(if cpu > 0.0 { counted as f64 / cpu } else { f64::INFINITY }),
    };
    let failed = stats.failures.values().sum();
    let messages = scenario.sends_messages().then(|| MessageStats {
        payload: config.payload,
        sent: tally.sent,
        received: tally.received,
        per_sec: tally.received as f64 / seconds.max(1e-9),
        errors: tally.errors,
        unanswered: tally.unanswered,
        rate_shortfall: tally.shortfall,
    });
    let broadcast = broadcasting.then(|| {
        // Room, tick: publishers do not join and the joined subscribers are the members.
        let members = if scenario.app() { tally.joined } else { stats.members };
        let expected = tally.sent * members;
        let (publishers, rate) = match scenario {
            Scenario::Game => (1, config.tick_hz),
            Scenario::Tick => (1, config.rate.unwrap_or(scenario.default_rate())),
            _ if config.window.is_some() => {
                let secs = (config.warmup + config.duration).as_secs_f64().max(1e-9);
                (config.publishers, tally.sent as f64 / secs / config.publishers.max(1) as f64)
            }
            _ => (config.publishers, config.rate.unwrap_or(scenario.default_rate())),
        };
        BroadcastStats {
            publishers,
            rate,
            window: config.window,
            published: tally.sent,
            members,
            expected,
            delivered: tally.received_total,
            lost: expected.saturating_sub(tally.received_total),
            self_deliveries: tally.self_received,
        }
    });
    let tick = scenario == Scenario::Tick;
    // Tick: a counter of every node's /metrics over the window, summed (`None` if a node
    // did not answer).
    let sample = |name: &str| {
        let at = |body: &Option<String>| body.as_deref().and_then(|b| scrape::value(b, name));
        let nodes = start.metrics.iter().zip(&end.metrics);
        sum_all(nodes.map(|(a, b)| Some(at(b)?.saturating_sub(at(a)?))))
    };
    let room = scenario.app().then(|| RoomStats {
        room: config.room_name().to_string(),
        joined: tally.joined,
        join_failed: tally.join_failed,
        acked: tally.acks_ok,
        ack_failed: tally.acks_failed,
        unacked: tally.sent.saturating_sub(tally.acks_ok + tally.acks_failed),
        epochs: tally.epochs.len() as u64,
        tick_hz: tick.then_some(config.tick_hz),
        batches: tick.then_some(tally.batches),
        batches_per_sec_per_client: tick
            .then(|| tally.batches as f64 / seconds.max(1e-9) / tally.joined.max(1) as f64),
        server_ticks: sample("hibiki_ticks_total"),
        late_ticks: sample("hibiki_late_ticks_total"),
    });
    // Room, tick: the seqs each member saw, against those acked to the publishers; unknown
    // when no ack carried a seq (a server that does not number its messages).
    let numbered = tally.acked.len();
    let (sequence, per_node) = if scenario.app() && numbered > 0 {
        let (total, per_node) =
            account(&tally.tracks, &tally.acked, tick.then_some(&tally.keyed), route.nodes.len());
        (Some(total), per_node.into_iter().map(Some).collect())
    } else {
        (None, vec![None; route.nodes.len()])
    };
    let mut joined = vec![0; route.nodes.len()];
    for track in &tally.tracks {
        joined[track.node] += 1;
    }
    let nodes = route
        .nodes
        .iter()
        .zip(route.spread(config.slots()))
        .zip(per_node)
        .enumerate()
        .map(|(i, ((node, (publishers, subscribers)), sequence))| NodeStats {
            url: node.url.clone(),
            publishers,
            subscribers,
            joined: scenario.app().then_some(joined[i]),
            sequence,
        })
        .collect();
    let connect = (scenario == Scenario::Connect).then(|| ConnectStats {
        concurrency: config.concurrency,
        handshakes: stats.handshakes_measured,
        per_sec: stats.handshakes_measured as f64 / seconds,
        tls: route.nodes.iter().any(|n| n.target.tls.is_some()),
    });
    let memory = match (scenario, rss_before, server.rss_after) {
        (Scenario::Idle, Some(before), Some(after)) => Some(MemoryStats {
            rss_before_kib: before,
            rss_after_kib: after,
            per_connection_bytes: after.saturating_sub(before) as f64 * 1024.0
                / stats.open_at_end.max(1) as f64,
        }),
        _ => None,
    };
    // Redis: what each server did over the window, per numbered publish.
    let publishes = match scenario {
        Scenario::Room | Scenario::Tick => Some(numbered),
        Scenario::Broadcast | Scenario::Game => Some(tally.sent),
        _ => None,
    };
    let redis: Vec<RedisUsage> = redis
        .iter()
        .enumerate()
        .map(|(i, r)| match (start.redis.get(i), end.redis.get(i)) {
            (Some(Ok(a)), Some(Ok(b))) => {
                let commands = a.calls_until(b, r.authenticates());
                let calls: u64 = commands.values().sum();
                let scripts = redis::script_calls(&commands);
                let per = |c: u64| publishes.filter(|&n| n > 0).map(|n| c as f64 / n as f64);
                RedisUsage {
                    url: r.url.clone(),
                    // INFO has microseconds: round off the float noise of the difference.
                    cpu_secs: Some(((b.cpu_secs - a.cpu_secs).max(0.0) * 1e6).round() / 1e6),
                    calls: Some(calls),
                    calls_per_publish: per(calls),
                    script_calls: Some(scripts),
                    script_calls_per_publish: per(scripts),
                    commands,
                    error: None,
                }
            }
            (a, b) => {
                let why = |edge: Option<&Result<redis::Sample, String>>, at: &str| match edge {
                    Some(Err(e)) => Some(format!("at the window's {at}: {e}")),
                    Some(Ok(_)) => None,
                    None => Some(format!("not sampled at the window's {at} (the run ended early)")),
                };
                RedisUsage {
                    url: r.url.clone(),
                    error: why(a, "start").or_else(|| why(b, "end")),
                    ..RedisUsage::default()
                }
            }
        })
        .collect();
    let redis_cpu_secs = sum_all(redis.iter().map(|r| r.cpu_secs));
    let curves = Curves {
        latency: scenario.sends_messages().then(|| tally.latency.clone()),
        jitter: matches!(scenario, Scenario::Game | Scenario::Tick).then(|| tally.jitter.clone()),
        tick_delay: (scenario == Scenario::Tick).then(|| tally.tick_delay.clone()),
        handshake: Some(stats.handshake.clone()),
    };
    Summary {
        scenario,
        url: config.url.clone(),
        threads,
        warmup_secs: config.warmup.as_secs_f64(),
        duration_secs: seconds,
        connections: ConnectionStats {
            attempted: stats.attempts,
            opened: stats.opened,
            failed,
            failed_after_open: stats.failed_after_open,
            open_at_end: stats.open_at_end,
            deflated: stats.deflated,
            setup_secs: 0.0,
            failures: stats.failures,
        },
        nodes,
        messages,
        broadcast,
        room,
        sequence,
        connect,
        memory,
        latency: curves.latency.as_ref().and_then(Percentiles::of),
        jitter: curves.jitter.as_ref().and_then(Percentiles::of),
        tick_delay: curves.tick_delay.as_ref().and_then(Percentiles::of),
        handshake: curves.handshake.as_ref().and_then(Percentiles::of),
        usage: UsageStats {
            server_pid: config.server_pids.first().copied(),
            server_cpu_secs,
            per_server_cpu_sec,
            load_cpu_secs: stats.cpu_ticks as f64 / ticks,
            server_cpu_wait_secs: sum_all(servers.iter().map(|s| s.cpu_wait_secs)),
            load_cpu_wait_secs: stats.cpu_wait.map(|ns| ns as f64 / 1e9),
            servers,
            redis,
            redis_cpu_secs,
        },
        curves,
    }
}
