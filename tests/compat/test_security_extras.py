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
import subprocess
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as aio_errors
from aiokafka.helpers import create_ssl_context

from test_security import MECHANISMS, PASSWORD, USER, SecureBroker, create, run_broker


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
