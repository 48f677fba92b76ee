//! Names: one validated part ([`NamePart`]) and a person's name in three parts
//! ([`PersonName`]).
//!
//! The accepted alphabet is deliberately narrow (Latin and Cyrillic letters, which cover
//! Kazakh and Russian, with a few joiners) because a name is shown to operators and put
//! into letters and e-mails: invisible, bidirectional and look-alike characters from
//! other scripts are how a stored name is made to display as something else.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::InvalidValue;

/// The longest name part we store, counted in characters after normalisation.
const MAX_CHARS: usize = 100;
/// Inputs larger than this are refused before any per-character work: 100 characters
/// are at most 400 bytes of UTF-8, so anything over 4 KiB is far too long whatever it
/// normalises to, and callers can send megabytes.
const MAX_INPUT_BYTES: usize = 4096;

const EMPTY: &str = "must not be empty";
const TOO_LONG: &str = "is longer than 100 characters";
const DIGIT: &str = "contains a digit";
const INVISIBLE: &str = "contains an invisible or control character";
const NOT_ALLOWED: &str = "contains a character that is not allowed in a name";
const MISPLACED_JOINER: &str = "has a space, hyphen or apostrophe at the start, at the end or next to another";

/// One part of a person's name (a surname, a given name or a patronymic), trimmed,
/// NFC-normalised and with internal whitespace collapsed to single spaces.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NamePart(String);

impl NamePart {
    /// Validates and normalises one name part.
    pub fn parse(input: &str) -> Result<NamePart, InvalidValue> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(InvalidValue::new(TOO_LONG));
        }
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::new(EMPTY));
        }
        let normalised = collapse_whitespace(trimmed.nfc());
        if normalised.chars().count() > MAX_CHARS {
            return Err(InvalidValue::new(TOO_LONG));
        }
        // The specific reasons come first so that a caller learns "contains a digit"
        // rather than the vaguer "not allowed" for a part that has both problems.
        for c in normalised.chars() {
            if is_invisible_or_control(c) {
                return Err(InvalidValue::new(INVISIBLE));
            }
            if c.is_numeric() {
                return Err(InvalidValue::new(DIGIT));
            }
        }
        check_shape(&normalised)?;
        Ok(NamePart(normalised))
    }

    /// The normalised name part, for encryption or display by an allowed caller.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NamePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NamePart(<redacted>)")
    }
}

/// A person's name in the three parts that Kazakh and Russian documents use.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PersonName {
    pub surname: NamePart,
    pub given_name: NamePart,
    /// Not everyone has one (and many non-Slavic names have none).
    pub patronymic: Option<NamePart>,
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonName(<redacted>)")
    }
}

/// Replaces each run of whitespace with one ASCII space. Control characters that are
/// also whitespace (tab, newline) are kept, so that the next check refuses them: a line
/// break inside a name is a sign of injected text, not of a typing slip.
fn collapse_whitespace(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    let mut in_space = false;
    for c in chars {
        if c.is_whitespace() && !c.is_control() {
            if !in_space {
                out.push(' ');
                in_space = true;
            }
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// Walks the part as letters with attached combining marks, separated by single
/// joiners (space, hyphen, apostrophe) that may not start or end it.
fn check_shape(part: &str) -> Result<(), InvalidValue> {
    let mut after_letter = false;
    for c in part.chars() {
        if is_name_letter(c) {
            after_letter = true;
        } else if is_name_mark(c) {
            // A mark belongs to the letter before it; on its own it would be drawn on
            // the joiner or on nothing.
            if !after_letter {
                return Err(InvalidValue::new(NOT_ALLOWED));
            }
        } else if is_joiner(c) {
            if !after_letter {
                return Err(InvalidValue::new(MISPLACED_JOINER));
            }
            after_letter = false;
        } else {
            return Err(InvalidValue::new(NOT_ALLOWED));
        }
    }
    if after_letter { Ok(()) } else { Err(InvalidValue::new(MISPLACED_JOINER)) }
}

/// A letter of the Latin or Cyrillic script. `is_alphabetic` keeps out the symbols
/// that share these blocks (× ÷ ҂), the ranges keep out every other script.
fn is_name_letter(c: char) -> bool {
    c.is_alphabetic()
        && matches!(c,
            'A'..='Z' | 'a'..='z'
            | '\u{00C0}'..='\u{00FF}' // Latin-1 Supplement letters (À–ÿ)
            | '\u{0100}'..='\u{024F}' // Latin Extended-A and -B
            | '\u{1E00}'..='\u{1EFF}' // Latin Extended Additional (Vietnamese and others)
            | '\u{0400}'..='\u{04FF}' // Cyrillic, including Kazakh ә ғ қ ң ө ұ ү һ і
            | '\u{0500}'..='\u{052F}' // Cyrillic Supplement
        )
}

/// Combining marks that NFC leaves in place when a letter has no precomposed form
/// (e.g. "ә" with an accent). Only the general diacritics and the Cyrillic ones.
fn is_name_mark(c: char) -> bool {
    is_combining_mark(c) && matches!(c, '\u{0300}'..='\u{036F}' | '\u{0483}'..='\u{0489}')
}

/// The characters allowed between two letters. Apostrophes come in three forms
/// because keyboards, word processors and the Kazakh Latin alphabet each use another.
fn is_joiner(c: char) -> bool {
    matches!(c, ' ' | '-' | '\'' | '\u{2019}' | '\u{02BC}')
}

/// Characters that change how text is displayed without being seen themselves.
fn is_invisible_or_control(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                // soft hyphen
            | '\u{034F}'              // combining grapheme joiner
            | '\u{061C}'              // Arabic letter mark (a bidi control)
            | '\u{180E}'              // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner and invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{206A}'..='\u{206F}' // deprecated format characters
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{FEFF}'              // zero-width no-break space (BOM)
            | '\u{E0000}'..='\u{E007F}' // tag characters
        )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn ok(input: &str) -> String {
        match NamePart::parse(input) {
            Ok(part) => part.as_str().to_owned(),
            Err(err) => panic!("expected a valid name, got {err}"),
        }
    }

    fn reason(input: &str) -> String {
        match NamePart::parse(input) {
            Ok(_) => panic!("expected the name to be refused"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn kazakh_names_are_accepted_unchanged() {
        for name in
            ["Әбдіғаппар", "Құрманғазы", "Нұрсұлтанұлы", "Өмірзақ", "Ұлжан", "Һадиша", "Үміт", "Ақбота", "ӘҒҚҢӨҰҮҺІ"]
        {
            assert_eq!(ok(name), name);
        }
    }

    #[test]
    fn russian_names_are_accepted_unchanged() {
        for name in ["Иванов", "Петрова-Водкина", "Алёна", "Сергеевич"] {
            assert_eq!(ok(name), name);
        }
    }

    #[test]
    fn latin_names_with_joiners_are_accepted() {
        for name in ["O'Brien", "O’Brien", "Oʼbrien", "Anne-Marie", "Jean Luc", "Müller", "Nguyễn", "Łukasz"] {
            assert_eq!(ok(name), name);
        }
    }

    #[test]
    fn surrounding_whitespace_is_trimmed_and_inner_runs_collapse() {
        assert_eq!(ok("  Иванов \n"), "Иванов");
        assert_eq!(ok("Jean   Luc"), "Jean Luc");
        assert_eq!(ok("Jean\u{00A0}\u{3000}Luc"), "Jean Luc");
    }

    #[test]
    fn decomposed_input_is_stored_composed() {
        // "й" typed as и + combining breve, "ё" as е + diaeresis, "é" as e + acute.
        let nfd = "Сергеи\u{0306} Се\u{0308}мин Rene\u{0301}";
        let part = ok(nfd);
        assert_eq!(part, "Сергей Сёмин René");
        assert_eq!(part, ok("Сергей Сёмин René"));
    }

    #[test]
    fn a_combining_mark_without_a_precomposed_form_is_kept() {
        // Cyrillic schwa with an acute has no single code point.
        assert_eq!(ok("Ә\u{0301}лия"), "Ә\u{0301}лия");
    }

    #[test]
    fn a_stray_combining_mark_is_refused() {
        assert_eq!(reason("\u{0301}Алия"), NOT_ALLOWED);
        assert_eq!(reason("Анна- \u{0301}Мария"), MISPLACED_JOINER);
    }

    #[test]
    fn empty_and_whitespace_only_are_refused() {
        assert_eq!(reason(""), "must not be empty");
        assert_eq!(reason("   \t\n "), "must not be empty");
    }

    #[test]
    fn digits_are_refused() {
        assert_eq!(reason("Иван0в"), "contains a digit");
        assert_eq!(reason("Anne2"), "contains a digit");
        assert_eq!(reason("Ива\u{0663}"), "contains a digit"); // Arabic-Indic three
    }

    #[test]
    fn bidi_zero_width_and_control_characters_are_refused() {
        for name in [
            "Ива\u{202E}нов",
            "Ива\u{2066}нов",
            "Ива\u{200F}нов",
            "Ива\u{200B}нов",
            "Ива\u{200D}нов",
            "Ива\u{2060}нов",
            "\u{FEFF}Иванов",
            "Ива\u{00AD}нов",
            "Jean\tLuc",
            "Jean\nLuc",
            "Ива\u{0000}нов",
        ] {
            assert_eq!(reason(name), "contains an invisible or control character");
        }
    }

    #[test]
    fn other_scripts_and_symbols_are_refused() {
        for name in ["Αλέξανδρος", "王伟", "محمد", "Иван!", "Ivan_", "Ива×нов", "Ivan."] {
            assert_eq!(reason(name), NOT_ALLOWED);
        }
    }

    #[test]
    fn joiners_only_between_letters() {
        for name in ["-Anne", "Anne-", "O''Brien", "Anne--Marie", "Anne -Marie", "'", "’Ivan"] {
            assert_eq!(reason(name), MISPLACED_JOINER);
        }
    }

    #[test]
    fn length_is_limited_to_100_characters_after_normalisation() {
        assert_eq!(ok(&"ә".repeat(100)).chars().count(), 100);
        assert_eq!(reason(&"ә".repeat(101)), "is longer than 100 characters");
        // 100 composed letters typed decomposed are 200 code points but fit.
        assert_eq!(ok(&"е\u{0308}".repeat(100)), "ё".repeat(100));
    }

    #[test]
    fn a_huge_input_is_refused_quickly() {
        let huge = "Ә".repeat(10_000);
        let started = Instant::now();
        assert_eq!(reason(&huge), "is longer than 100 characters");
        assert_eq!(reason(&"a".repeat(10_000)), "is longer than 100 characters");
        assert_eq!(reason(&"a".repeat(1_000_000)), "is longer than 100 characters");
        // Generous bound: the point is that the cost does not grow with the input.
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn errors_never_contain_the_input() {
        for input in ["Иван0в", "Ива\u{202E}нов", "Αλέξανδρος", "-Anne", &"Жанна".repeat(30), "Jean\nLuc"]
        {
            let message = reason(input);
            assert!(!message.contains(input));
            for word in input.split(|c: char| !c.is_alphabetic()) {
                if word.chars().count() >= 3 {
                    assert!(!message.contains(word), "{message:?} repeats the input");
                }
            }
        }
    }

    #[test]
    fn debug_does_not_show_the_name() {
        let name = PersonName {
            surname: NamePart::parse("Назарбаева").unwrap(),
            given_name: NamePart::parse("Айгерим").unwrap(),
            patronymic: Some(NamePart::parse("Нурлановна").unwrap()),
        };
        for shown in [format!("{name:?}"), format!("{name:#?}"), format!("{:?}", name.surname)] {
            for value in ["Назарбаева", "Айгерим", "Нурлановна"] {
                assert!(!shown.contains(value));
            }
            assert!(shown.contains("<redacted>"));
        }
    }

    #[test]
    fn equal_after_normalisation_means_equal() {
        assert_eq!(NamePart::parse(" Петрова-Водкина ").unwrap(), NamePart::parse("Петрова-Водкина").unwrap());
    }
}
