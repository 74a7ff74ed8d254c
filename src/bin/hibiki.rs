//! `hibiki serve` and `hibiki load`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hibiki::app::ServeApp;
use hibiki::reactor::Server;

#[derive(Parser, Debug)]
#[command(name = "hibiki", version, about = "Real-time messaging engine over WebSocket")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (in-memory hub, no Redis needed).
    Serve(ServeArgs),
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
    let threads = builder.config().threads;
    let server = builder.start(ServeApp)?;
    tracing::info!(addr = %server.local_addr(), threads, "hibiki serve listening");
    let handle = server.handle();
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down: closing connections with 1001");
            handle.shutdown();
        }
    });
    server.wait();
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hibiki: {e}");
            ExitCode::FAILURE
        }
    }
}
