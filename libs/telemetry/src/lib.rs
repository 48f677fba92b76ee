//! Distributed traces for Qupia's services: OpenTelemetry spans exported over OTLP/gRPC,
//! with the W3C trace context carried in gRPC metadata from accounts and marketing through
//! the gateway to the vault, so one request is one trace across every hop.
//!
//! A span leaves the process and lands in a collector that is not part of the vault's
//! trust boundary, so spans must never carry a personal value: the layers here record only
//! the RPC's service and method names and its status code — never a header other than the
//! trace context, never a request or response body, never a status message. Spans opened
//! elsewhere must follow the same rule (`#[tracing::instrument(skip_all)]`); log events are
//! not exported at all.
//!
//! Wiring, in three places:
//! - `main.rs`: `let telemetry = qupia_telemetry::init("qupia-vault", args.log_json);` inside
//!   the Tokio runtime, and `telemetry.shutdown()` after `serve` returns;
//! - `server.rs`: `Server::builder().layer(qupia_telemetry::server_layer())`;
//! - a client: `VaultServiceClient::new(qupia_telemetry::client_layer().layer(channel))`,
//!   whose type is `VaultServiceClient<`[`TracedChannel`]`>`.

#![forbid(unsafe_code)]

mod client;
mod init;
mod propagation;
mod server;

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use client::{ClientTrace, ClientTraceLayer, TracedChannel, client_layer};
pub use init::{Telemetry, init, init_with_endpoint};
pub use server::{ServerTrace, ServerTraceLayer, server_layer};

/// The W3C trace id (32 lowercase hex digits) of the current span, or `""` when there is no
/// sampled trace — no subscriber from [`init`], or the sampler dropped this request.
///
/// The access log stores it beside each entry so an auditor can find the trace of a reveal.
pub fn current_trace_id() -> String {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() && span_context.is_sampled() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}
