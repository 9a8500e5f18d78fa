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

use super::ShardId;
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
    },
    /// Producer ids below `end` may have been handed out; allocate from `end` after a restart.
    ProducerIdBlock {
        end: i64,
    },
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
