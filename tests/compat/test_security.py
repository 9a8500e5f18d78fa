"""Security: Kafka-style listeners, TLS and SASL with real clients (docs/security.md).

One broker per test with four listeners (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) on two
shards, certificates made by the test (trustme: a CA, a server certificate for localhost
and 127.0.0.1, a client certificate), users made with `strand user set`. Covered:
confluent-kafka and kafka-python producing and consuming over SSL and over SASL_SSL with
PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; mTLS (a client certificate accepted, its subject
logged as the principal; no certificate refused); each listener's Metadata advertising its
own ports; a wrong password failing with the client's authentication error, answered after
the failed-authentication delay and counted; a request other than ApiVersions/SaslHandshake
before authenticating closing the connection, as does a frame over the pre-authentication
cap; a plaintext client on a TLS port closed (and logged) while the broker keeps serving; a
user added while the broker runs able to log in.
"""

import os
import socket
import struct
import subprocess
import time
import urllib.request
import uuid

import pytest
import trustme
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from prometheus_client.parser import text_string_to_metric_families

from conftest import STRAND_BIN, Broker, free_base_port

USER, PASSWORD = "alice", "alice-secret-1"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
# Kafka's SaslServerAuthenticator cap on a frame before authentication.
PRE_AUTH_FRAME_MAX = 524288
FAILED_AUTH_DELAY_MS = 300


def set_user(data_dir, name, password, tmp_path, mechanisms=("SCRAM-SHA-256", "SCRAM-SHA-512")):
    pw = tmp_path / f"pw-{name}"
    pw.write_text(password + "\n")
    args = [STRAND_BIN, "user", "set", name, "--password-file", str(pw), "--data-dir", str(data_dir)]
    for m in mechanisms:
        args += ["--mechanism", m]
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Certs:
    def __init__(self, tmp_path):
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        client = ca.issue_cert("client.example", common_name="client.example")
        self.ca = tmp_path / "ca.pem"
        self.server_cert = tmp_path / "server.pem"
        self.server_key = tmp_path / "server.key"
        self.client_cert = tmp_path / "client.pem"
        self.client_key = tmp_path / "client.key"
        ca.cert_pem.write_to_path(str(self.ca))
        server.private_key_pem.write_to_path(str(self.server_key))
        for i, pem in enumerate(server.cert_chain_pems):
            pem.write_to_path(str(self.server_cert), append=i > 0)
        client.private_key_pem.write_to_path(str(self.client_key))
        for i, pem in enumerate(client.cert_chain_pems):
            pem.write_to_path(str(self.client_cert), append=i > 0)


class SecureBroker:
    """A broker with all four listeners (shard k of each on its port + k)."""

    def __init__(self, tmp_path, mtls=False, extra=()):
        self.certs = Certs(tmp_path)
        self.broker = Broker(tmp_path)
        b = self.broker
        self.ports = {"PLAINTEXT": b.port}
        for name in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            while True:
                port = free_base_port(b.shards)
                taken = [p for q in self.ports.values() for p in range(q, q + b.shards)]
                if all(p not in taken for p in range(port, port + b.shards)):
                    break
            self.ports[name] = port
        self.metrics_port = free_base_port(1)
        listeners = ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.ports.items())
        # Advertise the SASL_SSL listener as localhost, as a certificate's host name.
        advertised = f"SASL_SSL://localhost:{self.ports['SASL_SSL']}"
        b.extra = [
            "--listeners", listeners,
            "--advertised-listeners", advertised,
            "--tls-cert-file", str(self.certs.server_cert),
            "--tls-key-file", str(self.certs.server_key),
            "--connection-failed-authentication-delay-ms", str(FAILED_AUTH_DELAY_MS),
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            *(["--tls-ca-file", str(self.certs.ca)] if mtls else []),
            *extra,
        ]
        set_user(b.data_dir, USER, PASSWORD, tmp_path)

    def host(self, protocol):
        return "localhost" if protocol == "SASL_SSL" else "127.0.0.1"

    def bootstrap(self, protocol):
        return f"{self.host(protocol)}:{self.ports[protocol]}"

    def confluent(self, protocol, mechanism=None, password=PASSWORD, user=USER, cert=False, **extra):
        conf = {"bootstrap.servers": self.bootstrap(protocol), "security.protocol": protocol}
        if "SSL" in protocol:
            conf["ssl.ca.location"] = str(self.certs.ca)
        if cert:
            conf["ssl.certificate.location"] = str(self.certs.client_cert)
            conf["ssl.key.location"] = str(self.certs.client_key)
        if mechanism:
            conf.update({"sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password})
        conf.update(extra)
        return conf

    def kafka_python(self, protocol, mechanism=None, password=PASSWORD, cert=False):
        conf = {"bootstrap_servers": self.bootstrap(protocol), "security_protocol": protocol}
        if "SSL" in protocol:
            conf["ssl_cafile"] = str(self.certs.ca)
        if cert:
            conf["ssl_certfile"] = str(self.certs.client_cert)
            conf["ssl_keyfile"] = str(self.certs.client_key)
        if mechanism:
            conf.update(
                {"sasl_mechanism": mechanism, "sasl_plain_username": USER, "sasl_plain_password": password}
            )
        return conf

    def metric(self, name, **labels):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


def run_broker(request, sb):
    b = sb.broker
    # Debug lines of the connection code (the principal of a client certificate); the
    # fixture's own --log-level is info, and STRAND_ variables win over flags.
    os.environ["STRAND_LOG_LEVEL"] = "info,strand::server=debug"
    try:
        b.start()
    finally:
        del os.environ["STRAND_LOG_LEVEL"]

    def stop():
        crashed = b.proc is not None and b.proc.poll() is not None
        b.kill9()
        rep = getattr(request.node, "rep_call", None)
        log = b.log()
        if (rep is not None and rep.failed) or crashed or "panicked" in log:
            print(f"--- broker log ({b.log_path}) ---\n{log}")
        assert "panicked" not in log
        assert not crashed, "the broker died during the test"

    request.addfinalizer(stop)
    return sb


@pytest.fixture
def secure(tmp_path, request):
    return run_broker(request, SecureBroker(tmp_path))


@pytest.fixture
def mtls(tmp_path, request):
    return run_broker(request, SecureBroker(tmp_path, mtls=True))


def produce_consume_confluent(conf, topic, count=20):
    producer = Producer(dict(conf, **{"enable.idempotence": True, "linger.ms": 5}))
    values = [f"{topic}-{i}".encode() for i in range(count)]
    for v in values:
        producer.produce(topic, v)
    assert producer.flush(30) == 0
    consumer = Consumer(
        dict(conf, **{"group.id": "g-" + topic, "auto.offset.reset": "earliest", "enable.auto.commit": True})
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.time() + 40
    while len(got) < count and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None:
            assert m.error() is None, m.error()
            got.append(m.value())
    consumer.close()
    assert sorted(got) == sorted(values)


def create(conf, topic, partitions=2):
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(15)
    deadline = time.time() + 15
    while True:
        t = admin.list_topics(topic, timeout=10).topics.get(topic)
        if t is not None and t.error is None and all(p.leader >= 0 for p in t.partitions.values()):
            return admin
        assert time.time() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize(
    "protocol,mechanism",
    [("SSL", None)] + [("SASL_SSL", m) for m in MECHANISMS] + [("SASL_PLAINTEXT", "SCRAM-SHA-512")],
)
def test_confluent_kafka_produces_and_consumes(secure, protocol, mechanism):
    conf = secure.confluent(protocol, mechanism)
    topic = "sec-" + uuid.uuid4().hex[:8]
    admin = create(conf, topic)
    # Metadata names every shard at this listener's advertised endpoints.
    brokers = admin.list_topics(timeout=10).brokers
    base = secure.ports[protocol]
    assert sorted((b.host, b.port) for b in brokers.values()) == [
        (secure.host(protocol), base + k) for k in range(secure.broker.shards)
    ]
    # The admin client's connections show under this listener's name.
    assert secure.metric("strand_connections", listener=protocol) >= 1
    produce_consume_confluent(conf, topic)
    if mechanism:
        assert secure.metric("strand_successful_authentication_total") > 0


@pytest.mark.parametrize("protocol,mechanism", [("SSL", None)] + [("SASL_SSL", m) for m in MECHANISMS])
def test_kafka_python_produces_and_consumes(secure, protocol, mechanism):
    topic = "sec-" + uuid.uuid4().hex[:8]
    create(secure.confluent("PLAINTEXT"), topic)
    conf = secure.kafka_python(protocol, mechanism)
    producer = KafkaProducer(acks="all", **conf)
    values = [f"kp-{i}".encode() for i in range(20)]
    for v in values:
        producer.send(topic, v)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(
        topic, group_id="kp-" + topic, auto_offset_reset="earliest", consumer_timeout_ms=20000, **conf
    )
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == len(values):
            break
    consumer.close()
    assert sorted(got) == sorted(values)


def test_find_coordinator_advertises_the_listener_of_the_request(secure):
    """A consumer group on the SASL_SSL listener is coordinated at a SASL_SSL endpoint:
    librdkafka would otherwise reach a PLAINTEXT port with TLS and never join."""
    topic = "sec-" + uuid.uuid4().hex[:8]
    conf = secure.confluent("SASL_SSL", "SCRAM-SHA-256")
    create(conf, topic)
    admin = AdminClient(conf)
    group = "g-" + topic
    produce_consume_confluent(conf, topic, count=5)
    described = admin.describe_consumer_groups([group])[group].result(timeout=15)
    coordinator = described.coordinator
    assert coordinator.host == "localhost"
    assert coordinator.port in [secure.ports["SASL_SSL"] + k for k in range(secure.broker.shards)]


def test_wrong_password_fails_with_the_clients_authentication_error(secure, caplog):
    errors = []
    conf = secure.confluent(
        "SASL_SSL", "SCRAM-SHA-512", password="not-it", error_cb=lambda e: errors.append(e)
    )
    producer = Producer(conf)
    producer.produce("sec-nope", b"x")
    deadline = time.time() + 15
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors) and time.time() < deadline:
        producer.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert "invalid credentials" in str([e.str() for e in errors])
    # kafka-python: its authentication error (logged by each bootstrap attempt), then no
    # bootstrap.
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        KafkaProducer(
            bootstrap_timeout_ms=5000,
            **secure.kafka_python("SASL_SSL", "PLAIN", password="not-it"),
        )
    assert "SaslAuthenticationFailedError" in caplog.text
    assert secure.metric("strand_failed_authentication_total") >= 2
    assert secure.metric("strand_successful_authentication_total") == 0


# --- the SASL exchange by hand ---------------------------------------------------------


def request(api_key, version, correlation_id, body):
    header = struct.pack(">hhi", api_key, version, correlation_id) + struct.pack(">h", 6) + b"strand"
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def kstring(s):
    return struct.pack(">h", len(s)) + s.encode()


def read_frame(sock, timeout=10):
    sock.settimeout(timeout)
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (size,) = struct.unpack(">i", head)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def closed(sock, timeout=10):
    """Whether the peer closes the connection (reading until EOF) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def api_versions(sock, correlation_id=1):
    sock.sendall(request(18, 0, correlation_id, b""))
    data = read_frame(sock)
    assert data is not None
    (cid, error) = struct.unpack(">ih", data[:6])
    assert (cid, error) == (correlation_id, 0)
    return data


def test_plain_exchange_by_hand_delay_and_close(secure):
    port = secure.ports["SASL_PLAINTEXT"]
    with socket.create_connection(("127.0.0.1", port)) as s:
        api_versions(s)
        s.sendall(request(17, 1, 2, kstring("PLAIN")))
        data = read_frame(s)
        (cid, error, count) = struct.unpack(">ihi", data[:10])
        assert (cid, error) == (2, 0)
        offered, at = [], 10
        for _ in range(count):
            (n,) = struct.unpack(">h", data[at : at + 2])
            offered.append(data[at + 2 : at + 2 + n].decode())
            at += 2 + n
        assert offered == MECHANISMS
        token = f"\0{USER}\0wrong".encode()
        s.sendall(request(36, 0, 3, struct.pack(">i", len(token)) + token))
        started = time.monotonic()
        data = read_frame(s)
        waited = time.monotonic() - started
        (cid, error) = struct.unpack(">ih", data[:6])
        assert (cid, error) == (3, 58)  # SASL_AUTHENTICATION_FAILED
        assert waited >= FAILED_AUTH_DELAY_MS / 1000 * 0.9, waited
        assert closed(s)
    # The right password, then Metadata is served.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request(17, 1, 1, kstring("PLAIN")))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (1, 0)
        token = f"\0{USER}\0{PASSWORD}".encode()
        s.sendall(request(36, 1, 2, struct.pack(">i", len(token)) + token))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (2, 0)
        s.sendall(request(3, 1, 3, struct.pack(">i", -1)))
        assert struct.unpack(">i", read_frame(s)[:4]) == (3,)
        # A frame that does not parse closes the connection; the log line names who
        # the client authenticated as.
        s.sendall(struct.pack(">ihhi", 6, 9999, 0, 4) + b"\0\0")
        assert closed(s)
    deadline = time.monotonic() + 10
    while not [line for line in secure.broker.log().splitlines()
               if "closing connection" in line and f'principal="User:{USER}"' in line]:
        assert time.monotonic() < deadline, "no close line naming the principal"
        time.sleep(0.1)
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM, then closed.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request(17, 1, 1, kstring("GSSAPI")))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (1, 33)
        assert closed(s)


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_metadata_before_authentication_closes_the_connection(secure, listener):
    import ssl

    def connect():
        raw = socket.create_connection(("127.0.0.1", secure.ports[listener]))
        if listener == "SASL_PLAINTEXT":
            return raw
        ctx = ssl.create_default_context(cafile=str(secure.certs.ca))
        return ctx.wrap_socket(raw, server_hostname="localhost")

    with connect() as s:
        api_versions(s)  # allowed before authentication
        s.sendall(request(3, 1, 2, struct.pack(">i", -1)))
        assert closed(s), "a Metadata request before authentication must close the connection"
    with connect() as s:
        # A frame over the pre-authentication cap is refused before it is read.
        s.sendall(struct.pack(">i", PRE_AUTH_FRAME_MAX + 1) + b"\0" * 64)
        assert closed(s)
    assert "ILLEGAL_SASL_STATE" in secure.broker.log()
    # The same frame size is fine once past SASL (a PLAINTEXT listener reads it).
    with socket.create_connection(("127.0.0.1", secure.ports["PLAINTEXT"])) as s:
        api_versions(s)


def test_plaintext_client_on_tls_port_is_closed_and_the_broker_serves_on(secure):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", secure.ports["SSL"])) as s:
            s.sendall(request(18, 0, 1, b""))
            assert closed(s, timeout=5), "a plaintext client on a TLS port must be closed"
    # A librdkafka PLAINTEXT client pointed at the TLS port gets nowhere, and stops.
    admin = AdminClient({"bootstrap.servers": secure.bootstrap("SSL"), "security.protocol": "PLAINTEXT"})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    assert "TLS handshake failed" in secure.broker.log()
    topic = "sec-" + uuid.uuid4().hex[:8]
    conf = secure.confluent("SSL")
    create(conf, topic)
    produce_consume_confluent(conf, topic, count=5)
    produce_consume_confluent(secure.confluent("PLAINTEXT"), topic + "-p", count=5)


def test_user_set_while_running_logs_in_and_stores_no_password(secure, tmp_path):
    set_user(secure.broker.data_dir, "bob", "bob-pass-9", tmp_path, mechanisms=["SCRAM-SHA-256"])
    text = (secure.broker.data_dir / "users.json").read_text()
    assert "bob-pass-9" not in text and PASSWORD not in text
    assert "stored_key" in text and "server_key" in text
    conf = secure.confluent("SASL_SSL", "SCRAM-SHA-256", user="bob", password="bob-pass-9")
    AdminClient(conf).list_topics(timeout=10)
    # bob has only a SHA-256 credential: SCRAM-SHA-512 is refused; PLAIN is checked against it.
    with pytest.raises(KafkaException):
        AdminClient(secure.confluent("SASL_SSL", "SCRAM-SHA-512", user="bob", password="bob-pass-9")).list_topics(
            timeout=3
        )
    AdminClient(secure.confluent("SASL_SSL", "PLAIN", user="bob", password="bob-pass-9")).list_topics(timeout=10)


def test_mtls_client_certificate(mtls):
    topic = "sec-" + uuid.uuid4().hex[:8]
    conf = mtls.confluent("SSL", cert=True)
    create(conf, topic)
    produce_consume_confluent(conf, topic, count=10)
    assert "principal=User:CN=client.example" in mtls.broker.log()
    # kafka-python with its certificate too.
    producer = KafkaProducer(acks="all", **mtls.kafka_python("SSL", cert=True))
    producer.send(topic, b"kp").get(timeout=30)
    producer.close()
    # SASL_SSL needs the certificate as well as the password.
    AdminClient(mtls.confluent("SASL_SSL", "SCRAM-SHA-512", cert=True)).list_topics(timeout=10)
    # No client certificate: the handshake is refused.
    with pytest.raises(KafkaException):
        AdminClient(mtls.confluent("SSL")).list_topics(timeout=3)
    assert "TLS handshake failed" in mtls.broker.log()


def test_cluster_nodes_advertise_each_listener(tmp_path):
    """Two nodes, each with a PLAINTEXT and a SASL_PLAINTEXT listener: Metadata asked on one
    node's SASL port names both nodes' SASL ports (peers register their listeners), and on
    the PLAINTEXT port both nodes' PLAINTEXT ports."""
    from cluster import Cluster, broker_id

    cluster = Cluster(tmp_path / "cluster", nodes=2, shards=1)
    sasl_ports = {}
    for node in cluster.nodes:
        port = free_base_port(1)
        while port in sasl_ports.values() or port in [n.port for n in cluster.nodes] + [
            p for n in cluster.nodes for p in n.rpc_ports
        ]:
            port = free_base_port(1)
        sasl_ports[node.node_id] = port
        node.user_extra = [
            "--listeners",
            f"PLAINTEXT://127.0.0.1:{node.port},SASL_PLAINTEXT://127.0.0.1:{port}",
        ]
        set_user(node.data_dir, USER, PASSWORD, tmp_path)
    try:
        cluster.start()
        cluster.wait_formed()
        for node in cluster.nodes:
            conf = {
                "bootstrap.servers": f"127.0.0.1:{sasl_ports[node.node_id]}",
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "SCRAM-SHA-256",
                "sasl.username": USER,
                "sasl.password": PASSWORD,
            }
            deadline = time.time() + 30
            want = {broker_id(n.node_id, 0): ("127.0.0.1", sasl_ports[n.node_id]) for n in cluster.nodes}
            while True:
                brokers = AdminClient(conf).list_topics(timeout=10).brokers
                got = {b.id: (b.host, b.port) for b in brokers.values()}
                if got == want or time.time() > deadline:
                    break
                time.sleep(0.5)
            assert got == want
            plain = {b.id: b.port for b in node.list_topics(timeout=10).brokers.values()}
            assert plain == {broker_id(n.node_id, 0): n.port for n in cluster.nodes}
    finally:
        logs = cluster.dump_logs() if hasattr(cluster, "dump_logs") else ""
        cluster.kill9_all()
        assert "panicked" not in logs


def test_handshake_v0_takes_bare_tokens(secure):
    """SaslHandshake v0 (older clients): the tokens that follow are bare size-prefixed
    frames, not SaslAuthenticate requests, as in Kafka."""
    port = secure.ports["SASL_PLAINTEXT"]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request(17, 0, 1, kstring("PLAIN")))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (1, 0)
        token = f"\0{USER}\0{PASSWORD}".encode()
        s.sendall(struct.pack(">i", len(token)) + token)
        assert read_frame(s) == b""  # PLAIN's empty server token
        s.sendall(request(3, 1, 2, struct.pack(">i", -1)))
        assert struct.unpack(">i", read_frame(s)[:4]) == (2,)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request(17, 0, 1, kstring("PLAIN")))
        assert struct.unpack(">ih", read_frame(s)[:6]) == (1, 0)
        token = f"\0{USER}\0wrong".encode()
        s.sendall(struct.pack(">i", len(token)) + token)
        assert closed(s)


@pytest.mark.parametrize(
    "protocol,mechanism",
    [("SSL", None), ("SASL_PLAINTEXT", "PLAIN")] + [("SASL_SSL", m) for m in MECHANISMS],
)
def test_admin_cli_over_each_secured_listener(secure, tmp_path, protocol, mechanism):
    """`strand topic …`, `produce` and `consume` take librdkafka's client settings from
    --command-config (and -X), as kafka-topics.sh takes its --command-config."""
    conf = secure.confluent(protocol, mechanism)
    topic = "cli-" + uuid.uuid4().hex[:8]
    settings = {k: v for k, v in conf.items() if k != "bootstrap.servers"}
    props = tmp_path / f"client-{protocol}-{mechanism}.properties"
    props.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    cli = [STRAND_BIN]
    target = ["-b", secure.bootstrap(protocol), "--command-config", str(props)]

    def run(*args, stdin=None):
        return subprocess.run([*cli, *args], input=stdin, capture_output=True, text=True,
                              timeout=60)

    made = run("topic", "create", topic, "--partitions", "2", *target)
    assert made.returncode == 0, made.stderr
    listed = run("topic", "list", "--format", "json", *target)
    assert listed.returncode == 0, listed.stderr
    assert topic in listed.stdout
    sent = run("produce", topic, *target, stdin="a\nb\nc\n")
    assert sent.returncode == 0, sent.stderr
    got = run("consume", topic, "--from-beginning", "-c", "3", "--timeout-ms", "20000", *target)
    assert got.returncode == 0, got.stderr
    assert sorted(got.stdout.split()) == ["a", "b", "c"]
    if mechanism:
        # -X overrides the file: a wrong password is one clear line and exit 1.
        wrong = run("topic", "list", *target, "-X", "sasl.password=wrong")
        assert wrong.returncode == 1
        assert "SASL" in wrong.stderr and "SASL_AUTHENTICATION_FAILED" in wrong.stderr, wrong.stderr
    else:
        # Without the CA the broker's certificate is not trusted.
        untrusted = run("topic", "list", "-b", secure.bootstrap(protocol),
                        "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={props}")
        assert untrusted.returncode == 1
    # An unknown setting is refused rather than ignored.
    typo = run("topic", "list", *target, "-X", "sasl.pasword=x")
    assert typo.returncode == 1 and "unknown client setting" in typo.stderr, typo.stderr
