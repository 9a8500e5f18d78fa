"""The listeners themselves under pressure, driven with raw sockets:

- out of file descriptors (the open-file limit lowered under the running broker with
  `prlimit`), accepts fail: the broker backs off, logs a bounded number of lines, counts the
  failures in `strand_accept_errors_total`, and serves again once descriptors are freed;
- the metrics listener (`--metrics-listen`) serves a bounded number of scrapes at once and
  drops a response its client does not read, so clients that never read pin nothing.

Figures are printed; run with `-s` to see them.
"""

import os
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Broker, free_base_port
from test_hostile import call_api_versions, closed_by_broker

# Keep in step with src/server/mod.rs and src/server/metrics_http.rs.
ACCEPT_ERROR_LOG_INTERVAL_S = 10
HTTP_CONNECTIONS_MAX = 16
HTTP_READ_TIMEOUT_S = 5


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def accept_errors(text):
    total = 0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "strand_accept_errors_total":
                total += s.value
    return total


@pytest.fixture
def metrics_broker(tmp_path, request):
    metrics_port = free_base_port(1)
    b = Broker(tmp_path, extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    b.metrics_port = metrics_port
    b.start()
    yield b
    crashed = b.proc is not None and b.proc.poll() is not None
    b.kill9()
    log = b.log()
    assert "panicked" not in log, f"the broker panicked:\n{log}"
    assert not crashed, f"the broker died during the test:\n{log}"


def test_accept_errors_back_off_are_counted_and_the_broker_recovers(metrics_broker):
    b = metrics_broker
    assert accept_errors(scrape(b.metrics_port)) == 0
    open_fds = len(os.listdir(f"/proc/{b.pid}/fd"))
    limit = open_fds + 4
    subprocess.run(["prlimit", f"--pid={b.pid}", f"--nofile={limit}:{limit}"], check=True)
    log_from = len(b.log())
    # Connections complete in the kernel's backlog whether or not the broker can accept
    # them; past the limit, every accept fails with EMFILE.
    conns = [socket.create_connection(("127.0.0.1", p), timeout=10)
             for p in b.ports for _ in range(20)]
    time.sleep(4)
    lines = [line for line in b.log()[log_from:].splitlines() if "accept failed" in line]
    print(f"\n{open_fds} descriptors open, limit {limit}: {len(lines)} accept-error lines in 4 s")
    assert lines, "no accept failed: the limit was not reached"
    # One line per listener per interval (two shards, the metrics listener idle).
    assert len(lines) <= 2 * 2, f"{len(lines)} accept-error lines in 4 s:\n" + "\n".join(lines[:10])
    for s in conns:
        s.close()
    # Descriptors freed: the broker serves again (backlog first, then new connections).
    deadline = time.monotonic() + 30
    while True:
        try:
            if all(call_api_versions(p, timeout=3) == 0 for p in b.ports):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the broker did not serve again"
        time.sleep(0.5)
    counted = accept_errors(scrape(b.metrics_port))
    print(f"strand_accept_errors_total: {counted:.0f}")
    assert counted >= 1
    assert b.running()


def test_metrics_listener_serves_a_bounded_number_of_clients(metrics_broker):
    b = metrics_broker
    # Clients that connect and never send a request: each used to hold a task and a
    # descriptor until the read timeout, however many there were.
    hogs = [socket.create_connection(("127.0.0.1", b.metrics_port), timeout=10)
            for _ in range(4 * HTTP_CONNECTIONS_MAX)]
    # Well inside the read timeout, those past the limit have been closed.
    time.sleep(1.5)
    quickly = [s for s in hogs if closed_by_broker(s, 0.01)]
    print(f"\n{len(hogs)} silent metrics clients: {len(quickly)} closed within 2.5 s")
    assert len(quickly) >= len(hogs) - HTTP_CONNECTIONS_MAX, "no limit on metrics connections"
    # The rest are dropped at the read timeout; then scrapes are served again.
    for s in hogs:
        assert closed_by_broker(s, HTTP_READ_TIMEOUT_S + 10)
        s.close()
    assert accept_errors(scrape(b.metrics_port)) == 0
