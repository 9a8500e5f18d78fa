"""Apache Kafka 4.1.1 as a reference broker for the differential tests.

The jars come from Maven Central through tests/ecosystem/kafka.sh (`install` is idempotent,
cached under .cache/kafka-4.1.1); `KafkaNode` starts one KRaft node (broker + controller)
on a loopback port pair and stops it by pid.
"""

import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "tests" / "ecosystem" / "kafka.sh"
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 180


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_pair(first, last):
    """A port p in [first, last) such that p and p + 1 are free."""
    for port in range(first, last - 1, 2):
        if port_free(port) and port_free(port + 1):
            return port
    raise RuntimeError(f"no two free ports in {first}..{last}")


def install():
    """Fetches Kafka's jars (once); returns their directory."""
    done = subprocess.run(
        [str(KAFKA_SH), "install"], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"kafka.sh install failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip()


class KafkaNode:
    def __init__(self, data_dir, port, settings=()):
        self.data_dir = Path(data_dir)
        self.port = port
        self.settings = [f"{k}={v}" for k, v in dict(settings).items()]
        self.pid = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        try:
            return (self.data_dir / "kafka.out").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self):
        done = subprocess.run(
            [str(KAFKA_SH), "start", str(self.port), str(self.data_dir), *self.settings],
            capture_output=True, text=True, timeout=START_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh start failed:\n{done.stdout}\n{done.stderr}")
        self.pid = int(done.stdout.strip().splitlines()[-1])

    def stop(self):
        subprocess.run([str(KAFKA_SH), "stop", str(self.data_dir)], timeout=60, check=False)
        self.pid = None
