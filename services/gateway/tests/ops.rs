//! The ops ports of both services: `/metrics` parses as the Prometheus text format and
//! moves with the calls made; `/livez` and `/readyz` answer while serving.

mod common;

use std::net::SocketAddr;

use common::*;
use qupia_api::types::v1::{Field, Purpose};
use qupia_test_support::ops::{Exposition, http_get, parse_metrics};
use qupia_test_support::{Backend, Suite, storage_test};

async fn scrape(addr: SocketAddr) -> Exposition {
    let (status, body) = http_get(addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body).unwrap_or_else(|why| panic!("/metrics is not in the text format: {why}\n{body}"))
}

const CALLS: &str = "grpc_server_requests_total";
const DECISIONS: &str = "qupia_decisions_total";

fn calls(metrics: &Exposition, service: &str, method: &str, code: &str) -> f64 {
    metrics.value(CALLS, &[("service", service), ("method", method), ("code", code)])
}

storage_test!(metrics_move_with_calls_and_decisions, metrics_move);
async fn metrics_move(backend: Backend) {
    let mut suite = Suite::start(backend).await;
    let gateway_ops = suite.gateway_ops_addr().expect("the suite runs the gateway's ops server");
    let vault_ops = suite.vault.ops_addr();
    for addr in [gateway_ops, vault_ops] {
        assert_eq!(http_get(addr, "/livez").await.expect("GET /livez").0, 200);
        assert_eq!(http_get(addr, "/readyz").await.expect("GET /readyz").0, 200);
    }
    let gateway_before = scrape(gateway_ops).await;
    let vault_before = scrape(vault_ops).await;

    const REVEALS: usize = 3;
    let token = register(&suite, 0).await;
    for _ in 0..REVEALS {
        reveal(&suite, "accounts", &token, Purpose::ServiceDelivery, &[Field::Email], "").await.expect("reveal");
    }
    let denied = reveal(&suite, "marketing", &token, Purpose::ServiceDelivery, &[Field::Email], "").await;
    assert_eq!(denied.expect_err("marketing may not use service_delivery").code(), tonic::Code::PermissionDenied);

    let gateway_after = scrape(gateway_ops).await;
    let vault_after = scrape(vault_ops).await;
    let moved = |before: &Exposition, after: &Exposition, service: &str, method: &str, code: &str| {
        calls(after, service, method, code) - calls(before, service, method, code)
    };
    const GATEWAY: &str = "qupia.gateway.v1.GatewayService";
    const VAULT: &str = "qupia.vault.v1.VaultService";
    assert_eq!(moved(&gateway_before, &gateway_after, GATEWAY, "Tokenize", "OK"), 1.0);
    assert_eq!(moved(&gateway_before, &gateway_after, GATEWAY, "Reveal", "OK"), REVEALS as f64);
    assert_eq!(moved(&gateway_before, &gateway_after, GATEWAY, "Reveal", "PERMISSION_DENIED"), 1.0);
    assert_eq!(moved(&vault_before, &vault_after, VAULT, "Tokenize", "OK"), 1.0);
    assert_eq!(moved(&vault_before, &vault_after, VAULT, "BatchReveal", "OK"), REVEALS as f64);
    assert_eq!(
        gateway_after
            .value("grpc_server_request_duration_seconds_count", &[("service", GATEWAY), ("method", "Reveal")])
            - gateway_before
                .value("grpc_server_request_duration_seconds_count", &[("service", GATEWAY), ("method", "Reveal")]),
        (REVEALS + 1) as f64
    );

    let decisions = |metrics: &Exposition, result: &str| {
        metrics.value(DECISIONS, &[("purpose", "service_delivery"), ("result", result)])
    };
    assert_eq!(decisions(&gateway_after, "allowed") - decisions(&gateway_before, "allowed"), REVEALS as f64);
    assert_eq!(decisions(&gateway_after, "denied_policy") - decisions(&gateway_before, "denied_policy"), 1.0);

    // Each reveal and the denial are in the access log, and each append was timed.
    let audit_writes = |metrics: &Exposition| metrics.value("qupia_audit_write_seconds_count", &[]);
    assert!(audit_writes(&vault_after) - audit_writes(&vault_before) >= (REVEALS + 1) as f64);
    assert_eq!(vault_after.value("qupia_key_versions", &[("state", "active")]), 1.0);
    for metrics in [&gateway_after, &vault_after] {
        assert!(metrics.value("qupia_db_pool_max", &[]) >= 1.0);
        assert!(metrics.value("qupia_db_pool_connections", &[]) >= 1.0, "the pool holds a connection");
    }
    // Labels carry route names and codes, never the token or a personal value.
    let text = http_get(gateway_ops, "/metrics").await.expect("GET /metrics").1
        + &http_get(vault_ops, "/metrics").await.expect("GET /metrics").1;
    assert!(!text.contains(&token));
    assert!(!text.contains(qupia_test_support::people::PEOPLE[0].3));

    suite.stop().await;
}
