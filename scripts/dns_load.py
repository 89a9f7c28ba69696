#!/usr/bin/env python3
"""DNS queries/s answered by the [dns] front end (stdlib only).

Starts the release binary on a fresh data directory with a [dns] zone exposing one namespace,
writes --values IPv4 sightings there over HTTP (/wb), then runs --clients processes for
--seconds each; every client keeps --window A queries outstanding on its own UDP socket
(`<reversed octets>.ip.bl.load`, all values stored, so every answer is a store read) and
counts the answers. Reports answers/s over all clients, per run and the median of --repeat
runs. The per-client rate limit is lifted (every client is 127.0.0.1); the server's other
defaults apply.

    cargo build --release
    scripts/dns_load.py [--values 10000] [--clients 4] [--window 32] [--seconds 5] [--repeat 3]
"""

import argparse
import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time

KEY = "dns-load-admin-key"
HTTP = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
DNS = re.compile(r"dns listening on udp\+tcp 127\.0\.0\.1:(\d+)")
ZONE = "bl.load"


def start(binary):
    data = tempfile.mkdtemp(prefix="sighthub-dns-load-")
    cfg = os.path.join(data, "config.toml")
    with open(cfg, "w") as f:
        f.write(
            '[dns]\nlisten = "127.0.0.1:0"\nzone = "%s"\nrate_limit_per_second = 4294967295\n'
            '[dns.zones]\nip = "load/ipv4"\n' % ZONE
        )
    env = dict(os.environ, SIGHTHUB_ADMIN_KEY=KEY, NO_COLOR="1", RUST_LOG="warn,sighthub_node=info,sighthub=info")
    proc = subprocess.Popen([binary, "serve", "--plain-http", "--listen", "127.0.0.1:0",
                             "--data-dir", os.path.join(data, "d"), "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    http_port = dns_port = None
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace")
        m = DNS.search(line)
        if m:
            dns_port = int(m.group(1))
        m = HTTP.search(line)
        if m:
            http_port = int(m.group(1))
        if http_port and dns_port:
            return proc, data, http_port, dns_port
    raise SystemExit("server did not start")


def write_values(port, values):
    for i in range(0, len(values), 1000):
        items = [{"namespace": "load/ipv4", "value": v} for v in values[i:i + 1000]]
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        c.request("POST", "/wb", body=json.dumps({"items": items}), headers={"Authorization": KEY, "Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"/wb: {r.status} {body[:200]!r}")


def query(qid, value):
    a, b, c, d = value.split(".")
    name = b"".join(bytes([len(x)]) + x.encode() for x in [d, c, b, a, "ip", *ZONE.split(".")]) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)


def client(args):
    port, values, window, seconds, seed = args
    rnd = random.Random(seed)
    packets = [query(i & 0xFFFF, rnd.choice(values)) for i in range(4096)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.settimeout(0.5)
    answered = lost = sent = 0
    for _ in range(window):
        s.send(packets[sent % 4096])
        sent += 1
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            reply = s.recv(4096)
            if reply[3] & 0x0F == 0 and struct.unpack(">H", reply[6:8])[0] == 1:
                answered += 1
        except socket.timeout:
            lost += 1
            for _ in range(window):  # refill the window
                s.send(packets[sent % 4096])
                sent += 1
            continue
        s.send(packets[sent % 4096])
        sent += 1
    return answered, lost


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/sighthub")
    ap.add_argument("--values", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    proc, data, http_port, dns_port = start(args.binary)
    try:
        values = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(args.values)]
        write_values(http_port, values)
        rates = []
        with multiprocessing.Pool(args.clients) as pool:
            for run in range(args.repeat):
                t0 = time.monotonic()
                out = pool.map(client, [(dns_port, values, args.window, args.seconds, run * 100 + c)
                                        for c in range(args.clients)])
                elapsed = time.monotonic() - t0
                answered = sum(a for a, _ in out)
                lost = sum(lost for _, lost in out)
                rate = answered / elapsed
                rates.append(rate)
                print(f"run {run + 1}: {answered} answers in {elapsed:.2f} s = {rate:,.0f} queries/s "
                      f"({lost} windows lost to timeouts)")
        print(f"median of {args.repeat}: {statistics.median(rates):,.0f} queries/s "
              f"({args.clients} clients x {args.window} outstanding, {args.values} values, UDP, A)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
