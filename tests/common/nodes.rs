//! Nodes of one cluster for tests: `hibiki serve` in-process (a `Running<ServeApp>` on a free
//! port) or as a child process of the built binary (for SIGKILL), all on the same Redis
//! servers and prefix.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hibiki::app::{ServeApp, ServeConfig};
use hibiki::cluster::ClusterConfig;
use hibiki::hub::store::NodeId;
use hibiki::reactor::{Running, Server};

/// The settings of a node on `urls` under `prefix`.
pub fn config(urls: &[String], prefix: &str, node: &str) -> ServeConfig {
    let mut config = ServeConfig::default();
    config.hub.node = NodeId::from(node);
    config.hub.history_size = 1000;
    config.api_key = Some("api-key".into());
    config.cluster = Some(
        ClusterConfig::new(urls.iter().cloned()).unwrap().prefix(prefix).timeout(Duration::from_millis(500)),
    );
    config
}

/// A node in this process.
pub fn start(config: ServeConfig) -> Running<ServeApp> {
    let server = Server::builder()
        .bind(super::local())
        .threads(2)
        .tick(Some(Duration::from_millis(16)))
        .start(ServeApp::new(config))
        .unwrap();
    wait_healthy(server.local_addr(), Duration::from_secs(10));
    server
}

/// Waits for `/healthz` to answer 200.
pub fn wait_healthy(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let answer = std::net::TcpStream::connect(addr)
            .is_ok()
            .then(|| super::http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
        if answer.as_deref().is_some_and(|a| super::status_of(a) == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "the node at {addr} did not become healthy: {answer:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/healthz`'s status and body.
pub fn health(addr: SocketAddr) -> (u16, String) {
    let answer = super::http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    (super::status_of(&answer), answer)
}

/// A node as a child process of the built binary.
pub struct Process {
    pub addr: SocketAddr,
    child: Child,
}

impl Process {
    pub fn start(urls: &[String], prefix: &str, node: &str, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hibiki"))
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--threads", "1", "--redis", &urls.join(",")])
            .args(["--redis-prefix", prefix, "--node-id", node, "--redis-timeout", "0.5"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the hibiki binary starts");
        wait_healthy(addr, Duration::from_secs(10));
        Self { addr, child }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
