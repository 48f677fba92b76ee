//! The personal-data fields the vault keeps.

use std::fmt;
use std::str::FromStr;

use crate::InvalidValue;

/// One field of a person's record. Policies grant access per field, and the audit
/// ledger names the fields each reveal returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Surname,
    GivenName,
    Patronymic,
    Email,
    Phone,
}

impl Field {
    pub const ALL: [Field; 5] = [Field::Surname, Field::GivenName, Field::Patronymic, Field::Email, Field::Phone];

    /// The stable name of the field. These strings are stored in databases and written
    /// in policies, so they must never change once released.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Surname => "surname",
            Field::GivenName => "given_name",
            Field::Patronymic => "patronymic",
            Field::Email => "email",
            Field::Phone => "phone",
        }
    }

    /// Whether the field is one of the three parts of a [`crate::PersonName`].
    pub fn is_name_part(self) -> bool {
        match self {
            Field::Surname | Field::GivenName | Field::Patronymic => true,
            Field::Email | Field::Phone => false,
        }
    }
}

impl FromStr for Field {
    type Err = InvalidValue;

    /// Accepts exactly the [`Field::as_str`] forms: a policy with a misspelt or
    /// differently cased field name should fail to load, not silently mean nothing.
    fn from_str(s: &str) -> Result<Field, InvalidValue> {
        Field::ALL
            .into_iter()
            .find(|field| field.as_str() == s)
            .ok_or_else(|| InvalidValue::new("is not a known field"))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips_through_its_name() {
        for field in Field::ALL {
            assert_eq!(field.as_str().parse::<Field>(), Ok(field));
            assert_eq!(field.to_string(), field.as_str());
        }
    }

    #[test]
    fn stored_names_are_stable() {
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names, ["surname", "given_name", "patronymic", "email", "phone"]);
    }

    #[test]
    fn only_the_three_name_fields_are_name_parts() {
        let parts: Vec<Field> = Field::ALL.into_iter().filter(|f| f.is_name_part()).collect();
        assert_eq!(parts, [Field::Surname, Field::GivenName, Field::Patronymic]);
    }

    #[test]
    fn unknown_names_are_refused_without_echoing_them() {
        for input in ["Surname", "givenName", " email", "document", ""] {
            let err = input.parse::<Field>().unwrap_err();
            assert_eq!(err.to_string(), "is not a known field");
        }
    }
}
