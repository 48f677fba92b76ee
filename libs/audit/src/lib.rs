//! The audit ledger: a tamper-evident, append-only log of every decision to reveal
//! personal data (allowed or denied), kept in the vault's database and written by the
//! vault before any plaintext leaves it. If it cannot be written, the reveal fails.
//!
//! Entries are hash-chained (see `chain.rs`): editing, deleting or reordering one breaks
//! the chain, and [`AuditLedger::verify`] names the first entry where it breaks.
//! Checkpoints, also kept outside the database, catch what a chain alone cannot: a cut-off
//! tail, or history rewritten with recomputed hashes.
//!
//! This crate must never hold a personal value: an entry carries the caller's identity,
//! names of operations, purposes and fields, the person's random token and ids — never a
//! name, e-mail, phone, document byte, or an unkeyed hash of one. [`NewEntry::validate`]
//! refuses text shaped like a value where a token or a name belongs.

#![forbid(unsafe_code)]

mod chain;
mod entry;
mod error;
mod ledger;
mod verify;

pub use entry::{Checkpoint, Entry, Filter, NewEntry, Operation, Outcome};
pub use error::Error;
pub use ledger::{AuditLedger, Backend, MAX_QUERY_LIMIT};
pub use verify::{Problem, VerifyReport};
