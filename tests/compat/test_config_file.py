"""`strand serve --config FILE`: a broker started from a Java-properties file written with
Kafka's names, its values overridden by flags and then by STRAND_… variables; and
`strand config check` / `strand config print`."""

import os
import subprocess

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from conftest import STRAND_BIN, Broker


class FileBroker(Broker):
    """A broker whose data dir, listener and shard count come from its config file only."""

    def __init__(self, tmp_path, config_path, flags=(), env=None):
        super().__init__(tmp_path, shards=2)
        self.config_path = config_path
        self.flags = list(flags)
        self.env = env or {}

    def spawn(self):
        assert self.proc is None, "already running"
        log_from = len(self.log())
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [self.bin, "serve", "--config", str(self.config_path), *self.flags],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return log_from


def write_config(tmp_path, broker_port, data_dir):
    path = tmp_path / "strand.properties"
    path.write_text(
        "# Kafka's names where Strand has the same setting\n"
        f"log.dirs={data_dir}\n"
        f"listeners=PLAINTEXT://127.0.0.1:{broker_port}\n"
        "num.partitions=5\n"
        "message.max.bytes: 1000000\n"
        "! and Strand's own keys\n"
        "shards = 2\n"
        "log.level=\\\n"
        "    info\n"
        "auto.create.topics=true\n"
    )
    return path


def produce(bootstrap, topic, size):
    """One record of `size` bytes; returns the delivery error (None when written)."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "retries": 0,
                  "compression.type": "none", "linger.ms": 0})
    out = []
    p.produce(topic, value=b"x" * size, on_delivery=lambda err, msg: out.append(err))
    p.flush(30)
    assert out, "no delivery report"
    return out[0]


def test_a_broker_started_from_a_file_with_flag_and_env_overrides(tmp_path, topic):
    data_dir = tmp_path / "from-file"
    # The flag overrides num.partitions=5; the variable overrides message.max.bytes.
    flags = ["--default-partitions", "3"]
    env = {"STRAND_MESSAGE_MAX_BYTES": "2000"}
    b = FileBroker(tmp_path, tmp_path / "strand.properties", flags=flags, env=env)
    config = write_config(tmp_path, b.port, data_dir)
    b.start()
    try:
        assert (data_dir / ".lock").exists(), list(tmp_path.iterdir())
        assert produce(b.bootstrap, topic, 100) is None
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(topic, timeout=15)
        assert len(md.topics[topic].partitions) == 3, md.topics[topic].partitions
        err = produce(b.bootstrap, topic, 4000)
        assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
        assert "panicked" not in b.log()
    finally:
        b.kill9()

    # `config print` shows the same values and where each came from.
    printed = subprocess.run([STRAND_BIN, "config", "print", "--config", str(config), *flags],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, **env})
    assert printed.returncode == 0, printed.stderr
    out = printed.stdout
    assert "# flag --default-partitions\ndefault.partitions=3\n" in out, out
    assert "# env STRAND_MESSAGE_MAX_BYTES\nmax.message.bytes=2000\n" in out, out
    # Kafka's `listeners` is also Strand's key (several listeners, each with its protocol).
    assert f"# file {config}:3\nlisteners=PLAINTEXT://127.0.0.1:{b.port}\n" in out, out
    assert f"# file {config}:8\nlog.level=info\n" in out, out
    assert "# default\nsegment.bytes=1073741824\n" in out, out
    # What it prints is itself a valid config file.
    (tmp_path / "printed.properties").write_text(out)
    checked = subprocess.run([STRAND_BIN, "config", "check", str(tmp_path / "printed.properties")],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_config_check_names_the_line_and_the_nearest_key(tmp_path):
    path = tmp_path / "strand.properties"
    path.write_text("# comment\n\nnum.partitions=2\nlisteners=PLAINTEXT://127.0.0.1:9999\n"
                    "log.segment.byte=1048576\n")
    result = subprocess.run([STRAND_BIN, "config", "check", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        f"strand: unknown key log.segment.byte at {path}:5; did you mean log.segment.bytes?"
    ), result.stderr

    # One key twice (the second across a continuation line).
    path.write_text("raft.tick.ms=1000\nraft.tick.ms\\\n  =50\n")
    result = subprocess.run([STRAND_BIN, "config", "check", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert f"raft.tick.ms at {path}:2" in result.stderr and "sets raft.tick.ms again" in result.stderr
    # A value the flag would refuse: the broker does not start.
    path.write_text(f"log.dirs={tmp_path / 'never'}\nraft.tick.ms=5\n")
    result = subprocess.run([STRAND_BIN, "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert f'bad value "5" for raft.tick.ms at {path}:2' in result.stderr, result.stderr
    assert not (tmp_path / "never").exists()

    # A Kafka setting Strand cannot honour is refused with what to do instead.
    path.write_text("log.dirs=/a,/b\n")
    result = subprocess.run([STRAND_BIN, "config", "check", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "one directory" in result.stderr, result

    path.write_text("num.partitions=2\nlog.retention.hours=24\n")
    result = subprocess.run([STRAND_BIN, "config", "check", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"{path}: ok"
