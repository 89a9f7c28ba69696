#!/usr/bin/env python3
"""Restart time of sighthub with N values stored: after a clean stop and after `kill -9`.

Loads N new values through `/wb` (batches of 10,000, each answered once durable), then for
each round: stops the server (SIGTERM, or SIGKILL right after the last acknowledged write),
starts it again on the same data directory and measures the time from the start until the
last acknowledged value reads back. Prints every round and the medians, as JSON with --json.

  cargo build --release && scripts/crash_restart.py --binary target/release/sighthub \\
      --values 1000000 --rounds 3

Stdlib only. The server listens on 127.0.0.1 (a free port) with plain HTTP and no keys, in a
temporary directory removed at the end.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ipv4(i):
    return "%d.%d.%d.%d" % ((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)


class Server:
    def __init__(self, binary, data, port):
        self.binary, self.data, self.port = binary, data, port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--plain-http", "--no-auth", "--listen",
             "127.0.0.1:%d" % self.port, "--data-dir", self.data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def request(self, path, body=None, timeout=60):
        req = urllib.request.Request(self.url(path), data=body)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()

    def wait_value(self, ns, value, deadline_s=120):
        """Seconds until `value` reads back, polling every millisecond."""
        t0 = time.monotonic()
        path = "/r/%s?val=%s&noshadow" % (ns, value)
        while time.monotonic() - t0 < deadline_s:
            try:
                status, _ = self.request(path, timeout=5)
                if status == 200:
                    return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.001)
        raise SystemExit("the value did not read back within %ds" % deadline_s)

    def stop(self, sig):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)


def load(server, ns, n, offset):
    for start in range(offset, offset + n, 10000):
        items = ['{"namespace":"%s","value":"%s"}' % (ns, ipv4(i))
                 for i in range(start, min(start + 10000, offset + n))]
        status, _ = server.request("/wb", ('{"items":[' + ",".join(items) + "]}").encode())
        if status != 200:
            raise SystemExit("/wb answered %d" % status)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/sighthub")
    p.add_argument("--values", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="sighthub-restart.")
    results = {"values": a.values, "clean_s": [], "crash_s": []}
    try:
        for mode in ("clean", "crash"):
            for r in range(a.rounds):
                data = os.path.join(tmp, "%s-%d" % (mode, r))
                srv = Server(a.binary, data, free_port())
                srv.start()
                # Wait for the listener, then load.
                t0 = time.monotonic()
                while True:
                    try:
                        srv.request("/health", timeout=2)
                        break
                    except (urllib.error.URLError, ConnectionError, OSError):
                        if time.monotonic() - t0 > 60:
                            raise SystemExit("the server did not start")
                        time.sleep(0.01)
                ns = "bench/restart"
                load(srv, ns, a.values, 0)
                last = ipv4(a.values - 1)
                srv.stop(signal.SIGTERM if mode == "clean" else signal.SIGKILL)
                srv.start()
                s = srv.wait_value(ns, last)
                results["%s_s" % mode].append(round(s, 4))
                print("%s restart, round %d: %.3f s" % (mode, r + 1, s), flush=True)
                srv.stop(signal.SIGTERM)
                shutil.rmtree(data, ignore_errors=True)
        for mode in ("clean", "crash"):
            results["%s_median_s" % mode] = statistics.median(results["%s_s" % mode])
        print("median: clean %.3f s, after kill -9 %.3f s (%d values)" % (
            results["clean_median_s"], results["crash_median_s"], a.values))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
