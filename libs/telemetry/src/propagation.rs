//! The W3C trace context in HTTP/2 headers, which is what gRPC metadata is on the wire.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::HeaderMap;
use tonic::codegen::http::header::{HeaderName, HeaderValue};

// The layers use their own propagator rather than the global one: W3C trace context is the
// suite's wire contract, and it must hold even in a process that never called `init`.
// `TraceContextPropagator` is a unit struct, so building one per call costs nothing.
fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// The remote parent carried by `traceparent`/`tracestate`; an empty context when absent or
/// malformed, so the request starts a fresh trace.
pub(crate) fn extract(headers: &HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes `context`'s span as `traceparent`/`tracestate`; writes nothing for an invalid span.
pub(crate) fn inject(context: &Context, headers: &mut HeaderMap) {
    propagator().inject_context(context, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator only writes its own lowercase names and hex values, so neither
        // conversion fails in practice; if one did, sending no context beats failing the call.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_request_without_traceparent_has_no_remote_parent() {
        let context = extract(&HeaderMap::new());
        assert!(!context.span().span_context().is_valid());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-not-a-trace-01"));
        assert!(!extract(&headers).span().span_context().is_valid());
    }

    #[test]
    fn traceparent_round_trips() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
        let context = extract(&headers);
        let span_context = context.span().span_context().clone();
        assert!(span_context.is_remote());
        assert_eq!(span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let mut outgoing = HeaderMap::new();
        inject(&context, &mut outgoing);
        assert_eq!(outgoing.get("traceparent").map(HeaderValue::as_bytes), Some(TRACEPARENT.as_bytes()));
    }

    #[test]
    fn an_empty_context_injects_nothing() {
        let mut headers = HeaderMap::new();
        inject(&Context::new(), &mut headers);
        assert!(headers.is_empty());
    }
}
