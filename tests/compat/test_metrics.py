"""The Prometheus endpoint: parseable by Prometheus' own client, one series per shard, and
counting what real clients did: latency per API, traffic per topic, consumer group lag (as
`strand group describe` reports it). The Grafana dashboard in docs/ uses only metrics a
broker exposes."""

import json
import pathlib
import re
import time
import uuid
import urllib.error
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from conftest import Broker, free_base_port
from helpers import consume, consumer_config, create_topic
from prometheus_client.parser import text_string_to_metric_families
from test_admin_cli import as_json

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


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


def series(found, name):
    """{labels dict as sorted tuple: value} of every sample named `name`."""
    return {labels: v for (n, labels), v in found.items() if n == name}


def metrics_broker(tmp_path, *extra):
    port = free_base_port(1)
    b = Broker(tmp_path, extra=["--metrics-listen", f"127.0.0.1:{port}", *extra])
    b.metrics_port = port
    b.start()
    return b


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
            assert value(found, "strand_connections", shard=shard, listener="PLAINTEXT") >= 0
        assert value(found, "strand_requests_total", shard="0", api="Metadata") > 0

        # Every API asked has a latency histogram counting exactly its requests.
        requests = series(found, "strand_requests_total")
        apis = {dict(labels)["api"] for labels in requests}
        assert {"ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets"} <= apis, apis
        for labels, n in requests.items():
            l = dict(labels)
            assert value(found, "strand_request_latency_seconds_count", **l) == n, l
            assert value(found, "strand_request_latency_seconds_bucket", le="+Inf", **l) == n, l
            assert value(found, "strand_request_latency_seconds_sum", **l) > 0, l
        # ... and nothing else.
        counted = series(found, "strand_request_latency_seconds_count")
        assert set(counted) == set(requests)

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


def test_topic_traffic_and_group_lag(tmp_path, topic):
    b = metrics_broker(tmp_path)
    other = topic + "-other"
    try:
        create_topic(b, topic, 2)
        create_topic(b, other, 1)
        value_bytes = 200
        sent = {0: 100, 1: 60}
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
        for part, n in sent.items():
            for i in range(n):
                p.produce(topic, value=b"x" * value_bytes, partition=part)
        p.produce(other, value=b"y" * 10, partition=0)
        assert p.flush(20) == 0

        found = samples(scrape(b.metrics_port))
        records = sum(sent.values())
        assert value(found, "strand_topic_messages_in_total", topic=topic) == records
        assert value(found, "strand_topic_messages_in_total", topic=other) == 1
        bytes_in = value(found, "strand_topic_bytes_in_total", topic=topic)
        # Record batches: the values plus framing (batch headers, record headers).
        assert records * value_bytes < bytes_in < records * value_bytes * 1.3, bytes_in
        assert value(found, "strand_topic_bytes_out_total", topic=topic) == 0
        assert value(found, "strand_topic_series_omitted") == 0

        got = consume(b, topic, 2, OFFSET_BEGINNING, records)
        assert sum(len(v) for v in got.values()) == records
        found = samples(scrape(b.metrics_port))
        bytes_out = value(found, "strand_topic_bytes_out_total", topic=topic)
        # Each batch was fetched once (whole batches as stored), give or take a re-fetch.
        assert bytes_in <= bytes_out <= 2 * bytes_in, (bytes_in, bytes_out)
        assert value(found, "strand_topic_bytes_out_total", topic=other) == 0

        # A group commits known offsets: lag = high watermark - committed.
        group = "lag-" + uuid.uuid4().hex[:8]
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                      "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, 0, 30), TopicPartition(topic, 1, 45)],
                 asynchronous=False)
        c.close()
        found = samples(scrape(b.metrics_port))
        lag = {dict(l)["partition"]: v for l, v in series(found, "strand_group_lag").items()
               if dict(l)["group"] == group}
        assert lag == {"0": 70, "1": 15}, lag
        assert value(found, "strand_group_lag_sum", group=group) == 85
        assert value(found, "strand_group_lag_omitted_partitions", reason="cap") == 0
        # The same as Strand's kafka-consumer-groups.sh --describe.
        [described] = as_json("group", "describe", group, "-b", b.bootstrap)
        assert described["total_lag"] == 85
        assert {str(x["partition"]): x["lag"] for x in described["partitions"]} == lag

        # Lag is computed at the scrape: more records, more lag.
        for _ in range(10):
            p.produce(topic, value=b"z", partition=0)
        assert p.flush(20) == 0
        found = samples(scrape(b.metrics_port))
        assert value(found, "strand_group_lag", group=group, topic=topic, partition="0") == 80
        assert value(found, "strand_group_lag_sum", group=group) == 95

        # A second group: with the cap at 2 series, only the first two in (group, topic,
        # partition) order are reported, the third counted as left out; the topic cap
        # keeps the first topic by name. Committed offsets survive the restart.
        group2 = "lag2-" + uuid.uuid4().hex[:8]
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group2,
                      "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(other, 0, 0)], asynchronous=False)
        c.close()
        b.kill9()
        b.extra += ["--metrics-group-lag-partitions-max", "2", "--metrics-topics-max", "1"]
        b.start()
        found = samples(scrape(b.metrics_port))
        lag = {(dict(l)["group"], dict(l)["partition"]): v
               for l, v in series(found, "strand_group_lag").items()}
        assert lag == {(group, "0"): 80, (group, "1"): 15}, lag
        assert value(found, "strand_group_lag_omitted_partitions", reason="cap") == 1
        assert value(found, "strand_group_lag_sum", group=group2) is None
        topics = {dict(l)["topic"] for l in series(found, "strand_topic_bytes_in_total")}
        assert topics == {min(topic, other)}
        assert value(found, "strand_topic_series_omitted") == 1
    finally:
        b.kill9()


def exposed_names(text):
    """Every sample name the exposition declares, whether or not it has samples now."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def dashboard_exprs(node):
    """Every PromQL expression of a dashboard: panel targets (rows included) and variables."""
    if isinstance(node, dict):
        for key, v in node.items():
            if key in ("expr", "query") and isinstance(v, str):
                yield v
            elif key == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                yield v["query"]
            else:
                yield from dashboard_exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_exprs(v)


def test_grafana_dashboard_uses_only_exposed_metrics(tmp_path, topic):
    dashboard = json.loads(DASHBOARD.read_text())
    # Importable: a datasource variable every panel uses.
    variables = dashboard["templating"]["list"]
    ds = [v for v in variables if v["type"] == "datasource" and v["query"] == "prometheus"]
    assert len(ds) == 1
    ds_ref = "${%s}" % ds[0]["name"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"]["uid"] == ds_ref, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    used = set()
    for expr in dashboard_exprs(dashboard):
        used.update(re.findall(r"\bstrand_[a-z0-9_]+", expr))
    assert len(used) >= 20, used

    b = metrics_broker(tmp_path)
    try:
        create_topic(b, topic, 1)
        exposed = exposed_names(scrape(b.metrics_port))
    finally:
        b.kill9()
    missing = sorted(used - exposed)
    assert not missing, f"the dashboard queries metrics the broker does not expose: {missing}"
