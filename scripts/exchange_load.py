#!/usr/bin/env python3
r"""Load test of the IEP04 exchange (stdlib only).

Measures, against a real sighthub:
  * messages/s accepted durably (the answer comes after the fsync) with de-duplication, for
    ~1 KB IntelMQ events, with 1 publisher and with N concurrent ones, as ND-JSON batches;
    bare events (de-duplicated by content hash) and envelopes (de-duplicated by uuid);
  * the same batches sent again: messages/s answered `duplicate`;
  * read throughput of one consumer paging through the whole log (envelopes and bare
    IntelMQ export, ND-JSON).

By default it starts its own server (release build, plain HTTP, a fresh temporary data
directory) so runs are comparable:

    cargo build --release
    scripts/exchange_load.py                       # defaults below
    scripts/exchange_load.py --messages 200000 --publishers 1,8 --batch 1000 --json out.json

With the default configuration every accepted IntelMQ event is also turned into sightings by
the bridge ([bridge], on by default), in the same process; to measure the exchange alone:

    printf '[bridge]\nenabled = false\n' > /tmp/exchange-only.toml
    scripts/exchange_load.py --config /tmp/exchange-only.toml

It can also target a running server: --url http://127.0.0.1:9999 --key KEY (it must accept the key
for publish and read; give it a fresh data directory, the script's events are unique per run).

The server's CPU time (user+system, from /proc) per phase is printed when the script started
it, to show how much of the machine the server used and how much the client did.
"""

import argparse
import base64
import http.client
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

# A Shadowserver-like IntelMQ event, about 1 KB once serialised (the `raw` field is padded).
TEMPLATE = {
    "feed.name": "Shadowserver Sinkhole-HTTP-Drone",
    "feed.provider": "Shadowserver",
    "feed.accuracy": 100.0,
    "feed.url": "https://example.org/feeds/sinkhole-http-drone",
    "time.observation": "2026-11-23T09:48:08+00:00",
    "time.source": "2026-11-23T09:48:08+00:00",
    "classification.taxonomy": "malicious-code",
    "classification.type": "infected-system",
    "classification.identifier": "mirai",
    "source.ip": "198.51.100.1",
    "source.network": "198.51.100.0/24",
    "source.asn": 64496,
    "source.as_name": "EXAMPLE-AS-1",
    "source.geolocation.cc": "AT",
    "source.geolocation.city": "Vienna",
    "source.reverse_dns": "host-198-51-100-1.example.net",
    "source.port": 1024,
    "protocol.transport": "tcp",
    "protocol.application": "http",
    "destination.ip": "203.0.113.250",
    "destination.port": 80,
    "destination.fqdn": "sinkhole.example.org",
    "malware.name": "mirai",
    "tlp": "AMBER",
    "extra.run": "",
    "extra.seq": 0,
    "comment": "load test event",
    "raw": "",
}


def make_event(run, n, size):
    ev = dict(TEMPLATE)
    ev["source.ip"] = "10.%d.%d.%d" % ((n >> 16) & 255, (n >> 8) & 255, n & 255)
    ev["extra.run"] = run
    ev["extra.seq"] = n
    line = '"%s","%s",1024,"mirai",64496,"AT",%d' % (ev["time.source"], ev["source.ip"], n)
    ev["raw"] = base64.b64encode(line.encode()).decode()
    text = json.dumps(ev, separators=(", ", ": "))
    pad = size - len(text)
    if pad > 0:
        ev["comment"] = "load test event " + "x" * max(0, pad - 16)
    return ev


def make_batches(run, start, count, batch, size, envelope):
    """ND-JSON bodies, `batch` messages each."""
    out = []
    lines = []
    for n in range(start, start + count):
        ev = make_event(run, n, size)
        if envelope:
            msg = {
                "format": "intelmq",
                "version": 1,
                "type": "event",
                "meta": {"uuid": str(uuid.uuid4()), "tags": ["load"]},
                "payload": ev,
            }
        else:
            msg = ev
        lines.append(json.dumps(msg, separators=(",", ":")))
        if len(lines) == batch:
            out.append(("\n".join(lines) + "\n").encode())
            lines = []
    if lines:
        out.append(("\n".join(lines) + "\n").encode())
    return out


class Target:
    def __init__(self, host, port, key):
        self.host, self.port, self.key = host, port, key

    def conn(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=300)
        c.connect()
        return c


def publish(target, bodies, publishers, expect):
    """Sends every body once, from `publishers` threads; returns (seconds, counts)."""
    q = queue.Queue()
    for b in bodies:
        q.put(b)
    counts = {"accepted": 0, "duplicate": 0, "errors": 0, "requests": 0}
    lock = threading.Lock()
    failures = []

    def worker():
        c = target.conn()
        while True:
            try:
                body = q.get_nowait()
            except queue.Empty:
                break
            c.request(
                "POST",
                "/iep04/messages?results=errors",
                body=body,
                headers={
                    "Authorization": target.key,
                    "Content-Type": "application/x-ndjson",
                },
            )
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                failures.append("%d %s" % (r.status, data[:300]))
                break
            a = json.loads(data)
            with lock:
                for k in ("accepted", "duplicate", "errors"):
                    counts[k] += a[k]
                counts["requests"] += 1
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(publishers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if failures:
        raise SystemExit("publish failed: %s" % failures[0])
    if counts[expect] != sum(b.count(b"\n") for b in bodies):
        raise SystemExit("expected every message %s, got %r" % (expect, counts))
    return dt, counts


def read_all(target, export, limit):
    """Pages through the whole log as ND-JSON; returns (seconds, messages, bytes)."""
    c = target.conn()
    cursor = ""
    n = 0
    size = 0
    t0 = time.perf_counter()
    while True:
        q = {"limit": str(limit), "format": "ndjson"}
        if cursor:
            q["after"] = cursor
        if export == "intelmq":
            q["export"] = "intelmq"
            q["with_type"] = "1"
        c.request("GET", "/iep04/messages?" + urllib.parse.urlencode(q),
                  headers={"Authorization": target.key})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit("read failed: %d %s" % (r.status, body[:300]))
        cursor = r.getheader("IEP04-Cursor")
        count = int(r.getheader("IEP04-Count"))
        n += count
        size += len(body)
        if r.getheader("IEP04-More") != "true" and count == 0:
            break
    dt = time.perf_counter() - t0
    c.close()
    return dt, n, size


def cpu_seconds(pid):
    if pid is None:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick
    except OSError:
        return None


def client_cpu():
    t = os.times()
    return t.user + t.system


def start_server(binary, data, config=None):
    key = secrets.token_hex(16)
    env = dict(os.environ)
    env["SIGHTHUB_ADMIN_KEY"] = key
    env["NO_COLOR"] = "1"
    env.setdefault("RUST_LOG", "warn,sighthub=info,sighthub_api=info")
    cmd = [binary, "serve", "--plain-http", "--listen", "127.0.0.1:0", "--data-dir", data]
    if config:
        cmd += ["--config", config]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    port = None
    while time.time() < deadline:
        line = proc.stderr.readline().decode("utf-8", "replace")
        if not line:
            break
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        raise SystemExit("the server did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, port, key


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/sighthub")
    ap.add_argument("--config", help="TOML configuration for the server the script starts "
                    "(e.g. one with [bridge] enabled = false to measure the exchange alone)")
    ap.add_argument("--url", help="use a running server instead (http://host:port)")
    ap.add_argument("--key", help="API key for --url")
    ap.add_argument("--messages", type=int, default=200_000, help="messages per publish phase")
    ap.add_argument("--batch", type=int, default=1000, help="messages per POST")
    ap.add_argument("--publishers", default="1,8", help="comma-separated publisher counts")
    ap.add_argument("--event-bytes", type=int, default=1024)
    ap.add_argument("--modes", default="bare,envelope",
                    help="bare (dedup by content hash) and/or envelope (dedup by uuid)")
    ap.add_argument("--read-limit", type=int, default=10_000)
    ap.add_argument("--json", help="write the figures to this file too")
    args = ap.parse_args()

    proc = None
    tmp = None
    if args.url:
        u = urllib.parse.urlparse(args.url)
        target = Target(u.hostname, u.port or 80, args.key or "")
    else:
        tmp = tempfile.mkdtemp(prefix="sighthub-load-")
        proc, port, key = start_server(args.binary, os.path.join(tmp, "data"),
                                       os.path.abspath(args.config) if args.config else None)
        target = Target("127.0.0.1", port, key)
    pid = proc.pid if proc else None
    run = secrets.token_hex(4)
    results = {"messages_per_phase": args.messages, "batch": args.batch,
               "event_bytes": args.event_bytes, "cpus": os.cpu_count(), "phases": []}
    start = 0
    try:
        for mode in args.modes.split(","):
            for p in [int(x) for x in args.publishers.split(",")]:
                bodies = make_batches(run, start, args.messages, args.batch,
                                      args.event_bytes, mode == "envelope")
                start += args.messages
                mb = sum(len(b) for b in bodies) / 1e6
                for phase, expect in (("accept", "accepted"), ("resend", "duplicate")):
                    c0, k0 = cpu_seconds(pid), client_cpu()
                    dt, counts = publish(target, bodies, p, expect)
                    c1, k1 = cpu_seconds(pid), client_cpu()
                    rate = args.messages / dt
                    row = {"phase": phase, "mode": mode, "publishers": p,
                           "messages": args.messages, "seconds": round(dt, 3),
                           "messages_per_s": round(rate), "mb_per_s": round(mb / dt, 1),
                           "requests": counts["requests"],
                           "client_cpu_s": round(k1 - k0, 2)}
                    if c0 is not None and c1 is not None:
                        row["server_cpu_s"] = round(c1 - c0, 2)
                        row["server_cpu_us_per_msg"] = round((c1 - c0) / args.messages * 1e6, 1)
                    results["phases"].append(row)
                    print("%-7s %-8s publishers=%d  %8d msgs  %6.2f s  %8.0f msg/s  %6.1f MB/s%s  client CPU %.0f%%" % (
                        phase, mode, p, args.messages, dt, rate, mb / dt,
                        "  server CPU %.1f us/msg (%.0f%%)" % (row["server_cpu_us_per_msg"], 100 * row["server_cpu_s"] / dt)
                        if "server_cpu_us_per_msg" in row else "", 100 * (k1 - k0) / dt), flush=True)
        for export in ("envelope", "intelmq"):
            c0 = cpu_seconds(pid)
            dt, n, size = read_all(target, export, args.read_limit)
            c1 = cpu_seconds(pid)
            row = {"phase": "read", "export": export, "messages": n, "seconds": round(dt, 3),
                   "messages_per_s": round(n / dt), "mb_per_s": round(size / 1e6 / dt, 1)}
            if c0 is not None and c1 is not None:
                row["server_cpu_us_per_msg"] = round((c1 - c0) / max(n, 1) * 1e6, 1)
            results["phases"].append(row)
            print("read    %-8s 1 consumer    %8d msgs  %6.2f s  %8.0f msg/s  %6.1f MB/s%s" % (
                export, n, dt, n / dt, size / 1e6 / dt,
                "  server CPU %.1f us/msg" % row["server_cpu_us_per_msg"]
                if "server_cpu_us_per_msg" in row else ""), flush=True)
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
