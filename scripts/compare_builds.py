"""Runs two builds of `hibiki serve` in turns (A B A B ...) under the same load and prints, per
scenario, the medians per server CPU-second, B against A, and the A/A spread (how far A's own
rounds lie apart): a difference inside the spread is noise. See scripts/compare-builds.sh."""
import json
import os
import socket
import statistics
import subprocess
import sys
import time

A, B = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
SECONDS = float(sys.argv[4]) if len(sys.argv) > 4 else 8
LOAD = sys.argv[5] if len(sys.argv) > 5 else B
PORT = 9450
URL = f"ws://127.0.0.1:{PORT}"
SCENARIOS = {
    "room-5000": ["room", "--url", f"{URL}/ws", "-c", "5000", "--publishers", "1", "--rate", "100",
                  "--payload", "100"],
    "tick-5000": ["tick", "--url", f"{URL}/ws", "-c", "5000", "--rate", "60"],
    "echo-16": ["echo", "--url", f"{URL}/echo", "-c", "100", "--in-flight", "16", "--payload", "20"],
    "echo-1": ["echo", "--url", f"{URL}/echo", "-c", "100", "--in-flight", "1", "--payload", "20"],
    "echo-16k": ["echo", "--url", f"{URL}/echo", "-c", "10", "--in-flight", "4", "--payload", "16384"],
    "broadcast-5000": ["broadcast", "--url", f"{URL}/broadcast", "-c", "5000", "--publishers", "1", "--rate",
                       "100", "--payload", "100"],
    "idle-10000": ["idle", "--url", f"{URL}/echo", "-c", "10000"],
}
chosen = os.environ.get("SCENARIOS", "room-5000 tick-5000 echo-16").split()


def wait_port():
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("a server did not start")


def run(binary, args):
    serve = [binary, "serve", "--threads", "1", "--listen", f"127.0.0.1:{PORT}", "--no-deflate",
             "--ping-interval", "0"]
    proc = subprocess.Popen(["taskset", "-c", "0", *serve], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port()
        cmd = ["taskset", "-c", "1", LOAD, "load", *args, "--duration", str(SECONDS), "--server-pid",
               str(proc.pid), "--json", "--quiet"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS * 6 + 180)
        if not out.stdout.strip():
            print(f"  load failed: {out.stderr.strip()[:300]}", file=sys.stderr)
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


def value(summary, scenario):
    if scenario.startswith("idle"):
        return (summary.get("memory") or {}).get("per_connection_bytes")
    return summary["usage"].get("per_server_cpu_sec")


rows = {s: {"A": [], "B": []} for s in chosen}
for scenario in chosen:
    for r in range(ROUNDS):
        for name, binary in (("A", A), ("B", B)):
            summary = run(binary, SCENARIOS[scenario])
            v = summary and value(summary, scenario)
            if v:
                rows[scenario][name].append(v)
            print(f"{scenario} round {r + 1} {name}: {v}", file=sys.stderr, flush=True)

unit = {"idle-10000": "B RSS per connection"}
print(f"\n{ROUNDS} rounds x {SECONDS:.0f} s, A and B in turns; server on core 0, load on core 1; medians.\n")
print("| scenario | A | B | B / A | A/A spread | per |")
print("|---|---|---|---|---|---|")
for scenario in chosen:
    a, b = rows[scenario]["A"], rows[scenario]["B"]
    if not a or not b:
        print(f"| {scenario} | - | - | - | - | |")
        continue
    ma, mb = statistics.median(a), statistics.median(b)
    spread = (max(a) - min(a)) / ma
    print(f"| {scenario} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.3f} | ±{spread * 50:.1f} % | "
          f"{unit.get(scenario, 'server CPU-second')} |")
