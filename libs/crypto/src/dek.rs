//! Per-person data keys and the AES-256-GCM sealing of field values under them.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;
use crate::framing::push_part;

pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Domain tag of [`slot_aad`]; the version lets a future layout never collide with this one.
const SLOT_DOMAIN: &[u8] = b"qupia.slot.v1";
/// Domain tag of [`chunk_aad`], so a document chunk can never pass for a field value.
const CHUNK_DOMAIN: &[u8] = b"qupia.document-chunk.v1";

/// A person's data-encryption key (DEK): 32 random bytes that encrypt that person's field
/// values and nothing else.
///
/// Destroying the wrapped form of this key is how a person is erased (crypto-shredding),
/// so the key exists unwrapped only in memory, is zeroized on drop and never printed.
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl DataKey {
    /// Draws a new key from the thread's CSPRNG (seeded from the operating system's;
    /// see `random.rs`).
    pub fn generate() -> DataKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        crate::random::fill(bytes.as_mut());
        DataKey { bytes }
    }

    /// Rebuilds a key from unwrapped bytes; only key providers do this.
    pub(crate) fn from_slice(bytes: &[u8]) -> Result<DataKey, Error> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(Error::Malformed("unwrapped data key has the wrong length"));
        }
        key.copy_from_slice(bytes);
        Ok(DataKey { bytes: key })
    }

    /// The raw key, for a provider to wrap.
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Encrypts `plaintext` with AES-256-GCM under a fresh random 96-bit nonce, binding
    /// `aad` (normally [`slot_aad`]). The output is `nonce || ciphertext || tag`.
    ///
    /// # Panics
    ///
    /// If `plaintext` or `aad` exceeds AES-GCM's limit of about 64 GiB; callers stream
    /// large documents in chunks far below it.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_with_key(&self.bytes, plaintext, aad)
    }

    /// Decrypts what [`DataKey::seal`] produced with the same `aad`.
    ///
    /// Fails with [`Error::Decrypt`] if the bytes, the associated data or the key differ
    /// from the sealing, and with [`Error::Malformed`] if the input is too short to hold a
    /// nonce and a tag. The plaintext comes back in a buffer that zeroizes itself.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        open_with_key(&self.bytes, sealed, aad)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Associated data binding a field ciphertext to its slot, so a ciphertext moved to
/// another person, field or key version fails to open.
///
/// The encoding is the domain tag `qupia.slot.v1` followed by the person id, the field
/// name and the DEK version, each length-prefixed, so distinct slots never share bytes.
pub fn slot_aad(person_id: &[u8; 16], field: &str, dek_version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(4 * 8 + SLOT_DOMAIN.len() + 16 + field.len() + 4);
    push_part(&mut aad, SLOT_DOMAIN);
    push_part(&mut aad, person_id);
    push_part(&mut aad, field.as_bytes());
    push_part(&mut aad, &dek_version.to_be_bytes());
    aad
}

/// Associated data binding one chunk of a document to its place: the person, the
/// document, the DEK version, the chunk's index and whether it is the last one (the
/// STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, with a random nonce
/// per chunk and the position carried in the associated data instead).
///
/// A chunk that was changed fails to open; one moved to another index or document fails
/// because its index or document differs; a stream cut short fails because its new last
/// chunk was sealed as "not last"; a chunk appended after the last fails because the old
/// last chunk says it is the last. Each part is length-prefixed after the domain tag
/// `qupia.document-chunk.v1`, like [`slot_aad`], so the two never share bytes.
pub fn chunk_aad(person_id: &[u8; 16], document_id: &[u8; 16], dek_version: u32, index: u32, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(6 * 8 + CHUNK_DOMAIN.len() + 16 + 16 + 4 + 4 + 1);
    push_part(&mut aad, CHUNK_DOMAIN);
    push_part(&mut aad, person_id);
    push_part(&mut aad, document_id);
    push_part(&mut aad, &dek_version.to_be_bytes());
    push_part(&mut aad, &index.to_be_bytes());
    push_part(&mut aad, &[u8::from(last)]);
    aad
}

/// AES-256-GCM with a random nonce; shared by data keys and the keyring's KEKs.
pub(crate) fn seal_with_key(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    // A random 96-bit nonce per message keeps the collision chance negligible for far more
    // messages than one person's key will ever seal.
    let mut nonce = [0u8; NONCE_LEN];
    crate::random::fill(&mut nonce);

    // Encrypt in place in the output buffer so the plaintext is copied exactly once, into
    // memory that holds ciphertext by the time this function returns.
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    match cipher.encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..]) {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            out
        }
        Err(_) => {
            // The buffer still holds plaintext; clear it before giving up.
            out.zeroize();
            panic!("input exceeds the aes-gcm length limit");
        }
    }
}

/// Inverse of [`seal_with_key`].
pub(crate) fn open_with_key(key: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Malformed("sealed value is shorter than its nonce and tag"));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buffer, Tag::from_slice(tag))
        .map_err(|_| Error::Decrypt)?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_no_key_bytes;

    const PERSON: [u8; 16] = [7; 16];
    const OTHER_PERSON: [u8; 16] = [8; 16];

    #[test]
    fn sealed_value_opens_to_the_same_plaintext() {
        let key = DataKey::generate();
        let aad = slot_aad(&PERSON, "email", 1);
        let sealed = key.seal(b"aigerim@example.kz", &aad);
        let opened = key.open(&sealed, &aad).expect("opens with its own slot");
        assert_eq!(opened.as_slice(), b"aigerim@example.kz");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let key = DataKey::generate();
        let sealed = key.seal(b"", b"aad");
        assert_eq!(sealed.len(), NONCE_LEN + TAG_LEN);
        assert!(key.open(&sealed, b"aad").expect("opens").is_empty());
    }

    #[test]
    fn sealing_the_same_value_twice_gives_different_bytes() {
        let key = DataKey::generate();
        let aad = slot_aad(&PERSON, "phone", 1);
        let first = key.seal(b"+77011234567", &aad);
        let second = key.seal(b"+77011234567", &aad);
        assert_ne!(first, second, "a fresh nonce must be drawn for every seal");
        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
    }

    #[test]
    fn ciphertext_moved_to_another_slot_fails_to_open() {
        let key = DataKey::generate();
        let sealed = key.seal(b"Aigerim", &slot_aad(&PERSON, "name.given", 1));
        for (what, aad) in [
            ("other person", slot_aad(&OTHER_PERSON, "name.given", 1)),
            ("other field", slot_aad(&PERSON, "name.family", 1)),
            ("other dek version", slot_aad(&PERSON, "name.given", 2)),
        ] {
            assert!(matches!(key.open(&sealed, &aad), Err(Error::Decrypt)), "{what} must not open");
        }
    }

    #[test]
    fn another_key_fails_to_open() {
        let aad = slot_aad(&PERSON, "email", 1);
        let sealed = DataKey::generate().seal(b"secret", &aad);
        assert!(matches!(DataKey::generate().open(&sealed, &aad), Err(Error::Decrypt)));
    }

    #[test]
    fn any_flipped_bit_fails_to_open() {
        let key = DataKey::generate();
        let aad = slot_aad(&PERSON, "email", 1);
        let sealed = key.seal(b"aigerim@example.kz", &aad);
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut tampered = sealed.clone();
                tampered[byte] ^= 1 << bit;
                assert!(
                    matches!(key.open(&tampered, &aad), Err(Error::Decrypt)),
                    "flipping bit {bit} of byte {byte} must be detected"
                );
            }
        }
    }

    #[test]
    fn truncated_input_fails_without_panicking() {
        let key = DataKey::generate();
        let aad = slot_aad(&PERSON, "email", 1);
        let sealed = key.seal(b"aigerim@example.kz", &aad);
        for len in 0..=NONCE_LEN + TAG_LEN {
            assert!(key.open(&sealed[..len], &aad).is_err(), "length {len}");
        }
        // Cutting anywhere in a longer value is caught by the tag.
        for len in NONCE_LEN + TAG_LEN..sealed.len() {
            assert!(matches!(key.open(&sealed[..len], &aad), Err(Error::Decrypt)));
        }
    }

    #[test]
    fn slot_aad_does_not_collide_when_parts_shift() {
        // A field name that ends in what looks like a version must not alias another slot.
        assert_ne!(slot_aad(&PERSON, "a", 1), slot_aad(&PERSON, "a\0", 1));
        assert_ne!(slot_aad(&PERSON, "email", 1), slot_aad(&PERSON, "email", 256));
        assert!(slot_aad(&PERSON, "email", 1).starts_with(&[0, 0, 0, 0, 0, 0, 0, 13]));
    }

    const DOCUMENT: [u8; 16] = [9; 16];
    const OTHER_DOCUMENT: [u8; 16] = [10; 16];

    #[test]
    fn a_chunk_opens_only_in_its_own_place() {
        let key = DataKey::generate();
        let sealed = key.seal(b"%PDF-1.7 chunk", &chunk_aad(&PERSON, &DOCUMENT, 1, 3, false));
        let opened = key.open(&sealed, &chunk_aad(&PERSON, &DOCUMENT, 1, 3, false)).expect("opens in place");
        assert_eq!(opened.as_slice(), b"%PDF-1.7 chunk");
        for (what, aad) in [
            ("other person", chunk_aad(&OTHER_PERSON, &DOCUMENT, 1, 3, false)),
            ("other document", chunk_aad(&PERSON, &OTHER_DOCUMENT, 1, 3, false)),
            ("other dek version", chunk_aad(&PERSON, &DOCUMENT, 2, 3, false)),
            ("other index (reordered)", chunk_aad(&PERSON, &DOCUMENT, 1, 4, false)),
            ("taken for the last (truncated)", chunk_aad(&PERSON, &DOCUMENT, 1, 3, true)),
        ] {
            assert!(matches!(key.open(&sealed, &aad), Err(Error::Decrypt)), "{what} must not open");
        }
    }

    #[test]
    fn chunk_aad_differs_from_slot_aad_and_in_every_part() {
        let base = chunk_aad(&PERSON, &DOCUMENT, 1, 0, true);
        assert!(base.starts_with(&(CHUNK_DOMAIN.len() as u64).to_be_bytes()));
        assert_ne!(base, slot_aad(&PERSON, "document", 1));
        let variants = [
            chunk_aad(&OTHER_PERSON, &DOCUMENT, 1, 0, true),
            chunk_aad(&PERSON, &OTHER_DOCUMENT, 1, 0, true),
            chunk_aad(&PERSON, &DOCUMENT, 2, 0, true),
            chunk_aad(&PERSON, &DOCUMENT, 1, 1, true),
            chunk_aad(&PERSON, &DOCUMENT, 1, 0, false),
        ];
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(&base, variant, "variant {i}");
        }
        // The index and the version are not interchangeable.
        assert_ne!(chunk_aad(&PERSON, &DOCUMENT, 1, 2, false), chunk_aad(&PERSON, &DOCUMENT, 2, 1, false));
    }

    #[test]
    fn debug_output_does_not_contain_the_key() {
        let key = DataKey::generate();
        let printed = format!("{key:?} {key:#?}");
        assert!(printed.contains("DataKey(<redacted>)"));
        assert_no_key_bytes(&printed, key.as_bytes());
    }

    #[test]
    fn error_messages_carry_no_plaintext() {
        let key = DataKey::generate();
        let aad = slot_aad(&PERSON, "email", 1);
        let mut sealed = key.seal(b"aigerim@example.kz", &aad);
        sealed[NONCE_LEN] ^= 1;
        let error = key.open(&sealed, &aad).expect_err("tampered");
        assert_eq!(error.to_string(), "ciphertext failed authentication");
    }
}
