//! Appending: the chain's shape, concurrency, checkpoints, transactions.

use std::collections::BTreeSet;

use qupia_audit::{AuditLedger, Checkpoint, NewEntry, Outcome};
use qupia_test_support::{Backend as TestBackend, scan_database, storage_test};

use crate::support::{all_entries, count, entries, entry, fixture};

storage_test!(appends_form_a_chain_from_one, appends_form_a_chain_from_one_body);
async fn appends_form_a_chain_from_one_body(backend: TestBackend) {
    let f = fixture(backend, "audit_chain", 1).await;

    // An empty ledger verifies, and its head is the genesis hash.
    assert_eq!(f.ledger.head().await.expect("head"), (0, [0u8; 32]));
    let empty = f.ledger.verify(None).await.expect("verify");
    assert_eq!((empty.entries, empty.head_seq, empty.problem), (0, 0, None));

    // One entry, then a batch: seqs continue without a gap.
    assert_eq!(f.ledger.append(&[entry(0)]).await.expect("append"), [1]);
    let batch = f.ledger.append(&entries(1..10)).await.expect("append batch");
    assert_eq!(batch, (2..=10).collect::<Vec<i64>>());
    assert!(f.ledger.append(&[]).await.expect("empty append").is_empty());

    let stored = all_entries(&f.ledger).await;
    assert_eq!(stored.len(), 10);
    assert_eq!(stored[0].prev_hash, "00".repeat(32), "entry 1 links to zeros");
    for (i, e) in stored.iter().enumerate() {
        let expected = entry(i);
        assert_eq!(e.seq, i64::try_from(i + 1).expect("small"));
        assert_eq!(
            (&e.caller, &e.purpose, &e.person, &e.fields, e.outcome, &e.decision_id),
            (
                &expected.caller,
                &expected.purpose,
                &expected.person,
                &expected.fields,
                expected.outcome,
                &expected.decision_id
            )
        );
        assert_eq!(e.computed_hash().map(hex::encode), Some(e.hash.clone()));
        if i > 0 {
            assert_eq!(e.prev_hash, stored[i - 1].hash, "entry {} links to {}", i + 1, i);
        }
    }
    let (head_seq, head_hash) = f.ledger.head().await.expect("head");
    assert_eq!((head_seq, hex::encode(head_hash)), (10, stored[9].hash.clone()));

    let report = f.ledger.verify(None).await.expect("verify");
    assert_eq!((report.entries, report.head_seq, report.problem), (10, 10, None));
}

storage_test!(concurrent_appends_stay_gapless_and_verify, concurrent_appends_stay_gapless_and_verify_body);
async fn concurrent_appends_stay_gapless_and_verify_body(backend: TestBackend) {
    // Several connections on both backends: appenders really race for the head.
    let f = fixture(backend, "audit_concurrent", 4).await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8usize {
        let ledger = f.ledger.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            // 25 single appends and 5 batches of 5: 50 entries per task.
            for i in 0..25 {
                seqs.extend(ledger.append(&[entry(task * 100 + i)]).await?);
            }
            for b in 0..5 {
                let start = task * 100 + 25 + b * 5;
                let batch = ledger.append(&entries(start..start + 5)).await?;
                assert!(batch.windows(2).all(|w| w[1] == w[0] + 1), "a batch is contiguous");
                seqs.extend(batch);
            }
            Ok::<_, qupia_audit::Error>(seqs)
        });
    }
    let mut returned = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        let seqs = result.expect("task").expect("append");
        assert_eq!(seqs.len(), 50);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a task's seqs increase");
        for seq in seqs {
            assert!(returned.insert(seq), "seq {seq} handed out twice");
        }
    }
    assert_eq!(returned, (1..=400).collect::<BTreeSet<i64>>());

    let stored: Vec<i64> = all_entries(&f.ledger).await.iter().map(|e| e.seq).collect();
    assert_eq!(stored, (1..=400).collect::<Vec<i64>>());
    // 400 entries cross verification's page boundary.
    let report = f.ledger.verify(None).await.expect("verify");
    assert_eq!((report.entries, report.head_seq, report.problem), (400, 400, None));
}

storage_test!(
    append_in_commits_and_rolls_back_with_the_callers_transaction,
    append_in_commits_and_rolls_back_with_the_callers_transaction_body
);
async fn append_in_commits_and_rolls_back_with_the_callers_transaction_body(backend: TestBackend) {
    let f = fixture(backend, "audit_append_in", 1).await;
    f.ledger.append(&entries(0..3)).await.expect("append");

    // A vault write that fails after its entry was written takes the entry with it.
    let mut tx = f.pool.begin().await.expect("begin");
    let seqs = AuditLedger::append_in(&mut tx, f.backend, &entries(3..5)).await.expect("append in");
    assert_eq!(seqs, [4, 5]);
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&f.pool).await, 3);
    assert_eq!(f.ledger.head().await.expect("head").0, 3);

    let mut tx = f.pool.begin().await.expect("begin");
    let seqs = AuditLedger::append_in(&mut tx, f.backend, &entries(5..7)).await.expect("append in");
    assert_eq!(seqs, [4, 5], "a rolled-back append leaves no gap");
    tx.commit().await.expect("commit");

    let report = f.ledger.verify(None).await.expect("verify");
    assert_eq!((report.entries, report.problem), (5, None));
}

storage_test!(checkpoints_commit_to_the_head, checkpoints_commit_to_the_head_body);
async fn checkpoints_commit_to_the_head_body(backend: TestBackend) {
    let f = fixture(backend, "audit_checkpoint", 1).await;
    assert_eq!(f.ledger.latest_checkpoint().await.expect("latest"), None);

    let genesis = f.ledger.checkpoint().await.expect("checkpoint");
    assert_eq!((genesis.seq, genesis.hash.as_str()), (0, "00".repeat(32).as_str()));

    f.ledger.append(&entries(0..6)).await.expect("append");
    let taken = f.ledger.checkpoint().await.expect("checkpoint");
    let (head_seq, head_hash) = f.ledger.head().await.expect("head");
    assert_eq!((taken.seq, taken.hash.clone()), (head_seq, hex::encode(head_hash)));
    assert_eq!(f.ledger.latest_checkpoint().await.expect("latest"), Some(taken.clone()));

    // The exported form is one JSON line that reads back to the same commitment.
    let line = serde_json::to_string(&taken).expect("export");
    let external: Checkpoint = serde_json::from_str(&line).expect("import");
    f.ledger.append(&entries(6..9)).await.expect("append");
    let report = f.ledger.verify(Some(&external)).await.expect("verify");
    assert_eq!((report.entries, report.problem), (9, None));

    // A checkpoint that is not a hash is the caller's mistake, not a finding.
    let garbled = Checkpoint { hash: "not hex".into(), ..external };
    assert!(matches!(f.ledger.verify(Some(&garbled)).await, Err(qupia_audit::Error::Invalid(_))));
}

storage_test!(personal_values_never_reach_the_ledger, personal_values_never_reach_the_ledger_body);
async fn personal_values_never_reach_the_ledger_body(backend: TestBackend) {
    let f = fixture(backend, "audit_no_pii", 1).await;
    f.ledger.append(&entries(0..3)).await.expect("append");
    for value in qupia_test_support::people::needles() {
        // A value where the token or a field name belongs, each in a batch with a good
        // entry: the batch is refused whole.
        let mut misplaced =
            vec![NewEntry { person: value.into(), ..entry(0) }, NewEntry { fields: vec![value.into()], ..entry(0) }];
        // A reason is free text: e-mails, phones and names in other scripts are refused
        // there too (a Latin-script name cannot be told from an ordinary word).
        if !value.is_ascii() || value.contains(['@', '+']) {
            misplaced.push(NewEntry { reason: format!("no consent for {value}"), ..entry(0) });
        }
        for bad in misplaced {
            let result = f.ledger.append(&[entry(1), bad]).await;
            assert!(matches!(result, Err(qupia_audit::Error::Invalid(_))), "a value was accepted: {result:?}");
        }
    }
    assert_eq!(count(&f.pool).await, 3, "refused batches write nothing");
    let denied = NewEntry { outcome: Outcome::Denied, ..entry(2) };
    f.ledger.append(&[denied]).await.expect("append");
    let leaks = scan_database(&f.db, &qupia_test_support::people::needles()).await;
    assert!(leaks.is_empty(), "personal data in the ledger: {leaks:?}");
}
