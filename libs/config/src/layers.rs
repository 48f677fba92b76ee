//! Parsing with the file layer slotted between the environment and the defaults.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::builder::{OsStr, Str};
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};

/// Why the settings could not be read. Messages name the file and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid TOML file: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: unknown key `{key}`: no such setting", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("{}: key `{key}`: {reason}", path.display())]
    BadValue { path: PathBuf, key: String, reason: &'static str },
    /// A flag, an environment variable or a file value failed the setting's own parser;
    /// clap's message names the flag (and so the key).
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// The parsed settings, with what is needed to show where each came from.
#[derive(Debug)]
pub struct Parsed<T> {
    pub settings: T,
    pub(crate) command: Command,
    pub(crate) matches: ArgMatches,
    /// The keys whose value came from the file.
    pub(crate) from_file: BTreeSet<String>,
    pub(crate) file: Option<PathBuf>,
    /// The settings in the order the binary declares them.
    pub(crate) order: Vec<String>,
}

impl<T> Parsed<T> {
    /// The settings in force as a TOML document (see [`crate::dump`]).
    pub fn dump(&self) -> String {
        crate::dump::render(&self.command, &self.order, &self.matches, &self.from_file, self.file.as_deref())
    }

    /// Whether `--dump-config` was given.
    pub fn dump_requested(&self) -> bool {
        self.matches.try_get_one::<bool>("dump_config").ok().flatten().copied().unwrap_or(false)
    }
}

/// Parses the process's arguments; on an error prints it (with clap's formatting when it
/// is a usage error) and exits with status 2, as `clap::Parser::parse` does.
pub fn parse<T: CommandFactory + FromArgMatches>(config_env: &str) -> Parsed<T> {
    let file_from_env = std::env::var_os(config_env).map(PathBuf::from);
    match try_parse_from::<T, _, _>(std::env::args_os(), file_from_env) {
        Ok(parsed) => parsed,
        Err(Error::Clap(err)) => err.exit(),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    }
}

/// Parses `args`, reading the file named by `--config` or else by `file_from_env`.
pub fn try_parse_from<T, I, A>(args: I, file_from_env: Option<PathBuf>) -> Result<Parsed<T>, Error>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = T::command();
    let order = command.get_arguments().map(|arg| arg.get_id().to_string()).collect();
    let file = config_flag(&args).or(file_from_env);
    let mut from_file = BTreeSet::new();
    if let Some(path) = &file {
        for (key, values) in read_file(path)? {
            let known = command.get_arguments().any(|arg| arg.get_id().as_str() == key);
            if !known || key == "config" || key == "dump_config" || key == "help" || key == "version" {
                return Err(Error::UnknownKey { path: path.clone(), key });
            }
            // A setting the file gives is no longer required on the command line.
            let defaults: Vec<OsStr> = values.into_iter().map(|v| OsStr::from(Str::from(v))).collect();
            command = command.mut_arg(key.as_str(), |arg| arg.default_values(defaults).required(false));
            from_file.insert(key);
        }
    }
    let matches = command.try_get_matches_from_mut(args)?;
    let settings = T::from_arg_matches(&matches)?;
    Ok(Parsed { settings, command, matches, from_file, file, order })
}

/// The value of `--config FILE` or `--config=FILE`, found before clap parses, because
/// the file decides the defaults clap parses with.
fn config_flag(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// The file's keys and their values as the strings a flag would carry. Arrays become
/// several values (for list settings); tables are refused, since settings are flat.
fn read_file(path: &Path) -> Result<Vec<(String, Vec<String>)>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    let table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| Error::Syntax { path: path.to_owned(), message: err.message().to_owned() })?;
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in table {
        let bad = |reason| Error::BadValue { path: path.to_owned(), key: key.clone(), reason };
        let values = match value {
            toml::Value::Array(items) => items
                .into_iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("a list may hold only strings, numbers and booleans"))?,
            other => vec![scalar(other).ok_or_else(|| bad("must be a string, a number, a boolean or a list of them"))?],
        };
        out.push((key, values));
    }
    Ok(out)
}

fn scalar(value: toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}
