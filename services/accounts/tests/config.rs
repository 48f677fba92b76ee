//! The accounts binary's settings come in layers and `--dump-config` shows them without
//! a secret.

use std::process::Command;

#[test]
fn dump_config_layers_the_file_under_the_environment_and_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("accounts.toml");
    std::fs::write(
        &file,
        "database_url = 'postgres://accounts:pw-in-file@db:5432/accounts'\n\
         max_document_bytes = 5000000\n\
         callers = ['spiffe://qupia/ns/prod/sa/web']\n\
         gateway_addr = 'gateway.prod:7102'\n",
    )
    .expect("write the file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_qupia-accounts"));
    for (key, _) in std::env::vars() {
        if key.starts_with("QUPIA_") {
            command.env_remove(key);
        }
    }
    let output = command
        .env("QUPIA_ACCOUNTS_CONFIG", &file)
        .env("QUPIA_ACCOUNTS_GATEWAY_ADDR", "gateway.env:7102")
        .args(["--max-document-bytes", "2000000", "--dump-config"])
        .output()
        .expect("run qupia-accounts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("pw-in-file"), "{stdout}");
    assert!(stdout.contains("max_document_bytes = 2000000  # flag"), "{stdout}");
    assert!(
        stdout.contains("gateway_addr = \"gateway.env:7102\"  # environment QUPIA_ACCOUNTS_GATEWAY_ADDR"),
        "{stdout}"
    );
    assert!(stdout.contains("callers = [\"spiffe://qupia/ns/prod/sa/web\"]  # file"), "{stdout}");
    assert!(stdout.contains("listen = \"127.0.0.1:7103\"  # default"), "{stdout}");
}
