//! The marketing service's ops port and health: `/livez`, `/readyz`, `/metrics` with
//! the calls made, gRPC health SERVING, and a clean stop that ends the delivery worker.

use qupia_api::marketing::v1::ListAudiencesRequest;
use qupia_test_support::ops::{http_get, parse_metrics};
use qupia_test_support::{Backend, MarketingSuite, connect, storage_test};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

storage_test!(ops_port_health_and_clean_stop, ops_and_health);
async fn ops_and_health(backend: Backend) {
    let mut suite = MarketingSuite::start(backend).await;
    let ops = suite.ops_addr().expect("the suite runs marketing's ops server");
    assert_eq!(http_get(ops, "/livez").await.expect("GET /livez").0, 200);
    assert_eq!(http_get(ops, "/readyz").await.expect("GET /readyz").0, 200);

    let channel = connect(suite.addr, &suite.suite.pki.service("qupiactl"), "marketing").await.expect("connect");
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest { service: "qupia.marketing.v1.MarketingService".into() })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    suite.marketing().await.list_audiences(ListAudiencesRequest {}).await.expect("list");
    let refused = suite.marketing_as("accounts").await.list_audiences(ListAudiencesRequest {}).await;
    assert_eq!(refused.expect_err("accounts is not a caller").code(), tonic::Code::PermissionDenied);
    let (status, body) = http_get(ops, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    let metrics = parse_metrics(&body).unwrap_or_else(|why| panic!("not the text format: {why}\n{body}"));
    let calls = |code| {
        metrics.value(
            "grpc_server_requests_total",
            &[("service", "qupia.marketing.v1.MarketingService"), ("method", "ListAudiences"), ("code", code)],
        )
    };
    assert_eq!((calls("OK"), calls("PERMISSION_DENIED")), (1.0, 1.0));
    assert!(metrics.value("qupia_db_pool_max", &[]) >= 1.0);

    // Stops cleanly (serve returns Ok once drained and the worker has ended), and is
    // no longer ready.
    suite.stop().await;
    assert!(http_get(ops, "/readyz").await.map_or(true, |(status, _)| status != 200));
}
