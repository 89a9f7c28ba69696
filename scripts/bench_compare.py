#!/usr/bin/env python3
"""End-to-end comparison of two servers speaking the SightingDB API, as a Markdown table.

Runs the shared load-test harness (sdb_bench.py) against server A and server B, one after the
other on the same machine, keeps the raw JSON of both runs, and writes a table of medians and
A/B ratios (plus server CPU per operation, the steadier figure on a small machine).

  # compare two result files already produced by sdb_bench.py --out
  scripts/bench_compare.py table A.json B.json [--md out.md]

  # run the harness for both, then compare (managed mode: each command execs its server)
  scripts/bench_compare.py run --harness ../shared/bench/sdb_bench.py \\
      --a-label sighthub --a-url http://127.0.0.1:9997 --a-cmd "target/release/sighthub serve ..." \\
      --a-fresh-dir /tmp/sh-data \\
      --b-label sightingdb --b-url http://127.0.0.1:9998 --b-cmd "sightingdb -c plain.toml -l quiet.yml" \\
      --scenarios w,r,wb10k,rb10k,mem1 --out-dir bench/results --md bench/results/latest.md \\
      [-- extra harness options such as --repeat 3 --duration 10]

  # each server's floor: server CPU per request answering a constant (sighthub /health,
  # SightingDB /i) under the same wrk load; the table then shows CPU above the floor
  scripts/bench_compare.py run ... --a-floor-path /health --b-floor-path /i

The floor is what no design beats one request per round trip (loopback TCP, syscalls,
wake-ups, HTTP parsing); the part of a request's CPU above it is what the store and the
handlers cost, so the above-floor ratio is the one to optimise (issue 13).

Stdlib (plus the `wrk` binary for the floor).
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys

# Metrics worth a row, in order; (key, label, higher_is_better).
METRICS = [
    ("ops_per_s", "requests/s", True),
    ("items_per_s", "items/s", True),
    ("lat_p50_ms", "p50 latency ms", False),
    ("lat_p99_ms", "p99 latency ms", False),
    ("bytes_per_value", "RSS bytes/value", False),
    ("rss_mib", "RSS MiB", False),
    ("load_items_per_s", "load items/s", True),
    ("restart_ready_s", "restart until a value reads back, s", False),
    ("shutdown_save_s", "shutdown s", False),
    ("disk_mib", "disk MiB", False),
]


def load(path):
    with open(path) as f:
        return json.load(f)


def cpu_per_op(run_summary):
    """Median server CPU microseconds per request or item, if the scenario has both."""
    cpu = run_summary.get("server_cpu_s", {}).get("median")
    n = (run_summary.get("requests") or run_summary.get("items") or {}).get("median")
    if cpu is None or not n:
        return None
    return cpu / n * 1e6


def fmt(x):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def cpu_seconds(pid):
    """utime+stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf(os.sysconf_names["SC_CLK_TCK"])
    return (int(fields[11]) + int(fields[12])) / ticks


def wait_up(url, path, timeout=60):
    import time
    import urllib.request
    import ssl
    ctx = ssl._create_unverified_context()
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url + path, timeout=2, context=ctx).read()
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url}{path} did not answer within {timeout} s")


def measure_floor(cmd, url, path, fresh, duration, repeat, threads=2, connections=64):
    """Median server CPU µs per request answering `path` under `wrk -t2 -c64`, a fresh server
    per run (started by `cmd`, stopped after)."""
    import shutil
    import signal
    import statistics
    import time
    runs = []
    for _ in range(repeat):
        if fresh:
            shutil.rmtree(fresh, ignore_errors=True)
        proc = subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(url, path)
            before = cpu_seconds(proc.pid)
            out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
                                  url + path], capture_output=True, text=True, check=True).stdout
            after = cpu_seconds(proc.pid)
            requests = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
            runs.append((after - before) / max(requests, 1) * 1e6)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(0.5)
    return {"cpu_us_per_request": {"median": statistics.median(runs), "runs": runs},
            "path": path, "wrk": f"-t{threads} -c{connections} -d{duration}s"}


def table(a, b):
    la, lb = a.get("label", "A"), b.get("label", "B")
    rows = [f"| scenario | metric | {la} | {lb} | {la}/{lb} |", "|---|---|---:|---:|---:|"]
    sa, sb = a.get("summary", {}), b.get("summary", {})
    for scen in [s for s in sa if s in sb]:
        for key, label, _ in METRICS:
            ma = sa[scen].get(key, {}).get("median")
            mb = sb[scen].get(key, {}).get("median")
            if ma is None and mb is None:
                continue
            ratio = (ma / mb) if (ma is not None and mb) else None
            rows.append(f"| {scen} | {label} | {fmt(ma)} | {fmt(mb)} | {fmt(ratio)} |")
        ca, cb = cpu_per_op(sa[scen]), cpu_per_op(sb[scen])
        if ca is not None or cb is not None:
            ratio = (ca / cb) if (ca is not None and cb) else None
            rows.append(f"| {scen} | server CPU µs/op | {fmt(ca)} | {fmt(cb)} | {fmt(ratio)} |")
            fa = a.get("floor", {}).get("cpu_us_per_request", {}).get("median")
            fb = b.get("floor", {}).get("cpu_us_per_request", {}).get("median")
            if scen in ("w", "r", "r_shadow", "rs") and None not in (ca, cb, fa, fb):
                xa, xb = ca - fa, cb - fb
                ratio = (xa / xb) if xb > 0 else None
                rows.append(f"| {scen} | server CPU µs/op above the floor | {fmt(xa)} | {fmt(xb)} | {fmt(ratio)} |")
    fa = a.get("floor", {}).get("cpu_us_per_request", {}).get("median")
    fb = b.get("floor", {}).get("cpu_us_per_request", {}).get("median")
    if fa is not None or fb is not None:
        ratio = (fa / fb) if (fa is not None and fb) else None
        pa = a.get("floor", {}).get("path", "?")
        pb = b.get("floor", {}).get("path", "?")
        rows.append(f"| floor ({pa} / {pb}) | server CPU µs/request | {fmt(fa)} | {fmt(fb)} | {fmt(ratio)} |")
    reps = a.get("settings", {}).get("repeat", "?")
    head = (
        f"Medians of {reps} runs per scenario (the persistence scenario's first save runs once); "
        f"{la} and {lb} measured one after the other on the same machine "
        f"({a.get('machine', {}).get('nproc', '?')} cores). Ratios are {la}/{lb}.\n\n"
    )
    return head + "\n".join(rows) + "\n"


def run_one(harness, label, url, cmd, fresh, persist_cmd, persist_dir, scenarios, out, extra):
    argv = [sys.executable, harness, "--label", label, "--base-url", url, "--server-cmd", cmd,
            "--scenarios", scenarios, "--out", out] + extra
    if fresh:
        argv += ["--fresh-dir", fresh]
    if persist_cmd and persist_dir:
        argv += ["--persist-server-cmd", persist_cmd, "--persist-dbdir", persist_dir]
    print("+", " ".join(shlex.quote(x) for x in argv), flush=True)
    subprocess.run(argv, check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("a")
    t.add_argument("b")
    t.add_argument("--md")
    r = sub.add_parser("run")
    r.add_argument("--harness", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench", "sdb_bench.py"))
    for side in ("a", "b"):
        r.add_argument(f"--{side}-label", required=True)
        r.add_argument(f"--{side}-url", required=True)
        r.add_argument(f"--{side}-cmd", required=True)
        r.add_argument(f"--{side}-fresh-dir")
        r.add_argument(f"--{side}-persist-cmd", help="server command using --{side}-persist-dir (persist scenario)")
        r.add_argument(f"--{side}-persist-dir")
        r.add_argument(f"--{side}-floor-path", help="a constant endpoint (/health, /i): measure the floor")
    r.add_argument("--scenarios", default="w,r,wb10k,rb10k")
    r.add_argument("--out-dir", default="bench/results")
    r.add_argument("--md")
    r.add_argument("--floor-duration", type=int, default=10)
    r.add_argument("--floor-repeat", type=int, default=3)
    r.add_argument("extra", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.cmd == "table":
        md = table(load(args.a), load(args.b))
    else:
        os.makedirs(args.out_dir, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        extra = [x for x in args.extra if x != "--"]
        outs = []
        for side in ("a", "b"):
            label = getattr(args, f"{side}_label")
            out = os.path.join(args.out_dir, f"{stamp}-{label}.json")
            run_one(args.harness, label, getattr(args, f"{side}_url"), getattr(args, f"{side}_cmd"),
                    getattr(args, f"{side}_fresh_dir"), getattr(args, f"{side}_persist_cmd"),
                    getattr(args, f"{side}_persist_dir"), args.scenarios, out, extra)
            floor_path = getattr(args, f"{side}_floor_path")
            if floor_path:
                floor = measure_floor(getattr(args, f"{side}_cmd"), getattr(args, f"{side}_url"),
                                      floor_path, getattr(args, f"{side}_fresh_dir"),
                                      args.floor_duration, args.floor_repeat)
                data = load(out)
                data["floor"] = floor
                with open(out, "w") as f:
                    json.dump(data, f, indent=1)
            outs.append(out)
        md = table(load(outs[0]), load(outs[1]))
    if args.md:
        with open(args.md, "w") as f:
            f.write(md)
    print(md)


if __name__ == "__main__":
    main()
