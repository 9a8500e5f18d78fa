//! The durable log of cluster metadata changes, owned by shard 0.
//!
//! Each change (cluster id, topic created, topic deleted, producer-id block reserved) is
//! one record of a [`record_file`](crate::storage::record_file), appended and `fdatasync`ed
//! before the change is applied or answered, and replayed on start.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{NodeId, NodeInfo, ShardId};
use crate::storage::record_file::{read_records, sync_dir, RecordFile};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum MetaRecord {
    ClusterId {
        id: String,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: Vec<ShardId>,
        configs: BTreeMap<String, String>,
        /// The nodes of each partition, in a cluster (see [`TopicMeta`](super::TopicMeta)).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<Vec<NodeId>>,
        /// The forwarded request that made it (see `TopicSpec::token`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    DeleteTopic {
        name: String,
        id: Uuid,
    },
    /// The whole new set of a topic's config overrides.
    AlterTopicConfigs {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Partitions appended to a topic (their shards, in partition order).
    AddPartitions {
        name: String,
        id: Uuid,
        partitions: Vec<ShardId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<Vec<NodeId>>,
    },
    /// Producer ids below `end` may have been handed out; allocate from `end` after a restart.
    ProducerIdBlock {
        end: i64,
    },
    /// A node of the cluster and where clients and peers reach it (the latest wins).
    RegisterNode(NodeInfo),
    /// A replicated partition's Raft group elected `leader` in term `epoch`; with `isr`,
    /// that leader's in-sync replicas changed (the latest of the epoch wins).
    PartitionLeader {
        name: String,
        id: Uuid,
        partition: i32,
        leader: NodeId,
        epoch: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isr: Option<Vec<NodeId>>,
    },
}

/// The metadata records of one Raft entry of a cluster's metadata log, as one Kafka
/// record batch (KRaft stores its metadata the same way): one record per change, its
/// value the change in JSON.
pub fn encode_batch(records: &[MetaRecord], now_ms: i64) -> Vec<u8> {
    crate::protocol::records::encode_json_batch(records, |_| None, now_ms)
}

/// The metadata records of a batch read back from the metadata log; control batches
/// (a new leader's first entry) hold none.
pub fn decode_batch(batch: &[u8]) -> io::Result<Vec<MetaRecord>> {
    crate::protocol::records::decode_json_batch(batch, "metadata")
}

pub struct MetadataLog {
    /// Refuses appends after a write it could not roll back (see [`RecordFile`]): the
    /// controller then answers errors until a restart recovers the file.
    file: RecordFile,
}

impl MetadataLog {
    /// Opens (creating if needed) the log in `dir`, returns it and every valid record.
    /// Truncates a torn tail.
    pub fn open(dir: &Path) -> io::Result<(MetadataLog, Vec<MetaRecord>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("metadata.log");
        let records = read_records(&path)?;
        sync_dir(dir)?;
        Ok((
            MetadataLog {
                file: RecordFile::new(path),
            },
            records,
        ))
    }

    /// Appends records and makes them durable. Blocking: call from a blocking thread
    /// or at start-up (see [`append_blocking`](Self::append_blocking)).
    pub fn append_blocking(&self, records: &[MetaRecord]) -> io::Result<()> {
        self.file.append_blocking(records)
    }

    /// Appends records durably without blocking the shard's reactor.
    pub async fn append(&self, records: Vec<MetaRecord>) -> io::Result<()> {
        self.file.append(records).await
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    #[test]
    fn replays_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (log, records) = MetadataLog::open(dir.path()).unwrap();
        assert!(records.is_empty());
        let a = MetaRecord::ClusterId { id: "c1".into() };
        let b = MetaRecord::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: vec![ShardId(0), ShardId(1)],
            configs: BTreeMap::new(),
            replicas: Vec::new(),
            token: None,
        };
        log.append_blocking(&[a.clone(), b.clone()]).unwrap();
        // A torn third record: a header promising more bytes than were written.
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let (log, records) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(records, vec![a.clone(), b.clone()]);
        // The log stays appendable after truncation.
        let c = MetaRecord::ProducerIdBlock { end: 1000 };
        log.append_blocking(std::slice::from_ref(&c)).unwrap();
        let (_, records) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(records, vec![a, b, c]);
    }

    #[test]
    fn records_written_before_clusters_existed_still_read() {
        // A CreateTopic as a node alone wrote it, before partitions had nodes.
        let old = r#"{"CreateTopic":{"name":"t","id":"0a4f6a52-2d5c-4a3b-9a5e-2b7c1d9e8f01","partitions":[0,1],"configs":{}}}"#;
        match serde_json::from_str::<MetaRecord>(old).unwrap() {
            MetaRecord::CreateTopic {
                replicas,
                partitions,
                ..
            } => {
                assert!(replicas.is_empty());
                assert_eq!(partitions, vec![ShardId(0), ShardId(1)]);
            }
            other => panic!("{other:?}"),
        }
        // And a node alone still writes that form.
        let record = MetaRecord::AddPartitions {
            name: "t".into(),
            id: Uuid::nil(),
            partitions: vec![ShardId(1)],
            replicas: Vec::new(),
        };
        assert!(!serde_json::to_string(&record).unwrap().contains("replicas"));
    }

    #[test]
    fn a_metadata_entry_is_a_kafka_batch_of_json_records() {
        let records = vec![
            MetaRecord::ClusterId { id: "c".into() },
            MetaRecord::RegisterNode(NodeInfo {
                node: NodeId(2),
                host: "h".into(),
                port: 1,
                rpc: "h:2".into(),
                shards: 4,
                listeners: Vec::new(),
            }),
        ];
        let batch = encode_batch(&records, 1_000);
        let info = crate::protocol::batch::parse_batch(&batch).unwrap();
        assert_eq!(info.record_count, 2);
        assert_eq!(decode_batch(&batch).unwrap(), records);
        // A new leader's control batch holds no records; a damaged batch is an error.
        assert!(decode_batch(&crate::protocol::batch::leader_change_batch())
            .unwrap()
            .is_empty());
        let mut bad = batch.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_batch(&bad).is_err());
    }

    #[test]
    fn stops_at_corrupt_record() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = MetadataLog::open(dir.path()).unwrap();
        let a = MetaRecord::ClusterId { id: "c1".into() };
        let b = MetaRecord::ProducerIdBlock { end: 7 };
        log.append_blocking(&[a.clone(), b]).unwrap();
        let mut bytes = std::fs::read(log.path()).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(log.path(), &bytes).unwrap();
        let (_, records) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(records, vec![a]);
    }
}
