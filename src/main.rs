//! The `strand` command line: `strand serve` runs the broker; `strand topic …`,
//! `strand cluster …` and `strand group …` administer a running cluster over the Kafka
//! protocol, `strand produce` and `strand consume` write and read its topics; `strand config
//! …` checks and prints the broker's configuration.

use std::io::IsTerminal;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use strand::config::LogFormat;
use strand::config_file::{ConfigCommand, ServeArgs};

#[derive(Parser)]
#[command(
    name = "strand",
    version,
    about = "A Kafka-wire-compatible streaming broker, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: one shard per core, shard k listening on the --listen port + k.
    /// Flags override `--config FILE`; `STRAND_<KEY>` variables override both.
    Serve(Box<ServeArgs>),
    /// The broker's configuration: check a config file, print what `serve` would use.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Topics of a running cluster: list, describe, create, delete, alter-config,
    /// add-partitions.
    #[command(subcommand)]
    Topic(strand::admin::TopicCommand),
    /// A running cluster: info, health.
    #[command(subcommand)]
    Cluster(strand::admin::ClusterCommand),
    /// Consumer groups of a running cluster: list, describe, delete, reset-offsets.
    #[command(subcommand)]
    Group(strand::admin::GroupCommand),
    /// Write the lines of stdin to a topic, one record per line.
    Produce(Box<strand::admin::ProduceArgs>),
    /// Print the records of a topic, one per line (or as --format says).
    Consume(Box<strand::admin::ConsumeArgs>),
    /// SASL users of a data directory: set (create or change a password), delete, list.
    #[command(subcommand)]
    User(strand::admin::user::UserCommand),
}

fn main() {
    // The matches say which flags were given, for the config file's precedence.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let sub_matches = || matches.subcommand().expect("a subcommand").1;
    match cli.command {
        Command::Topic(command) => std::process::exit(strand::admin::topic(command)),
        Command::Cluster(command) => std::process::exit(strand::admin::cluster(command)),
        Command::Group(command) => std::process::exit(strand::admin::group(command)),
        Command::Produce(args) => std::process::exit(strand::admin::produce(*args)),
        Command::Consume(args) => std::process::exit(strand::admin::consume(*args)),
        Command::User(command) => std::process::exit(strand::admin::user::user(command)),
        Command::Config(command) => {
            std::process::exit(strand::config_file::command(command, sub_matches()))
        }
        Command::Serve(args) => {
            let config =
                strand::config_file::serve_config(&args, sub_matches()).unwrap_or_else(|err| {
                    eprintln!("strand: {err}");
                    std::process::exit(2);
                });
            let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|err| {
                eprintln!("invalid --log-level {:?}: {err}", config.log_level);
                std::process::exit(2);
            });
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr);
            match config.log_format {
                LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
                LogFormat::Json => logs.json().init(),
            }
            if let Err(err) = strand::broker::serve(config) {
                tracing::error!("{err}");
                eprintln!("strand: {err}");
                std::process::exit(1);
            }
        }
    }
}
