//! Key administration through the gateway: only the security identities may use it,
//! and the access log names the person who acted, never the gateway.

mod common;

use common::*;
use qupia_api::audit::v1::{AuditFilter, QueryAuditRequest};
use qupia_api::keys::v1::*;
use qupia_test_support::{Backend, Suite, storage_test};
use tonic::Code;

const QUPIACTL: &str = "spiffe://qupia/ns/default/sa/qupiactl";

/// Every KeyAdmin RPC as `service`; the code each one answered with (OK = 0).
async fn every_rpc_as(suite: &Suite, service: &str) -> Vec<(&'static str, Code)> {
    let mut keys = suite.keys_as(service).await;
    let code = |result: Result<(), tonic::Status>| result.map_or_else(|s| s.code(), |()| Code::Ok);
    vec![
        ("GetKeyStatus", code(keys.get_key_status(GetKeyStatusRequest::default()).await.map(drop))),
        ("RotateKek", code(keys.rotate_kek(RotateKekRequest::default()).await.map(drop))),
        ("Rewrap", code(keys.rewrap(RewrapRequest::default()).await.map(drop))),
        (
            "SetMinDecryptVersion",
            code(keys.set_min_decrypt_version(SetMinDecryptVersionRequest::default()).await.map(drop)),
        ),
        ("RetireKek", code(keys.retire_kek(RetireKekRequest { version: 1, ..Default::default() }).await.map(drop))),
        ("DestroyKek", code(keys.destroy_kek(DestroyKekRequest { version: 1, ..Default::default() }).await.map(drop))),
        ("RotateIndexKey", code(keys.rotate_index_key(RotateIndexKeyRequest::default()).await.map(drop))),
        ("Reindex", code(keys.reindex(ReindexRequest::default()).await.map(drop))),
        (
            "RemoveIndexKey",
            code(keys.remove_index_key(RemoveIndexKeyRequest { version: 1, ..Default::default() }).await.map(drop)),
        ),
    ]
}

storage_test!(only_the_security_team_administers_keys, only_security);
async fn only_security(backend: Backend) {
    let suite = Suite::start(backend).await;
    register(&suite, 0).await;
    for service in ["accounts", "marketing", "gateway"] {
        for (rpc, code) in every_rpc_as(&suite, service).await {
            assert_eq!(code, Code::PermissionDenied, "{service} calling {rpc}");
        }
    }
    // Nothing changed: still one KEK version and one index key.
    let status = suite.keys_as("qupiactl").await.get_key_status(GetKeyStatusRequest::default()).await.unwrap();
    let status = status.into_inner();
    assert_eq!(status.kek_versions.len(), 1);
    assert_eq!(status.index_key_versions.len(), 1);
}

/// Follows a progress stream to its end; returns the last message's progress.
async fn last_progress<T>(mut stream: tonic::Streaming<T>, progress: impl Fn(T) -> Option<JobProgress>) -> JobProgress {
    let mut last = None;
    while let Some(message) = stream.message().await.expect("progress") {
        last = progress(message);
    }
    last.expect("at least one progress message")
}

storage_test!(every_key_operation_is_in_the_access_log_with_who_asked, key_operations_audited);
async fn key_operations_audited(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    let mut keys = suite.keys_as("qupiactl").await;
    // A requester the caller names is ignored: the gateway names the certificate's.
    let spoof = || ACCOUNTS.to_owned();

    let rotated = keys.rotate_kek(RotateKekRequest { requester: spoof() }).await.expect("rotate").into_inner();
    assert_eq!((rotated.active_version, rotated.previous_version), (2, 1));
    let stream = keys.rewrap(RewrapRequest { requester: spoof(), rate_per_second: 100 }).await.expect("rewrap");
    let rewrapped = last_progress(stream.into_inner(), |m| m.progress).await;
    assert_eq!((rewrapped.state, rewrapped.done), (JobState::Finished as i32, 1));
    assert_eq!(rewrapped.requested_by, QUPIACTL);
    keys.set_min_decrypt_version(SetMinDecryptVersionRequest { requester: spoof(), version: 2 })
        .await
        .expect("minimum decryption version");
    keys.retire_kek(RetireKekRequest { requester: spoof(), version: 1 }).await.expect("retire");
    keys.destroy_kek(DestroyKekRequest { requester: spoof(), version: 1 }).await.expect("destroy");
    let index = keys.rotate_index_key(RotateIndexKeyRequest { requester: spoof() }).await.expect("rotate index");
    assert_eq!(index.into_inner().current_version, 2);
    let stream = keys.reindex(ReindexRequest { requester: spoof(), rate_per_second: 0 }).await.expect("reindex");
    let reindexed = last_progress(stream.into_inner(), |m| m.progress).await;
    assert_eq!((reindexed.state, reindexed.done), (JobState::Finished as i32, 1));
    let removed = keys
        .remove_index_key(RemoveIndexKeyRequest { requester: spoof(), version: 1 })
        .await
        .expect("remove the old index key")
        .into_inner();
    assert_eq!(removed.entries_deleted, 2);
    let refused = keys.retire_kek(RetireKekRequest { requester: spoof(), version: 2 }).await.expect_err("active");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // The person is still there, under the new keys.
    let values = reveal(&suite, "accounts", &person, qupia_api::types::v1::Purpose::ServiceDelivery, &[], "").await;
    assert_eq!(values.expect("reveal after the rotations").len(), 5);

    let entries = suite
        .audit_as("qupiactl")
        .await
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { caller: QUPIACTL.into(), ..Default::default() }),
            after_seq: 0,
            limit: 1000,
        })
        .await
        .expect("query the access log")
        .into_inner()
        .entries;
    let allowed: Vec<&str> = entries.iter().filter(|e| e.allowed).map(|e| e.operation.as_str()).collect();
    assert_eq!(
        allowed,
        vec![
            "key_rotate",
            "key_rewrap_started",
            "key_rewrap_finished",
            "key_min_decrypt_version",
            "key_retire",
            "key_destroy",
            "index_key_rotate",
            "index_reindex_started",
            "index_reindex_finished",
            "index_key_remove",
        ]
    );
    let denied: Vec<(&str, &str)> =
        entries.iter().filter(|e| !e.allowed).map(|e| (e.operation.as_str(), e.reason.as_str())).collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].0, "key_retire");
    assert!(denied[0].1.contains("kek version 2 is active"), "{}", denied[0].1);
    let spoofed = suite
        .audit_as("qupiactl")
        .await
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { caller: ACCOUNTS.into(), operation: "key_rotate".into(), ..Default::default() }),
            after_seq: 0,
            limit: 10,
        })
        .await
        .expect("query")
        .into_inner()
        .entries;
    assert!(spoofed.is_empty(), "the access log names the certificate's identity, not the claimed one");
}
