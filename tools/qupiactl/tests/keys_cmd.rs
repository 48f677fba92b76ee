//! `qupiactl keys` against a running vault and gateway: what it prints and its exit codes.

use std::process::Output;

use qupia_test_support::{Backend, Suite, storage_test};

/// Runs qupiactl as `service` against the suite's gateway.
async fn qupiactl(suite: &Suite, service: &str, args: &[&str]) -> Output {
    let files = suite.pki.service(service);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_qupiactl"))
        .args(["--gateway", &suite.gateway_addr.to_string()])
        .arg("--tls-ca")
        .arg(&files.ca)
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .args(args)
        .output()
        .await
        .expect("run qupiactl")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

storage_test!(keys_commands_rotate_rewrap_and_retire, keys_commands);
async fn keys_commands(backend: Backend) {
    let suite = Suite::start(backend).await;

    let rotated = qupiactl(&suite, "qupiactl", &["keys", "rotate"]).await;
    assert_eq!(rotated.status.code(), Some(0), "{rotated:?}");
    assert!(stdout(&rotated).contains("kek version 2 is active"), "{}", stdout(&rotated));

    let rewrap = qupiactl(&suite, "qupiactl", &["--json", "keys", "rewrap"]).await;
    assert_eq!(rewrap.status.code(), Some(0), "{rewrap:?}");
    let last: serde_json::Value =
        serde_json::from_str(stdout(&rewrap).lines().last().expect("a progress line")).expect("json");
    assert_eq!(
        (last["job"].as_str(), last["state"].as_str(), last["target_version"].as_u64()),
        (Some("rewrap"), Some("finished"), Some(2))
    );

    let destroy = qupiactl(&suite, "qupiactl", &["keys", "destroy", "1"]).await;
    assert_eq!(destroy.status.code(), Some(2), "destroy needs --yes");
    let destroy = qupiactl(&suite, "qupiactl", &["keys", "destroy", "1", "--yes"]).await;
    assert_eq!(destroy.status.code(), Some(2), "version 1 is not retired yet");
    assert!(String::from_utf8_lossy(&destroy.stderr).contains("FailedPrecondition"), "{destroy:?}");
    assert_eq!(qupiactl(&suite, "qupiactl", &["keys", "retire", "1"]).await.status.code(), Some(0));
    assert_eq!(qupiactl(&suite, "qupiactl", &["keys", "destroy", "1", "--yes"]).await.status.code(), Some(0));

    let status = qupiactl(&suite, "qupiactl", &["keys", "status", "--check"]).await;
    assert_eq!(status.status.code(), Some(0), "no alarm: {status:?}");
    let table = stdout(&status);
    assert!(table.contains("provider  keyring-file"), "{table}");
    assert!(table.contains("job rewrap"), "{table}");
    assert!(table.contains("      2  active"), "{table}");
    assert!(!table.contains("retired") && !table.contains("decrypt_only"), "version 1 is gone: {table}");

    let denied = qupiactl(&suite, "marketing", &["keys", "status"]).await;
    assert_eq!(denied.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"), "{denied:?}");
}
