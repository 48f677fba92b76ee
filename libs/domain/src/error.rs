//! The one error every parser in this crate returns.

/// Why a value was refused.
///
/// `reason` is a short lowercase phrase such as "must not be empty" and never contains
/// the value itself: these errors are returned to callers and written to logs, and the
/// value is personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidValue {
    pub reason: String,
}

impl InvalidValue {
    /// Builds an error from a fixed phrase; taking `&'static str` keeps callers from
    /// formatting the input into the reason by accident.
    pub fn new(reason: &'static str) -> InvalidValue {
        InvalidValue { reason: reason.to_owned() }
    }
}
