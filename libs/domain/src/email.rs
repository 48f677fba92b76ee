//! E-mail addresses, with a display form and a matching form.
//!
//! Two forms exist because they answer different questions. The display form is what
//! the person typed (so a letter greets them with their own spelling); the lookup key is
//! what the vault's blind index hashes, so that sign-in with "Aigerim.N@Mail.KZ" finds
//! the account registered as "aigerim.n@mail.kz". Lower-casing the local part is
//! stricter than RFC 5321 allows in theory, but no mailbox provider in use treats
//! case as significant, and a lookup that misses on case is a real support problem.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::InvalidValue;

/// RFC 5321 path limit, counted here in characters of the trimmed input.
const MAX_CHARS: usize = 254;
/// RFC 5321 local-part limit.
const MAX_LOCAL_CHARS: usize = 64;
/// A DNS name is at most 253 octets in its ASCII (punycode) form.
const MAX_DOMAIN_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;
/// Refuse huge inputs before trimming, normalising or running IDNA over them.
const MAX_INPUT_BYTES: usize = 1024;

const INVALID: &str = "is not a valid e-mail address";
const TOO_LONG: &str = "is longer than 254 characters";

/// A syntactically valid e-mail address.
///
/// Equality compares the display form; two spellings of one mailbox are different
/// values with the same [`Email::lookup_key`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email {
    display: String,
    key: String,
}

impl Email {
    /// Validates an address and computes both of its forms.
    pub fn parse(input: &str) -> Result<Email, InvalidValue> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(InvalidValue::new(TOO_LONG));
        }
        let trimmed = input.trim();
        if trimmed.chars().count() > MAX_CHARS {
            return Err(InvalidValue::new(TOO_LONG));
        }
        let invalid = || InvalidValue::new(INVALID);
        let (local, domain) = trimmed.split_once('@').ok_or_else(invalid)?;
        if domain.contains('@') {
            return Err(invalid());
        }
        // NFC so that an address typed with decomposed letters (as some keyboards and
        // macOS file names produce) has the same key as the composed spelling; the two
        // are canonically equivalent, so the display form still shows what was typed.
        let local: String = local.nfc().collect();
        if !is_valid_local_part(&local) {
            return Err(invalid());
        }
        let ascii_domain = to_ascii_domain(domain).ok_or_else(invalid)?;
        let display_domain = if domain.is_ascii() {
            // For an ASCII domain the UTS-46 result is the lower-cased input (and a
            // domain typed in punycode stays punycode, rather than turning into
            // Unicode that may imitate another name).
            ascii_domain.clone()
        } else {
            // The Unicode form after UTS-46 mapping: lower-cased and normalised, so
            // "Почта.РФ" is shown as "почта.рф".
            let (unicode, result) = idna::domain_to_unicode(&ascii_domain);
            result.map_err(|_| invalid())?;
            unicode
        };
        Ok(Email {
            display: format!("{local}@{display_domain}"),
            key: format!("{}@{ascii_domain}", local.to_lowercase()),
        })
    }

    /// The form to store and show: trimmed, local part as entered, domain lower-cased
    /// (an internationalised domain stays in Unicode).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The form to match on (and to feed to the blind index): local part lower-cased,
    /// domain in lower-case ASCII (punycode).
    pub fn lookup_key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

/// A dot-atom local part (RFC 5322), extended with non-ASCII letters (RFC 6531).
/// Quoted local parts ("john doe"@…) are refused: they are legal but practically unused,
/// and they would let spaces and quotes into values that end up in logs and headers.
fn is_valid_local_part(local: &str) -> bool {
    if local.is_empty()
        || local.chars().count() > MAX_LOCAL_CHARS
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return false;
    }
    local.chars().all(|c| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric() || ".!#$%&'*+-/=?^_`{|}~".contains(c)
        } else {
            c.is_alphabetic() || is_combining_mark(c)
        }
    })
}

/// Runs UTS-46 processing (which lower-cases, maps and punycode-encodes) and then
/// checks the result as a host name, because `domain_to_ascii` on its own accepts
/// things a mail domain can't be (underscores, empty labels, a single label, an IP).
fn to_ascii_domain(domain: &str) -> Option<String> {
    let ascii = idna::domain_to_ascii(domain).ok()?;
    if ascii.is_empty() || ascii.len() > MAX_DOMAIN_BYTES {
        return None;
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 || !labels.iter().all(|label| is_valid_label(label)) {
        return None;
    }
    // A numeric top-level domain would make "1.2.3.4" look like a host name.
    let tld = labels.last()?;
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ascii)
}

fn is_valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_BYTES
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Email {
        match Email::parse(input) {
            Ok(email) => email,
            Err(err) => panic!("expected a valid address, got {err}"),
        }
    }

    fn reason(input: &str) -> String {
        match Email::parse(input) {
            Ok(_) => panic!("expected the address to be refused"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn case_and_whitespace_do_not_change_the_lookup_key() {
        let typed = parse("  Aigerim.N@Mail.KZ ");
        let plain = parse("aigerim.n@mail.kz");
        assert_eq!(typed.lookup_key(), plain.lookup_key());
        assert_eq!(typed.lookup_key(), "aigerim.n@mail.kz");
    }

    #[test]
    fn display_form_keeps_the_local_part_and_lowers_the_domain() {
        assert_eq!(parse("  Aigerim.N@Mail.KZ ").as_str(), "Aigerim.N@mail.kz");
    }

    #[test]
    fn internationalised_domain_is_punycode_in_the_key_and_unicode_for_display() {
        let email = parse("user@Почта.РФ");
        assert_eq!(email.lookup_key(), "user@xn--80a1acny.xn--p1ai");
        assert_eq!(email.as_str(), "user@почта.рф");
        // Typing the punycode finds the same mailbox.
        assert_eq!(parse("USER@xn--80a1acny.xn--p1ai").lookup_key(), email.lookup_key());
    }

    #[test]
    fn kazakh_domain_and_local_part_are_accepted() {
        let email = parse("Айгерім@Құпия.қаз");
        assert!(email.lookup_key().starts_with("айгерім@xn--"));
        assert_eq!(email.as_str(), "Айгерім@құпия.қаз");
    }

    #[test]
    fn decomposed_local_part_has_the_composed_key() {
        assert_eq!(parse("Ёлка@mail.ru").lookup_key(), parse("Е\u{0308}лка@mail.ru").lookup_key());
    }

    #[test]
    fn common_address_shapes_are_accepted() {
        for input in [
            "a@b.kz",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "user_name-1@my-host.example",
            "x@123.example",
        ] {
            parse(input);
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for input in [
            "",
            "   ",
            "plainaddress",
            "@mail.kz",
            "user@",
            "user@@mail.kz",
            "us@er@mail.kz",
            ".user@mail.kz",
            "user.@mail.kz",
            "us..er@mail.kz",
            "us er@mail.kz",
            "\"us er\"@mail.kz",
            "user@mail",
            "user@mail..kz",
            "user@.mail.kz",
            "user@mail.kz.",
            "user@-mail.kz",
            "user@mail-.kz",
            "user@mail_box.kz",
            "user@1.2.3.4",
            "user@[1.2.3.4]",
            "user@mail.kz\u{202E}",
            "us\u{0000}er@mail.kz",
            "user@mail .kz",
        ] {
            assert_eq!(reason(input), INVALID, "for input #{}", input.len());
        }
    }

    #[test]
    fn rfc_5321_lengths_are_enforced() {
        let local64 = "a".repeat(64);
        parse(&format!("{local64}@mail.kz"));
        assert_eq!(reason(&format!("a{local64}@mail.kz")), INVALID);

        let label63 = "b".repeat(63);
        parse(&format!("u@{label63}.kz"));
        assert_eq!(reason(&format!("u@b{label63}.kz")), INVALID);

        let long = format!("u@{}.kz", "c.".repeat(130));
        assert_eq!(reason(&long), TOO_LONG);
        assert_eq!(reason(&"a".repeat(100_000)), TOO_LONG);
    }

    #[test]
    fn errors_never_contain_the_input() {
        for input in ["aigerim@qupia", "aigerim@@qupia.kz", &format!("{}@qupia.kz", "aigerim".repeat(40))] {
            let message = reason(input);
            assert!(!message.contains("aigerim"));
            assert!(!message.contains("qupia"));
        }
    }

    #[test]
    fn debug_does_not_show_the_address() {
        let email = parse("aigerim.n@mail.kz");
        let shown = format!("{email:?}");
        assert!(!shown.contains("aigerim"));
        assert!(!shown.contains("mail.kz"));
        assert_eq!(shown, "Email(<redacted>)");
    }
}
