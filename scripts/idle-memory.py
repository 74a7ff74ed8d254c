#!/usr/bin/env python3
"""Memory per idle connection of `hibiki serve`, plain or TLS: the server's RSS growth after
N WebSocket connections to /echo are open and idle, divided by N.

usage: scripts/idle-memory.py [N] [--tls] [--binary PATH]
Starts the server itself (one worker, 127.0.0.1), opens the connections with Python's own
client (ssl for wss://, with a certificate made by openssl for the run), and stops it.
"""
import argparse, base64, os, resource, socket, ssl, subprocess, sys, tempfile, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")

def upgrade(sock):
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit(f"closed during the upgrade: {got!r}")
        got += chunk
    if not got.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"not upgraded: {got!r}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=5000)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--binary", default="target/release/hibiki")
    ap.add_argument("--port", type=int, default=9471)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.n + 1000)), hard))
    tmp = tempfile.mkdtemp(prefix="hibiki-idle-")
    cmd = [args.binary, "serve", "--listen", f"127.0.0.1:{args.port}", "--threads", "1",
           "--stats-interval", "0"]
    ctx = None
    if args.tls:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        cmd += ["--tls-cert", cert, "--tls-key", key]
        ctx = ssl.create_default_context(cafile=cert)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
    conns = []
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        # Warm the server up (allocator arenas, the page, rustls) with a few connections first.
        def open_one():
            s = socket.create_connection(("127.0.0.1", args.port))
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="localhost")
            upgrade(s)
            return s
        warm = [open_one() for _ in range(50)]
        for s in warm:
            s.close()
        time.sleep(1)
        before = rss_kib(server.pid)
        start = time.time()
        for _ in range(args.n):
            conns.append(open_one())
        took = time.time() - start
        time.sleep(2)
        after = rss_kib(server.pid)
        kind = "TLS (wss://)" if args.tls else "plain (ws://)"
        print(f"{kind}: {args.n} idle connections in {took:.1f} s; server RSS {before} KiB -> {after} KiB: "
              f"{(after - before) * 1024 / args.n:.0f} bytes per idle connection")
    finally:
        for s in conns:
            s.close()
        server.terminate()
        server.wait()

if __name__ == "__main__":
    main()
