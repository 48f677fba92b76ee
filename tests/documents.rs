//! Scanned documents end to end, on SQLite and PostgreSQL: a 10 MiB scan registered
//! through the accounts service comes back byte-identical; a chunk changed or dropped in
//! the vault's database makes the download fail rather than return other bytes; an
//! oversize scan and an executable renamed `.pdf` are INVALID_ARGUMENT and store nothing
//! in any service.

use qupia_api::accounts::v1 as accounts;
use qupia_api::types::v1::Purpose;
use qupia_e2e::{Everything, scan};
use qupia_test_support::{Backend, TestDb, storage_test};
use sqlx::{Connection, Row};
use tonic::Code;

/// Downloads the person's scan through the accounts service: the bytes received and the
/// error that ended the stream, if any.
async fn download(suite: &Everything, account_id: &str, document_token: &str) -> (Vec<u8>, Option<tonic::Status>) {
    let mut stream = match suite
        .web()
        .await
        .download_document(accounts::DownloadDocumentRequest {
            account_id: account_id.into(),
            document_token: document_token.into(),
        })
        .await
    {
        Ok(stream) => stream.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut content = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if let Some(accounts::download_document_response::Part::Chunk(bytes)) = message.part {
                    content.extend_from_slice(&bytes);
                }
            }
            Ok(None) => return (content, None),
            Err(status) => return (content, Some(status)),
        }
    }
}

async fn vault_db(db: &TestDb) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&db.admin_url).await.expect("connect to the vault database")
}

async fn chunk(conn: &mut sqlx::AnyConnection, index: i64) -> Vec<u8> {
    sqlx::query("SELECT ciphertext FROM document_chunks WHERE chunk_index = $1")
        .bind(index)
        .fetch_one(&mut *conn)
        .await
        .expect("read a chunk")
        .try_get("ciphertext")
        .expect("ciphertext")
}

async fn set_chunk(conn: &mut sqlx::AnyConnection, index: i64, ciphertext: Vec<u8>) {
    sqlx::query("UPDATE document_chunks SET ciphertext = $1 WHERE chunk_index = $2")
        .bind(ciphertext)
        .bind(index)
        .execute(&mut *conn)
        .await
        .expect("write a chunk");
}

storage_test!(a_ten_mebibyte_scan_round_trips_and_tampering_fails, round_trip);
async fn round_trip(backend: Backend) {
    let mut suite = Everything::start(backend).await;
    let content = scan(10 * 1024 * 1024);
    let her = suite.register_with(0, &content, &[]).await.expect("register with a 10 MiB scan");
    let (downloaded, error) = download(&suite, &her.account_id, &her.identity_document_token).await;
    assert!(error.is_none(), "{error:?}");
    assert!(
        downloaded == content,
        "the scan comes back byte-identical ({} of {} bytes)",
        downloaded.len(),
        content.len()
    );

    // One chunk changed (one bit of its ciphertext): the download fails there.
    let mut vault = vault_db(&suite.accounts.suite.vault.db).await;
    let original = chunk(&mut vault, 40).await;
    let mut changed = original.clone();
    changed[100] ^= 0x01;
    set_chunk(&mut vault, 40, changed).await;
    let (received, error) = download(&suite, &her.account_id, &her.identity_document_token).await;
    let error = error.expect("a changed chunk fails");
    assert_eq!(error.code(), Code::DataLoss, "{error:?}");
    assert!(received.len() < content.len(), "never the whole document");
    assert!(content.starts_with(&received), "and never a wrong byte");

    // One chunk dropped: the download fails too.
    set_chunk(&mut vault, 40, original).await;
    sqlx::query("DELETE FROM document_chunks WHERE chunk_index = 77").execute(&mut vault).await.expect("drop a chunk");
    let (received, error) = download(&suite, &her.account_id, &her.identity_document_token).await;
    let error = error.expect("a dropped chunk fails");
    assert_eq!(error.code(), Code::DataLoss, "{error:?}");
    assert!(content.starts_with(&received) && received.len() < content.len());
    suite.stop().await;
}

storage_test!(an_oversize_scan_and_a_disguised_executable_store_nothing, refusals);
async fn refusals(backend: Backend) {
    let mut suite = Everything::start(backend).await;
    // One byte over the default limit of 20 MiB.
    let oversize = scan(20 * 1024 * 1024 + 1);
    assert!(oversize.len() > 20 * 1024 * 1024);
    let status = suite.register_with(0, &oversize, &[Purpose::Statistics]).await.expect_err("oversize");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // An ELF executable, whatever its name said.
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0".to_vec();
    elf.resize(64 * 1024, 0x90);
    let status = suite.register_with(1, &elf, &[Purpose::Statistics]).await.expect_err("an executable");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("PDF, JPEG or PNG"), "{}", status.message());

    let core = &suite.accounts.suite;
    for (db, table) in [
        (&suite.accounts.db, "accounts"),
        (&core.vault.db, "persons"),
        (&core.vault.db, "documents"),
        (&core.vault.db, "document_chunks"),
        (&core.gateway_db, "consent_events"),
    ] {
        let rows = Everything::count(db, &format!("SELECT COUNT(*) FROM {table}")).await;
        assert_eq!(rows, 0, "{table} holds nothing after refused registrations");
    }
    suite.stop().await;
}
