//! Replicas of one partition on a simulated network, in one executor: messages delayed,
//! reordered, dropped, a node cut off, nodes crashed (dropped without closing) and
//! restarted from their files — seeded, so a failing seed replays. Checked after every
//! step: replicas never disagree on a committed entry. At the end, once healed: every
//! replica holds the same bytes up to the same high watermark, and every acknowledged
//! proposal is there exactly once.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Proposals acknowledged over the runs of the test.
static ACKNOWLEDGED: AtomicU64 = AtomicU64::new(0);
/// Batches the idempotent producer sent again.
static PRODUCER_RETRIES: AtomicU64 = AtomicU64::new(0);

use bytes::Bytes;
use raft::eraftpb::Message;

use super::replica::{ProposeError, Proposed, Replica, ReplicaTiming};
use crate::protocol::batch::testing::{TestBatch, TestRecord};
use crate::protocol::batch::{iter_batches, parse_batch};
use crate::storage::log::LogConfig;

use crate::storage::testing::{run_in_tempdir as run, Rng};

const NODES: u64 = 3;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        cache_bytes: 4096,
        ..LogConfig::default()
    }
}

/// Batches carry their tag in their base timestamp, after this time (a date in the future
/// of any run: idle producers are forgotten by their last timestamp).
const TAG_EPOCH_MS: i64 = 4_000_000_000_000;

/// A batch whose base timestamp is its tag: what the checker finds it by.
fn batch(tag: u64, rng: &mut Rng) -> Bytes {
    let records = 1 + rng.below(3) as usize;
    Bytes::from(
        TestBatch {
            base_timestamp: TAG_EPOCH_MS + tag as i64,
            records: (0..records)
                .map(|i| {
                    TestRecord::value(
                        format!("{tag}-{i}-{}", "x".repeat(rng.below(300) as usize)).as_bytes(),
                    )
                })
                .collect(),
            ..Default::default()
        }
        .encode(),
    )
}

struct Proposal {
    tag: u64,
    index: u64,
    term: u64,
}

const PRODUCER_ID: i64 = 7;

/// An idempotent producer with one batch in flight: it retries a batch (same sequence)
/// to whichever replica leads until the batch is acknowledged, as a Kafka producer does
/// across a leader change. Its acknowledged batches must each be stored exactly once.
#[derive(Default)]
struct Producer {
    next_sequence: i32,
    /// The batch being sent: its first sequence and bytes.
    current: Option<(i32, Bytes)>,
    /// Where the leader put it, and for how many steps the answer has been awaited.
    waiting: Option<(Proposed, u32)>,
    acked: Vec<i32>,
    retries: u64,
}

struct Sim {
    root: PathBuf,
    timing: ReplicaTiming,
    nodes: Vec<Option<Replica>>,
    net: VecDeque<Message>,
    rng: Rng,
    isolated: Option<u64>,
    drop_percent: u64,
    next_tag: u64,
    pending: Vec<Proposal>,
    acked: BTreeSet<u64>,
    producer: Producer,
}

impl Sim {
    /// Three replicas opened in `root`, messages dropped at `drop_percent`.
    async fn start(root: &Path, seed: u64, drop_percent: u64) -> Sim {
        let mut sim = Sim {
            root: root.to_path_buf(),
            timing: ReplicaTiming::default(),
            nodes: (0..NODES).map(|_| None).collect(),
            net: VecDeque::new(),
            rng: Rng(seed),
            isolated: None,
            drop_percent,
            next_tag: 0,
            pending: Vec::new(),
            acked: BTreeSet::new(),
            producer: Producer::default(),
        };
        for id in 1..=NODES {
            std::fs::create_dir_all(Sim::dir(root, id)).unwrap();
            sim.open(id).await;
        }
        sim
    }

    fn dir(root: &Path, id: u64) -> PathBuf {
        root.join(format!("node-{id}"))
    }

    async fn open(&mut self, id: u64) {
        let voters: Vec<u64> = (1..=NODES).collect();
        let replica = Replica::open(
            &Self::dir(&self.root, id),
            config(),
            id,
            &voters,
            &self.timing,
        )
        .await
        .unwrap_or_else(|e| panic!("node {id} did not open: {e}"));
        self.nodes[(id - 1) as usize] = Some(replica);
    }

    fn live(&mut self) -> impl Iterator<Item = &mut Replica> {
        self.nodes.iter_mut().flatten()
    }

    fn collect(&mut self) {
        let mut out = Vec::new();
        for node in self.live() {
            out.extend(node.take_outbox());
        }
        self.net.extend(out);
    }

    fn cut(&self, m: &Message) -> bool {
        self.isolated.is_some_and(|i| m.from == i || m.to == i)
    }

    fn deliver(&mut self, count: usize, lossy: bool) {
        for _ in 0..count {
            if self.net.is_empty() {
                return;
            }
            // Mostly in order; sometimes a later message overtakes.
            let at = if lossy {
                self.rng.below(self.net.len().min(6) as u64) as usize
            } else {
                0
            };
            let message = self.net.remove(at).expect("in range");
            if self.cut(&message) || (lossy && self.rng.below(100) < self.drop_percent) {
                continue;
            }
            if let Some(Some(node)) = self.nodes.get_mut((message.to - 1) as usize) {
                node.step(message).unwrap();
            }
        }
    }

    async fn persist(&mut self, id: u64) {
        if let Some(node) = &mut self.nodes[(id - 1) as usize] {
            node.persist().await.unwrap();
            node.fetch_wanted().await.unwrap();
        }
    }

    fn produce(&mut self) {
        let producer = &mut self.producer;
        if let Some((proposed, waited)) = &mut producer.waiting {
            let answer = self
                .nodes
                .iter()
                .flatten()
                .find_map(|n| n.committed_with(proposed.index, proposed.term));
            match answer {
                Some(true) => {
                    let (sequence, _) = producer.current.take().expect("a batch in flight");
                    producer.acked.push(sequence);
                    producer.waiting = None;
                }
                Some(false) => producer.waiting = None,
                None if *waited > 40 => producer.waiting = None,
                None => *waited += 1,
            }
            return;
        }
        if producer.current.is_none() {
            self.next_tag += 1;
            let count = 1 + self.rng.below(3) as i32;
            let batch = TestBatch {
                base_timestamp: TAG_EPOCH_MS + self.next_tag as i64,
                producer_id: PRODUCER_ID,
                producer_epoch: 0,
                base_sequence: producer.next_sequence,
                records: (0..count)
                    .map(|i| {
                        TestRecord::value(format!("p-{}-{i}", producer.next_sequence).as_bytes())
                    })
                    .collect(),
                ..Default::default()
            };
            producer.current = Some((producer.next_sequence, Bytes::from(batch.encode())));
            producer.next_sequence += count;
        } else {
            producer.retries += 1;
        }
        let Some(node) = self.nodes.iter_mut().flatten().find(|n| n.is_leader()) else {
            return;
        };
        let (_, bytes) = producer.current.as_ref().expect("just set");
        let info = parse_batch(bytes).unwrap();
        match node.propose_checked(bytes.clone(), &info) {
            Ok(proposed) => producer.waiting = Some((proposed, 0)),
            Err(ProposeError::NotLeader) | Err(ProposeError::Dropped) => {}
            Err(ProposeError::Refused(code)) => {
                panic!("the leader refused a retry with error {code}")
            }
        }
    }

    fn propose(&mut self) {
        if self.rng.below(2) == 0 {
            return self.produce();
        }
        let Some(node) = self.nodes.iter_mut().flatten().find(|n| n.is_leader()) else {
            return;
        };
        self.next_tag += 1;
        let tag = self.next_tag;
        let data = batch(tag, &mut self.rng);
        if let Ok((index, term)) = node.propose(data) {
            self.pending.push(Proposal { tag, index, term });
        }
    }

    /// Acknowledges proposals some live replica knows committed with their term.
    fn check_acks(&mut self) {
        let nodes = &self.nodes;
        let acked = &mut self.acked;
        self.pending.retain(|p| {
            for node in nodes.iter().flatten() {
                match node.committed_with(p.index, p.term) {
                    Some(true) => {
                        acked.insert(p.tag);
                        return false;
                    }
                    // Another entry was committed at its index: never acknowledged.
                    Some(false) => return false,
                    None => {}
                }
            }
            true
        });
    }

    /// No two replicas disagree on the term of an entry both have committed.
    fn check_agreement(&self) {
        let nodes: Vec<&Replica> = self.nodes.iter().flatten().collect();
        for a in &nodes {
            for b in &nodes {
                if a.id() >= b.id() {
                    continue;
                }
                let (la, lb) = (a.log().borrow(), b.log().borrow());
                let (ta, tb) = (la.raft().unwrap(), lb.raft().unwrap());
                let upto = ta.committed().min(tb.committed());
                for index in upto.saturating_sub(64).max(1)..=upto {
                    if let (Some(x), Some(y)) = (ta.term(index), tb.term(index)) {
                        assert_eq!(
                            x,
                            y,
                            "nodes {} and {} disagree on committed entry {index}",
                            a.id(),
                            b.id()
                        );
                        assert_eq!(ta.offsets(index), tb.offsets(index));
                    }
                }
            }
        }
    }
}

async fn read_everything(replica: &Replica) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let plan = replica.log().borrow().read_plan(offset, 64 * 1024).unwrap();
        let data = plan.read().await.unwrap();
        if data.is_empty() {
            return out;
        }
        let bytes = data.to_bytes();
        for item in iter_batches(&bytes) {
            let (at, info) = item.expect("valid batches");
            out.push(bytes[at..at + info.len].to_vec());
            offset = info.last_offset() + 1;
        }
    }
}

fn simulate(seed: u64, steps: usize) {
    // Shown with a failure (STRAND_RAFT_SIM_FIRST_SEED=<seed> STRAND_RAFT_SIM_SEEDS=1
    // replays it; raft-rs randomises election timeouts, so a replay may need a few runs).
    println!("simulation seed {seed}");
    run(move |root| async move {
        let mut sim = Sim::start(&root, seed, 5).await;
        let mut crashes = 0;
        for _ in 0..steps {
            match sim.rng.below(200) {
                0..=39 => {
                    for node in sim.live() {
                        node.tick().unwrap();
                    }
                }
                40..=109 => sim.deliver(8, true),
                110..=143 => sim.propose(),
                144..=189 => {
                    let id = 1 + sim.rng.below(NODES);
                    sim.persist(id).await;
                }
                190..=191 => {
                    let id = 1 + sim.rng.below(NODES);
                    if sim.nodes[(id - 1) as usize].take().is_some() {
                        crashes += 1;
                    }
                }
                192..=196 => {
                    let id = 1 + sim.rng.below(NODES);
                    if sim.nodes[(id - 1) as usize].is_none() {
                        sim.open(id).await;
                    }
                }
                _ => {
                    sim.isolated = match sim.isolated {
                        Some(_) => None,
                        None => Some(1 + sim.rng.below(NODES)),
                    }
                }
            }
            sim.collect();
            sim.check_acks();
            sim.check_agreement();
        }

        // Heal: every node up, nothing lost or cut; run until all agree and are settled.
        sim.isolated = None;
        for id in 1..=NODES {
            if sim.nodes[(id - 1) as usize].is_none() {
                sim.open(id).await;
            }
        }
        let mut settled = false;
        for _ in 0..2000 {
            for node in sim.live() {
                node.tick().unwrap();
            }
            sim.collect();
            while !sim.net.is_empty() {
                sim.deliver(64, false);
                for id in 1..=NODES {
                    sim.persist(id).await;
                }
                sim.collect();
            }
            sim.check_acks();
            sim.check_agreement();
            let nodes: Vec<&Replica> = sim.nodes.iter().flatten().collect();
            let leader = nodes.iter().any(|n| n.is_leader());
            let last: Vec<u64> = nodes
                .iter()
                .map(|n| n.log().borrow().raft().unwrap().last_index())
                .collect();
            let committed: Vec<u64> = nodes
                .iter()
                .map(|n| n.log().borrow().raft().unwrap().committed())
                .collect();
            if leader && last.iter().all(|&l| l == last[0]) && committed == last {
                settled = true;
                break;
            }
        }
        if !settled {
            for node in sim.nodes.iter().flatten() {
                let log = node.log().borrow();
                let tail = log.raft().unwrap();
                eprintln!(
                    "node {}: leader {} term {} raft commit {} log last {} log committed {} hw {} next {}",
                    node.id(),
                    node.leader(),
                    node.term(),
                    node.commit(),
                    tail.last_index(),
                    tail.committed(),
                    log.high_watermark(),
                    log.next_offset()
                );
            }
        }
        assert!(settled, "seed {seed}: the replicas did not converge");
        assert!(sim.pending.is_empty() || sim.pending.iter().all(|p| p.index > 0));
        let mut contents = Vec::new();
        for node in sim.nodes.iter().flatten() {
            let (hw, end) = {
                let log = node.log().borrow();
                (log.high_watermark(), log.next_offset())
            };
            assert_eq!(hw, end, "seed {seed}");
            contents.push(read_everything(node).await);
        }
        for other in &contents[1..] {
            assert!(other == &contents[0], "seed {seed}: replicas differ");
        }
        let mut seen = BTreeSet::new();
        let mut sequences = Vec::new();
        for batch in &contents[0] {
            let info = parse_batch(batch).unwrap();
            if info.is_control() {
                continue;
            }
            if info.producer_id == PRODUCER_ID {
                sequences.push(info.base_sequence);
            }
            let tag = (info.base_timestamp - TAG_EPOCH_MS) as u64;
            assert!(seen.insert(tag), "seed {seed}: tag {tag} stored twice");
        }
        let missing: Vec<_> = sim.acked.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "seed {seed}: acknowledged and lost: {missing:?}"
        );
        // The producer's batches: in sequence order, none twice, every acknowledged one.
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: producer batches out of order or duplicated: {sequences:?}"
        );
        for sequence in &sim.producer.acked {
            assert!(
                sequences.contains(sequence),
                "seed {seed}: acknowledged batch {sequence} lost"
            );
        }
        PRODUCER_RETRIES.fetch_add(sim.producer.retries, Ordering::Relaxed);
        ACKNOWLEDGED.fetch_add(sim.acked.len() as u64, Ordering::Relaxed);
        // Closing and reopening every replica keeps the same log. The commit a replica
        // recorded may be older than the last it knew (a crash between a round's log
        // sync and its hard-state write), so the entries after it are committed again
        // once a leader is elected, behind the new leader's control batch.
        sim.isolated = None;
        for id in 1..=NODES {
            sim.nodes[(id - 1) as usize] = None;
            sim.open(id).await;
        }
        let mut settled = false;
        for _ in 0..2000 {
            for node in sim.live() {
                node.tick().unwrap();
            }
            sim.collect();
            sim.deliver(1000, false);
            for id in 1..=NODES {
                sim.persist(id).await;
            }
            settled = sim.nodes.iter().flatten().any(|n| n.is_leader())
                && sim.nodes.iter().flatten().all(|n| {
                    let log = n.log().borrow();
                    let tail = log.raft().unwrap();
                    tail.committed() == tail.last_index()
                        && log.high_watermark() == log.next_offset()
                        && log.next_offset() > 0
                });
            if settled {
                break;
            }
        }
        assert!(
            settled,
            "seed {seed}: the reopened replicas did not converge"
        );
        for id in 1..=NODES {
            let node = sim.nodes[(id - 1) as usize].as_ref().unwrap();
            let after = read_everything(node).await;
            assert!(
                after.len() >= contents[0].len()
                    && after[..contents[0].len()] == contents[0][..]
                    && after[contents[0].len()..]
                        .iter()
                        .all(|b| parse_batch(b).unwrap().is_control()),
                "seed {seed}: node {id} after reopen"
            );
        }
        if std::env::var_os("STRAND_RAFT_SIM_VERBOSE").is_some() {
            let term = sim.nodes.iter().flatten().map(|n| n.term()).max();
            eprintln!(
                "seed {seed}: {} acknowledged, {} producer batches acknowledged ({} retries), {} batches, {crashes} crashes, last term {term:?}",
                sim.acked.len(),
                sim.producer.acked.len(),
                sim.producer.retries,
                contents[0].len()
            );
        }
    });
}

#[test]
fn replicas_agree_and_keep_every_acknowledged_entry_under_faults() {
    // STRAND_RAFT_SIM_SEEDS=N runs more seeds (a longer search by hand).
    let seeds = std::env::var("STRAND_RAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6u64);
    let first = std::env::var("STRAND_RAFT_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    for seed in first..first + seeds {
        simulate(seed, 1500);
    }
    // The faults must leave room for progress, or the test proves nothing.
    let acknowledged = ACKNOWLEDGED.load(Ordering::Relaxed);
    assert!(
        acknowledged >= 5 * seeds,
        "{acknowledged} acknowledged in {seeds} runs"
    );
    let retries = PRODUCER_RETRIES.load(Ordering::Relaxed);
    assert!(retries > 0, "the producer never had to retry");
}

#[test]
fn the_read_lease_needs_a_majority_to_answer_the_leaders_heartbeat() {
    run(|root| async move {
        let mut sim = Sim::start(&root, 7, 0).await;
        // Rounds of: tick, exchange every message, persist every node.
        async fn rounds(sim: &mut Sim, n: usize, tick: bool) {
            for _ in 0..n {
                if tick {
                    for node in sim.live() {
                        node.tick().unwrap();
                    }
                }
                for _ in 0..4 {
                    sim.collect();
                    sim.deliver(1000, false);
                    for id in 1..=NODES {
                        sim.persist(id).await;
                    }
                }
            }
        }
        let mut leader = None;
        for _ in 0..100 {
            rounds(&mut sim, 1, true).await;
            leader = sim.live().find(|n| n.is_leader()).map(|n| n.id());
            if leader.is_some() {
                break;
            }
        }
        let leader = leader.expect("a leader elected");
        // Its first entry committed, a renewal answered by the followers is the lease.
        rounds(&mut sim, 2, false).await;
        fn node(sim: &mut Sim, id: u64) -> &mut Replica {
            sim.nodes[(id - 1) as usize].as_mut().unwrap()
        }
        assert_eq!(node(&mut sim, leader).lease(), None);
        let before = std::time::Instant::now();
        node(&mut sim, leader).renew_lease().unwrap();
        rounds(&mut sim, 1, false).await;
        let (term, sent) = node(&mut sim, leader).lease().expect("lease confirmed");
        assert_eq!(term, node(&mut sim, leader).term());
        assert!(sent >= before);
        // A follower asking gets nothing: only a leader holds a lease.
        let follower = (1..=NODES).find(|&id| id != leader).unwrap();
        node(&mut sim, follower).renew_lease().unwrap();
        rounds(&mut sim, 1, false).await;
        assert_eq!(node(&mut sim, follower).lease(), None);
        // Cut off, the leader's renewals go unanswered: the lease stays as it was.
        sim.isolated = Some(leader);
        node(&mut sim, leader).renew_lease().unwrap();
        rounds(&mut sim, 1, false).await;
        assert_eq!(node(&mut sim, leader).lease(), Some((term, sent)));
        // Healed, the next renewal is answered.
        sim.isolated = None;
        let healed = std::time::Instant::now();
        node(&mut sim, leader).renew_lease().unwrap();
        rounds(&mut sim, 1, false).await;
        let (_, renewed) = node(&mut sim, leader).lease().expect("lease");
        assert!(renewed >= healed);
    });
}
