//! raft-rs logs through a `slog::Logger`; [`logger`] gives it one whose records go to
//! `tracing` (target `raft`), so they follow `RUST_LOG` like the rest of the broker.
//!
//! Levels move one step down: raft-rs logs every election of every group at info (with a
//! thousand partitions, a node restart is thousands of lines), so its info is our debug and
//! its debug our trace. Warnings and errors stay what they are; slog's critical is an error.
//! A record's key-values (and the logger's, such as a group id added with `Logger::new`)
//! follow the message as `key=value`.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, Level, Never, OwnedKVList, Record, Serializer, KV};

/// The `slog::Drain` behind [`logger`].
pub struct TracingDrain;

/// A logger for raft-rs (`raft::Config`/`RawNode::new` take one).
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        // The line is only formatted for a level tracing would emit.
        macro_rules! forward {
            ($level:ident, $emit:ident) => {
                if tracing::enabled!(target: "raft", tracing::Level::$level) {
                    tracing::$emit!(target: "raft", "{}", line(record, values));
                }
            };
        }
        match record.level() {
            Level::Critical | Level::Error => forward!(ERROR, error),
            Level::Warning => forward!(WARN, warn),
            Level::Info => forward!(DEBUG, debug),
            Level::Debug | Level::Trace => forward!(TRACE, trace),
        }
        Ok(())
    }
}

/// The message, then the record's key-values, then the logger's.
fn line(record: &Record<'_>, values: &OwnedKVList) -> String {
    let mut out = KvLine(String::new());
    let _ = write!(out.0, "{}", record.msg());
    let _ = record.kv().serialize(record, &mut out);
    let _ = values.serialize(record, &mut out);
    out.0
}

struct KvLine(String);

impl Serializer for KvLine {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `emit` logs through [`logger`] under a subscriber at `max`.
    fn captured(max: tracing::Level, emit: impl FnOnce(&slog::Logger)) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(max)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || emit(&logger()));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn info_becomes_debug_with_its_key_values() {
        let text = captured(tracing::Level::DEBUG, |log| {
            let log = log.new(slog::o!("group" => 7u64));
            slog::info!(log, "became leader at term {}", 3; "raft_id" => 2u64);
        });
        assert!(text.contains("DEBUG"), "{text}");
        assert!(text.contains("raft:"), "{text}");
        assert!(
            text.contains("became leader at term 3 raft_id=2 group=7"),
            "{text}"
        );
    }

    #[test]
    fn raft_info_is_quiet_at_info_and_warnings_stay_warnings() {
        let text = captured(tracing::Level::INFO, |log| {
            slog::info!(log, "elected");
            slog::warn!(log, "lagging"; "peer" => 3u64);
            slog::error!(log, "broken");
            slog::crit!(log, "fatal");
        });
        assert!(!text.contains("elected"), "{text}");
        assert!(text.contains("WARN raft: lagging peer=3"), "{text}");
        assert!(text.contains("ERROR raft: broken"), "{text}");
        assert!(text.contains("ERROR raft: fatal"), "{text}");
    }
}
