//! The register's values, how a request is validated before it reaches storage, and
//! which status changes are allowed. No SQL here.

use time::Date;

use super::SubjectError;
use crate::consent::{self, ConsentError};

/// The number of working days a request must be answered in (policy clause 5.2).
pub const WORKING_DAYS_TO_ANSWER: u32 = 30;

const MAX_CHANNEL: usize = 32;

/// What the person asks for (policy clause 3.1), or a complaint (clause 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SubjectRequestKind {
    Access,
    Rectification,
    Erasure,
    ConsentWithdrawal,
    Complaint,
}

/// Where a request stands. `Received` comes first; `Completed` and `Rejected` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectRequestStatus {
    Received,
    InProgress,
    Completed,
    Rejected,
}

/// Why a request was rejected: a fixed list, so that no free text (and no personal
/// data) enters the register with a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionReason {
    /// The requester could not be identified as the person.
    IdentityNotVerified,
    /// Nothing is held about the person.
    NoDataHeld,
    /// A law requires the data to be kept (erasure refused).
    RetentionRequiredByLaw,
    /// The same request is already on the register.
    Duplicate,
    ManifestlyUnfounded,
    /// The person withdrew the request.
    WithdrawnBySubject,
}

/// The stored names of an enum; these strings are in the database and must never change.
macro_rules! stored_names {
    ($type:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            pub const ALL: &'static [$type] = &[$(<$type>::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$type>::$variant => $name),+
                }
            }

            pub fn from_stored(text: &str) -> Option<$type> {
                Self::ALL.iter().copied().find(|value| value.as_str() == text)
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_names!(SubjectRequestKind {
    Access => "access",
    Rectification => "rectification",
    Erasure => "erasure",
    ConsentWithdrawal => "consent_withdrawal",
    Complaint => "complaint",
});

stored_names!(SubjectRequestStatus {
    Received => "received",
    InProgress => "in_progress",
    Completed => "completed",
    Rejected => "rejected",
});

stored_names!(RejectionReason {
    IdentityNotVerified => "identity_not_verified",
    NoDataHeld => "no_data_held",
    RetentionRequiredByLaw => "retention_required_by_law",
    Duplicate => "duplicate",
    ManifestlyUnfounded => "manifestly_unfounded",
    WithdrawnBySubject => "withdrawn_by_subject",
});

impl SubjectRequestStatus {
    /// Still waiting for an answer: counts towards overdue.
    pub fn is_open(self) -> bool {
        matches!(self, SubjectRequestStatus::Received | SubjectRequestStatus::InProgress)
    }

    /// Whether a request in this status may move to `next`. Work may start, and a
    /// request may be answered or rejected straight from `received`; a final status
    /// never changes, and no status is "changed" to itself.
    pub fn may_become(self, next: SubjectRequestStatus) -> bool {
        use SubjectRequestStatus::*;
        matches!((self, next), (Received, InProgress | Completed | Rejected) | (InProgress, Completed | Rejected))
    }
}

/// A request to enter on the register.
#[derive(Debug, Clone)]
pub struct NewSubjectRequest {
    /// The person's token (`qpp_...`); may be empty only for a complaint from someone
    /// without an account.
    pub person_token: String,
    pub kind: SubjectRequestKind,
    /// How it came in: a lowercase identifier such as `web`, `paper`, `e-mail` or
    /// `call-centre`, at most 32 characters.
    pub channel: String,
    /// A reference to the request itself (an incoming-letter number, a form id), never
    /// personal data: the consent ledger's evidence rule. Required.
    pub evidence: String,
    /// The calendar day it was received, in Asia/Almaty.
    pub received_on: Date,
    /// The caller's identity from its certificate.
    pub recorded_by: String,
}

/// A status change to append.
#[derive(Debug, Clone)]
pub struct SubjectRequestUpdate {
    pub id: String,
    pub status: SubjectRequestStatus,
    /// Required with `Rejected`, refused with anything else.
    pub rejection_reason: Option<RejectionReason>,
    /// A reference to what was done (the answer's letter number, an export id); may be
    /// empty. The evidence rule applies.
    pub evidence: String,
    pub updated_by: String,
}

/// One entry of a request's history: the first is always `Received`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRequestEvent {
    /// 1, 2, 3... per request, without gaps.
    pub revision: i64,
    pub status: SubjectRequestStatus,
    pub rejection_reason: Option<RejectionReason>,
    pub evidence: String,
    pub recorded_at_ms: i64,
    pub recorded_by: String,
}

/// A request as it stands: what was received, and its latest event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRequest {
    /// A random UUID (v4).
    pub id: String,
    pub person_token: String,
    pub kind: SubjectRequestKind,
    pub channel: String,
    pub evidence: String,
    pub received_on: Date,
    /// `WORKING_DAYS_TO_ANSWER` working days after `received_on`.
    pub due_on: Date,
    pub recorded_at_ms: i64,
    pub recorded_by: String,
    pub latest: SubjectRequestEvent,
}

impl SubjectRequest {
    /// Still open and due before `today`: the last day to answer has passed.
    pub fn is_overdue(&self, today: Date) -> bool {
        self.latest.status.is_open() && self.due_on < today
    }
}

/// Which requests to list; `None` / empty means any.
#[derive(Debug, Clone, Default)]
pub struct SubjectRequestFilter {
    pub status: Option<SubjectRequestStatus>,
    pub kind: Option<SubjectRequestKind>,
    pub person_token: String,
    /// Only open requests due before the day given to the store as "today".
    pub overdue_only: bool,
}

impl NewSubjectRequest {
    pub(crate) fn validate(&self) -> Result<(), SubjectError> {
        if !(self.person_token.is_empty() && self.kind == SubjectRequestKind::Complaint) {
            consent::validate_person_token(&self.person_token).map_err(from_consent)?;
        }
        validate_channel(&self.channel)?;
        if self.evidence.is_empty() {
            return Err(SubjectError::invalid(
                "evidence",
                "is required: a reference such as an incoming-letter number",
            ));
        }
        consent::validate_evidence(&self.evidence, true).map_err(from_consent)?;
        consent::validate_identity("recorded_by", &self.recorded_by).map_err(from_consent)
    }
}

impl SubjectRequestUpdate {
    pub(crate) fn validate(&self) -> Result<(), SubjectError> {
        validate_id(&self.id)?;
        if self.status == SubjectRequestStatus::Received {
            return Err(SubjectError::invalid("status", "must be in_progress, completed or rejected"));
        }
        match (self.status, self.rejection_reason) {
            (SubjectRequestStatus::Rejected, None) => {
                return Err(SubjectError::invalid("rejection_reason", "is required to reject a request"));
            }
            (SubjectRequestStatus::Rejected, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(SubjectError::invalid("rejection_reason", "may only be given to reject a request"));
            }
        }
        consent::validate_evidence(&self.evidence, false).map_err(from_consent)?;
        consent::validate_identity("updated_by", &self.updated_by).map_err(from_consent)
    }
}

/// A request id as this register issues them: a UUID in its hyphenated lowercase form.
pub(crate) fn validate_id(id: &str) -> Result<(), SubjectError> {
    match uuid::Uuid::parse_str(id) {
        Ok(parsed) if parsed.hyphenated().to_string() == id => Ok(()),
        _ => Err(SubjectError::invalid("id", "is not a subject request id")),
    }
}

pub(crate) fn validate_person_token(token: &str) -> Result<(), SubjectError> {
    consent::validate_person_token(token).map_err(from_consent)
}

/// `[a-z][a-z0-9_-]*` as for consents, plus `e-mail`-style hyphens; at most 32 bytes.
fn validate_channel(channel: &str) -> Result<(), SubjectError> {
    let valid = channel.len() <= MAX_CHANNEL
        && channel.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && channel.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(SubjectError::invalid(
            "channel",
            "must be a lowercase identifier of at most 32 characters, such as paper or e-mail",
        ))
    }
}

/// The consent ledger's validators speak `ConsentError`; only `Invalid` comes of them.
fn from_consent(err: ConsentError) -> SubjectError {
    match err {
        ConsentError::Invalid { field, reason } => SubjectError::Invalid { field, reason },
        ConsentError::FailedPrecondition(message) => SubjectError::FailedPrecondition(message),
        ConsentError::Storage(err) => SubjectError::Storage(err),
        ConsentError::Migrate(err) => SubjectError::Storage(sqlx::Error::Migrate(Box::new(err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip() {
        for kind in SubjectRequestKind::ALL {
            assert_eq!(SubjectRequestKind::from_stored(kind.as_str()), Some(*kind));
        }
        for status in SubjectRequestStatus::ALL {
            assert_eq!(SubjectRequestStatus::from_stored(status.as_str()), Some(*status));
        }
        for reason in RejectionReason::ALL {
            assert_eq!(RejectionReason::from_stored(reason.as_str()), Some(*reason));
        }
        assert_eq!(SubjectRequestKind::from_stored("Access"), None);
    }

    #[test]
    fn final_statuses_never_change() {
        use SubjectRequestStatus::*;
        let allowed: Vec<_> = SubjectRequestStatus::ALL
            .iter()
            .flat_map(|from| SubjectRequestStatus::ALL.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| from.may_become(*to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Received, InProgress),
                (Received, Completed),
                (Received, Rejected),
                (InProgress, Completed),
                (InProgress, Rejected)
            ]
        );
    }

    #[test]
    fn ids_are_canonical_uuids() {
        assert!(validate_id("0b7c6f1e-3a44-4d2e-9a57-1c2d3e4f5a6b").is_ok());
        for bad in ["", "0B7C6F1E-3A44-4D2E-9A57-1C2D3E4F5A6B", "0b7c6f1e3a444d2e9a571c2d3e4f5a6b", "x"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_complaint_alone_may_come_without_a_person() {
        let request = |kind| NewSubjectRequest {
            person_token: String::new(),
            kind,
            channel: "paper".into(),
            evidence: "in-2026/118".into(),
            received_on: Date::MIN,
            recorded_by: "spiffe://qupia/ns/default/sa/qupiactl".into(),
        };
        assert!(request(SubjectRequestKind::Complaint).validate().is_ok());
        assert!(matches!(
            request(SubjectRequestKind::Access).validate(),
            Err(SubjectError::Invalid { field: "person_token", .. })
        ));
    }
}
