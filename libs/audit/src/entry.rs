//! What an audit entry says, and the rules that keep personal values out of it.
//!
//! Every column is either an identity (caller, ids), a name chosen by code (operation,
//! purpose, field names) or the person's random token. The rules below are strict on
//! purpose: a value passed where a token or a name belongs (an e-mail, a phone number
//! with `+`, a name in any script) fails validation, and the append with it.

use serde::{Deserialize, Serialize};

use crate::chain::{self, LinkInput};
use crate::error::Error;

/// Longest caller identity accepted (a SPIFFE id is far shorter).
const MAX_CALLER: usize = 512;
/// Longest operation, purpose or field name.
const MAX_NAME: usize = 64;
/// Most field names in one entry.
const MAX_FIELDS: usize = 64;
/// Longest person token (a person token is 39 characters today).
const MAX_PERSON: usize = 128;
/// Longest consent, request, decision or trace id.
const MAX_ID: usize = 128;
/// Longest reason.
const MAX_REASON: usize = 1024;

/// Whether access was granted.
///
/// The default is `Denied`, as for any decision; the vault sets it explicitly on every
/// entry it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    #[default]
    Denied,
}

impl Outcome {
    /// The text stored in the `decision` column and covered by the hash.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Outcome> {
        match text {
            "allowed" => Some(Outcome::Allowed),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// The operations Qupia's services record, spelled once.
///
/// `NewEntry::operation` stays a string (any lowercase identifier is accepted), so a
/// service can record a new kind of operation without a release of this crate; this enum
/// is the catalogue that keeps the known ones spelled the same everywhere, which is what
/// makes `--operation reveal` find every reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Tokenize,
    Reveal,
    Lookup,
    Aggregate,
    Update,
    Erase,
    Export,
    Decision,
    DocumentUpload,
    DocumentDownload,
    DocumentList,
    DocumentDelete,
    KeyRotate,
    KeyRewrap,
    KeyRetire,
    KeyRewrapStarted,
    KeyRewrapFinished,
    KeyMinDecryptVersion,
    KeyDestroy,
    IndexKeyRotate,
    IndexReindexStarted,
    IndexReindexFinished,
    IndexKeyRemove,
    ErasureReplay,
}

impl Operation {
    pub const ALL: [Operation; 24] = [
        Operation::Tokenize,
        Operation::Reveal,
        Operation::Lookup,
        Operation::Aggregate,
        Operation::Update,
        Operation::Erase,
        Operation::Export,
        Operation::Decision,
        Operation::DocumentUpload,
        Operation::DocumentDownload,
        Operation::DocumentList,
        Operation::DocumentDelete,
        Operation::KeyRotate,
        Operation::KeyRewrap,
        Operation::KeyRetire,
        Operation::KeyRewrapStarted,
        Operation::KeyRewrapFinished,
        Operation::KeyMinDecryptVersion,
        Operation::KeyDestroy,
        Operation::IndexKeyRotate,
        Operation::IndexReindexStarted,
        Operation::IndexReindexFinished,
        Operation::IndexKeyRemove,
        Operation::ErasureReplay,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Tokenize => "tokenize",
            Operation::Reveal => "reveal",
            Operation::Lookup => "lookup",
            Operation::Aggregate => "aggregate",
            Operation::Update => "update",
            Operation::Erase => "erase",
            Operation::Export => "export",
            Operation::Decision => "decision",
            Operation::DocumentUpload => "document_upload",
            Operation::DocumentDownload => "document_download",
            Operation::DocumentList => "document_list",
            Operation::DocumentDelete => "document_delete",
            Operation::KeyRotate => "key_rotate",
            Operation::KeyRewrap => "key_rewrap",
            Operation::KeyRetire => "key_retire",
            Operation::KeyRewrapStarted => "key_rewrap_started",
            Operation::KeyRewrapFinished => "key_rewrap_finished",
            Operation::KeyMinDecryptVersion => "key_min_decrypt_version",
            Operation::KeyDestroy => "key_destroy",
            Operation::IndexKeyRotate => "index_key_rotate",
            Operation::IndexReindexStarted => "index_reindex_started",
            Operation::IndexReindexFinished => "index_reindex_finished",
            Operation::IndexKeyRemove => "index_key_remove",
            Operation::ErasureReplay => "erasure_replay",
        }
    }
}

impl From<Operation> for String {
    fn from(operation: Operation) -> String {
        operation.as_str().to_owned()
    }
}

/// An entry to append. `seq`, `at_ms` and the hashes are the ledger's to assign.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEntry {
    /// The caller's identity from its certificate, e.g. `spiffe://qupia/ns/prod/sa/gateway`.
    pub caller: String,
    /// A lowercase identifier, normally one of [`Operation`].
    pub operation: String,
    /// A lowercase identifier, or empty when the operation has no purpose.
    pub purpose: String,
    /// The person's token (`qpp_...`), or empty.
    pub person: String,
    /// Names of the fields involved (lowercase identifiers), never their values.
    pub fields: Vec<String>,
    pub outcome: Outcome,
    /// Why, in printable ASCII without `@` or `+`: written by code, never interpolating
    /// a value.
    pub reason: String,
    pub consent_id: String,
    /// The legal-disclosure request, if any.
    pub request_id: String,
    /// The gateway's decision id.
    pub decision_id: String,
    pub trace_id: String,
}

impl NewEntry {
    /// Checks every column; the first broken rule is the error.
    pub fn validate(&self) -> Result<(), Error> {
        if self.caller.is_empty() || self.caller.len() > MAX_CALLER || !self.caller.bytes().all(is_visible_ascii) {
            return Err(Error::Invalid("caller must be a non-empty identity of visible ascii characters"));
        }
        if !is_name(&self.operation) {
            return Err(Error::Invalid("operation must be a lowercase identifier such as reveal"));
        }
        if !self.purpose.is_empty() && !is_name(&self.purpose) {
            return Err(Error::Invalid("purpose must be empty or a lowercase identifier"));
        }
        if !self.person.is_empty() && !is_token(&self.person) {
            return Err(Error::Invalid("person must be empty or a qupia token such as qpp_..."));
        }
        if self.fields.len() > MAX_FIELDS || !self.fields.iter().all(|f| is_name(f)) {
            return Err(Error::Invalid("fields must be lowercase field names, not values"));
        }
        if self.reason.len() > MAX_REASON || !self.reason.bytes().all(is_reason_byte) {
            return Err(Error::Invalid("reason must be at most 1024 printable ascii characters without '@' or '+'"));
        }
        for id in [&self.consent_id, &self.request_id, &self.decision_id, &self.trace_id] {
            if id.len() > MAX_ID || !id.bytes().all(is_id_byte) {
                return Err(Error::Invalid(
                    "consent, request, decision and trace ids must be short ascii of letters, \
                     digits and . _ : / -",
                ));
            }
        }
        Ok(())
    }

    /// The comma-joined field names as stored (names cannot contain a comma).
    pub(crate) fn fields_text(&self) -> String {
        self.fields.join(",")
    }
}

/// A stored entry: what was appended, where it sits in the chain, and its links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub caller: String,
    pub operation: String,
    pub purpose: String,
    pub person: String,
    pub fields: Vec<String>,
    pub outcome: Outcome,
    pub reason: String,
    pub consent_id: String,
    pub request_id: String,
    pub decision_id: String,
    pub trace_id: String,
    /// Hex of the previous entry's hash (64 zeros for seq 1).
    pub prev_hash: String,
    /// Hex of this entry's hash.
    pub hash: String,
}

impl Entry {
    /// The hash this entry's contents and `prev_hash` call for, recomputed; an entry is
    /// intact when it equals `hash`. Lets an exported ledger be checked offline. `None`
    /// when `prev_hash` is not 32 bytes of hex.
    pub fn computed_hash(&self) -> Option<[u8; 32]> {
        let prev = hash32_from_hex(&self.prev_hash)?;
        let fields = self.fields.join(",");
        Some(chain::link_hash(
            &prev,
            &LinkInput {
                seq: self.seq,
                at_ms: self.at_ms,
                caller: &self.caller,
                operation: &self.operation,
                purpose: &self.purpose,
                person: &self.person,
                fields: &fields,
                decision: self.outcome.as_str(),
                reason: &self.reason,
                consent_id: &self.consent_id,
                request_id: &self.request_id,
                decision_id: &self.decision_id,
                trace_id: &self.trace_id,
            },
        ))
    }
}

/// A commitment to the chain up to `seq`: the hash of entry `seq` (64 zeros for 0).
///
/// Kept in `audit_checkpoints` and, more importantly, outside the database (the CLI
/// exports it as one JSON line), where whoever can rewrite the database cannot reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// Hex of the hash of entry `seq`.
    pub hash: String,
    pub at_ms: i64,
}

/// What `query` returns: entries matching every filter that is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub person: Option<String>,
    pub caller: Option<String>,
    pub purpose: Option<String>,
    pub operation: Option<String>,
    /// Entries at or after this time (unix milliseconds).
    pub from_ms: Option<i64>,
    /// Entries strictly before this time (unix milliseconds).
    pub to_ms: Option<i64>,
}

pub(crate) fn hash32_from_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// `[a-z][a-z0-9_]*`, at most [`MAX_NAME`] bytes.
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && bytes.len() <= MAX_NAME
        && bytes.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// The text form of a Qupia token (`qupia_crypto::Token`): `qp`, a kind letter, `_`, then
/// base64url. Only the shape is checked; the tag needs the token key, which the ledger
/// has no business holding. The prefix is what keeps a name like `Mary-Kate` out.
fn is_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() <= MAX_PERSON
        && matches!(bytes, [b'q', b'p', b'a'..=b'z', b'_', rest @ ..]
            if !rest.is_empty() && rest.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// ASCII without spaces or control characters.
fn is_visible_ascii(byte: u8) -> bool {
    byte.is_ascii_graphic()
}

/// What opaque ids (uuids, hex trace ids, `dec-42`, `urn:...`) are made of; no `@` or
/// `+`, so an e-mail or an E.164 phone cannot pass for one.
fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'/' | b'-')
}

/// Printable ASCII: no control character, so a reason cannot forge a line in a text
/// export. No `@` or `+` and no other script either: a guard against code interpolating
/// an e-mail, an E.164 phone or a Cyrillic name into a reason — not a proof, since a
/// name in Latin letters looks like any other word.
fn is_reason_byte(byte: u8) -> bool {
    (byte.is_ascii_graphic() || byte == b' ') && byte != b'@' && byte != b'+'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> NewEntry {
        NewEntry {
            caller: "spiffe://qupia/ns/prod/sa/gateway".into(),
            operation: Operation::Reveal.into(),
            purpose: "service_delivery".into(),
            person: "qpp_0123456789abcdefABCDEF_-xyz".into(),
            fields: vec!["email".into(), "phone".into()],
            outcome: Outcome::Allowed,
            reason: "allowed by policy v3: service_delivery".into(),
            consent_id: String::new(),
            request_id: String::new(),
            decision_id: "dec-42".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        }
    }

    #[test]
    fn a_well_formed_entry_passes() {
        assert!(valid().validate().is_ok());
        let minimal = NewEntry {
            caller: "spiffe://qupia/ns/prod/sa/vault".into(),
            operation: "key_rotate".into(),
            ..NewEntry::default()
        };
        assert!(minimal.validate().is_ok());
    }

    #[test]
    fn every_known_operation_is_a_valid_name() {
        for operation in Operation::ALL {
            assert!(is_name(operation.as_str()), "{operation:?}");
        }
    }

    /// The test people's values, put where a token, a name or an id belongs, are refused:
    /// a mistake in a caller cannot write personal data into the ledger.
    #[test]
    fn personal_values_are_refused_where_names_and_tokens_belong() {
        let values = ["aigerim.nurlanova@mail.kz", "+77011234567", "77011234567", "Нұрланова", "Mary-Kate", "O'Connor"];
        for value in values {
            let attempts = [
                NewEntry { person: value.into(), ..valid() },
                NewEntry { fields: vec![value.into()], ..valid() },
                NewEntry { purpose: value.into(), ..valid() },
                NewEntry { operation: value.into(), ..valid() },
            ];
            for (i, attempt) in attempts.iter().enumerate() {
                assert!(attempt.validate().is_err(), "column {i} took {value}");
            }
        }
        // Ids are opaque: digits or Latin letters are fine there, e-mails, E.164 phones
        // and other scripts are not.
        for value in ["aigerim.nurlanova@mail.kz", "+77011234567", "Нұрланова"] {
            let attempt = NewEntry { consent_id: format!("c-{value}"), ..valid() };
            assert!(attempt.validate().is_err(), "an id took {value}");
        }
    }

    /// A reason is free text, so only the shapes that give a value away are refused: an
    /// e-mail, an E.164 phone, a name in another script.
    #[test]
    fn reasons_refuse_emails_phones_and_other_scripts() {
        for value in ["aigerim.nurlanova@mail.kz", "+77011234567", "Нұрланова", "Пётр"] {
            let entry = NewEntry { reason: format!("no consent for {value}"), ..valid() };
            assert!(entry.validate().is_err(), "reason took {value}");
        }
    }

    #[test]
    fn malformed_columns_are_refused() {
        let bad = [
            NewEntry { caller: String::new(), ..valid() },
            NewEntry { caller: "spiffe://qupia/ns/a b".into(), ..valid() },
            NewEntry { operation: String::new(), ..valid() },
            NewEntry { operation: "Reveal".into(), ..valid() },
            NewEntry { purpose: "service-delivery".into(), ..valid() },
            NewEntry { fields: vec!["email,phone".into()], ..valid() },
            NewEntry { fields: vec![String::new()], ..valid() },
            NewEntry { reason: "line one\nforged line".into(), ..valid() },
            NewEntry { reason: "x".repeat(MAX_REASON + 1), ..valid() },
            NewEntry { trace_id: "a\tb".into(), ..valid() },
            NewEntry { consent_id: "c".repeat(MAX_ID + 1), ..valid() },
            NewEntry { person: format!("qpp_{}", "p".repeat(MAX_PERSON)), ..valid() },
            NewEntry { person: "qpp_".into(), ..valid() },
            NewEntry { person: "xyz_abc".into(), ..valid() },
        ];
        for entry in bad {
            assert!(entry.validate().is_err(), "{entry:?}");
        }
    }

    #[test]
    fn the_default_outcome_is_denied() {
        assert_eq!(Outcome::default(), Outcome::Denied);
    }

    #[test]
    fn a_checkpoint_is_one_small_json_line() {
        let checkpoint = Checkpoint { seq: 7, hash: hex::encode([0xabu8; 32]), at_ms: 1_700_000_000_000 };
        let line = serde_json::to_string(&checkpoint).expect("serialize");
        assert!(!line.contains('\n'));
        assert_eq!(line, format!(r#"{{"seq":7,"hash":"{}","at_ms":1700000000000}}"#, "ab".repeat(32)));
        let back: Checkpoint = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, checkpoint);
    }
}
