//! The `strand` command line, and its reference as docs/operations.md prints it.
//!
//! `strand config reference` renders, from clap's definitions alone, the table of every
//! `strand serve` flag (its config-file key, the Kafka `server.properties` names that set
//! it, its default and meaning) and the reference of every other command (usage, arguments,
//! defaults, meanings). docs/operations.md holds that output between marker comments, and a
//! unit test fails when the two differ, so the page cannot drift from the code.

use clap::{Arg, ArgAction, CommandFactory, Parser, Subcommand};

use crate::config_file::{self, ConfigCommand, ServeArgs, ALIASES, KAFKA_KEYS};

#[derive(Parser)]
#[command(
    name = "strand",
    version,
    about = "A Kafka-wire-compatible streaming broker, thread-per-core on io_uring"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the broker: one shard per core, shard k listening on the --listen port + k.
    /// Flags override `--config FILE`; `STRAND_<KEY>` variables override both.
    Serve(Box<ServeArgs>),
    /// The broker's configuration: check a config file, print what `serve` would use, print
    /// this reference.
    #[command(subcommand)]
    Config(ConfigSubcommand),
    /// Topics of a running cluster: list, describe, create, delete, alter-config,
    /// add-partitions.
    #[command(subcommand)]
    Topic(crate::admin::TopicCommand),
    /// A running cluster: info, health.
    #[command(subcommand)]
    Cluster(crate::admin::ClusterCommand),
    /// Consumer groups of a running cluster: list, describe, delete, reset-offsets.
    #[command(subcommand)]
    Group(crate::admin::GroupCommand),
    /// Write the lines of stdin to a topic, one record per line.
    Produce(Box<crate::admin::ProduceArgs>),
    /// Print the records of a topic, one per line (or as --format says).
    Consume(Box<crate::admin::ConsumeArgs>),
    /// SASL users of a data directory: set (create or change a password), delete, list.
    #[command(subcommand)]
    User(crate::admin::user::UserCommand),
}

/// `strand config …`.
#[derive(Subcommand)]
pub enum ConfigSubcommand {
    #[command(flatten)]
    File(ConfigCommand),
    /// Prints, as Markdown, the reference of every `strand serve` flag (config key, Kafka
    /// name, default, meaning) and of every command, as docs/operations.md holds it.
    Reference,
}

/// One generated part of docs/operations.md: what its marker comments say.
struct Part {
    name: &'static str,
    body: String,
}

/// The first line of a generated part.
fn begin(name: &str) -> String {
    format!("<!-- BEGIN generated {name}: `strand config reference` prints it; edit the code, not this -->")
}

/// The last line of a generated part.
fn end(name: &str) -> String {
    format!("<!-- END generated {name} -->")
}

/// What `strand config reference` prints: each part between its markers.
pub fn reference() -> String {
    parts()
        .iter()
        .map(|part| format!("{}\n{}{}\n", begin(part.name), part.body, end(part.name)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn parts() -> Vec<Part> {
    vec![
        Part {
            name: "broker flags",
            body: flags_reference(),
        },
        Part {
            name: "command reference",
            body: commands_reference(),
        },
    ]
}

/// `doc` with every generated part replaced by the current one; an error names a part
/// whose markers are missing.
pub fn splice(doc: &str) -> Result<String, String> {
    let mut doc = doc.to_string();
    for part in parts() {
        let (b, e) = (begin(part.name), end(part.name));
        let start = doc
            .find(&b)
            .ok_or_else(|| format!("no line {b:?} to put the {} after", part.name))?;
        let stop = doc[start..]
            .find(&e)
            .map(|at| start + at)
            .ok_or_else(|| format!("no line {e:?} after {b:?}"))?;
        doc.replace_range(start + b.len() + 1..stop, &part.body);
    }
    Ok(doc)
}

/// A table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// What an argument does, from its doc comment, in one line ending in a period.
fn meaning(arg: &Arg) -> String {
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    sentence(&help)
}

/// `text` on one line, ending in a period (clap drops it from one-paragraph help).
fn sentence(text: &str) -> String {
    let mut text = cell(text);
    if !text.is_empty() && !text.ends_with(['.', '…', ':']) {
        text.push('.');
    }
    text
}

/// A default as the reference prints it: the value, and in parentheses what a large
/// number of bytes or milliseconds amounts to.
pub fn default_text(long: &str, value: &str) -> String {
    let Ok(n) = value.parse::<i64>() else {
        return format!("`{value}`");
    };
    if n == i64::MAX {
        return format!("{n} (2⁶³−1)");
    }
    let human = if long.ends_with("-bytes") && n >= 1 << 20 {
        let units = [(1i64 << 30, "GiB"), (1 << 20, "MiB")];
        units.iter().find_map(|&(size, unit)| {
            let (whole, rest) = (n / size, n % size);
            (whole > 0 && rest < 1024).then(|| match rest {
                0 => format!("{whole} {unit}"),
                rest => format!("{whole} {unit} + {rest}"),
            })
        })
    } else {
        let ms = if long.ends_with("-ms") {
            Some(n)
        } else if long.ends_with("-minutes") {
            n.checked_mul(60_000)
        } else {
            None
        };
        ms.filter(|&ms| ms >= 60_000).and_then(|ms| {
            let units = [(86_400_000, "day"), (3_600_000, "h"), (60_000, "min")];
            units
                .iter()
                .find(|&&(size, _)| ms % size == 0)
                .map(|&(size, unit)| match (ms / size, unit) {
                    (1, u) => format!("1 {u}"),
                    (k, "day") => format!("{k} days"),
                    (k, u) => format!("{k} {u}"),
                })
        })
    };
    match human {
        Some(human) => format!("{n} ({human})"),
        None => n.to_string(),
    }
}

/// The table of `strand serve` flags, one per section (clap's help headings).
fn flags_reference() -> String {
    let serve = config_file::serve_command();
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) || arg.is_hide_set() {
            continue;
        }
        let key = long.replace('-', ".");
        let mut kafka: Vec<String> = Vec::new();
        if KAFKA_KEYS.contains(&key.as_str()) {
            kafka.push(format!("`{key}`"));
        }
        kafka.extend(
            ALIASES
                .iter()
                .filter(|alias| alias.flag == long)
                .map(|alias| format!("`{}`", alias.kafka)),
        );
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match defaults.as_slice() {
            [] => "unset".to_string(),
            [one] => default_text(long, one),
            many => format!("`{}`", many.join(",")),
        };
        let row = format!(
            "| `--{long}` | `{key}` | {} | {default} | {} |",
            if kafka.is_empty() {
                "—".to_string()
            } else {
                kafka.join(", ")
            },
            meaning(arg)
        );
        let heading = arg.get_help_heading().unwrap_or("Other").to_string();
        match sections.iter_mut().find(|(h, _)| *h == heading) {
            Some((_, rows)) => rows.push(row),
            None => sections.push((heading, vec![row])),
        }
    }
    let mut out = String::new();
    for (heading, rows) in sections {
        out.push_str(&format!("### {heading}\n\n"));
        push_table(
            &mut out,
            "| flag | config key | Kafka name | default | meaning |\n|---|---|---|---|---|\n",
            &rows,
        );
    }
    out.pop();
    out
}

/// A Markdown table: its header lines, a line per row, a blank line after.
fn push_table(out: &mut String, header: &str, rows: &[String]) {
    out.push_str(header);
    for row in rows {
        out.push_str(row);
        out.push('\n');
    }
    out.push('\n');
}

/// How an argument is written on the command line: `-b, --brokers <BROKERS>`, `NAME`.
fn synopsis(arg: &Arg) -> String {
    let values: Vec<String> = arg
        .get_value_names()
        .map(|names| names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_else(|| vec![arg.get_id().as_str().to_uppercase()]);
    if arg.is_positional() {
        let name = values.join(" ");
        let many = matches!(arg.get_action(), ArgAction::Append)
            || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        return if many { format!("{name}…") } else { name };
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let takes_value = !matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    );
    let mut text = names.join(", ");
    if takes_value {
        text.push_str(&format!(" {}", values.join(" ")));
    }
    text
}

/// The reference of every command but `serve` (whose flags have their own table).
fn commands_reference() -> String {
    let mut root = Cli::command();
    root.build();
    let serve_ids: Vec<String> = config_file::serve_command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut out = String::new();
    let mut leaves = Vec::new();
    collect_leaves(&root, &mut Vec::new(), &mut leaves);
    for (path, cmd) in leaves {
        if path == ["serve"] {
            continue;
        }
        let mut cmd = cmd.clone();
        let usage = cmd.render_usage().to_string();
        let usage = usage.trim().trim_start_matches("Usage:").trim();
        out.push_str(&format!("### strand {}\n\n", path.join(" ")));
        if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
            out.push_str(&format!("{}\n\n", sentence(&about.to_string())));
        }
        out.push_str(&format!("`{usage}`\n\n"));
        let mut rows = Vec::new();
        let mut serve_flags = false;
        for arg in cmd.get_arguments() {
            if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) || arg.is_hide_set()
            {
                continue;
            }
            if arg.get_long() != Some("config") && serve_ids.contains(&arg.get_id().to_string()) {
                serve_flags = true;
                continue;
            }
            let default = match arg.get_action() {
                ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count => String::new(),
                _ => arg
                    .get_default_values()
                    .iter()
                    .map(|v| format!("`{}`", v.to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let mut text = meaning(arg);
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("`{}`", v.get_name()))
                .collect();
            if !values.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
                text.push_str(&format!(" One of {}.", values.join(", ")));
            }
            if let Some(env) = arg.get_env() {
                text.push_str(&format!(" Also `{}`.", env.to_string_lossy()));
            }
            rows.push(format!(
                "| `{}` | {default} | {} |",
                synopsis(arg),
                text.trim()
            ));
        }
        if serve_flags {
            rows.push(
                "| every `strand serve` flag | | as for `strand serve` (Broker flags) |".into(),
            );
        }
        if !rows.is_empty() {
            push_table(
                &mut out,
                "| argument | default | meaning |\n|---|---|---|\n",
                &rows,
            );
        }
    }
    out.pop();
    out
}

/// Every command without subcommands, with its path of names (`["topic", "create"]`).
fn collect_leaves<'a>(
    cmd: &'a clap::Command,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, &'a clap::Command)>,
) {
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if subs.is_empty() && !path.is_empty() {
        out.push((path.clone(), cmd));
    }
    for sub in subs {
        path.push(sub.get_name().to_string());
        collect_leaves(sub, path, out);
        path.pop();
    }
}

/// The first line where `a` and `b` differ, for a failure message.
pub fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let mut left = a.lines();
    let mut right = b.lines();
    let mut line = 1;
    loop {
        match (left.next(), right.next()) {
            (None, None) => return None,
            (l, r) if l != r => {
                return Some((
                    line,
                    l.unwrap_or("(end)").to_string(),
                    r.unwrap_or("(end)").to_string(),
                ))
            }
            _ => line += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "docs/operations.md";

    /// Keys of every flag per help heading, for tests.
    fn headings() -> std::collections::BTreeMap<String, Vec<String>> {
        let mut map: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for arg in config_file::serve_command().get_arguments() {
            if let Some(long) = arg.get_long() {
                map.entry(arg.get_help_heading().unwrap_or("").to_string())
                    .or_default()
                    .push(long.to_string());
            }
        }
        map
    }

    /// docs/operations.md holds `strand config reference`'s output between its markers.
    /// `STRAND_UPDATE_DOCS=1` rewrites it instead of failing.
    #[test]
    fn operations_doc_holds_the_generated_reference() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
        let doc = std::fs::read_to_string(&path).expect(DOC);
        let fresh = splice(&doc).unwrap_or_else(|e| panic!("{DOC}: {e}"));
        if std::env::var_os("STRAND_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &fresh).expect(DOC);
            return;
        }
        if let Some((line, doc_line, fresh_line)) = first_difference(&doc, &fresh) {
            panic!(
                "{DOC} differs from `strand config reference` at line {line}:\n  the doc: \
                 {doc_line}\n  the code: {fresh_line}\nregenerate it with\n  \
                 STRAND_UPDATE_DOCS=1 cargo test --release --lib cli::tests"
            );
        }
    }

    #[test]
    fn every_flag_has_a_section_and_a_row() {
        let headings = headings();
        assert!(
            !headings.contains_key(""),
            "flags without a help_heading: {headings:?}"
        );
        let flags = flags_reference();
        for arg in config_file::serve_command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let row = format!("| `--{long}` | `{}` | ", long.replace('-', "."));
            assert_eq!(flags.matches(&row).count(), 1, "--{long}");
        }
        // Kafka's names: the aliases and the keys that are Kafka's too.
        assert!(flags.contains("| `--data-dir` | `data.dir` | `log.dirs`, `log.dir` | `./data` | "));
        assert!(flags.contains(
            "| `--log-retention-ms` | `log.retention.ms` | `log.retention.ms`, \
             `log.retention.minutes`, `log.retention.hours` | 604800000 (7 days) | "
        ));
        assert!(flags.contains("| `--shards` | `shards` | — | unset | "));
    }

    #[test]
    fn defaults_read_as_people_read_them() {
        assert_eq!(
            default_text("segment-bytes", "1073741824"),
            "1073741824 (1 GiB)"
        );
        assert_eq!(
            default_text("max-message-bytes", "1048588"),
            "1048588 (1 MiB + 12)"
        );
        assert_eq!(
            default_text("io-memory-bytes", "2097152"),
            "2097152 (2 MiB)"
        );
        assert_eq!(
            default_text("log-roll-ms", "604800000"),
            "604800000 (7 days)"
        );
        assert_eq!(default_text("x-ms", "86400000"), "86400000 (1 day)");
        assert_eq!(default_text("x-ms", "600000"), "600000 (10 min)");
        assert_eq!(default_text("x-minutes", "10080"), "10080 (7 days)");
        assert_eq!(default_text("x-ms", "30000"), "30000");
        assert_eq!(
            default_text("x-ms", "9223372036854775807"),
            "9223372036854775807 (2⁶³−1)"
        );
        assert_eq!(default_text("log-retention-bytes", "-1"), "-1");
        assert_eq!(default_text("data-dir", "./data"), "`./data`");
    }

    #[test]
    fn every_command_is_in_the_reference() {
        let text = commands_reference();
        for name in [
            "topic list",
            "topic create",
            "group reset-offsets",
            "cluster health",
            "produce",
            "consume",
            "config check",
            "config print",
            "config reference",
        ] {
            assert!(text.contains(&format!("### strand {name}\n")), "{name}");
        }
        assert!(!text.contains("### strand serve\n"));
        assert!(
            text.contains("`strand topic create [OPTIONS] <NAME>`"),
            "{text}"
        );
        assert!(
            text.contains("| `-b, --brokers BROKERS` | `127.0.0.1:9092` | Brokers to start from")
        );
        assert!(text.contains("One of `table`, `json`."));
        // `config print` takes every serve flag: one row says so.
        let print = text.split("### strand config print\n").nth(1).unwrap();
        let print = print.split("\n### ").next().unwrap();
        assert!(print.contains("| `--config FILE` |"), "{print}");
        assert!(print.contains("| every `strand serve` flag |"), "{print}");
        assert!(!print.contains("--segment-bytes"), "{print}");
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let reference = reference();
        let doc = format!("# T\n\nprose before\n\n{reference}\nprose after\n");
        assert_eq!(splice(&doc).unwrap(), doc);
        let stale = doc.replace("| `--listen` |", "| `--listen-old` |");
        assert_ne!(stale, doc);
        assert_eq!(splice(&stale).unwrap(), doc);
        let err = splice("no markers").unwrap_err();
        assert!(err.contains("BEGIN generated broker flags"), "{err}");
        assert!(first_difference(&doc, &stale).is_some());
        assert_eq!(first_difference(&doc, &doc), None);
    }
}
