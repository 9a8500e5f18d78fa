"""Starts the real `strand` binary for the real-client suite.

Each test gets its own broker: two shards on free loopback ports (shard k on base + k) and a
temporary data directory. `broker.kill9()` then `broker.start()` (or `broker.restart()`)
brings it back on the same data and ports, which is how the durability tests crash it. On a
failing test the broker's log is printed; a panic in the log fails the test.
"""

import os
import random
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STRAND_BIN = os.environ.get("STRAND_BIN") or str(REPO / "target" / "release" / "strand")
SHARDS = 2
READY_TIMEOUT_S = 30


# Brokers listen below 32768, out of the kernel's ephemeral range: a client reconnecting
# could otherwise take the very port a restarting broker needs.
PORT_RANGE = (10000, 20000)


def free_base_port(count):
    """A port `base` such that base .. base + count - 1 are all free on 127.0.0.1."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(500):
        base = rng.randrange(PORT_RANGE[0], PORT_RANGE[1] - count)
        sockets = []
        try:
            for k in range(count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Broker:
    def __init__(self, tmp_path, shards=SHARDS, extra=()):
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "broker.log"
        self.shards = shards
        self.port = free_base_port(shards)
        self.extra = list(extra)
        # The command that runs the broker (a wrapper such as `taskset` may stand in).
        self.bin = STRAND_BIN
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def ports(self):
        return [self.port + k for k in range(self.shards)]

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self):
        """Starts the broker on this data dir and these ports; returns once every shard port
        accepts connections and this run has logged "ready"."""
        log_from = self.spawn()
        self.wait_ready(log_from)

    def spawn(self):
        """Starts the broker process without waiting for it; returns where this run's output
        begins in the log (for `wait_ready`)."""
        assert self.proc is None, "already running"
        if not os.access(self.bin, os.X_OK):
            raise RuntimeError(f"{self.bin} is not an executable: build it or set STRAND_BIN")
        log_from = len(self.log())
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [
                    self.bin, "serve",
                    "--data-dir", str(self.data_dir),
                    "--listen", self.bootstrap,
                    "--shards", str(self.shards),
                    "--log-level", "info",
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return log_from

    def wait_ready(self, log_from, timeout=READY_TIMEOUT_S):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"broker exited with {code}:\n{self.log()}")
            # Only this run's output counts: the log keeps earlier runs.
            if "ready" in self.log()[log_from:] and all(accepts(p) for p in self.ports):
                return
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError(f"broker not ready after {timeout}s:\n{self.log()}")

    @property
    def pid(self):
        return self.proc.pid

    def memory_kib(self):
        """(current RSS, peak RSS) of the running broker in KiB, from /proc/PID/status."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    fields[name] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def kill9(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def restart(self):
        """kill -9, then start again on the same data dir and ports."""
        self.kill9()
        self.start()

    def terminate(self):
        """SIGTERM; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"broker did not stop on SIGTERM:\n{self.log()}")
        self.proc = None
        return code

    def running(self):
        return self.proc is not None and self.proc.poll() is None


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def broker(tmp_path, request):
    b = Broker(tmp_path)
    b.start()
    yield b
    crashed = b.proc is not None and b.proc.poll() is not None
    b.kill9()
    failed = any(
        getattr(request.node, "rep_" + when, None) is not None
        and getattr(request.node, "rep_" + when).failed
        for when in ("setup", "call")
    )
    log = b.log()
    if failed or crashed or "panicked" in log:
        print(f"--- broker log ({b.log_path}) ---\n{log}")
    assert "panicked" not in log, "the broker panicked (log above)"
    assert not crashed, "the broker died during the test (log above)"


@pytest.fixture
def topic():
    return "t-" + uuid.uuid4().hex[:10]
