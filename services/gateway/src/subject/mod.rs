//! The register of data-subject requests and complaints (policy clauses 3.1 and 5.2;
//! the Law of the Republic of Kazakhstan "On personal data and their protection").
//!
//! Each request (access, rectification, erasure, consent withdrawal, or a complaint)
//! is entered with the day it was received and a due date 30 working days later, by
//! Kazakhstan's calendar ([`HolidayCalendar`]). Its status is an append-only history
//! like the consent ledger's: every change is a new event naming who made it, and the
//! current status is the latest event, so the register shows who changed what when.
//!
//! Nothing here ever holds personal data: people appear only as opaque `qpp_` tokens,
//! references are references (an incoming-letter number, never a name or an address),
//! rejections are a fixed list of reasons, and no error repeats a value it was given.

mod calendar;
mod model;
mod store;

pub use calendar::{CalendarError, DEFAULT_HOLIDAYS, HolidayCalendar, parse_date, today_in_almaty};
pub use model::{
    NewSubjectRequest, RejectionReason, SubjectRequest, SubjectRequestEvent, SubjectRequestFilter, SubjectRequestKind,
    SubjectRequestStatus, SubjectRequestUpdate, WORKING_DAYS_TO_ANSWER,
};
pub(crate) use store::format_date;
pub use store::{SubjectRequestPage, SubjectRequestStore};

/// Why a register operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    /// Bad input; `field` names the request field, `reason` a lowercase phrase that
    /// never echoes the value.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no subject request has this id")]
    NotFound,
    /// Well formed, but the register's state refuses it (an illegal status change).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another change to the same request was recorded at the same moment.
    #[error("the subject request changed while this change was recorded; read it again and retry")]
    Conflict,
    /// The due date cannot be computed: the holiday calendar does not cover it.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

impl SubjectError {
    /// Takes a fixed phrase, so a caller cannot format the refused value into it by
    /// accident.
    pub(crate) fn invalid(field: &'static str, reason: &'static str) -> SubjectError {
        SubjectError::Invalid { field, reason: reason.to_owned() }
    }
}
