//! Strand: a Kafka-wire-compatible streaming broker, thread-per-core on glommio.
//!
//! One pinned glommio executor per core (a *shard*) owns a disjoint set of partitions.
//! Each shard is advertised to clients as its own broker, so the Kafka protocol itself
//! steers a partition's produce and fetch connections to the core that owns it: the data
//! path has no locks and no cross-core hops. Shard 0 also runs the control plane (topic
//! metadata), which it pushes to every shard as immutable snapshots over the shard mesh.
//!
//! Modules, from the ground floor up; each depends only on the floors below it
//! (`tools/layers.py` checks this in CI):
//!
//! - [`util`], [`config`], [`metrics`]: small helpers (notifications, timeouts, clocks),
//!   the `strand serve` flags, and per-shard counters with their Prometheus rendering.
//! - [`protocol`]: what `kafka-protocol` does not do for us: request framing, the record
//!   batch header view and validation, error codes, the versions table.
//! - [`storage`]: per-partition logs of verbatim Kafka batches in direct-I/O segments,
//!   with sparse indexes, group commit, retention, compaction and crash recovery; and the
//!   small durable record files the metadata and coordinators keep.
//! - [`cluster`]: topic metadata, its durable log and the controller on shard 0.
//! - [`coordinator`]: the state of consumer groups (committed offsets) and of
//!   transactional ids, each kept on the shard that coordinates it.
//! - [`shard`]: the per-core context handlers work through: owned partitions, the shard
//!   mesh, the flusher, maintenance, applying metadata, and the transaction driver.
//! - [`handlers`]: one module per Kafka API family: decode, call into the shard, encode.
//! - [`server`]: listeners, the per-connection request loop, and the metrics listener.
//! - [`broker`]: process start-up and shutdown, from `strand serve` to running shards.
//! - [`config_file`]: `strand serve --config FILE` and `strand config …`: the flags from a
//!   Java-properties file and `STRAND_…` variables.
//! - [`cli`]: the `strand` command line and its reference in docs/operations.md.

pub mod admin;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod coordinator;
pub mod handlers;
pub mod metrics;
pub mod protocol;
pub mod security;
pub mod server;
pub mod shard;
pub mod storage;
pub mod util;

/// See [`protocol::alloc_guard`]: a request must not be able to abort the broker through
/// an allocation its decoder sizes from a count on the wire.
#[global_allocator]
static ALLOCATOR: protocol::alloc_guard::GuardedAllocator = protocol::alloc_guard::GuardedAllocator;
