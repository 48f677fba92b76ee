//! `--dump-config`: the settings in force as a TOML file that could be fed back with
//! `--config`, each line commented with the layer it came from, secrets masked.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// What a masked secret is shown as.
const MASK: &str = "<redacted>";

/// Renders the settings of `matches` (parsed by `command`), in the order of `order`.
pub(crate) fn render(
    command: &Command,
    order: &[String],
    matches: &ArgMatches,
    from_file: &BTreeSet<String>,
    file: Option<&Path>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {} settings in force: flag > environment > file > default", command.get_name());
    for key in order {
        let key = key.as_str();
        let Some(arg) = command.get_arguments().find(|arg| arg.get_id().as_str() == key) else {
            continue;
        };
        if matches!(key, "help" | "version" | "config" | "dump_config") {
            continue;
        }
        let Some(raw) = matches.get_raw(key) else {
            let _ = writeln!(out, "# {key}: not set");
            continue;
        };
        let values: Vec<String> = raw.map(|v| shown(key, &v.to_string_lossy())).collect();
        let origin = match matches.value_source(key) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => {
                format!("environment {}", arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default())
            }
            Some(ValueSource::DefaultValue) if from_file.contains(key) => {
                format!("file {}", file.map(|p| p.display().to_string()).unwrap_or_default())
            }
            _ => "default".to_owned(),
        };
        let is_list = arg.get_value_delimiter().is_some() || matches!(arg.get_action(), clap::ArgAction::Append);
        let value = if is_list || values.len() > 1 {
            format!("[{}]", values.iter().map(|v| toml_value(v)).collect::<Vec<_>>().join(", "))
        } else {
            values.first().map(|v| toml_value(v)).unwrap_or_default()
        };
        let _ = writeln!(out, "{key} = {value}  # {origin}");
    }
    out
}

/// A value as it may be shown: secrets masked, passwords in URLs redacted.
fn shown(key: &str, value: &str) -> String {
    if crate::is_secret_key(key) {
        MASK.to_owned()
    } else if value.contains("://") {
        qupia_ops::redact_url(value)
    } else {
        value.to_owned()
    }
}

/// A TOML literal: booleans and numbers bare, everything else a quoted string.
fn toml_value(value: &str) -> String {
    if value == "true"
        || value == "false"
        || value.parse::<i64>().is_ok()
        || value.parse::<f64>().is_ok_and(f64::is_finite)
    {
        value.to_owned()
    } else {
        toml::Value::String(value.to_owned()).to_string()
    }
}
