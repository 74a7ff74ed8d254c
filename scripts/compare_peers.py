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
               "--no-deflate", "--ping-interval", "0",
               # The default paces accepts at 20,000 handshakes/s per worker (a reconnect storm
               # waits in the backlog); the peers have no such pacing, so connect lifts it.
               "--handshake-rate", "10000000",
               *(["--tls-cert", CERT, "--tls-key", KEY] if TLS else [])],
    "fastwebsockets": [f"{PEERS}/release/fastwebsockets_server", f"127.0.0.1:{PORT}", *([CERT, KEY] if TLS else [])],
    "tokio-tungstenite": [f"{PEERS}/release/tungstenite_server", f"127.0.0.1:{PORT}", *([CERT, KEY] if TLS else [])],
}
# uWebSockets (uWebSockets.js: the C++ server, a JavaScript handler per message): node and its
# package must be there (scripts/compare-peers.sh installs it), else this stops; UWS=0 leaves it out.
UWS_DIR = "benches/peers/uws"
if os.environ.get("UWS", "1") not in ("", "0"):
    if not (shutil.which("node") and os.path.isdir(f"{UWS_DIR}/node_modules")):
        sys.exit(f"UWS: node or {UWS_DIR}/node_modules is missing (npm ci in {UWS_DIR}, or UWS=0 to leave it out)")
    SERVERS["uwebsockets"] = ["node", f"{UWS_DIR}/server.js", f"127.0.0.1:{PORT}", *([CERT, KEY] if TLS else [])]
# The A/A contestant: hibiki again, the same binary and arguments, taking its own turns: how far
# two runs of one server differ is the noise every ratio carries (AA=0 leaves it out).
AA = os.environ.get("AA", "1") not in ("", "0")
if AA:
    SERVERS["hibiki-aa"] = list(SERVERS["hibiki"])
if TLS:
    serve_help = subprocess.run([LOAD, "serve", "--help"], capture_output=True, text=True).stdout
    if "--tls-cert" not in serve_help:
        print("hibiki serve has no --tls-cert in this build: measuring the peers only", file=sys.stderr)
        del SERVERS["hibiki"]
        SERVERS.pop("hibiki-aa", None)
# BASELINE=path/to/an/older/hibiki: that build too, as the server "baseline" with the same
# arguments (the load tool stays this build's): a change measured before and after in one run.
if os.environ.get("BASELINE") and "hibiki" in SERVERS:
    SERVERS["baseline"] = [os.environ["BASELINE"], *SERVERS["hibiki"][1:]]
# ONLY="hibiki fastwebsockets": just these servers (hibiki's A/A turns stay with hibiki).
ONLY = os.environ.get("ONLY", "").split()
if ONLY:
    keep = ONLY + (["hibiki-aa", "baseline"] if "hibiki" in ONLY else [])
    SERVERS = {name: command for name, command in SERVERS.items() if name in keep}
URL = f"{'wss' if TLS else 'ws'}://127.0.0.1:{PORT}"
# name: (load arguments, what to compare[, only these servers])
HIBIKI_ONLY = ("hibiki", "hibiki-aa", "baseline")
SCENARIOS = {
    "echo-1": (["echo", "--url", f"{URL}/echo", "-c", "100", "--in-flight", "1", "--payload", "20"], "cpu"),
    "echo-16": (["echo", "--url", f"{URL}/echo", "-c", "100", "--in-flight", "16", "--payload", "20"], "cpu"),
    "echo-16k": (["echo", "--url", f"{URL}/echo", "-c", "10", "--in-flight", "4", "--payload", "16384"], "cpu"),
    "echo-1000": (["echo", "--url", f"{URL}/echo", "-c", "1000", "--in-flight", "1", "--payload", "20"], "cpu"),
    "broadcast": (["broadcast", "--url", f"{URL}/broadcast", "-c", "1000", "--publishers", "1", "--rate", "1000",
                   "--payload", "20"], "cpu"),
    # Fan-out at saturation: one publisher keeps 8 of its messages unconfirmed (until it
    # receives each back), 100 B each.
    "fanout-1000": (["broadcast", "--url", f"{URL}/broadcast", "-c", "1000", "--window", "8", "--payload", "100"],
                    "cpu"),
    "fanout-5000": (["broadcast", "--url", f"{URL}/broadcast", "-c", "5000", "--window", "8", "--payload", "100"],
                    "cpu"),
    # The same through the app protocol: a room of 5,000 members, a publisher keeping 8
    # publishes unacked (hibiki only: the peers have no rooms).
    "room-5000": (["room", "--url", f"{URL}/ws", "-c", "5000", "--window", "8", "--payload", "100"], "cpu",
                  HIBIKI_ONLY),
    "idle": (["idle", "--url", f"{URL}/echo", "-c", "10000"], "memory"),
    # The same with permessage-deflate negotiated (hibiki only: the peers do not offer it).
    "idle-deflate": (["idle", "--url", f"{URL}/echo", "-c", "10000", "--deflate"], "memory", HIBIKI_ONLY),
    "connect": (["connect", "--url", f"{URL}/echo", "--concurrency", "50"], "cpu"),
}
LABELS = {
    "echo-1": "echo 100 conns x 20 B, 1 in flight",
    "echo-16": "echo 100 conns x 20 B, 16 in flight",
    "echo-16k": "echo 10 conns x 16 KiB, 4 in flight",
    "echo-1000": "echo 1,000 conns x 20 B, 1 in flight",
    "broadcast": "broadcast 1,000 subscribers, 1,000 msg/s",
    "fanout-1000": "fan-out 1,000 subscribers, 100 B, 8 unconfirmed",
    "fanout-5000": "fan-out 5,000 subscribers, 100 B, 8 unconfirmed",
    "room-5000": "room of 5,000 members (app protocol), 100 B, 8 unacked",
    "idle": "idle 10,000 connections",
    "idle-deflate": "idle 10,000 connections, permessage-deflate",
    "connect": "connect, 50 at once (handshakes)",
}
DEFAULT = ("echo-16 echo-1 echo-16k connect" if TLS else
           "echo-1 echo-16 echo-16k echo-1000 broadcast fanout-1000 fanout-5000 room-5000 idle connect")
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
    command = SERVERS[server]
    if "--deflate" in args:
        # The load offers permessage-deflate: the server must not refuse it.
        command = [a for a in command if a != "--no-deflate"]
    proc = subprocess.Popen(["taskset", "-c", "0", *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        if not wait_port():
            print(f"  {server}: did not start", file=sys.stderr)
            return None
        cmd = ["taskset", "-c", "1", LOAD, "load", *args, "--duration", str(SECONDS), "--server-pid",
               str(proc.pid), "--json", "--quiet", *(["--ca", CERT] if TLS else [])]
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        counted = count_syscalls(proc.pid, load, args[0] != "connect") if args[0] != "idle" else None
        stdout, stderr = load.communicate(timeout=SECONDS * 6 + 120)
        if load.returncode != 0 and not stdout.strip():
            print(f"  {server}: load failed: {stderr.strip()[:200]}", file=sys.stderr)
            return None
        summary = json.loads(stdout)
        summary["syscalls"] = counted
        return summary
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(0.5)


PERF = shutil.which("perf") if os.environ.get("SYSCALLS", "1") not in ("", "0") else None


def count_syscalls(pid, load, settle):
    """The server's system calls over the middle of the measured window (perf stat of
    raw_syscalls:sys_enter, counted in the kernel: the server runs at full speed), as
    (calls, seconds counted); None without perf or when perf cannot attach. The load's window
    starts after its connections are set up and a 1 s warmup, and setup time is not known
    here: with `settle`, this first waits until the server's descriptor count holds still for
    0.3 s (the connections are open; connect churns them, so it does not wait), then 1.2 s,
    then counts for SECONDS - 1.5."""
    if not PERF:
        return None
    # Wait until the load has opened its connections (the server's socket count stops growing).
    last, still = -1, 0
    for _ in range(600 if settle else 0):
        if load.poll() is not None:
            return None
        try:
            n = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return None
        still = still + 1 if n == last else 0
        last = n
        if still >= 3 and n > 3:
            break
        time.sleep(0.1)
    time.sleep(1.2)
    secs = max(SECONDS - 1.5, 0.5)
    out = subprocess.run([PERF, "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", str(pid), "--",
                          "sleep", str(secs)], capture_output=True, text=True)
    for line in out.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter" and fields[0].isdigit():
            return (int(fields[0]), secs)
    return None


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
    calls = summary.get("syscalls")
    per_msg = calls[0] / calls[1] / rate if calls and rate else None
    return {"value": usage.get("per_server_cpu_sec"), "rate": rate, "cpu": usage.get("server_cpu_secs"),
            "syscalls": per_msg,
            "p99": (summary.get("latency") or {}).get("p99"), "load_cpu": usage.get("load_cpu_secs"),
            "failed": summary["connections"]["failed"] + summary["connections"]["failed_after_open"]}


results = {s: {srv: [] for srv in SERVERS} for s in chosen}
for scenario in chosen:
    args, kind = SCENARIOS[scenario][:2]
    only = SCENARIOS[scenario][2] if len(SCENARIOS[scenario]) > 2 else None
    for r in range(ROUNDS):
        for server in SERVERS:
            if only and server not in only:
                continue
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
print("| scenario | server | msg/s (connect: handshakes/s) | server CPU s | per server CPU-s | syscalls per msg | p99 µs | hibiki ratio |")
print("|---|---|---|---|---|---|---|---|")
ratios = {srv: [] for srv in SERVERS if not srv.startswith("hibiki")}
spreads = []
for scenario in chosen:
    kind = SCENARIOS[scenario][1]
    base = med(results[scenario].get("hibiki", []), "value")
    for server in SERVERS:
        rows = results[scenario][server]
        if not rows:
            continue
        value = med(rows, "value")
        ratio = "-"
        if base and value and server != "hibiki":
            r = (value / base) if kind == "memory" else (base / value)
            if server == "hibiki-aa":
                # A/A: how far the two hibiki runs are apart, of their mean.
                spread = abs(value - base) / ((value + base) / 2)
                spreads.append(spread)
                ratio = f"A/A spread {spread * 100:.1f} %"
            else:
                ratios[server].append(r)
                ratio = f"{r:.2f}x"
        if kind == "memory":
            print(f"| {LABELS[scenario]} | {server} | {fmt(med(rows, 'rate'))} held | - | "
                  f"{fmt(value)} B RSS per conn | - | - | {ratio} |")
        else:
            print(f"| {LABELS[scenario]} | {server} | {fmt(med(rows, 'rate'))} | {fmt(med(rows, 'cpu'), 2)} | "
                  f"{fmt(value)} | {fmt(med(rows, 'syscalls'), 3)} | {fmt(med(rows, 'p99'))} | {ratio} |")
if "room-5000" in chosen and "fanout-5000" in chosen:
    room = med(results["room-5000"].get("hibiki", []), "value")
    fan = med(results["fanout-5000"].get("hibiki", []), "value")
    if room and fan:
        print(f"\nhibiki room of 5,000 against /broadcast to 5,000: {room / fan:.2f}x the deliveries per server CPU-s")
print()
for server, rs in ratios.items():
    if rs:
        print(f"hibiki vs {server}: geometric mean {statistics.geometric_mean(rs):.2f}x over {len(rs)} scenarios "
              f"(per server CPU-second; for idle, RSS per connection)")
if spreads:
    print(f"A/A spread (hibiki against itself, same run): median {statistics.median(spreads) * 100:.1f} %, "
          f"largest {max(spreads) * 100:.1f} %")
