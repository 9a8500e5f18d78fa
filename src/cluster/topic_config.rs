//! Topic configs: every topic config Kafka 4.1 has, how each is validated, its broker
//! default (a `serve` flag where Strand has one, else Kafka's default) and what
//! DescribeConfigs reports about it.
//!
//! A topic stores only its overrides (in [`super::TopicMeta::configs`], durable in the
//! metadata log); the value in force is the override or else the broker default. Every
//! name is checked against [`DEFS`] (and [`INTERNAL`]) and every value parsed before
//! anything is written, so the metadata log never holds a config the partitions cannot
//! apply. Values are stored in Kafka's canonical form (`" +5000 "` becomes `5000`, `TRUE`
//! becomes `true`), which is also what DescribeConfigs shows.
//!
//! Kafka accepts every valid topic config, so Strand does too, including the ones it has
//! no use for: those are validated as Kafka validates them, stored, described and change
//! nothing ([`Effect::Stored`]). One is narrower on purpose: `compression.type` takes only
//! `producer` (Strand never recompresses). `remote.storage.enable=true` is refused as
//! Kafka refuses it on a broker without tiered storage. `min.insync.replicas` takes any
//! positive value, as Kafka's does: more than a partition's replicas makes every acks=all
//! produce fail with NOT_ENOUGH_REPLICAS, never acknowledges less.
//!
//! Some Kafka 3.x topic configs were removed in Kafka 4.0 but clients and tools still send
//! them: `message.format.version`, `message.downconversion.enable`,
//! `message.timestamp.difference.max.ms`. They are accepted and validated as Kafka 3.x did,
//! stored, reported by DescribeConfigs with Kafka 3.x's defaults (a 3.x broker lists them
//! for every topic, and tools that describe, edit and send back a topic's configs expect
//! to find them), and change nothing ([`Effect::Legacy`]).

use std::collections::BTreeMap;

use crate::config::Config;

/// DescribeConfigs `config_source` values.
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// DescribeConfigs `config_type` values (v3+).
pub mod kind_code {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// An integer in `[min, max]`.
    Long {
        min: i64,
        max: i64,
    },
    /// An integer in `[min, max]`, or exactly `or` (Kafka's `compression.gzip.level`).
    LongOr {
        min: i64,
        max: i64,
        or: i64,
    },
    /// A decimal number in `[min, max]`.
    Double {
        min: f64,
        max: f64,
    },
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A comma-separated list of the listed strings (duplicates allowed, empty allowed).
    List(&'static [&'static str]),
    /// Kafka's throttled-replica list: `*`, or `partition:broker` pairs.
    ReplicaList,
    Bool,
    /// A Kafka release as `message.format.version` takes it: `0.10.0`, `0.10.0.0`, `2.8`,
    /// `3.0-IV1` (Kafka 3.x's `MetadataVersionValidator` accepts these shapes).
    KafkaVersion,
}

impl Kind {
    /// Whether IncrementalAlterConfigs APPEND and SUBTRACT apply (Kafka: LIST configs).
    pub fn is_list(self) -> bool {
        matches!(self, Kind::List(_) | Kind::ReplicaList)
    }
}

/// What a config does in Strand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Read by the partitions ([`TopicConfig::resolve`]) or by the request handlers.
    Applied,
    /// A Kafka 4.1 config Strand has no use for: validated, stored, described, no effect.
    Stored,
    /// A Kafka 3.x config removed in 4.0: validated as 3.x did, stored, described, no effect.
    Legacy,
}

/// One topic config Strand accepts.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    /// The broker-wide config it defaults to, as Kafka names it (and as DescribeConfigs
    /// reports it in synonyms); "" if Kafka has none. Where Strand has a `serve` flag for
    /// it, the flag is the same name with dashes.
    pub broker_name: &'static str,
    /// The `serve` flag that sets the broker default ("" if fixed).
    pub flag: &'static str,
    pub kind: Kind,
    /// DescribeConfigs `config_type`.
    pub type_code: i8,
    /// Whether DescribeConfigs lists the broker config's built-in default among the
    /// synonyms (Kafka does, unless that broker config has no default of its own, as
    /// `log.retention.ms` and `log.roll.ms`, derived from their `.hours` forms).
    pub default_synonym: bool,
    pub effect: Effect,
    pub doc: &'static str,
}

const INT_MIN: i64 = i32::MIN as i64;
const INT_MAX: i64 = i32::MAX as i64;

/// Every topic config DescribeConfigs lists, in the order it lists them.
pub const DEFS: &[Def] = &[
    Def {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        flag: "--log-cleanup-policy",
        kind: Kind::List(&["compact", "delete"]),
        type_code: kind_code::LIST,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "delete: drop old segments by retention.ms/retention.bytes; compact: keep the latest record per key; both: compact, then apply retention; empty: neither.",
    },
    Def {
        name: "compression.gzip.level",
        broker_name: "compression.gzip.level",
        flag: "",
        kind: Kind::LongOr { min: 1, max: 9, or: -1 },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: the gzip level when compression.type is gzip. Strand stores batches as producers compressed them, so this is stored and has no effect.",
    },
    Def {
        name: "compression.lz4.level",
        broker_name: "compression.lz4.level",
        flag: "",
        kind: Kind::Long { min: 1, max: 17 },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: the lz4 level when compression.type is lz4. Strand stores batches as producers compressed them, so this is stored and has no effect.",
    },
    Def {
        name: "compression.type",
        broker_name: "compression.type",
        flag: "",
        kind: Kind::Choice(&["producer"]),
        type_code: kind_code::STRING,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "Batches are stored as the producer compressed them; only 'producer' is supported (Kafka also recompresses to uncompressed, gzip, snappy, lz4 or zstd).",
    },
    Def {
        name: "compression.zstd.level",
        broker_name: "compression.zstd.level",
        flag: "",
        kind: Kind::Long { min: -131072, max: 22 },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: the zstd level when compression.type is zstd. Strand stores batches as producers compressed them, so this is stored and has no effect.",
    },
    Def {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        flag: "--log-cleaner-delete-retention-ms",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "How long a tombstone (null value) of a compacted topic is kept after its timestamp, so consumers can see the delete.",
    },
    Def {
        name: "file.delete.delay.ms",
        broker_name: "log.segment.delete.delay.ms",
        flag: "",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: how long a deleted segment's files stay on disk. Strand deletes them at once (a fetch already reading one keeps its handle); stored, no effect.",
    },
    Def {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        flag: "--log-flush-interval-messages",
        kind: Kind::Long { min: 1, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "Written messages are synced once this many wait. 1 (Strand's default) syncs every batch before acknowledging it; above 1 a batch is acknowledged once written and synced on this schedule or flush.ms's, as in Kafka.",
    },
    Def {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        flag: "--log-flush-interval-ms",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: false,
        effect: Effect::Applied,
        doc: "Written messages are synced once the oldest has waited this long. Matters where flush.messages is above 1; 0 syncs every batch before acknowledging it.",
    },
    Def {
        name: "follower.replication.throttled.replicas",
        broker_name: "",
        flag: "",
        kind: Kind::ReplicaList,
        type_code: kind_code::LIST,
        default_synonym: false,
        effect: Effect::Stored,
        doc: "Kafka: replicas ([partition]:[broker],... or *) whose replication is throttled on the follower side. Strand does not replicate; stored, no effect.",
    },
    Def {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        flag: "",
        kind: Kind::Long { min: 0, max: INT_MAX },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: bytes between offset-index entries. Strand's segment indexes use a fixed 4096-byte interval; stored, no effect.",
    },
    Def {
        name: "leader.replication.throttled.replicas",
        broker_name: "",
        flag: "",
        kind: Kind::ReplicaList,
        type_code: kind_code::LIST,
        default_synonym: false,
        effect: Effect::Stored,
        doc: "Kafka: replicas ([partition]:[broker],... or *) whose replication is throttled on the leader side. Strand does not replicate; stored, no effect.",
    },
    Def {
        name: "local.retention.bytes",
        broker_name: "log.local.retention.bytes",
        flag: "",
        kind: Kind::Long { min: -2, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka tiered storage: the local share of retention.bytes (-2: all of it). Strand has no tiered storage; stored, no effect.",
    },
    Def {
        name: "local.retention.ms",
        broker_name: "log.local.retention.ms",
        flag: "",
        kind: Kind::Long { min: -2, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka tiered storage: the local share of retention.ms (-2: all of it). Strand has no tiered storage; stored, no effect.",
    },
    Def {
        name: "max.compaction.lag.ms",
        broker_name: "log.cleaner.max.compaction.lag.ms",
        flag: "",
        kind: Kind::Long { min: 1, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: the longest a record stays uncompacted. Must not be below min.compaction.lag.ms. Strand compacts whenever new closed segments appear; stored, no effect.",
    },
    Def {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        flag: "--max-message-bytes",
        kind: Kind::Long { min: 0, max: INT_MAX },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "Largest record batch (after compression) a producer may send to this topic.",
    },
    Def {
        name: "message.downconversion.enable",
        broker_name: "log.message.downconversion.enable",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        default_synonym: true,
        effect: Effect::Legacy,
        doc: "Kafka 3.x: down-convert batches for consumers of message format v0/v1. Strand serves only format v2 (fetch v4+), so this is accepted and has no effect.",
    },
    Def {
        name: "message.format.version",
        broker_name: "log.message.format.version",
        flag: "",
        kind: Kind::KafkaVersion,
        type_code: kind_code::STRING,
        default_synonym: true,
        effect: Effect::Legacy,
        doc: "Kafka 3.x: the message format to write; ignored there since 3.0 and removed in 4.0. Strand always writes format v2; accepted and has no effect.",
    },
    Def {
        name: "message.timestamp.after.max.ms",
        broker_name: "log.message.timestamp.after.max.ms",
        flag: "",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: how far a CreateTime timestamp may be ahead of the broker's clock. Strand does not check timestamps against its clock; stored, no effect.",
    },
    Def {
        name: "message.timestamp.before.max.ms",
        broker_name: "log.message.timestamp.before.max.ms",
        flag: "",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: how far a CreateTime timestamp may be behind the broker's clock. Strand does not check timestamps against its clock; stored, no effect.",
    },
    Def {
        name: "message.timestamp.difference.max.ms",
        broker_name: "log.message.timestamp.difference.max.ms",
        flag: "",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Legacy,
        doc: "Kafka 3.x: largest difference between a record's CreateTime and the broker's clock; removed in 4.0. Strand does not check timestamps against its clock; accepted and has no effect.",
    },
    Def {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        flag: "--log-message-timestamp-type",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
        type_code: kind_code::STRING,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's clock when appended.",
    },
    Def {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        flag: "",
        kind: Kind::Double { min: 0.0, max: 1.0 },
        type_code: kind_code::DOUBLE,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: the share of uncompacted log that triggers compaction. Strand compacts whenever new closed segments appear; stored, no effect.",
    },
    Def {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        flag: "--log-cleaner-min-compaction-lag-ms",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "Records younger than this (by timestamp) are never compacted away.",
    },
    Def {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        flag: "--min-insync-replicas",
        kind: Kind::Long { min: 1, max: i32::MAX as i64 },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "An acks=all produce is refused with NOT_ENOUGH_REPLICAS while fewer replicas than this are in sync (the leader counts; a node alone has one replica per partition).",
    },
    Def {
        name: "preallocate",
        broker_name: "log.preallocate",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: preallocate new segment files on disk. Stored, no effect.",
    },
    Def {
        name: "remote.log.copy.disable",
        broker_name: "",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        default_synonym: false,
        effect: Effect::Stored,
        doc: "Kafka tiered storage: stop copying segments to remote storage. Strand has no tiered storage; stored, no effect.",
    },
    Def {
        name: "remote.log.delete.on.disable",
        broker_name: "",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        default_synonym: false,
        effect: Effect::Stored,
        doc: "Kafka tiered storage: delete remote data when remote.storage.enable is turned off. Strand has no tiered storage; stored, no effect.",
    },
    Def {
        name: "remote.storage.enable",
        broker_name: "",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        default_synonym: false,
        effect: Effect::Stored,
        doc: "Kafka tiered storage for this topic. Strand has no tiered storage: only false is accepted, as on a Kafka broker without it.",
    },
    Def {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        flag: "--log-retention-bytes",
        kind: Kind::Long { min: i64::MIN, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "Largest size of a partition's log before its oldest segments are deleted; negative for no limit.",
    },
    Def {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        flag: "--log-retention-ms",
        kind: Kind::Long { min: -1, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: false,
        effect: Effect::Applied,
        doc: "How long a segment is kept after its newest record's timestamp; -1 for ever.",
    },
    Def {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        flag: "--segment-bytes",
        kind: Kind::Long { min: 14, max: INT_MAX },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Applied,
        doc: "Size at which the active segment is rolled. Retention and compaction work on whole closed segments.",
    },
    Def {
        name: "segment.index.bytes",
        broker_name: "log.index.size.max.bytes",
        flag: "",
        kind: Kind::Long { min: 4, max: INT_MAX },
        type_code: kind_code::INT,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "Kafka: the preallocated size of a segment's offset index. Strand's indexes are not preallocated; stored, no effect.",
    },
    Def {
        name: "segment.jitter.ms",
        broker_name: "log.roll.jitter.ms",
        flag: "",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: false,
        effect: Effect::Stored,
        doc: "Kafka: random time subtracted from segment.ms so that segments do not all roll at once. Stored, no effect.",
    },
    Def {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        flag: "--log-roll-ms",
        kind: Kind::Long { min: 1, max: i64::MAX },
        type_code: kind_code::LONG,
        default_synonym: false,
        effect: Effect::Applied,
        doc: "Age at which the active segment is rolled even if not full, so that retention and compaction can reach its records.",
    },
    Def {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        default_synonym: true,
        effect: Effect::Stored,
        doc: "No meaning on a single node (a partition's only replica is always its leader); stored, no effect.",
    },
];

/// Kafka's internal topic configs: accepted, and described only where a topic sets them
/// (as Kafka does).
pub const INTERNAL: &[Def] = &[Def {
    name: "internal.segment.bytes",
    broker_name: "",
    flag: "",
    kind: Kind::Long {
        min: INT_MIN,
        max: INT_MAX,
    },
    type_code: kind_code::INT,
    default_synonym: false,
    effect: Effect::Applied,
    doc: "Kafka's internal override of segment.bytes, without its lower bound (Kafka's tests use it for small segments). Strand rolls at this size, at least 14 bytes.",
}];

/// The Kafka 3.x configs in [`DEFS`] that are accepted, stored and reported but change
/// nothing; [`TopicConfig::resolve`] never reads them.
pub const LEGACY: &[&str] = &[
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.difference.max.ms",
];

pub fn def(name: &str) -> Option<&'static Def> {
    DEFS.iter().chain(INTERNAL).find(|d| d.name == name)
}

/// Checks one `name = value` against its definition; the message says what is wrong.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    canonical(name, value).map(drop)
}

/// Checks one `name = value` and returns the value as Kafka writes it back: numbers
/// without sign or padding, booleans in lower case, lists joined by bare commas (Kafka's
/// `ConfigDef.convertToString` of the parsed value).
pub fn canonical(name: &str, value: &str) -> Result<String, String> {
    let def = def(name).ok_or_else(|| format!("unknown topic config {name:?}"))?;
    // Kafka trims every value before parsing it (`ConfigDef.parseType`).
    let trimmed = value.trim();
    match def.kind {
        Kind::Long { min, max } => {
            let n = parse_long(name, trimmed)?;
            if !(min..=max).contains(&n) {
                return Err(range_error(name, n, min, max));
            }
            Ok(n.to_string())
        }
        Kind::LongOr { min, max, or } => {
            let n = parse_long(name, trimmed)?;
            if n != or && !(min..=max).contains(&n) {
                return Err(format!(
                    "{name} must be between {min} and {max} or equal to {or}, not {n}"
                ));
            }
            Ok(n.to_string())
        }
        Kind::Double { min, max } => {
            let x = parse_double(trimmed)
                .ok_or_else(|| format!("{name} must be a number, not {value:?}"))?;
            // As Kafka's Range validator: NaN compares false both ways and passes.
            if x < min || x > max {
                return Err(format!(
                    "{name} must be between {min} and {max}, not {value:?}"
                ));
            }
            Ok(java_double(x))
        }
        Kind::Choice(choices) => {
            if !choices.contains(&trimmed) {
                return Err(format!("{name} must be one of {choices:?}, not {value:?}"));
            }
            Ok(trimmed.to_string())
        }
        Kind::List(items) => {
            let parts = list_items(trimmed);
            if parts.iter().any(|p| !items.contains(p)) {
                return Err(format!(
                    "{name} must be a comma-separated list of {items:?}, not {value:?}"
                ));
            }
            Ok(parts.join(","))
        }
        Kind::ReplicaList => {
            // Kafka's ThrottledReplicaListValidator: each item empty or
            // `partition:broker`, or all of them together exactly `*`.
            let parts = list_items(trimmed);
            let pair = |p: &str| {
                p.is_empty()
                    || p.split_once(':').is_some_and(|(a, b)| {
                        [a, b]
                            .iter()
                            .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
                    })
            };
            if !(parts.iter().all(|p| pair(p)) || parts.concat() == "*") {
                return Err(format!(
                    "{name} must be the literal '*' or a list of replicas as [partitionId]:[brokerId],[partitionId]:[brokerId],..., not {value:?}"
                ));
            }
            Ok(parts.join(","))
        }
        Kind::Bool => {
            if trimmed.eq_ignore_ascii_case("true") {
                Ok("true".into())
            } else if trimmed.eq_ignore_ascii_case("false") {
                Ok("false".into())
            } else {
                Err(format!("{name} must be true or false, not {value:?}"))
            }
        }
        Kind::KafkaVersion => {
            if !is_kafka_version(trimmed) {
                return Err(format!(
                    "{name} must be a Kafka version such as 2.8 or 3.0-IV1, not {value:?}"
                ));
            }
            Ok(trimmed.to_string())
        }
    }
}

fn parse_long(name: &str, trimmed: &str) -> Result<i64, String> {
    trimmed
        .parse()
        .map_err(|_| format!("{name} must be an integer, not {trimmed:?}"))
}

fn range_error(name: &str, n: i64, min: i64, max: i64) -> String {
    match (min, max) {
        (_, i64::MAX) | (_, INT_MAX) => format!("{name} must be at least {min}, not {n}"),
        _ => format!("{name} must be between {min} and {max}, not {n}"),
    }
}

/// The items of a LIST value as Kafka splits it: nothing for an empty value, else every
/// comma-separated item trimmed, empty ones included.
fn list_items(trimmed: &str) -> Vec<&str> {
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split(',').map(str::trim).collect()
    }
}

/// A decimal as Java's `Double.parseDouble` reads the usual forms (`0.5`, `.5`, `5e-1`,
/// `NaN`, `Infinity`); Java's rarer ones (hexadecimal, a `d`/`f` suffix) are refused.
fn parse_double(trimmed: &str) -> Option<f64> {
    let unsigned = trimmed.trim_start_matches(['+', '-']);
    let named = matches!(unsigned, "NaN" | "Infinity");
    let numeric = !unsigned.is_empty()
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !(named || numeric) || trimmed.len() - unsigned.len() > 1 {
        return None;
    }
    trimmed.replace("Infinity", "inf").parse().ok()
}

/// A double as Java's `Double.toString` writes it: `0.5`, `1.0`, `1.0E-4`.
fn java_double(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let magnitude = x.abs();
    if magnitude == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{x:e}");
        let (mantissa, exponent) = s.split_once('e').expect("exponent form");
        if mantissa.contains('.') {
            format!("{mantissa}E{exponent}")
        } else {
            format!("{mantissa}.0E{exponent}")
        }
    }
}

/// `0.10.0`, `0.10.0.0`, `2.8`, `3.0-IV1`: two to four dot-separated numbers, optionally
/// followed by `-IV<n>`.
fn is_kafka_version(value: &str) -> bool {
    let (release, iv) = match value.split_once("-IV") {
        Some((release, iv)) => (release, Some(iv)),
        None => (value, None),
    };
    let number = |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = release.split('.').collect();
    (2..=4).contains(&parts.len()) && parts.iter().all(|p| number(p)) && iv.is_none_or(number)
}

/// Checks a topic's whole override set: every value, then the rules across configs that
/// Kafka applies to the values in force (overrides over `broker_defaults`, by topic
/// config name).
pub fn validate_all(
    configs: &BTreeMap<String, String>,
    broker_defaults: &BTreeMap<String, String>,
) -> Result<(), String> {
    let mut in_force = broker_defaults.clone();
    for (name, value) in configs {
        in_force.insert(name.clone(), canonical(name, value)?);
    }
    let long = |name: &str| -> i64 {
        in_force
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| default_of(name).parse().unwrap_or(0))
    };
    let (min_lag, max_lag) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms"));
    if min_lag > max_lag {
        return Err(format!(
            "conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"
        ));
    }
    if configs
        .get("remote.storage.enable")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.".into());
    }
    Ok(())
}

/// The built-in value of a topic config without a `serve` flag (Kafka 4.1's default, or
/// Kafka 3.x's for the legacy configs); "" for one with a flag or an internal one.
fn default_of(name: &str) -> String {
    match name {
        "compression.gzip.level" => "-1".into(),
        "compression.lz4.level" => "9".into(),
        "compression.type" => "producer".into(),
        "compression.zstd.level" => "3".into(),
        "file.delete.delay.ms" => "60000".into(),
        "follower.replication.throttled.replicas" => String::new(),
        "index.interval.bytes" => "4096".into(),
        "leader.replication.throttled.replicas" => String::new(),
        "local.retention.bytes" => "-2".into(),
        "local.retention.ms" => "-2".into(),
        "max.compaction.lag.ms" => i64::MAX.to_string(),
        "message.downconversion.enable" => "true".into(),
        "message.format.version" => "3.0-IV1".into(),
        "message.timestamp.after.max.ms" => "3600000".into(),
        "message.timestamp.before.max.ms" => i64::MAX.to_string(),
        "message.timestamp.difference.max.ms" => i64::MAX.to_string(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.insync.replicas" => "1".into(),
        "preallocate" => "false".into(),
        "remote.log.copy.disable" => "false".into(),
        "remote.log.delete.on.disable" => "false".into(),
        "remote.storage.enable" => "false".into(),
        "segment.index.bytes" => "10485760".into(),
        "segment.jitter.ms" => "0".into(),
        "unclean.leader.election.enable" => "false".into(),
        _ => String::new(),
    }
}

/// The broker default of a topic config, from the `serve` flags where Strand has one.
pub fn broker_default(config: &Config, name: &str) -> String {
    match name {
        "cleanup.policy" => config.log_cleanup_policy.clone(),
        "delete.retention.ms" => config.log_cleaner_delete_retention_ms.to_string(),
        "max.message.bytes" => config.max_message_bytes.to_string(),
        "message.timestamp.type" => config.log_message_timestamp_type.clone(),
        "min.compaction.lag.ms" => config.log_cleaner_min_compaction_lag_ms.to_string(),
        "retention.bytes" => config.log_retention_bytes.to_string(),
        "retention.ms" => config.log_retention_ms.to_string(),
        "segment.bytes" => config.segment_bytes.to_string(),
        "segment.ms" => config.log_roll_ms.to_string(),
        "flush.messages" => config.log_flush_interval_messages.to_string(),
        "flush.ms" => config.log_flush_interval_ms.to_string(),
        "min.insync.replicas" => config.min_insync_replicas.to_string(),
        other => default_of(other),
    }
}

/// The built-in default of a topic config (what the broker default is when no flag is set).
fn builtin_default(name: &str) -> String {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        config: Config,
    }
    thread_local! {
        static BUILTIN: Config = Defaults::parse_from(["strand"]).config;
    }
    BUILTIN.with(|c| broker_default(c, name))
}

/// Where a topic config's broker default comes from: a flag the operator set, or the
/// built-in default.
pub fn broker_source(config: &Config, name: &str) -> i8 {
    if broker_default(config, name) == builtin_default(name) {
        source::DEFAULT_CONFIG
    } else {
        source::STATIC_BROKER_CONFIG
    }
}

/// One topic config as DescribeConfigs (and the CreateTopics v5+ response) reports it.
#[derive(Debug)]
pub struct Described {
    pub def: &'static Def,
    pub value: String,
    pub source: i8,
    /// (name, value, source): the topic's override, then the broker config it falls back
    /// to (set by a flag, then its built-in default), as Kafka lists them.
    pub synonyms: Vec<(&'static str, String, i8)>,
}

/// Every config of a topic with the given overrides: each of [`DEFS`], and each of
/// [`INTERNAL`] the topic sets.
pub fn describe(config: &Config, overrides: &BTreeMap<String, String>) -> Vec<Described> {
    let internal = INTERNAL.iter().filter(|d| overrides.contains_key(d.name));
    DEFS.iter()
        .chain(internal)
        .map(|def| {
            let over = overrides
                .get(def.name)
                .map(|v| canonical(def.name, v).unwrap_or_else(|_| v.clone()));
            let mut synonyms = Vec::new();
            if let Some(v) = &over {
                synonyms.push((def.name, v.clone(), source::DYNAMIC_TOPIC_CONFIG));
            }
            let default = broker_default(config, def.name);
            if !def.broker_name.is_empty() {
                if broker_source(config, def.name) == source::STATIC_BROKER_CONFIG {
                    synonyms.push((
                        def.broker_name,
                        default.clone(),
                        source::STATIC_BROKER_CONFIG,
                    ));
                }
                if def.default_synonym {
                    synonyms.push((
                        def.broker_name,
                        builtin_default(def.name),
                        source::DEFAULT_CONFIG,
                    ));
                }
            }
            Described {
                def,
                source: synonyms
                    .first()
                    .map_or(source::DEFAULT_CONFIG, |(_, _, s)| *s),
                value: over.unwrap_or(default),
                synonyms,
            }
        })
        .collect()
}

/// The configs in force for a topic, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub delete: bool,
    pub compact: bool,
    pub min_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub min_insync_replicas: usize,
}

impl TopicConfig {
    /// The overrides on top of the broker defaults. Overrides were validated when stored;
    /// one that does not parse (impossible unless the log was edited) falls back to the
    /// default with a warning.
    pub fn resolve(config: &Config, overrides: &BTreeMap<String, String>) -> TopicConfig {
        let stored = |name: &str| -> Option<String> {
            let v = overrides.get(name)?;
            match canonical(name, v) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(config = name, value = %v, "invalid stored topic config; using the broker default");
                    None
                }
            }
        };
        let value = |name: &str| stored(name).unwrap_or_else(|| broker_default(config, name));
        let long = |name: &str, fallback: i64| value(name).parse::<i64>().unwrap_or(fallback);
        let policy = value("cleanup.policy");
        let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
        TopicConfig {
            retention_ms: long("retention.ms", -1),
            retention_bytes: long("retention.bytes", -1),
            // Kafka's internal.segment.bytes, where set, wins over segment.bytes.
            segment_bytes: stored("internal.segment.bytes")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_else(|| long("segment.bytes", 1 << 30))
                .max(14) as u64,
            segment_ms: long("segment.ms", i64::MAX),
            delete: policies.contains(&"delete"),
            compact: policies.contains(&"compact"),
            min_compaction_lag_ms: long("min.compaction.lag.ms", 0),
            delete_retention_ms: long("delete.retention.ms", 86_400_000),
            max_message_bytes: long("max.message.bytes", 1 << 20).max(0) as usize,
            log_append_time: value("message.timestamp.type") == "LogAppendTime",
            flush_messages: long("flush.messages", 1).max(1),
            flush_ms: long("flush.ms", i64::MAX).max(0),
            min_insync_replicas: long("min.insync.replicas", 1).max(1) as usize,
        }
    }
}

/// Broker configs DescribeConfigs reports for a BROKER resource: (Kafka name, value,
/// type code). All are static (`serve` flags).
pub fn broker_configs(config: &Config) -> Vec<(&'static str, String, i8)> {
    let mut out: Vec<(&'static str, String, i8)> = DEFS
        .iter()
        .filter(|d| !d.broker_name.is_empty())
        .map(|d| (d.broker_name, broker_default(config, d.name), d.type_code))
        .collect();
    out.push((
        "auto.create.topics.enable",
        config.auto_create_topics.to_string(),
        kind_code::BOOLEAN,
    ));
    out.push((
        "num.partitions",
        config.default_partitions.to_string(),
        kind_code::INT,
    ));
    out.push((
        "log.dirs",
        config.data_dir.display().to_string(),
        kind_code::STRING,
    ));
    out.push((
        "log.retention.check.interval.ms",
        config.log_retention_check_interval_ms.to_string(),
        kind_code::LONG,
    ));
    out.push((
        "log.cleaner.backoff.ms",
        config.log_cleaner_backoff_ms.to_string(),
        kind_code::LONG,
    ));
    out.push((
        "socket.request.max.bytes",
        config.max_frame_bytes.to_string(),
        kind_code::INT,
    ));
    out.push((
        "fetch.max.bytes",
        config.fetch_max_bytes.to_string(),
        kind_code::INT,
    ));
    out.push((
        "group.initial.rebalance.delay.ms",
        config.group_initial_rebalance_delay_ms.to_string(),
        kind_code::INT,
    ));
    out.push((
        "group.min.session.timeout.ms",
        config.group_min_session_timeout_ms.to_string(),
        kind_code::INT,
    ));
    out.push((
        "group.max.session.timeout.ms",
        config.group_max_session_timeout_ms.to_string(),
        kind_code::INT,
    ));
    out.push((
        "group.max.size",
        config.group_max_size.to_string(),
        kind_code::INT,
    ));
    out.push((
        "group.consumer.session.timeout.ms",
        config.group_consumer_session_timeout_ms.to_string(),
        kind_code::INT,
    ));
    out.push((
        "group.consumer.heartbeat.interval.ms",
        config.group_consumer_heartbeat_interval_ms.to_string(),
        kind_code::INT,
    ));
    out.push((
        "group.consumer.max.size",
        config.group_consumer_max_size.to_string(),
        kind_code::INT,
    ));
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["strand"];
        all.extend_from_slice(args);
        Cli::parse_from(all).config
    }

    #[test]
    fn validates_names_and_values() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "delete, compact").is_ok());
        assert!(validate("cleanup.policy", "archive").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "logappendtime").is_err());
        assert!(validate("segment.bytes", "10").is_err());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("min.insync.replicas", "2").is_ok());
    }

    #[test]
    fn kafka_3_configs_are_validated_as_kafka_3_did_and_change_nothing() {
        for v in ["0.10.0", "0.10.0.0", "2.8", "3.0-IV1", "0.8.2.1"] {
            assert!(validate("message.format.version", v).is_ok(), "{v}");
        }
        for v in ["", "3", "three", "3.0-", "3.0-IV", "1.2.3.4.5", "3.0-IVx"] {
            assert!(validate("message.format.version", v).is_err(), "{v:?}");
        }
        assert!(validate("message.downconversion.enable", "false").is_ok());
        assert!(validate("message.downconversion.enable", "no").is_err());
        assert!(validate("message.timestamp.difference.max.ms", "0").is_ok());
        assert!(validate("message.timestamp.difference.max.ms", "-1").is_err());
        let cfg = config(&[]);
        let plain = TopicConfig::resolve(&cfg, &BTreeMap::new());
        let legacy: BTreeMap<String, String> = [
            ("message.format.version", "0.10.0"),
            ("message.downconversion.enable", "false"),
            ("message.timestamp.difference.max.ms", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(TopicConfig::resolve(&cfg, &legacy), plain);
        for name in LEGACY {
            assert!(def(name).is_some(), "{name}");
        }
    }

    #[test]
    fn overrides_win_over_flags_and_sources_follow_flags() {
        let cfg = config(&["--log-retention-ms", "5000"]);
        let mut overrides = BTreeMap::new();
        overrides.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        overrides.insert("segment.bytes".to_string(), "4096".to_string());
        let t = TopicConfig::resolve(&cfg, &overrides);
        assert_eq!(t.retention_ms, 5000);
        assert!(t.compact && t.delete);
        assert_eq!(t.segment_bytes, 4096);
        assert!(!t.log_append_time);
        assert_eq!(
            broker_source(&cfg, "retention.ms"),
            source::STATIC_BROKER_CONFIG
        );
        assert_eq!(broker_source(&cfg, "segment.ms"), source::DEFAULT_CONFIG);
    }

    /// Cases checked against Apache Kafka 4.1.1's CreateTopics (validate_only): each value
    /// Kafka accepts is accepted, each it refuses is refused.
    #[test]
    fn kafka_4_1_topic_configs_validate_as_kafka_does() {
        let accepted = [
            ("compression.gzip.level", "-1"),
            ("compression.gzip.level", "9"),
            ("compression.lz4.level", "17"),
            ("compression.zstd.level", "-131072"),
            ("leader.replication.throttled.replicas", "*"),
            ("leader.replication.throttled.replicas", " * "),
            ("leader.replication.throttled.replicas", "0:1,1:2"),
            ("leader.replication.throttled.replicas", "0:1, 1:2"),
            ("leader.replication.throttled.replicas", "0:1,"),
            ("leader.replication.throttled.replicas", ",0:1"),
            ("follower.replication.throttled.replicas", ""),
            ("cleanup.policy", ""),
            ("cleanup.policy", "compact,compact"),
            ("cleanup.policy", " compact , delete "),
            ("min.cleanable.dirty.ratio", "1"),
            ("min.cleanable.dirty.ratio", "0"),
            ("min.cleanable.dirty.ratio", "1e-1"),
            ("min.cleanable.dirty.ratio", ".5"),
            ("min.cleanable.dirty.ratio", "NaN"),
            ("preallocate", "TRUE"),
            ("preallocate", " true "),
            ("unclean.leader.election.enable", "True"),
            ("retention.ms", " 5000 "),
            ("retention.ms", "+5"),
            ("retention.bytes", "-5"),
            ("local.retention.ms", "-1"),
            ("local.retention.bytes", "-2"),
            ("segment.index.bytes", "4"),
            ("message.timestamp.before.max.ms", "0"),
            ("max.compaction.lag.ms", "1"),
            ("remote.storage.enable", "false"),
            ("remote.log.copy.disable", "true"),
            ("remote.log.delete.on.disable", "true"),
            ("compression.type", " producer "),
            ("file.delete.delay.ms", "0"),
            ("index.interval.bytes", "0"),
            ("segment.jitter.ms", "0"),
            ("internal.segment.bytes", "14"),
        ];
        for (name, value) in accepted {
            assert!(validate(name, value).is_ok(), "{name} = {value:?}");
        }
        let refused = [
            ("compression.gzip.level", "0"),
            ("compression.gzip.level", "10"),
            ("compression.lz4.level", "0"),
            ("compression.zstd.level", "-131073"),
            ("compression.zstd.level", "23"),
            ("leader.replication.throttled.replicas", "0-1"),
            ("leader.replication.throttled.replicas", "*,0:1"),
            ("leader.replication.throttled.replicas", "a:1"),
            ("cleanup.policy", "Compact"),
            ("cleanup.policy", "compact,"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "-0.1"),
            ("min.cleanable.dirty.ratio", "abc"),
            ("min.cleanable.dirty.ratio", ""),
            ("preallocate", "yes"),
            ("retention.ms", "5.0"),
            ("retention.ms", ""),
            ("local.retention.ms", "-3"),
            ("local.retention.bytes", "-3"),
            ("segment.jitter.ms", "-1"),
            ("segment.index.bytes", "3"),
            ("index.interval.bytes", "-1"),
            ("file.delete.delay.ms", "-1"),
            ("message.timestamp.after.max.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
            ("message.timestamp.type", "logappendtime"),
            ("flush.messages", "0"),
            ("flush.ms", "-1"),
            ("max.message.bytes", "-1"),
            ("max.message.bytes", "2147483648"),
            ("min.insync.replicas", "0"),
            ("segment.ms", "0"),
            ("delete.retention.ms", "-1"),
            ("internal.segment.bytes", "2147483648"),
        ];
        for (name, value) in refused {
            assert!(validate(name, value).is_err(), "{name} = {value:?}");
        }
        // Refused on purpose although Kafka accepts them (see the module doc).
        assert!(validate("compression.type", "gzip").is_err());
    }

    #[test]
    fn values_are_kept_in_kafka_canonical_form() {
        for (name, value, kafka) in [
            ("preallocate", "TRUE", "true"),
            ("retention.ms", " +5000 ", "5000"),
            ("cleanup.policy", " compact , delete ", "compact,delete"),
            ("cleanup.policy", "", ""),
            ("min.cleanable.dirty.ratio", ".5", "0.5"),
            ("min.cleanable.dirty.ratio", "1", "1.0"),
            ("min.cleanable.dirty.ratio", "1e-1", "0.1"),
            ("min.cleanable.dirty.ratio", "0.0001", "1.0E-4"),
            ("min.cleanable.dirty.ratio", "0.00015", "1.5E-4"),
            ("min.cleanable.dirty.ratio", "NaN", "NaN"),
            (
                "leader.replication.throttled.replicas",
                "0:1, 1:2",
                "0:1,1:2",
            ),
            ("follower.replication.throttled.replicas", ",0:1,", ",0:1,"),
            ("compression.type", " producer ", "producer"),
            ("unclean.leader.election.enable", "True", "true"),
            ("segment.jitter.ms", "+7", "7"),
        ] {
            assert_eq!(canonical(name, value).unwrap(), kafka, "{name} = {value:?}");
        }
    }

    #[test]
    fn rules_across_configs_apply_to_the_values_in_force() {
        let cfg = config(&[]);
        let defaults: BTreeMap<String, String> = DEFS
            .iter()
            .map(|d| (d.name.to_string(), broker_default(&cfg, d.name)))
            .collect();
        let set = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(validate_all(&set(&[("max.compaction.lag.ms", "10")]), &defaults).is_ok());
        let conflict = set(&[
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5"),
        ]);
        let err = validate_all(&conflict, &defaults).unwrap_err();
        assert!(
            err.contains("min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"),
            "{err}"
        );
        // The broker default takes part too.
        let strict = config(&["--log-cleaner-min-compaction-lag-ms", "100"]);
        let strict_defaults: BTreeMap<String, String> = DEFS
            .iter()
            .map(|d| (d.name.to_string(), broker_default(&strict, d.name)))
            .collect();
        let low_max = set(&[("max.compaction.lag.ms", "50")]);
        assert!(validate_all(&low_max, &defaults).is_ok());
        assert!(validate_all(&low_max, &strict_defaults).is_err());
        let tiered = set(&[("remote.storage.enable", "TRUE")]);
        assert!(validate_all(&tiered, &defaults)
            .unwrap_err()
            .contains("Tiered Storage"));
        assert!(validate_all(&set(&[("retention.ms", "x")]), &defaults).is_err());
    }

    #[test]
    fn describe_lists_every_config_with_kafka_sources_and_synonyms() {
        let cfg = config(&["--segment-bytes", "4096", "--log-retention-ms", "5000"]);
        let mut overrides = BTreeMap::new();
        overrides.insert("cleanup.policy".to_string(), " compact ".to_string());
        overrides.insert("preallocate".to_string(), "TRUE".to_string());
        let described = describe(&cfg, &overrides);
        assert_eq!(described.len(), DEFS.len());
        let get = |name: &str| described.iter().find(|d| d.def.name == name).unwrap();
        // An override: its own synonym, then the broker's default.
        let policy = get("cleanup.policy");
        assert_eq!(policy.value, "compact");
        assert_eq!(policy.source, source::DYNAMIC_TOPIC_CONFIG);
        assert_eq!(
            policy.synonyms,
            vec![
                (
                    "cleanup.policy",
                    "compact".to_string(),
                    source::DYNAMIC_TOPIC_CONFIG
                ),
                (
                    "log.cleanup.policy",
                    "delete".to_string(),
                    source::DEFAULT_CONFIG
                ),
            ]
        );
        assert_eq!(get("preallocate").value, "true");
        // A flag: the static value, then the built-in default.
        let segment = get("segment.bytes");
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("4096", source::STATIC_BROKER_CONFIG)
        );
        assert_eq!(
            segment.synonyms,
            vec![
                (
                    "log.segment.bytes",
                    "4096".to_string(),
                    source::STATIC_BROKER_CONFIG
                ),
                (
                    "log.segment.bytes",
                    (1u64 << 30).to_string(),
                    source::DEFAULT_CONFIG
                ),
            ]
        );
        // Kafka's log.retention.ms has no default of its own: no DEFAULT_CONFIG synonym.
        let retention = get("retention.ms");
        assert_eq!(
            retention.synonyms,
            vec![(
                "log.retention.ms",
                "5000".to_string(),
                source::STATIC_BROKER_CONFIG
            )]
        );
        let roll = get("segment.ms");
        assert_eq!(
            (roll.source, roll.synonyms.len()),
            (source::DEFAULT_CONFIG, 0)
        );
        // No broker config at all.
        let tiered = get("remote.storage.enable");
        assert_eq!((tiered.value.as_str(), tiered.synonyms.len()), ("false", 0));
        assert_eq!(get("max.compaction.lag.ms").value, i64::MAX.to_string());
        assert_eq!(get("min.cleanable.dirty.ratio").value, "0.5");
        // Internal configs appear only once set.
        assert!(described
            .iter()
            .all(|d| d.def.name != "internal.segment.bytes"));
        overrides.insert("internal.segment.bytes".to_string(), "2000".to_string());
        let described = describe(&cfg, &overrides);
        assert_eq!(described.len(), DEFS.len() + 1);
    }

    #[test]
    fn internal_segment_bytes_wins_over_segment_bytes() {
        let cfg = config(&[]);
        let mut overrides = BTreeMap::new();
        overrides.insert("segment.bytes".to_string(), "1048576".to_string());
        overrides.insert("internal.segment.bytes".to_string(), "512".to_string());
        assert_eq!(TopicConfig::resolve(&cfg, &overrides).segment_bytes, 512);
        overrides.insert("internal.segment.bytes".to_string(), "-5".to_string());
        assert_eq!(TopicConfig::resolve(&cfg, &overrides).segment_bytes, 14);
    }

    #[test]
    fn configs_strand_does_not_use_change_nothing() {
        let cfg = config(&[]);
        let plain = TopicConfig::resolve(&cfg, &BTreeMap::new());
        let stored: BTreeMap<String, String> = [
            ("compression.gzip.level", "5"),
            ("max.compaction.lag.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("preallocate", "true"),
            ("segment.index.bytes", "4096"),
            ("leader.replication.throttled.replicas", "*"),
            ("message.timestamp.after.max.ms", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(TopicConfig::resolve(&cfg, &stored), plain);
        for d in DEFS.iter().filter(|d| d.effect == Effect::Stored) {
            assert!(
                d.doc.contains("no effect")
                    || d.doc.contains("satisfies any value")
                    || d.doc.contains("only false"),
                "{}",
                d.name
            );
        }
        for name in LEGACY {
            assert_eq!(def(name).map(|d| d.effect), Some(Effect::Legacy), "{name}");
        }
    }

    #[test]
    fn every_def_has_a_valid_broker_default() {
        let cfg = config(&[]);
        for d in DEFS {
            let v = broker_default(&cfg, d.name);
            assert!(validate(d.name, &v).is_ok(), "{} = {v:?}", d.name);
        }
    }
}
