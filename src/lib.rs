//! Strand: a Kafka-wire-compatible streaming broker, thread-per-core on glommio.
//!
//! One pinned glommio executor per core (a *shard*) owns a disjoint set of partitions.
//! Each shard is advertised to clients as its own broker, so the Kafka protocol itself
//! steers a partition's produce and fetch connections to the core that owns it: the data
//! path has no locks and no cross-core hops. Shard 0 also runs the control plane (topic
//! metadata), which it pushes to every shard as immutable snapshots over the shard mesh.
//!
//! - [`protocol`]: what `kafka-protocol` does not do for us: request framing, the record
//!   batch header view and validation, error codes, the versions table.
//! - [`storage`]: per-partition logs of verbatim Kafka batches in direct-I/O segments,
//!   with sparse indexes, group commit and crash recovery.
//! - [`coordinator`]: consumer groups and committed offsets, on the shard owning each group.
//! - [`cluster`]: topic metadata, its durable log and the controller on shard 0.
//! - [`shard`]: process start-up, the per-core executors, the shard mesh, the flusher.
//! - [`server`]: listeners and the per-connection request loop.
//! - [`handlers`]: one module per Kafka API family.
//! - [`metrics`]: per-shard counters and histograms, served to Prometheus.

pub mod broker;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod handlers;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
pub mod util;

/// See [`protocol::alloc_guard`]: a request must not be able to abort the broker through
/// an allocation its decoder sizes from a count on the wire.
#[global_allocator]
static ALLOCATOR: protocol::alloc_guard::GuardedAllocator = protocol::alloc_guard::GuardedAllocator;
