//! One trace spans the web front end, the accounts service, the gateway and the vault,
//! and the access-log entry of the sign-in lookup carries its trace id. Spans arrive
//! at an in-process OTLP receiver.
//!
//! One test function: the tracing subscriber is global to this test binary.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use qupia_api::accounts::v1::accounts_service_client::AccountsServiceClient;
use qupia_api::accounts::v1::{SignInRequest, sign_in_request};
use qupia_api::audit::v1::{AuditFilter, QueryAuditRequest};
use qupia_test_support::people::{PEOPLE, needles};
use qupia_test_support::{AccountsSuite, Backend};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use tower::Layer;
use tracing::Instrument;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.spans.lock().map_err(|_| Status::internal("poisoned"))?.extend(spans);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn rpc_service(span: &Span) -> Option<&str> {
    span.attributes.iter().find(|kv| kv.key == "rpc.service").and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_front_end_through_accounts_and_the_gateway_to_the_vault() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let telemetry = qupia_telemetry::init_with_endpoint("qupia-suite", &format!("http://{otlp}"));

    let suite = AccountsSuite::start(Backend::Sqlite).await;
    // The front end passes its trace context on, as every Qupia client does.
    let channel = qupia_telemetry::client_layer().layer(suite.channel_as("web").await);
    let mut accounts = AccountsServiceClient::new(channel);
    let root = tracing::info_span!("web.sign_in");
    let trace_id = root.in_scope(qupia_telemetry::current_trace_id);
    assert_eq!(trace_id.len(), 32);
    let outcome = accounts
        .sign_in(SignInRequest { key: Some(sign_in_request::Key::Email(PEOPLE[0].3.into())) })
        .instrument(root.clone())
        .await;
    drop(root);
    assert_eq!(outcome.unwrap_err().code(), Code::NotFound, "nobody is registered");

    // The access log names the trace of the lookup the sign-in made.
    let entries = suite
        .suite
        .audit_as("qupiactl")
        .await
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { operation: "lookup".into(), ..Default::default() }),
            after_seq: 0,
            limit: 10,
        })
        .await
        .expect("query the access log")
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].caller, "spiffe://qupia/ns/default/sa/accounts");
    assert_eq!(entries[0].trace_id, trace_id, "the access-log entry carries the front end's trace id");

    telemetry.shutdown();
    let spans = receiver.spans.lock().unwrap().clone();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let services: Vec<&str> =
        in_trace.iter().filter(|s| s.name == "grpc.server").filter_map(|s| rpc_service(s)).collect();
    for service in
        ["qupia.accounts.v1.AccountsService", "qupia.gateway.v1.GatewayService", "qupia.vault.v1.VaultService"]
    {
        assert!(services.contains(&service), "{service} spans in the trace: {services:?}");
    }
    assert!(in_trace.iter().any(|s| s.name == "web.sign_in"), "the front end's span is in the trace");

    // Every vault span hangs below a gateway span, and that below an accounts span: the
    // context really travelled, hop by hop.
    let by_id = |id: &[u8]| in_trace.iter().find(|s| s.span_id == id).copied();
    for vault in in_trace.iter().filter(|s| rpc_service(s) == Some("qupia.vault.v1.VaultService")) {
        let mut ancestors = Vec::new();
        let mut parent = by_id(&vault.parent_span_id);
        while let Some(span) = parent {
            ancestors.extend(rpc_service(span));
            parent = by_id(&span.parent_span_id);
        }
        let gateway = ancestors.iter().position(|s| *s == "qupia.gateway.v1.GatewayService");
        let accounts = ancestors.iter().position(|s| *s == "qupia.accounts.v1.AccountsService");
        assert!(
            matches!((gateway, accounts), (Some(g), Some(a)) if g < a),
            "a vault span below the gateway below accounts: {ancestors:?}"
        );
    }

    // Spans carry no personal value.
    let everything = format!("{spans:?}");
    for needle in needles() {
        assert!(!everything.contains(needle), "a personal value in a span");
    }
}
