//! The accounts service's errors and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// Everything an accounts call can fail with. Messages never contain a personal value:
/// they are returned to callers and logged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the request field at fault.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// No such account (or document of the account).
    #[error("{0}")]
    NotFound(&'static str),
    /// The request is well formed but conflicts with the state of things, such as a
    /// privacy policy version that is no longer in force.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A call to the gateway failed. The gateway's messages are free of personal values
    /// by its own contract; `step` says what was being done, as a verb phrase.
    #[error("failed to {step}: {}", describe(status))]
    Gateway { step: &'static str, status: Status },
    /// The caller's request stream broke off.
    #[error("the request stream failed: {}", describe(.0))]
    Stream(Status),
    /// A registration step failed after the person was stored, and the person was then
    /// erased again, so nothing of the registration remains.
    #[error("the registration was undone (the stored person was erased): {cause}")]
    RegistrationUndone { cause: Box<Error> },
    /// A registration step failed and erasing the stored person failed too: an operator
    /// must erase the person token logged with this error.
    #[error(
        "the registration failed ({cause}) and undoing it failed too ({undo}); an operator must erase what was stored"
    )]
    RegistrationNotUndone { cause: Box<Error>, undo: Box<Error> },
    /// A rectification changed some fields before another failed.
    #[error("{updated} changed; then {cause}")]
    PartlyUpdated { updated: String, cause: Box<Error> },
    /// Something that should not happen did; the caller gets a reference to the log.
    #[error("{0}")]
    Internal(&'static str),
    /// The accounts database failed or could not be reached.
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
}

/// A status's message, or what its code means when it came without one.
fn describe(status: &Status) -> &str {
    if status.message().is_empty() { status.code().description() } else { status.message() }
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// A failed gateway call, with what was being done.
    pub fn gateway(step: &'static str) -> impl FnOnce(Status) -> Error {
        move |status| Error::Gateway { step, status }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            // The gateway's verdict stands: NOT_FOUND for an erased token, UNAVAILABLE
            // for an unreachable vault, INVALID_ARGUMENT for a value the vault refused.
            Error::Gateway { status, .. } | Error::Stream(status) => status.code(),
            Error::RegistrationUndone { cause }
            | Error::RegistrationNotUndone { cause, .. }
            | Error::PartlyUpdated { cause, .. } => cause.code(),
            Error::Internal(_) => Code::Internal,
            Error::Storage(err) => match err {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Code::Unavailable,
                _ => Code::Internal,
            },
        }
    }

    /// The message a caller sees. A storage failure is logged here, with a reference
    /// the caller can quote, and answered with a generic message, also when it is the
    /// cause of another error.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => self.logged_with_reference(),
            Error::Storage(_) if self.code() == Code::Internal => self.logged_with_reference(),
            Error::Storage(_) => {
                tracing::warn!(error = %self, "accounts database unavailable");
                "the accounts database is unavailable; try again".to_owned()
            }
            Error::RegistrationUndone { cause } => {
                format!("the registration was undone (the stored person was erased): {}", cause.public_message())
            }
            Error::RegistrationNotUndone { cause, undo } => format!(
                "the registration failed ({}) and undoing it failed too ({}); an operator must erase what was stored",
                cause.public_message(),
                undo.public_message()
            ),
            Error::PartlyUpdated { updated, cause } => format!("{updated} changed; then {}", cause.public_message()),
            Error::InvalidArgument { .. }
            | Error::NotFound(_)
            | Error::FailedPrecondition(_)
            | Error::Gateway { .. }
            | Error::Stream(_) => self.to_string(),
        }
    }
}

impl Error {
    fn logged_with_reference(&self) -> String {
        let reference = uuid::Uuid::new_v4();
        tracing::error!(error = %self, %reference, "internal error");
        format!("internal error (reference {reference})")
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(err.code(), err.public_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undone_registration_keeps_the_code_of_what_failed_and_says_it_was_undone() {
        let cause = Error::gateway("store the identity document")(Status::invalid_argument(
            "content: is not a PDF, JPEG or PNG document",
        ));
        let status = Status::from(Error::RegistrationUndone { cause: Box::new(cause) });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the registration was undone (the stored person was erased): failed to store the identity document: \
             content: is not a PDF, JPEG or PNG document"
        );
    }
}
