#!/usr/bin/env python3
"""Events/s through ingest + sightings, against ingest alone, in the same run (stdlib only).

Starts the release binary twice on fresh data directories — once with `[bridge] enabled =
false` (ingest alone: the exchange accepts and fsyncs), once with the bridge on (ingest, then
the feeder records each event's observables as sightings) — publishes the same ~1 KB IntelMQ
events (one distinct source.ip each, plus the shared destination) as ND-JSON batches from one
publisher, and reports:

  * ingest: events / seconds until the last batch was answered (accepted = durable);
  * ingest + sightings: events / seconds until the last event's sighting reads back.

    cargo build --release
    scripts/bridge_load.py --events 100000 --batch 1000 [--repeat 3] [--json out.json]
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exchange_load import make_batches  # noqa: E402  (same 1 KB events as the exchange load)

KEY = "bridge-load-admin-key"
ORG = "0b7d4e0a-6c2f-4f3e-9a51-3c8e2d1f0a7b"
LISTEN = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def start(binary, bridge):
    data = tempfile.mkdtemp(prefix="sighthub-bridge-load-")
    cfg = os.path.join(data, "config.toml")
    with open(cfg, "w") as f:
        f.write('[exchange]\norg = "%s"\n\n[bridge]\nenabled = %s\n' % (ORG, "true" if bridge else "false"))
    env = dict(os.environ, SIGHTHUB_ADMIN_KEY=KEY, NO_COLOR="1", RUST_LOG="warn,sighthub=info")
    proc = subprocess.Popen([binary, "serve", "--plain-http", "--listen", "127.0.0.1:0",
                             "--data-dir", os.path.join(data, "d"), "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    for raw in proc.stderr:
        m = LISTEN.search(raw.decode("utf-8", "replace"))
        if m:
            return proc, data, int(m.group(1))
    raise SystemExit("server did not start")


def request(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": KEY}
    if body is not None:
        headers["Content-Type"] = "application/x-ndjson"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out


def run(binary, bridge, bodies, events, last_ip):
    proc, data, port = start(binary, bridge)
    try:
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for b in bodies:
            conn.request("POST", "/iep04/messages", body=b,
                         headers={"Authorization": KEY, "Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            answer = r.read()
            if r.status != 200 or b'"accepted"' not in answer:
                raise SystemExit("publish failed: %d %s" % (r.status, answer[:300]))
        t_ingest = time.perf_counter() - t0
        t_total = None
        if bridge:
            path = "/r/iep04/%s/Shadowserver%%20Sinkhole-HTTP-Drone/source.ip?val=%s&noshadow" % (ORG, last_ip)
            while True:
                status, _ = request(port, "GET", path)
                if status == 200:
                    t_total = time.perf_counter() - t0
                    break
                if time.perf_counter() - t0 > 600:
                    raise SystemExit("the bridge did not catch up in 600 s")
                time.sleep(0.01)
        return events / t_ingest, (events / t_total if t_total else None)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/sighthub")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    n = a.events
    last_ip = "10.%d.%d.%d" % (((n - 1) >> 16) & 255, ((n - 1) >> 8) & 255, (n - 1) & 255)
    alone, with_bridge, total = [], [], []
    for rep in range(a.repeat):
        bodies = make_batches("bl%d" % rep, 0, n, a.batch, 1024, envelope=False)
        ing, _ = run(a.binary, False, bodies, n, last_ip)
        alone.append(ing)
        ing2, tot = run(a.binary, True, bodies, n, last_ip)
        with_bridge.append(ing2)
        total.append(tot)
        print("rep %d: ingest alone %.0f ev/s; with bridge: ingest %.0f ev/s, ingest+sightings %.0f ev/s"
              % (rep + 1, ing, ing2, tot), flush=True)
    med = {"ingest_alone": statistics.median(alone), "ingest_with_bridge": statistics.median(with_bridge),
           "ingest_plus_sightings": statistics.median(total)}
    print("medians of %d: ingest alone %.0f ev/s; ingest+sightings %.0f ev/s (ratio %.2f)"
          % (a.repeat, med["ingest_alone"], med["ingest_plus_sightings"],
             med["ingest_plus_sightings"] / med["ingest_alone"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"events": n, "batch": a.batch, "runs": {"alone": alone, "with_bridge": with_bridge,
                       "total": total}, "medians": med}, f, indent=1)


if __name__ == "__main__":
    main()
