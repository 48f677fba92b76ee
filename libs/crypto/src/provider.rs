//! The key-encryption-key (KEK) side of envelope encryption: what a key provider is and
//! the lifecycle of its key versions.

use std::fmt;
use std::sync::Arc;

use crate::framing::push_part;
use crate::{BlindIndexKey, DataKey, Error, TokenKey};

/// Domain tag at the start of the associated data of every wrapped DEK.
const DEK_DOMAIN: &[u8] = b"qupia.dek.v1";

/// A data key encrypted under one KEK version; what the vault stores per person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kek_version: u32,
    pub bytes: Vec<u8>,
}

/// Lifecycle of a key-encryption-key version (design invariant 8).
///
/// `Active`: the newest version, which takes every new wrap. `DecryptOnly`: an older
/// version that still unwraps DEKs not yet rewrapped. `Retired`: unwrap is refused, which
/// proves that nothing still depends on the version before it is destroyed. A destroyed
/// version is no longer in the provider at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    DecryptOnly,
    Retired,
}

impl KeyState {
    /// Whether DEKs wrapped under a version in this state may be unwrapped.
    pub fn can_unwrap(self) -> bool {
        matches!(self, KeyState::Active | KeyState::DecryptOnly)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The same spelling as the keyring file and the serde form.
        f.write_str(match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt_only",
            KeyState::Retired => "retired",
        })
    }
}

/// A source of key-encryption keys.
///
/// Wrapping and unwrapping happen inside the provider, so a provider backed by an HSM
/// never exposes the KEK. The vault shares one provider as `Arc<dyn KeyProvider>` across
/// all its tasks, hence `Send + Sync`.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// A short stable name for logs and metrics: `"keyring-file"`, later `"pkcs11"`.
    fn name(&self) -> &'static str;

    /// The version that new wraps use (the one `Active` version).
    fn current_version(&self) -> u32;

    /// Every version the provider still holds with its state, newest first.
    fn versions(&self) -> Vec<(u32, KeyState)>;

    /// Wraps `dek` under the current version. `context` is bound as associated data (the
    /// vault passes the person id), so a wrapped DEK moved to another person fails to
    /// unwrap.
    fn wrap(&self, dek: &DataKey, context: &[u8]) -> Result<WrappedKey, Error>;

    /// Unwraps a DEK wrapped under any version that is not retired, with the same
    /// `context` it was wrapped with.
    fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, Error>;
}

/// Everything the vault needs from its keys: KEK wrap/unwrap (KeyProvider) plus the
/// administrative changes and the HMAC keys.
///
/// The vault holds one `Arc<dyn KeyStore>`, so the keyring file and an HSM-backed store
/// are interchangeable behind it. Every change is durable in the store before it returns
/// and takes effect for wraps and lookups at once.
pub trait KeyStore: KeyProvider {
    /// Adds a new KEK version, makes it active and the previous active one decrypt-only.
    /// Returns the new version.
    fn rotate_kek(&self) -> Result<u32, Error>;

    /// Moves a non-active KEK version between decrypt-only and retired. Only a rotation
    /// makes a version active, and the active version can't be retired.
    fn set_kek_state(&self, version: u32, state: KeyState) -> Result<(), Error>;

    /// Destroys a retired KEK version for good: DEKs wrapped only under it become
    /// unreadable.
    fn destroy_kek(&self, version: u32) -> Result<(), Error>;

    /// The current blind-index key, for computing the index of a new value.
    fn blind_index_key(&self) -> Arc<BlindIndexKey>;

    /// Every blind-index key, newest first.
    fn blind_index_keys(&self) -> Vec<Arc<BlindIndexKey>>;

    /// Adds a new blind-index key version and makes it current. Returns the new version.
    fn rotate_blind_index_key(&self) -> Result<u32, Error>;

    /// Removes an old (not current) blind-index key version.
    fn remove_blind_index_key(&self, version: u32) -> Result<(), Error>;

    /// The key that tags tokens; it never changes.
    fn token_key(&self) -> &TokenKey;
}

/// The lifecycle rules every key store keeps: exactly one active KEK version and it is
/// the newest, no version 0, and at least one blind-index key with versions strictly
/// newest first. `keks` in ascending version order; the message completes "key set ...".
pub(crate) fn check_lifecycle(keks: &[(u32, KeyState)], index_versions: &[u32]) -> Result<(), &'static str> {
    let mut active = keks.iter().filter(|(_, state)| *state == KeyState::Active);
    let Some(&(active_version, _)) = active.next() else {
        return Err("has no active kek version");
    };
    if active.next().is_some() {
        return Err("has more than one active kek version");
    }
    // New wraps must go to the newest key: an older version becoming active again
    // would undo a rotation.
    if keks.iter().map(|(version, _)| *version).max() != Some(active_version) {
        return Err("has an active kek version that is not the newest");
    }
    if keks.iter().any(|(version, _)| *version == 0) {
        return Err("has a kek version 0");
    }
    if index_versions.is_empty() {
        return Err("has no blind-index key");
    }
    if !index_versions.windows(2).all(|pair| pair[0] > pair[1]) {
        return Err("has duplicate blind-index key versions");
    }
    Ok(())
}

/// Associated data for wrapping a DEK: the domain tag, the KEK version (so a wrapped key
/// relabelled with another version fails) and the caller's context, length-prefixed.
pub(crate) fn dek_aad(kek_version: u32, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_DOMAIN.len() + 4 + 8 + context.len());
    aad.extend_from_slice(DEK_DOMAIN);
    aad.extend_from_slice(&kek_version.to_be_bytes());
    push_part(&mut aad, context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_state_is_spelled_the_same_in_json_and_messages() {
        for state in [KeyState::Active, KeyState::DecryptOnly, KeyState::Retired] {
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, format!("\"{state}\""));
        }
    }

    #[test]
    fn only_retired_versions_refuse_unwrap() {
        assert!(KeyState::Active.can_unwrap());
        assert!(KeyState::DecryptOnly.can_unwrap());
        assert!(!KeyState::Retired.can_unwrap());
    }

    #[test]
    fn dek_aad_binds_version_and_context() {
        assert_ne!(dek_aad(1, b"person"), dek_aad(2, b"person"));
        assert_ne!(dek_aad(1, b"person-a"), dek_aad(1, b"person-b"));
        assert!(dek_aad(1, b"").starts_with(b"qupia.dek.v1\0\0\0\x01"));
    }
}
