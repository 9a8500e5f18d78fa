"""Starts several `strand` nodes as one cluster for the cluster tests.

`Cluster(tmp_path, nodes=3, shards=1)` gives node i (1-based) its own directory
(tmp_path/node<i>: data dir and log), a client base port (shard k serves Kafka clients on
port + k) and an rpc base port (shard k serves peers on rpc port + k), all below 32768, and
starts each node as its own process:

    strand serve --node-id i --data-dir D --listen 127.0.0.1:P --rpc-listen 127.0.0.1:R
                 --peers 1@127.0.0.1:R1,2@127.0.0.1:R2,... --shards S --log-level info

A node (`cluster.node(i)`) is a conftest `Broker` that knows its cluster flags, so
`kill9()`, `start()`, `restart()`, `terminate()`, `running()` and `log()` work as they do
for the single-node tests, on the same data dir and ports every time.

Kafka broker ids: node N shard k is broker N * 1024 + k. The module also has small raw
protocol helpers (`metadata`, `create_topic_raw`, `fetch_error`) that ask one given node,
where a real client would pick a broker itself (librdkafka sends admin requests to the
controller).
"""

import socket
import struct
import time
from collections import namedtuple

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from conftest import Broker, free_base_port

NODE_ID_STRIDE = 1024
FORM_TIMEOUT_S = 30


def broker_id(node_id, shard):
    return node_id * NODE_ID_STRIDE + shard


def node_of(broker):
    """The node id of a Kafka broker id (-1 for none)."""
    return broker // NODE_ID_STRIDE if broker >= 0 else -1


def wait_for(what, condition, timeout, interval=0.2):
    """Polls `condition()` until it returns a true value, which is returned."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Node(Broker):
    """One node of a cluster: a Broker with --node-id, --rpc-listen and --peers."""

    def __init__(self, cluster, node_id, port, rpc_port, extra):
        node_dir = cluster.tmp_path / f"node{node_id}"
        node_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(node_dir, shards=cluster.shards)
        self.cluster = cluster
        self.node_id = node_id
        self.port = port
        self.rpc_port = rpc_port
        self.user_extra = list(extra)

    def __repr__(self):
        return f"node{self.node_id}(:{self.port}, rpc :{self.rpc_port})"

    @property
    def rpc_address(self):
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def rpc_ports(self):
        return [self.rpc_port + k for k in range(self.shards)]

    @property
    def broker_ids(self):
        return [broker_id(self.node_id, k) for k in range(self.shards)]

    def cluster_args(self):
        return [
            "--node-id", str(self.node_id),
            "--rpc-listen", self.rpc_address,
            "--peers", self.cluster.peers,
        ]

    def spawn(self):
        # conftest's Broker.spawn adds --data-dir, --listen, --shards and --log-level.
        self.extra = [*self.cluster_args(), *self.user_extra]
        return super().spawn()

    def crashed(self):
        """True if the process exited without being stopped by the harness."""
        return self.proc is not None and self.proc.poll() is not None

    def admin(self, **config):
        return AdminClient({"bootstrap.servers": self.bootstrap, **config})

    def list_topics(self, timeout=5):
        """confluent-kafka metadata (all topics) from a fresh AdminClient bootstrapped on this
        node only: its first request goes to this node's shard 0."""
        return self.admin().list_topics(timeout=timeout)


class Cluster:
    def __init__(self, tmp_path, nodes=3, shards=1, extra=()):
        assert nodes >= 1 and shards >= 1
        self.tmp_path = tmp_path
        self.shards = shards
        # One block of free ports: every node's client ports, then every node's rpc ports.
        span = nodes * shards
        base = free_base_port(2 * span)
        self.nodes = [
            Node(self, i, base + (i - 1) * shards, base + span + (i - 1) * shards, extra)
            for i in range(1, nodes + 1)
        ]

    @property
    def peers(self):
        return ",".join(f"{n.node_id}@{n.rpc_address}" for n in self.nodes)

    def node(self, node_id):
        """Node `node_id` (1-based)."""
        assert 1 <= node_id <= len(self.nodes), node_id
        return self.nodes[node_id - 1]

    def live(self):
        return [n for n in self.nodes if n.running()]

    def broker_ids(self, nodes=None):
        return sorted(b for n in (self.nodes if nodes is None else nodes) for b in n.broker_ids)

    def bootstrap_all(self, nodes=None):
        return ",".join(n.bootstrap for n in (self.nodes if nodes is None else nodes))

    def node_of_port(self, port):
        for n in self.nodes:
            if port in n.ports:
                return n
        raise KeyError(port)

    def start(self, nodes=None):
        """Starts the given nodes (default: every one not running) together, then waits until
        each has logged "ready" and listens on all its client ports."""
        todo = [n for n in (self.nodes if nodes is None else nodes) if not n.running()]
        started = [(n, n.spawn()) for n in todo]
        try:
            for n, log_from in started:
                n.wait_ready(log_from)
        except BaseException:
            for n, _ in started:
                n.kill9()
            raise

    def kill9_all(self):
        for n in self.nodes:
            n.kill9()

    stop_all = kill9_all

    def terminate_all(self, timeout=30):
        """SIGTERM to every running node at once; {node id: exit code} once all exited (a
        node still running after `timeout` is killed and counted as None)."""
        running = [n for n in self.nodes if n.proc is not None]
        for n in running:
            if n.proc.poll() is None:
                n.proc.terminate()
        codes = {}
        deadline = time.time() + timeout
        for n in running:
            try:
                codes[n.node_id] = n.proc.wait(timeout=max(0.1, deadline - time.time()))
            except Exception:
                codes[n.node_id] = None
                n.proc.kill()
                n.proc.wait()
            n.proc = None
        return codes

    def formed_view(self, n):
        """(ok, why) for one live node's metadata: every live node's shards are brokers and
        the controller is shard 0 of a live node."""
        try:
            md = n.list_topics(timeout=2)
        except KafkaException as e:
            return False, f"{n}: {e}"
        live = self.live()
        missing = set(self.broker_ids(live)) - set(md.brokers)
        controller = node_of(md.controller_id)
        if missing:
            return False, f"{n}: brokers {sorted(md.brokers)}, missing {sorted(missing)}"
        if md.controller_id < 0 or controller not in [m.node_id for m in live]:
            return False, f"{n}: controller_id {md.controller_id}"
        return True, md.controller_id

    def wait_formed(self, timeout=FORM_TIMEOUT_S):
        """Polls every live node's metadata (confluent-kafka AdminClient) until each lists
        every live node's brokers and names a controller on a live node. Returns
        {node id: controller id} as seen last."""
        deadline = time.time() + timeout
        why = "never asked"
        while True:
            views = {}
            for n in self.live():
                ok, detail = self.formed_view(n)
                if not ok:
                    why = detail
                    break
                views[n.node_id] = detail
            else:
                if views:
                    return views
                why = "no node running"
            if time.time() >= deadline:
                raise AssertionError(f"cluster not formed after {timeout}s: {why}")
            for n in self.nodes:
                if n.crashed():
                    raise AssertionError(f"{n} exited with {n.proc.returncode}")
            time.sleep(0.2)

    def controller_node(self, timeout=FORM_TIMEOUT_S):
        """The node leading the metadata Raft group, once every live node's metadata names
        the same controller, on a live node."""
        deadline = time.time() + timeout

        def agreed():
            views = self.wait_formed(max(1.0, deadline - time.time()))
            ids = set(views.values())
            return len(ids) == 1 and self.node(node_of(ids.pop()))
        return wait_for("the live nodes to agree on the controller", agreed, timeout)

    def dump_logs(self, max_chars=200_000):
        out = []
        for n in self.nodes:
            log = n.log()
            if len(log) > max_chars:
                log = f"[... {len(log) - max_chars} chars cut ...]\n" + log[-max_chars:]
            out.append(f"--- {n} log ({n.log_path}) ---\n{log}")
        return "\n".join(out)

    def panicked(self):
        return [n.node_id for n in self.nodes if "panicked" in n.log()]


# ------------------------------------------------------------------ raw protocol, one node

Metadata = namedtuple("Metadata", "brokers controller_id topics")
# brokers: {id: (host, port)}; topics: {name: (error_code, {partition: leader})}

NONE = 0
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
TOPIC_ALREADY_EXISTS = 36
INVALID_REPLICATION_FACTOR = 38
NOT_CONTROLLER = 41


def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _recv(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the broker")
        out += chunk
    return bytes(out)


def _read_string(buf, at):
    n = struct.unpack_from(">h", buf, at)[0]
    at += 2
    if n < 0:
        return None, at
    return buf[at:at + n].decode(), at + n


def call(port, api_key, version, body, timeout=10, correlation_id=7):
    """One request (v1 header) to 127.0.0.1:port on a new connection; the response body
    after the correlation id."""
    msg = struct.pack(">hhi", api_key, version, correlation_id) + _string("cluster-test") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", _recv(sock, 4))[0]
        response = _recv(sock, size)
    assert struct.unpack(">i", response[:4])[0] == correlation_id
    return response[4:]


def metadata(port, timeout=10):
    """Metadata v1 for all topics (which never auto-creates one) from 127.0.0.1:port."""
    response = call(port, 3, 1, struct.pack(">i", -1), timeout)
    count = struct.unpack_from(">i", response, 0)[0]
    at = 4
    brokers = {}
    for _ in range(count):
        node_id = struct.unpack_from(">i", response, at)[0]
        host, at = _read_string(response, at + 4)
        port_ = struct.unpack_from(">i", response, at)[0]
        _, at = _read_string(response, at + 4)  # rack
        brokers[node_id] = (host, port_)
    controller_id, count = struct.unpack_from(">ii", response, at)
    at += 8
    topics = {}
    for _ in range(count):
        error_code = struct.unpack_from(">h", response, at)[0]
        name, at = _read_string(response, at + 2)
        at += 1  # is_internal
        partitions = {}
        n_partitions = struct.unpack_from(">i", response, at)[0]
        at += 4
        for _ in range(n_partitions):
            _, index, leader = struct.unpack_from(">hii", response, at)
            at += 10
            for _ in range(2):  # replicas, isr
                at += 4 + 4 * struct.unpack_from(">i", response, at)[0]
            partitions[index] = leader
        topics[name] = (error_code, partitions)
    assert at == len(response), f"metadata v1: {len(response) - at} bytes left over"
    return Metadata(brokers, controller_id, topics)


def create_topic_raw(port, name, partitions, replication_factor=1, timeout_ms=10_000,
                     socket_timeout=30):
    """CreateTopics v2 for one topic sent to 127.0.0.1:port itself (no controller lookup):
    (error code, error message)."""
    body = (struct.pack(">i", 1) + _string(name)
            + struct.pack(">ihii", partitions, replication_factor, 0, 0)
            + struct.pack(">ib", timeout_ms, 0))
    response = call(port, 19, 2, body, socket_timeout)
    # throttle_time_ms, [name, error_code, error_message]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == name, got
    error_code = struct.unpack_from(">h", response, at)[0]
    message, _ = _read_string(response, at + 2)
    return error_code, message


def fetch_error(port, topic, partition, offset=0):
    """Fetch v4 (no wait) of one partition sent to 127.0.0.1:port: its error code."""
    t = topic.encode()
    body = (struct.pack(">iiiib", -1, 0, 1, 1 << 20, 0)
            + struct.pack(">ih", 1, len(t)) + t
            + struct.pack(">iiqi", 1, partition, offset, 1 << 20))
    response = call(port, 1, 4, body)
    # throttle_time_ms, [topic, [partition, error_code, ...]]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == topic, got
    assert struct.unpack_from(">i", response, at)[0] == 1
    index, error_code = struct.unpack_from(">ih", response, at + 4)
    assert index == partition
    return error_code


def delete_topic_raw(port, name, timeout_ms=10_000, socket_timeout=30):
    """DeleteTopics v1 for one topic sent to 127.0.0.1:port itself: its error code."""
    body = struct.pack(">i", 1) + _string(name) + struct.pack(">i", timeout_ms)
    response = call(port, 20, 1, body, socket_timeout)
    # throttle_time_ms, [name, error_code]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == name, got
    return struct.unpack_from(">h", response, at)[0]


def create_partitions_raw(port, name, count, timeout_ms=10_000, socket_timeout=30):
    """CreatePartitions v0 (grow `name` to `count` partitions, placement left to the
    broker) sent to 127.0.0.1:port itself: (error code, error message)."""
    body = (struct.pack(">i", 1) + _string(name) + struct.pack(">ii", count, -1)
            + struct.pack(">ib", timeout_ms, 0))
    response = call(port, 37, 0, body, socket_timeout)
    # throttle_time_ms, [name, error_code, error_message]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    got, at = _read_string(response, 8)
    assert got == name, got
    error_code = struct.unpack_from(">h", response, at)[0]
    message, _ = _read_string(response, at + 2)
    return error_code, message


TOPIC_RESOURCE = 2


def alter_topic_configs_raw(port, name, configs, socket_timeout=30):
    """AlterConfigs v0 of one topic (`configs` becomes its whole override set) sent to
    127.0.0.1:port itself: (error code, error message)."""
    body = (struct.pack(">ib", 1, TOPIC_RESOURCE) + _string(name) + struct.pack(">i", len(configs))
            + b"".join(_string(k) + _string(v) for k, v in configs.items())
            + struct.pack(">b", 0))
    response = call(port, 33, 0, body, socket_timeout)
    # throttle_time_ms, [error_code, error_message, resource_type, resource_name]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    error_code = struct.unpack_from(">h", response, 8)[0]
    message, at = _read_string(response, 10)
    got, _ = _read_string(response, at + 1)
    assert got == name, got
    return error_code, message


def topic_config_raw(port, name, key):
    """DescribeConfigs v1 of one topic config asked of 127.0.0.1:port: (error code, value)."""
    body = (struct.pack(">ib", 1, TOPIC_RESOURCE) + _string(name) + struct.pack(">i", 1)
            + _string(key) + struct.pack(">b", 0))
    response = call(port, 32, 1, body)
    # throttle_time_ms, [error_code, error_message, type, name,
    #                    [name, value, read_only, source, is_sensitive, [synonyms]]]
    assert struct.unpack_from(">i", response, 4)[0] == 1
    error_code = struct.unpack_from(">h", response, 8)[0]
    _, at = _read_string(response, 10)
    got, at = _read_string(response, at + 1)
    assert got == name, got
    count = struct.unpack_from(">i", response, at)[0]
    at += 4
    values = {}
    for _ in range(count):
        config, at = _read_string(response, at)
        value, at = _read_string(response, at)
        at += 3  # read_only, config_source, is_sensitive
        synonyms = struct.unpack_from(">i", response, at)[0]
        at += 4
        for _ in range(synonyms):
            _, at = _read_string(response, at)
            _, at = _read_string(response, at)
            at += 1
        values[config] = value
    assert at == len(response), f"describe configs v1: {len(response) - at} bytes left over"
    return error_code, values.get(key)
