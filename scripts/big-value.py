#!/usr/bin/env python3
"""One big SET against durable-master and redis-server, side by side.

For each value size: one client sends a single `SET big <value>`; another client sends `GET z`
every 20 ms meanwhile. Prints, for each server, the peak RSS growth over the value's size
(VmHWM), the time until the SET's reply and the worst GET latency of the other client. Then
the time 100 SETs of 1 MB take one after the other with a 1mb backlog (each larger than the
ring).

usage: scripts/big-value.py [DURABLE_MASTER_BINARY] [SIZE_MB[:BACKLOG] ...]
defaults: target/release/durable-master 128:16mb 512:64mb
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def connect(port):
    for _ in range(200):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def run(cmd, port, payload, value_len):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        setter, getter = connect(port), connect(port)
        before = hwm(proc.pid)
        latencies, stop = [], threading.Event()

        def poll():
            while not stop.is_set():
                t0 = time.time()
                getter.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nz\r\n")
                getter.recv(100)
                latencies.append(time.time() - t0)
                time.sleep(0.02)

        t = threading.Thread(target=poll)
        start = time.time()
        t.start()
        setter.sendall(payload)
        reply = setter.recv(100)
        took = time.time() - start
        stop.set()
        t.join()
        peak = hwm(proc.pid) - before
        assert reply == b"+OK\r\n", reply
        return peak / value_len, took, max(latencies) * 1000
    finally:
        proc.kill()
        proc.wait()


def main():
    args = sys.argv[1:]
    binary = args.pop(0) if args and not args[0][0].isdigit() else "target/release/durable-master"
    sizes = args or ["128:16mb", "512:64mb"]
    redis = shutil.which("redis-server")
    print("| value | backlog | server | peak RSS / value | reply after | worst GET of another client |")
    print("|---|---|---|---|---|---|")
    for spec in sizes:
        mb, _, backlog = spec.partition(":")
        backlog = backlog or "64mb"
        value_len = int(mb) << 20
        payload = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % value_len + b"x" * value_len + b"\r\n"
        servers = [("durable-master", lambda d, p: [binary, "--port", str(p), "--dir", d,
                                                     "--backlog-size", backlog])]
        if redis:
            for aof in ("yes", "no"):
                servers.append((f"redis-server, appendonly {aof}", lambda d, p, aof=aof: [
                    redis, "--port", str(p), "--dir", d, "--save", "", "--appendonly", aof,
                    "--repl-backlog-size", backlog, "--daemonize", "no"]))
        for name, cmd in servers:
            with tempfile.TemporaryDirectory() as d:
                port = free_port()
                ratio, took, worst = run(cmd(d, port), port, payload, value_len)
                print(f"| {mb} MB | {backlog} | {name} | {ratio:.2f}x | {took:.2f} s | {worst:.0f} ms |",
                      flush=True)
    hundred_all(binary, redis)


def hundred(cmd, port):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = connect(port)
        value = b"v" * (1 << 20)
        start = time.time()
        for i in range(100):
            key = b"k%d" % i
            c.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(value))
                      + value + b"\r\n")
            assert c.recv(10) == b"+OK\r\n"
        return time.time() - start
    finally:
        proc.kill()
        proc.wait()


def hundred_all(binary, redis):
    servers = [("durable-master", lambda d, p: [binary, "--port", str(p), "--dir", d,
                                                 "--backlog-size", "1mb"])]
    if redis:
        for aof in ("yes", "no"):
            servers.append((f"redis-server, appendonly {aof}", lambda d, p, aof=aof: [
                redis, "--port", str(p), "--dir", d, "--save", "", "--appendonly", aof,
                "--daemonize", "no"]))
    parts = []
    for name, cmd in servers:
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            parts.append(f"{name} {hundred(cmd(d, port), port):.2f} s")
    print("\n100 SETs of 1 MB, 1mb backlog: " + ", ".join(parts))


if __name__ == "__main__":
    main()
