//! The `hibiki` binary: `serve` with a TOML config file and environment variables, graceful
//! shutdown on SIGTERM, and `load` against it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, http, status_of};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serve_reads_a_config_file_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("hibiki-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hibiki.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\nthreads = 1\napi-key = \"from-file\"\ntick-room = [\"game:*\", \"race:*\"]\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hibiki"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HIBIKI_API_KEY", "from-env")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(eventually(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok()), "listening");
    assert_eq!(status_of(&http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")), 200);
    // The environment wins over the file.
    let publish = |key: &str| {
        let body = r#"{"room":"r","data":1}"#;
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        status_of(&http(addr, request.as_bytes()))
    };
    assert_eq!(publish("from-file"), 401);
    assert_eq!(publish("from-env"), 200);
    // `load` runs against it and reports JSON.
    let load = Command::new(env!("CARGO_BIN_EXE_hibiki"))
        .args([
            "load",
            "echo",
            "--url",
            &format!("ws://127.0.0.1:{port}/echo"),
            "-c",
            "4",
            "--duration",
            "0.5",
        ])
        .args(["--warmup", "0", "--json", "--quiet"])
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    assert!(summary["messages"]["per_sec"].as_f64().unwrap() > 0.0);
    // SIGTERM: close 1001 to everyone, exit 0.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut exited = None;
    assert!(eventually(Duration::from_secs(10), || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    }));
    assert!(exited.unwrap().success(), "exit 0 after SIGTERM");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_on_a_port_in_use_says_so_and_exits() {
    // Held by a plain listener (no SO_REUSEPORT), as another program would hold it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hibiki"))
        .args(["serve", "--threads", "1", "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .output()
        .expect("run hibiki serve");
    assert!(!out.status.success(), "a second server on {addr} must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")) && err.contains("--listen"), "{err}");
    drop(held);
}
