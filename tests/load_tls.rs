//! `hibiki load` over `wss://`: through a TLS-terminating proxy (tests/common/tls_proxy.rs)
//! in front of an in-process `hibiki serve` app, with a self-signed certificate made in the
//! test and trusted with `--ca`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::tls_proxy::{Certs, TempDir, TlsProxy};
use hibiki::app::ServeApp;
use hibiki::load::{FailureCause, LoadConfig, Scenario, run_scenario};
use hibiki::reactor::{Running, Server};

struct Setup {
    server: Running<ServeApp>,
    proxy: TlsProxy,
    ca: std::path::PathBuf,
    _dir: TempDir,
}

fn setup() -> Setup {
    let server =
        Server::builder().bind("127.0.0.1:0".parse().unwrap()).threads(1).start(ServeApp::default()).unwrap();
    let certs = Certs::self_signed(&["localhost", "127.0.0.1"]);
    let proxy = TlsProxy::start(server.local_addr(), &certs);
    let dir = TempDir::new("load-tls");
    let ca = certs.write_ca(&dir.0);
    Setup { server, proxy, ca, _dir: dir }
}

fn config(s: &Setup, scenario: Scenario, path: &str) -> LoadConfig {
    let mut config = LoadConfig::new(scenario, format!("wss://localhost:{}{path}", s.proxy.addr().port()));
    config.duration = Duration::from_secs(1);
    config.warmup = Duration::from_millis(200);
    config.connections = 8;
    config.ca_files = vec![s.ca.clone()];
    config
}

#[test]
fn echo_over_wss() {
    let s = setup();
    let mut config = config(&s, Scenario::Echo, "/echo");
    config.in_flight = 4;
    config.payload = 16 * 1024;
    let summary = run_scenario(&config).expect("run");
    let c = &summary.connections;
    assert_eq!((c.attempted, c.opened, c.failed, c.open_at_end), (8, 8, 0, 8), "{summary:#?}");
    let m = summary.messages.as_ref().unwrap();
    assert!(m.received > 0, "{summary:#?}");
    assert_eq!((m.errors, m.unanswered), (0, 0), "{summary:#?}");
    assert_eq!(s.proxy.handshakes(), 8);
    s.server.shutdown();
}

#[test]
fn connect_over_wss_counts_tls_handshakes() {
    let s = setup();
    let mut config = config(&s, Scenario::Connect, "/echo");
    config.concurrency = 4;
    let summary = run_scenario(&config).expect("run");
    assert_eq!(summary.connections.failed, 0, "{summary:#?}");
    let k = summary.connect.as_ref().unwrap();
    assert!(k.tls && k.handshakes > 0 && k.per_sec > 0.0, "{summary:#?}");
    assert!(s.proxy.handshakes() >= k.handshakes, "each one a TLS handshake at the proxy");
    let table = summary.table();
    assert!(table.contains("TLS handshakes"), "{table}");
    s.server.shutdown();
}

#[test]
fn an_untrusted_certificate_is_counted_as_such() {
    let s = setup();
    let mut config = config(&s, Scenario::Echo, "/echo");
    config.ca_files.clear();
    config.connections = 3;
    let summary = run_scenario(&config).expect("run");
    assert!(summary.all_failed(), "{summary:#?}");
    let failures = &summary.connections.failures;
    assert_eq!(failures.get(&FailureCause::Certificate("unknown issuer".into())), Some(&3), "{failures:?}");
    // --insecure accepts it.
    config.insecure = true;
    let summary = run_scenario(&config).expect("run");
    assert_eq!(summary.connections.failed, 0, "{summary:#?}");
    s.server.shutdown();
}

#[test]
fn the_command_line_takes_ca_and_reports_tls_handshakes() {
    let s = setup();
    let url = format!("wss://localhost:{}/echo", s.proxy.addr().port());
    let load = Command::new(env!("CARGO_BIN_EXE_hibiki"))
        .args(["load", "connect", "--url", &url, "--concurrency", "2", "--duration", "0.5"])
        .args(["--warmup", "0", "--quiet", "--ca"])
        .arg(&s.ca)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&load.stdout);
    assert!(load.status.success(), "{stdout}{}", String::from_utf8_lossy(&load.stderr));
    assert!(stdout.contains("TLS handshakes"), "{stdout}");
    let help = Command::new(env!("CARGO_BIN_EXE_hibiki")).args(["load", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--insecure") && help.contains("DISABLES CERTIFICATE VERIFICATION"), "{help}");
    s.server.shutdown();
}
