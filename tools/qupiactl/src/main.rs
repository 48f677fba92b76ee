//! `qupiactl`: runs the whole suite on a laptop (`dev up`) and operates it: accounts,
//! people, documents, consents, statistics, the purpose policy, the access log, the
//! keys, and marketing's audiences and campaigns.
//!
//! Exit codes: 0 success; 1 a check failed (e.g. `audit verify` found the log
//! broken, `keys status --check` found an encryption alarm); 2 the command could not
//! be carried out (bad arguments, a refused call); 3 `subject requests list --overdue
//! --fail-if-any` found overdue subject requests.

mod account_cmd;
mod audit_cmd;
mod client;
mod demo;
mod dev;
mod disclosure_cmd;
mod document_cmd;
mod keys_cmd;
mod marketing_cmd;
mod person_cmd;
mod policy_cmd;
mod stats_cmd;
mod subject_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "qupiactl", version, about = "Operate Qupia: run it locally, call it, inspect it")]
struct Cli {
    /// Where `dev up` keeps its certificates, keyring and databases.
    #[arg(long, global = true, env = "QUPIA_DEV_DIR", default_value = ".qupia-dev")]
    dev_dir: PathBuf,
    /// Print JSON lines instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    connection: client::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The local development suite.
    Dev {
        #[command(subcommand)]
        command: dev::DevCommand,
    },
    /// Walk through the story against `dev up`: register with a scan, sign in, a campaign
    /// that reaches a person only while they consent, statistics, export, deletion.
    Demo,
    /// Register people and serve their rights through the accounts service.
    Account {
        #[command(subcommand)]
        command: account_cmd::AccountCommand,
    },
    /// Store, reveal, find and erase people through the gateway.
    Person {
        #[command(subcommand)]
        command: person_cmd::PersonCommand,
    },
    /// Store, download, list and delete people's scanned documents through the gateway.
    Document {
        #[command(subcommand)]
        command: document_cmd::DocumentCommand,
    },
    /// Aggregates for purpose statistics, over people who consented.
    Stats {
        #[command(subcommand)]
        command: stats_cmd::StatsCommand,
    },
    /// Record and inspect consents.
    Consent {
        #[command(subcommand)]
        command: person_cmd::ConsentCommand,
    },
    /// Explain the purpose policy; publish privacy-policy versions.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Query, follow, export and verify the access log.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// Rotate, rewrap, retire and destroy keys; rotate the blind-index key.
    Keys {
        #[command(subcommand)]
        command: keys_cmd::KeysCommand,
    },
    /// Audiences, campaigns and statistics in the marketing service.
    Marketing {
        #[command(subcommand)]
        command: marketing_cmd::MarketingCommand,
    },
    /// Disclosure requests of state bodies: file, approve (a second officer), review.
    Disclosure {
        #[command(subcommand)]
        command: disclosure_cmd::DisclosureCommand,
    },
    /// Data-subject requests and complaints: the register, and serving access and erasure.
    Subject {
        #[command(subcommand)]
        command: subject_cmd::SubjectCommand,
    },
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Command::Dev { command } = cli.command {
        dev::run(command, &cli.dev_dir, &cli.connection.accounts_addr, &cli.connection.marketing_addr).await?;
        return Ok(true);
    }
    if let Command::Demo = cli.command {
        demo::run(&cli.connection, &cli.dev_dir).await?;
        return Ok(true);
    }
    if let Command::Account { command } = cli.command {
        account_cmd::run(command, &cli.connection, &cli.dev_dir, cli.json).await?;
        return Ok(true);
    }
    if let Command::Marketing { command } = cli.command {
        let channel = cli.connection.marketing_channel(&cli.dev_dir).await?;
        return marketing_cmd::run(command, channel, cli.json).await.map(|()| true);
    }
    let channel = cli.connection.channel(&cli.dev_dir).await?;
    match cli.command {
        Command::Dev { .. } | Command::Demo | Command::Account { .. } | Command::Marketing { .. } => Ok(true),
        Command::Person { command } => person_cmd::run_person(command, channel, cli.json).await.map(|()| true),
        Command::Document { command } => document_cmd::run(command, channel, cli.json).await.map(|()| true),
        Command::Stats { command } => stats_cmd::run(command, channel, cli.json).await.map(|()| true),
        Command::Consent { command } => person_cmd::run_consent(command, channel, cli.json).await.map(|()| true),
        Command::Policy { command } => policy_cmd::run(command, channel, cli.json).await.map(|()| true),
        Command::Audit { command } => audit_cmd::run(command, channel, cli.json).await,
        Command::Keys { command } => keys_cmd::run(command, channel, cli.json).await,
        Command::Disclosure { command } => disclosure_cmd::run(command, channel, cli.json).await.map(|()| true),
        Command::Subject { command } => {
            subject_cmd::run(command, channel, &cli.connection, &cli.dev_dir, cli.json).await.map(|()| true)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Writes one line to standard output, reporting a closed pipe as an error so that
/// long listings stop quietly.
pub fn emit(line: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // A reader that stopped reading (`| head`) is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if err.is::<subject_cmd::OverdueFound>() => {
            eprintln!("qupiactl: {err}");
            ExitCode::from(subject_cmd::EXIT_OVERDUE)
        }
        Err(err) => {
            eprintln!("qupiactl: {err:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        // Catches clashing flags (a global flag and a subcommand's of the same name),
        // which clap otherwise reports only when that subcommand runs.
        super::Cli::command().debug_assert();
    }
}
