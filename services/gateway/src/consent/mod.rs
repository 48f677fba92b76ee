//! The consent ledger and the published versions of the privacy policy (policy clauses
//! 2.2.4, 2.2.5, 3.5, 5.4 and 5.5; design invariant 6).
//!
//! Consent is an append-only history: each grant or withdrawal is a new event naming the
//! person's token, the purpose (and, for `third_party_transfer`, the recipient), the
//! policy version it was given under, the channel and a reference to the evidence. A
//! consent counts while its latest event is an unexpired grant given under a policy
//! version no older than the newest one that requires re-consent for its purpose. Every
//! check reads the database, so a withdrawal takes effect on the very next call, on
//! every gateway replica.
//!
//! Nothing here ever holds personal data: people appear only as opaque `qpp_` tokens,
//! evidence is a reference (a form id, a document token), and no error or reason
//! repeats a value it was given.

mod model;
mod store;

use std::time::{SystemTime, UNIX_EPOCH};

pub use model::{ConsentAction, ConsentCheck, ConsentEvent, ConsentState, NewConsentEvent, PolicyVersion};
pub use store::ConsentStore;
// The subject-request register checks tokens, evidence and identities by the same rules.
pub(crate) use model::{validate_evidence, validate_identity, validate_person_token};

/// Why a consent or policy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// Bad input; `field` names the request field ("person_token", "purpose",
    /// "recipient", "policy_version", "channel", "evidence", "expires_at_ms",
    /// "text_sha256", "reconsent_purposes", and "recorded_by" / "published_by" for the
    /// caller's identity), `reason` a lowercase phrase that never echoes the value.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The request is well formed but the ledger's state refuses it: a grant under a
    /// policy version that is not the current one, or no policy version published yet.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
    #[error("failed to migrate the gateway database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl ConsentError {
    /// Takes a fixed phrase, so a caller cannot format the refused value into it by
    /// accident.
    pub(crate) fn invalid(field: &'static str, reason: &'static str) -> ConsentError {
        ConsentError::Invalid { field, reason: reason.to_owned() }
    }
}

/// The wall clock in unix milliseconds, as the ledger records and compares times.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}
