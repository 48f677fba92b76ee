//! Conversions between the wire enums and the domain types of `qupia-domain`.
//! Decoding returns a short reason (never the value) for the caller to put behind
//! the name of the request field.

use qupia_domain::{Field, Purpose};

use crate::types::v1 as types;

/// A wire field number as a domain field.
pub fn field(value: i32) -> Result<Field, &'static str> {
    match types::Field::try_from(value) {
        Ok(types::Field::Surname) => Ok(Field::Surname),
        Ok(types::Field::GivenName) => Ok(Field::GivenName),
        Ok(types::Field::Patronymic) => Ok(Field::Patronymic),
        Ok(types::Field::Email) => Ok(Field::Email),
        Ok(types::Field::Phone) => Ok(Field::Phone),
        Ok(types::Field::Unspecified) => Err("must name a field"),
        Err(_) => Err("is not a known field"),
    }
}

pub fn field_to_proto(field: Field) -> types::Field {
    match field {
        Field::Surname => types::Field::Surname,
        Field::GivenName => types::Field::GivenName,
        Field::Patronymic => types::Field::Patronymic,
        Field::Email => types::Field::Email,
        Field::Phone => types::Field::Phone,
    }
}

/// A wire purpose number as a domain purpose.
pub fn purpose(value: i32) -> Result<Purpose, &'static str> {
    match types::Purpose::try_from(value) {
        Ok(types::Purpose::ServiceDelivery) => Ok(Purpose::ServiceDelivery),
        Ok(types::Purpose::Identification) => Ok(Purpose::Identification),
        Ok(types::Purpose::Communication) => Ok(Purpose::Communication),
        Ok(types::Purpose::Advertising) => Ok(Purpose::Advertising),
        Ok(types::Purpose::Statistics) => Ok(Purpose::Statistics),
        Ok(types::Purpose::LegalDisclosure) => Ok(Purpose::LegalDisclosure),
        Ok(types::Purpose::ThirdPartyTransfer) => Ok(Purpose::ThirdPartyTransfer),
        Ok(types::Purpose::Unspecified) => Err("must name a purpose"),
        Err(_) => Err("is not a known purpose"),
    }
}

pub fn purpose_to_proto(purpose: Purpose) -> types::Purpose {
    match purpose {
        Purpose::ServiceDelivery => types::Purpose::ServiceDelivery,
        Purpose::Identification => types::Purpose::Identification,
        Purpose::Communication => types::Purpose::Communication,
        Purpose::Advertising => types::Purpose::Advertising,
        Purpose::Statistics => types::Purpose::Statistics,
        Purpose::LegalDisclosure => types::Purpose::LegalDisclosure,
        Purpose::ThirdPartyTransfer => types::Purpose::ThirdPartyTransfer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_purpose_round_trips() {
        for f in Field::ALL {
            assert_eq!(field(field_to_proto(f) as i32), Ok(f));
        }
        for p in Purpose::ALL {
            assert_eq!(purpose(purpose_to_proto(p) as i32), Ok(p));
        }
        assert_eq!(field(0), Err("must name a field"));
        assert_eq!(field(99), Err("is not a known field"));
        assert_eq!(purpose(99), Err("is not a known purpose"));
    }
}
