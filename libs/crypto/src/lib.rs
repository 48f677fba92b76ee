//! Key handling for the vault: envelope encryption of field values under per-person data
//! keys ([`DataKey`]), key-encryption keys behind a [`KeyProvider`] (the [`Keyring`] file
//! today, an HSM later), HMAC blind indexes for lookups by e-mail or phone
//! ([`BlindIndexKey`]) and tamper-evident opaque tokens ([`Token`]). Key material never
//! leaves this crate except wrapped: every key type zeroizes its bytes on drop, none is
//! `Clone` without need, every `Debug` output is redacted, and no error message carries a
//! key byte or a plaintext byte.

#![forbid(unsafe_code)]

mod blind_index;
mod dek;
mod error;
mod framing;
mod keyring;
mod provider;
#[cfg(test)]
mod testing;
mod token;

pub use blind_index::BlindIndexKey;
pub use dek::{DataKey, chunk_aad, slot_aad};
pub use error::Error;
pub use keyring::Keyring;
pub use provider::{KeyProvider, KeyState, WrappedKey};
pub use token::{Token, TokenError, TokenKey, TokenKind};
