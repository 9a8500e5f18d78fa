"""The Prometheus endpoint: parseable by Prometheus' own client, one series per shard, and
counting what real clients did."""

import time
import urllib.error
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from conftest import Broker, free_base_port
from helpers import consume, consumer_config, create_topic
from prometheus_client.parser import text_string_to_metric_families


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_requests_bytes_flushes_per_shard(tmp_path, topic):
    port = free_base_port(1)
    b = Broker(tmp_path, extra=["--metrics-listen", f"127.0.0.1:{port}"])
    b.start()
    try:
        create_topic(b, topic, 4)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
        for i in range(400):
            p.produce(topic, value=b"m%d" % i, partition=i % 4)
        assert p.flush(20) == 0
        got = consume(b, topic, 4, OFFSET_BEGINNING, 400)
        assert sum(len(v) for v in got.values()) == 400

        found = samples(scrape(port))
        for shard in ("0", "1"):
            assert value(found, "strand_requests_total", shard=shard, api="Produce") > 0
            assert value(found, "strand_requests_total", shard=shard, api="Fetch") > 0
            assert value(found, "strand_partitions", shard=shard) == 2
            assert value(found, "strand_log_bytes", shard=shard) > 0
            assert value(found, "strand_flush_bytes_count", shard=shard) > 0
            assert value(found, "strand_bytes_in_total", shard=shard) > 0
            produced = value(found, "strand_produce_latency_seconds_count", shard=shard)
            assert produced == value(found, "strand_requests_total", shard=shard, api="Produce")
            assert produced == value(
                found, "strand_produce_latency_seconds_bucket", shard=shard, le="+Inf"
            )
        assert value(found, "strand_requests_total", shard="0", api="Metadata") > 0

        # A fetch past the end gets OFFSET_OUT_OF_RANGE (1), counted per API and code.
        c = Consumer(consumer_config(b, **{"auto.offset.reset": "earliest"}))
        c.assign([TopicPartition(topic, 0, 100_000)])
        deadline = time.time() + 15
        seen = 0
        while seen == 0 and time.time() < deadline:
            m = c.poll(0.2)
            seen += m is not None and m.error() is None
        c.close()
        found = samples(scrape(port))
        errors = sum(
            value(found, "strand_request_errors_total", shard=s, api="Fetch", code="1") or 0
            for s in ("0", "1")
        )
        assert errors >= 1
        # Anything but /metrics is a 404.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as err:
            assert err.code == 404
    finally:
        b.kill9()
