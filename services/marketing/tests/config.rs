//! The marketing binary's settings come in layers and `--dump-config` shows them
//! without the SMTP password.

use std::process::Command;

#[test]
fn dump_config_layers_the_file_under_the_environment_and_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("marketing.toml");
    std::fs::write(
        &file,
        "database_url = 'postgres://marketing:pw-in-file@db:5432/marketing'\n\
         email_sender = 'smtp'\n\
         smtp_host = 'smtp.edustream.kz'\n\
         delivery_max_attempts = 7\n\
         callers = ['spiffe://qupia/ns/prod/sa/qupiactl']\n",
    )
    .expect("write the file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_qupia-marketing"));
    for (key, _) in std::env::vars() {
        if key.starts_with("QUPIA_") {
            command.env_remove(key);
        }
    }
    let output = command
        .env("QUPIA_MARKETING_CONFIG", &file)
        .env("QUPIA_MARKETING_SMTP_PASSWORD", "smtp-secret-in-env")
        .env("QUPIA_MARKETING_DELIVERY_BATCH_SIZE", "50")
        .args(["--delivery-max-attempts", "9", "--dump-config"])
        .output()
        .expect("run qupia-marketing");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("pw-in-file") && !stdout.contains("smtp-secret-in-env"), "{stdout}");
    assert!(stdout.contains("delivery_max_attempts = 9  # flag"), "{stdout}");
    assert!(stdout.contains("delivery_batch_size = 50  # environment QUPIA_MARKETING_DELIVERY_BATCH_SIZE"), "{stdout}");
    assert!(stdout.contains("smtp_host = \"smtp.edustream.kz\"  # file"), "{stdout}");
    assert!(stdout.contains("callers = [\"spiffe://qupia/ns/prod/sa/qupiactl\"]  # file"), "{stdout}");
}
