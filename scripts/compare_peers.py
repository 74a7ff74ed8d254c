"""Runs the peer comparison described in scripts/compare-peers.sh and prints the tables."""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = int(sys.argv[1])
SECONDS = float(sys.argv[2])
TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
LOAD = f"{TARGET}/release/hibiki"
PEERS = os.environ.get("CARGO_TARGET_DIR", "benches/peers/target")
PORT = 9400
# TLS=1: every server serves wss:// with one self-signed certificate (ECDSA P-256, made here
# with openssl), and `hibiki load` trusts it with --ca.
TLS = os.environ.get("TLS", "") not in ("", "0")
TLS_DIR = tempfile.mkdtemp(prefix="hibiki-peers-tls-") if TLS else None
CERT = f"{TLS_DIR}/cert.pem" if TLS else None
KEY = f"{TLS_DIR}/key.pem" if TLS else None
if TLS:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", KEY, "-out", CERT, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    # A server certificate, not a CA's (which webpki refuses as an end entity).
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
SERVERS = {
    "hibiki": [LOAD, "serve", "--threads", "1", "--listen", f"127.0.0.1:{PORT}",
               "--no-deflate", "--ping-interval", "0", *(["--tls-cert", CERT, "--tls-key", KEY] if TLS else [])],
    "fastwebsockets": [f"{PEERS}/release/fastwebsockets_server", f"127.0.0.1:{PORT}", *([CERT, KEY] if TLS else [])],
    "tokio-tungstenite": [f"{PEERS}/release/tungstenite_server", f"127.0.0.1:{PORT}", *([CERT, KEY] if TLS else [])],
}
if TLS:
    serve_help = subprocess.run([LOAD, "serve", "--help"], capture_output=True, text=True).stdout
    if "--tls-cert" not in serve_help:
        print("hibiki serve has no --tls-cert in this build: measuring the peers only", file=sys.stderr)
        del SERVERS["hibiki"]
URL = f"{'wss' if TLS else 'ws'}://127.0.0.1:{PORT}"
# name: (load arguments, what to compare)
SCENARIOS = {
    "echo-1": (["echo", "--url", f"{URL}/echo", "-c", "100", "--in-flight", "1", "--payload", "20"], "cpu"),
    "echo-16": (["echo", "--url", f"{URL}/echo", "-c", "100", "--in-flight", "16", "--payload", "20"], "cpu"),
    "echo-16k": (["echo", "--url", f"{URL}/echo", "-c", "10", "--in-flight", "4", "--payload", "16384"], "cpu"),
    "echo-1000": (["echo", "--url", f"{URL}/echo", "-c", "1000", "--in-flight", "1", "--payload", "20"], "cpu"),
    "broadcast": (["broadcast", "--url", f"{URL}/broadcast", "-c", "1000", "--publishers", "1", "--rate", "1000",
                   "--payload", "20"], "cpu"),
    "idle": (["idle", "--url", f"{URL}/echo", "-c", "10000"], "memory"),
    "connect": (["connect", "--url", f"{URL}/echo", "--concurrency", "50"], "cpu"),
}
LABELS = {
    "echo-1": "echo 100 conns x 20 B, 1 in flight",
    "echo-16": "echo 100 conns x 20 B, 16 in flight",
    "echo-16k": "echo 10 conns x 16 KiB, 4 in flight",
    "echo-1000": "echo 1,000 conns x 20 B, 1 in flight",
    "broadcast": "broadcast 1,000 subscribers, 1,000 msg/s",
    "idle": "idle 10,000 connections",
    "connect": "connect, 50 at once (handshakes)",
}
DEFAULT = "echo-16 echo-1 echo-16k connect" if TLS else "echo-1 echo-16 echo-16k echo-1000 broadcast idle"
chosen = os.environ.get("SCENARIOS", DEFAULT).split()
if TLS:
    LABELS = {k: "TLS " + v.replace("(handshakes)", "(TLS + WebSocket handshakes)") for k, v in LABELS.items()}


def wait_port():
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def run(server, args):
    proc = subprocess.Popen(["taskset", "-c", "0", *SERVERS[server]], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        if not wait_port():
            print(f"  {server}: did not start", file=sys.stderr)
            return None
        cmd = ["taskset", "-c", "1", LOAD, "load", *args, "--duration", str(SECONDS), "--server-pid",
               str(proc.pid), "--json", "--quiet", *(["--ca", CERT] if TLS else [])]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS * 6 + 120)
        if out.returncode != 0 and not out.stdout.strip():
            print(f"  {server}: load failed: {out.stderr.strip()[:200]}", file=sys.stderr)
            return None
        return json.loads(out.stdout)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(0.5)


def figures(summary, kind):
    usage = summary["usage"]
    if kind == "memory":
        mem = summary.get("memory") or {}
        return {"value": mem.get("per_connection_bytes"), "rate": summary["connections"]["open_at_end"],
                "cpu": usage.get("server_cpu_secs")}
    msgs = summary.get("messages") or {}
    rate = msgs.get("per_sec")
    if summary.get("broadcast"):
        rate = summary["broadcast"]["delivered"] / summary["duration_secs"]
    if summary.get("connect"):
        rate = summary["connect"]["per_sec"]
    return {"value": usage.get("per_server_cpu_sec"), "rate": rate, "cpu": usage.get("server_cpu_secs"),
            "p99": (summary.get("latency") or {}).get("p99"), "load_cpu": usage.get("load_cpu_secs"),
            "failed": summary["connections"]["failed"] + summary["connections"]["failed_after_open"]}


results = {s: {srv: [] for srv in SERVERS} for s in chosen}
for scenario in chosen:
    args, kind = SCENARIOS[scenario]
    for r in range(ROUNDS):
        for server in SERVERS:
            summary = run(server, args)
            if summary:
                f = figures(summary, kind)
                results[scenario][server].append(f)
                print(f"{scenario} round {r + 1} {server}: {f}", file=sys.stderr, flush=True)


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


if TLS_DIR:
    shutil.rmtree(TLS_DIR, ignore_errors=True)
print(f"\nMachine: {os.cpu_count()} cores ({open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}); "
      f"{ROUNDS} rounds x {SECONDS:.0f} s, medians; server on core 0, load on core 1"
      f"{'; wss:// with a self-signed ECDSA P-256 certificate, full handshakes (no resumption)' if TLS else ''}.\n")
print("| scenario | server | msg/s (connect: handshakes/s) | server CPU s | per server CPU-s | p99 µs | hibiki ratio |")
print("|---|---|---|---|---|---|---|")
ratios = {srv: [] for srv in SERVERS if srv != "hibiki"}
for scenario in chosen:
    kind = SCENARIOS[scenario][1]
    base = med(results[scenario].get("hibiki", []), "value")
    for server in SERVERS:
        rows = results[scenario][server]
        value = med(rows, "value")
        ratio = "-"
        if server != "hibiki" and base and value:
            r = (value / base) if kind == "memory" else (base / value)
            ratios[server].append(r)
            ratio = f"{r:.2f}x"
        if kind == "memory":
            print(f"| {LABELS[scenario]} | {server} | {fmt(med(rows, 'rate'))} held | - | "
                  f"{fmt(value)} B RSS per conn | - | {ratio} |")
        else:
            print(f"| {LABELS[scenario]} | {server} | {fmt(med(rows, 'rate'))} | {fmt(med(rows, 'cpu'), 2)} | "
                  f"{fmt(value)} | {fmt(med(rows, 'p99'))} | {ratio} |")
print()
for server, rs in ratios.items():
    if rs:
        print(f"hibiki vs {server}: geometric mean {statistics.geometric_mean(rs):.2f}x over {len(rs)} scenarios "
              f"(per server CPU-second; for idle, RSS per connection)")
