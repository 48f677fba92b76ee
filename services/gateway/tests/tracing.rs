//! One trace spans the caller, the gateway and the vault, and the access-log entry
//! of the reveal carries its trace id. Spans arrive at an in-process OTLP receiver.
//!
//! One test function: the tracing subscriber is global to this test binary.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::gateway::v1::{RevealRequest, TokenizeRequest};
use qupia_api::types::v1::Purpose;
use qupia_test_support::people::needles;
use qupia_test_support::{Backend, Suite};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
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
async fn one_trace_from_the_caller_through_the_gateway_to_the_vault() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let telemetry = qupia_telemetry::init_with_endpoint("qupia-suite", &format!("http://{otlp}"));

    let suite = Suite::start(Backend::Sqlite).await;
    // The caller (accounts) passes its trace context on, as every Qupia client does.
    let channel = qupia_telemetry::client_layer().layer(suite.channel_as("accounts").await);
    let mut gateway = GatewayServiceClient::new(channel);

    let root = tracing::info_span!("accounts.profile");
    let trace_id = root.in_scope(qupia_telemetry::current_trace_id);
    assert_eq!(trace_id.len(), 32);
    let person = async {
        let tokens = gateway
            .tokenize(TokenizeRequest { person: Some(person(0)), idempotency_key: String::new() })
            .await
            .expect("tokenize")
            .into_inner()
            .tokens
            .expect("tokens");
        gateway
            .reveal(RevealRequest {
                token: tokens.person_token.clone(),
                purpose: Purpose::ServiceDelivery as i32,
                fields: vec![],
                recipient: String::new(),
                disclosure_request_id: String::new(),
            })
            .await
            .expect("reveal");
        tokens.person_token
    }
    .instrument(root.clone())
    .await;
    drop(root);

    // The access log names the trace of each operation.
    let entries = audit_of(&suite, &person).await;
    let reveal = entries.iter().find(|e| e.operation == "reveal").expect("the reveal is logged");
    assert_eq!(reveal.trace_id, trace_id, "the access-log entry carries the caller's trace id");
    let tokenize = entries.iter().find(|e| e.operation == "tokenize").expect("the tokenize is logged");
    assert_eq!(tokenize.trace_id, trace_id);

    telemetry.shutdown();
    let spans = receiver.spans.lock().unwrap().clone();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let services: Vec<&str> =
        in_trace.iter().filter(|s| s.name == "grpc.server").filter_map(|s| rpc_service(s)).collect();
    assert!(services.contains(&"qupia.gateway.v1.GatewayService"), "gateway spans in the trace: {services:?}");
    assert!(services.contains(&"qupia.vault.v1.VaultService"), "vault spans in the trace: {services:?}");
    assert!(in_trace.iter().any(|s| s.name == "accounts.profile"), "the caller's span is in the trace");

    // Every vault span hangs below a gateway span: the context really travelled.
    let by_id = |id: &[u8]| in_trace.iter().find(|s| s.span_id == id).copied();
    for vault in in_trace.iter().filter(|s| rpc_service(s) == Some("qupia.vault.v1.VaultService")) {
        let mut parent = by_id(&vault.parent_span_id);
        let mut through_gateway = false;
        while let Some(span) = parent {
            through_gateway |= rpc_service(span) == Some("qupia.gateway.v1.GatewayService");
            parent = by_id(&span.parent_span_id);
        }
        assert!(through_gateway, "a vault span whose ancestors include no gateway span");
    }

    // Spans carry no personal value.
    let everything = format!("{spans:?}");
    for needle in needles() {
        assert!(!everything.contains(needle), "a personal value in a span");
    }
}
