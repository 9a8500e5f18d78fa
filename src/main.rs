//! The `strand` command line: `strand serve` runs the broker; `strand topic …`,
//! `strand cluster …` and `strand group …` administer a running cluster over the Kafka
//! protocol, `strand produce` and `strand consume` write and read its topics; `strand config
//! …` checks and prints the broker's configuration and its reference ([`strand::cli`]).

use std::io::IsTerminal;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use strand::cli::{Cli, Command, ConfigSubcommand};
use strand::config::LogFormat;

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
        Command::Config(ConfigSubcommand::File(command)) => {
            std::process::exit(strand::config_file::command(command, sub_matches()))
        }
        Command::Config(ConfigSubcommand::Reference) => print!("{}", strand::cli::reference()),
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
