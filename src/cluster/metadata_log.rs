//! The durable log of cluster metadata changes, owned by shard 0.
//!
//! Each change (cluster id, topic created, topic deleted, producer-id block reserved) is
//! one record: `[len u32][crc32c u32][JSON]`, appended and `fdatasync`ed before the change
//! is applied or answered. On start the log is replayed; a torn or corrupt tail (a crash
//! during an append) is truncated at the first bad record, as the partition logs do.
//! Changes are rare, so records are JSON: an operator can read them with `strings`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ShardId;

/// A metadata record larger than this is treated as corruption.
const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;
const FRAME_HEADER_BYTES: usize = 8;

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
    path: PathBuf,
}

impl MetadataLog {
    /// Opens (creating if needed) the log in `dir`, returns it and every valid record.
    /// Truncates a torn tail.
    pub fn open(dir: &Path) -> io::Result<(MetadataLog, Vec<MetaRecord>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("metadata.log");
        let records = read_records(&path)?;
        sync_dir(dir)?;
        Ok((MetadataLog { path }, records))
    }

    /// Appends records and makes them durable. Blocking: call from a blocking thread
    /// or at start-up (see [`append_blocking`](Self::append_blocking)).
    pub fn append_blocking(path: &Path, records: &[MetaRecord]) -> io::Result<()> {
        append_records(path, records)
    }

    /// Appends records durably without blocking the shard's reactor.
    pub async fn append(&self, records: Vec<MetaRecord>) -> io::Result<()> {
        let path = self.path.clone();
        glommio::executor()
            .spawn_blocking(move || Self::append_blocking(&path, &records))
            .await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every valid record of a record file (creating it if missing) and truncates a
/// torn or corrupt tail. Blocking.
pub fn read_records<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, valid_len) = decode_all(&bytes);
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid_len,
                file_len = bytes.len(),
                "record file has a torn or corrupt tail; truncating it"
            );
            file.set_len(valid_len as u64)?;
            file.seek(SeekFrom::Start(valid_len as u64))?;
            file.sync_all()?;
        }
        Ok(records)
    }
}

/// Appends records to a record file and `fdatasync`s it. Blocking.
pub fn append_records<T: Serialize>(path: &Path, records: &[T]) -> io::Result<()> {
    let mut buf = Vec::new();
    for record in records {
        encode(record, &mut buf)?;
    }
    let mut file = OpenOptions::new().append(true).open(path)?;
    file.write_all(&buf)?;
    file.sync_data()
}

/// Replaces a record file with exactly `records` (temp file, fsync, rename). Blocking.
pub fn rewrite_records<T: Serialize>(path: &Path, records: &[T]) -> io::Result<()> {
    let mut buf = Vec::new();
    for record in records {
        encode(record, &mut buf)?;
    }
    crate::storage::index::write_atomically(path, &buf)
}

fn encode<T: Serialize>(record: &T, out: &mut Vec<u8>) -> io::Result<()> {
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(())
}

/// Decodes records up to the first invalid one; returns them and the valid prefix length.
fn decode_all<T: DeserializeOwned>(bytes: &[u8]) -> (Vec<T>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= FRAME_HEADER_BYTES {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_be_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let start = pos + FRAME_HEADER_BYTES;
        if len == 0 || len > RECORD_BYTES_MAX || bytes.len() - start < len {
            break;
        }
        let body = &bytes[start..start + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        match serde_json::from_slice(body) {
            Ok(record) => records.push(record),
            Err(_) => break,
        }
        pos = start + len;
    }
    (records, pos)
}

/// fsync a directory so that file creations and renames in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        MetadataLog::append_blocking(log.path(), &[a.clone(), b.clone()]).unwrap();
        // A torn third record: a header promising more bytes than were written.
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let (log, records) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(records, vec![a.clone(), b.clone()]);
        // The log stays appendable after truncation.
        let c = MetaRecord::ProducerIdBlock { end: 1000 };
        MetadataLog::append_blocking(log.path(), std::slice::from_ref(&c)).unwrap();
        let (_, records) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(records, vec![a, b, c]);
    }

    #[test]
    fn stops_at_corrupt_record() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = MetadataLog::open(dir.path()).unwrap();
        let a = MetaRecord::ClusterId { id: "c1".into() };
        let b = MetaRecord::ProducerIdBlock { end: 7 };
        MetadataLog::append_blocking(log.path(), &[a.clone(), b]).unwrap();
        let mut bytes = std::fs::read(log.path()).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(log.path(), &bytes).unwrap();
        let (_, records) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(records, vec![a]);
    }
}
