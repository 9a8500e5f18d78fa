//! Shared helpers for the Rust integration tests: start the real `strand` binary on free
//! loopback ports with a temporary data directory, and talk raw Kafka protocol to it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strand::protocol::records::{BatchBuilder, ProducerFields};

pub struct Broker {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub shards: usize,
    pub log: PathBuf,
    extra: Vec<String>,
}

/// Finds `count` consecutive free ports.
pub fn free_ports(count: usize) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base as usize + count >= 65535 {
            continue;
        }
        let all_free =
            (0..count).all(|k| TcpListener::bind(("127.0.0.1", base + k as u16)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free ports");
}

impl Broker {
    pub fn start(shards: usize, extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_ports(shards);
        let log = dir.path().join("broker.log");
        let mut broker = Broker {
            child: None,
            dir,
            port,
            shards,
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        broker.spawn();
        broker
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn command(data_dir: &Path, port: u16, shards: usize, extra: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strand"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--shards")
            .arg(shards.to_string())
            .arg("--log-level")
            .arg("info")
            .args(extra);
        cmd
    }

    pub fn spawn(&mut self) {
        let log_from = self.log_text().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Self::command(&self.data_dir(), self.port, self.shards, &self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start strand");
        self.child = Some(child);
        self.wait_ready(log_from);
    }

    fn wait_ready(&mut self, log_from: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = (0..self.shards)
                .all(|k| TcpStream::connect(("127.0.0.1", self.port + k as u16)).is_ok());
            // Only this run's output counts: the log file keeps earlier runs.
            if ready
                && self
                    .log_text()
                    .get(log_from..)
                    .is_some_and(|l| l.contains("ready"))
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited early ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "broker not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("broker did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn connect(&self, shard: usize) -> Client {
        Client::connect(self.port + shard as u16)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- broker log ---\n{}", self.log_text());
        }
    }
}

/// A blocking raw-protocol client built on kafka-protocol's encoders.
pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            correlation_id: 0,
        }
    }

    pub fn send<R: Encodable>(&mut self, api: ApiKey, version: i16, request: &R) -> i32 {
        let (cid, frame) = self.frame(api, version, request);
        self.stream.write_all(&frame).unwrap();
        cid
    }

    /// A request as it goes on the wire (size prefix included), with its correlation id,
    /// for a test that writes it its own way.
    pub fn frame<R: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &R,
    ) -> (i32, Vec<u8>) {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strand-tests")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        (self.correlation_id, frame)
    }

    pub fn send_raw_frame(&mut self, frame: &[u8]) {
        let mut buf = BytesMut::new();
        buf.put_i32(frame.len() as i32);
        buf.put_slice(frame);
        self.stream.write_all(&buf).unwrap();
    }

    /// Reads one response frame; None when the broker closed the connection.
    pub fn recv_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).ok()?;
        Some(Bytes::from(frame))
    }

    pub fn recv<R: Decodable>(&mut self, api: ApiKey, version: i16, correlation_id: i32) -> R {
        let mut frame = self.recv_frame().expect("connection closed");
        let header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        R::decode(&mut frame, version).unwrap()
    }

    pub fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Q,
    ) -> R {
        let cid = self.send(api, version, request);
        self.recv(api, version, cid)
    }

    /// True if the broker closed the connection (EOF) within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }
}

/// A magic-2 record batch with `count` records `key-i`/`value-i` (uncompressed).
pub fn record_batch(
    count: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    timestamp: i64,
) -> Bytes {
    let mut builder = BatchBuilder::new(timestamp, 0);
    for i in 0..count {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        builder.push(0, Some(key.as_bytes()), Some(value.as_bytes()), Vec::new());
    }
    let producer = ProducerFields {
        producer_id,
        producer_epoch,
        base_sequence,
    };
    let batch = builder.finish(0, 0, producer);
    Bytes::from(batch.expect("an uncompressed batch cannot fail"))
}

/// Splits a fetched records blob into (base offset, record count) per batch.
pub fn batches(mut records: Bytes) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    while records.len() >= 61 {
        let base = (&records[0..8]).get_i64();
        let len = (&records[8..12]).get_i32() as usize;
        let count = (&records[57..61]).get_i32();
        out.push((base, count));
        records.advance(12 + len);
    }
    out
}
