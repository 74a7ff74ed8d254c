//! `hibiki load`: the command line.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{LoadConfig, Scenario, plot, procfs, run_scenario};

/// `hibiki load SCENARIO [OPTIONS]`: open many WebSocket connections to a server and measure it.
///
/// Scenarios: `echo` (round trips, messages/s), `broadcast` (fan-out deliveries, losses),
/// `game` (60 Hz ticks to many clients: jitter), `connect` (handshakes/s), `idle` (connections
/// held, server memory per connection), `room` (the app protocol on `/ws`: joined subscribers,
/// publishers at a rate), `tick` (a tick room: batches, latency, jitter, the server's late
/// ticks).
///
/// Several nodes (a cluster): give `--url` once per node; publishers connect to the first
/// (or to `--publish-url`), the other connections are spread round-robin over all of them (or
/// over `--subscribe-url`). Room and tick then report what each node's subscribers saw of the
/// room's seqs, `--server-pid` once per node sums the servers' CPU time, and `--redis` adds
/// Redis's own CPU time and command calls.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  hibiki load echo --url ws://127.0.0.1:8080/echo -c 100 --in-flight 16 --server-pid $(pgrep -f 'hibiki serve')
  hibiki load broadcast -c 1000 --publishers 1 --rate 100
  hibiki load connect --concurrency 50 --duration 5 --json
  hibiki load idle -c 10000 --duration 30 --server-pid 1234
  hibiki load room -c 5000 --publishers 1 --rate 100 --payload 100
  hibiki load broadcast -c 5000 --window 8 --payload 100     (fan-out at saturation)
  hibiki load tick -c 5000 --rate 60 --room game:bench

Over TLS (every scenario; connect then counts full TLS handshakes, no session resumption):
  hibiki load echo --url wss://example.com/echo -c 100
  hibiki load connect --url wss://localhost:8443/echo --ca cert.pem --server-pid 1234

A cluster of two nodes joined through Redis (publishers on the first, subscribers on both):
  hibiki load room -c 5000 --rate 100 \\
    --url ws://127.0.0.1:8081/ws --url ws://127.0.0.1:8082/ws \\
    --server-pid A --server-pid B --redis redis://127.0.0.1:6379/
  hibiki load tick -c 2000 --publish-url ws://127.0.0.1:8081/ws \\
    --subscribe-url ws://127.0.0.1:8082/ws --server-pid A,B --redis redis://127.0.0.1:6379/")]
pub struct LoadArgs {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// WebSocket URL, repeatable or comma-separated: one per node [default:
    /// ws://127.0.0.1:8080/echo; /broadcast for broadcast and game, /ws for room and tick].
    /// Publishers connect to the first; with several, the other connections are spread
    /// round-robin over all of them.
    #[arg(long, env = "HIBIKI_LOAD_URL", value_delimiter = ',', value_name = "URL")]
    url: Vec<String>,
    /// Broadcast, game, room, tick: where the publishers connect instead of the first
    /// `--url` (repeatable: round-robin).
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    publish_url: Vec<String>,
    /// Where the other connections (subscribers, clients) go instead of every `--url`
    /// (repeatable: round-robin).
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    subscribe_url: Vec<String>,
    /// Connections (echo, idle), subscribers (broadcast, room) or clients (game, tick).
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Echo: messages outstanding per connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Broadcast, room: a closed loop instead of --rate: each publisher keeps N messages
    /// unconfirmed (broadcast: until its own comes back; room: until acked), the server at
    /// saturation with bounded queues.
    #[arg(long, value_name = "N")]
    window: Option<u32>,
    /// Offer permessage-deflate in every handshake (messages compressed both ways if the server
    /// accepts; the report counts the connections that negotiated it).
    #[arg(long)]
    deflate: bool,
    /// Bytes per message (at least 16: send time and sequence number) [default: 20; room: 100,
    /// tick: 64, the length of the published `data` string].
    #[arg(long)]
    payload: Option<usize>,
    /// Seconds measured.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic before the measured window (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Echo: total messages/s (default: as fast as echoes return). Broadcast, room: messages/s
    /// per publisher [default: 100]. Tick: of the one publisher [default: 60].
    #[arg(long)]
    rate: Option<f64>,
    /// Broadcast, room: publishing connections (broadcast: each also receives its own
    /// messages; room: they publish with echo false and do not join).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Room, tick: the room to join and publish to [default: chat:bench; tick: game:bench].
    #[arg(long)]
    room: Option<String>,
    /// Connect: connections in progress at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Game: ticks per second. Tick: the server's tick rate (for the batch jitter).
    #[arg(long, default_value_t = 60.0)]
    tick_hz: f64,
    /// Driver threads (each an event loop with its share of the connections).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds allowed for the TCP connect plus the handshake.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Seconds to wait for answers still in flight when the window ends.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Handshakes in progress at once per thread while connecting.
    #[arg(long, default_value_t = 512)]
    max_pending: usize,
    /// The server's pid: report its CPU seconds over the window (messages per server CPU-second)
    /// and, for idle, its memory per connection. Linux /proc. Repeatable or comma-separated,
    /// one per node: each node's CPU seconds and their sum, which the per-CPU-second figure
    /// divides by.
    #[arg(long, value_delimiter = ',', value_name = "PID")]
    server_pid: Vec<u32>,
    /// A Redis server (redis://[:PASSWORD@]HOST[:PORT]/) whose CPU seconds (INFO cpu) and
    /// command calls (INFO commandstats) over the window are reported beside the servers'.
    /// Repeatable.
    #[arg(long, value_name = "URL")]
    redis: Vec<String>,
    /// wss://: a PEM file of CA certificates to trust beside the webpki roots, e.g. the
    /// server's own self-signed certificate (repeatable).
    #[arg(long, value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// wss://: DISABLES CERTIFICATE VERIFICATION: any certificate, for any name, is accepted
    /// (handshake signatures are still checked). Only for measuring a server of your own with
    /// a throwaway certificate; prefer --ca.
    #[arg(long)]
    insecure: bool,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the latency distribution (percentile curve) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

impl LoadArgs {
    /// The run these arguments describe.
    pub fn config(&self) -> LoadConfig {
        let url = [&self.url, &self.publish_url, &self.subscribe_url]
            .into_iter()
            .find_map(|urls| urls.first().cloned())
            .unwrap_or_else(|| self.scenario.default_url().to_string());
        let mut config = LoadConfig::new(self.scenario, url);
        config.publish_urls.clone_from(&self.publish_url);
        config.subscribe_urls = if !self.subscribe_url.is_empty() {
            self.subscribe_url.clone()
        } else if self.url.len() > 1 {
            self.url.clone()
        } else {
            Vec::new()
        };
        config.connections = self.connections;
        config.in_flight = self.in_flight;
        config.window = self.window;
        config.deflate = self.deflate;
        config.payload = self.payload.unwrap_or(self.scenario.default_payload());
        config.duration = secs(self.duration);
        config.warmup = secs(self.warmup);
        config.rate = self.rate;
        config.publishers = self.publishers;
        config.room.clone_from(&self.room);
        config.concurrency = self.concurrency;
        config.tick_hz = self.tick_hz;
        config.threads = self.threads;
        config.connect_timeout = secs(self.connect_timeout);
        config.drain = secs(self.drain);
        config.max_pending = self.max_pending;
        config.server_pids.clone_from(&self.server_pid);
        config.redis.clone_from(&self.redis);
        config.ca_files.clone_from(&self.ca);
        config.insecure = self.insecure;
        config.progress = !self.quiet && std::io::stderr().is_terminal();
        config
    }
}

/// Runs `hibiki load`: the summary goes to stdout (table or JSON), errors and failures by
/// cause to stderr.
///
/// Exit codes: 0 when the run took place, 1 when every connection failed (before or after
/// opening: a refused upgrade, a server that closed them all), 2 when the run could not take
/// place (bad arguments, unreachable server) or the plot could not be written.
pub fn run(args: LoadArgs) -> ExitCode {
    let config = args.config();
    let needed = config.slots() as u64 + 32;
    if let Some(limit) = procfs::open_file_limit().filter(|&limit| needed > limit) {
        eprintln!(
            "hibiki load: warning: {} connections need more than the open-file limit of {limit}; \
             raise it (ulimit -n) or expect 'too many open files'",
            config.slots()
        );
    }
    let summary = match run_scenario(&config) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("hibiki load: error: {e}");
            return ExitCode::from(2);
        }
    };
    for line in summary.failure_lines() {
        eprintln!("hibiki load: {line}");
    }
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.table());
    }
    let mut code = ExitCode::SUCCESS;
    if let Some(path) = &args.plot {
        match plot::svg(&summary) {
            Some(svg) => {
                if let Err(e) = std::fs::write(path, svg) {
                    eprintln!("hibiki load: error: cannot write {}: {e}", path.display());
                    code = ExitCode::from(2);
                }
            }
            None => eprintln!("hibiki load: no latency samples to plot"),
        }
    }
    if summary.all_failed() {
        eprintln!("hibiki load: error: every connection failed");
        return ExitCode::FAILURE;
    }
    code
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    #[test]
    fn parses_flags() {
        let cli = Cli::try_parse_from([
            "load",
            "broadcast",
            "-c",
            "1000",
            "--publishers",
            "2",
            "--rate",
            "50",
            "--duration",
            "2.5",
            "--server-pid",
            "42",
            "--json",
        ])
        .unwrap();
        let config = cli.args.config();
        assert_eq!(config.scenario, Scenario::Broadcast);
        assert_eq!(config.url, "ws://127.0.0.1:8080/broadcast");
        assert_eq!((config.connections, config.publishers, config.slots()), (1000, 2, 1002));
        assert_eq!(config.rate, Some(50.0));
        assert_eq!(config.duration, Duration::from_millis(2500));
        assert_eq!(config.server_pids, [42]);
        assert!(cli.args.json);
        assert!(Cli::try_parse_from(["load", "nope"]).is_err());
        let echo = Cli::try_parse_from(["load", "echo", "--url", "ws://h:1/x"]).unwrap().args.config();
        assert_eq!((echo.url.as_str(), echo.in_flight, echo.payload), ("ws://h:1/x", 1, 20));
        let room =
            Cli::try_parse_from(["load", "room", "-c", "5000", "--rate", "300"]).unwrap().args.config();
        assert_eq!(room.url, "ws://127.0.0.1:8080/ws");
        assert_eq!((room.room_name(), room.payload, room.slots()), ("chat:bench", 100, 5001));
        let tick = Cli::try_parse_from(["load", "tick", "--room", "game:x"]).unwrap().args.config();
        assert_eq!((tick.room_name(), tick.payload, tick.slots(), tick.rate), ("game:x", 64, 101, None));
        assert!(tick.subscribe_urls.is_empty() && tick.publish_urls.is_empty());
    }

    #[test]
    fn parses_cluster_flags() {
        let (a, b) = ("ws://127.0.0.1:8081/ws", "ws://127.0.0.1:8082/ws");
        let args = ["load", "room", "--url", a, "--url", b, "--server-pid", "1", "--server-pid", "2,3"];
        let redis = ["--redis", "redis://127.0.0.1:6379/", "--redis", "redis://127.0.0.1:6380/"];
        let config = Cli::try_parse_from(args.iter().chain(&redis)).unwrap().args.config();
        assert_eq!(config.url, a);
        assert_eq!(config.subscribe_urls, [a, b], "subscribers over both");
        assert_eq!(config.publish_targets(), [a], "publishers on the first");
        assert_eq!(config.server_pids, [1, 2, 3]);
        assert_eq!(config.redis, ["redis://127.0.0.1:6379/", "redis://127.0.0.1:6380/"]);
        let comma = format!("{a},{b}");
        let config = Cli::try_parse_from(["load", "tick", "--url", &comma]).unwrap().args.config();
        assert_eq!((config.url.as_str(), config.subscribe_urls.len()), (a, 2));
        let split = ["load", "room", "--publish-url", a, "--subscribe-url", b, "--subscribe-url", b];
        let config = Cli::try_parse_from(split).unwrap().args.config();
        assert_eq!(
            (config.url.as_str(), config.publish_targets(), config.subscribe_targets()),
            (a, &[a.to_string()][..], &[b.to_string(), b.to_string()][..])
        );
        let echo = Cli::try_parse_from(["load", "echo", "--publish-url", a]).unwrap().args.config();
        assert!(echo.validate().unwrap_err().to_string().contains("--publish-url"));
    }
}
