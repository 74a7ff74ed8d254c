//! `hibiki serve` and `hibiki load`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hibiki::app::{ServeApp, ServeConfig};
use hibiki::hub::HubConfig;
use hibiki::reactor::{Server, TlsConfig};

#[derive(Parser, Debug)]
#[command(name = "hibiki", version, about = "Real-time messaging engine over WebSocket")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (in-memory hub by default; `--redis` for several nodes as one).
    Serve(ServeArgs),
    /// Generate load against a WebSocket server (echo, broadcast, game, connect, idle).
    Load(hibiki::load::LoadArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HIBIKI_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Worker threads (default: number of cores).
    #[arg(long, env = "HIBIKI_THREADS")]
    threads: Option<usize>,
    /// Largest message a client may send, in bytes.
    #[arg(long, env = "HIBIKI_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    max_message_size: usize,
    /// Most fragments in one message.
    #[arg(long, env = "HIBIKI_MAX_FRAGMENTS", default_value_t = 1 << 17)]
    max_fragments: usize,
    /// Most connections on the server.
    #[arg(long, env = "HIBIKI_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    max_connections: usize,
    /// Most connections from one IP address (429 past it).
    #[arg(long, env = "HIBIKI_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Origin allowed to connect (repeat for several; none: any).
    #[arg(long = "allowed-origin", env = "HIBIKI_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Seconds between heartbeat pings (0 disables).
    #[arg(long, env = "HIBIKI_PING_INTERVAL", default_value_t = 30.0)]
    ping_interval: f64,
    /// Seconds a pinged peer has to answer.
    #[arg(long, env = "HIBIKI_PING_TIMEOUT", default_value_t = 10.0)]
    ping_timeout: f64,
    /// Seconds a client has to send its handshake.
    #[arg(long, env = "HIBIKI_HANDSHAKE_TIMEOUT", default_value_t = 5.0)]
    handshake_timeout: f64,
    /// Close connections that sent no message for this many seconds.
    #[arg(long, env = "HIBIKI_IDLE_TIMEOUT")]
    idle_timeout: Option<f64>,
    /// Handshakes per second per worker.
    #[arg(long, env = "HIBIKI_HANDSHAKE_RATE", default_value_t = 20_000)]
    handshake_rate: u32,
    /// Refuse permessage-deflate.
    #[arg(long, env = "HIBIKI_NO_DEFLATE")]
    no_deflate: bool,
    /// Outbound bytes queued for one connection before it is closed as a slow consumer.
    #[arg(long, env = "HIBIKI_MAX_OUTBOUND", default_value_t = 16 << 20)]
    max_outbound: usize,
    /// HS256 secret: `/ws` and `/sse` then need a JWT (header, `token` query or cookie).
    #[arg(long, env = "HIBIKI_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Key for `POST /api/publish` (`Authorization: Bearer <key>`); without it the API is off.
    #[arg(long, env = "HIBIKI_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Messages kept per room for resume.
    #[arg(long, env = "HIBIKI_HISTORY_SIZE", default_value_t = 1000)]
    history_size: usize,
    /// Seconds after which history is dropped (default: kept until pushed out by size).
    #[arg(long, env = "HIBIKI_HISTORY_TTL")]
    history_ttl: Option<f64>,
    /// Room pattern batched per tick (repeat or comma-separate; `*` at the end is a prefix).
    #[arg(long = "tick-room", env = "HIBIKI_TICK_ROOMS", value_delimiter = ',', default_value = "game:*")]
    tick_rooms: Vec<String>,
    /// Rooms one connection may join (its own `user:ID` room does not count).
    #[arg(long, env = "HIBIKI_MAX_ROOMS", default_value_t = 256)]
    max_rooms: usize,
    /// Users in a room past which joins and leaves are not announced and `presence` has only the count.
    #[arg(long, env = "HIBIKI_PRESENCE_LIMIT", default_value_t = 1000)]
    presence_limit: usize,
    /// Ticks per second of tick rooms.
    #[arg(long, env = "HIBIKI_TICK_RATE", default_value_t = 60)]
    tick_rate: u32,
    /// Share of a tick period one tick's writes may take (0.05-1); members past it are served
    /// first next tick with the latest state per key.
    #[arg(long, env = "HIBIKI_TICK_SHARE", default_value_t = 0.5)]
    tick_share: f64,
    /// Seconds between the counters the server publishes to the `hibiki:stats` room (the
    /// page's dashboard); 0 turns it off.
    #[arg(long, env = "HIBIKI_STATS_INTERVAL", default_value_t = 1.0)]
    stats_interval: f64,
    /// Redis server keeping room state for every node (repeat or comma-separate to spread
    /// rooms over several; every node must list the same ones in the same order); none: in memory.
    #[arg(long = "redis", env = "HIBIKI_REDIS", value_delimiter = ',')]
    redis: Vec<String>,
    /// Prefix of the Redis keys and channels (nodes sharing it are one server).
    #[arg(long, env = "HIBIKI_REDIS_PREFIX", default_value = "hibiki:")]
    redis_prefix: String,
    /// Seconds any Redis call may take before it fails (`unavailable`).
    #[arg(long, env = "HIBIKI_REDIS_TIMEOUT", default_value_t = 1.0)]
    redis_timeout: f64,
    /// This node's id as the others see it, 1-64 of `[A-Za-z0-9_.-]` (default: random).
    #[arg(long, env = "HIBIKI_NODE_ID")]
    node_id: Option<String>,
    /// Certificate chain (PEM, leaf first): serve `https://` and `wss://` on the port. Needs
    /// `--tls-key`; SIGHUP reads both files again.
    #[arg(long, env = "HIBIKI_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key of the certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HIBIKI_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// TOML file with any of these settings (keys as the flags, e.g. `max-message-size = 65536`);
    /// flags and environment variables win over it.
    #[arg(long, env = "HIBIKI_CONFIG")]
    config: Option<std::path::PathBuf>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn serve(args: ServeArgs) -> std::io::Result<()> {
    let mut builder = Server::builder()
        .bind(args.listen)
        .max_message_size(args.max_message_size)
        .max_fragments(args.max_fragments)
        .max_connections(args.max_connections)
        .max_connections_per_ip(args.max_connections_per_ip.unwrap_or(usize::MAX))
        .allowed_origins(args.allowed_origins)
        .ping_interval((args.ping_interval > 0.0).then(|| secs(args.ping_interval)))
        .ping_timeout(secs(args.ping_timeout))
        .handshake_timeout(secs(args.handshake_timeout))
        .idle_timeout(args.idle_timeout.map(secs))
        .handshake_rate(args.handshake_rate)
        .hard_outbound_limit(args.max_outbound);
    if let Some(threads) = args.threads {
        builder = builder.threads(threads);
    }
    if args.no_deflate {
        builder = builder.deflate(None);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    if let Some(tls) = &tls {
        builder = builder.tls(tls.clone());
    }
    let tick_rate = args.tick_rate.max(1);
    builder = builder.tick(Some(Duration::from_secs(1) / tick_rate));
    let threads = builder.config().threads;
    let mut hub = HubConfig::default();
    hub.history_size = args.history_size;
    hub.history_ttl = args.history_ttl.map(secs);
    hub.tick_patterns = args.tick_rooms;
    hub.tick_rate = tick_rate;
    hub.presence_limit = args.presence_limit;
    hub.max_rooms_per_connection = args.max_rooms;
    hub.tick_share = args.tick_share;
    if let Some(id) = &args.node_id {
        if !hibiki::cluster::valid_node_id(id) {
            return Err(std::io::Error::other(format!("--node-id {id:?}: 1-64 of [A-Za-z0-9_.-]")));
        }
        hub.node = hibiki::hub::store::NodeId::from(id.as_str());
    }
    let cluster = if args.redis.is_empty() {
        None
    } else {
        let config = hibiki::cluster::ClusterConfig::new(args.redis.iter().map(String::as_str))
            .map_err(|e| std::io::Error::other(format!("--redis: {e}")))?
            .prefix(&args.redis_prefix)
            .timeout(secs(args.redis_timeout.max(0.01)));
        tracing::info!(servers = ?config.urls, node = hub.node.as_str(), "room state in Redis");
        Some(config)
    };
    let mut app = ServeConfig::default();
    app.cluster = cluster;
    app.hub = hub;
    app.jwt_secret = args.jwt_secret;
    app.api_key = args.api_key;
    app.stats_period = (args.stats_interval > 0.0).then(|| secs(args.stats_interval));
    let listen = args.listen;
    let server = builder.start(ServeApp::new(app)).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {listen}: another process listens there ({e}); choose another --listen"
            ),
        ),
        _ => e,
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %server.local_addr(), threads, scheme, "hibiki serve listening");
    let handle = server.handle();
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal != SIGHUP {
                tracing::info!(signal, "shutting down: closing connections with 1001");
                handle.shutdown();
                return;
            }
            // SIGHUP: new connections get the certificate now in the files; open ones keep theirs.
            match &tls {
                Some(tls) => match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; keeping the current one")
                    }
                },
                None => tracing::info!("SIGHUP: nothing to reload without TLS"),
            }
        }
    });
    server.wait();
    tracing::info!("stopped");
    Ok(())
}

/// Reads `--config FILE` (or `HIBIKI_CONFIG`) before the flags are parsed and turns each key
/// into the environment variable of its flag, unless that variable is already set: flags win
/// over the environment, which wins over the file.
fn load_config_file() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut path = std::env::var_os("HIBIKI_CONFIG").map(std::path::PathBuf::from);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            path = args.next().map(Into::into);
        } else if let Some(p) = arg.strip_prefix("--config=") {
            path = Some(p.into());
        }
    }
    let Some(path) = path else { return Ok(()) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e| format!("config {}: {e}", path.display()))?;
    for (key, value) in &table {
        let var = format!("HIBIKI_{}", key.replace('-', "_").to_uppercase());
        let var = match var.as_str() {
            "HIBIKI_ALLOWED_ORIGIN" => "HIBIKI_ALLOWED_ORIGINS".to_string(),
            "HIBIKI_TICK_ROOM" => "HIBIKI_TICK_ROOMS".to_string(),
            _ => var,
        };
        if std::env::var_os(&var).is_some() {
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        };
        set_env(&var, &text);
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_env(var: &str, value: &str) {
    // SAFETY: called from `main` before the logger, the server or any other thread starts, so
    // nothing reads the environment concurrently.
    unsafe { std::env::set_var(var, value) };
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = load_config_file() {
        eprintln!("hibiki: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Load(args) => return hibiki::load::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hibiki: {e}");
            ExitCode::FAILURE
        }
    }
}
