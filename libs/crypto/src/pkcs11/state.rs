//! The key set's state object: one PKCS#11 data object in the token that records which
//! KEK versions exist and in which lifecycle state, and the blind-index keys and token
//! key sealed under the token's seal key.
//!
//! It is versioned JSON like the keyring file, but holds no key in clear: the KEKs are
//! separate key objects found by label, and the HMAC keys are AES-GCM ciphertext that
//! only the token can open.
//!
//! A data object's value can't be changed once it exists (SoftHSM2 answers
//! CKR_ATTRIBUTE_READ_ONLY, as the standard allows), so each change creates a new state
//! object with the next `generation` and then destroys the old one. Creating it is the
//! commit point; a reader takes the highest generation, so a crash between the two
//! steps leaves an extra object but never an older state.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::KeyState;
use crate::framing::push_part;

const FORMAT: u32 = 1;
/// Domain tag of the associated data of every sealed HMAC key.
const SEALED_DOMAIN: &[u8] = b"qupia.pkcs11.sealed.v1";

/// What the state object says, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct State {
    /// Counts changes; the object with the highest generation is the state.
    pub generation: u64,
    /// Ascending by version.
    pub keks: Vec<(u32, KeyState)>,
    /// Newest first: (version, sealed key).
    pub index_keys: Vec<(u32, Vec<u8>)>,
    pub token_key: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateV1 {
    format: u32,
    generation: u64,
    keks: Vec<KekRecord>,
    index_keys: Vec<SealedRecord>,
    token_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekRecord {
    version: u32,
    state: KeyState,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedRecord {
    version: u32,
    sealed: String,
}

impl State {
    pub(super) fn encode(&self) -> Vec<u8> {
        let file = StateV1 {
            format: FORMAT,
            generation: self.generation,
            keks: self.keks.iter().map(|(version, state)| KekRecord { version: *version, state: *state }).collect(),
            index_keys: self
                .index_keys
                .iter()
                .map(|(version, sealed)| SealedRecord { version: *version, sealed: STANDARD.encode(sealed) })
                .collect(),
            token_key: STANDARD.encode(&self.token_key),
        };
        serde_json::to_vec(&file).expect("the state serializes")
    }

    /// Parses the object's value. The problem completes "key set state object ...".
    pub(super) fn decode(bytes: &[u8]) -> Result<State, String> {
        let file: StateV1 = serde_json::from_slice(bytes).map_err(|err| format!("is not valid: {err}"))?;
        if file.format != FORMAT {
            return Err(format!("has format {}, but this version of Qupia reads format {FORMAT}", file.format));
        }
        let decode = |text: &str, what: &str| STANDARD.decode(text).map_err(|_| format!("has a malformed {what}"));
        let mut keks: Vec<(u32, KeyState)> = file.keks.iter().map(|record| (record.version, record.state)).collect();
        keks.sort_by_key(|(version, _)| *version);
        if keks.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return Err("lists a kek version twice".to_owned());
        }
        let index_keys = file
            .index_keys
            .iter()
            .map(|record| Ok((record.version, decode(&record.sealed, "sealed blind-index key")?)))
            .collect::<Result<_, String>>()?;
        Ok(State {
            generation: file.generation,
            keks,
            index_keys,
            token_key: decode(&file.token_key, "sealed token key")?,
        })
    }
}

/// Associated data of a sealed blind-index key: binds the version, so a sealed key can't
/// be relabelled as another version.
pub(super) fn index_key_aad(version: u32) -> Vec<u8> {
    sealed_aad(b"blind_index", version)
}

/// Associated data of the sealed token key.
pub(super) fn token_key_aad() -> Vec<u8> {
    sealed_aad(b"token", 0)
}

fn sealed_aad(kind: &[u8], version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(3 * 8 + SEALED_DOMAIN.len() + kind.len() + 4);
    push_part(&mut aad, SEALED_DOMAIN);
    push_part(&mut aad, kind);
    push_part(&mut aad, &version.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            generation: 7,
            keks: vec![(1, KeyState::Retired), (2, KeyState::DecryptOnly), (3, KeyState::Active)],
            index_keys: vec![(2, vec![2; 60]), (1, vec![1; 60])],
            token_key: vec![9; 60],
        }
    }

    #[test]
    fn state_round_trips() {
        let state = sample();
        assert_eq!(State::decode(&state.encode()).expect("decodes"), state);
    }

    #[test]
    fn state_is_versioned_json_with_snake_case_states() {
        let text = String::from_utf8(sample().encode()).expect("utf-8");
        assert!(text.starts_with("{\"format\":1,\"generation\":7,"), "{text}");
        assert!(text.contains("\"decrypt_only\""), "{text}");
    }

    #[test]
    fn other_formats_unknown_fields_and_duplicates_are_refused() {
        let text = String::from_utf8(sample().encode()).expect("utf-8");
        let future = text.replace("\"format\":1", "\"format\":2");
        assert!(State::decode(future.as_bytes()).expect_err("format 2").contains("format 2"));
        let extra = text.replacen('{', "{\"extra\":1,", 1);
        assert!(State::decode(extra.as_bytes()).is_err());
        let twice =
            text.replace("{\"version\":2,\"state\":\"decrypt_only\"}", "{\"version\":1,\"state\":\"decrypt_only\"}");
        assert_eq!(State::decode(twice.as_bytes()).expect_err("duplicate"), "lists a kek version twice");
    }

    #[test]
    fn sealed_aad_separates_kinds_and_versions() {
        assert_ne!(index_key_aad(1), index_key_aad(2));
        assert_ne!(index_key_aad(0), token_key_aad());
    }
}
