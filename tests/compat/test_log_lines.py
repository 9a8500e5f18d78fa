"""What the broker logs about bad input: one line per event (a decoder message that ends in
a newline must not split it), and at most CLIENT_LOG_LINES_MAX lines about one client per
CLIENT_LOG_INTERVAL_S on a shard, then one line saying how many were suppressed."""

import re
import socket
import struct
import time

# src/util.rs: CLIENT_LOG_LINES_MAX, CLIENT_LOG_INTERVAL_MS.
CLIENT_LOG_LINES_MAX = 10
CLIENT_LOG_INTERVAL_S = 10.0

# tracing-subscriber's format: "2026-01-01T00:00:00.000000Z  WARN target: message fields".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\s+(TRACE|DEBUG|INFO|WARN|ERROR) ")


def truncated_metadata_request(correlation_id):
    """Metadata v1 with a null client id, one topic whose name claims 50 bytes, and no
    bytes after it: the decoder runs out of bytes inside a string, and kafka-protocol's
    message for that ("Not enough bytes remaining in buffer!") ends in a newline."""
    frame = struct.pack(">hhih", 3, 1, correlation_id, -1) + struct.pack(">ih", 1, 50)
    return struct.pack(">i", len(frame)) + frame


def truncated_client_id_request(correlation_id):
    """A Metadata v1 header whose client id claims 100 bytes that never come."""
    frame = struct.pack(">hhih", 3, 1, correlation_id, 100)
    return struct.pack(">i", len(frame)) + frame


def send_and_wait_close(port, payload, timeout=10):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(payload)
        s.settimeout(timeout)
        try:
            while s.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError("the broker did not close the connection")


def wait_for(predicate, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_malformed_request_is_logged_on_one_line(broker):
    port = broker.ports[0]
    send_and_wait_close(port, truncated_metadata_request(1))
    send_and_wait_close(port, truncated_client_id_request(2))
    assert wait_for(
        lambda: "cannot decode" in broker.log() and "malformed request header" in broker.log()
    ), broker.log()
    log = broker.log()
    lines = [line for line in log.splitlines() if line.strip()]
    continuation = [line for line in lines if not LOG_LINE.match(line)]
    assert continuation == [], f"log entries span lines:\n{log}"
    for what in ("cannot decode Metadata v1 request", "malformed request header"):
        (line,) = [line for line in lines if what in line]
        assert "Not enough bytes" in line and "peer=" in line, line


def test_warnings_about_one_client_are_rate_limited(broker):
    port = broker.ports[0]
    def shard_closes():
        return [
            line for line in broker.log().splitlines()
            if "closing connection" in line and re.search(r"\bshard=0\b", line)
        ]

    burst = 4 * CLIENT_LOG_LINES_MAX
    started = time.monotonic()
    for i in range(burst):
        send_and_wait_close(port, truncated_metadata_request(i))
    elapsed = time.monotonic() - started
    # The lines of closed connections are written before the close; give stragglers a moment.
    wait_for(lambda: len(shard_closes()) >= CLIENT_LOG_LINES_MAX, timeout=10)
    logged = shard_closes()
    # However slow the machine, no interval logs more than the limit.
    intervals = int(elapsed // CLIENT_LOG_INTERVAL_S) + 1
    print(f"\n{burst} bad requests in {elapsed:.2f} s: {len(logged)} lines logged")
    assert CLIENT_LOG_LINES_MAX <= len(logged) <= CLIENT_LOG_LINES_MAX * intervals, logged
    assert any("further lines about this client suppressed" in line for line in logged)

    # Once the interval is over, the next line about the client reports what was dropped.
    def reported():
        send_and_wait_close(port, truncated_metadata_request(9999))
        return re.search(r"suppressed (\d+) similar lines about this client", broker.log())

    assert wait_for(reported, timeout=CLIENT_LOG_INTERVAL_S * 3)
    counts = [int(n) for n in re.findall(r"suppressed (\d+) similar lines", broker.log())]
    assert counts[0] >= burst - CLIENT_LOG_LINES_MAX * intervals, counts
    # Other shards keep their own allowance.
    send_and_wait_close(broker.ports[1], truncated_metadata_request(1))
    assert wait_for(lambda: any(
        "closing connection" in line and re.search(r"\bshard=1\b", line)
        for line in broker.log().splitlines()
    ))


def api_versions_request(correlation_id, client_id):
    """ApiVersions v0 from `client_id`."""
    cid = client_id.encode()
    frame = struct.pack(">hhih", 18, 0, correlation_id, len(cid)) + cid
    return struct.pack(">i", len(frame)) + frame


def test_json_log_lines_name_the_client(tmp_path):
    """--log-format json: every line is one JSON object; the line about a connection closed
    for a malformed request names the client's address and the client id its earlier
    request carried."""
    import json
    from conftest import Broker
    b = Broker(tmp_path, extra=["--log-format", "json"])
    b.start()
    try:
        with socket.create_connection(("127.0.0.1", b.ports[0])) as s:
            s.sendall(api_versions_request(1, "billing-app"))
            size = struct.unpack(">i", s.recv(4))[0]
            while size > 0:
                size -= len(s.recv(size))
            s.sendall(truncated_metadata_request(2))
            s.settimeout(10)
            try:
                while s.recv(1 << 16):
                    pass
            except ConnectionResetError:
                pass

        def closed_line():
            lines = [json.loads(line) for line in b.log().splitlines() if line.strip()]
            return next((e for e in lines if "closing connection" in e["fields"].get("message", "")), None)
        assert wait_for(closed_line), b.log()
        event = closed_line()
        assert event["level"] == "WARN", event
        assert event["fields"]["client_id"] == "billing-app", event
        assert event["fields"]["peer"].startswith("127.0.0.1:"), event
        assert "timestamp" in event and event["target"].startswith("strand"), event
    finally:
        b.terminate()
