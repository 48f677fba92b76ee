//! `qupiactl`: runs the whole suite on a laptop (`dev up`) and talks to it.

mod dev;
mod vault_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "qupiactl",
    version,
    about = "Operate Qupia: run it locally, call it, inspect it"
)]
struct Cli {
    /// Where `dev up` keeps its certificates, keyring and databases.
    #[arg(
        long,
        global = true,
        env = "QUPIA_DEV_DIR",
        default_value = ".qupia-dev"
    )]
    dev_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
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
    /// Call the vault directly with the development certificates.
    Vault {
        /// The vault's address.
        #[arg(long, env = "QUPIA_VAULT_ADDR", default_value = "127.0.0.1:7101")]
        addr: String,
        #[command(subcommand)]
        command: vault_cmd::VaultCommand,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Dev { command } => dev::run(command, &cli.dev_dir).await,
        Command::Vault { addr, command } => {
            vault_cmd::run(command, &addr, &cli.dev_dir, cli.json).await
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("qupiactl: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
