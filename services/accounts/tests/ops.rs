//! The accounts service's operations: gRPC health, `/livez` and `/readyz`, and
//! `/metrics` in the Prometheus text format, moving with the calls made (refused ones
//! included) and never carrying a personal value. Runs on SQLite and PostgreSQL.

use qupia_api::accounts::v1::{GetProfileRequest, SignInRequest, sign_in_request};
use qupia_test_support::ops::{Exposition, http_get, parse_metrics};
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{AccountsSuite, Backend, storage_test};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICE: &str = "qupia.accounts.v1.AccountsService";

async fn scrape(suite: &AccountsSuite) -> Exposition {
    let addr = suite.ops_addr().expect("the suite runs the accounts service's ops server");
    let (status, body) = http_get(addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body).unwrap_or_else(|why| panic!("/metrics is not in the text format: {why}\n{body}"))
}

fn calls(metrics: &Exposition, method: &str, code: &str) -> f64 {
    metrics.value("grpc_server_requests_total", &[("service", SERVICE), ("method", method), ("code", code)])
}

storage_test!(health_probes_and_metrics, health_and_metrics);
async fn health_and_metrics(backend: Backend) {
    let mut suite = AccountsSuite::start(backend).await;
    let ops = suite.ops_addr().expect("ops server");
    assert_eq!(http_get(ops, "/livez").await.expect("GET /livez").0, 200);
    assert_eq!(http_get(ops, "/readyz").await.expect("GET /readyz").0, 200);
    let health = HealthClient::new(suite.channel_as("web").await)
        .check(HealthCheckRequest { service: SERVICE.into() })
        .await
        .expect("gRPC health")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let before = scrape(&suite).await;
    let email = PEOPLE[0].3;
    let sign_in = suite
        .accounts_as("web")
        .await
        .sign_in(SignInRequest { key: Some(sign_in_request::Key::Email(email.into())) })
        .await;
    assert_eq!(sign_in.unwrap_err().code(), tonic::Code::NotFound);
    let refused = suite
        .accounts_as("marketing")
        .await
        .get_profile(GetProfileRequest { account_id: "acc_AAAAAAAAAAAAAAAAAAAAAA".into() })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    let after = scrape(&suite).await;
    assert_eq!(calls(&after, "SignIn", "NOT_FOUND") - calls(&before, "SignIn", "NOT_FOUND"), 1.0);
    assert_eq!(
        calls(&after, "GetProfile", "PERMISSION_DENIED") - calls(&before, "GetProfile", "PERMISSION_DENIED"),
        1.0,
        "calls admission refuses are counted too"
    );
    assert!(after.value("qupia_db_pool_max", &[]) >= 1.0, "the accounts database pool is observed");
    let text = http_get(ops, "/metrics").await.expect("GET /metrics").1;
    assert!(!text.contains(email), "labels are routes and codes, never values");

    suite.stop().await;
}
