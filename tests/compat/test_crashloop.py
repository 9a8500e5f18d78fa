"""The crash loop (tests/crashloop.py) in a short form: idempotent acks=all producers on every
shard while the broker is kill -9ed at random moments; after each restart every acknowledged
record must be there exactly once, in order, byte-exact.

The seed is random on each run and printed; replay a failure with
`tests/crashloop.py --seed SEED --restarts N` (or STRAND_CRASHLOOP_SEED=SEED here).
"""

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import crashloop  # noqa: E402

RESTARTS = int(os.environ.get("STRAND_CRASHLOOP_RESTARTS", "10"))


def seed():
    return int(os.environ.get("STRAND_CRASHLOOP_SEED") or random.SystemRandom().randrange(1 << 31))


def test_crash_loop_loses_nothing_acknowledged(tmp_path):
    args = crashloop.parse_args([
        "--seed", str(seed()),
        "--restarts", str(RESTARTS),
        "--duration", "45",
        "--workdir", str(tmp_path),
    ])
    ok, stats = crashloop.run(args)
    assert ok, f"crash loop failed with seed {args.seed}: {stats.problems[:5]}"
    assert stats.restarts >= min(RESTARTS, 3)
    assert stats.records_acked_verified > 0


def test_crash_loop_with_deferred_syncs_loses_nothing_acknowledged(tmp_path):
    """flush.messages above 1: batches are acknowledged once written, before any sync. A
    kill -9 of the process must still lose none of them (the direct-I/O write is complete
    on the device when it is acknowledged)."""
    args = crashloop.parse_args([
        "--seed", str(seed()),
        "--restarts", str(max(RESTARTS // 2, 3)),
        "--duration", "25",
        "--topic-config", "flush.messages=100000",
        "--topic-config", "flush.ms=5000",
        "--workdir", str(tmp_path),
    ])
    ok, stats = crashloop.run(args)
    assert ok, f"crash loop failed with seed {args.seed}: {stats.problems[:5]}"
    assert stats.records_acked_verified > 0


def test_crash_loop_notices_a_lost_record(tmp_path):
    """The checker itself: a segment cut in half behind the broker's back must be reported."""
    args = crashloop.parse_args([
        "--seed", str(seed()),
        "--restarts", "3",
        "--inject-loss", "2",
        "--early-kill-chance", "0",
        "--workdir", str(tmp_path),
    ])
    ok, stats = crashloop.run(args)
    assert not ok
    assert stats.count("lost") + stats.count("moved") > 0, stats.problems[:5]
