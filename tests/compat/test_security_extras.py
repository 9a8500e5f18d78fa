"""Security with the other clients and the operational extras (docs/security.md).

aiokafka (ssl_context; SASL PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and kcat (librdkafka
2.0.2) producing and consuming over SSL, SASL_SSL and SASL_PLAINTEXT, and failing with
their authentication error on a wrong password; the SCRAM credential APIs (KIP-554) from
confluent-kafka's AdminClient; `--max-connections-per-ip`; certificate reload on SIGHUP.
The brokers and certificates are test_security.py's.
"""

import asyncio
import json
import signal
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest
import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as aio_errors
from aiokafka.helpers import create_ssl_context
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from conftest import STRAND_BIN
from test_security import (
    MECHANISMS,
    PASSWORD,
    USER,
    SecureBroker,
    api_versions,
    closed,
    create,
    read_frame,
    run_broker,
)
from test_security import request as request_frame


@pytest.fixture
def secure(tmp_path, request):
    return run_broker(request, SecureBroker(tmp_path))


# --- aiokafka ---------------------------------------------------------------------------


def aiokafka_conf(sb, protocol, mechanism=None, password=PASSWORD, user=USER):
    conf = {"bootstrap_servers": sb.bootstrap(protocol), "security_protocol": protocol}
    if "SSL" in protocol:
        conf["ssl_context"] = create_ssl_context(cafile=str(sb.certs.ca))
    if mechanism:
        conf.update({"sasl_mechanism": mechanism, "sasl_plain_username": user, "sasl_plain_password": password})
    return conf


async def aiokafka_round_trip(conf, topic, count=20):
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **conf)
    await producer.start()
    values = [f"{topic}-{i}".encode() for i in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*[await producer.send(topic, v) for v in values]), 30)
    finally:
        await producer.stop()
    # A consumer group: JoinGroup/SyncGroup/OffsetCommit over the same protocol.
    consumer = AIOKafkaConsumer(
        topic, group_id="aio-" + topic, auto_offset_reset="earliest", enable_auto_commit=False, **conf
    )
    await consumer.start()
    got = []
    try:
        deadline = time.time() + 30
        while len(got) < count and time.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                got += [r.value for r in records]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(values)


def test_aiokafka_over_ssl_and_each_sasl_mechanism(secure):
    cases = [("SSL", None)] + [("SASL_SSL", m) for m in MECHANISMS] + [("SASL_PLAINTEXT", "SCRAM-SHA-256")]
    for protocol, mechanism in cases:
        topic = "aio-" + uuid.uuid4().hex[:8]
        create(secure.confluent("PLAINTEXT"), topic)
        asyncio.run(aiokafka_round_trip(aiokafka_conf(secure, protocol, mechanism), topic))
    before = secure.metric("strand_failed_authentication_total")

    async def wrong_password():
        producer = AIOKafkaProducer(
            request_timeout_ms=5000, **aiokafka_conf(secure, "SASL_SSL", "SCRAM-SHA-512", password="not-it")
        )
        try:
            await producer.start()
        finally:
            await producer.stop()

    # aiokafka gives up on bootstrapping after its authentication error.
    with pytest.raises(aio_errors.KafkaConnectionError):
        asyncio.run(wrong_password())
    assert secure.metric("strand_failed_authentication_total") > before


# --- kcat (librdkafka 2.0.2) ------------------------------------------------------------


def kcat_args(sb, protocol, mechanism=None, password=PASSWORD):
    args = ["-b", sb.bootstrap(protocol), "-X", f"security.protocol={protocol}"]
    if "SSL" in protocol:
        args += ["-X", f"ssl.ca.location={sb.certs.ca}"]
    if mechanism:
        args += ["-X", f"sasl.mechanisms={mechanism}", "-X", f"sasl.username={USER}", "-X", f"sasl.password={password}"]
    return args


def kcat(*args, stdin=None, timeout=60):
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=timeout)


def test_kcat_over_ssl_and_each_sasl_mechanism(secure):
    cases = [("SSL", None)] + [("SASL_SSL", m) for m in MECHANISMS] + [("SASL_PLAINTEXT", "PLAIN")]
    for protocol, mechanism in cases:
        topic = "kc-" + uuid.uuid4().hex[:8]
        create(secure.confluent("PLAINTEXT"), topic)
        conn = kcat_args(secure, protocol, mechanism)
        values = [f"{protocol}-{mechanism}-{i}" for i in range(10)]
        out = kcat(*conn, "-P", "-t", topic, stdin="\n".join(values).encode() + b"\n")
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        md = kcat(*conn, "-L", "-J", "-t", topic)
        assert md.returncode == 0, md.stderr.decode(errors="replace")
        ports = sorted(b["name"].rsplit(":", 1)[1] for b in json.loads(md.stdout)["brokers"])
        assert ports == [str(secure.ports[protocol] + k) for k in range(secure.broker.shards)]
        got = kcat(*conn, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\\n")
        assert got.returncode == 0, got.stderr.decode(errors="replace")
        assert sorted(got.stdout.decode().split()) == sorted(values)
    bad = kcat(*kcat_args(secure, "SASL_SSL", "SCRAM-SHA-256", password="not-it"), "-L", "-m", "5")
    assert bad.returncode != 0
    assert "Authentication failed" in bad.stderr.decode(errors="replace"), bad.stderr


# --- SCRAM credential APIs (KIP-554) -------------------------------------------------------


def scram_error(future):
    with pytest.raises(KafkaException) as raised:
        future.result(15)
    return raised.value.args[0]


def describe_all_by_hand(port):
    """DescribeUserScramCredentials v0 (a flexible version) for all users: (error, results)."""
    header = struct.pack(">hhi", 50, 0, 7) + struct.pack(">h", 6) + b"strand" + b"\x00"
    body = b"\x00" + b"\x00"  # users: null (compact array), no tagged fields
    frame = header + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        data = read_frame(sock)
    assert data is not None
    (cid,) = struct.unpack(">i", data[:4])
    assert cid == 7 and data[4] == 0  # response header v1: no tagged fields
    (_throttle, error) = struct.unpack(">ih", data[5:11])
    pos = 11
    # error_message: compact nullable string (varint length + 1, 0 = null)
    n = data[pos]
    pos += 1 + max(n - 1, 0)
    results = data[pos] - 1  # compact array length + 1
    return error, results


def test_scram_credentials_described_and_altered_over_the_wire(secure):
    admin = AdminClient(secure.confluent("SASL_SSL", "SCRAM-SHA-512"))
    # Create bob with SCRAM-SHA-256 (the client sends the salted password, never the password).
    alter = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"bob-pw-1")]
    )
    assert alter["bob"].result(15) is None
    text = (secure.broker.data_dir / "users.json").read_text()
    assert "bob-pw-1" not in text and '"bob"' in text
    AdminClient(secure.confluent("SASL_SSL", "SCRAM-SHA-256", user="bob", password="bob-pw-1")).list_topics(timeout=10)
    AdminClient(secure.confluent("SASL_PLAINTEXT", "PLAIN", user="bob", password="bob-pw-1")).list_topics(timeout=10)
    # The CLI reads the same store.
    listed = subprocess.run(
        [STRAND_BIN, "user", "list", "--data-dir", str(secure.broker.data_dir)], capture_output=True, text=True
    ).stdout
    assert "bob\tSCRAM-SHA-256 (iterations=8192)" in listed

    described = admin.describe_user_scram_credentials(["bob", "nobody"])
    bob = described["bob"].result(15)
    assert [(i.mechanism, i.iterations) for i in bob.scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    assert scram_error(described["nobody"]).code() == KafkaError.RESOURCE_NOT_FOUND
    everyone = admin.describe_user_scram_credentials().result(15)
    assert sorted(everyone) == ["alice", "bob"]
    assert sorted(i.mechanism for i in everyone["alice"].scram_credential_infos) == [
        ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512,
    ]

    # Kafka's validation: too few iterations; the same (user, mechanism) twice.
    bad = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 1000), b"x")]
    )
    assert scram_error(bad["carol"]).code() == KafkaError.UNACCEPTABLE_CREDENTIAL
    assert "carol" not in (secure.broker.data_dir / "users.json").read_text()

    # Change bob's password: the old one stops working at once.
    admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"bob-pw-2")]
    )["bob"].result(15)
    with pytest.raises(KafkaException):
        AdminClient(secure.confluent("SASL_SSL", "SCRAM-SHA-256", user="bob", password="bob-pw-1")).list_topics(
            timeout=3
        )
    AdminClient(secure.confluent("SASL_SSL", "SCRAM-SHA-256", user="bob", password="bob-pw-2")).list_topics(timeout=10)

    # Delete: bob is gone; deleting again is RESOURCE_NOT_FOUND.
    deletion = [UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_256)]
    assert admin.alter_user_scram_credentials(deletion)["bob"].result(15) is None
    assert scram_error(admin.alter_user_scram_credentials(deletion)["bob"]).code() == KafkaError.RESOURCE_NOT_FOUND
    assert sorted(admin.describe_user_scram_credentials().result(15)) == ["alice"]
    with pytest.raises(KafkaException):
        AdminClient(secure.confluent("SASL_SSL", "SCRAM-SHA-256", user="bob", password="bob-pw-2")).list_topics(
            timeout=3
        )

    # An unauthenticated connection may neither read nor change credentials.
    anonymous = AdminClient(secure.confluent("PLAINTEXT"))
    denied = anonymous.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("mallory", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"m")]
    )
    assert scram_error(denied["mallory"]).code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert scram_error(anonymous.describe_user_scram_credentials(["alice"])["alice"]).code() == (
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    )
    # Describing all users: Kafka's request-level error (read by hand: librdkafka crashes
    # on a request-level error of this API).
    assert describe_all_by_hand(secure.ports["PLAINTEXT"]) == (KafkaError.CLUSTER_AUTHORIZATION_FAILED, 0)
    assert "mallory" not in (secure.broker.data_dir / "users.json").read_text()


# --- --max-connections-per-ip ----------------------------------------------------------------


def test_max_connections_per_ip_counts_the_node_and_closes_at_accept(tmp_path, request):
    # The default limit is 1000, the override for 127.0.0.1 (the tests' address) 3.
    sb = run_broker(
        request,
        SecureBroker(
            tmp_path,
            extra=["--max-connections-per-ip", "1000", "--max-connections-per-ip-overrides", "127.0.0.1:3"],
        ),
    )
    base = sb.ports["PLAINTEXT"]
    # The start-up probe's connections must be gone (a slot is given back when the broker
    # has seen the close).
    deadline = time.time() + 10
    while sb.metric("strand_connections") > 0:
        assert time.time() < deadline
        time.sleep(0.05)
    # Three connections spread over both shards and two listeners: the count is the node's.
    held = [
        socket.create_connection(("127.0.0.1", port), timeout=10)
        for port in (base, base + 1, sb.ports["SASL_PLAINTEXT"])
    ]
    # Each answered (ApiVersions is served before SASL authentication too), so all three
    # are accepted before the next connections arrive.
    for sock in held:
        api_versions(sock)
    # The fourth, on either shard, is closed at once without an answer.
    for port in (base, base + 1):
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert closed(extra, timeout=5)
        extra.close()
    assert sb.metric("strand_connections_rejected_per_ip_total") == 2
    assert "already has the configured maximum of 3 connections" in sb.broker.log()
    # The held connections still work; once one closes, a new one is accepted.
    api_versions(held[0], correlation_id=2)
    held.pop().close()
    deadline = time.time() + 10
    while True:
        sock = socket.create_connection(("127.0.0.1", base), timeout=10)
        sock.sendall(request_frame(18, 0, 9, b""))
        try:
            data = read_frame(sock, timeout=5)
        except OSError:
            data = None
        if data is not None:
            break
        sock.close()
        assert time.time() < deadline, "no connection accepted after one closed"
        time.sleep(0.2)
    sock.close()
    for s in held:
        s.close()


# --- certificate reload on SIGHUP -----------------------------------------------------------


def tls_connect(sb, ca_file):
    """A TLS connection to the SSL listener; (socket, the server certificate in DER)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    raw = socket.create_connection(("127.0.0.1", sb.ports["SSL"]), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    return sock, sock.getpeercert(binary_form=True)


def pem_to_der(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")


def wait_for_log(sb, text, timeout=10):
    deadline = time.time() + timeout
    while text not in sb.broker.log():
        assert time.time() < deadline, f"no {text!r} in the log"
        time.sleep(0.1)


def test_sighup_reloads_certificates_for_new_connections_only(secure, tmp_path):
    certs = secure.certs
    old, old_der = tls_connect(secure, certs.ca)
    assert old_der == pem_to_der(certs.server_cert)
    api_versions(old)

    # A new CA and server certificate replace the files (as a renewal would).
    ca2 = trustme.CA()
    server2 = ca2.issue_cert("localhost", "127.0.0.1")
    ca2_file = tmp_path / "ca2.pem"
    ca2.cert_pem.write_to_path(str(ca2_file))
    staged_cert, staged_key = tmp_path / "new.pem", tmp_path / "new.key"
    server2.private_key_pem.write_to_path(str(staged_key))
    for i, pem in enumerate(server2.cert_chain_pems):
        pem.write_to_path(str(staged_cert), append=i > 0)
    staged_cert.replace(certs.server_cert)
    staged_key.replace(certs.server_key)
    secure.broker.proc.send_signal(signal.SIGHUP)
    wait_for_log(secure, "TLS certificates re-read")

    new, new_der = tls_connect(secure, ca2_file)
    assert new_der == pem_to_der(certs.server_cert) != old_der
    api_versions(new)
    # The connection opened before goes on with its session.
    api_versions(old, correlation_id=2)
    # Clients trusting only the old CA now fail their handshake.
    with pytest.raises(ssl.SSLError):
        tls_connect(secure, certs.ca)

    # A broken key file: the reload fails, logged, and the certificate in force stays.
    certs.server_key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    secure.broker.proc.send_signal(signal.SIGHUP)
    wait_for_log(secure, "TLS certificates not reloaded")
    again, again_der = tls_connect(secure, ca2_file)
    assert again_der == new_der
    api_versions(again)
    for s in (old, new, again):
        s.close()
    assert secure.broker.proc.poll() is None
