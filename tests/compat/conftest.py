"""Starts the real `strand` binary for the real-client suite.

Each test gets its own broker: two shards on free loopback ports (shard k on base + k) and a
temporary data directory. `broker.kill9()` / `broker.start()` restart it on the same data,
which is how the durability tests crash it.
"""

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

STRAND_BIN = os.environ.get(
    "STRAND_BIN", str(Path(__file__).resolve().parents[2] / "target" / "release" / "strand")
)
SHARDS = 2


def free_base_port(count):
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65535:
            continue
        sockets = []
        try:
            for k in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", base + k))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


class Broker:
    def __init__(self, tmp_path, shards=SHARDS, extra=()):
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "broker.log"
        self.shards = shards
        self.port = free_base_port(shards)
        self.extra = list(extra)
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def start(self):
        log_from = len(self.log())
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [
                STRAND_BIN, "serve",
                "--data-dir", str(self.data_dir),
                "--listen", self.bootstrap,
                "--shards", str(self.shards),
                "--log-level", "info",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            if "ready" in self.log()[log_from:]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"broker not ready:\n{self.log()}")

    def kill9(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code


@pytest.fixture
def broker(tmp_path, request):
    b = Broker(tmp_path)
    b.start()
    yield b
    failed = getattr(request.node, "rep_call", None)
    b.kill9()
    if failed is not None and failed.failed:
        print("--- broker log ---\n" + b.log())
    assert "panicked" not in b.log(), b.log()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def topic():
    return "t-" + uuid.uuid4().hex[:10]
