//! The vault's errors and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// Everything a vault operation can fail with. Messages never contain a personal
/// value or key material: they are returned to callers and logged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the request field at fault.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The caller's identity may not make this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such person or token (or it was erased).
    #[error("{0} was not found")]
    NotFound(&'static str),
    /// The request is well formed but conflicts with stored state.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// A key-administration step the key lifecycle does not allow now; the message
    /// names versions and counts, never a key.
    #[error("{0}")]
    KeyLifecycle(String),
    /// A stored ciphertext or wrapped key failed authentication: it was altered or
    /// moved to another slot. Nothing is returned rather than wrong data.
    #[error("a stored value failed its integrity check")]
    Integrity,
    /// The database failed or could not be reached.
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// The access log could not be written: the operation did not happen and
    /// nothing was revealed (fail-closed).
    #[error("the access log cannot be written: {0}")]
    Audit(qupia_audit::Error),
    /// The key provider failed.
    #[error("key provider failed: {0}")]
    Keys(qupia_crypto::Error),
    /// The erasure ledger could not be written: the erasure did not happen.
    #[error("the erasure ledger cannot be written: {0}")]
    ErasureLedger(sqlx::Error),
    /// The caller's request stream broke off (cancelled, reset, undecodable): what it
    /// had sent is dropped, nothing stored.
    #[error("the request stream failed: {}", .0.message())]
    Stream(Status),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// The same error, its field name prefixed with the path of the item it belongs
    /// to (`items[3].` + `person.email`).
    pub fn in_item(self, prefix: &str) -> Error {
        match self {
            Error::InvalidArgument { field, reason } => {
                Error::InvalidArgument { field: format!("{prefix}{field}"), reason }
            }
            other => other,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) | Error::KeyLifecycle(_) => Code::FailedPrecondition,
            Error::Integrity => Code::DataLoss,
            Error::Storage(err) => match err {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Code::Unavailable,
                _ => Code::Internal,
            },
            Error::Audit(qupia_audit::Error::Invalid(_)) => Code::InvalidArgument,
            Error::Audit(qupia_audit::Error::Storage(_)) => Code::Unavailable,
            Error::Keys(err) => match err {
                qupia_crypto::Error::Decrypt => Code::DataLoss,
                qupia_crypto::Error::UnknownKeyVersion(_) | qupia_crypto::Error::KeyVersionNotUsable { .. } => {
                    Code::FailedPrecondition
                }
                qupia_crypto::Error::Unavailable(_) => Code::Unavailable,
                qupia_crypto::Error::Keyring(_)
                | qupia_crypto::Error::Pkcs11(_)
                | qupia_crypto::Error::Malformed(_) => Code::Internal,
            },
            // Whatever went wrong, the ledger may become writable again: retry later.
            Error::ErasureLedger(_) => Code::Unavailable,
            Error::Stream(status) => status.code(),
        }
    }

    /// The message a caller sees. Internal failures are logged here, with a reference
    /// the caller can quote, and answered with a generic message.
    pub fn public_message(&self) -> String {
        match self.code() {
            Code::Internal => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(error = %self, %reference, "internal error");
                format!("internal error (reference {reference})")
            }
            Code::Unavailable if matches!(self, Error::Audit(_)) => {
                tracing::error!(error = %self, "access log write failed: refusing the operation");
                "the access log cannot be written; nothing was done or revealed".to_owned()
            }
            Code::Unavailable if matches!(self, Error::ErasureLedger(_)) => {
                tracing::error!(error = %self, "erasure ledger write failed: refusing the erasure");
                "the erasure ledger cannot be written; the person was not erased".to_owned()
            }
            Code::Unavailable if matches!(self, Error::Keys(_)) => {
                tracing::warn!(error = %self, "key provider unavailable");
                "the key provider is unavailable; try again".to_owned()
            }
            Code::Unavailable => {
                tracing::warn!(error = %self, "storage unavailable");
                "storage is unavailable; try again".to_owned()
            }
            _ => match self {
                Error::Keys(qupia_crypto::Error::Decrypt) => Error::Integrity.to_string(),
                Error::Keys(_) => "the person's data key is under a key version that is not usable".to_owned(),
                other => other.to_string(),
            },
        }
    }

    /// The status code's name, for the access log ("not_found").
    pub fn code_name(&self) -> &'static str {
        match self.code() {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::PermissionDenied => "permission_denied",
            Code::FailedPrecondition => "failed_precondition",
            Code::DataLoss => "data_loss",
            Code::Unavailable => "unavailable",
            _ => "internal",
        }
    }

    /// The field at fault, for per-item errors of a batch.
    pub fn field(&self) -> &str {
        match self {
            Error::InvalidArgument { field, .. } => field,
            _ => "",
        }
    }
}

impl From<qupia_audit::Error> for Error {
    fn from(err: qupia_audit::Error) -> Error {
        Error::Audit(err)
    }
}

impl From<crate::store::WriteError> for Error {
    fn from(err: crate::store::WriteError) -> Error {
        match err {
            crate::store::WriteError::Sql(err) => Error::Storage(err),
            crate::store::WriteError::Audit(err) => Error::Audit(err),
            crate::store::WriteError::ErasureLedger(err) => Error::ErasureLedger(err),
        }
    }
}

impl From<qupia_crypto::Error> for Error {
    fn from(err: qupia_crypto::Error) -> Error {
        match err {
            qupia_crypto::Error::Decrypt => Error::Integrity,
            other => Error::Keys(other),
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
        qupia_api::types::v1::ItemError {
            code: err.code() as i32,
            message: err.public_message(),
            field: err.field().to_owned(),
        }
    }
}
