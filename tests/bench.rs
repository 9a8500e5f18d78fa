//! strand-bench against a real broker: produce, consume and end-to-end runs deliver every
//! message, with and without idempotence and compression. Behaviour only; nothing here is
//! timed.

mod common;

use std::path::Path;
use std::process::Command;

use common::Broker;
use serde_json::Value;

/// Runs strand-bench with `args` against the broker and returns its JSON report.
fn bench(broker: &Broker, args: &[&str]) -> Value {
    let json = broker
        .dir
        .path()
        .join(format!("bench-{}.json", rand_suffix()));
    let output = Command::new(env!("CARGO_BIN_EXE_strand-bench"))
        .args(args)
        .arg("--bootstrap")
        .arg(format!("127.0.0.1:{}", broker.port))
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .output()
        .expect("run strand-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "strand-bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    read_json(&json)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn messages(report: &Value, direction: &str) -> u64 {
    report["runs"][0][direction]["messages"].as_u64().unwrap()
}

#[test]
fn produce_consume_and_end_to_end_deliver_every_message() {
    let broker = Broker::start(2, &[]);
    let svg = broker.dir.path().join("e2e.svg");

    let produced = bench(
        &broker,
        &["produce", "-t", "two", "--partitions", "2", "-c", "20000"],
    );
    assert_eq!(messages(&produced, "produce"), 20_000);
    assert!(
        produced["runs"][0]["ack_latency"]["p99_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(produced["runs"][0]["errors"], Value::Array(vec![]));

    // Both partitions (one per shard) hold the messages; a consumer reads them all.
    let consumed = bench(&broker, &["consume", "-t", "two", "--consumers", "2"]);
    assert_eq!(messages(&consumed, "consume"), 20_000);

    // Idempotent, compressed, small batches, several requests in flight.
    let idempotent = bench(
        &broker,
        &[
            "produce",
            "-t",
            "idem",
            "--partitions",
            "2",
            "-c",
            "20000",
            "--idempotent",
            "--compression",
            "lz4",
            "--batch-bytes",
            "16384",
            "--producers",
            "2",
        ],
    );
    assert_eq!(messages(&idempotent, "produce"), 20_000);
    let consumed = bench(&broker, &["consume", "-t", "idem", "-s", "100"]);
    assert_eq!(messages(&consumed, "consume"), 20_000);

    // End to end at a fixed rate: every acknowledged message reaches the consumer, and
    // each carries its send stamp (so every one has an end-to-end latency).
    let e2e = bench(
        &broker,
        &[
            "e2e",
            "-t",
            "live",
            "--partitions",
            "2",
            "-c",
            "20000",
            "-r",
            "20000",
            "--linger-ms",
            "1",
            "--compression",
            "zstd",
            "--svg",
            svg.to_str().unwrap(),
        ],
    );
    assert_eq!(messages(&e2e, "produce"), 20_000);
    assert_eq!(messages(&e2e, "consume"), 20_000);
    assert_eq!(e2e["runs"][0]["e2e_latency"]["count"], 20_000);
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(chart.matches("<polyline").count(), 2, "ack and end-to-end");
}

#[test]
fn compare_runs_the_workload_against_both_brokers() {
    let a = Broker::start(1, &[]);
    let b = Broker::start(1, &[]);
    let report = bench(
        &a,
        &[
            "produce",
            "-t",
            "cmp",
            "-c",
            "5000",
            "--label",
            "first",
            "--compare",
            &format!("127.0.0.1:{}", b.port),
            "--compare-label",
            "second",
        ],
    );
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["label"], "first");
    assert_eq!(runs[1]["label"], "second");
    assert_eq!(runs[1]["produce"]["messages"], 5000);
}
