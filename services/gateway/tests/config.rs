//! The gateway binary's settings come in layers and `--dump-config` shows them without
//! a secret.

use std::process::Command;

#[test]
fn dump_config_layers_the_file_under_the_environment_and_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        "database_url = 'postgres://gateway:pw-in-file@db:5432/gateway'\n\
         rate_per_second = 50\n\
         writers = ['spiffe://qupia/ns/prod/sa/accounts']\n",
    )
    .expect("write the file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_qupia-gateway"));
    for (key, _) in std::env::vars() {
        if key.starts_with("QUPIA_") {
            command.env_remove(key);
        }
    }
    let output = command
        .env("QUPIA_GATEWAY_CONFIG", &file)
        .env("QUPIA_GATEWAY_RATE_BURST", "70")
        .args(["--rate-per-second", "60", "--dump-config"])
        .output()
        .expect("run qupia-gateway");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("pw-in-file"), "{stdout}");
    assert!(stdout.contains("rate_per_second = 60  # flag"), "{stdout}");
    assert!(stdout.contains("rate_burst = 70  # environment QUPIA_GATEWAY_RATE_BURST"), "{stdout}");
    assert!(stdout.contains("writers = [\"spiffe://qupia/ns/prod/sa/accounts\"]  # file"), "{stdout}");
}
