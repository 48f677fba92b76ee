//! The marketing service's errors and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// Everything a marketing call can fail with. Messages never contain a personal
/// value: request values are never echoed, and the gateway's messages are value-free.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the request field at fault.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// No audience or campaign with that id.
    #[error("{0} was not found")]
    NotFound(&'static str),
    /// Well formed, but this service's configuration or state refuses it.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// The gateway refused or failed the call; its code and message pass through.
    #[error("the gateway answered: {}", .0.message())]
    Gateway(Status),
    /// The database failed or could not be reached.
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Gateway(status) => status.code(),
            Error::Storage(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) => {
                Code::Unavailable
            }
            Error::Storage(_) => Code::Internal,
        }
    }

    /// The message a caller sees. Internal failures are logged here with a reference
    /// the caller can quote, and answered with a generic message.
    pub fn public_message(&self) -> String {
        match self {
            Error::Storage(_) if self.code() == Code::Internal => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(error = %self, %reference, "internal error");
                format!("internal error (reference {reference})")
            }
            Error::Storage(_) => {
                tracing::warn!(error = %self, "storage unavailable");
                "storage is unavailable; try again".to_owned()
            }
            Error::Gateway(status) => status.message().to_owned(),
            Error::InvalidArgument { .. } | Error::NotFound(_) | Error::FailedPrecondition(_) => self.to_string(),
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(err.code(), err.public_message())
    }
}
