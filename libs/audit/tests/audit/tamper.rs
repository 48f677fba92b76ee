//! What an attacker with write access to the database can do, and what verify says.

use qupia_audit::{Checkpoint, Problem};
use qupia_test_support::{Backend as TestBackend, storage_test};
use sqlx::AnyPool;

use crate::support::{Fixture, all_entries, drop_append_only_guard, entries, exec, fixture, overwrite, set_head};

/// A ledger of `n` entries, its append-only triggers already removed by the attacker.
async fn tampered_ledger(backend: TestBackend, stem: &str, n: usize) -> Fixture {
    let f = fixture(backend, stem, 1).await;
    f.ledger.append(&entries(0..n)).await.expect("append");
    assert_eq!(f.ledger.verify(None).await.expect("verify").problem, None);
    drop_append_only_guard(&f).await;
    f
}

async fn problem(f: &Fixture, external: Option<&Checkpoint>) -> Option<Problem> {
    f.ledger.verify(external).await.expect("verify").problem
}

storage_test!(the_database_refuses_edits_and_deletions, the_database_refuses_edits_and_deletions_body);
async fn the_database_refuses_edits_and_deletions_body(backend: TestBackend) {
    let f = fixture(backend, "audit_triggers", 1).await;
    f.ledger.append(&entries(0..3)).await.expect("append");
    f.ledger.checkpoint().await.expect("checkpoint");
    let refused = |pool: AnyPool, sql: &'static str| async move {
        assert!(sqlx::query(sql).execute(&pool).await.is_err(), "allowed: {sql}");
    };
    refused(f.pool.clone(), "UPDATE audit_log SET purpose = 'statistics' WHERE seq = 2").await;
    refused(f.pool.clone(), "DELETE FROM audit_log WHERE seq = 3").await;
    refused(f.pool.clone(), "UPDATE audit_checkpoints SET seq = 1").await;
    refused(f.pool.clone(), "DELETE FROM audit_checkpoints").await;
    if f.backend == qupia_audit::Backend::Postgres {
        refused(f.pool.clone(), "TRUNCATE audit_log").await;
    }
    let report = f.ledger.verify(None).await.expect("verify");
    assert_eq!((report.entries, report.problem), (3, None));
}

storage_test!(an_edited_column_is_reported_at_its_entry, an_edited_column_is_reported_at_its_entry_body);
async fn an_edited_column_is_reported_at_its_entry_body(backend: TestBackend) {
    let f = tampered_ledger(backend, "audit_altered", 10).await;

    exec(&f.pool, "UPDATE audit_log SET purpose = 'statistics' WHERE seq = 5").await;
    let report = f.ledger.verify(None).await.expect("verify");
    assert_eq!(report.problem, Some(Problem::Altered { seq: 5 }));
    assert_eq!(report.entries, 4, "entries before the edit still count as intact");
    exec(&f.pool, "UPDATE audit_log SET purpose = 'advertising' WHERE seq = 5").await;
    assert_eq!(problem(&f, None).await, None, "restored");

    // Every column is covered by the hash: each edit, alone, is caught.
    let edits = [
        ("at_ms", "at_ms + 1"),
        ("caller", "'spiffe://qupia/ns/other/sa/gateway'"),
        ("operation", "'tokenize'"),
        ("person", "'qpp_someone_else'"),
        ("fields", "'email'"),
        ("decision", "'denied'"),
        ("reason", "'routine'"),
        ("consent_id", "''"),
        ("request_id", "'req-1'"),
        ("decision_id", "'dec-x'"),
        ("trace_id", "''"),
    ];
    for (column, value) in edits {
        let original = all_entries(&f.ledger).await.remove(4);
        exec(&f.pool, &format!("UPDATE audit_log SET {column} = {value} WHERE seq = 5")).await;
        assert_eq!(problem(&f, None).await, Some(Problem::Altered { seq: 5 }), "{column}");
        overwrite(&f.pool, 5, &original).await;
        assert_eq!(problem(&f, None).await, None, "{column} restored");
    }
}

storage_test!(
    an_edit_with_a_recomputed_hash_breaks_the_next_link,
    an_edit_with_a_recomputed_hash_breaks_the_next_link_body
);
async fn an_edit_with_a_recomputed_hash_breaks_the_next_link_body(backend: TestBackend) {
    let f = tampered_ledger(backend, "audit_relinked", 10).await;
    let mut fifth = all_entries(&f.ledger).await.remove(4);
    fifth.purpose = "statistics".into();
    fifth.hash = hex::encode(fifth.computed_hash().expect("hash"));
    overwrite(&f.pool, 5, &fifth).await;
    assert_eq!(problem(&f, None).await, Some(Problem::BrokenLink { seq: 6 }));
}

storage_test!(a_deleted_entry_is_reported_as_missing, a_deleted_entry_is_reported_as_missing_body);
async fn a_deleted_entry_is_reported_as_missing_body(backend: TestBackend) {
    let f = tampered_ledger(backend, "audit_missing", 10).await;
    exec(&f.pool, "DELETE FROM audit_log WHERE seq = 5").await;
    // Reported where the gap is, before entry 6's (also broken) link.
    let report = f.ledger.verify(None).await.expect("verify");
    assert_eq!(report.problem, Some(Problem::Missing { expected: 5, found: 6 }));
    assert_eq!(report.entries, 4);

    // Closing the gap by renumbering the later entries does not help: seq is hashed.
    for seq in 6..=10 {
        exec(&f.pool, &format!("UPDATE audit_log SET seq = {} WHERE seq = {seq}", seq - 1)).await;
    }
    assert_eq!(problem(&f, None).await, Some(Problem::Altered { seq: 5 }));
}

storage_test!(swapped_entries_are_reported_at_the_first, swapped_entries_are_reported_at_the_first_body);
async fn swapped_entries_are_reported_at_the_first_body(backend: TestBackend) {
    let f = tampered_ledger(backend, "audit_swapped", 10).await;
    let stored = all_entries(&f.ledger).await;
    let (fourth, fifth) = (&stored[3], &stored[4]);

    // Swapping every column but seq.
    overwrite(&f.pool, 4, fifth).await;
    overwrite(&f.pool, 5, fourth).await;
    assert_eq!(problem(&f, None).await, Some(Problem::Altered { seq: 4 }));
    overwrite(&f.pool, 4, fourth).await;
    overwrite(&f.pool, 5, fifth).await;
    assert_eq!(problem(&f, None).await, None, "swapped back");

    // Swapping the seqs instead.
    exec(
        &f.pool,
        "UPDATE audit_log SET seq = -4 WHERE seq = 4; \
         UPDATE audit_log SET seq = 4 WHERE seq = 5; \
         UPDATE audit_log SET seq = 5 WHERE seq = -4;",
    )
    .await;
    assert_eq!(problem(&f, None).await, Some(Problem::Altered { seq: 4 }));
}

storage_test!(a_cut_off_tail_is_caught_by_a_checkpoint, a_cut_off_tail_is_caught_by_a_checkpoint_body);
async fn a_cut_off_tail_is_caught_by_a_checkpoint_body(backend: TestBackend) {
    let f = fixture(backend, "audit_truncated", 1).await;
    f.ledger.append(&entries(0..10)).await.expect("append");
    let taken = f.ledger.checkpoint().await.expect("checkpoint");
    assert_eq!(taken.seq, 10);
    // The copy kept outside the database, as the CLI exports it.
    let exported = serde_json::to_string(&taken).expect("export");
    drop_append_only_guard(&f).await;
    let seventh = all_entries(&f.ledger).await.remove(6);

    exec(&f.pool, "DELETE FROM audit_log WHERE seq > 7").await;
    let truncated = Some(Problem::Truncated { head_seq: 7, checkpoint_seq: 10 });
    assert_eq!(problem(&f, None).await, truncated, "the stored checkpoint tells");

    // The head row alone also tells, while it is left as it was.
    exec(&f.pool, "DELETE FROM audit_checkpoints").await;
    assert_eq!(problem(&f, None).await, Some(Problem::HeadMismatch { head_seq: 10, last_seq: 7 }));

    // With the head rewritten to match, the database holds no evidence any more: only the
    // checkpoint kept outside it does.
    set_head(&f.pool, 7, &seventh.hash).await;
    assert_eq!(problem(&f, None).await, None, "undetectable from inside the database");
    let external: Checkpoint = serde_json::from_str(&exported).expect("import");
    let report = f.ledger.verify(Some(&external)).await.expect("verify");
    assert_eq!(report.problem, truncated);
    assert_eq!((report.entries, report.head_seq), (7, 7));
}

storage_test!(rewritten_history_is_caught_by_a_checkpoint, rewritten_history_is_caught_by_a_checkpoint_body);
async fn rewritten_history_is_caught_by_a_checkpoint_body(backend: TestBackend) {
    let f = fixture(backend, "audit_rewritten", 1).await;
    f.ledger.append(&entries(0..8)).await.expect("append");
    let external = f.ledger.checkpoint().await.expect("checkpoint");
    f.ledger.append(&entries(8..10)).await.expect("append");
    drop_append_only_guard(&f).await;

    // The attacker edits entry 3 and recomputes every hash after it, and the head: the
    // hash is unkeyed, so the chain alone is consistent again.
    let mut stored = all_entries(&f.ledger).await;
    assert_ne!(stored[2].outcome, qupia_audit::Outcome::Denied);
    stored[2].outcome = qupia_audit::Outcome::Denied;
    for i in 2..stored.len() {
        if i > 2 {
            stored[i].prev_hash = stored[i - 1].hash.clone();
        }
        stored[i].hash = hex::encode(stored[i].computed_hash().expect("hash"));
        overwrite(&f.pool, stored[i].seq, &stored[i]).await;
    }
    set_head(&f.pool, 10, &stored[9].hash).await;

    assert_eq!(problem(&f, None).await, Some(Problem::CheckpointMismatch { seq: 8 }), "the stored checkpoint tells");
    exec(&f.pool, "DELETE FROM audit_checkpoints").await;
    assert_eq!(problem(&f, None).await, None, "undetectable from inside the database");
    assert_eq!(problem(&f, Some(&external)).await, Some(Problem::CheckpointMismatch { seq: 8 }));
}

storage_test!(a_forged_checkpoint_is_reported, a_forged_checkpoint_is_reported_body);
async fn a_forged_checkpoint_is_reported_body(backend: TestBackend) {
    let f = fixture(backend, "audit_forged_checkpoint", 1).await;
    f.ledger.append(&entries(0..5)).await.expect("append");
    let genuine = f.ledger.checkpoint().await.expect("checkpoint");
    let forged = Checkpoint { seq: 3, hash: "ab".repeat(32), ..genuine.clone() };
    assert_eq!(problem(&f, Some(&forged)).await, Some(Problem::CheckpointMismatch { seq: 3 }));
    let genesis_forged = Checkpoint { seq: 0, ..forged };
    assert_eq!(problem(&f, Some(&genesis_forged)).await, Some(Problem::CheckpointMismatch { seq: 0 }));
    assert_eq!(problem(&f, Some(&genuine)).await, None);
}
