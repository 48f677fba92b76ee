//! Layered configuration for every Qupia binary.
//!
//! Each setting comes from the first of these that has it, highest first:
//!
//! 1. a command-line flag (`--grace-period-secs 20`);
//! 2. an environment variable (`QUPIA_VAULT_GRACE_PERIOD_SECS=20`);
//! 3. the TOML file named by `--config` or by the binary's `*_CONFIG` variable
//!    (`grace_period_secs = 20`);
//! 4. the built-in default.
//!
//! The binaries keep declaring their settings once, as a `clap` parser with `env`
//! attributes; this crate slots the file in between the environment and the defaults
//! (a file value becomes the flag's default before parsing), so every setting has one
//! name, one validation and one help text whatever layer it comes from. A file key that
//! names no setting is an error naming the key, never silently ignored.
//!
//! `--dump-config` prints the settings in force as a TOML file, each with the layer it
//! came from, secrets masked: nothing here may print a password, a PIN or key material.

#![forbid(unsafe_code)]

mod dump;
mod layers;

pub use layers::{Error, Parsed, parse, try_parse_from};

/// The flags every binary flattens into its parser: where its configuration file is and
/// whether to print the settings in force instead of starting.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFlags {
    /// A TOML file of settings (keys are the flag names with underscores); flags and
    /// environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Print the settings in force, where each came from, secrets masked, and exit.
    #[arg(long)]
    pub dump_config: bool,
}

/// Setting names that hold secrets: their values are masked wherever settings are shown.
/// Paths to secret files (`*_file`, `*_path`) are not secrets themselves, and neither
/// are names (`pkcs11_token_label` names an HSM token; it is no access token).
pub fn is_secret_key(key: &str) -> bool {
    if key.ends_with("_file") || key.ends_with("_path") || key.ends_with("_label") {
        return false;
    }
    key.contains("private_key")
        || key.split('_').any(|word| matches!(word, "password" | "passphrase" | "secret" | "pin" | "token"))
}
