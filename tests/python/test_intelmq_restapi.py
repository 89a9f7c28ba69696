"""The real IntelMQ 3.5 REST API output bot publishes to sighthub's IEP04 exchange.

Events are fed to the bot through its Redis pipeline queue (as an upstream IntelMQ bot
would); the bot POSTs them one by one to /iep04/messages with no change to IntelMQ. They
must come back from the exchange's log as IEP04 envelopes with hub-assigned UUIDv4s and the
key's organisation, exactly once each (a resent identical event is a duplicate by content),
and as the same bare events through the IntelMQ export.

Needs: redis-server, and intelmq==3.5.0 in a virtualenv built from the system python3
($INTELMQ_VENV, default target/venv-intelmq in the repository; `scripts/test setup` makes both).
The bot runs as `nobody` when the test runs as root (IntelMQ refuses root).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ANSI, REPO_ROOT, binary_path

ORG = "6a0c2a64-5b54-4a8f-9f6e-0d6c8b1a2f01"
KEY = "intelmq-restapi-test-key"
SAMPLES = REPO_ROOT / "crates/exchange/tests/data/tcp_output_50events_decoded.jsonl"


def intelmq_venv() -> Path:
    raw = os.environ.get("INTELMQ_VENV", "target/venv-intelmq")
    p = Path(raw)
    return p if p.is_absolute() else REPO_ROOT / p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resp(*parts: str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Redis:
    """Just enough of the Redis protocol: one command, one simple reply."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def call(self, *parts: str):
        self.sock.sendall(resp(*parts))
        line = self._line()
        if line[:1] == b"-":
            raise RuntimeError(line.decode())
        if line[:1] == b":":
            return int(line[1:])
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        return line[1:].decode()


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


@pytest.fixture
def intelmq_root():
    """An IntelMQ root the unprivileged bot can reach (pytest's tmp_path is 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="sighthub-intelmq-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_port(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (scripts/test setup installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            try:
                return Redis(port).call("PING") == "PONG"
            except OSError:
                return False
        wait_for(up, 20, "redis-server")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def hub(tmp_path):
    """sighthub over plain HTTP with an exchange key for the IntelMQ bot."""
    binary = binary_path()
    if not binary.is_file():
        pytest.fail(f"sighthub binary not found at {binary}")
    data = tmp_path / "hub"
    data.mkdir()
    cfg = tmp_path / "hub.toml"
    cfg.write_text(
        '[exchange]\n'
        '[exchange.keys."%s"]\norg = "%s"\npublish = ["intelmq/event"]\nread = ["*"]\ntlp_max = "RED"\n'
        % (KEY, ORG))
    env = dict(os.environ, SIGHTHUB_ADMIN_KEY="admin-" + KEY, NO_COLOR="1")
    env.pop("RUST_LOG", None)
    proc = subprocess.Popen(
        [str(binary), "serve", "--plain-http", "--listen", "127.0.0.1:0", "--data-dir", str(data),
         "--config", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    port = None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        raw = proc.stderr.readline()
        if not raw:
            break
        line = ANSI.sub("", raw.decode("utf-8", "replace"))
        lines.append(line)
        if "listening on http://127.0.0.1:" in line:
            port = int(line.rsplit(":", 1)[1])
            break
    if port is None:
        proc.kill()
        pytest.fail("sighthub did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def get(url: str, path: str):
    req = urllib.request.Request(url + path, headers={"Authorization": KEY})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def read_log(url: str, export: str = "envelope"):
    out, cursor = [], ""
    while True:
        q = "/iep04/messages?limit=1000&after=" + cursor
        if export != "envelope":
            q += "&export=intelmq"
        page = get(url, q)
        out.extend(page["messages"])
        cursor = page["cursor"]
        if not page["more"]:
            return out


def start_bot(venv: Path, root: Path, bot_id: str,
              module: str = "intelmq.bots.outputs.restapi.output", output=subprocess.PIPE):
    """Starts one real IntelMQ bot (as `nobody` when run as root); `output` takes its
    stdout and stderr."""
    exe = venv / "bin" / module
    if not exe.exists():
        pytest.fail(f"{exe} missing: install intelmq==3.5.0 into {venv} (scripts/test setup)")
    cmd = [str(exe), bot_id]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + cmd
    env = dict(os.environ, INTELMQ_ROOT_DIR=str(root))
    stderr = subprocess.STDOUT if output == subprocess.PIPE else output
    return subprocess.Popen(cmd, env=env, stdout=output, stderr=stderr,
                            stdin=subprocess.DEVNULL)


def test_restapi_output_bot_publishes_bare_events_that_come_back_as_envelopes(
        intelmq_root, redis_port, hub):
    venv = intelmq_venv()
    site = list((venv / "lib").glob("python3*/site-packages/intelmq"))
    if not site:
        pytest.fail(f"intelmq is not installed in {venv} (scripts/test setup)")
    # An IntelMQ root the unprivileged bot can write its logs and state into.
    root = intelmq_root
    for d in ("etc", "var/log", "var/run", "var/lib/bots"):
        (root / d).mkdir(parents=True)
    shutil.copy(site[0] / "etc" / "harmonization.conf", root / "etc" / "harmonization.conf")
    bots = {
        # Header auth, JSON body: what a stock deployment does.
        "rest-header": {"auth_type": "http_header", "auth_token_name": "Authorization",
                        "auth_token": "Bearer " + KEY, "use_json": True},
        # HTTP Basic (password = key), form body labelled JSON (use_json: false).
        "rest-basic": {"auth_type": "http_basic_auth", "auth_token_name": "intelmq",
                       "auth_token": KEY, "use_json": False},
    }
    runtime = {"global": {"source_pipeline_port": redis_port, "destination_pipeline_port": redis_port,
                          "statistics_port": redis_port, "logging_level": "DEBUG",
                          "http_timeout_sec": 10, "error_max_retries": 0}}
    for bot_id, params in bots.items():
        runtime[bot_id] = {
            "bot_id": bot_id, "name": bot_id, "group": "Output", "enabled": True,
            "run_mode": "continuous", "module": "intelmq.bots.outputs.restapi.output",
            "parameters": dict(params, host=hub + "/iep04/messages", hierarchical_output=False),
        }
    # JSON is YAML.
    (root / "etc" / "runtime.yaml").write_text(json.dumps(runtime, indent=1))
    for p in root.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    root.chmod(0o777)

    events = [json.loads(line)["body"] for line in SAMPLES.read_text().splitlines() if line.strip()]
    assert len(events) == 50
    header_events, basic_events = events[:40], events[40:]
    r = Redis(redis_port)
    assert r.call("SELECT", "2") == "OK"
    for ev in header_events:
        r.call("LPUSH", "rest-header-queue", json.dumps(dict(ev, __type="Event")))
    # A resend of an identical event (what IntelMQ's TCP path does after a timeout).
    r.call("LPUSH", "rest-header-queue", json.dumps(dict(header_events[3], __type="Event")))
    for ev in basic_events:
        r.call("LPUSH", "rest-basic-queue", json.dumps(dict(ev, __type="Event")))

    procs = {b: start_bot(venv, root, b) for b in bots}
    try:
        def drained():
            for p in procs.values():
                if p.poll() is not None:
                    raise AssertionError("an IntelMQ bot exited:\n" + p.stdout.read().decode())
            return all(r.call("LLEN", q) == 0 for q in (
                "rest-header-queue", "rest-header-queue-internal",
                "rest-basic-queue", "rest-basic-queue-internal"))
        wait_for(drained, 120, "the bots to send every event")
        log = wait_for(lambda: (lambda m: m if len(m) >= 50 else None)(read_log(hub)), 30,
                       "50 messages in the exchange log")
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for b, p in procs.items():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        logs = {b: (root / "var/log" / f"{b}.log") for b in bots}

    def bot_logs():
        return "\n".join(f"--- {b}\n{p.read_text() if p.exists() else '(no log)'}"
                         for b, p in logs.items())

    assert len(log) == 50, f"{len(log)} messages in the log, want 50 (duplicate accepted?)\n{bot_logs()}"
    by_seq = {}
    uuids = set()
    for m in log:
        assert m["format"] == "intelmq" and m["type"] == "event", m
        meta = m["meta"]
        assert meta["uuid_org"] == ORG
        u = meta["uuid"]
        assert len(u) == 36 and u[14] == "4", f"not a UUIDv4: {u}"
        uuids.add(u)
        by_seq[str(m["payload"]["extra.interop_seq"])] = m
    assert len(uuids) == 50
    for ev in header_events:
        got = by_seq[str(ev["extra.interop_seq"])]["payload"]
        assert got == ev, f"payload differs from the event the bot sent:\n{got}\n{ev}"
    for ev in basic_events:
        # With use_json: false IntelMQ sends form fields: every value arrives as a string.
        got = by_seq[str(ev["extra.interop_seq"])]["payload"]
        assert got == {k: (v if isinstance(v, str) else str(v)) for k, v in ev.items()}, got
    # Fetch by uuid, and the bare IntelMQ export for IntelMQ consumers.
    one = get(hub, "/iep04/messages/" + by_seq[str(header_events[0]["extra.interop_seq"])]["meta"]["uuid"])
    assert one["message"]["payload"] == header_events[0]
    bare = read_log(hub, "intelmq")
    assert len(bare) == 50
    # Same order as the envelopes; the two bots race, so which comes first varies.
    assert bare == [m["payload"] for m in log]
    assert all("meta" not in b and "__type" not in b for b in bare)
    assert "Sent message." in logs["rest-header"].read_text()
