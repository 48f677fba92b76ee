//! The layers' order, the file's checks and the dump, on a parser shaped like the
//! binaries'.

use std::io::Write;

use clap::Parser;
use qupia_config::{ConfigFlags, Error, try_parse_from};

/// Settings like a service's. `env_name` reads `CARGO_PKG_NAME`, which cargo sets for
/// every test process, so the environment layer is exercised without changing the
/// environment.
#[derive(Debug, Parser)]
#[command(name = "qupia-example")]
struct Settings {
    #[arg(long, env = "QUPIA_EXAMPLE_DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "QUPIA_EXAMPLE_GRACE_PERIOD_SECS", default_value_t = 25.0)]
    grace_period_secs: f64,
    #[arg(long, env = "CARGO_PKG_NAME", default_value = "built-in")]
    env_name: String,
    #[arg(long, value_delimiter = ',', default_value = "spiffe://qupia/ns/default/sa/accounts")]
    writers: Vec<String>,
    #[arg(long, env = "QUPIA_EXAMPLE_SMTP_PASSWORD")]
    smtp_password: Option<String>,
    #[arg(long, env = "QUPIA_EXAMPLE_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    config: ConfigFlags,
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

fn parse(args: &[&str], config: Option<&tempfile::NamedTempFile>) -> Result<Settings, Error> {
    let mut argv = vec!["qupia-example"];
    argv.extend_from_slice(args);
    try_parse_from::<Settings, _, _>(argv, config.map(|f| f.path().to_owned())).map(|parsed| parsed.settings)
}

#[test]
fn defaults_apply_when_nothing_else_says() {
    let settings = parse(&["--database-url", "sqlite://x.db"], None).expect("parses");
    assert_eq!(settings.grace_period_secs, 25.0);
    assert_eq!(settings.writers, ["spiffe://qupia/ns/default/sa/accounts"]);
    assert!(!settings.log_json);
}

#[test]
fn the_file_overrides_defaults_and_flags_override_the_file() {
    let config = file(
        "database_url = 'postgres://vault@db/vault'\ngrace_period_secs = 40\nlog_json = true\n\
         writers = ['spiffe://qupia/ns/a/sa/x', 'spiffe://qupia/ns/a/sa/y']\n",
    );
    let from_file = parse(&[], Some(&config)).expect("parses");
    assert_eq!(from_file.database_url, "postgres://vault@db/vault");
    assert_eq!(from_file.grace_period_secs, 40.0);
    assert!(from_file.log_json);
    assert_eq!(from_file.writers, ["spiffe://qupia/ns/a/sa/x", "spiffe://qupia/ns/a/sa/y"]);

    let flagged = parse(&["--grace-period-secs", "7"], Some(&config)).expect("parses");
    assert_eq!(flagged.grace_period_secs, 7.0, "a flag beats the file");
    assert_eq!(flagged.database_url, "postgres://vault@db/vault");
}

#[test]
fn the_environment_overrides_the_file_and_a_flag_overrides_the_environment() {
    let config = file("database_url = 'sqlite://x.db'\nenv_name = 'from-file'\n");
    let settings = parse(&[], Some(&config)).expect("parses");
    assert_eq!(settings.env_name, "qupia-config", "the environment beats the file");
    let settings = parse(&["--env-name", "from-flag"], Some(&config)).expect("parses");
    assert_eq!(settings.env_name, "from-flag", "a flag beats the environment");
}

#[test]
fn config_flag_names_the_file_and_beats_the_environment_variable_naming_one() {
    let named_by_env = file("database_url = 'sqlite://env.db'\n");
    let named_by_flag = file("database_url = 'sqlite://flag.db'\n");
    let flag_path = named_by_flag.path().to_str().expect("utf-8 path").to_owned();
    let settings = parse(&["--config", &flag_path], Some(&named_by_env)).expect("parses");
    assert_eq!(settings.database_url, "sqlite://flag.db");
    let settings = parse(&[&format!("--config={flag_path}")], None).expect("parses");
    assert_eq!(settings.database_url, "sqlite://flag.db");
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let config = file("database_url = 'sqlite://x.db'\ngrace_perod_secs = 3\n");
    let err = parse(&[], Some(&config)).expect_err("a misspelt key is refused");
    let message = err.to_string();
    assert!(matches!(err, Error::UnknownKey { ref key, .. } if key == "grace_perod_secs"), "{message}");
    assert!(message.contains("grace_perod_secs"), "{message}");
}

#[test]
fn a_value_of_the_wrong_type_is_an_error_naming_the_setting() {
    let config = file("database_url = 'sqlite://x.db'\ngrace_period_secs = 'soon'\n");
    let err = parse(&[], Some(&config)).expect_err("not a number");
    assert!(err.to_string().contains("--grace-period-secs"), "{err}");

    let config = file("database_url = 'sqlite://x.db'\n[ops]\nlisten = '0.0.0.0:1'\n");
    let err = parse(&[], Some(&config)).expect_err("tables are not settings");
    assert!(err.to_string().contains("`ops`"), "{err}");
}

#[test]
fn a_broken_file_is_an_error_naming_the_file() {
    let config = file("database_url = \n");
    let err = parse(&[], Some(&config)).expect_err("not TOML");
    assert!(err.to_string().contains(&config.path().display().to_string()), "{err}");
    let missing = std::path::PathBuf::from("/nonexistent/qupia.toml");
    let err = try_parse_from::<Settings, _, _>(["qupia-example"], Some(missing)).expect_err("no such file");
    assert!(err.to_string().contains("/nonexistent/qupia.toml"), "{err}");
}

#[test]
fn a_required_setting_may_come_from_the_file_alone() {
    let config = file("database_url = 'sqlite://x.db'\n");
    assert_eq!(parse(&[], Some(&config)).expect("parses").database_url, "sqlite://x.db");
    assert!(parse(&[], None).is_err(), "and is still required when nothing gives it");
}

#[test]
fn the_dump_shows_origins_and_masks_secrets() {
    let config = file("database_url = 'postgres://vault:hunter2@db:5432/vault'\nsmtp_password = 'hunter3'\n");
    let parsed = try_parse_from::<Settings, _, _>(
        ["qupia-example", "--grace-period-secs", "9", "--dump-config"],
        Some(config.path().to_owned()),
    )
    .expect("parses");
    assert!(parsed.dump_requested());
    let dump = parsed.dump();
    assert!(!dump.contains("hunter2") && !dump.contains("hunter3"), "{dump}");
    assert!(dump.contains("database_url = \"postgres://vault:***@db:5432/vault\"  # file"), "{dump}");
    assert!(dump.contains("smtp_password = \"<redacted>\""), "{dump}");
    assert!(dump.contains("grace_period_secs = 9  # flag"), "{dump}");
    assert!(dump.contains("env_name = \"qupia-config\"  # environment CARGO_PKG_NAME"), "{dump}");
    assert!(dump.contains("log_json = false  # default"), "{dump}");

    // The dump is itself a valid configuration file with the same settings.
    let round_trip = file(&dump.replace("\"<redacted>\"", "\"x\""));
    let again = parse(&[], Some(&round_trip)).expect("the dump parses as a config file");
    assert_eq!(again.grace_period_secs, 9.0);
    assert_eq!(again.database_url, "postgres://vault:***@db:5432/vault");
}

#[test]
fn secret_keys_are_recognised_by_their_words() {
    for key in ["smtp_password", "pkcs11_pin", "api_token", "client_secret", "tls_private_key"] {
        assert!(qupia_config::is_secret_key(key), "{key}");
    }
    for key in ["pkcs11_pin_file", "pkcs11_token_label", "keyring_path", "spinner", "database_url", "tokenize_batch"] {
        assert!(!qupia_config::is_secret_key(key), "{key}");
    }
}
