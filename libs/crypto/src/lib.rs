//! Key handling for the vault: envelope encryption of field values under per-person data
//! keys ([`DataKey`]), key-encryption keys behind a [`KeyStore`] (the [`Keyring`] file, or
//! a PKCS#11 token through [`Pkcs11KeyStore`], where the KEKs never leave the HSM), HMAC blind indexes for lookups by e-mail or phone
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
mod pkcs11;
mod provider;
mod random;
#[cfg(test)]
mod testing;
mod token;

pub use blind_index::BlindIndexKey;
pub use dek::{DataKey, chunk_aad, slot_aad};
pub use error::Error;
pub use keyring::Keyring;
pub use pkcs11::{Pkcs11KeyStore, Pkcs11Options};
pub use provider::{KeyProvider, KeyState, KeyStore, WrappedKey};
pub use token::{Token, TokenError, TokenKey, TokenKind};
