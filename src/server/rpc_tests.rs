//! Loopback tests of the inter-node links: each "node" is an executor on its own thread
//! with a `PeerLinks` for one shard; nodes listen on ports below 32768 (out of the
//! ephemeral range, so a reconnecting dialer cannot take a port a restarting node needs).

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::{Entry, Message, MessageType};

use super::rpc::{bind, LinkHandler, LinksConfig, PeerLinks, ReplyFuture, RpcLimits, SendError};
use crate::protocol::pieces::concat;
use crate::protocol::rpc::{self, Body, Hello, RaftBatch};

/// How long any awaited condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// A base port such that base .. base + count are free now and not handed to another test
/// of this process.
fn free_base_port(count: u16) -> u16 {
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap();
    let mut seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    seed ^= std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for _ in 0..1000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = 10_000 + ((seed >> 33) % 20_000) as u16;
        if taken.iter().any(|&b| base < b + count && b < base + count) {
            continue;
        }
        let free = (0..count).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok());
        if free {
            taken.push(base);
            return base;
        }
    }
    panic!("no free ports");
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What a node's handler saw, readable from any thread.
#[derive(Default)]
struct Seen {
    raft: Vec<(u64, u64, Message)>,
    replies: Vec<(u64, u64, Bytes)>,
    links: Vec<(u64, bool)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl Recorder {
    fn raft_from(&self, peer: u64) -> Vec<(u64, Message)> {
        let seen = self.0.lock().unwrap();
        seen.raft
            .iter()
            .filter(|(p, _, _)| *p == peer)
            .map(|(_, g, m)| (*g, m.clone()))
            .collect()
    }
    fn raft_count(&self) -> usize {
        self.0.lock().unwrap().raft.len()
    }
}

impl LinkHandler for Recorder {
    fn on_raft(&self, peer: u64, messages: Vec<(u64, Message)>) {
        let mut seen = self.0.lock().unwrap();
        for (group, m) in messages {
            seen.raft.push((peer, group, m));
        }
    }

    /// Answers later (as a forwarded metadata change would): op byte, then the payload
    /// reversed.
    fn on_request(&self, _peer: u64, _req_id: u64, op: u8, payload: Bytes) -> ReplyFuture {
        Box::pin(async move {
            glommio::timer::sleep(Duration::from_millis(5)).await;
            let mut reply = vec![op];
            reply.extend(payload.iter().rev());
            Bytes::from(reply)
        })
    }

    fn on_reply(&self, peer: u64, req_id: u64, payload: Bytes) {
        self.0.lock().unwrap().replies.push((peer, req_id, payload));
    }

    fn on_link(&self, peer: u64, up: bool) {
        self.0.lock().unwrap().links.push((peer, up));
    }
}

/// Node `id`'s config for `shard`; `bases` are every node's rpc base port.
fn config(
    id: u64,
    shard: u16,
    shard_count: u16,
    bases: &[(u64, u16)],
    incarnation: u64,
) -> LinksConfig {
    LinksConfig {
        node_id: id,
        shard,
        shard_count,
        incarnation,
        cluster_id: "test-cluster".into(),
        peers: bases
            .iter()
            .filter(|(n, _)| *n != id)
            .map(|&(n, port)| (n, addr(port)))
            .collect(),
        limits: RpcLimits::default(),
    }
}

/// Binds (waiting, without blocking the executor, for a port a previous incarnation may
/// still hold) and starts.
async fn start(config: LinksConfig, base: u16, handler: Recorder) -> Rc<PeerLinks> {
    let shard = config.shard;
    let deadline = Instant::now() + WAIT;
    let listener = loop {
        match std::net::TcpListener::bind(("127.0.0.1", base + shard)) {
            Ok(listener) => break listener,
            Err(err) if Instant::now() < deadline => {
                assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("bind {}: {err}", base + shard),
        }
    };
    PeerLinks::start(config, listener, Rc::new(handler)).unwrap()
}

/// Runs `body` on a new executor thread.
fn node<F, Fut>(name: &str, body: F) -> glommio::ExecutorJoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .name(name)
        .spawn(body)
        .unwrap()
}

/// Waits (polling) until `cond` holds; fails the test after [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// The same from a plain thread.
fn until_blocking(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Entry data that says where it comes from: `len` bytes derived from (from, to, i).
fn data(from: u64, to: u64, i: u64, len: usize) -> Bytes {
    let seed = from * 1_000_003 + to * 10_007 + i;
    Bytes::from(
        (0..len)
            .map(|k| (seed.wrapping_mul(31).wrapping_add(k as u64 * 7) % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The `i`th append from `from` to `to`: entries of varied sizes, a few of them large.
fn append(from: u64, to: u64, i: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.term = 3;
    m.log_term = 3;
    m.index = 10 * i;
    m.commit = i;
    let sizes = [0usize, 17, 300, 4096, 100_000];
    let entries: Vec<Entry> = (0..(i % 4) + 1)
        .map(|k| Entry {
            term: 3,
            index: m.index + 1 + k,
            data: data(from, to, i * 10 + k, sizes[((i + k) % 5) as usize]),
            ..Default::default()
        })
        .collect();
    m.set_entries(entries.into());
    m
}

/// Checks that `got` are exactly appends 0..n from `from` to `to`, in order.
fn check_appends(got: &[(u64, Message)], from: u64, to: u64, n: u64) {
    assert_eq!(got.len() as u64, n, "messages from {from} to {to}");
    for (i, (group, m)) in got.iter().enumerate() {
        let mut want = append(from, to, i as u64);
        want.from = from;
        want.to = to;
        assert_eq!(*group, 100 + i as u64 % 3);
        assert_eq!(m, &want, "message {i} from {from} to {to}");
    }
}

#[test]
fn raft_messages_flow_between_three_nodes_intact_and_in_order() {
    const N: u64 = 300;
    let base = free_base_port(12);
    let bases: Vec<(u64, u16)> = (1..=3).map(|n| (n, base + 4 * (n as u16 - 1))).collect();
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = bases
        .iter()
        .map(|&(id, port)| {
            let bases = bases.clone();
            let done = done.clone();
            node(&format!("node{id}"), move || async move {
                let rec = Recorder::default();
                let links = start(config(id, 0, 1, &bases, 1), port, rec.clone()).await;
                let peers: Vec<u64> = bases.iter().map(|b| b.0).filter(|&n| n != id).collect();
                until("links up", || peers.iter().all(|&p| links.is_up(p))).await;
                // Queued in one go: the writer coalesces them into few frames.
                for &p in &peers {
                    for i in 0..N {
                        links.send_raft(p, 100 + i % 3, append(id, p, i)).unwrap();
                    }
                }
                until("all messages", || rec.raft_count() as u64 == 2 * N).await;
                for &p in &peers {
                    check_appends(&rec.raft_from(p), p, id, N);
                }
                done.fetch_add(1, Ordering::SeqCst);
                // Stay up until every node has what it expects.
                until("all nodes done", || done.load(Ordering::SeqCst) == 3).await;
                for &p in &peers {
                    let stats = links.stats(p).unwrap();
                    assert!(stats.frames_sent >= 2, "HELLO and RAFT: {stats:?}");
                    assert!(stats.frames_sent < N, "coalesced: {stats:?}");
                    assert_eq!(stats.raft_dropped_full + stats.raft_dropped_down, 0);
                    assert!(stats.frames_received >= 2);
                    assert!(stats.bytes_sent > 1 << 20, "{stats:?}");
                }
                links.shutdown().await;
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn frames_are_cut_below_the_frame_limit() {
    const N: u64 = 200;
    let base = free_base_port(8);
    let bases = [(1, base), (2, base + 4)];
    let received = Arc::new(AtomicBool::new(false));
    let limits = RpcLimits {
        frame_bytes_max: 256 * 1024,
        ..RpcLimits::default()
    };
    let r = received.clone();
    let l = limits.clone();
    let b = node("receiver", move || async move {
        let rec = Recorder::default();
        let mut cfg = config(2, 0, 1, &bases, 1);
        cfg.limits = l;
        let links = start(cfg, base + 4, rec.clone()).await;
        until("all messages", || rec.raft_count() as u64 == N).await;
        check_appends(&rec.raft_from(1), 1, 2, N);
        let stats = links.stats(1).unwrap();
        // 200 appends carry about 4.5 MB of data: at least 18 frames of 256 KiB.
        assert!(stats.frames_received > 18, "{stats:?}");
        r.store(true, Ordering::SeqCst);
        links.shutdown().await;
    });
    let a = node("sender", move || async move {
        let mut cfg = config(1, 0, 1, &bases, 1);
        cfg.limits = limits;
        let links = start(cfg, base, Recorder::default()).await;
        until("link up", || links.is_up(2)).await;
        for i in 0..N {
            links.send_raft(2, 100 + i % 3, append(1, 2, i)).unwrap();
        }
        until("received", || received.load(Ordering::SeqCst)).await;
        links.shutdown().await;
    });
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn shard_one_dials_and_listens_on_port_plus_one() {
    let base = free_base_port(8);
    let bases = [(1, base), (2, base + 4)];
    // Something listening on node 2's base port (shard 0's) must never be dialed.
    let decoy = std::net::TcpListener::bind(("127.0.0.1", base + 4)).unwrap();
    decoy.set_nonblocking(true).unwrap();
    let received = Arc::new(AtomicBool::new(false));
    let r = received.clone();
    let b = node("node2", move || async move {
        let rec = Recorder::default();
        let links = start(config(2, 1, 2, &bases, 1), base + 4, rec.clone()).await;
        until("link up", || links.is_up(1)).await;
        links.send_raft(1, 7, append(2, 1, 0)).unwrap();
        until("message from node 1", || rec.raft_count() == 1).await;
        check_appends(&rec.raft_from(1), 1, 2, 1);
        r.store(true, Ordering::SeqCst);
        links.shutdown().await;
    });
    let a = node("node1", move || async move {
        let rec = Recorder::default();
        let links = start(config(1, 1, 2, &bases, 1), base, rec.clone()).await;
        until("link up", || links.is_up(2)).await;
        links.send_raft(2, 100, append(1, 2, 0)).unwrap();
        until("message from node 2", || rec.raft_count() == 1).await;
        let got = rec.raft_from(2);
        assert_eq!(got[0].0, 7);
        until("received", || received.load(Ordering::SeqCst)).await;
        links.shutdown().await;
    });
    a.join().unwrap();
    b.join().unwrap();
    assert!(
        decoy.accept().is_err(),
        "shard 1 dialed the base port, not base + 1"
    );
}

#[test]
fn requests_are_answered_and_bounded() {
    let base = free_base_port(8);
    let bases = [(1, base), (2, base + 4)];
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let b = node("server", move || async move {
        let links = start(config(2, 0, 1, &bases, 1), base + 4, Recorder::default()).await;
        until("finished", || f.load(Ordering::SeqCst)).await;
        links.shutdown().await;
    });
    let a = node("client", move || async move {
        let rec = Recorder::default();
        let mut cfg = config(1, 0, 1, &bases, 1);
        cfg.limits.requests_queued_max = 4;
        let links = start(cfg, base, rec.clone()).await;
        assert_eq!(
            links.send_request(2, 1, 9, Bytes::from_static(b"early")),
            Err(SendError::LinkDown)
        );
        until("link up", || links.is_up(2)).await;
        for id in 1..=4u64 {
            let payload = Bytes::from(format!("request {id}").into_bytes());
            links.send_request(2, id, 9, payload).unwrap();
        }
        // Queued without a chance to be written: the fifth is over the limit.
        assert_eq!(
            links.send_request(2, 5, 9, Bytes::from_static(b"x")),
            Err(SendError::OutboxFull)
        );
        assert_eq!(
            links.send_request(3, 5, 9, Bytes::from_static(b"x")),
            Err(SendError::UnknownPeer)
        );
        until("4 replies", || rec.0.lock().unwrap().replies.len() == 4).await;
        let mut replies = rec.0.lock().unwrap().replies.clone();
        replies.sort_by_key(|r| r.1);
        for (i, (peer, id, payload)) in replies.iter().enumerate() {
            assert_eq!((*peer, *id), (2, i as u64 + 1));
            let mut want = vec![9u8];
            want.extend(format!("request {id}").bytes().rev());
            assert_eq!(&payload[..], &want[..]);
        }
        // A large payload goes through too, once the queue has drained.
        let big = data(1, 2, 0, 3 << 20);
        links.send_request(2, 6, 1, big.clone()).unwrap();
        until("big reply", || rec.0.lock().unwrap().replies.len() == 5).await;
        let (_, id, payload) = rec.0.lock().unwrap().replies[4].clone();
        assert_eq!(id, 6);
        assert_eq!(payload.len(), big.len() + 1);
        assert!(payload[1..].iter().eq(big.iter().rev()));
        finished.store(true, Ordering::SeqCst);
        links.shutdown().await;
    });
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn a_restarted_peer_is_reconnected_and_traffic_resumes() {
    let base = free_base_port(8);
    let bases = [(1, base), (2, base + 4)];
    let phase = Arc::new(AtomicU64::new(0));
    let p = phase.clone();
    let b = node("restarting", move || async move {
        for incarnation in [1u64, 2] {
            let rec = Recorder::default();
            let links = start(config(2, 0, 1, &bases, incarnation), base + 4, rec.clone()).await;
            until("link up", || links.is_up(1)).await;
            links.send_raft(1, 5, append(2, 1, incarnation)).unwrap();
            until("message from node 1", || rec.raft_count() == 1).await;
            let (_, m) = rec.raft_from(1).pop().unwrap();
            assert_eq!(m.commit, incarnation, "node 1 sent the round's message");
            // HELLO and at least one RAFT frame, numbered by node 1.
            assert!(links.stats(1).unwrap().received_seq >= 2);
            p.store(incarnation * 10, Ordering::SeqCst);
            until("node 1 saw our message", || {
                p.load(Ordering::SeqCst) == incarnation * 10 + 1
            })
            .await;
            links.shutdown().await;
            drop(links);
        }
    });
    let a = node("staying", move || async move {
        let rec = Recorder::default();
        let links = start(config(1, 0, 1, &bases, 7), base, rec.clone()).await;
        for round in [1u64, 2] {
            until("link up", || links.is_up(2)).await;
            if round == 2 {
                let stats = links.stats(2).unwrap();
                assert!(stats.reconnects >= 1, "{stats:?}");
            }
            // Sent until one gets through: right after a restart the link may still be
            // the old one for a moment (dropped messages are Raft's normal weather).
            let mut sent = false;
            until("message from node 2", || {
                if !sent && links.send_raft(2, 5, append(1, 2, round)).is_ok() {
                    sent = true;
                }
                rec.raft_from(2).len() as u64 == round
            })
            .await;
            let (_, m) = rec.raft_from(2).pop().unwrap();
            assert_eq!(m.commit, round);
            assert_eq!(links.stats(2).unwrap().peer_incarnation, Some(round));
            until("node 2 got ours", || {
                phase.load(Ordering::SeqCst) == round * 10
            })
            .await;
            phase.store(round * 10 + 1, Ordering::SeqCst);
            if round == 1 {
                until("link down", || !links.is_up(2)).await;
                assert!(rec.0.lock().unwrap().links.contains(&(2, false)));
                assert_eq!(
                    links.send_raft(2, 5, append(1, 2, 9)),
                    Err(SendError::LinkDown)
                );
                assert!(links.stats(2).unwrap().raft_dropped_down >= 1);
            }
        }
        let ups = rec.0.lock().unwrap().links.iter().filter(|l| l.1).count();
        assert!(ups >= 2);
        links.shutdown().await;
    });
    b.join().unwrap();
    a.join().unwrap();
}

/// A raw connection to `port` that sends `bytes`; true if the node then closes it.
fn closed_after(port: u16, bytes: &[u8]) -> bool {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn hello_bytes(hello: Hello) -> Vec<u8> {
    concat(&rpc::encode(1, 0, &Body::Hello(hello))).to_vec()
}

fn good_hello() -> Hello {
    Hello {
        cluster_id: "test-cluster".into(),
        from_node: 1,
        from_shard: 0,
        shard_count: 1,
        to_node: 2,
        incarnation: 5,
    }
}

fn raft_frame(seq: u64, message: &Message) -> Vec<u8> {
    let mut batch = RaftBatch::new();
    batch.push(42, message);
    concat(&batch.into_frame(seq, 0)).to_vec()
}

/// Runs node 2 (peer: node 1, which never starts) on shard 0 of one; `probe` talks to it
/// from a plain thread, told node 2's port and its recorder.
fn with_node_two(
    limits: RpcLimits,
    probe: impl FnOnce(u16, Recorder, &dyn Fn() -> super::rpc::InboundStats),
) {
    let base = free_base_port(8);
    let bases = [(1, base), (2, base + 4)];
    let rec = Recorder::default();
    let stats = Arc::new(Mutex::new(super::rpc::InboundStats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let (r, s, st, re) = (rec.clone(), stats.clone(), stop.clone(), ready.clone());
    let t = node("node2", move || async move {
        let mut cfg = config(2, 0, 1, &bases, 1);
        cfg.limits = limits;
        let links = start(cfg, base + 4, r).await;
        re.store(true, Ordering::SeqCst);
        while !st.load(Ordering::SeqCst) {
            *s.lock().unwrap() = links.inbound_stats();
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        links.shutdown().await;
    });
    let read_stats = || stats.lock().unwrap().clone();
    until_blocking("node 2 listening", || ready.load(Ordering::SeqCst));
    probe(base + 4, rec, &read_stats);
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
}

#[test]
fn a_wrong_hello_is_refused_and_logged() {
    with_node_two(RpcLimits::default(), |port, rec, stats| {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                hello_bytes(Hello {
                    to_node: 3,
                    ..good_hello()
                }),
                "this is node 2",
            ),
            (
                hello_bytes(Hello {
                    shard_count: 2,
                    ..good_hello()
                }),
                "shard count 2",
            ),
            (
                hello_bytes(Hello {
                    from_shard: 1,
                    shard_count: 1,
                    ..good_hello()
                }),
                "from shard 1",
            ),
            (
                hello_bytes(Hello {
                    from_node: 9,
                    ..good_hello()
                }),
                "not a peer",
            ),
            (
                hello_bytes(Hello {
                    cluster_id: "other".into(),
                    ..good_hello()
                }),
                "cluster",
            ),
            (raft_frame(1, &append(1, 2, 0)), "RAFT frame before HELLO"),
            (
                concat(&rpc::encode(
                    1,
                    0,
                    &Body::Request(rpc::Request {
                        req_id: 1,
                        op: 1,
                        payload: Bytes::new(),
                    }),
                ))
                .to_vec(),
                "is Request, not HELLO",
            ),
            (vec![0, 0, 0, 5, 1, 0, 0, b'X', b'Y'], "undecodable HELLO"),
        ];
        for (i, (bytes, reason)) in cases.iter().enumerate() {
            assert!(closed_after(port, bytes), "case {i} ({reason}) not closed");
            until_blocking("refusal counted", || stats().refused == i as u64 + 1);
            let last = stats().last_refusal.unwrap();
            assert!(last.contains(reason), "case {i}: {last:?} lacks {reason:?}");
        }
        assert_eq!(rec.raft_count(), 0);
        // The right HELLO is accepted, and the frames after it are delivered.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&hello_bytes(good_hello())).unwrap();
        s.write_all(&raft_frame(2, &append(1, 2, 3))).unwrap();
        until_blocking("delivered", || rec.raft_count() == 1);
        let (group, m) = rec.raft_from(1).pop().unwrap();
        assert_eq!(group, 42);
        assert_eq!((m.from, m.to, m.commit), (1, 2, 3));
        assert_eq!(stats().refused, cases.len() as u64);
    });
}

#[test]
fn an_oversize_or_bad_frame_closes_the_connection_and_the_next_one_works() {
    let limits = RpcLimits {
        frame_bytes_max: 1 << 20,
        ..RpcLimits::default()
    };
    with_node_two(limits, |port, rec, stats| {
        let mut over = hello_bytes(good_hello());
        over.extend_from_slice(&((1u32 << 20) + 1).to_be_bytes());
        assert!(closed_after(port, &over));
        until_blocking("refused", || stats().refused == 1);
        assert!(stats().last_refusal.unwrap().contains("exceeds the limit"));

        let mut garbage = hello_bytes(good_hello());
        garbage.extend_from_slice(&[0, 0, 0, 4, 9, 1, 0, 0]);
        assert!(closed_after(port, &garbage));
        until_blocking("refused", || stats().refused == 2);
        assert!(stats().last_refusal.unwrap().contains("undecodable frame"));

        // A frame that announces nearly the limit and stops early holds only a first
        // chunk of the budget, not its announced length.
        let mut partial = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        partial.write_all(&hello_bytes(good_hello())).unwrap();
        partial.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
        partial.write_all(&[2, 2, 0]).unwrap();
        until_blocking("frame begun", || stats().budget_bytes_used > 0);
        std::thread::sleep(Duration::from_millis(50));
        let held = stats().budget_bytes_used;
        assert!(
            held <= 16 * 1024,
            "{held} bytes reserved for 3 bytes received"
        );
        drop(partial);
        until_blocking("budget released", || stats().budget_bytes_used == 0);
        assert_eq!(stats().refused, 3, "closed inside a frame");

        // A frame just under the limit is fine, on the next connection.
        let mut m = append(1, 2, 0);
        m.mut_entries()[0].data = data(1, 2, 0, (1 << 20) - 200);
        m.mut_entries().truncate(1);
        let frame = raft_frame(2, &m);
        assert!(frame.len() - 4 <= 1 << 20);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&hello_bytes(good_hello())).unwrap();
        s.write_all(&frame).unwrap();
        until_blocking("delivered", || rec.raft_count() == 1);
        let (_, got) = rec.raft_from(1).pop().unwrap();
        assert_eq!(got.entries[0].data, m.entries[0].data);
        assert_eq!(stats().refused, 3);
    });
}

#[test]
fn an_overfull_outbox_drops_and_counts() {
    let base = free_base_port(8);
    let bases = [(1, base), (2, base + 4)];
    let checked = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let (c, acc) = (checked.clone(), accepted.clone());
    let b = node("receiver", move || async move {
        let rec = Recorder::default();
        let links = start(config(2, 0, 1, &bases, 1), base + 4, rec.clone()).await;
        until("sender done", || acc.load(Ordering::SeqCst) > 0).await;
        let want = acc.load(Ordering::SeqCst) as usize;
        until("accepted messages", || rec.raft_count() == want).await;
        // Exactly the accepted ones, in order.
        let got = rec.raft_from(1);
        for (i, (_, m)) in got.iter().enumerate() {
            assert_eq!(m.commit, i as u64);
        }
        c.store(true, Ordering::SeqCst);
        links.shutdown().await;
    });
    let a = node("sender", move || async move {
        let mut cfg = config(1, 0, 1, &bases, 1);
        cfg.limits.outbox_bytes_max = 1 << 20;
        cfg.limits.frame_bytes_max = 512 * 1024;
        let links = start(cfg, base, Recorder::default()).await;
        // Not connected yet: dropped as link down.
        assert_eq!(
            links.send_raft(2, 1, append(1, 2, 0)),
            Err(SendError::LinkDown)
        );
        until("link up", || links.is_up(2)).await;
        let mut ok = 0u64;
        let mut full = 0u64;
        for i in 0..100u64 {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgAppend);
            m.commit = ok;
            let e = Entry {
                index: 1,
                data: data(1, 2, i, 100_000),
                ..Default::default()
            };
            m.set_entries(vec![e].into());
            match links.send_raft(2, 1, m) {
                Ok(()) => ok += 1,
                Err(SendError::OutboxFull) => full += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(
            (9..=10).contains(&ok),
            "1 MiB holds about ten 100 kB messages: {ok}"
        );
        let mut huge = append(1, 2, 0);
        huge.mut_entries()[0].data = data(1, 2, 0, 600_000);
        assert_eq!(links.send_raft(2, 1, huge), Err(SendError::TooLarge));
        let stats = links.stats(2).unwrap();
        assert_eq!(stats.raft_dropped_full, full);
        assert_eq!(stats.raft_dropped_down, 1);
        assert_eq!(stats.raft_dropped_too_large, 1);
        accepted.store(ok, Ordering::SeqCst);
        until("receiver checked", || checked.load(Ordering::SeqCst)).await;
        let stats = links.stats(2).unwrap();
        assert_eq!(stats.outbox_bytes, 0);
        assert!(stats.acked <= stats.last_seq_sent);
        links.shutdown().await;
    });
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn shutdown_closes_the_listener_and_the_links() {
    let base = free_base_port(8);
    let bases = [(1, base), (2, base + 4)];
    let t = node("alone", move || async move {
        let links = start(config(1, 0, 1, &bases, 1), base, Recorder::default()).await;
        // Accepting now.
        let probe = std::net::TcpStream::connect(("127.0.0.1", base));
        assert!(probe.is_ok());
        until("connection seen", || links.inbound_stats().open == 1).await;
        links.shutdown().await;
        assert_eq!(links.inbound_stats().open, 0);
        assert!(std::net::TcpStream::connect(("127.0.0.1", base)).is_err());
        assert_eq!(
            links.send_raft(2, 1, Message::default()),
            Err(SendError::Stopped)
        );
        // The port is free again for the next incarnation.
        drop(bind(addr(base), 0).unwrap());
    });
    t.join().unwrap();
}
