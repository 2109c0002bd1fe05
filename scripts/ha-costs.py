#!/usr/bin/env python3
"""What each high-availability fault costs, durable-master and stock redis-server side by side.

Every scenario runs twice in the same run, once with durable-master as the node under test
("X") and once with redis-server in its place (AOF, appendfsync everysec: the stock setting
closest to durable-master's default durability); every other node is a stock redis-server
7.0 without persistence, watched by three redis-sentinel processes where a failover is part of
the fault. For each fault the script reports the kind of resynchronization the affected
replica got (read from the sending master's log) and the replication bytes it cost (the delta
of a stock node's INFO stats total_net_repl_input_bytes / total_net_repl_output_bytes across
the fault). A data set of KEYS keys (100-byte random hex values, which the RDB cannot compress much) is loaded first; WRITES keys are written
while the faulty node is down, where the fault allows writes.

Usage: scripts/ha-costs.py [path/to/durable-master] [KEYS] [WRITES]
(needs redis-server and redis-sentinel on the PATH; everything runs in a temporary directory
on 127.0.0.1 ports chosen at random).
"""

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

DM = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/durable-master")
KEYS = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
WRITES = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000
ROOT = tempfile.mkdtemp(prefix="ha-costs-")
PROCS = []


def port():
    while True:
        p = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                pass


def enc(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, p):
        self.s = socket.create_connection(("127.0.0.1", p), timeout=30)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(65536)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v.decode(errors="replace")
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise ValueError(line)

    def call(self, *args):
        self.s.sendall(enc(args))
        return self.reply()

    def pipeline(self, cmds):
        self.s.sendall(b"".join(enc(c) for c in cmds))
        return [self.reply() for _ in cmds]


def call(p, *args):
    c = Conn(getattr(p, "port", p))
    try:
        return c.call(*args)
    finally:
        c.s.close()


def info(p, section="all"):
    out = {}
    for line in call(p, "INFO", section).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out


def wait(what, cond, limit=120):
    end = time.time() + limit
    while time.time() < end:
        try:
            if cond():
                return
        except (OSError, EOFError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what} (files in {ROOT})")


class Node:
    """A durable-master or redis-server process, restartable on the same port and dir."""

    def __init__(self, kind, name, args=(), persist=False):
        self.kind, self.name, self.args, self.persist = kind, name, list(args), persist
        self.port = port()
        self.dir = os.path.join(ROOT, name)
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "log")
        self.proc = None
        self.start()

    def start(self, extra=()):
        if self.kind == "durable":
            cmd = [DM, "--port", str(self.port), "--dir", os.path.join(self.dir, "data")]
            out = open(self.log, "a")
        else:
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", self.dir, "--save", "", "--repl-diskless-sync-delay", "0",
                   "--logfile", self.log]
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist \
                else ["--appendonly", "no"]
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd + self.args + list(extra), stdout=out, stderr=out)
        PROCS.append(self.proc)
        wait(f"{self.name} to start", lambda: call(self.port, "PING") == "PONG")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def logtext(self):
        with open(self.log, errors="replace") as f:
            return f.read()


def stock(name, master=None, args=()):
    a = list(args)
    if master:
        a = ["--replicaof", "127.0.0.1", str(master.port)] + a
    return Node("redis", name, a)


def under_test(kind, name, args=()):
    return Node(kind, name, args, persist=(kind == "redis"))


def load(p, n, tag):
    c = Conn(p)
    batch = []
    for i in range(0, n, 100):
        cmd = ["MSET"]
        for j in range(i, min(i + 100, n)):
            cmd += [f"{tag}:{j}", os.urandom(50).hex()]
        batch.append(cmd)
        if len(batch) == 50:
            assert all(r == "OK" for r in c.pipeline(batch)), "write refused"
            batch = []
    if batch:
        assert all(r == "OK" for r in c.pipeline(batch)), "write refused"
    c.s.close()


def in_sync(master, replica):
    r = info(replica, "replication")
    return (r.get("master_link_status") == "up"
            and r.get("master_port") == str(master.port)
            and r["master_repl_offset"] == info(master, "replication")["master_repl_offset"])


def net_in(n):
    return int(info(n, "stats")["total_net_repl_input_bytes"])


def net_out(n):
    return int(info(n, "stats")["total_net_repl_output_bytes"])


def kind_in(master_log, replica_port, since):
    """The last sync kind the master's log reports for the replica on replica_port."""
    tail = master_log[since:]
    last = None
    for line in tail.splitlines():
        if f":{replica_port}" not in line:
            continue
        if "Partial resynchronization request" in line and "accepted" in line:
            last = "partial"
        elif "Full resync requested" in line or "Synchronization with replica" in line:
            last = "full"
    return last or "?"


def sentinels(master):
    out = []
    for i in range(3):
        d = os.path.join(ROOT, f"{master.name}-s{i}")
        os.makedirs(d, exist_ok=True)
        p = port()
        conf = os.path.join(d, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {p}\nbind 127.0.0.1\ndir {d}\nlogfile {d}/log\n"
                    f"sentinel monitor m 127.0.0.1 {master.port} 2\n"
                    "sentinel down-after-milliseconds m 1000\n"
                    "sentinel failover-timeout m 3000\n")
        proc = subprocess.Popen(["redis-sentinel", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        PROCS.append(proc)
        out.append((p, proc))
    for p, _ in out:
        wait("sentinel", lambda p=p: call(p, "SENTINEL", "MASTER", "m")[
            call(p, "SENTINEL", "MASTER", "m").index("num-other-sentinels") + 1] == "2")
    return out


def master_port(sents):
    return int(call(sents[0][0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "m")[1])


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def restart_cost(x, r, what):
    """kill -9 and restart the master X; the sync kind its stock replica R gets, and the
    bytes R reads meanwhile."""
    before, mark = net_in(r), len(x.logtext())
    x.kill9()
    x.start()
    wait(what, lambda: in_sync(x, r))
    return kind_in(x.logtext(), r.port, mark), net_in(r) - before


def master_restart(kind):
    """X is the master; kill -9 and restart it; a stock replica reconnects."""
    x = under_test(kind, f"{kind}-restart-x")
    r = stock(f"{kind}-restart-r", x)
    load(x.port, KEYS, "a")
    wait("sync", lambda: in_sync(x, r))
    return restart_cost(x, r, "resync")


def failover_and_demotion(kind):
    """X is the master, killed and kept down; Sentinel promotes a stock replica; WRITES keys
    are written to it; X restarted is demoted by Sentinel and rejoins."""
    x = under_test(kind, f"{kind}-demote-x")
    r1 = stock(f"{kind}-demote-r1", x)
    r2 = stock(f"{kind}-demote-r2", x)
    load(x.port, KEYS, "a")
    wait("sync", lambda: in_sync(x, r1) and in_sync(x, r2))
    sents = sentinels(x)
    wait("sync", lambda: in_sync(x, r1) and in_sync(x, r2))
    x.kill9()
    wait("failover", lambda: master_port(sents) in (r1.port, r2.port))
    new = r1 if master_port(sents) == r1.port else r2
    other = r2 if new is r1 else r1
    wait("sibling", lambda: in_sync(new, other))
    load(new.port, WRITES, "b")
    before, mark = net_out(new), len(new.logtext())
    x.start()
    wait("demotion", lambda: in_sync(new, x), limit=180)
    cost = net_out(new) - before
    stop([p for _, p in sents])
    return kind_in(new.logtext(), x.port, mark), cost


def promote_then_kill(kind):
    """Stock master S, replicas X and stock R (replica-priority 0); S killed: Sentinel
    promotes X and R rejoins it; then X is killed -9 and restarted: R rejoins again."""
    s = stock(f"{kind}-promote-s", None)
    x = under_test(kind, f"{kind}-promote-x")
    call(x.port, "REPLICAOF", "127.0.0.1", s.port)
    r = stock(f"{kind}-promote-r", s, ["--replica-priority", "0"])
    load(s.port, KEYS, "a")
    wait("sync", lambda: in_sync(s, x) and in_sync(s, r))
    sents = sentinels(s)
    wait("sync", lambda: in_sync(s, x) and in_sync(s, r))
    before, mark = net_in(r), len(x.logtext())
    s.kill9()
    wait("promotion", lambda: master_port(sents) == x.port)
    wait("rejoin", lambda: in_sync(x, r))
    promoted = (kind_in(x.logtext(), r.port, mark), net_in(r) - before)
    load(x.port, WRITES, "b")
    wait("sync", lambda: in_sync(x, r))
    restarted = restart_cost(x, r, "rejoin after restart")
    stop([p for _, p in sents])
    return promoted, restarted


def replica_restart(kind):
    """Stock master M, replica X killed -9; WRITES keys written meanwhile; X restarted."""
    m = stock(f"{kind}-replica-m", None)
    x = under_test(kind, f"{kind}-replica-x", ["--replicaof", "127.0.0.1", str(m.port)])
    load(m.port, KEYS, "a")
    wait("sync", lambda: in_sync(m, x))
    x.kill9()
    load(m.port, WRITES, "b")
    before, mark = net_out(m), len(m.logtext())
    x.start()
    wait("rejoin", lambda: in_sync(m, x))
    return kind_in(m.logtext(), x.port, mark), net_out(m) - before


def failback_on_rdb(kind):
    """Stock A with stock replica B; SAVE; A killed -9; X started on A's dump.rdb alone; B
    follows X."""
    a = stock(f"{kind}-rdb-a", None, ["--repl-ping-replica-period", "3600"])
    b = stock(f"{kind}-rdb-b", a)
    load(a.port, KEYS, "a")
    wait("sync", lambda: in_sync(a, b))
    call(a.port, "SAVE")
    wait("sync", lambda: in_sync(a, b))
    a.kill9()
    d = os.path.join(ROOT, f"{kind}-rdb-x")
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    shutil.copy(os.path.join(a.dir, "dump.rdb"),
                os.path.join(d, "data" if kind == "durable" else "", "dump.rdb"))
    x = Node(kind, f"{kind}-rdb-x")  # redis: no AOF, so it loads dump.rdb
    before = net_in(b)
    call(b.port, "REPLICAOF", "127.0.0.1", x.port)
    wait("follow", lambda: in_sync(x, b))
    return kind_in(x.logtext(), b.port, 0), net_in(b) - before


def main():
    rows = []
    try:
        for name, f in [
            ("master kill -9 + restart (no failover)", master_restart),
            ("master killed, Sentinel fails over to a stock replica, old master restarted "
             "and demoted by Sentinel", failover_and_demotion),
            ("replica kill -9 + restart", replica_restart),
            ("fail-back: start on the stock master's dump.rdb, its replica follows",
             failback_on_rdb),
        ]:
            d, r = f("durable"), f("redis")
            rows.append((name, d, r))
        (dp, dk), (rp, rk) = promote_then_kill("durable"), promote_then_kill("redis")
        rows.append(("Sentinel promotes X (stock master killed): the sibling stock replica "
                     "rejoins X", dp, rp))
        rows.append(("then the promoted X is killed -9 and restarted", dk, rk))
    finally:
        stop(PROCS)
    print(f"{KEYS} keys of 100 bytes loaded, {WRITES} keys written during the fault\n")
    print("| fault | durable-master as X | redis-server (AOF everysec) as X |")
    print("|---|---|---|")
    for name, (dk, db), (rk, rb) in rows:
        print(f"| {name} | {dk}, {db:,} bytes | {rk}, {rb:,} bytes |")
    shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
