//! The vault binary's settings: defaults, then a file, then the environment, then flags;
//! `--dump-config` shows what is in force without a secret; a bad key is named.

use std::process::{Command, Output};

fn vault(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qupia-vault"));
    command.args(args);
    // Only what the test sets: an operator's QUPIA_VAULT_* must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("QUPIA_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run qupia-vault")
}

#[test]
fn dump_config_shows_each_layer_and_masks_the_database_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("vault.toml");
    std::fs::write(
        &file,
        "database_url = 'postgres://vault:s3cret-pw@db.internal:5432/vault'\n\
         keyring = '/var/lib/qupia/keyring.json'\n\
         grace_period_secs = 40\n\
         max_connections = 12\n",
    )
    .expect("write the file");
    let output = vault(
        &["--config", file.to_str().expect("utf-8"), "--max-connections", "3", "--dump-config"],
        &[("QUPIA_VAULT_GRACE_PERIOD_SECS", "12")],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("s3cret-pw"), "{stdout}");
    assert!(stdout.contains("database_url = \"postgres://vault:***@db.internal:5432/vault\"  # file"), "{stdout}");
    assert!(stdout.contains("grace_period_secs = 12  # environment QUPIA_VAULT_GRACE_PERIOD_SECS"), "{stdout}");
    assert!(stdout.contains("max_connections = 3  # flag"), "{stdout}");
    assert!(stdout.contains("deregistration_delay_secs = 5  # default"), "{stdout}");
}

#[test]
fn an_unknown_key_in_the_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("vault.toml");
    std::fs::write(&file, "database_url = 'sqlite://x.db'\nkeyring = 'k.json'\ngrace_perod_secs = 3\n").expect("write");
    let output = vault(&[], &[("QUPIA_VAULT_CONFIG", file.to_str().expect("utf-8"))]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown key `grace_perod_secs`"), "{stderr}");
}

#[test]
fn a_bad_value_is_refused_naming_the_setting() {
    let output = vault(
        &[
            "--database-url",
            "sqlite://x.db",
            "--keyring",
            "k.json",
            "--insecure-dev-caller",
            "spiffe://qupia/ns/default/sa/gateway",
        ],
        &[("QUPIA_VAULT_GRACE_PERIOD_SECS", "-4")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("grace_period_secs"), "{stderr}");
}

#[test]
fn key_settings_are_shown_and_the_ledger_password_is_masked() {
    let output = vault(
        &[
            "--database-url",
            "sqlite://x.db",
            "--keyring",
            "k.json",
            "--erasure-ledger-url",
            "postgres://ledger:l3dger-pw@ledger.internal:5432/erasures",
            "--rewrap-rate",
            "900",
            "--dump-config",
        ],
        &[("QUPIA_VAULT_KEK_ENCRYPTION_ALARM", "1000")],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("l3dger-pw"), "{stdout}");
    assert!(
        stdout.contains("erasure_ledger_url = \"postgres://ledger:***@ledger.internal:5432/erasures\"  # flag"),
        "{stdout}"
    );
    assert!(stdout.contains("rewrap_rate = 900  # flag"), "{stdout}");
    assert!(stdout.contains("kek_encryption_alarm = 1000  # environment QUPIA_VAULT_KEK_ENCRYPTION_ALARM"), "{stdout}");
}

#[test]
fn the_pkcs11_settings_come_from_the_file_and_the_pin_never_shows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("vault.toml");
    std::fs::write(
        &file,
        "database_url = 'sqlite://x.db'\n\
         key_provider = 'pkcs11'\n\
         pkcs11_module = '/usr/lib/softhsm/libsofthsm2.so'\n\
         pkcs11_token_label = 'qupia'\n\
         pkcs11_pin_file = '/run/secrets/hsm-pin'\n",
    )
    .expect("write the file");
    let output = vault(
        &["--config", file.to_str().expect("utf-8"), "--dump-config"],
        &[("QUPIA_VAULT_PKCS11_PIN", "pin-from-env-5150")],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("key_provider = \"pkcs11\"  # file"), "{stdout}");
    assert!(stdout.contains("pkcs11_module = \"/usr/lib/softhsm/libsofthsm2.so\"  # file"), "{stdout}");
    assert!(stdout.contains("pkcs11_token_label = \"qupia\"  # file"), "{stdout}");
    assert!(stdout.contains("pkcs11_pin_file = \"/run/secrets/hsm-pin\"  # file"), "{stdout}");
    assert!(stdout.contains("pkcs11_key_label_prefix = \"qupia\"  # default"), "{stdout}");
    assert!(!stdout.contains("pin-from-env-5150"), "{stdout}");
}
