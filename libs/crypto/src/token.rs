//! Opaque tokens that stand for a person, a field value or a document everywhere outside
//! the vault.
//!
//! A token is 128 random bits, so it says nothing about the value, the person or the time
//! and cannot be enumerated. A truncated HMAC tag under the token key rides along, so a
//! malformed or forged token is refused by [`Token::parse`] before any database work.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::dek::KEY_LEN;
use crate::framing::push_part;

const ID_LEN: usize = 16;
/// 80 bits of tag: forging one needs about 2^80 online guesses, each refused by the vault.
const TAG_LEN: usize = 10;
const RAW_LEN: usize = ID_LEN + TAG_LEN;
const PREFIX_LEN: usize = 4;
/// Prefix plus base64url without padding of the 26 raw bytes.
const ENCODED_LEN: usize = PREFIX_LEN + (RAW_LEN * 4).div_ceil(3);

/// Domain tag of the token HMAC, apart from every other HMAC in Qupia.
const TOKEN_DOMAIN: &[u8] = b"qupia.token.v1";

/// What a token stands for; the prefix of its text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Person,
    Field,
    Document,
}

impl TokenKind {
    /// The prefix that starts the token's text, so a person reading a log can tell kinds
    /// apart without any secret.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Person => "qpp_",
            TokenKind::Field => "qpf_",
            TokenKind::Document => "qpd_",
        }
    }

    fn from_prefix(prefix: &[u8]) -> Option<TokenKind> {
        [TokenKind::Person, TokenKind::Field, TokenKind::Document]
            .into_iter()
            .find(|kind| kind.prefix().as_bytes() == prefix)
    }
}

/// Why a string was refused as a token. Deliberately says nothing more specific, so a
/// caller probing tokens learns nothing from the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("is not a well-formed token")]
    Malformed,
    #[error("is not a valid token")]
    Forged,
}

/// A token: its kind and 16 random bytes. The vault stores the id; the text form with its
/// tag exists only at the edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    kind: TokenKind,
    id: [u8; ID_LEN],
}

impl Token {
    /// A new token of `kind` with a random id from the thread's CSPRNG (seeded from the
    /// operating system's; see `random.rs`).
    pub fn generate(kind: TokenKind) -> Token {
        let mut id = [0u8; ID_LEN];
        crate::random::fill(&mut id);
        Token { kind, id }
    }

    /// Rebuilds a token from an id the vault stored earlier. Text from outside the vault
    /// must go through [`Token::parse`] instead.
    pub fn new(kind: TokenKind, id: [u8; ID_LEN]) -> Token {
        Token { kind, id }
    }

    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    pub fn id(&self) -> &[u8; ID_LEN] {
        &self.id
    }

    /// The text form: kind prefix, then base64url without padding of the id and the
    /// first 10 bytes of its tag. Always [`Token::ENCODED_LEN`] characters long.
    pub fn encode(&self, key: &TokenKey) -> String {
        let tag = key.mac(self.kind, &self.id).finalize().into_bytes();
        let mut raw = [0u8; RAW_LEN];
        raw[..ID_LEN].copy_from_slice(&self.id);
        raw[ID_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        let mut text = String::with_capacity(ENCODED_LEN);
        text.push_str(self.kind.prefix());
        URL_SAFE_NO_PAD.encode_string(raw, &mut text);
        debug_assert_eq!(text.len(), ENCODED_LEN);
        text
    }

    /// Parses and authenticates the text form.
    ///
    /// The length is checked first, so an oversized input costs nothing; then the prefix
    /// and the base64 (canonical only, so each token has exactly one spelling); then the
    /// tag, compared in constant time. The tag covers the kind, so changing the prefix of
    /// a valid token is refused too.
    pub fn parse(s: &str, key: &TokenKey) -> Result<Token, TokenError> {
        // Work on bytes: slicing the str could panic on a multi-byte character.
        let bytes = s.as_bytes();
        if bytes.len() != ENCODED_LEN {
            return Err(TokenError::Malformed);
        }
        let (prefix, body) = bytes.split_at(PREFIX_LEN);
        let kind = TokenKind::from_prefix(prefix).ok_or(TokenError::Malformed)?;
        // Room for the decoder's conservative size estimate; the exact length is checked.
        let mut raw = [0u8; RAW_LEN + 6];
        let decoded = URL_SAFE_NO_PAD.decode_slice(body, &mut raw).map_err(|_| TokenError::Malformed)?;
        if decoded != RAW_LEN {
            return Err(TokenError::Malformed);
        }
        let (id, tag) = raw[..RAW_LEN].split_at(ID_LEN);
        key.mac(kind, id).verify_truncated_left(tag).map_err(|_| TokenError::Forged)?;
        let mut token = Token { kind, id: [0u8; ID_LEN] };
        token.id.copy_from_slice(id);
        Ok(token)
    }

    /// Length of every encoded token, in bytes (all ASCII).
    pub const ENCODED_LEN: usize = ENCODED_LEN;
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough of the id to tell tokens apart in a log, not enough to use one.
        write!(f, "Token({:?}, ", self.kind)?;
        for byte in &self.id[..4] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…)")
    }
}

/// The HMAC key that tags tokens. Separate from every other key, so knowing a token tells
/// nothing about the blind index or the encryption.
pub struct TokenKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl TokenKey {
    /// Draws a new token key from the operating system's CSPRNG.
    pub fn generate() -> TokenKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        TokenKey { bytes }
    }

    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> TokenKey {
        TokenKey { bytes }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The MAC over a token's kind and id, ready to finalize or verify.
    fn mac(&self, kind: TokenKind, id: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_ref()).expect("hmac accepts keys of any length");
        let mut input = Vec::with_capacity(3 * 8 + TOKEN_DOMAIN.len() + PREFIX_LEN + ID_LEN);
        push_part(&mut input, TOKEN_DOMAIN);
        push_part(&mut input, kind.prefix().as_bytes());
        push_part(&mut input, id);
        mac.update(&input);
        mac
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_no_key_bytes;

    const KINDS: [TokenKind; 3] = [TokenKind::Person, TokenKind::Field, TokenKind::Document];

    #[test]
    fn every_kind_round_trips_with_a_fixed_length() {
        let key = TokenKey::generate();
        for kind in KINDS {
            let token = Token::generate(kind);
            let text = token.encode(&key);
            assert_eq!(text.len(), Token::ENCODED_LEN);
            assert_eq!(text.len(), 39);
            assert!(text.starts_with(kind.prefix()));
            let parsed = Token::parse(&text, &key).expect("a token we issued parses");
            assert_eq!(parsed, token);
            assert_eq!(parsed.kind(), kind);
            assert_eq!(parsed.id(), token.id());
        }
    }

    #[test]
    fn stored_id_rebuilds_the_same_token_text() {
        let key = TokenKey::generate();
        let token = Token::generate(TokenKind::Person);
        let rebuilt = Token::new(TokenKind::Person, *token.id());
        assert_eq!(rebuilt.encode(&key), token.encode(&key));
    }

    #[test]
    fn tokens_are_random() {
        let a = Token::generate(TokenKind::Person);
        let b = Token::generate(TokenKind::Person);
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn changing_any_one_character_is_refused() {
        let key = TokenKey::generate();
        let text = Token::generate(TokenKind::Field).encode(&key);
        for position in 0..text.len() {
            for replacement in ['A', 'q', '0', '-', '_', '+', '/', '=', 'é'] {
                let mut changed: Vec<char> = text.chars().collect();
                if changed[position] == replacement {
                    continue;
                }
                changed[position] = replacement;
                let changed: String = changed.into_iter().collect();
                assert!(
                    Token::parse(&changed, &key).is_err(),
                    "changing position {position} to {replacement:?} must be refused"
                );
            }
        }
    }

    #[test]
    fn changing_a_body_character_is_forged_or_malformed() {
        let key = TokenKey::generate();
        let text = Token::generate(TokenKind::Person).encode(&key);
        let mut changed = text.into_bytes();
        changed[10] = if changed[10] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).expect("ascii");
        assert!(matches!(Token::parse(&changed, &key), Err(TokenError::Forged | TokenError::Malformed)));
    }

    #[test]
    fn swapping_the_prefix_of_a_valid_token_is_refused() {
        let key = TokenKey::generate();
        for kind in KINDS {
            let text = Token::generate(kind).encode(&key);
            for other in KINDS.into_iter().filter(|other| *other != kind) {
                let swapped = format!("{}{}", other.prefix(), &text[PREFIX_LEN..]);
                assert_eq!(Token::parse(&swapped, &key), Err(TokenError::Forged));
            }
        }
    }

    #[test]
    fn token_under_another_key_is_forged() {
        let text = Token::generate(TokenKind::Document).encode(&TokenKey::generate());
        assert_eq!(Token::parse(&text, &TokenKey::generate()), Err(TokenError::Forged));
    }

    #[test]
    fn malformed_strings_are_refused_before_the_tag_is_checked() {
        let key = TokenKey::generate();
        let valid = Token::generate(TokenKind::Person).encode(&key);
        let cases = [
            String::new(),
            "x".repeat(10_000),
            format!("{valid}A"),
            valid[..valid.len() - 1].to_owned(),
            format!("qpx_{}", &valid[PREFIX_LEN..]),
            format!("QPP_{}", &valid[PREFIX_LEN..]),
            format!("qpp_{}", "!".repeat(ENCODED_LEN - PREFIX_LEN)),
            format!("qpp_{}", "=".repeat(ENCODED_LEN - PREFIX_LEN)),
            // Right byte length, but multi-byte characters where the prefix ends.
            format!("qp{}{}", "é", &valid[PREFIX_LEN..]),
        ];
        for case in &cases {
            assert_eq!(Token::parse(case, &key), Err(TokenError::Malformed), "{} chars", case.len());
        }
    }

    #[test]
    fn non_canonical_base64_is_malformed() {
        // The last character carries two unused bits; setting them must not yield a
        // second spelling of the same token.
        let key = TokenKey::generate();
        let token = Token::new(TokenKind::Person, [0; ID_LEN]);
        let text = token.encode(&key);
        let last = text.as_bytes()[ENCODED_LEN - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|c| *c == last).expect("base64url");
        let sibling = alphabet[index ^ 1] as char;
        let respelled = format!("{}{}", &text[..ENCODED_LEN - 1], sibling);
        assert_eq!(Token::parse(&respelled, &key), Err(TokenError::Malformed));
    }

    #[test]
    fn debug_shows_kind_and_short_id_prefix_only() {
        let token = Token::new(TokenKind::Field, [0xab; ID_LEN]);
        assert_eq!(format!("{token:?}"), "Token(Field, abababab…)");
    }

    #[test]
    fn token_key_debug_does_not_contain_the_key() {
        let key = TokenKey::generate();
        let printed = format!("{key:?} {key:#?}");
        assert!(printed.contains("<redacted>"));
        assert_no_key_bytes(&printed, key.as_bytes());
    }
}
