//! Key administration on SQLite and PostgreSQL: rotation and rewrap under load, the
//! minimum decryption version, retirement and destruction, blind-index key rotation,
//! the encryption counter and its alarm, and the erasure ledger across a restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::audit::v1::{AuditFilter, QueryAuditRequest};
use qupia_api::keys::v1 as keys;
use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_api::types::v1::{DocumentKind, DocumentType, Field, Purpose};
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::*;
use qupia_test_support::{Backend, TestDb, VaultHarness, connect, storage_test};
use qupia_vault::KeyLifecycleOptions;
use sqlx::{Connection, Executor};
use tonic::Code;
use tonic::transport::Channel;

const SECURITY: &str = "spiffe://qupia/ns/default/sa/qupiactl";

/// A made-up person `i`: distinct e-mail and phone, so lookups tell people apart.
fn person(i: usize) -> PersonInput {
    PersonInput {
        surname: "Сейітова".into(),
        given_name: format!("Дана{}", ["", "-Мария", "-Ай"][i % 3]),
        patronymic: "Ерланқызы".into(),
        email: format!("dana.{i}@example.kz"),
        phone: format!("+7701{:07}", 1_000_000 + i),
    }
}

fn access() -> Option<AccessContext> {
    Some(AccessContext {
        purpose: Purpose::ServiceDelivery as i32,
        decision_id: "keys-test".into(),
        caller: "spiffe://qupia/ns/default/sa/accounts".into(),
        ..Default::default()
    })
}

async fn tokenize(vault: &mut VaultServiceClient<Channel>, i: usize) -> Result<String, tonic::Status> {
    let response =
        vault.tokenize(TokenizeRequest { person: Some(person(i)), ..Default::default() }).await?.into_inner();
    Ok(response.tokens.expect("tokens").person_token)
}

/// The e-mail and phone behind a person token.
async fn reveal(vault: &mut VaultServiceClient<Channel>, token: &str) -> Result<(String, String), tonic::Status> {
    let values = vault
        .reveal(RevealRequest {
            token: token.into(),
            fields: vec![Field::Email as i32, Field::Phone as i32],
            access: access(),
        })
        .await?
        .into_inner()
        .values;
    let value = |field: Field| values.iter().find(|v| v.field == field as i32).map(|v| v.value.clone());
    Ok((value(Field::Email).unwrap_or_default(), value(Field::Phone).unwrap_or_default()))
}

async fn lookup(vault: &mut VaultServiceClient<Channel>, key: lookup_request::Key) -> Vec<String> {
    vault.lookup(LookupRequest { key: Some(key), access: access() }).await.expect("lookup").into_inner().person_tokens
}

async fn status(admin: &mut KeyAdminServiceClient<Channel>) -> keys::GetKeyStatusResponse {
    admin
        .get_key_status(keys::GetKeyStatusRequest { requester: SECURITY.into() })
        .await
        .expect("key status")
        .into_inner()
}

fn kek(status: &keys::GetKeyStatusResponse, version: u32) -> Option<&keys::KekVersion> {
    status.kek_versions.iter().find(|k| k.version == version)
}

async fn rotate(admin: &mut KeyAdminServiceClient<Channel>) -> u32 {
    admin
        .rotate_kek(keys::RotateKekRequest { requester: SECURITY.into() })
        .await
        .expect("rotate the kek")
        .into_inner()
        .active_version
}

/// Runs (or joins) the rewrap job and follows it to the end; returns every progress seen.
async fn rewrap(admin: &mut KeyAdminServiceClient<Channel>, rate: u32) -> Vec<keys::JobProgress> {
    let mut stream = admin
        .rewrap(keys::RewrapRequest { requester: SECURITY.into(), rate_per_second: rate })
        .await
        .expect("start the rewrap")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = stream.message().await.expect("rewrap progress") {
        seen.push(message.progress.expect("progress"));
    }
    seen
}

async fn retire(admin: &mut KeyAdminServiceClient<Channel>, version: u32) -> Result<(), tonic::Status> {
    admin.retire_kek(keys::RetireKekRequest { requester: SECURITY.into(), version }).await.map(|_| ())
}

async fn destroy(admin: &mut KeyAdminServiceClient<Channel>, version: u32) -> Result<(), tonic::Status> {
    admin.destroy_kek(keys::DestroyKekRequest { requester: SECURITY.into(), version }).await.map(|_| ())
}

fn finished(progress: &[keys::JobProgress]) -> &keys::JobProgress {
    let last = progress.last().expect("at least one progress message");
    assert_eq!(last.state, keys::JobState::Finished as i32, "the stream ends when the job finishes");
    last
}

storage_test!(rotation_rewrap_and_retirement_under_load_fail_no_request, rotation_under_load);
async fn rotation_under_load(backend: Backend) {
    let vault = VaultHarness::start_with_key_options(
        backend,
        KeyLifecycleOptions { job_batch_size: 7, ..KeyLifecycleOptions::default() },
    )
    .await;
    let mut client = vault.gateway().await;
    let mut admin = vault.keys_as("gateway").await;
    let mut stored = Vec::new();
    for i in 0..30 {
        stored.push((i, tokenize(&mut client, i).await.expect("tokenize before the rotation")));
    }
    let stored = Arc::new(stored);
    let failures = Arc::new(AtomicUsize::new(0));
    let operations = Arc::new(AtomicUsize::new(0));

    // Four clients tokenize, reveal and erase while the keys change under them.
    let mut tasks = Vec::new();
    for worker in 0..4usize {
        let mut client = vault.gateway().await;
        let (stored, failures, operations) = (stored.clone(), failures.clone(), operations.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..30usize {
                let i = 100 + worker * 100 + round;
                let mut ok = true;
                match tokenize(&mut client, i).await {
                    Ok(token) => {
                        ok &= reveal(&mut client, &token).await.ok() == Some((person(i).email, person(i).phone));
                        if round % 10 == 0 {
                            ok &=
                                client.erase(EraseRequest { person_token: token.clone(), access: None }).await.is_ok();
                            ok &= reveal(&mut client, &token).await.map_err(|s| s.code()) == Err(Code::NotFound);
                        }
                    }
                    Err(_) => ok = false,
                }
                let (j, token) = &stored[(worker * 7 + round) % stored.len()];
                ok &= reveal(&mut client, token).await.ok() == Some((person(*j).email, person(*j).phone));
                operations.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    assert_eq!(rotate(&mut admin).await, 2);
    let progress = rewrap(&mut admin, 0).await;
    let last = finished(&progress);
    assert_eq!(last.target_version, 2);
    retire(&mut admin, 1).await.expect("retire version 1 once nothing depends on it");
    for task in tasks {
        task.await.expect("worker");
    }

    assert_eq!(operations.load(Ordering::Relaxed), 120);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request may fail because of a rotation");
    let status = status(&mut admin).await;
    let v1 = kek(&status, 1).expect("version 1 is listed");
    assert_eq!(v1.state, keys::KeyState::Retired as i32);
    assert_eq!(v1.wrapped_deks, 0, "no data key depends on the retired version");
    let v2 = kek(&status, 2).expect("version 2 is listed");
    assert_eq!(v2.state, keys::KeyState::Active as i32);
    // 30 stored first + 120 by the workers, 12 of them erased.
    assert_eq!(v2.wrapped_deks, 30 + 120 - 12);
    for (i, token) in stored.iter() {
        assert_eq!(reveal(&mut client, token).await.expect("reveal"), (person(*i).email, person(*i).phone));
    }
}

storage_test!(minimum_decryption_version_refuses_old_keys_until_rewrapped, minimum_decryption_version);
async fn minimum_decryption_version(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let mut admin = vault.keys_as("gateway").await;
    let old = tokenize(&mut client, 1).await.expect("tokenize");
    rotate(&mut admin).await;
    let new = tokenize(&mut client, 2).await.expect("tokenize after the rotation");

    let too_new = admin
        .set_min_decrypt_version(keys::SetMinDecryptVersionRequest { requester: SECURITY.into(), version: 3 })
        .await
        .expect_err("a minimum above the active version");
    assert_eq!(too_new.code(), Code::InvalidArgument);
    let set = admin
        .set_min_decrypt_version(keys::SetMinDecryptVersionRequest { requester: SECURITY.into(), version: 2 })
        .await
        .expect("raise the minimum while a data key depends on version 1")
        .into_inner();
    assert_eq!(set.deks_below, 1);
    let status = status(&mut admin).await;
    assert_eq!((status.min_decrypt_version, status.deks_below_min_decrypt_version), (2, 1));

    let refused = reveal(&mut client, &old).await.expect_err("a data key under version 1");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("minimum decryption version"), "{}", refused.message());
    assert!(!refused.message().contains(&person(1).email));
    let rectify = client
        .update_field(UpdateFieldRequest {
            person_token: old.clone(),
            field: Field::Email as i32,
            value: "new.address@example.kz".into(),
            access: None,
        })
        .await
        .expect_err("rectifying needs the data key too");
    assert_eq!(rectify.code(), Code::FailedPrecondition);
    assert_eq!(
        reveal(&mut client, &new).await.expect("a data key under version 2"),
        (person(2).email, person(2).phone)
    );
    // The refusal is in the access log as such, not as a reveal.
    let mut audit = AuditServiceClient::new(connect(vault.addr, &vault.pki.service("gateway"), "vault").await.unwrap());
    let entries = audit
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { person_token: old.clone(), operation: "reveal".into(), ..Default::default() }),
            after_seq: 0,
            limit: 10,
        })
        .await
        .expect("query")
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].reason, "not revealed: failed_precondition");
    // Lookups decrypt nothing: they still find the person.
    assert_eq!(lookup(&mut client, lookup_request::Key::Email(person(1).email)).await, vec![old.clone()]);

    let last = finished(&rewrap(&mut admin, 0).await).clone();
    assert_eq!(last.done, 1);
    assert_eq!(reveal(&mut client, &old).await.expect("rewrapped"), (person(1).email, person(1).phone));
    assert_eq!(status_below(&mut admin).await, 0);
}

async fn status_below(admin: &mut KeyAdminServiceClient<Channel>) -> u64 {
    status(admin).await.deks_below_min_decrypt_version
}

storage_test!(retire_and_destroy_follow_the_lifecycle, retire_and_destroy);
async fn retire_and_destroy(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let mut admin = vault.keys_as("gateway").await;
    let token = tokenize(&mut client, 1).await.expect("tokenize");

    let active = retire(&mut admin, 1).await.expect_err("the active version");
    assert_eq!(active.code(), Code::FailedPrecondition);
    assert!(active.message().contains("active"), "{}", active.message());
    rotate(&mut admin).await;
    let depending = retire(&mut admin, 1).await.expect_err("a data key depends on version 1");
    assert_eq!(depending.code(), Code::FailedPrecondition);
    assert!(depending.message().contains("1 data keys still depend on kek version 1"), "{}", depending.message());
    let not_retired = destroy(&mut admin, 1).await.expect_err("version 1 is not retired");
    assert_eq!(not_retired.code(), Code::FailedPrecondition);
    assert!(not_retired.message().contains("retire it before destroying it"), "{}", not_retired.message());
    assert_eq!(destroy(&mut admin, 9).await.expect_err("no such version").code(), Code::NotFound);
    assert_eq!(retire(&mut admin, 0).await.expect_err("no version").code(), Code::InvalidArgument);
    assert_eq!(kek(&status(&mut admin).await, 1).expect("listed").state, keys::KeyState::DecryptOnly as i32);

    finished(&rewrap(&mut admin, 0).await);
    retire(&mut admin, 1).await.expect("retire once rewrapped");
    retire(&mut admin, 1).await.expect("retiring again changes nothing");
    destroy(&mut admin, 1).await.expect("destroy a retired version");
    let status = status(&mut admin).await;
    assert!(kek(&status, 1).is_none(), "a destroyed version is no longer listed: {:?}", status.kek_versions);
    assert_eq!(status.kek_versions.len(), 1);
    let provider = if qupia_test_support::TestKeys::pkcs11_selected() { "pkcs11" } else { "keyring-file" };
    assert_eq!(status.provider, provider);
    assert_eq!(reveal(&mut client, &token).await.expect("reveal"), (person(1).email, person(1).phone));
}

storage_test!(blind_index_rotation_keeps_lookups_working, index_rotation);
async fn index_rotation(backend: Backend) {
    // Slow and small batches, so lookups run while the reindex is half done.
    let vault = VaultHarness::start_with_key_options(
        backend,
        KeyLifecycleOptions { reindex_rate_per_second: 10, job_batch_size: 2, ..KeyLifecycleOptions::default() },
    )
    .await;
    let mut client = vault.gateway().await;
    let mut admin = vault.keys_as("gateway").await;
    let mut people = Vec::new();
    for i in 0..16 {
        people.push((i, tokenize(&mut client, i).await.expect("tokenize")));
    }
    async fn all_found(client: &mut VaultServiceClient<Channel>, people: &[(usize, String)]) {
        for (i, token) in people {
            assert_eq!(lookup(client, lookup_request::Key::Email(person(*i).email)).await, vec![token.clone()]);
            assert_eq!(lookup(client, lookup_request::Key::Phone(person(*i).phone)).await, vec![token.clone()]);
        }
    }
    all_found(&mut client, &people).await;

    let rotated = admin
        .rotate_index_key(keys::RotateIndexKeyRequest { requester: SECURITY.into() })
        .await
        .expect("rotate the index key")
        .into_inner();
    assert_eq!(rotated.current_version, 2);
    let again = admin
        .rotate_index_key(keys::RotateIndexKeyRequest { requester: SECURITY.into() })
        .await
        .expect_err("version 1 still in use");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let early = admin
        .remove_index_key(keys::RemoveIndexKeyRequest { requester: SECURITY.into(), version: 1 })
        .await
        .expect_err("nothing is reindexed yet");
    assert_eq!(early.code(), Code::FailedPrecondition);
    // New people are indexed under version 2 at once, the others are found under 1.
    people.push((16, tokenize(&mut client, 16).await.expect("tokenize after the rotation")));
    all_found(&mut client, &people).await;

    let mut stream = admin
        .reindex(keys::ReindexRequest { requester: SECURITY.into(), rate_per_second: 0 })
        .await
        .expect("start the reindex")
        .into_inner();
    let mut during = 0;
    let mut moved = None;
    let mut last = None;
    while let Some(message) = stream.message().await.expect("reindex progress") {
        let progress = message.progress.expect("progress");
        if progress.state == keys::JobState::Running as i32 && progress.done > 0 {
            during += 1;
            all_found(&mut client, &people).await;
            if moved.is_none() {
                // A rectification while the job runs: the old address must not come back.
                let person = people.remove(15);
                client
                    .update_field(UpdateFieldRequest {
                        person_token: person.1.clone(),
                        field: Field::Email as i32,
                        value: "dana.moved@example.kz".into(),
                        access: None,
                    })
                    .await
                    .expect("rectify during the reindex");
                moved = Some(person);
            }
        }
        last = Some(progress);
    }
    let last = last.expect("progress");
    assert_eq!(last.state, keys::JobState::Finished as i32);
    assert_eq!(last.done, 17);
    assert!(during > 0, "lookups ran while the reindex was under way");

    let removed = admin
        .remove_index_key(keys::RemoveIndexKeyRequest { requester: SECURITY.into(), version: 1 })
        .await
        .expect("remove version 1 once reindexed")
        .into_inner();
    // Two for each of the 16 people indexed under version 1, but the rectified e-mail's.
    assert_eq!(removed.entries_deleted, 31);
    let status = status(&mut admin).await;
    assert_eq!(status.index_key_versions.len(), 1);
    assert_eq!(
        (
            status.index_key_versions[0].version,
            status.index_key_versions[0].current,
            status.index_key_versions[0].entries
        ),
        (2, true, 34)
    );
    let moved = moved.expect("rectified during the reindex");
    all_found(&mut client, &people).await;
    assert!(lookup(&mut client, lookup_request::Key::Email(person(15).email)).await.is_empty());
    assert_eq!(lookup(&mut client, lookup_request::Key::Email("dana.moved@example.kz".into())).await, vec![moved.1]);
}

storage_test!(encryptions_are_counted_per_version_and_raise_the_alarm, encryption_counter);
async fn encryption_counter(backend: Backend) {
    let mut vault = VaultHarness::start_with_key_options(
        backend,
        KeyLifecycleOptions { encryption_alarm_threshold: 5, ..KeyLifecycleOptions::default() },
    )
    .await;
    let mut client = vault.gateway().await;
    let mut admin = vault.keys_as("gateway").await;
    for i in 0..3 {
        tokenize(&mut client, i).await.expect("tokenize");
    }
    let status_now = status(&mut admin).await;
    let v1 = kek(&status_now, 1).expect("version 1");
    assert_eq!((v1.encryptions, v1.encryption_alarm, status_now.encryption_alarm), (3, false, false));
    assert_eq!(status_now.encryption_alarm_threshold, 5);
    for i in 3..6 {
        tokenize(&mut client, i).await.expect("tokenize");
    }
    let status_now = status(&mut admin).await;
    let v1 = kek(&status_now, 1).expect("version 1");
    assert_eq!((v1.encryptions, v1.encryption_alarm, status_now.encryption_alarm), (6, true, true));
    let (code, metrics) = qupia_test_support::ops::http_get(vault.ops_addr(), "/metrics").await.expect("scrape");
    assert_eq!(code, 200);
    let metrics = qupia_test_support::ops::parse_metrics(&metrics).expect("a valid exposition");
    assert_eq!(metrics.value("qupia_kek_encryption_alarm", &[("version", "1")]), 1.0);
    assert_eq!(metrics.value("qupia_kek_encryptions", &[("version", "1")]), 6.0);

    // The next version starts from zero, and the rewrap's wraps count under it.
    rotate(&mut admin).await;
    tokenize(&mut client, 6).await.expect("tokenize");
    finished(&rewrap(&mut admin, 0).await);
    let status_now = status(&mut admin).await;
    let v2 = kek(&status_now, 2).expect("version 2");
    assert_eq!((v2.encryptions, v2.encryption_alarm), (1 + 6, true));

    // Counts are saved at shutdown and survive a restart.
    vault.restart().await;
    let mut admin = vault.keys_as("gateway").await;
    let status_now = status(&mut admin).await;
    assert_eq!(kek(&status_now, 1).expect("version 1").encryptions, 6);
    assert_eq!(kek(&status_now, 2).expect("version 2").encryptions, 7);
}

/// A copy of the vault database while the vault is stopped, and its restore.
enum Backup {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

async fn back_up(db: &TestDb) -> Backup {
    match db.backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = db.sqlite_path.as_ref().expect("sqlite path");
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{}{suffix}", path.display());
                if std::path::Path::new(&file).exists() {
                    std::fs::copy(&file, dir.path().join(format!("copy{suffix}"))).expect("copy the database");
                }
            }
            Backup::Sqlite(dir)
        }
        Backend::Postgres => {
            let name = format!("{}_backup", db.role.as_ref().expect("role"));
            let mut admin = sqlx::PgConnection::connect(&postgres_admin()).await.expect("admin connection");
            admin
                .execute(format!("CREATE DATABASE {name} TEMPLATE {}", db.role.as_ref().expect("role")).as_str())
                .await
                .expect("copy the database");
            Backup::Postgres(name)
        }
    }
}

async fn restore(db: &TestDb, backup: &Backup) {
    match backup {
        Backup::Sqlite(dir) => {
            let path = db.sqlite_path.as_ref().expect("sqlite path");
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{}{suffix}", path.display());
                let _ = std::fs::remove_file(&file);
                let copy = dir.path().join(format!("copy{suffix}"));
                if copy.exists() {
                    std::fs::copy(&copy, &file).expect("restore the database");
                }
            }
        }
        Backup::Postgres(name) => {
            let role = db.role.as_ref().expect("role");
            let mut admin = sqlx::PgConnection::connect(&postgres_admin()).await.expect("admin connection");
            admin.execute(format!("DROP DATABASE {role} WITH (FORCE)").as_str()).await.expect("drop");
            admin
                .execute(format!("CREATE DATABASE {role} OWNER {role} TEMPLATE {name}").as_str())
                .await
                .expect("restore the database");
            admin.execute(format!("DROP DATABASE {name}").as_str()).await.expect("drop the backup");
        }
    }
}

fn postgres_admin() -> String {
    qupia_test_support::postgres_admin_url().expect("QUPIA_TEST_POSTGRES_URL")
}

storage_test!(erasure_ledger_reapplies_erasures_to_a_restored_database, erasure_survives_restore);
async fn erasure_survives_restore(backend: Backend) {
    let mut vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let erased = tokenize(&mut client, 1).await.expect("tokenize");
    let kept = tokenize(&mut client, 2).await.expect("tokenize");
    // A scan of the erased person's, which the replay must remove too.
    let scan = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec();
    let upload = vec![
        UploadDocumentRequest {
            part: Some(upload_document_request::Part::Header(DocumentUploadHeader {
                person_token: erased.clone(),
                kind: DocumentKind::Identity as i32,
                declared_type: DocumentType::Pdf as i32,
                declared_size_bytes: scan.len() as u64,
            })),
            access: Some(AccessContext {
                caller: "spiffe://qupia/ns/default/sa/accounts".into(),
                ..Default::default()
            }),
        },
        UploadDocumentRequest { part: Some(upload_document_request::Part::Chunk(scan)), access: None },
        UploadDocumentRequest { part: Some(upload_document_request::Part::End(DocumentUploadEnd {})), access: None },
    ];
    vault.documents_as("gateway").await.upload_document(tokio_stream::iter(upload)).await.expect("upload a scan");
    drop(client);
    vault.stop().await;
    let backup = back_up(&vault.db).await;

    vault.restart().await;
    let mut client = vault.gateway().await;
    client.erase(EraseRequest { person_token: erased.clone(), access: None }).await.expect("erase");
    drop(client);
    vault.stop().await;
    restore(&vault.db, &backup).await;

    vault.restart().await;
    let mut client = vault.gateway().await;
    // The very first answer of the restarted vault already knows of the erasure.
    let first = reveal(&mut client, &erased).await.expect_err("an erased person in a restored database");
    assert_eq!(first.code(), Code::NotFound);
    assert!(lookup(&mut client, lookup_request::Key::Email(person(1).email)).await.is_empty());
    assert!(lookup(&mut client, lookup_request::Key::Phone(person(1).phone)).await.is_empty());
    assert_eq!(reveal(&mut client, &kept).await.expect("the other person"), (person(2).email, person(2).phone));
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&vault.db.admin_url).await.expect("raw connection");
    let documents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents").fetch_one(&mut raw).await.expect("count");
    assert_eq!(documents, 0, "the erased person's scan is gone from the restored database too");
    drop(raw);

    let mut audit = AuditServiceClient::new(connect(vault.addr, &vault.pki.service("gateway"), "vault").await.unwrap());
    let replays = audit
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { operation: "erasure_replay".into(), ..Default::default() }),
            after_seq: 0,
            limit: 10,
        })
        .await
        .expect("query")
        .into_inner()
        .entries;
    assert_eq!(replays.len(), 1, "the replay is in the access log");
    assert!(replays[0].reason.contains("1 erasures re-applied"), "{}", replays[0].reason);
    let reapplied = audit
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { person_token: erased.clone(), operation: "erase".into(), ..Default::default() }),
            after_seq: 0,
            limit: 10,
        })
        .await
        .expect("query")
        .into_inner()
        .entries;
    assert_eq!(reapplied.len(), 1);
    assert!(reapplied[0].reason.contains("erasure ledger"), "{}", reapplied[0].reason);

    // A start with nothing to re-apply adds nothing.
    drop((client, audit));
    vault.restart().await;
    let mut client = vault.gateway().await;
    assert_eq!(reveal(&mut client, &erased).await.expect_err("still erased").code(), Code::NotFound);
}

/// Holds the erasure ledger's write lock, as a stuck or failing ledger database would.
async fn lock_ledger(vault: &VaultHarness) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    match &vault.ledger_db {
        Some(ledger) => {
            let mut conn = sqlx::AnyConnection::connect(&ledger.admin_url).await.expect("ledger connection");
            conn.execute("BEGIN").await.expect("begin");
            conn.execute("LOCK TABLE erasure_ledger IN ACCESS EXCLUSIVE MODE").await.expect("lock");
            conn
        }
        None => {
            let url = format!("sqlite://{}", vault.ledger_sqlite_path().display());
            let mut conn = sqlx::AnyConnection::connect(&url).await.expect("ledger connection");
            conn.execute("BEGIN EXCLUSIVE").await.expect("lock");
            conn
        }
    }
}

storage_test!(an_unwritable_erasure_ledger_refuses_the_erasure, unwritable_ledger);
async fn unwritable_ledger(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let token = tokenize(&mut client, 1).await.expect("tokenize");

    let mut lock = lock_ledger(&vault).await;
    let refused = client
        .erase(EraseRequest { person_token: token.clone(), access: None })
        .await
        .expect_err("the ledger cannot be written");
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("erasure ledger"), "{}", refused.message());
    assert_eq!(reveal(&mut client, &token).await.expect("still there"), (person(1).email, person(1).phone));
    assert_eq!(lookup(&mut client, lookup_request::Key::Email(person(1).email)).await, vec![token.clone()]);

    lock.execute("ROLLBACK").await.expect("release the ledger");
    drop(lock);
    client.erase(EraseRequest { person_token: token.clone(), access: None }).await.expect("erase");
    assert_eq!(reveal(&mut client, &token).await.expect_err("erased").code(), Code::NotFound);
}

storage_test!(idempotency_keys_hold_across_an_index_key_rotation, idempotency_across_rotation);
async fn idempotency_across_rotation(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let mut admin = vault.keys_as("gateway").await;
    let tokenize_with_key =
        |i: usize| TokenizeRequest { person: Some(person(i)), idempotency_key: "signup-7".into(), access: None };
    let first = client.tokenize(tokenize_with_key(1)).await.expect("tokenize").into_inner();
    admin
        .rotate_index_key(keys::RotateIndexKeyRequest { requester: SECURITY.into() })
        .await
        .expect("rotate the index key");

    let retry = client.tokenize(tokenize_with_key(1)).await.expect("retry after the rotation").into_inner();
    assert!(retry.replayed, "the retry finds the person stored under the older index key");
    assert_eq!(retry.tokens, first.tokens);
    let other = client.tokenize(tokenize_with_key(2)).await.expect_err("the same key with other data");
    assert_eq!(other.code(), Code::FailedPrecondition);
    let status = status(&mut admin).await;
    assert_eq!(kek(&status, 1).expect("version 1").wrapped_deks, 1, "one person stored, not two");
}

/// The data-key cache's hits and misses so far, from the vault's metrics.
async fn dek_cache(vault: &VaultHarness) -> (f64, f64) {
    let (code, text) = qupia_test_support::ops::http_get(vault.ops_addr(), "/metrics").await.expect("scrape");
    assert_eq!(code, 200);
    let metrics = qupia_test_support::ops::parse_metrics(&text).expect("a valid exposition");
    (
        metrics.value("qupia_dek_cache_total", &[("result", "hit")]),
        metrics.value("qupia_dek_cache_total", &[("result", "miss")]),
    )
}

storage_test!(remembered_data_keys_never_outlive_a_key_change_or_an_erasure, remembered_data_keys);
async fn remembered_data_keys(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let mut admin = vault.keys_as("gateway").await;
    let expected = |i: usize| (person(i).email, person(i).phone);
    let token = tokenize(&mut client, 1).await.expect("tokenize");

    // Read twice: one unwrap, then the remembered key.
    assert_eq!(reveal(&mut client, &token).await.expect("reveal"), expected(1));
    assert_eq!(reveal(&mut client, &token).await.expect("reveal again"), expected(1));
    assert_eq!(dek_cache(&vault).await, (1.0, 1.0));

    // A rotation changes the keys: nothing unwrapped before it is used after it.
    let v2 = rotate(&mut admin).await;
    assert_eq!(reveal(&mut client, &token).await.expect("reveal after the rotation"), expected(1));
    assert_eq!(dek_cache(&vault).await, (1.0, 2.0));

    // The minimum decryption version is checked before the cache is asked: the key of
    // a person still under version 1 is remembered, and still refused.
    admin
        .set_min_decrypt_version(keys::SetMinDecryptVersionRequest { requester: SECURITY.into(), version: v2 })
        .await
        .expect("raise the minimum");
    let refused = reveal(&mut client, &token).await.expect_err("a data key under version 1");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(dek_cache(&vault).await, (1.0, 2.0), "refused before the cache was asked");

    // Rewrapped: the stored key changed, so the remembered one is not its answer.
    finished(&rewrap(&mut admin, 0).await);
    assert_eq!(reveal(&mut client, &token).await.expect("reveal after the rewrap"), expected(1));
    assert_eq!(reveal(&mut client, &token).await.expect("and again"), expected(1));
    assert_eq!(dek_cache(&vault).await, (2.0, 3.0));

    // Retiring and destroying version 1 are key changes too.
    retire(&mut admin, 1).await.expect("retire version 1");
    destroy(&mut admin, 1).await.expect("destroy version 1");
    assert_eq!(reveal(&mut client, &token).await.expect("reveal under version 2"), expected(1));
    assert_eq!(dek_cache(&vault).await, (2.0, 4.0));

    // An erased person is not readable through a key still in memory.
    client.erase(EraseRequest { person_token: token.clone(), ..Default::default() }).await.expect("erase");
    let gone = reveal(&mut client, &token).await.expect_err("erased");
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(dek_cache(&vault).await, (2.0, 4.0));
}

storage_test!(a_vault_without_the_data_key_cache_unwraps_every_time, without_the_cache);
async fn without_the_cache(backend: Backend) {
    let vault = VaultHarness::start_with_key_options(
        backend,
        KeyLifecycleOptions { dek_cache_capacity: 0, ..KeyLifecycleOptions::default() },
    )
    .await;
    let mut client = vault.gateway().await;
    let token = tokenize(&mut client, 1).await.expect("tokenize");
    for _ in 0..3 {
        assert_eq!(reveal(&mut client, &token).await.expect("reveal"), (person(1).email, person(1).phone));
    }
    assert_eq!(dek_cache(&vault).await, (0.0, 0.0), "no lookups: the cache is off");
}
