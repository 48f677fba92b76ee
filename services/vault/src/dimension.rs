//! What statistics count people by, and the group key of one person for each
//! dimension. The keys are computed inside the vault from the one field a dimension
//! needs; only keys and counts ever leave it.

use std::collections::HashMap;
use std::sync::LazyLock;

use qupia_api::types::v1 as types;
use qupia_domain::{Email, Field};

use crate::Error;

/// The key of people whose value gives no group (an unknown operator, a number no
/// country claims).
pub const OTHER: &str = "other";

/// The Kazakhstani mobile codes and their operators, from the data file beside the
/// crate (it names its source).
const KZ_OPERATORS_TOML: &str = include_str!("../data/kz-mobile-operators.toml");

#[derive(serde::Deserialize)]
struct OperatorFile {
    codes: HashMap<String, String>,
}

/// Parsed once; a unit test proves the embedded file parses, so this cannot fail in a
/// built vault.
static KZ_OPERATORS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    toml::from_str::<OperatorFile>(KZ_OPERATORS_TOML)
        .map(|file| file.codes)
        .expect("the embedded operator file parses; a unit test proves it")
});

/// A dimension of an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    EmailDomain,
    PhoneCountry,
    PhoneOperator,
    RegistrationMonth,
}

impl Dimension {
    pub fn from_proto(value: i32, name: &str) -> Result<Dimension, Error> {
        match types::AggregateDimension::try_from(value) {
            Ok(types::AggregateDimension::EmailDomain) => Ok(Dimension::EmailDomain),
            Ok(types::AggregateDimension::PhoneCountry) => Ok(Dimension::PhoneCountry),
            Ok(types::AggregateDimension::PhoneOperator) => Ok(Dimension::PhoneOperator),
            Ok(types::AggregateDimension::RegistrationMonth) => Ok(Dimension::RegistrationMonth),
            Ok(types::AggregateDimension::Unspecified) => Err(Error::invalid(name, "must name a dimension")),
            Err(_) => Err(Error::invalid(name, "is not a known dimension")),
        }
    }

    /// How access-log reasons name the dimension.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::EmailDomain => "email_domain",
            Dimension::PhoneCountry => "phone_country",
            Dimension::PhoneOperator => "phone_operator",
            Dimension::RegistrationMonth => "registration_month",
        }
    }

    /// The one field the dimension decrypts; `None` when it needs none (the month a
    /// person was stored is not personal data and is kept in clear).
    pub fn field(self) -> Option<Field> {
        match self {
            Dimension::EmailDomain => Some(Field::Email),
            Dimension::PhoneCountry | Dimension::PhoneOperator => Some(Field::Phone),
            Dimension::RegistrationMonth => None,
        }
    }

    /// The group key of a decrypted value of [`Dimension::field`].
    pub fn key_of_value(self, value: &str) -> String {
        match self {
            Dimension::EmailDomain => email_domain(value),
            Dimension::PhoneCountry => phone_country(value),
            Dimension::PhoneOperator => phone_operator(value),
            Dimension::RegistrationMonth => OTHER.to_owned(),
        }
    }
}

/// The domain of a stored e-mail, in its matching form (lower-case ASCII, an
/// internationalised domain in punycode), so one domain is one group however it was typed.
fn email_domain(stored: &str) -> String {
    Email::parse(stored)
        .ok()
        .and_then(|email| email.lookup_key().rsplit_once('@').map(|(_, domain)| domain.to_owned()))
        .unwrap_or_else(|| OTHER.to_owned())
}

/// The ISO 3166 alpha-2 country of a stored E.164 number ("KZ"), by the `phonenumber`
/// crate's metadata, which tells Kazakhstani +7 numbers from Russian ones.
fn phone_country(e164: &str) -> String {
    phonenumber::parse(None, e164)
        .ok()
        .and_then(|number| number.country().id())
        .map(|id| id.as_ref().to_owned())
        .unwrap_or_else(|| OTHER.to_owned())
}

/// The operator a Kazakhstani mobile number was allocated to, by its three-digit code.
fn phone_operator(e164: &str) -> String {
    let Ok(number) = phonenumber::parse(None, e164) else {
        return OTHER.to_owned();
    };
    if number.country().id() != Some(phonenumber::country::Id::KZ) {
        return OTHER.to_owned();
    }
    let national = number.national().value().to_string();
    national.get(..3).and_then(|code| KZ_OPERATORS.get(code)).cloned().unwrap_or_else(|| OTHER.to_owned())
}

/// The UTC month of a unix time in milliseconds, `YYYY-MM`.
pub fn registration_month(created_at_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(created_at_ms) * 1_000_000) {
        Ok(at) => format!("{:04}-{:02}", at.year(), u8::from(at.month())),
        Err(_) => OTHER.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_file_parses_and_lists_only_mobile_codes() {
        let operators = &*KZ_OPERATORS;
        assert!(operators.len() >= 10, "{operators:?}");
        for (code, operator) in operators {
            assert!(code.len() == 3 && (code.starts_with("70") || code.starts_with("77") || code == "747"), "{code}");
            assert!(!operator.is_empty());
        }
        assert_eq!(operators.get("701").map(String::as_str), Some("Kcell"));
        assert_eq!(operators.get("777").map(String::as_str), Some("Beeline"));
    }

    #[test]
    fn email_domains_group_every_spelling_of_one_domain() {
        assert_eq!(email_domain("aigerim.nurlanova@mail.kz"), "mail.kz");
        assert_eq!(email_domain("Aigerim@Mail.KZ"), "mail.kz");
        assert_eq!(email_domain("user@почта.рф"), "xn--80a1acny.xn--p1ai");
        assert_eq!(email_domain("not an address"), OTHER);
    }

    #[test]
    fn phone_countries_tell_kazakhstan_from_russia() {
        assert_eq!(phone_country("+77011234567"), "KZ");
        assert_eq!(phone_country("+79161234567"), "RU");
        assert_eq!(phone_country("+4915123456789"), "DE");
        assert_eq!(phone_country("garbage"), OTHER);
    }

    #[test]
    fn phone_operators_come_from_the_code_and_unknown_is_other() {
        assert_eq!(phone_operator("+77011234567"), "Kcell");
        assert_eq!(phone_operator("+77771234567"), "Beeline");
        assert_eq!(phone_operator("+77471234567"), "Tele2");
        assert_eq!(phone_operator("+77001234567"), "Altel");
        // A Kazakhstani landline (Almaty) and a Russian mobile are no Kazakhstani operator's.
        assert_eq!(phone_operator("+77272123456"), OTHER);
        assert_eq!(phone_operator("+79161234567"), OTHER);
    }

    #[test]
    fn registration_months_are_utc() {
        // 2026-12-31T23:59:59.999Z and one millisecond later.
        assert_eq!(registration_month(1_798_761_599_999), "2026-12");
        assert_eq!(registration_month(1_798_761_600_000), "2027-01");
        assert_eq!(registration_month(0), "1970-01");
    }

    #[test]
    fn every_dimension_decodes_and_names_its_field() {
        for (value, dimension, field) in [
            (1, Dimension::EmailDomain, Some(Field::Email)),
            (2, Dimension::PhoneCountry, Some(Field::Phone)),
            (3, Dimension::PhoneOperator, Some(Field::Phone)),
            (4, Dimension::RegistrationMonth, None),
        ] {
            assert_eq!(Dimension::from_proto(value, "dimension").expect("known"), dimension);
            assert_eq!(dimension.field(), field);
        }
        assert_eq!(Dimension::from_proto(0, "dimension").unwrap_err().to_string(), "dimension: must name a dimension");
        assert!(Dimension::from_proto(9, "dimension").is_err());
    }
}
