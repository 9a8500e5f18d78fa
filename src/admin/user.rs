//! `strand user …`: the SASL users of a broker's data directory (`DATA_DIR/users.json`),
//! set before start or while it runs (the broker rereads the file at the next login).
//! As with Kafka's `kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[…]'`, a user
//! has one SCRAM credential per mechanism; SASL/PLAIN logins are checked against them.

use std::path::PathBuf;

use clap::Subcommand;

use crate::security::scram::{Hash, DEFAULT_ITERATIONS, ITERATIONS_MAX, ITERATIONS_MIN};
use crate::security::users::Users;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user or change its password: stores salt, StoredKey, ServerKey and the
    /// iteration count for each mechanism given, never the password.
    Set {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; give it twice for both. Either serves
        /// SASL/PLAIN logins too.
        #[arg(long = "mechanism", required = true)]
        mechanisms: Vec<String>,
        /// A file whose first line is the password (`-` reads standard input).
        #[arg(long)]
        password_file: PathBuf,
        /// SCRAM iterations (4096 to 16384).
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
        /// The broker's data directory.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Remove a user.
    Delete {
        name: String,
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// The users and their mechanisms.
    List {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
}

/// Runs a user command; returns the process exit code.
pub fn user(command: UserCommand) -> i32 {
    match run(command) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("strand: {err}");
            1
        }
    }
}

fn run(command: UserCommand) -> Result<(), String> {
    match command {
        UserCommand::Set {
            name,
            mechanisms,
            password_file,
            iterations,
            data_dir,
        } => {
            if name.is_empty() {
                return Err("a user name cannot be empty".into());
            }
            if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
                return Err(format!(
                    "--iterations must be {ITERATIONS_MIN} to {ITERATIONS_MAX}"
                ));
            }
            let hashes = mechanisms
                .iter()
                .map(|m| {
                    Hash::from_mechanism(m).ok_or_else(|| {
                        format!("--mechanism {m:?}: give SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN logins use these credentials)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let text = if password_file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
                text
            } else {
                std::fs::read_to_string(&password_file)
                    .map_err(|e| format!("cannot read {}: {e}", password_file.display()))?
            };
            let password = text.lines().next().unwrap_or("");
            if password.is_empty() {
                return Err("the password is empty".into());
            }
            Users::update(&data_dir, |users| {
                for hash in &hashes {
                    users.set(&name, *hash, password.as_bytes(), iterations);
                }
                ((), true)
            })?;
            let names: Vec<&str> = hashes.iter().map(|h| h.mechanism()).collect();
            println!(
                "user {name}: {} set in {}",
                names.join(", "),
                Users::path(&data_dir).display()
            );
            Ok(())
        }
        UserCommand::Delete { name, data_dir } => {
            if !Users::update(&data_dir, |users| {
                let removed = users.remove(&name);
                (removed, removed)
            })? {
                return Err(format!("no user {name:?}"));
            }
            println!("user {name} deleted");
            Ok(())
        }
        UserCommand::List { data_dir } => {
            for (name, creds) in &Users::load(&data_dir)?.users {
                let mechanisms: Vec<String> = creds
                    .iter()
                    .map(|(m, c)| format!("{m} (iterations={})", c.iterations))
                    .collect();
                println!("{name}\t{}", mechanisms.join(", "));
            }
            Ok(())
        }
    }
}
