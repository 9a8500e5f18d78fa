//! Topic configs: the Kafka names Strand understands, how each is validated, its broker
//! default (a `serve` flag) and what DescribeConfigs reports about it.
//!
//! A topic stores only its overrides (in [`super::TopicMeta::configs`], durable in the
//! metadata log); the value in force is the override or else the broker default. Every
//! name is checked against [`DEFS`] and every value parsed before anything is written, so
//! the metadata log never holds a config the partitions cannot apply.
//!
//! Some Kafka 3.x topic configs have no meaning here (and were removed or emptied in Kafka
//! 4.0) but clients and tools still send them: `message.format.version`,
//! `message.downconversion.enable`, `message.timestamp.difference.max.ms`. They are
//! accepted and validated as Kafka 3.x did, stored, reported by DescribeConfigs with Kafka
//! 3.x's defaults (a 3.x broker lists them for every topic, and tools that describe, edit
//! and send back a topic's configs expect to find them), and change nothing ([`LEGACY`]).

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
    pub const LIST: i8 = 7;
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// An integer in `[min, max]`.
    Long {
        min: i64,
        max: i64,
    },
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A non-empty comma-separated subset of the listed strings.
    List(&'static [&'static str]),
    Bool,
    /// A Kafka release as `message.format.version` takes it: `0.10.0`, `0.10.0.0`, `2.8`,
    /// `3.0-IV1` (Kafka 3.x's `MetadataVersionValidator` accepts these shapes).
    KafkaVersion,
}

/// One topic config Strand accepts.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    /// The broker-wide config it defaults to, as Kafka names it (and as DescribeConfigs
    /// reports it in synonyms); the `serve` flag is the same name with dashes.
    pub broker_name: &'static str,
    /// The `serve` flag that sets the broker default ("" if fixed).
    pub flag: &'static str,
    pub kind: Kind,
    /// DescribeConfigs `config_type`.
    pub type_code: i8,
    pub doc: &'static str,
}

const INT_MAX: i64 = i32::MAX as i64;

/// Every topic config Strand accepts, in the order DescribeConfigs lists them.
pub const DEFS: &[Def] = &[
    Def {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        flag: "--log-cleanup-policy",
        kind: Kind::List(&["delete", "compact"]),
        type_code: kind_code::LIST,
        doc: "delete: drop old segments by retention.ms/retention.bytes; compact: keep the latest record per key; both: compact, then apply retention.",
    },
    Def {
        name: "compression.type",
        broker_name: "compression.type",
        flag: "",
        kind: Kind::Choice(&["producer"]),
        type_code: kind_code::STRING,
        doc: "Batches are stored as the producer compressed them; only 'producer' is supported.",
    },
    Def {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        flag: "--log-cleaner-delete-retention-ms",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "How long a tombstone (null value) of a compacted topic is kept after its timestamp, so consumers can see the delete.",
    },
    Def {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        flag: "",
        kind: Kind::Long { min: 1, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "Kafka's forced-fsync interval in messages. Strand syncs every flush cycle before acknowledging, which satisfies any value.",
    },
    Def {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        flag: "",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "Kafka's forced-fsync interval in ms. Strand syncs every flush cycle before acknowledging, which satisfies any value.",
    },
    Def {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        flag: "--max-message-bytes",
        kind: Kind::Long { min: 0, max: INT_MAX },
        type_code: kind_code::INT,
        doc: "Largest record batch (after compression) a producer may send to this topic.",
    },
    Def {
        name: "message.downconversion.enable",
        broker_name: "log.message.downconversion.enable",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        doc: "Kafka 3.x: down-convert batches for consumers of message format v0/v1. Strand serves only format v2 (fetch v4+), so this is accepted and has no effect.",
    },
    Def {
        name: "message.format.version",
        broker_name: "log.message.format.version",
        flag: "",
        kind: Kind::KafkaVersion,
        type_code: kind_code::STRING,
        doc: "Kafka 3.x: the message format to write; ignored there since 3.0 and removed in 4.0. Strand always writes format v2; accepted and has no effect.",
    },
    Def {
        name: "message.timestamp.difference.max.ms",
        broker_name: "log.message.timestamp.difference.max.ms",
        flag: "",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "Kafka 3.x: largest difference between a record's CreateTime and the broker's clock; removed in 4.0. Strand does not check timestamps against its clock; accepted and has no effect.",
    },
    Def {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        flag: "--log-message-timestamp-type",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
        type_code: kind_code::STRING,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's clock when appended.",
    },
    Def {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        flag: "--log-cleaner-min-compaction-lag-ms",
        kind: Kind::Long { min: 0, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "Records younger than this (by timestamp) are never compacted away.",
    },
    Def {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        flag: "",
        kind: Kind::Long { min: 1, max: 1 },
        type_code: kind_code::INT,
        doc: "Single node: every partition has exactly one replica, so only 1 is valid.",
    },
    Def {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        flag: "--log-retention-bytes",
        kind: Kind::Long { min: -1, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "Largest size of a partition's log before its oldest segments are deleted; -1 for no limit.",
    },
    Def {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        flag: "--log-retention-ms",
        kind: Kind::Long { min: -1, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "How long a segment is kept after its newest record's timestamp; -1 for ever.",
    },
    Def {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        flag: "--segment-bytes",
        kind: Kind::Long { min: 14, max: INT_MAX },
        type_code: kind_code::INT,
        doc: "Size at which the active segment is rolled. Retention and compaction work on whole closed segments.",
    },
    Def {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        flag: "--log-roll-ms",
        kind: Kind::Long { min: 1, max: i64::MAX },
        type_code: kind_code::LONG,
        doc: "Age at which the active segment is rolled even if not full, so that retention and compaction can reach its records.",
    },
    Def {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        flag: "",
        kind: Kind::Bool,
        type_code: kind_code::BOOLEAN,
        doc: "No meaning on a single node (a partition's only replica is always its leader); accepted for compatibility.",
    },
];

/// The Kafka 3.x configs in [`DEFS`] that are accepted, stored and reported but change
/// nothing; [`TopicConfig::resolve`] never reads them.
pub const LEGACY: &[&str] = &[
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.difference.max.ms",
];

pub fn def(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// Checks one `name = value` against its definition; the message says what is wrong.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def = def(name).ok_or_else(|| format!("unknown topic config {name:?}"))?;
    match def.kind {
        Kind::Long { min, max } => {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("{name} must be an integer, not {value:?}"))?;
            if !(min..=max).contains(&n) {
                return Err(format!("{name} must be between {min} and {max}, not {n}"));
            }
        }
        Kind::Choice(choices) => {
            if !choices.contains(&value.trim()) {
                return Err(format!("{name} must be one of {choices:?}, not {value:?}"));
            }
        }
        Kind::List(items) => {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            if parts.is_empty() || parts.iter().any(|p| !items.contains(p)) {
                return Err(format!(
                    "{name} must be a comma-separated list of {items:?}, not {value:?}"
                ));
            }
        }
        Kind::Bool => {
            if !matches!(value.trim(), "true" | "false") {
                return Err(format!("{name} must be true or false, not {value:?}"));
            }
        }
        Kind::KafkaVersion => {
            if !is_kafka_version(value.trim()) {
                return Err(format!(
                    "{name} must be a Kafka version such as 2.8 or 3.0-IV1, not {value:?}"
                ));
            }
        }
    }
    Ok(())
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

/// Checks a whole set of overrides.
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        validate(name, value)?;
    }
    Ok(())
}

/// The broker default of a topic config, from the `serve` flags.
pub fn broker_default(config: &Config, name: &str) -> String {
    match name {
        "cleanup.policy" => config.log_cleanup_policy.clone(),
        "compression.type" => "producer".into(),
        "delete.retention.ms" => config.log_cleaner_delete_retention_ms.to_string(),
        "flush.messages" => "1".into(),
        "flush.ms" => "0".into(),
        "max.message.bytes" => config.max_message_bytes.to_string(),
        // Kafka 3.x's defaults for its configs that are no-ops here.
        "message.downconversion.enable" => "true".into(),
        "message.format.version" => "3.0-IV1".into(),
        "message.timestamp.difference.max.ms" => i64::MAX.to_string(),
        "message.timestamp.type" => config.log_message_timestamp_type.clone(),
        "min.compaction.lag.ms" => config.log_cleaner_min_compaction_lag_ms.to_string(),
        "min.insync.replicas" => "1".into(),
        "retention.bytes" => config.log_retention_bytes.to_string(),
        "retention.ms" => config.log_retention_ms.to_string(),
        "segment.bytes" => config.segment_bytes.to_string(),
        "segment.ms" => config.log_roll_ms.to_string(),
        "unclean.leader.election.enable" => "false".into(),
        _ => String::new(),
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
}

impl TopicConfig {
    /// The overrides on top of the broker defaults. Overrides were validated when stored;
    /// one that does not parse (impossible unless the log was edited) falls back to the
    /// default with a warning.
    pub fn resolve(config: &Config, overrides: &BTreeMap<String, String>) -> TopicConfig {
        let value = |name: &str| -> String {
            match overrides.get(name) {
                Some(v) if validate(name, v).is_ok() => v.trim().to_string(),
                Some(v) => {
                    tracing::warn!(config = name, value = %v, "invalid stored topic config; using the broker default");
                    broker_default(config, name)
                }
                None => broker_default(config, name),
            }
        };
        let long = |name: &str, fallback: i64| value(name).parse::<i64>().unwrap_or(fallback);
        let policy = value("cleanup.policy");
        let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
        TopicConfig {
            retention_ms: long("retention.ms", -1),
            retention_bytes: long("retention.bytes", -1),
            segment_bytes: long("segment.bytes", 1 << 30).max(14) as u64,
            segment_ms: long("segment.ms", i64::MAX),
            delete: policies.contains(&"delete"),
            compact: policies.contains(&"compact"),
            min_compaction_lag_ms: long("min.compaction.lag.ms", 0),
            delete_retention_ms: long("delete.retention.ms", 86_400_000),
            max_message_bytes: long("max.message.bytes", 1 << 20).max(0) as usize,
            log_append_time: value("message.timestamp.type") == "LogAppendTime",
        }
    }
}

/// Broker configs DescribeConfigs reports for a BROKER resource: (Kafka name, value,
/// type code). All are static (`serve` flags).
pub fn broker_configs(config: &Config) -> Vec<(&'static str, String, i8)> {
    let mut out: Vec<(&'static str, String, i8)> = DEFS
        .iter()
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
        assert!(validate("min.insync.replicas", "2").is_err());
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

    #[test]
    fn every_def_has_a_valid_broker_default() {
        let cfg = config(&[]);
        for d in DEFS {
            let v = broker_default(&cfg, d.name);
            assert!(validate(d.name, &v).is_ok(), "{} = {v:?}", d.name);
        }
    }
}
