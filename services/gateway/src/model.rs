//! Request fields parsed into domain types at the edge.

use qupia_api::types::v1 as types;
use qupia_domain::{Field, Purpose};

use crate::Error;

pub fn field(value: i32, name: &str) -> Result<Field, Error> {
    qupia_api::convert::field(value).map_err(|reason| Error::invalid(name, reason))
}

pub fn purpose(value: i32, name: &str) -> Result<Purpose, Error> {
    qupia_api::convert::purpose(value).map_err(|reason| Error::invalid(name, reason))
}

pub fn field_to_proto(field: Field) -> types::Field {
    qupia_api::convert::field_to_proto(field)
}

pub fn purpose_to_proto(purpose: Purpose) -> types::Purpose {
    qupia_api::convert::purpose_to_proto(purpose)
}

/// A third party's identifier: empty, or a lowercase name such as `bank-a` (the
/// consent ledger's rule; it is also written into access-log reasons).
pub fn recipient(value: &str) -> Result<String, Error> {
    let valid = value.is_empty()
        || (value.len() <= 64
            && value.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(Error::invalid("recipient", "must be a lowercase identifier of letters, digits, '.', '_' or '-'"))
    }
}

/// The trace id of the current request (joined from the caller's `traceparent` by
/// the server's trace layer), for the access log; empty when not traced.
pub fn trace_id<T>(_request: &tonic::Request<T>) -> String {
    qupia_telemetry::current_trace_id()
}
