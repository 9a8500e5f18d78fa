//! Record files: small durable logs of JSON records, each framed as
//! `[len u32][crc32c u32][JSON]`.
//!
//! The cluster metadata log, the consumer-group offset logs and the transaction logs are
//! record files. Records are appended and `fdatasync`ed before what they describe is
//! applied or answered; on open the file is replayed and a torn or corrupt tail (a crash
//! during an append) is truncated at the first bad record, as the partition logs do. A
//! file is compacted by rewriting it whole ([`rewrite_records`], temp file and rename).
//! Writes are rare, so records are JSON: an operator can read them with `strings`.
//!
//! Also here: the two file-system primitives every durable file of the broker uses,
//! [`write_atomically`] and [`sync_dir`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A record larger than this is treated as corruption.
const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;
const FRAME_HEADER_BYTES: usize = 8;

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
    write_atomically(path, &buf)
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

/// Writes `path` so that a crash leaves either the old file or the complete new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        super::TMP_SUFFIX
    ));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
