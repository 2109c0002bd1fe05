#!/usr/bin/env python3
"""RSS and thread count of durable-master and redis-server holding N idle clients, same run.

Each server starts fresh; N connections are opened and each answers one PING; then
/proc/<pid>/status is read. Usage: scripts/idle-clients.py [N] (default 9900; the open-files
hard limit must allow N + 64 in this process and in each server).
Needs redis-server and a release build (cargo build --release --bin durable-master).
"""
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 9900
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid):
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def wait_up(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} never opened")


def measure(name, argv, port):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(port)
        time.sleep(0.5)
        rss0, th0 = status(proc.pid)
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(N)]
        for s in socks:
            s.sendall(b"PING\r\n")
        ok = sum(s.recv(16).startswith(b"+PONG") for s in socks)
        time.sleep(1)
        rss1, th1 = status(proc.pid)
        print(f"{name:15} idle {ok:6} rss {rss0:7.1f} -> {rss1:7.1f} MB "
              f"(+{(rss1 - rss0) * 1024 / N:5.2f} KB/client)  threads {th0} -> {th1}")
        for s in socks:
            s.close()
        return rss1
    finally:
        proc.kill()
        proc.wait()


with tempfile.TemporaryDirectory() as d:
    p1, p2 = free_port(), free_port()
    dm = measure("durable-master",
                 [os.path.join(ROOT, "target/release/durable-master"), "--port", str(p1),
                  "--dir", os.path.join(d, "dm")], p1)
    rs = measure("redis-server",
                 ["redis-server", "--port", str(p2), "--save", "", "--appendonly", "no",
                  "--dir", d, "--maxclients", str(N + 100)], p2)
    print(f"durable-master RSS / redis-server RSS: {dm / rs:.2f}x")
