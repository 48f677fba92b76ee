//! Phone numbers, normalised to E.164.

use std::fmt;

use phonenumber::country::Id;
use phonenumber::{Mode, PhoneNumber};

use crate::InvalidValue;

/// Numbers without a country code are read as Kazakhstani: that is where our users are
/// and how they type them ("8 701 …").
const DEFAULT_REGION: Id = Id::KZ;
/// Checked before the parser runs, so that its cost is bounded whatever a caller sends.
const MAX_INPUT_BYTES: usize = 64;
/// Longer than any number a person types, with spaces and brackets.
const MAX_CHARS: usize = 32;

/// A Kazakhstani number has ten digits after the country code; dialled inside the
/// country it is preceded by the trunk prefix 8.
const KZ_NATIONAL_DIGITS: usize = 10;
const KZ_TRUNK_PREFIX: char = '8';

const INVALID: &str = "is not a valid phone number";

/// A valid phone number in E.164 form ("+77011234567").
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone {
    e164: String,
}

impl Phone {
    /// Parses a number as people write it; without "+" it is taken as Kazakhstani.
    pub fn parse(input: &str) -> Result<Phone, InvalidValue> {
        let invalid = || InvalidValue::new(INVALID);
        if input.len() > MAX_INPUT_BYTES {
            return Err(invalid());
        }
        let trimmed = input.trim();
        if trimmed.chars().count() > MAX_CHARS || !trimmed.chars().all(is_phone_char) {
            return Err(invalid());
        }
        // The parser understands the Kazakh trunk prefix itself: KZ metadata declares
        // national prefix "8", so "8 701 …" becomes +7 701 … (tested below).
        let number = parse_valid(trimmed)
            .or_else(|| {
                // Ten digits with neither "+" nor "8" ("701 123 45 67") is how a number
                // is typed into a form that shows "+7" in front. libphonenumber keeps
                // such a number national when it is valid that way, but this crate
                // reads the leading 7 as the country code and fails, so we supply the
                // trunk prefix and try once more.
                let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
                if trimmed.starts_with('+') || digits.len() != KZ_NATIONAL_DIGITS {
                    return None;
                }
                parse_valid(&format!("{KZ_TRUNK_PREFIX}{digits}"))
            })
            .ok_or_else(invalid)?;
        let e164 = number.format().mode(Mode::E164).to_string();
        Ok(Phone { e164 })
    }

    /// The number in E.164 form, which is also its lookup key.
    pub fn e164(&self) -> &str {
        &self.e164
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(<redacted>)")
    }
}

/// Parses with the default region and keeps only numbers that are valid as a whole:
/// possible length alone would let through numbers no operator has issued.
fn parse_valid(input: &str) -> Option<PhoneNumber> {
    let number = phonenumber::parse(Some(DEFAULT_REGION), input).ok()?;
    (phonenumber::is_valid(&number) && number.extension().is_none()).then_some(number)
}

/// Digits and the punctuation people put between them. Letters are refused outright:
/// the parser would otherwise translate vanity spellings ("1-800-FLOWERS") into digits
/// and read "ext. 12" as an extension, neither of which is a number we can text.
fn is_phone_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')' | '.' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(input: &str) -> String {
        match Phone::parse(input) {
            Ok(phone) => phone.e164().to_owned(),
            Err(err) => panic!("expected a valid phone, got {err}"),
        }
    }

    fn country(input: &str) -> Option<Id> {
        phonenumber::parse(Some(DEFAULT_REGION), input).ok().and_then(|n| n.country().id())
    }

    #[test]
    fn kazakh_spellings_normalise_to_one_e164() {
        for input in [
            "+7 701 123 45 67",
            "8 (701) 123-45-67",
            "+77011234567",
            "87011234567",
            "7011234567",
            "701 123 45 67",
            " +7 (701) 123-45-67 ",
            "+7.701.123.45.67",
        ] {
            assert_eq!(e164(input), "+77011234567");
        }
        assert_eq!(country("87011234567"), Some(Id::KZ));
    }

    #[test]
    fn a_russian_number_stays_russian() {
        assert_eq!(e164("+7 916 123-45-67"), "+79161234567");
        assert_eq!(country("+79161234567"), Some(Id::RU));
    }

    #[test]
    fn ten_digits_without_prefix_follow_the_kazakh_habit() {
        assert_eq!(e164("916 123 45 67"), "+79161234567");
        // With "+" the digits are taken as they stand and are too short.
        assert!(Phone::parse("+701 123 45 67").is_err());
    }

    #[test]
    fn a_german_number_stays_german() {
        assert_eq!(e164("+49 30 123456"), "+4930123456");
        assert_eq!(country("+4930123456"), Some(Id::DE));
    }

    #[test]
    fn invalid_numbers_are_refused() {
        for input in [
            "",
            "   ",
            "garbage",
            "12",
            "+7 701",
            "8 701 123",
            "+7 701 123 45 67 89",
            "+999 123 456 789",
            "8 (701) ABC-45-67",
            "1-800-FLOWERS",
            "+7 701 123 45 67 ext. 12",
            "+7 701 123 45 67 #12",
            "+7\u{202E}7011234567",
            "+7 (701) (123) (45) (67) ------------",
        ] {
            match Phone::parse(input) {
                Ok(_) => panic!("accepted invalid phone #{}", input.len()),
                Err(err) => assert_eq!(err.to_string(), INVALID),
            }
        }
    }

    #[test]
    fn no_short_input_makes_the_parser_panic() {
        // The input is attacker-controlled and the parser is third-party code: sweep
        // many strings of the characters we let through to it, with a fixed-seed LCG so
        // that a failure can be reproduced.
        const ALPHABET: &[u8] = b"0123456789+-() ./";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for _ in 0..5_000 {
            let len = next() % (MAX_CHARS + 1);
            let input: String = (0..len).map(|_| char::from(ALPHABET[next() % ALPHABET.len()])).collect();
            if let Ok(phone) = Phone::parse(&input) {
                assert!(phone.e164().starts_with('+'));
            }
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let err = Phone::parse(&"1".repeat(100_000)).unwrap_err();
        assert_eq!(err.to_string(), INVALID);
    }

    #[test]
    fn errors_never_contain_the_input() {
        for input in ["8 701 123", "+7 701 ABC 45 67", "1234567890123456789012345678901234"] {
            let message = Phone::parse(input).unwrap_err().to_string();
            assert!(!message.chars().any(|c| c.is_ascii_digit()));
            assert!(!message.contains(input));
        }
    }

    #[test]
    fn debug_does_not_show_the_number() {
        let phone = Phone::parse("+77011234567").unwrap();
        let shown = format!("{phone:?}");
        assert!(!shown.contains("701"));
        assert_eq!(shown, "Phone(<redacted>)");
    }
}
