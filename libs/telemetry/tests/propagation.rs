//! One call through two in-process servers is one trace at an in-process OTLP receiver:
//! client root span → front `grpc.server` → back `grpc.server`, and the spans hold nothing
//! from headers or bodies.
//!
//! Everything runs in one test function: the subscriber is global and shut down once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use qupia_telemetry::{TracedChannel, client_layer, current_trace_id, server_layer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::Layer;
use tracing::Instrument;

/// Values that stand in for personal data: none may appear in any exported span.
const SECRET_HEADER: &str = "alice-secret-header-value";
const SECRET_BODY: &str = "alice@example.com";

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

/// "front": answers Check by asking "back", and remembers the trace id it saw.
struct Front {
    back: HealthClient<TracedChannel>,
    seen_trace_ids: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Health for Front {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.seen_trace_ids.lock().map_err(|_| Status::internal("poisoned"))?.push(current_trace_id());
        self.back.clone().check(request.into_inner()).await
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding an ephemeral port");
    let address = listener.local_addr().expect("a bound listener has an address");
    (listener, address)
}

fn traced_channel(address: SocketAddr) -> TracedChannel {
    let channel = Channel::from_shared(format!("http://{address}")).expect("a valid uri").connect_lazy();
    client_layer().layer(channel)
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn string_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key) {
        Some(Value::StringValue(value)) => Some(value),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_through_two_servers_is_one_trace() {
    let receiver = Receiver::default();
    let (listener, otlp_address) = bind().await;
    tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let telemetry = qupia_telemetry::init_with_endpoint("qupia-test", &format!("http://{otlp_address}"));

    // back: the stock health service, which knows only the empty service name.
    let (_, back_health) = tonic_health::server::health_reporter();
    let (back_listener, back_address) = bind().await;
    tokio::spawn(
        Server::builder()
            .layer(server_layer())
            .add_service(back_health)
            .serve_with_incoming(TcpListenerStream::new(back_listener)),
    );
    let seen_trace_ids = Arc::new(Mutex::new(Vec::new()));
    let front = Front { back: HealthClient::new(traced_channel(back_address)), seen_trace_ids: seen_trace_ids.clone() };
    let (front_listener, front_address) = bind().await;
    tokio::spawn(
        Server::builder()
            .layer(server_layer())
            .add_service(HealthServer::new(front))
            .serve_with_incoming(TcpListenerStream::new(front_listener)),
    );

    // 1. A traced call, inside a root span.
    let root = tracing::info_span!("test.root");
    let root_trace_id = root.in_scope(current_trace_id);
    assert_eq!(root_trace_id.len(), 32, "the root span is sampled: {root_trace_id:?}");
    let mut client = HealthClient::new(traced_channel(front_address));
    let answer = client.check(HealthCheckRequest { service: String::new() }).instrument(root.clone()).await;
    assert!(answer.is_ok(), "{answer:?}");
    drop(root);

    // 2. A call with no trace context, carrying would-be personal values in a header and
    // the body; back answers NOT_FOUND for the unknown service name.
    let mut untraced =
        HealthClient::new(Channel::from_shared(format!("http://{front_address}")).expect("a valid uri").connect_lazy());
    let mut request = Request::new(HealthCheckRequest { service: SECRET_BODY.to_owned() });
    request.metadata_mut().insert("x-caller-note", SECRET_HEADER.parse().expect("ascii"));
    let answer = untraced.check(request).await;
    assert_eq!(answer.map(|_| ()).map_err(|s| s.code()), Err(tonic::Code::NotFound));

    telemetry.shutdown();
    let spans = receiver.spans.lock().expect("not poisoned").clone();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let servers: Vec<&Span> = spans.iter().filter(|s| s.name == "grpc.server").collect();
    assert_eq!(servers.len(), 4, "two calls through two servers: {spans:#?}");

    // The traced call: root → front → back, one trace id, seen inside the handler.
    let root = spans.iter().find(|s| s.name == "test.root").expect("the client's root span is exported");
    assert_eq!(hex(&root.trace_id), root_trace_id);
    let front = servers.iter().find(|s| s.parent_span_id == root.span_id).expect("front is a child of the root");
    let back = servers.iter().find(|s| s.parent_span_id == front.span_id).expect("back is a child of front");
    for span in [front, back] {
        assert_eq!(span.trace_id, root.trace_id);
        assert_eq!(span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
        assert_eq!(string_attribute(span, "rpc.system"), Some("grpc"));
        assert_eq!(string_attribute(span, "rpc.service"), Some("grpc.health.v1.Health"));
        assert_eq!(string_attribute(span, "rpc.method"), Some("Check"));
        assert!(matches!(attribute(span, "rpc.grpc.status_code"), Some(Value::IntValue(0))), "{span:#?}");
    }
    let seen = seen_trace_ids.lock().expect("not poisoned").clone();
    assert_eq!(seen.first(), Some(&root_trace_id), "current_trace_id() in the handler is the trace's id");

    // The untraced call started a fresh trace of its own, still propagated front → back.
    let fresh_front = servers
        .iter()
        .find(|s| s.trace_id != root.trace_id && s.parent_span_id.is_empty())
        .expect("a request without traceparent starts a new trace");
    let fresh_back = servers.iter().find(|s| s.parent_span_id == fresh_front.span_id).expect("and passes it on");
    assert_eq!(fresh_back.trace_id, fresh_front.trace_id);
    assert_eq!(seen.get(1), Some(&hex(&fresh_front.trace_id)));
    for span in [fresh_front, fresh_back] {
        assert!(matches!(attribute(span, "rpc.grpc.status_code"), Some(Value::IntValue(5))), "{span:#?}");
    }

    // Nothing but the rpc.* names and the span kind — and none of the request's values.
    for span in &servers {
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.iter().all(|key| key.starts_with("rpc.")), "unexpected attributes: {keys:?}");
        assert!(span.events.is_empty(), "log events are not exported: {:?}", span.events);
    }
    let everything = format!("{spans:?}");
    for secret in [SECRET_HEADER, SECRET_BODY, "x-caller-note"] {
        assert!(!everything.contains(secret), "{secret} leaked into a span");
    }
}
