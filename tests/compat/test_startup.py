"""Start-up that fails loudly: CPU pinning within the process's affinity, more shards than
CPUs, a shard that dies while the others serve, a shard that cannot start.

Each case is either a clear error (the process exits non-zero with a line saying why) or a
logged decision; never a broker that serves with a dead shard still named as a leader.
"""

import os
import shutil
import subprocess

import pytest
from conftest import STRAND_BIN, Broker

EXIT_TIMEOUT_S = 30


def thread_cpu_lists(pid):
    """{thread name: Cpus_allowed_list} for every thread of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out[f"{name}/{tid}"] = line.split(":", 1)[1].strip()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
    return out


def wait_exit(proc, timeout=EXIT_TIMEOUT_S):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.skipif(os.cpu_count() < 2 or not shutil.which("taskset"), reason="needs 2 CPUs and taskset")
def test_shards_stay_on_the_cpus_the_process_was_given(tmp_path):
    # The process may run on CPU 1 only (as in a container's cpuset). Every shard must be
    # pinned there: pinning shard 0 to CPU 0 would escape the operator's choice (and fails
    # outright under a cgroup cpuset).
    b = Broker(tmp_path, shards=2)
    wrapper = tmp_path / "strand-on-cpu1"
    wrapper.write_text(f'#!/bin/sh\nexec taskset -c 1 "{STRAND_BIN}" "$@"\n')
    wrapper.chmod(0o755)
    b.bin = str(wrapper)
    b.start()
    try:
        lists = thread_cpu_lists(b.pid)
        shards = {name: cpus for name, cpus in lists.items() if name.startswith("shard-")}
        assert len(shards) >= 2, lists
        assert all(cpus == "1" for cpus in shards.values()), lists
        assert "more shards than CPUs" in b.log()
    finally:
        b.kill9()


def test_more_shards_than_cpus_is_a_logged_decision(tmp_path):
    shards = (os.cpu_count() or 1) + 1
    b = Broker(tmp_path, shards=shards)
    b.start()
    try:
        assert "more shards than CPUs" in b.log()
        assert b.running()
    finally:
        b.kill9()


def test_a_shard_that_dies_stops_the_broker(tmp_path):
    # Shard 1 panics while shard 0 serves: the broker must stop (non-zero exit) rather than
    # keep advertising shard 1's partitions with nobody serving them.
    b = Broker(tmp_path, shards=2)
    env = dict(os.environ, STRAND_FAILURE_PROBES="shard-panic=1")
    with open(b.log_path, "a") as log:
        proc = subprocess.Popen(
            [STRAND_BIN, "serve", "--data-dir", str(b.data_dir), "--listen", b.bootstrap,
             "--shards", "2", "--log-level", "info"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
        )
    code = wait_exit(proc)
    if code is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"the broker kept running with a dead shard:\n{b.log()}")
    assert code != 0, b.log()
    assert "shard stopped unexpectedly" in b.log(), b.log()


def test_a_shard_that_cannot_start_is_a_clear_error(tmp_path):
    # The controller's metadata log cannot be read (here: it is a directory).
    b = Broker(tmp_path, shards=2)
    (b.data_dir / "cluster" / "metadata.log").mkdir(parents=True)
    proc = subprocess.Popen(
        [STRAND_BIN, "serve", "--data-dir", str(b.data_dir), "--listen", b.bootstrap,
         "--shards", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    code = wait_exit(proc)
    if code is None:
        proc.kill()
        pytest.fail("the broker kept running without its controller")
    err = proc.stderr.read()
    assert code != 0
    assert "cannot load cluster metadata" in err, err


def test_zero_shards_is_refused(tmp_path):
    b = Broker(tmp_path, shards=1)
    proc = subprocess.run(
        [STRAND_BIN, "serve", "--data-dir", str(b.data_dir), "--listen", b.bootstrap,
         "--shards", "0"],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT_S,
    )
    assert proc.returncode != 0
    assert "--shards must be between" in proc.stderr
