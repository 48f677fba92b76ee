//! When the ledger can't be written, the append fails and writes nothing: the vault then
//! refuses the reveal.

use qupia_audit::{AuditLedger, Backend, Error};
use qupia_test_support::{Backend as TestBackend, storage_test};
use sqlx::AnyPool;

use crate::support::{count, entries, entry, exec, fixture, open};

storage_test!(
    an_unwritable_ledger_fails_the_append_and_writes_nothing,
    an_unwritable_ledger_fails_the_append_and_writes_nothing_body
);
async fn an_unwritable_ledger_fails_the_append_and_writes_nothing_body(backend: TestBackend) {
    let f = fixture(backend, "audit_unwritable", 1).await;
    f.ledger.append(&entries(0..3)).await.expect("append");
    let head = f.ledger.head().await.expect("head");

    let result = match f.backend {
        Backend::Sqlite => {
            let url = f.db.url.replace("mode=rwc", "mode=ro");
            let pool = open(&url, Backend::Sqlite, 1, false).await.expect("open read-only");
            let result = AuditLedger::new(pool.clone(), Backend::Sqlite).append(&entries(3..5)).await;
            pool.close().await;
            result
        }
        Backend::Postgres => {
            // The vault's role (a non-superuser owner, as in production) loses INSERT on
            // the ledger; a superuser would ignore the REVOKE.
            let role = f.db.role.clone().expect("a PostgreSQL test database has a role");
            let admin = open(&f.db.admin_url, Backend::Postgres, 1, false).await.expect("connect as the superuser");
            exec(&admin, &format!("REVOKE INSERT ON audit_log FROM {role}")).await;
            let result = f.ledger.append(&entries(3..5)).await;
            exec(&admin, &format!("GRANT INSERT ON audit_log TO {role}")).await;
            admin.close().await;
            result
        }
    };
    assert!(matches!(result, Err(Error::Storage(_))), "{result:?}");
    assert_eq!(count(&f.pool).await, 3, "nothing written");
    assert_eq!(f.ledger.head().await.expect("head"), head, "the head did not move");
    let report = f.ledger.verify(None).await.expect("verify");
    assert_eq!((report.entries, report.problem), (3, None));

    // Writable again, the chain continues where it was.
    assert_eq!(f.ledger.append(&[entry(3)]).await.expect("append"), [4]);
}

storage_test!(a_batch_with_one_bad_entry_writes_nothing, a_batch_with_one_bad_entry_writes_nothing_body);
async fn a_batch_with_one_bad_entry_writes_nothing_body(backend: TestBackend) {
    let f = fixture(backend, "audit_bad_batch", 1).await;
    let mut batch = entries(0..5);
    batch[3].operation = "Reveal!".into();
    assert!(matches!(f.ledger.append(&batch).await, Err(Error::Invalid(_))));
    let mut tx = f.pool.begin().await.expect("begin");
    assert!(matches!(AuditLedger::append_in(&mut tx, f.backend, &batch).await, Err(Error::Invalid(_))));
    tx.commit().await.expect("commit");
    assert_eq!(count(&f.pool).await, 0);
    assert_eq!(f.ledger.head().await.expect("head").0, 0);
}

storage_test!(a_missing_head_row_fails_the_append, a_missing_head_row_fails_the_append_body);
async fn a_missing_head_row_fails_the_append_body(backend: TestBackend) {
    let f = fixture(backend, "audit_no_head", 1).await;
    exec(&f.pool, "DELETE FROM audit_head").await;
    assert!(matches!(f.ledger.append(&[entry(0)]).await, Err(Error::Storage(_))));
    assert_eq!(count(&f.pool).await, 0);
    close(f.pool).await;
}

async fn close(pool: AnyPool) {
    pool.close().await;
}
