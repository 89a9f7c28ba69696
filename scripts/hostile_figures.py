#!/usr/bin/env python3
r"""What each hostile input of docs/SECURITY.md does to a real sighthub (stdlib only).

For every attack a fresh server is started (plain HTTP, a temporary data directory, the
configuration below), its resident memory is sampled from /proc while the attack runs, and an
unrelated client asks `GET /health` every 100 ms, and another writes a sighting (`/w`) every
100 ms, both from another loopback address (127.0.0.2, so that a per-address connection limit
aimed at the attacker does not hit them). Printed per attack: the server's peak memory growth
(VmHWM after − VmHWM before, MiB), the slowest `/health` and `/w` answers during the attack
(or "unanswered n/m" when some took longer than 10 s or failed), and what the attacker got.

    cargo build --release
    scripts/hostile_figures.py                         # target/release/sighthub
    scripts/hostile_figures.py --bin path/to/sighthub --only rb_unauth,wb_tags --json out.json

Every attack is bounded in time (at most ~40 s each) and targets only 127.0.0.1. The
configuration sets `max_connections = 64` so that the connection attack needs few sockets;
everything else is at its default. With the default per-address limit (256) above 64, one
address can still take every slot of such a small server; to keep the default ratio of the two
limits (4096 / 256), pass `--top-config 'max_connections_per_address = 4'`.
"""

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ADMIN = "figures-admin-key-0123456789"
ORG_A = "6a0c2a64-5b54-4a8f-9f6e-0d6c8b1a2f01"
ORG_B = "0d1b5f0e-7c1d-4e55-8f3a-9b2c6d4e8f10"
KEY_A = "org-a-publisher-key"
KEY_B = "org-b-publisher-key"
SCOPED = "scoped-writer-key"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, extra=""):
        self.dir = tempfile.mkdtemp(prefix="sighthub-figures-")
        self.tcp_port = free_port()
        cfg = os.path.join(self.dir, "sighthub.toml")
        with open(cfg, "w") as f:
            f.write(f"""plain_http = true
max_connections = 64
{extra}
[acl]
"{SCOPED}" = "rw:feeds"
[exchange]
org = "{ORG_A}"
[exchange.keys."{KEY_A}"]
org = "{ORG_A}"
publish = ["*"]
read = ["*"]
[exchange.keys."{KEY_B}"]
org = "{ORG_B}"
publish = ["*"]
read = ["*"]
[intelmq]
enabled = true
[[intelmq.tcp_in]]
name = "in"
listen = "127.0.0.1:{self.tcp_port}"
org = "{ORG_B}"
""")
        env = dict(os.environ, SIGHTHUB_ADMIN_KEY=ADMIN, RUST_LOG="info")
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", cfg, "--data-dir", os.path.join(self.dir, "data"),
             "--listen", "127.0.0.1:0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            m = re.search(r"listening on https?://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("server did not start")
        threading.Thread(target=self._drain, daemon=True).start()
        # wait for the TCP listener too
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    def _drain(self):
        for line in self.proc.stderr:
            self.log.write(line)

    def hwm_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def panics(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().count("panicked")

    def stop(self):
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def request(port, method, path, body=None, headers=None, timeout=60, source="127.0.0.1"):
    """One request on a fresh connection; returns (status, body bytes) or (None, error)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                   source_address=(source, 0))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    except Exception as e:  # the attack's own outcome, reported as such
        return None, str(e).encode()
    finally:
        c.close()


class Monitor:
    """Asks `path` every 100 ms from 127.0.0.2 and records the slowest answer."""

    def __init__(self, port, path="/health", headers=None):
        self.port, self.worst, self.unanswered, self.n = port, 0.0, 0, 0
        self.path, self.headers = path, headers
        self.stop_flag = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_flag.is_set():
            t0 = time.monotonic()
            st, _ = request(self.port, "GET", self.path, headers=self.headers, timeout=10,
                            source="127.0.0.2")
            dt = time.monotonic() - t0
            self.n += 1
            if st != 200:
                self.unanswered += 1
            self.worst = max(self.worst, dt)
            self.stop_flag.wait(0.1)

    def finish(self):
        self.stop_flag.set()
        self.t.join(timeout=15)
        if self.unanswered:
            return f"unanswered {self.unanswered}/{self.n}"
        return f"{self.worst * 1000:.0f} ms max"


def admin(extra=None):
    h = {"Authorization": ADMIN, "Content-Type": "application/json"}
    h.update(extra or {})
    return h


# --- the attacks: each returns a short description of what the attacker got -------------------

def rb_unauth(srv):
    """4 parallel 60 MB POST /rb bodies without a key."""
    body = b'{"items":[' + b'{"namespace":"a","value":"' + b"x" * (60 * 2**20) + b'"}]}'
    out = []

    def one():
        st, resp = request(srv.port, "POST", "/rb", body=body,
                           headers={"Content-Type": "application/json"})
        # None: the server answered and closed before taking the whole body (the client saw
        # the connection reset while still sending).
        out.append(st if st is not None else "closed while sending")
    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return f"statuses {sorted(out, key=str)}"


def wb_tags(srv):
    """A scoped writer's /wb item with 100,000 tags."""
    tags = ",".join(f"t{i}" for i in range(100_000))
    body = json.dumps({"items": [{"namespace": "feeds/x", "value": "v", "tags": tags}]})
    t0 = time.monotonic()
    st, _ = request(srv.port, "POST", "/wb", body=body,
                    headers={"Authorization": SCOPED, "Content-Type": "application/json"},
                    timeout=40)
    return f"status {st} after {time.monotonic() - t0:.1f} s"


def trickle(srv):
    """80 connections that send headers, then one body byte per second for 20 s."""
    socks = []
    for _ in range(80):
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
            s.sendall(b"POST /wb HTTP/1.1\r\nHost: x\r\nAuthorization: " + SCOPED.encode() +
                      b"\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
            socks.append(s)
        except OSError:
            pass
    closed = 0
    for _ in range(20):
        for s in list(socks):
            try:
                s.sendall(b" ")
            except OSError:
                socks.remove(s)
                closed += 1
        time.sleep(1)
    for s in socks:
        s.close()
    return f"{closed} of 80 connections closed by the server within 20 s"


def iep04_items(srv):
    """A 4 MB body of 2 million tiny invalid items."""
    body = b"[" + b",".join([b"0"] * 2_000_000) + b"]"
    st, resp = request(srv.port, "POST", "/iep04/messages", body=body, headers=admin(),
                       timeout=60)
    return f"status {st}, answer {len(resp) / 2**20:.1f} MiB"


def iep04_page(srv):
    """100 messages of ~1 MB each, then one read page."""
    pad = "x" * (1000 * 1000)
    for i in range(100):
        ev = {"source.ip": "192.0.2.1", "raw": "eA==", "comment": pad, "extra.n": i}
        st, _ = request(srv.port, "POST", "/iep04/messages", body=json.dumps(ev),
                        headers=admin())
        if st != 200:
            return f"publish {i} answered {st}"
    base = srv.hwm_kib()
    st, resp = request(srv.port, "GET", "/iep04/messages?limit=1000", headers=admin())
    return f"status {st}, page {len(resp) / 2**20:.1f} MiB (HWM before the read {base // 1024} MiB)"


def tcp_silent(srv):
    """70 silent sockets on the IntelMQ TCP listener, then one real frame."""
    silent = []
    for _ in range(70):
        try:
            silent.append(socket.create_connection(("127.0.0.1", srv.tcp_port), timeout=2))
        except OSError:
            pass
    time.sleep(1)
    ev = json.dumps({"source.ip": "192.0.2.9", "raw": "eA==",
                     "extra.n": secrets.token_hex(4)}).encode()
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", srv.tcp_port), timeout=5)
        s.settimeout(20)
        s.sendall(struct.pack(">I", len(ev)) + ev)
        got = s.recv(16)
        s.close()
        res = f"frame answered {got!r} after {time.monotonic() - t0:.1f} s"
    except OSError as e:
        res = f"frame not answered ({e}) after {time.monotonic() - t0:.1f} s"
    for s in silent:
        s.close()
    return res


def oversize(srv):
    """/wb with a 70,000-byte value; an event with a 70,000-byte source.url, then a normal one."""
    big = "a" * 70_000
    st, _ = request(srv.port, "POST", "/wb", body=json.dumps(
        {"items": [{"namespace": "feeds/x", "value": big}]}), headers=admin())
    ev1 = {"source.url": "http://x/" + big, "raw": "eA==", "feed.name": "f"}
    ev2 = {"source.ip": "198.51.100.77", "raw": "eA==", "feed.name": "f"}
    s1, _ = request(srv.port, "POST", "/iep04/messages", body=json.dumps(ev1), headers=admin())
    s2, _ = request(srv.port, "POST", "/iep04/messages", body=json.dumps(ev2), headers=admin())
    seen = False
    for _ in range(50):
        st2, resp = request(srv.port, "GET", "/_api/who?val=198.51.100.77", headers=admin())
        if st2 == 200 and json.loads(resp).get("consensus", 0) > 0:
            seen = True
            break
        time.sleep(0.1)
    return (f"/wb {st}; events {s1}, {s2}; later event became a sighting: {seen}; "
            f"panics in the log: {srv.panics()}")


def cross_org(srv):
    """Organisation B withdraws organisation A's message with a foreign link."""
    a_uuid = str(uuid.uuid4())
    ev = {"format": "intelmq", "version": 1, "type": "event",
          "meta": {"uuid": a_uuid, "uuid_org": ORG_A},
          "payload": {"source.ip": "203.0.113.99", "raw": "eA==", "feed.name": "f"}}
    request(srv.port, "POST", "/iep04/messages", body=json.dumps(ev),
            headers={"Authorization": KEY_A, "Content-Type": "application/json"})
    time.sleep(1)
    wd = {"format": "intelmq", "version": 1, "type": "event",
          "meta": {"uuid": str(uuid.uuid4()), "uuid_org": ORG_B,
                   "intelmq:links": [{"left_side": str(uuid.uuid4()), "type": "withdraws",
                                      "right_side": a_uuid}]},
          "payload": {"source.ip": "192.0.2.200", "raw": "eA=="}}
    st, _ = request(srv.port, "POST", "/iep04/messages", body=json.dumps(wd),
                    headers={"Authorization": KEY_B, "Content-Type": "application/json"})
    time.sleep(1.5)
    _, resp = request(srv.port, "GET", "/_api/who?val=203.0.113.99", headers=admin())
    cons = json.loads(resp).get("consensus") if resp.startswith(b"{") else resp[:60]
    return f"B's withdrawal answered {st}; A's value consensus afterwards: {cons}"


def who_unknown(srv):
    """/_api/who with an unknown key."""
    st, resp = request(srv.port, "GET", "/_api/who?val=x",
                       headers={"Authorization": "not-a-key"})
    return f"status {st}"


ATTACKS = {
    "rb_unauth": rb_unauth,
    "wb_tags": wb_tags,
    "trickle": trickle,
    "iep04_items": iep04_items,
    "iep04_page": iep04_page,
    "tcp_silent": tcp_silent,
    "oversize": oversize,
    "cross_org": cross_org,
    "who_unknown": who_unknown,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/sighthub")
    ap.add_argument("--only", default="", help="comma-separated attack names")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--top-config", default="",
                    help="extra top-level configuration lines (e.g. "
                         "'max_connections_per_address = 16')")
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n] or list(ATTACKS)
    rows = []
    for name in names:
        srv = Server(a.bin, a.top_config.replace("\\n", "\n"))
        try:
            time.sleep(0.5)
            before = srv.hwm_kib()
            mon = Monitor(srv.port)
            writer = Monitor(srv.port, "/w/unrelated/ns?val=192.0.2.1", {"Authorization": ADMIN})
            time.sleep(0.3)
            t0 = time.monotonic()
            what = ATTACKS[name](srv)
            took = time.monotonic() - t0
            health = mon.finish()
            write = writer.finish()
            alive = srv.proc.poll() is None
            peak = (srv.hwm_kib() - before) / 1024 if alive else float("nan")
            row = {"attack": name, "peak_growth_mib": round(peak, 1), "health": health,
                   "unrelated_write": write,
                   "seconds": round(took, 1), "outcome": what, "server_alive": alive}
        finally:
            srv.stop()
        rows.append(row)
        print(f"{name:12} peak +{row['peak_growth_mib']:>7} MiB  /health {health:>18}  "
              f"/w {write:>18}  "
              f"{row['seconds']:>5} s  {what}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
