#!/usr/bin/env python3
r"""Accept rate of the exchange on one JetStream stream: one front end against two (stdlib only).

Each round, on a fresh stream of the JetStream cluster named by SIGHTHUB_TEST_NATS
(scripts/clusters start DIR; set -a; . DIR/env; set +a):
  * one front end, 8 publishers, MESSAGES envelopes (scripts/exchange_load.py);
  * two front ends on one new stream, 4 publishers each, MESSAGES/2 envelopes each, at the same
    time: the combined rate is all messages over the longer of the two accept phases.
The bridge is off (the exchange alone). Prints each round and the medians.

    cargo build --release
    scripts/exchange_fronts.py --rounds 3 --messages 20000
"""

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "exchange-fronts-" + secrets.token_hex(8)


def config(tmp, stream):
    servers = [s for s in os.environ["SIGHTHUB_TEST_NATS"].split(",") if s]
    path = os.path.join(tmp, stream + ".toml")
    with open(path, "w") as f:
        f.write("[bridge]\nenabled = false\n[exchange]\nbackend = \"nats\"\n"
                "[exchange.nats]\nservers = [%s]\nstream = \"%s\"\n"
                % (", ".join(json.dumps(s) for s in servers), stream))
    return path


def serve(binary, data, cfg):
    env = dict(os.environ, SIGHTHUB_ADMIN_KEY=KEY, RUST_LOG="info")
    proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
                             "--plain-http", "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, url
    raise SystemExit("a front end did not start")


def load(args, extra, out):
    cmd = [sys.executable, os.path.join(HERE, "exchange_load.py"), "--batch", "1000",
           "--modes", "envelope", "--read-limit", "10000", "--json", out] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return next(p for p in json.load(f)["phases"] if p["phase"] == "accept")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/sighthub")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args()
    if "SIGHTHUB_TEST_NATS" not in os.environ:
        raise SystemExit("SIGHTHUB_TEST_NATS is not set: start scripts/clusters and source its env")
    one, two = [], []
    with tempfile.TemporaryDirectory(prefix="sighthub-fronts-") as tmp:
        for r in range(args.rounds):
            stream = "fronts%s" % secrets.token_hex(6)
            a = load(args, ["--binary", args.binary, "--config", config(tmp, stream),
                            "--messages", str(args.messages), "--publishers", "8"],
                     os.path.join(tmp, "one.json"))
            one.append(args.messages / a["seconds"])
            cfg = config(tmp, "fronts%s" % secrets.token_hex(6))
            procs = [serve(args.binary, os.path.join(tmp, "fe%d-%d" % (r, i)), cfg) for i in range(2)]
            results = [None, None]

            def run(i):
                results[i] = load(args, ["--url", procs[i][1], "--key", KEY,
                                         "--messages", str(args.messages // 2), "--publishers", "4"],
                                  os.path.join(tmp, "two%d.json" % i))
            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for p, _ in procs:
                p.terminate()
                p.wait()
            combined = 2 * (args.messages // 2) / max(x["seconds"] for x in results)
            two.append(combined)
            print("round %d: one front end %.0f msg/s; two front ends %.0f msg/s together (%s)"
                  % (r + 1, one[-1], combined,
                     ", ".join("%d msg/s" % x["messages_per_s"] for x in results)), flush=True)
    m1, m2 = statistics.median(one), statistics.median(two)
    print("medians of %d: one front end %.0f msg/s, two front ends %.0f msg/s (x%.2f)"
          % (args.rounds, m1, m2, m2 / m1))


if __name__ == "__main__":
    main()
