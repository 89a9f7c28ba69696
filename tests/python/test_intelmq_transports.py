"""sighthub's IntelMQ transports against the real IntelMQ 3.5 bots, with `kill -9` of sighthub
in the middle of every transfer: nothing that was acknowledged is lost.

1. IntelMQ's TCP output bot → sighthub's `[[intelmq.tcp_in]]` listener → exchange log.
2. sighthub's `[[intelmq.out]]` → IntelMQ's TCP collector and API collector → IntelMQ's JSON
   parser bot → events on IntelMQ's Redis pipeline.
3. IntelMQ's JSON parser bot writes into a Redis queue that sighthub's `[[intelmq.redis_in]]`
   reads; sighthub's `[[intelmq.redis_out]]` writes into the queue of IntelMQ's file output.

Needs what tests/python/test_intelmq_restapi.py needs, plus `tornado` in the IntelMQ venv
(`scripts/test setup` installs it).
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ANSI, binary_path
from test_intelmq_restapi import start_bot as start_intelmq_bot
from test_intelmq_restapi import (  # noqa: F401  (fixtures are used by name)
    SAMPLES, Redis, free_port, intelmq_root, intelmq_venv, redis_port, wait_for)

HUB_ORG = "28bc3db3-16da-461c-b20b-b944f4058708"
ADMIN = "intelmq-transports-admin-key"


def samples(n: int = 50):
    """The 50 events the real TCP output bot sent, repeated with distinct `extra.interop_seq`
    up to `n` (enough that a kill lands mid-transfer)."""
    base = [json.loads(line)["body"] for line in SAMPLES.read_text().splitlines() if line.strip()]
    assert len(base) == 50
    return [dict(base[i % 50], **{"extra.interop_seq": i}) for i in range(n)]


def wait_fast(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class Hub:
    """A sighthub process on a fixed data dir and config, restartable after `kill -9`."""

    def __init__(self, tmp_path: Path, config: str):
        self.data = tmp_path / "hub"
        self.data.mkdir()
        self.cfg = tmp_path / "hub.toml"
        self.cfg.write_text('[exchange]\norg = "%s"\n\n%s' % (HUB_ORG, config))
        self.proc = None
        self.url = None
        self.lines = []

    def start(self):
        binary = binary_path()
        if not binary.is_file():
            pytest.fail(f"sighthub binary not found at {binary}")
        env = dict(os.environ, SIGHTHUB_ADMIN_KEY=ADMIN, NO_COLOR="1", RUST_LOG="info")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--plain-http", "--listen", "127.0.0.1:0", "--data-dir",
             str(self.data), "--config", str(self.cfg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            raw = self.proc.stderr.readline()
            if not raw:
                break
            line = ANSI.sub("", raw.decode("utf-8", "replace"))
            self.lines.append(line)
            if "listening on http://127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        if port is None:
            self.proc.kill()
            pytest.fail("sighthub did not start:\n" + "".join(self.lines))
        proc = self.proc

        def drain():
            for raw in proc.stderr:
                self.lines.append(ANSI.sub("", raw.decode("utf-8", "replace")))
        threading.Thread(target=drain, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        # The IntelMQ transports start right after the HTTP listener.
        time.sleep(0.5)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=20) == 0, "".join(self.lines[-30:])

    def get(self, path: str):
        req = urllib.request.Request(self.url + path, headers={"Authorization": ADMIN})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def log(self):
        out, cursor = [], ""
        while True:
            page = self.get("/iep04/messages?limit=1000&after=" + cursor)
            out.extend(page["messages"])
            cursor = page["cursor"]
            if not page["more"]:
                return out

    def publish(self, events):
        body = "".join(json.dumps(e) + "\n" for e in events).encode()
        req = urllib.request.Request(self.url + "/iep04/messages", data=body, method="POST",
                                     headers={"Authorization": ADMIN,
                                              "Content-Type": "application/x-ndjson"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200


def setup_root(root: Path, redis_port: int, bots: dict):
    venv = intelmq_venv()
    site = list((venv / "lib").glob("python3*/site-packages/intelmq"))
    if not site:
        pytest.fail(f"intelmq is not installed in {venv} (scripts/test setup)")
    for d in ("etc", "var/log", "var/run", "var/lib/bots", "out"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(site[0] / "etc" / "harmonization.conf", root / "etc" / "harmonization.conf")
    runtime = {"global": {"source_pipeline_port": redis_port, "destination_pipeline_port": redis_port,
                          "statistics_port": redis_port, "logging_level": "DEBUG",
                          # Retry (not drop) while sighthub is down.
                          "error_max_retries": 100000, "error_retry_delay": 1,
                          "error_dump_message": True}}
    for bot_id, (module, params, dests) in bots.items():
        entry = {"bot_id": bot_id, "name": bot_id, "group": "Expert", "enabled": True,
                 "run_mode": "continuous", "module": module, "parameters": dict(params)}
        if dests:
            entry["parameters"]["destination_queues"] = {"_default": dests}
        runtime[bot_id] = entry
    (root / "etc" / "runtime.yaml").write_text(json.dumps(runtime, indent=1))
    for p in root.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    root.chmod(0o777)
    return venv


def start_bot(venv: Path, root: Path, bot_id: str, module: str):
    """A real IntelMQ bot whose output is discarded (the bots log to var/log)."""
    return start_intelmq_bot(venv, root, bot_id, module, output=subprocess.DEVNULL)


def stop_bots(procs):
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def bot_logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in (root / "var/log").glob("*.log"))


def queue(r: Redis, name: str):
    """Every message of a Redis list, oldest first."""
    n = r.call("LLEN", name)
    return [json.loads(r.call("LINDEX", name, str(i))) for i in range(n - 1, -1, -1)]


def by_seq(events):
    return {str(e["extra.interop_seq"]): e for e in events}


def test_tcp_output_bot_to_sighthub_survives_kill_9(tmp_path, intelmq_root, redis_port):
    port = free_port()
    hub = Hub(tmp_path, '[intelmq]\nenabled = true\n\n[[intelmq.tcp_in]]\nname = "bot"\n'
                        'listen = "127.0.0.1:%d"\ntags = ["intelmq:tcp"]\n' % port)
    root = intelmq_root
    module = "intelmq.bots.outputs.tcp.output"
    venv = setup_root(root, redis_port, {"tcp-out": (module, {"ip": "127.0.0.1", "port": port}, None)})
    events = samples(1000)
    r = Redis(redis_port)
    assert r.call("SELECT", "2") == "OK"
    for ev in events:
        r.call("LPUSH", "tcp-out-queue", json.dumps(dict(ev, __type="Event")))
    hub.start()
    procs = {"tcp-out": start_bot(venv, root, "tcp-out", module)}
    try:
        # Kill sighthub in the middle of the transfer, then restart it on the same port.
        wait_fast(lambda: r.call("LLEN", "tcp-out-queue") <= 900, 60, "the first events")
        hub.kill9()
        left = r.call("LLEN", "tcp-out-queue")
        assert left > 0, "the transfer was over before the kill: the test proves nothing"
        time.sleep(0.5)
        hub.start()

        def drained():
            if procs["tcp-out"].poll() is not None:
                raise AssertionError("the TCP output bot exited:\n" + bot_logs(root))
            return r.call("LLEN", "tcp-out-queue") == 0 and r.call("LLEN", "tcp-out-queue-internal") == 0
        wait_for(drained, 120, "the bot to send every event")
        log = hub.log()
    finally:
        stop_bots(procs)
        hub.stop()
    assert len(log) == 1000, f"{len(log)} messages, want 1000\n{bot_logs(root)}"
    got = by_seq(m["payload"] for m in log)
    assert got == by_seq(events), "payloads differ from what the bot sent"
    assert all(m["meta"]["uuid_org"] == HUB_ORG and m["meta"]["tags"] == ["intelmq:tcp"] for m in log)
    assert "Connected successfully" in (root / "var/log/tcp-out.log").read_text()


def test_sighthub_delivers_to_tcp_and_api_collectors_through_the_json_parser(
        tmp_path, intelmq_root, redis_port):
    tcp_port, api_port = free_port(), free_port()
    hub = Hub(tmp_path,
              '[intelmq]\nenabled = true\n\n'
              '[[intelmq.out]]\nname = "tcp"\nkind = "tcp"\naddress = "127.0.0.1:%d"\nbatch = 7\n\n'
              '[[intelmq.out]]\nname = "api"\nkind = "api"\nurl = "http://127.0.0.1:%d/intelmq/push"\n'
              'batch = 7\n' % (tcp_port, api_port))
    root = intelmq_root
    col_tcp, col_api = "intelmq.bots.collectors.tcp.collector", "intelmq.bots.collectors.api.collector_api"
    parser = "intelmq.bots.parsers.json.parser"
    bots = {
        "col-tcp": (col_tcp, {"ip": "127.0.0.1", "port": tcp_port, "name": "sighthub-tcp"}, ["parse-tcp-queue"]),
        "parse-tcp": (parser, {}, ["done-tcp"]),
        "col-api": (col_api, {"port": api_port, "name": "sighthub-api"}, ["parse-api-queue"]),
        "parse-api": (parser, {"splitlines": True}, ["done-api"]),
    }
    venv = setup_root(root, redis_port, {k: v for k, v in bots.items()})
    r = Redis(redis_port)
    assert r.call("SELECT", "2") == "OK"
    procs = {b: start_bot(venv, root, b, m) for b, (m, _, _) in bots.items()}
    events = samples(800)
    try:
        time.sleep(3)  # the collectors bind their ports
        hub.start()
        hub.publish(events[:600])
        wait_fast(lambda: r.call("LLEN", "done-tcp") >= 20 and r.call("LLEN", "done-api") >= 20, 90,
                  "the first delivered events")
        hub.kill9()
        assert min(r.call("LLEN", "done-tcp"), r.call("LLEN", "done-api")) < 600, \
            "the transfer was over before the kill: the test proves nothing"
        hub.start()
        hub.publish(events[600:])

        def complete():
            for b, p in procs.items():
                if p.poll() is not None:
                    raise AssertionError(f"{b} exited:\n" + bot_logs(root))
            return all(set(by_seq(queue(r, q))) >= set(by_seq(events)) for q in ("done-tcp", "done-api"))
        wait_for(complete, 120, "every event through both collectors and parsers")
    finally:
        stop_bots(procs)
        hub.stop()
    for q in ("done-tcp", "done-api"):
        out = queue(r, q)
        got = by_seq(out)
        for seq, ev in by_seq(events).items():
            e = got[seq]
            for k in ("source.ip", "destination.fqdn", "classification.type", "malware.name", "comment"):
                assert e.get(k) == ev.get(k), (q, seq, k, e, ev)
            assert e["__type"] == "Event"
        # At least once: redelivery after the crash may repeat a few, never loses one.
        assert len(out) < 800 + 100, f"{q}: {len(out)} events, far more than redelivery explains"


def test_redis_queues_in_and_out_with_real_bots_survive_kill_9(tmp_path, intelmq_root, redis_port):
    hub = Hub(tmp_path,
              '[intelmq]\nenabled = true\n\n'
              '[[intelmq.redis_in]]\nname = "in"\nurl = "redis://127.0.0.1:%d/2"\nqueue = "sighthub-queue"\n'
              'tags = ["intelmq:redis"]\n\n'
              '[[intelmq.redis_out]]\nname = "out"\nurl = "redis://127.0.0.1:%d/2"\nqueue = "file-out-queue"\n'
              'batch = 5\n' % (redis_port, redis_port))
    root = intelmq_root
    parser, output = "intelmq.bots.parsers.json.parser", "intelmq.bots.outputs.file.output"
    out_file = root / "out" / "events.txt"
    bots = {
        "parse-in": (parser, {"splitlines": True}, ["sighthub-queue"]),
        "file-out": (output, {"file": str(out_file)}, None),
    }
    venv = setup_root(root, redis_port, bots)
    r = Redis(redis_port)
    assert r.call("SELECT", "2") == "OK"
    events = samples(2000)
    # Reports as a collector makes them: ND-JSON in raw, 10 events each.
    for i in range(0, 2000, 10):
        raw = "".join(json.dumps(e) + "\n" for e in events[i:i + 10]).encode()
        report = {"feed.name": "interop", "raw": base64.b64encode(raw).decode(), "__type": "Report"}
        r.call("LPUSH", "parse-in-queue", json.dumps(report))
    hub.start()
    procs = {b: start_bot(venv, root, b, m) for b, (m, _, _) in bots.items()}
    try:
        wait_fast(lambda: r.call("LLEN", "parse-in-queue") <= 150, 60, "the parser to start")
        hub.kill9()
        assert r.call("LLEN", "parse-in-queue") + r.call("LLEN", "sighthub-queue") > 0, \
            "the transfer was over before the kill: the test proves nothing"
        hub.start()

        def complete():
            for b, p in procs.items():
                if p.poll() is not None:
                    raise AssertionError(f"{b} exited:\n" + bot_logs(root))
            if not out_file.exists():
                return False
            lines = [json.loads(x) for x in out_file.read_text().splitlines() if x.strip()]
            return (len(hub.log()) >= 2000 and set(by_seq(lines)) >= set(by_seq(events))
                    and r.call("LLEN", "sighthub-queue") == 0
                    and r.call("LLEN", "sighthub-queue-internal") == 0)
        wait_for(complete, 120, "every event into sighthub and out to the file output")
        log = hub.log()
    finally:
        stop_bots(procs)
        hub.stop()
    assert len(log) == 2000, f"{len(log)} messages, want 2000 (a duplicate accepted, or one lost)"
    got = by_seq(m["payload"] for m in log)
    for seq, ev in by_seq(events).items():
        for k in ("source.ip", "destination.port", "malware.name", "comment"):
            assert got[seq].get(k) == ev.get(k), (seq, k)
    assert all(m["meta"]["tags"] == ["intelmq:redis"] for m in log)
    lines = [json.loads(x) for x in out_file.read_text().splitlines() if x.strip()]
    assert set(by_seq(lines)) == set(by_seq(events))
    assert r.call("LLEN", "file-out-queue") == 0
