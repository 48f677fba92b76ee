//! Blind indexes: a keyed hash of a normalised e-mail or phone that lets the vault find a
//! person without decrypting anything, and that reveals nothing without the index key.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::dek::KEY_LEN;
use crate::framing::push_part;

/// Domain tag that keeps blind-index digests apart from every other HMAC in Qupia.
const INDEX_DOMAIN: &[u8] = b"qupia.blind_index.v1";

/// An HMAC-SHA256 key for blind indexes, separate from the encryption keys and versioned
/// so it can be rotated (lookups consult every version while the index is rebuilt).
pub struct BlindIndexKey {
    version: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl BlindIndexKey {
    /// Draws a new index key from the operating system's CSPRNG.
    pub fn generate(version: u32) -> BlindIndexKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        BlindIndexKey { version, bytes }
    }

    pub(crate) fn from_bytes(version: u32, bytes: Zeroizing<[u8; KEY_LEN]>) -> BlindIndexKey {
        BlindIndexKey { version, bytes }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// The digest of `normalized` (already normalised by the caller) for one use.
    ///
    /// `domain` separates uses (`"email"`, `"phone"`, `"request"`) so equal bytes in two
    /// uses never share a digest; domain and value are length-prefixed so no choice of
    /// strings makes two inputs encode alike.
    pub fn digest(&self, domain: &str, normalized: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_ref()).expect("hmac accepts keys of any length");
        let mut header = Vec::with_capacity(3 * 8 + INDEX_DOMAIN.len() + domain.len());
        push_part(&mut header, INDEX_DOMAIN);
        push_part(&mut header, domain.as_bytes());
        mac.update(&header);
        // The value is fed to the MAC directly rather than copied into a buffer, so no
        // extra copy of personal data is left behind in memory.
        mac.update(&(normalized.len() as u64).to_be_bytes());
        mac.update(normalized);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndexKey")
            .field("version", &self.version)
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_no_key_bytes;

    #[test]
    fn same_input_gives_the_same_digest() {
        let key = BlindIndexKey::generate(1);
        assert_eq!(key.digest("email", b"aigerim@example.kz"), key.digest("email", b"aigerim@example.kz"));
    }

    #[test]
    fn different_values_give_different_digests() {
        let key = BlindIndexKey::generate(1);
        assert_ne!(key.digest("email", b"aigerim@example.kz"), key.digest("email", b"aidar@example.kz"));
    }

    #[test]
    fn different_domain_gives_a_different_digest() {
        let key = BlindIndexKey::generate(1);
        assert_ne!(key.digest("email", b"+77011234567"), key.digest("phone", b"+77011234567"));
        // Moving bytes between domain and value must not produce the same input.
        assert_ne!(key.digest("ab", b"c"), key.digest("a", b"bc"));
    }

    #[test]
    fn different_key_version_gives_a_different_digest() {
        let v1 = BlindIndexKey::generate(1);
        let v2 = BlindIndexKey::generate(2);
        assert_eq!(v2.version(), 2);
        assert_ne!(v1.digest("phone", b"+77011234567"), v2.digest("phone", b"+77011234567"));
    }

    #[test]
    fn digest_is_hmac_sha256_of_the_framed_input() {
        // Pins the encoding: stored indexes must keep matching after any refactoring.
        let key = BlindIndexKey::from_bytes(1, Zeroizing::new([0x42; KEY_LEN]));
        let mut input = Vec::new();
        push_part(&mut input, b"qupia.blind_index.v1");
        push_part(&mut input, b"email");
        push_part(&mut input, b"a@b.kz");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[0x42; KEY_LEN]).expect("any length");
        mac.update(&input);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(key.digest("email", b"a@b.kz"), expected);
    }

    #[test]
    fn debug_output_does_not_contain_the_key() {
        let key = BlindIndexKey::generate(3);
        let printed = format!("{key:?} {key:#?}");
        assert!(printed.contains("version: 3"));
        assert_no_key_bytes(&printed, key.as_bytes());
    }
}
