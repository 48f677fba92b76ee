//! The gateway's errors and the one place they become gRPC statuses.

use tonic::{Code, Status};

use crate::consent::ConsentError;
use crate::subject::SubjectError;

/// Everything a gateway call can fail with. Messages never contain a personal value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The policy, the consent ledger or the caller's role refuses the call.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// What the call names does not exist (the message names it by id, never by value).
    #[error("{0} was not found")]
    NotFound(String),
    /// The caller is over its rate limit.
    #[error("rate limit exceeded for this caller; retry later")]
    RateLimited,
    /// The access log could not record a decision: nothing is revealed (fail-closed).
    #[error("the access log is unavailable; nothing was revealed")]
    AuditUnavailable,
    /// The vault answered with an error; its message is already free of values.
    #[error("{}", .0.message())]
    Vault(Status),
    #[error(transparent)]
    Consent(#[from] ConsentError),
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// The caller's request stream broke off; what it had sent was not stored.
    #[error("the request stream failed: {}", .0.message())]
    CallerStream(Status),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::NotFound(_) => Code::NotFound,
            Error::RateLimited => Code::ResourceExhausted,
            Error::AuditUnavailable => Code::Unavailable,
            Error::Vault(status) | Error::CallerStream(status) => status.code(),
            Error::Consent(err) => match err {
                ConsentError::Invalid { .. } => Code::InvalidArgument,
                ConsentError::FailedPrecondition(_) => Code::FailedPrecondition,
                ConsentError::Storage(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) => {
                    Code::Unavailable
                }
                ConsentError::Storage(_) | ConsentError::Migrate(_) => Code::Internal,
            },
            Error::Subject(err) => match err {
                SubjectError::Invalid { .. } => Code::InvalidArgument,
                SubjectError::NotFound => Code::NotFound,
                SubjectError::FailedPrecondition(_) | SubjectError::Calendar(_) => Code::FailedPrecondition,
                SubjectError::Conflict => Code::Aborted,
                SubjectError::Storage(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) => {
                    Code::Unavailable
                }
                SubjectError::Storage(_) => Code::Internal,
            },
        }
    }

    /// The message a caller sees; internal failures are logged with a reference.
    pub fn public_message(&self) -> String {
        match self.code() {
            Code::Internal => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(error = %self, %reference, "internal error");
                format!("internal error (reference {reference})")
            }
            Code::Unavailable if matches!(self, Error::Consent(_)) => {
                tracing::warn!(error = %self, "consent store unavailable");
                "the consent store is unavailable; try again".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(err.code(), err.public_message())
    }
}

impl From<Error> for qupia_api::types::v1::ItemError {
    fn from(err: Error) -> Self {
        let field = match &err {
            Error::InvalidArgument { field, .. } => field.clone(),
            _ => String::new(),
        };
        qupia_api::types::v1::ItemError { code: err.code() as i32, message: err.public_message(), field }
    }
}
