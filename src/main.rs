//! The `strand` command line: `strand serve` runs the broker; `strand topic …`,
//! `strand cluster …` and `strand group …` administer a running cluster over the Kafka
//! protocol.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use strand::config::Config;

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
    Serve(Box<Config>),
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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Topic(command) => std::process::exit(strand::admin::topic(command)),
        Command::Cluster(command) => std::process::exit(strand::admin::cluster(command)),
        Command::Group(command) => std::process::exit(strand::admin::group(command)),
        Command::Serve(config) => {
            let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|err| {
                eprintln!("invalid --log-level {:?}: {err}", config.log_level);
                std::process::exit(2);
            });
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            if let Err(err) = strand::broker::serve(*config) {
                tracing::error!("{err}");
                eprintln!("strand: {err}");
                std::process::exit(1);
            }
        }
    }
}
