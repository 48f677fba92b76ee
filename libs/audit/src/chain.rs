//! The hash that links one entry to the one before it.
//!
//! `hash = SHA-256(DOMAIN_TAG || prev_hash || seq || at_ms || caller || operation ||
//! purpose || person || fields || decision || reason || consent_id || request_id ||
//! decision_id || trace_id)` where `seq` and `at_ms` are 8-byte big-endian two's
//! complement and every text column is its UTF-8 bytes preceded by their length as an
//! 8-byte big-endian number. `fields` is the comma-joined text exactly as stored and
//! `decision` is `allowed` or `denied`. The length prefixes make the encoding
//! unambiguous: no two different rows hash the same bytes, so moving text from one column
//! to its neighbour changes the hash. An independent verifier needs nothing but this
//! paragraph and SHA-256.
//!
//! Changing any of this invalidates every ledger already written: the known-answer test
//! below is there to make that impossible to do by accident.

use sha2::{Digest, Sha256};

/// Separates ledger hashes from every other SHA-256 in Qupia; the version lets a future
/// encoding coexist with this one.
pub(crate) const DOMAIN_TAG: &[u8] = b"qupia.audit.v1";

/// The `prev_hash` of entry 1, and the head hash of an empty ledger.
pub(crate) const GENESIS: [u8; 32] = [0u8; 32];

/// Every column of an entry that the hash covers, as stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkInput<'a> {
    pub seq: i64,
    pub at_ms: i64,
    pub caller: &'a str,
    pub operation: &'a str,
    pub purpose: &'a str,
    pub person: &'a str,
    pub fields: &'a str,
    pub decision: &'a str,
    pub reason: &'a str,
    pub consent_id: &'a str,
    pub request_id: &'a str,
    pub decision_id: &'a str,
    pub trace_id: &'a str,
}

/// The hash of the entry `input` chained after `prev_hash`.
pub(crate) fn link_hash(prev_hash: &[u8; 32], input: &LinkInput<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN_TAG);
    hasher.update(prev_hash);
    hasher.update(input.seq.to_be_bytes());
    hasher.update(input.at_ms.to_be_bytes());
    for text in [
        input.caller,
        input.operation,
        input.purpose,
        input.person,
        input.fields,
        input.decision,
        input.reason,
        input.consent_id,
        input.request_id,
        input.decision_id,
        input.trace_id,
    ] {
        // usize -> u64 is lossless on every platform Rust supports.
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LinkInput<'static> {
        LinkInput {
            seq: 1,
            at_ms: 1_700_000_000_000,
            caller: "spiffe://qupia/ns/prod/sa/gateway",
            operation: "reveal",
            purpose: "service_delivery",
            person: "qpp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            fields: "email,phone",
            decision: "allowed",
            reason: "policy allows service_delivery",
            consent_id: "",
            request_id: "",
            decision_id: "d-1",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        }
    }

    /// Pins the encoding: if this fails, every existing ledger would fail to verify. The
    /// expected value was computed by an independent implementation of the paragraph at
    /// the top of this file (Python's hashlib and struct), not by this code.
    #[test]
    fn known_answer() {
        assert_eq!(
            hex::encode(link_hash(&GENESIS, &sample())),
            "6d11671b071a757ba8f8726bfa5780833ffc430d3624035a61a8b8025db1cb75"
        );
    }

    #[test]
    fn every_column_and_the_link_count() {
        let base = link_hash(&GENESIS, &sample());
        assert_ne!(base, link_hash(&[1u8; 32], &sample()), "prev_hash");
        let variants: [LinkInput<'static>; 13] = [
            LinkInput { seq: 2, ..sample() },
            LinkInput { at_ms: 1, ..sample() },
            LinkInput { caller: "spiffe://qupia/ns/prod/sa/marketing", ..sample() },
            LinkInput { operation: "lookup", ..sample() },
            LinkInput { purpose: "statistics", ..sample() },
            LinkInput { person: "qpp_B", ..sample() },
            LinkInput { fields: "email", ..sample() },
            LinkInput { decision: "denied", ..sample() },
            LinkInput { reason: "", ..sample() },
            LinkInput { consent_id: "c-1", ..sample() },
            LinkInput { request_id: "r-1", ..sample() },
            LinkInput { decision_id: "d-2", ..sample() },
            LinkInput { trace_id: "", ..sample() },
        ];
        for variant in &variants {
            assert_ne!(base, link_hash(&GENESIS, variant), "{variant:?}");
        }
    }

    /// Text moved across a column boundary must not keep the hash: that is what the
    /// length prefixes are for.
    #[test]
    fn column_boundaries_are_unambiguous() {
        let a = LinkInput { consent_id: "ab", request_id: "c", ..sample() };
        let b = LinkInput { consent_id: "a", request_id: "bc", ..sample() };
        assert_ne!(link_hash(&GENESIS, &a), link_hash(&GENESIS, &b));
    }
}
