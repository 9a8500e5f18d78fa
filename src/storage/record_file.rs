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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// An open record file that appends. A failed append is rolled back (the file truncated to
/// its length before the append, and synced), so a later append never lands after the
/// garbage of a partial one, where recovery would cut it off although it was acknowledged.
/// If the roll-back fails too, the file is *broken*: every later append fails until the
/// process restarts (recovery then truncates the torn tail). Clones share that state.
#[derive(Clone)]
pub struct RecordFile {
    path: PathBuf,
    /// `true` once broken. The lock also makes appends one at a time, which the
    /// roll-back needs (it truncates to a length it read before writing); appends run on
    /// blocking threads and are rare, never on the data path.
    broken: Arc<Mutex<bool>>,
}

impl RecordFile {
    /// A record file at `path`, usually just read with [`read_records`].
    pub fn new(path: PathBuf) -> RecordFile {
        RecordFile {
            path,
            broken: Arc::new(Mutex::new(false)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends records and `fdatasync`s them; on any failure nothing of them stays in the
    /// file. Blocking.
    pub fn append_blocking<T: Serialize>(&self, records: &[T]) -> io::Result<()> {
        self.append_with(records, |path| {
            Ok(Box::new(OpenOptions::new().write(true).open(path)?))
        })
    }

    /// Appends records durably from a shard without blocking its reactor.
    pub async fn append<T: Serialize + Send + 'static>(&self, records: Vec<T>) -> io::Result<()> {
        let file = self.clone();
        glommio::executor()
            .spawn_blocking(move || file.append_blocking(&records))
            .await
    }

    /// [`append_blocking`](Self::append_blocking) through `open`, the seam where tests
    /// inject faults.
    fn append_with<T: Serialize>(
        &self,
        records: &[T],
        open: impl FnOnce(&Path) -> io::Result<Box<dyn AppendTarget>>,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        for record in records {
            encode(record, &mut buf)?;
        }
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if *broken {
            return Err(io::Error::other(format!(
                "record file {} is broken by an earlier failed write; restart to recover it",
                self.path.display()
            )));
        }
        let mut file = open(&self.path)?;
        let len_before = file.len()?;
        let written = file
            .write_all_at(&buf, len_before)
            .and_then(|()| file.sync_data());
        let Err(err) = written else {
            return Ok(());
        };
        if let Err(rollback) = file.truncate(len_before) {
            *broken = true;
            tracing::error!(
                path = %self.path.display(),
                %err,
                %rollback,
                "record file append failed and cannot be rolled back; refusing appends to it until restart"
            );
        }
        Err(err)
    }
}

/// The file operations of an append: a real [`File`], or in tests one that fails on cue.
trait AppendTarget {
    fn len(&mut self) -> io::Result<u64>;
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` and makes that durable.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl AppendTarget for File {
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the next append through [`Faulty`] does wrong.
    #[derive(Clone, Copy)]
    enum Fault {
        /// Writes the first half of the buffer, then fails with ENOSPC.
        ShortWriteEnospc,
        /// Writes everything, then fsync fails with EIO.
        SyncEio,
    }

    /// A real file whose append fails as told, and whose roll-back fails if told so.
    struct Faulty {
        file: File,
        fault: Fault,
        truncate_fails: bool,
    }

    impl AppendTarget for Faulty {
        fn len(&mut self) -> io::Result<u64> {
            AppendTarget::len(&mut self.file)
        }
        fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            match self.fault {
                Fault::ShortWriteEnospc => {
                    AppendTarget::write_all_at(&mut self.file, &buf[..buf.len() / 2], offset)?;
                    Err(io::Error::from_raw_os_error(libc::ENOSPC))
                }
                Fault::SyncEio => AppendTarget::write_all_at(&mut self.file, buf, offset),
            }
        }
        fn sync_data(&mut self) -> io::Result<()> {
            match self.fault {
                Fault::ShortWriteEnospc => AppendTarget::sync_data(&mut self.file),
                Fault::SyncEio => Err(io::Error::from_raw_os_error(libc::EIO)),
            }
        }
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            if self.truncate_fails {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            AppendTarget::truncate(&mut self.file, len)
        }
    }

    fn faulty(
        fault: Fault,
        truncate_fails: bool,
    ) -> impl FnOnce(&Path) -> io::Result<Box<dyn AppendTarget>> {
        move |path| {
            let file = OpenOptions::new().write(true).open(path)?;
            Ok(Box::new(Faulty {
                file,
                fault,
                truncate_fails,
            }))
        }
    }

    fn record(tag: &str) -> String {
        // Long enough that half a frame is a torn record, not an empty file.
        format!("{tag}-{}", "x".repeat(100))
    }

    #[test]
    fn failed_append_is_rolled_back_and_later_appends_survive_recovery() {
        for fault in [Fault::ShortWriteEnospc, Fault::SyncEio] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.log");
            assert!(read_records::<String>(&path).unwrap().is_empty());
            let file = RecordFile::new(path.clone());
            let (a, b, c) = (record("a"), record("b"), record("c"));
            file.append_blocking(std::slice::from_ref(&a)).unwrap();
            let err = file
                .append_with(std::slice::from_ref(&b), faulty(fault, false))
                .unwrap_err();
            assert!(matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EIO)));
            file.append_blocking(std::slice::from_ref(&c)).unwrap();
            // A restart: every acknowledged record is there, the failed one is not.
            assert_eq!(read_records::<String>(&path).unwrap(), vec![a, c]);
        }
    }

    #[test]
    fn append_is_refused_after_a_failed_roll_back_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        read_records::<String>(&path).unwrap();
        let file = RecordFile::new(path.clone());
        let (a, b, c) = (record("a"), record("b"), record("c"));
        file.append_blocking(std::slice::from_ref(&a)).unwrap();
        file.append_with(
            std::slice::from_ref(&b),
            faulty(Fault::ShortWriteEnospc, true),
        )
        .unwrap_err();
        // Clones (what the callers hand to blocking threads) share the broken state.
        assert!(file
            .clone()
            .append_blocking(std::slice::from_ref(&c))
            .is_err());
        assert!(file.append_blocking(std::slice::from_ref(&c)).is_err());
        // Recovery on restart cuts the garbage and the file works again.
        assert_eq!(read_records::<String>(&path).unwrap(), vec![a.clone()]);
        let file = RecordFile::new(path.clone());
        file.append_blocking(std::slice::from_ref(&c)).unwrap();
        assert_eq!(read_records::<String>(&path).unwrap(), vec![a, c]);
    }
}
