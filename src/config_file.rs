//! `strand serve --config FILE`: the broker flags from a Java-properties file, as Kafka's
//! `server.properties`, and from `STRAND_…` environment variables.
//!
//! Every flag of `strand serve` has one key, its long name with `-` → `.`
//! (`--segment-bytes` → `segment.bytes`), read from clap's definition of [`Config`], so a
//! new flag has its key with no code here. Some of Kafka's broker config names are accepted
//! too where they mean what a Strand flag means ([`ALIASES`]); Kafka names Strand has no use
//! for are refused with what to do instead ([`UNSUPPORTED`]).
//!
//! Precedence, lowest first: the built-in default, the file, the command line, the
//! environment (`STRAND_SEGMENT_BYTES`). The winning values are turned back into one
//! argument list and parsed by clap, so a value from the file goes through exactly the
//! parsing and range checks of the flag; each file line and variable is also checked alone
//! first, so an error can name its line.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches, Subcommand};

use crate::config::Config;

/// Prefix of the environment variables that set keys: `STRAND_` + the key upper-cased with
/// `.` → `_`.
pub const ENV_PREFIX: &str = "STRAND_";

/// `strand serve`'s arguments: the flags and the file they override.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A Java-properties file of broker settings (`segment.bytes=…`, or Kafka's names such
    /// as `log.segment.bytes`); flags override it, `STRAND_…` variables override both.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub flags: Config,
}

/// `strand config …`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Checks a config file without starting the broker: exit 0 and "ok", or the first
    /// error (with its line) and exit 2.
    Check {
        /// The properties file.
        file: PathBuf,
    },
    /// Prints the configuration `strand serve` would run with these flags, file and
    /// environment: every key, its value, and where the value comes from.
    Print(Box<ServeArgs>),
}

/// Where a key's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The flag's built-in default.
    Default,
    /// A line of the config file; `key` is the name used there (a Kafka name, maybe).
    File {
        path: String,
        line: usize,
        key: String,
    },
    /// A flag on the command line.
    Flag { long: String },
    /// An environment variable.
    Env { var: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File { path, line, .. } => write!(f, "file {path}:{line}"),
            Origin::Flag { long } => write!(f, "flag --{long}"),
            Origin::Env { var } => write!(f, "env {var}"),
        }
    }
}

impl Origin {
    /// "at FILE:LINE" or "in STRAND_X", for error messages.
    fn location(&self) -> String {
        match self {
            Origin::File { path, line, .. } => format!("at {path}:{line}"),
            Origin::Env { var } => format!("in environment variable {var}"),
            Origin::Flag { long } => format!("in flag --{long}"),
            Origin::Default => "in the defaults".into(),
        }
    }
}

/// One flag of `strand serve` as a config key.
#[derive(Clone, Debug)]
pub struct Key {
    /// `segment.bytes`.
    pub key: String,
    /// clap's id of the argument (`segment_bytes`).
    pub id: String,
    /// The long flag (`segment-bytes`).
    pub long: String,
    /// A flag without a value (`SetTrue`/`SetFalse`), set in a file as `true` or `false`;
    /// the value of `SetTrue` that gives the flag.
    pub switch: Option<bool>,
    /// The built-in default, if any.
    pub default: Option<String>,
}

/// The command `strand serve` parses its flags with.
pub fn serve_command() -> Command {
    Config::augment_args(Command::new("serve"))
}

/// Every key, in the order of the flags.
pub fn keys() -> Vec<Key> {
    keys_of(&serve_command())
}

fn keys_of(cmd: &Command) -> Vec<Key> {
    cmd.get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let switch = match arg.get_action() {
                ArgAction::Help
                | ArgAction::HelpShort
                | ArgAction::HelpLong
                | ArgAction::Version => return None,
                ArgAction::SetTrue => Some(true),
                ArgAction::SetFalse => Some(false),
                _ => None,
            };
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            Some(Key {
                key: long.replace('-', "."),
                id: arg.get_id().to_string(),
                long: long.to_string(),
                switch,
                default: (!defaults.is_empty()).then(|| defaults.join(",")),
            })
        })
        .collect()
}

/// How a Kafka config name's value becomes a Strand flag's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convert {
    /// The value as it is.
    Same,
    /// A whole number of some unit, times this many milliseconds.
    Millis(i64),
    /// As `Millis`, for a retention: any negative value is -1 (keep for ever), as in Kafka.
    RetentionMillis(i64),
    /// `log.dirs`: one directory.
    OneDir,
    /// `listeners`: `NAME://HOST:PORT,…` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
    /// checked here, as `--listeners`.
    Listener,
    /// `advertised.listeners`: the same, each with a host, as `--advertised-listeners`.
    Advertised,
}

/// A Kafka broker config name that means what a Strand flag means.
#[derive(Clone, Copy, Debug)]
pub struct Alias {
    pub kafka: &'static str,
    /// The long flag it sets.
    pub flag: &'static str,
    pub convert: Convert,
}

/// Kafka's `server.properties` names Strand accepts. Where Kafka has several names for one
/// setting (`log.retention.ms`, `.minutes`, `.hours`), the most precise one given wins,
/// as in Kafka ([`PRECEDENCE`]).
pub const ALIASES: &[Alias] = &[
    Alias {
        kafka: "log.dirs",
        flag: "data-dir",
        convert: Convert::OneDir,
    },
    Alias {
        kafka: "log.dir",
        flag: "data-dir",
        convert: Convert::OneDir,
    },
    Alias {
        kafka: "listeners",
        flag: "listeners",
        convert: Convert::Listener,
    },
    Alias {
        kafka: "advertised.listeners",
        flag: "advertised-listeners",
        convert: Convert::Advertised,
    },
    Alias {
        kafka: "authorizer.class.name",
        flag: "authorizer",
        convert: Convert::Same,
    },
    Alias {
        kafka: "broker.id",
        flag: "node-id",
        convert: Convert::Same,
    },
    Alias {
        kafka: "num.partitions",
        flag: "default-partitions",
        convert: Convert::Same,
    },
    Alias {
        kafka: "auto.create.topics.enable",
        flag: "auto-create-topics",
        convert: Convert::Same,
    },
    Alias {
        kafka: "log.retention.minutes",
        flag: "log-retention-ms",
        convert: Convert::RetentionMillis(60_000),
    },
    Alias {
        kafka: "log.retention.hours",
        flag: "log-retention-ms",
        convert: Convert::RetentionMillis(3_600_000),
    },
    Alias {
        kafka: "log.roll.hours",
        flag: "log-roll-ms",
        convert: Convert::Millis(3_600_000),
    },
    Alias {
        kafka: "log.segment.bytes",
        flag: "segment-bytes",
        convert: Convert::Same,
    },
    Alias {
        kafka: "message.max.bytes",
        flag: "max-message-bytes",
        convert: Convert::Same,
    },
    Alias {
        kafka: "socket.request.max.bytes",
        flag: "max-frame-bytes",
        convert: Convert::Same,
    },
];

/// Keys of Strand that are Kafka broker config names too, meaning what they mean in Kafka
/// (`docs/operations.md` lists them in its Kafka name column).
pub const KAFKA_KEYS: &[&str] = &[
    "node.id",
    "default.replication.factor",
    "min.insync.replicas",
    "replica.lag.time.max.ms",
    "auto.leader.rebalance.enable",
    "controlled.shutdown.enable",
    "leader.imbalance.check.interval.seconds",
    "leader.imbalance.per.broker.percentage",
    "producer.id.expiration.ms",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.roll.ms",
    "log.retention.ms",
    "log.retention.bytes",
    "log.cleanup.policy",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.backoff.ms",
    "log.message.timestamp.type",
    "log.retention.check.interval.ms",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "group.consumer.session.timeout.ms",
    "group.consumer.heartbeat.interval.ms",
    "group.consumer.max.size",
    "fetch.max.bytes",
    "queued.max.request.bytes",
    "connections.max.idle.ms",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
    "transaction.max.timeout.ms",
    "transactional.id.expiration.ms",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.commit.timeout.ms",
];

/// Names of one setting, most precise first: when several are given (in the same file, or
/// all in the environment), the first one wins, as in Kafka. Any other two names of one
/// flag in one place are an error.
pub const PRECEDENCE: &[&[&str]] = &[
    &[
        "log.retention.ms",
        "log.retention.minutes",
        "log.retention.hours",
    ],
    &["log.roll.ms", "log.roll.hours"],
    &["log.dirs", "log.dir"],
];

const USE_PEERS: &str =
    "a Strand cluster is set with peers (ID@HOST:PORT of each node's rpc.listen), node.id and rpc.listen";
const ONE_LISTENER: &str =
    "Strand's client listeners are named by their security protocol (listeners=PLAINTEXT://…,SASL_SSL://…) and its inter-node listener is rpc.listen: remove it";
const SHARDS: &str = "Strand runs one shard (thread) per core, each doing its own network and disk work: use shards to set how many";
const NO_INTERNAL_TOPICS: &str = "Strand keeps transaction state in files of each node's data directory, not in an internal topic: remove it";

/// Kafka broker configs Strand has no use for, with what to do instead.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    ("zookeeper.connect", USE_PEERS),
    ("controller.quorum.voters", USE_PEERS),
    ("controller.quorum.bootstrap.servers", USE_PEERS),
    (
        "process.roles",
        "every Strand node is both broker and controller: remove it",
    ),
    ("controller.listener.names", ONE_LISTENER),
    ("inter.broker.listener.name", ONE_LISTENER),
    ("listener.security.protocol.map", ONE_LISTENER),
    ("num.network.threads", SHARDS),
    ("num.io.threads", SHARDS),
    ("background.threads", SHARDS),
    ("num.replica.fetchers", SHARDS),
    ("num.recovery.threads.per.data.dir", SHARDS),
    (
        "socket.send.buffer.bytes",
        "Strand leaves socket buffer sizes to the operating system: remove it",
    ),
    (
        "socket.receive.buffer.bytes",
        "Strand leaves socket buffer sizes to the operating system: remove it",
    ),
    (
        "transaction.state.log.replication.factor",
        NO_INTERNAL_TOPICS,
    ),
    ("transaction.state.log.min.isr", NO_INTERNAL_TOPICS),
    ("transaction.state.log.num.partitions", NO_INTERNAL_TOPICS),
];

/// Prefixes of Kafka config families Strand has no use for.
pub const UNSUPPORTED_PREFIXES: &[(&str, &str)] = &[
    (
        "ssl.",
        "Strand's TLS is set with tls.cert.file, tls.key.file and tls.ca.file (PEM files; docs/security.md): remove it",
    ),
    (
        "sasl.",
        "Strand's SASL is set with sasl.enabled.mechanisms and users from `strand user set` (docs/security.md): remove it",
    ),
    ("listener.name.", ONE_LISTENER),
];

/// One `key=value` of a properties file; `line` is where it starts (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Reads Java-properties text as `java.util.Properties` does: `key=value`, `key: value` or
/// `key value`; `#` and `!` comment lines; a line ending in an odd number of backslashes
/// goes on on the next (whose leading whitespace is dropped); `\t \n \r \f \uXXXX` and
/// `\x` escapes. Unlike Java, trailing whitespace of a value is dropped too. Errors carry
/// their line.
pub fn parse_properties(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((start, natural)) = lines.next() {
        let line = natural.trim_start_matches([' ', '\t', '\x0c']);
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let mut logical = String::new();
        let mut part = line;
        loop {
            let backslashes = part.len() - part.trim_end_matches('\\').len();
            if backslashes % 2 == 0 {
                logical.push_str(part);
                break;
            }
            logical.push_str(&part[..part.len() - 1]);
            match lines.next() {
                Some((_, next)) => part = next.trim_start_matches([' ', '\t', '\x0c']),
                None => break,
            }
        }
        let (raw_key, raw_value) = split_key_value(&logical);
        let key = unescape(raw_key).map_err(|e| (start, e))?;
        let value = unescape(raw_value).map_err(|e| (start, e))?;
        if key.is_empty() {
            return Err((start, format!("a value ({value:?}) without a key")));
        }
        entries.push(Entry {
            key,
            value,
            line: start,
        });
    }
    Ok(entries)
}

/// Splits a logical line (escapes still in) at the first unescaped `=`, `:` or whitespace.
fn split_key_value(line: &str) -> (&str, &str) {
    let is_space = |c: char| c == ' ' || c == '\t' || c == '\x0c';
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if c == '=' || c == ':' || is_space(c) {
            let key = &line[..i];
            let mut rest = line[i + c.len_utf8()..].trim_start_matches(is_space);
            if is_space(c) {
                if let Some(r) = rest.strip_prefix(['=', ':']) {
                    rest = r.trim_start_matches(is_space);
                }
            }
            return (key, rest);
        }
    }
    (line, "")
}

/// Resolves escapes and drops trailing unescaped whitespace.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut keep = 0; // length of `out` without its trailing unescaped whitespace
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            if !c.is_whitespace() {
                keep = out.len();
            }
            continue;
        }
        let Some(e) = chars.next() else {
            break; // a lone backslash at the very end: dropped, as Java does
        };
        match e {
            't' => out.push('\t'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            'f' => out.push('\x0c'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("malformed \\uXXXX escape \\u{hex}"))?;
                out.push(code);
            }
            other => out.push(other),
        }
        keep = out.len();
    }
    out.truncate(keep);
    Ok(out)
}

/// A value as it goes into a properties file (the inverse of [`unescape`]).
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0c' => out.push_str("\\f"),
            ' ' if i == 0 => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    if out.ends_with(' ') {
        out.pop();
        out.push_str("\\ ");
    }
    out
}

/// The configuration `serve` runs with, and where each key's value comes from.
pub struct Effective {
    pub config: Config,
    /// Every key in flag order: its value (None: unset) and origin.
    pub settings: Vec<(Key, Option<String>, Origin)>,
}

impl Effective {
    /// The settings as properties text, each key after a comment saying where it comes
    /// from; unset keys commented out. `config check` accepts it back.
    pub fn to_properties(&self) -> String {
        let mut out = String::from(
            "# The configuration of strand serve: each key, after where its value comes from.\n",
        );
        for (key, value, origin) in &self.settings {
            match value {
                Some(v) => {
                    // A file line under another name (Kafka's) says which.
                    let name = match origin {
                        Origin::File { key: name, .. } if *name != key.key => format!(" ({name})"),
                        _ => String::new(),
                    };
                    let value = escape_value(v);
                    out.push_str(&format!("# {origin}{name}\n{}={value}\n", key.key))
                }
                None => out.push_str(&format!("# {origin}: unset\n#{}=\n", key.key)),
            }
        }
        out
    }
}

/// A value for a key, before precedence is applied.
struct Candidate {
    /// Index into the keys.
    key: usize,
    value: OsString,
    origin: Origin,
    /// The name given (key or Kafka name), for errors and precedence.
    name: String,
}

/// What a name (key or Kafka alias) sets.
fn lookup(keys: &[Key], name: &str) -> Option<(usize, Convert)> {
    // Kafka's names first: `listeners` is both, and is checked as Kafka's.
    if let Some(alias) = ALIASES.iter().find(|a| a.kafka == name) {
        if let Some(i) = keys.iter().position(|k| k.long == alias.flag) {
            return Some((i, alias.convert));
        }
    }
    let i = keys.iter().position(|k| k.key == name)?;
    Some((i, Convert::Same))
}

/// Every name a file or the environment may use: the keys, then the Kafka aliases.
fn all_names(keys: &[Key]) -> Vec<String> {
    keys.iter()
        .map(|k| k.key.clone())
        .chain(
            ALIASES
                .iter()
                .filter(|a| keys.iter().any(|k| k.long == a.flag))
                .map(|a| a.kafka.to_string()),
        )
        .collect()
}

/// The environment variable of a name: `STRAND_` + upper case, `.` → `_`.
pub fn env_var(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_uppercase().replace('.', "_"))
}

/// Levenshtein distance, on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diag = above;
        }
    }
    row[b.len()]
}

/// The known name nearest an unknown one, if near enough to be a slip.
fn suggest(keys: &[Key], name: &str) -> Option<String> {
    let normal = name
        .trim_start_matches('-')
        .to_lowercase()
        .replace(['-', '_'], ".");
    let (distance, best) = all_names(keys)
        .into_iter()
        .map(|n| (edit_distance(&normal, &n), n))
        .min_by_key(|(d, _)| *d)?;
    (distance <= 2.max(normal.len() / 4)).then_some(best)
}

/// Why a name is not accepted.
fn unknown(keys: &[Key], name: &str, origin: &Origin) -> String {
    let at = origin.location();
    if let Some((_, hint)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
        return format!("Kafka's {name} {at} is not supported: {hint}");
    }
    if let Some((_, hint)) = UNSUPPORTED_PREFIXES
        .iter()
        .find(|(p, _)| name.starts_with(p))
    {
        return format!("Kafka's {name} {at} is not supported: {hint}");
    }
    match suggest(keys, name) {
        Some(s) => format!("unknown key {name} {at}; did you mean {s}?"),
        None => format!(
            "unknown key {name} {at} (keys are the flags of strand serve with - as ., e.g. segment.bytes; `strand config print` lists them)"
        ),
    }
}

/// Turns a Kafka-style value into the flag's (the identity for Strand's own keys).
fn convert(convert: Convert, value: &str) -> Result<String, String> {
    match convert {
        Convert::Same => Ok(value.to_string()),
        Convert::Millis(unit) | Convert::RetentionMillis(unit) => {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| "not a whole number".to_string())?;
            if n < 0 && matches!(convert, Convert::RetentionMillis(_)) {
                return Ok("-1".into());
            }
            n.checked_mul(unit)
                .map(|ms| ms.to_string())
                .ok_or_else(|| "too large".to_string())
        }
        Convert::OneDir => {
            let dirs: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect();
            match dirs.as_slice() {
                [one] => Ok(one.to_string()),
                [] => Err("no directory".into()),
                _ => Err(
                    "Strand keeps its data in one directory (data.dir): give one, not a list"
                        .into(),
                ),
            }
        }
        Convert::Listener | Convert::Advertised => {
            let listeners = crate::config::parse_listener_list(value)?;
            if convert == Convert::Advertised {
                if let Some((p, _, _)) = listeners.iter().find(|(_, h, _)| h.is_empty()) {
                    return Err(format!("advertised listener {} needs a host", p.name()));
                }
            }
            Ok(value.trim().to_string())
        }
    }
}

/// The reason clap gives for refusing a value, without its usage lines.
fn clap_reason(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(source) = std::error::Error::source(err) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        return format!("must be one of {}", valid.join(", "));
    }
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Checks one value the way the flag checks it: clap parses `--flag=value` alone.
fn check_value(cmd: &Command, key: &Key, value: &OsStr) -> Result<(), String> {
    if key.switch.is_some() {
        return match value.to_str() {
            Some("true") | Some("false") => Ok(()),
            _ => Err("must be true or false".into()),
        };
    }
    let mut arg = OsString::from(format!("--{}=", key.long));
    arg.push(value);
    cmd.clone()
        .try_get_matches_from([OsString::from("serve"), arg])
        .map(|_| ())
        .map_err(|e| clap_reason(&e))
}

/// Candidates from named values (a file's entries or the environment's variables).
fn candidates(
    cmd: &Command,
    keys: &[Key],
    named: Vec<(String, String, Origin)>,
) -> Result<Vec<Candidate>, String> {
    let mut out: Vec<Candidate> = Vec::new();
    for (name, value, origin) in named {
        let Some((index, how)) = lookup(keys, &name) else {
            return Err(unknown(keys, &name, &origin));
        };
        let at = origin.location();
        let value = convert(how, &value)
            .map_err(|reason| format!("bad value {value:?} for {name} {at}: {reason}"))?;
        check_value(cmd, &keys[index], OsStr::new(&value))
            .map_err(|reason| format!("bad value {value:?} for {name} {at}: {reason}"))?;
        // Two names of one flag from one place: Kafka's precedence, else an error.
        if let Some(pos) = out.iter().position(|c| c.key == index) {
            let rank = |n: &str| {
                PRECEDENCE
                    .iter()
                    .enumerate()
                    .find_map(|(g, group)| group.iter().position(|m| *m == n).map(|r| (g, r)))
            };
            let earlier = &out[pos];
            match (rank(&earlier.name), rank(&name)) {
                (Some((g1, r1)), Some((g2, r2))) if g1 == g2 && r1 != r2 => {
                    if r2 < r1 {
                        out[pos] = Candidate {
                            key: index,
                            value: value.into(),
                            origin,
                            name,
                        };
                    }
                    continue;
                }
                _ => {
                    return Err(format!(
                        "{name} {at} sets {} again ({} {} set it already): keep one",
                        keys[index].key,
                        earlier.name,
                        earlier.origin.location()
                    ))
                }
            }
        }
        out.push(Candidate {
            key: index,
            value: value.into(),
            origin,
            name,
        });
    }
    Ok(out)
}

/// The settings of a properties file, as named values.
fn file_values(path: &str, text: &str) -> Result<Vec<(String, String, Origin)>, String> {
    let entries =
        parse_properties(text).map_err(|(line, reason)| format!("{path}:{line}: {reason}"))?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let origin = Origin::File {
                path: path.to_string(),
                line: e.line,
                key: e.key.clone(),
            };
            (e.key, e.value, origin)
        })
        .collect())
}

/// The `STRAND_…` variables naming a key or Kafka alias; other variables are left alone.
fn env_values(
    keys: &[Key],
    env: &[(OsString, OsString)],
) -> Result<Vec<(String, String, Origin)>, String> {
    let mut out = Vec::new();
    for name in all_names(keys) {
        let var = env_var(&name);
        if let Some((_, value)) = env.iter().find(|(k, _)| k.as_os_str() == OsStr::new(&var)) {
            let value = value
                .to_str()
                .ok_or_else(|| format!("environment variable {var} is not UTF-8"))?;
            out.push((name, value.to_string(), Origin::Env { var }));
        }
    }
    Ok(out)
}

/// The configuration from (lowest first) the defaults, a properties file (name, text), the
/// flags given on the command line (`cli`: the matches of [`ServeArgs`] or [`Config`]) and
/// the environment. Errors are one line, naming the file and line or the variable.
pub fn resolve(
    file: Option<(&str, &str)>,
    cli: Option<&ArgMatches>,
    env: &[(OsString, OsString)],
) -> Result<Effective, String> {
    let cmd = serve_command();
    let keys = keys_of(&cmd);
    let mut chosen: Vec<Option<(OsString, Origin)>> = vec![None; keys.len()];
    if let Some((path, text)) = file {
        for c in candidates(&cmd, &keys, file_values(path, text)?)? {
            chosen[c.key] = Some((c.value, c.origin));
        }
    }
    if let Some(cli) = cli {
        for (i, key) in keys.iter().enumerate() {
            if cli.value_source(&key.id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let value = match key.switch {
                Some(set) => OsString::from(if cli.get_flag(&key.id) == set {
                    "true"
                } else {
                    "false"
                }),
                None => match cli.get_raw(&key.id).and_then(|mut v| v.next_back()) {
                    Some(v) => v.to_os_string(),
                    None => continue,
                },
            };
            let origin = Origin::Flag {
                long: key.long.clone(),
            };
            chosen[i] = Some((value, origin));
        }
    }
    for c in candidates(&cmd, &keys, env_values(&keys, env)?)? {
        chosen[c.key] = Some((c.value, c.origin));
    }

    // One argument list, parsed once by clap as if every value had been a flag.
    let mut argv = vec![OsString::from("serve")];
    for (key, chosen) in keys.iter().zip(&chosen) {
        let Some((value, _)) = chosen else { continue };
        match key.switch {
            Some(set) => {
                if value.to_str() == Some(if set { "true" } else { "false" }) {
                    argv.push(format!("--{}", key.long).into());
                }
            }
            None => {
                let mut arg = OsString::from(format!("--{}=", key.long));
                arg.push(value);
                argv.push(arg);
            }
        }
    }
    let matches = cmd
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| clap_reason(&e))?;
    let config = Config::from_arg_matches(&matches).map_err(|e| clap_reason(&e))?;
    let settings = keys
        .into_iter()
        .zip(chosen)
        .map(|(key, chosen)| match chosen {
            Some((value, origin)) => (key, Some(value.to_string_lossy().into_owned()), origin),
            None => {
                let value = key.default.clone();
                (key, value, Origin::Default)
            }
        })
        .collect();
    Ok(Effective { config, settings })
}

/// The configuration `strand serve` (or `config print`) runs with: `--config`'s file, the
/// flags in `matches`, the process environment.
pub fn effective(file: Option<&Path>, matches: &ArgMatches) -> Result<Effective, String> {
    let text = match file {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    resolve(
        text.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
        Some(matches),
        &env,
    )
}

/// The configuration `strand serve` starts with: [`effective`], then the broker's checks
/// of the whole ([`crate::broker::check`]).
pub fn serve_config(args: &ServeArgs, matches: &ArgMatches) -> Result<Config, String> {
    let effective = effective(args.config.as_deref(), matches)?;
    check(&effective)?;
    Ok(effective.config)
}

/// The broker's checks of a whole configuration (`--peers` needs `--node-id`, …); an error
/// names where each flag it mentions was set.
pub fn check(effective: &Effective) -> Result<(), String> {
    crate::broker::check(&effective.config).map_err(|err| explain(err, &effective.settings))
}

/// Appends to an error that names flags where each was set (a file line, a variable).
fn explain(err: String, settings: &[(Key, Option<String>, Origin)]) -> String {
    let mentions = |flag: &str| {
        err.match_indices(flag).any(|(i, _)| {
            !err[i + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    let set: Vec<String> = settings
        .iter()
        .filter(|(key, _, origin)| {
            matches!(origin, Origin::File { .. } | Origin::Env { .. })
                && mentions(&format!("--{}", key.long))
        })
        .map(|(key, _, origin)| match origin {
            Origin::File { key: name, .. } => format!("{name} {}", origin.location()),
            _ => format!("{} {}", key.key, origin.location()),
        })
        .collect();
    if set.is_empty() {
        err
    } else {
        format!("{err} (set by {})", set.join(", "))
    }
}

/// Runs `strand config …`; `matches` are those of `config`. Returns the exit code.
pub fn command(command: ConfigCommand, matches: &ArgMatches) -> i32 {
    match command {
        ConfigCommand::Check { file } => {
            let name = file.display().to_string();
            let result = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read config file {name}: {e}"))
                .and_then(|text| resolve(Some((&name, &text)), None, &[]))
                .and_then(|effective| check(&effective));
            match result {
                Ok(_) => {
                    println!("{name}: ok");
                    0
                }
                Err(err) => {
                    eprintln!("strand: {err}");
                    2
                }
            }
        }
        ConfigCommand::Print(args) => {
            let print = matches
                .subcommand_matches("print")
                .expect("the matches of config print");
            match effective(args.config.as_deref(), print) {
                Ok(effective) => {
                    print!("{}", effective.to_properties());
                    0
                }
                Err(err) => {
                    eprintln!("strand: {err}");
                    2
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<(String, String, usize)> {
        parse_properties(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value, e.line))
            .collect()
    }

    fn entry(k: &str, v: &str, line: usize) -> (String, String, usize) {
        (k.to_string(), v.to_string(), line)
    }

    fn resolve_file(text: &str) -> Result<Effective, String> {
        resolve(Some(("strand.properties", text)), None, &[])
    }

    fn value<'a>(e: &'a Effective, key: &str) -> (Option<&'a str>, &'a Origin) {
        let (_, v, o) = e.settings.iter().find(|(k, _, _)| k.key == key).unwrap();
        (v.as_deref(), o)
    }

    #[test]
    fn separators_comments_blank_lines_and_whitespace() {
        let text = "# a comment\n! another\n\n  segment.bytes = 1024  \nlog.level: debug\n\
                    shards 4\nlisten=\t127.0.0.1:1\n   # indented comment\nempty=\nbare\n";
        assert_eq!(
            parse(text),
            vec![
                entry("segment.bytes", "1024", 4),
                entry("log.level", "debug", 5),
                entry("shards", "4", 6),
                entry("listen", "127.0.0.1:1", 7),
                entry("empty", "", 9),
                entry("bare", "", 10),
            ]
        );
        // `key = : v`: whitespace then one separator, then the value (which may hold more).
        assert_eq!(
            parse("a = b=c\nd  :e"),
            vec![entry("a", "b=c", 1), entry("d", "e", 2)]
        );
    }

    #[test]
    fn continuation_lines() {
        let text = "peers=1@h:1,\\\n      2@h:2,\\\n   3@h:3\nnext=x\n";
        assert_eq!(
            parse(text),
            vec![
                entry("peers", "1@h:1,2@h:2,3@h:3", 1),
                entry("next", "x", 4)
            ]
        );
        // An even number of backslashes is an escaped backslash, not a continuation; a
        // comment line never continues; a continuation line starting with # is content.
        assert_eq!(
            parse("a=x\\\\\n# c \\\nb=y\\\n#z\n"),
            vec![entry("a", "x\\", 1), entry("b", "y#z", 3)]
        );
        // A continuation at the end of the file ends the value.
        assert_eq!(parse("a=x\\"), vec![entry("a", "x", 1)]);
        // CRLF line ends.
        assert_eq!(
            parse("a=1\\\r\n 2\r\nb=3\r\n"),
            vec![entry("a", "12", 1), entry("b", "3", 3)]
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(
            parse("a\\=b=c\\td\\u0041\\ \nk\\ ey=\\ v"),
            vec![entry("a=b", "c\tdA ", 1), entry("k ey", " v", 2)]
        );
        let err = parse_properties("ok=1\nbad=\\u12").unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("\\u"), "{err:?}");
        assert_eq!(parse_properties("=v").unwrap_err().0, 1);
        for v in ["plain", " lead", "trail ", "back\\slash", "tab\tnew\nline"] {
            let text = format!("k={}", escape_value(v));
            assert_eq!(parse(&text), vec![entry("k", v, 1)], "{text:?}");
        }
    }

    #[test]
    fn every_flag_has_a_key_from_its_long_name() {
        let keys = keys();
        let config = Config::augment_args(Command::new("t"));
        let flags: Vec<&str> = config
            .get_arguments()
            .filter_map(|a| a.get_long())
            .collect();
        assert_eq!(keys.len(), flags.len());
        for long in flags {
            let key = long.replace('-', ".");
            assert!(
                keys.iter().any(|k| k.key == key && k.long == long),
                "{long}"
            );
        }
        let find = |k: &str| keys.iter().find(|key| key.key == k).unwrap().clone();
        assert_eq!(find("segment.bytes").id, "segment_bytes");
        assert_eq!(find("data.dir").default.as_deref(), Some("./data"));
        assert_eq!(find("advertise").default, None);
    }

    #[test]
    fn aliases_name_existing_flags_and_no_key() {
        let keys = keys();
        for alias in ALIASES {
            assert!(keys.iter().any(|k| k.long == alias.flag), "{}", alias.kafka);
            // An alias may share its name only with its own flag's key (`listeners`: the
            // alias adds Kafka's checking of the value).
            assert!(
                !keys
                    .iter()
                    .any(|k| k.key == alias.kafka && k.long != alias.flag),
                "{}",
                alias.kafka
            );
        }
        for name in KAFKA_KEYS {
            assert!(keys.iter().any(|k| k.key == *name), "{name}");
        }
        for (name, _) in UNSUPPORTED {
            assert!(lookup(&keys, name).is_none(), "{name}");
        }
        for group in PRECEDENCE {
            for name in *group {
                assert!(lookup(&keys, name).is_some(), "{name}");
            }
        }
    }

    #[test]
    fn file_values_go_through_the_flags_parsing() {
        let e = resolve_file(
            "segment.bytes=4096\nauto.create.topics=false\nlog.retention.ms=-1\n\
             data.dir=/tmp/x\nnode.id=3\n",
        )
        .unwrap();
        assert_eq!(e.config.segment_bytes, 4096);
        assert!(!e.config.auto_create_topics);
        assert_eq!(e.config.log_retention_ms, -1);
        assert_eq!(e.config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(e.config.node_id, Some(3));
        assert_eq!(
            value(&e, "segment.bytes"),
            (
                Some("4096"),
                &Origin::File {
                    path: "strand.properties".into(),
                    line: 1,
                    key: "segment.bytes".into()
                }
            )
        );
        assert_eq!(value(&e, "max.frame.bytes").1, &Origin::Default);
        assert_eq!(value(&e, "advertise"), (None, &Origin::Default));
    }

    #[test]
    fn errors_name_the_line_and_suggest_the_nearest_key() {
        let err = resolve_file("# c\n\nsegment.bytes=1\nlog.segment.byte=5\n")
            .err()
            .unwrap();
        assert_eq!(
            err,
            "unknown key log.segment.byte at strand.properties:4; did you mean log.segment.bytes?"
        );
        let err = resolve_file("segment-bytes=1\n").err().unwrap();
        assert!(err.ends_with("did you mean segment.bytes?"), "{err}");
        let err = resolve_file("shards=2\nnothing.like.this.at.all=1\n")
            .err()
            .unwrap();
        assert!(
            err.starts_with("unknown key nothing.like.this.at.all at strand.properties:2 ("),
            "{err}"
        );
        // Values: the flag's own parser and range checks.
        let err = resolve_file("\nsegment.bytes=lots\n").err().unwrap();
        assert!(
            err.starts_with("bad value \"lots\" for segment.bytes at strand.properties:2: "),
            "{err}"
        );
        let err = resolve_file("raft.tick.ms=5\n").err().unwrap();
        assert!(
            err.contains("strand.properties:1") && err.contains("10"),
            "{err}"
        );
        let err = resolve_file("auto.create.topics=yes\n").err().unwrap();
        assert!(err.contains("strand.properties:1"), "{err}");
        let err = resolve_file("listen=nowhere\n").err().unwrap();
        assert!(err.contains("listen at strand.properties:1"), "{err}");
        // One key twice.
        let err = resolve_file("shards=1\nshards=2\n").err().unwrap();
        assert!(
            err.contains("strand.properties:2") && err.contains("strand.properties:1"),
            "{err}"
        );
    }

    #[test]
    fn kafka_names() {
        let e = resolve_file(
            "log.dirs=/var/lib/strand\nlisteners=PLAINTEXT://127.0.0.1:9500\n\
             advertised.listeners=PLAINTEXT://broker1.example:9500\nbroker.id=2\n\
             num.partitions=6\nauto.create.topics.enable=false\nlog.retention.hours=168\n\
             log.segment.bytes=1048576\nmessage.max.bytes=2000000\nmin.insync.replicas=2\n\
             default.replication.factor=3\nreplica.lag.time.max.ms=1000\n",
        )
        .unwrap();
        let c = &e.config;
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/strand"));
        let listeners = c.resolve_listeners().unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].bind, "127.0.0.1:9500".parse().unwrap());
        assert_eq!(listeners[0].advertised_host, "broker1.example");
        assert_eq!(listeners[0].advertised_port, 9500);
        assert_eq!(c.node_id, Some(2));
        assert_eq!(c.default_partitions, 6);
        assert!(!c.auto_create_topics);
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
        assert_eq!(c.segment_bytes, 1_048_576);
        assert_eq!(c.max_message_bytes, 2_000_000);
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(c.default_replication_factor, 3);
        assert_eq!(c.replica_lag_time_max_ms, 1000);
        assert!(matches!(
            value(&e, "log.retention.ms").1,
            Origin::File { line: 7, key, .. } if key == "log.retention.hours"
        ));
        // An empty host binds every interface, as in Kafka.
        let e = resolve_file("listeners=PLAINTEXT://:9501\n").unwrap();
        let listeners = e.config.resolve_listeners().unwrap();
        assert_eq!(listeners[0].bind, "0.0.0.0:9501".parse().unwrap());
        // Several listeners, each with its protocol.
        let e = resolve_file(
            "listeners=PLAINTEXT://127.0.0.1:9500,SASL_SSL://127.0.0.1:9600\n\
             advertised.listeners=SASL_SSL://public.example:19600\n",
        )
        .unwrap();
        let listeners = e.config.resolve_listeners().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(
            listeners[1].protocol,
            crate::config::SecurityProtocol::SaslSsl
        );
        assert_eq!(listeners[1].bind, "127.0.0.1:9600".parse().unwrap());
        assert_eq!(
            (
                listeners[1].advertised_host.as_str(),
                listeners[1].advertised_port
            ),
            ("public.example", 19600)
        );
        assert_eq!(listeners[0].advertised_host, "127.0.0.1");
        // Kafka's precedence among the units of one setting, whatever the order.
        for text in [
            "log.retention.hours=1\nlog.retention.ms=5\nlog.retention.minutes=2\n",
            "log.retention.ms=5\nlog.retention.hours=1\n",
        ] {
            assert_eq!(
                resolve_file(text).unwrap().config.log_retention_ms,
                5,
                "{text}"
            );
        }
        let e = resolve_file("log.retention.minutes=2\nlog.retention.hours=1\n").unwrap();
        assert_eq!(e.config.log_retention_ms, 120_000);
        let e = resolve_file("log.retention.hours=-1\n").unwrap();
        assert_eq!(e.config.log_retention_ms, -1);
        // Two names of one flag outside such a group: an error naming both.
        let err = resolve_file("segment.bytes=1\nlog.segment.bytes=2\n")
            .err()
            .unwrap();
        assert!(
            err.contains("log.segment.bytes at strand.properties:2"),
            "{err}"
        );
        assert!(
            err.contains("segment.bytes at strand.properties:1"),
            "{err}"
        );
        // A value Kafka would take but Strand cannot: a clear error, not silence.
        for (text, says) in [
            ("log.dirs=/a,/b\n", "one directory"),
            (
                "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n",
                "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
            ),
            ("listeners=SSL://:9093,SSL://:9094\n", "twice"),
            ("advertised.listeners=SSL://:9093\n", "needs a host"),
            ("log.retention.hours=many\n", "whole number"),
            ("process.roles=broker,controller\n", "remove it"),
            ("controller.quorum.voters=1@h:9093\n", "peers"),
            ("num.io.threads=8\n", "shards"),
            ("ssl.keystore.location=/k\n", "TLS"),
        ] {
            let err = resolve_file(text).err().unwrap();
            assert!(
                err.contains("strand.properties:1") && err.contains(says),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn flags_override_the_file_and_the_environment_overrides_both() {
        let cmd = ServeArgs::augment_args(Command::new("serve"));
        let cli = cmd
            .try_get_matches_from([
                "serve",
                "--segment-bytes",
                "2000",
                "--shards",
                "3",
                "--auto-create-topics",
                "false",
            ])
            .unwrap();
        let file = "segment.bytes=1000\nshards=2\nlog.level=debug\nmax.frame.bytes=77\n";
        let env: Vec<(OsString, OsString)> = [
            ("STRAND_SHARDS", "4"),
            ("STRAND_LOG_SEGMENT_BYTES", "3000"),
            ("STRAND_BIN", "/not/a/key"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let e = resolve(Some(("f", file)), Some(&cli), &[]).unwrap();
        assert_eq!(e.config.segment_bytes, 2000);
        assert_eq!(e.config.shards, Some(3));
        assert!(!e.config.auto_create_topics);
        assert_eq!(e.config.log_level, "debug");
        assert_eq!(
            value(&e, "segment.bytes").1,
            &Origin::Flag {
                long: "segment-bytes".into()
            }
        );
        let e = resolve(Some(("f", file)), Some(&cli), &env).unwrap();
        assert_eq!(e.config.shards, Some(4));
        assert_eq!(e.config.segment_bytes, 3000);
        assert_eq!(e.config.max_frame_bytes, 77);
        assert_eq!(
            value(&e, "segment.bytes").1,
            &Origin::Env {
                var: "STRAND_LOG_SEGMENT_BYTES".into()
            }
        );
        // A bad variable names itself.
        let env = [("STRAND_SHARDS".into(), "many".into())];
        let err = resolve(None, Some(&cli), &env).err().unwrap();
        assert!(err.contains("environment variable STRAND_SHARDS"), "{err}");
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let e = resolve_file("log.segment.bytes=4096\ndata.dir=/tmp/a b \\\\c\\ \n").unwrap();
        let text = e.to_properties();
        assert!(
            text.contains("# file strand.properties:1 (log.segment.bytes)\nsegment.bytes=4096\n"),
            "{text}"
        );
        assert!(
            text.contains("# default\nlisten=127.0.0.1:9092\n"),
            "{text}"
        );
        assert!(text.contains("# default: unset\n#advertise=\n"), "{text}");
        let back = resolve_file(&text).unwrap();
        assert_eq!(back.config.segment_bytes, 4096);
        assert_eq!(back.config.data_dir, PathBuf::from("/tmp/a b \\c "));
        assert_eq!(format!("{:?}", back.config), format!("{:?}", e.config));
    }
}
