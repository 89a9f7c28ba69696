"""Fixtures that run the real sighthub binary for the Python client tests.

The binary comes from $SIGHTHUB_BIN (default: target/debug/sighthub, relative to the repo
root). Each server gets a fresh data directory, a random admin key through
SIGHTHUB_ADMIN_KEY, HTTPS (the default) on a free port, and is stopped with SIGTERM; it must
exit 0 within 10 seconds.
"""

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import urllib3  # noqa: F401  (named in the warning filter)


def pytest_configure(config):
    # The server's certificate is self-signed and the client never verifies it.
    config.addinivalue_line("filterwarnings", "ignore::urllib3.exceptions.InsecureRequestWarning")


REPO_ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
LISTENING = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 60
STOP_TIMEOUT = 10


def binary_path() -> Path:
    raw = os.environ.get("SIGHTHUB_BIN", "target/debug/sighthub")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


class Server:
    """One running sighthub process."""

    def __init__(self, data_dir: Path, key: str, config: str = None):
        self.data_dir = data_dir
        self.key = key
        self.port = None
        self.lines = []  # stderr, ANSI escapes stripped
        self.stdout = []
        self._found = threading.Event()
        binary = binary_path()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            pytest.fail(f"sighthub binary not found at {binary} (build it, or set SIGHTHUB_BIN)")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env["NO_COLOR"] = "1"
        env["SIGHTHUB_ADMIN_KEY"] = key
        args = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        if config is not None:
            cfg = data_dir.parent / (data_dir.name + ".toml")
            cfg.write_text(config)
            args += ["--config", str(cfg)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(data_dir),
        )
        self._threads = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                pytest.fail(
                    "sighthub did not report `listening on https://127.0.0.1:PORT` "
                    f"(exit code {self.proc.returncode}); stderr:\n{self.log()}"
                )

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            self.lines.append(line)
            m = LISTENING.search(line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self._found.set()

    def _read_stdout(self):
        for raw in self.proc.stdout:
            self.stdout.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit code (killed and None on timeout)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
            return None
        for t in self._threads:
            t.join(timeout=2)
        return rc


@pytest.fixture
def start_server(tmp_path):
    """Factory: start_server(data_dir=None, key=None, config=None) -> Server (config: TOML text). Every server started is
    stopped at the end of the test, and must exit 0 within 10 s."""
    started = []

    def start(data_dir=None, key=None, config=None):
        if data_dir is None:
            data_dir = tmp_path / f"data{len(started)}"
        data_dir.mkdir(parents=True, exist_ok=True)
        srv = Server(data_dir, key or secrets.token_hex(24), config)
        started.append(srv)
        return srv

    yield start
    failures = []
    for srv in started:
        was_running = srv.proc.poll() is None
        rc = srv.stop()
        if was_running and rc != 0:
            failures.append(
                f"sighthub exited with {rc!r} after SIGTERM (want 0 within {STOP_TIMEOUT} s); "
                f"stderr:\n{srv.log()}"
            )
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def server(start_server):
    """One fresh server."""
    return start_server()


@pytest.fixture
def connection(server):
    """A sightingdb client connection with the admin key."""
    import sightingdb

    con = sightingdb.connection(host="127.0.0.1", port=server.port, apikey=server.key)
    con.disable_ssl_warnings()
    return con
