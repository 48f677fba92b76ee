//! The live policy: reloads take effect, bad edits never do.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qupia_domain::{Field, Purpose};
use qupia_policy::{AccessRequest, Policy, PolicyError, PolicyStore, Resource};

const ACCOUNTS: &str = "spiffe://qupia/ns/default/sa/accounts";
const MARKETING: &str = "spiffe://qupia/ns/default/sa/marketing";

/// Only accounts may see e-mail addresses, for communication.
const ACCOUNTS_ONLY: &str = r#"@id("communication-email")
@description("clause 2.2.3: accounts may e-mail the user")
permit (
    principal == Service::"spiffe://qupia/ns/default/sa/accounts",
    action == Action::"communication",
    resource == Field::"email"
);
"#;

/// The same rule, extended to marketing.
const ACCOUNTS_AND_MARKETING: &str = r#"@id("communication-email")
@description("clause 2.2.3: accounts and marketing may e-mail the user")
permit (
    principal,
    action == Action::"communication",
    resource == Field::"email"
)
when {
    [
        Service::"spiffe://qupia/ns/default/sa/accounts",
        Service::"spiffe://qupia/ns/default/sa/marketing"
    ].contains(principal)
};
"#;

/// The closing parenthesis and semicolon are missing.
const BROKEN: &str = r#"@id("communication-email")
permit (principal, action == Action::"communication", resource
"#;

fn may_email(store: &PolicyStore, caller: &str) -> bool {
    store
        .current()
        .decide(&AccessRequest {
            caller,
            purpose: Purpose::Communication,
            resource: Resource::Field(Field::Email),
            recipient: None,
        })
        .allowed
}

fn write(path: &Path, text: &str) {
    if let Err(err) = std::fs::write(path, text) {
        panic!("failed to write the policy file: {err}");
    }
}

fn load(path: &Path) -> PolicyStore {
    match PolicyStore::load(Some(path)) {
        Ok(store) => store,
        Err(err) => panic!("expected the policy to load, got {err}"),
    }
}

#[test]
fn without_a_file_the_default_policy_is_in_force() {
    let store = match PolicyStore::load(None) {
        Ok(store) => store,
        Err(err) => panic!("the default policy must load: {err}"),
    };
    assert_eq!(store.current().text(), Policy::DEFAULT_TEXT);
    assert!(matches!(store.reload(), Ok(false)));
}

#[test]
fn a_bad_or_missing_file_refuses_to_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.cedar");
    match PolicyStore::load(Some(&path)) {
        Err(PolicyError::Read { path: named, .. }) => assert_eq!(named, path),
        other => panic!("expected a read error, got {other:?}"),
    }
    write(&path, BROKEN);
    match PolicyStore::load(Some(&path)) {
        Err(PolicyError::Invalid(message)) => {
            let origin = format!("{}:", path.display());
            assert!(message.starts_with(&origin), "{message}");
        }
        other => panic!("expected an invalid-policy error, got {other:?}"),
    }
}

#[test]
fn reload_swaps_in_a_valid_change_and_keeps_the_old_policy_on_a_broken_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.cedar");
    write(&path, ACCOUNTS_ONLY);
    let store = load(&path);
    assert!(may_email(&store, ACCOUNTS));
    assert!(!may_email(&store, MARKETING));

    assert!(matches!(store.reload(), Ok(false)), "unchanged text is not a change");

    write(&path, ACCOUNTS_AND_MARKETING);
    assert!(matches!(store.reload(), Ok(true)));
    assert!(may_email(&store, MARKETING));
    let good = store.current();

    write(&path, BROKEN);
    match store.reload() {
        Err(PolicyError::Invalid(message)) => {
            assert!(message.contains("policy.cedar:"), "{message}")
        }
        other => panic!("expected the broken policy to be refused, got {other:?}"),
    }
    let kept = store.current();
    assert_eq!(kept.hash_hex(), good.hash_hex());
    for caller in [ACCOUNTS, MARKETING, "spiffe://qupia/ns/default/sa/unknown"] {
        for purpose in Purpose::ALL {
            for resource in Resource::ALL {
                let request = AccessRequest { caller, purpose, resource, recipient: None };
                assert_eq!(kept.decide(&request), good.decide(&request));
            }
        }
    }

    std::fs::remove_file(&path).expect("remove the policy file");
    assert!(matches!(store.reload(), Err(PolicyError::Read { .. })));
    assert!(may_email(&store, MARKETING), "a vanished file changes nothing");
}

#[tokio::test]
async fn the_reloader_picks_up_a_changed_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.cedar");
    write(&path, ACCOUNTS_ONLY);
    let store = Arc::new(load(&path));
    let reloader = Arc::clone(&store).spawn_reloader(Duration::from_millis(20));

    // A broken edit first: reported, not enforced.
    write(&path, BROKEN);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!may_email(&store, MARKETING));

    write(&path, ACCOUNTS_AND_MARKETING);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !may_email(&store, MARKETING) {
        assert!(Instant::now() < deadline, "the change was not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reloader.abort();
}

#[tokio::test]
async fn the_reloader_stops_when_the_store_is_dropped() {
    let store = Arc::new(PolicyStore::load(None).expect("the default policy loads"));
    let reloader = Arc::clone(&store).spawn_reloader(Duration::from_millis(10));
    drop(store);
    let stopped = tokio::time::timeout(Duration::from_secs(10), reloader).await;
    assert!(matches!(stopped, Ok(Ok(()))), "the reloader kept running");
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_at_once() {
    use tokio::signal::unix::{SignalKind, signal};

    // Our own listener first, so that a SIGHUP arriving before the reloader listens is
    // caught instead of terminating the test process.
    let _guard = signal(SignalKind::hangup()).expect("listen for SIGHUP");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.cedar");
    write(&path, ACCOUNTS_ONLY);
    let store = Arc::new(load(&path));
    // Polling is an hour apart, so only the signal can explain a reload.
    let reloader = Arc::clone(&store).spawn_reloader(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(100)).await;

    write(&path, ACCOUNTS_AND_MARKETING);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !may_email(&store, MARKETING) {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the policy");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reloader.abort();
}
