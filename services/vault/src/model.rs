//! Requests parsed into validated domain types at the edge. A request that does not
//! parse never reaches the keys or the database.

use qupia_api::types::v1 as types;
use qupia_api::vault::v1 as proto;
use qupia_domain::{Email, Field, NamePart, PersonName, Phone, Purpose};

use crate::Error;

/// A person as the vault stores them.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: PersonName,
    pub email: Email,
    pub phone: Phone,
}

impl Person {
    /// The value of one field in its stored form.
    pub fn value(&self, field: Field) -> Option<&str> {
        match field {
            Field::Surname => Some(self.name.surname.as_str()),
            Field::GivenName => Some(self.name.given_name.as_str()),
            Field::Patronymic => self.name.patronymic.as_ref().map(NamePart::as_str),
            Field::Email => Some(self.email.as_str()),
            Field::Phone => Some(self.phone.e164()),
        }
    }
}

/// A new value for one field (rectification): `None` clears an optional field.
#[derive(Debug, Clone)]
pub enum FieldUpdate {
    Name(Field, Option<NamePart>),
    Email(Email),
    Phone(Phone),
}

/// What a lookup searches for.
#[derive(Debug, Clone)]
pub enum LookupKey {
    Email(Email),
    Phone(Phone),
}

pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

pub fn person(input: Option<proto::PersonInput>) -> Result<Person, Error> {
    let input = input.ok_or_else(|| Error::invalid("person", "is required"))?;
    let part = |field: &str, value: &str| {
        NamePart::parse(value).map_err(|e| Error::invalid(format!("person.{field}"), e.reason))
    };
    let name = PersonName {
        surname: part("surname", &input.surname)?,
        given_name: part("given_name", &input.given_name)?,
        patronymic: if input.patronymic.trim().is_empty() {
            None
        } else {
            Some(part("patronymic", &input.patronymic)?)
        },
    };
    let email = Email::parse(&input.email).map_err(|e| Error::invalid("person.email", e.reason))?;
    let phone = Phone::parse(&input.phone).map_err(|e| Error::invalid("person.phone", e.reason))?;
    Ok(Person { name, email, phone })
}

pub fn idempotency_key(key: &str) -> Result<Option<String>, Error> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(Error::invalid(
            "idempotency_key",
            format!("is longer than {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid("idempotency_key", "must be printable ASCII without spaces"));
    }
    Ok(Some(key.to_owned()))
}

pub fn field(value: i32, name: &str) -> Result<Field, Error> {
    qupia_api::convert::field(value).map_err(|reason| Error::invalid(name, reason))
}

pub fn fields(values: &[i32], name: &str) -> Result<Vec<Field>, Error> {
    let mut fields = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let field = field(*value, &format!("{name}[{i}]"))?;
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}

pub fn field_to_proto(field: Field) -> types::Field {
    qupia_api::convert::field_to_proto(field)
}

pub fn purpose(value: i32, name: &str) -> Result<Purpose, Error> {
    qupia_api::convert::purpose(value).map_err(|reason| Error::invalid(name, reason))
}

pub fn lookup_key(key: Option<proto::lookup_request::Key>) -> Result<LookupKey, Error> {
    match key {
        Some(proto::lookup_request::Key::Email(email)) => {
            Email::parse(&email).map(LookupKey::Email).map_err(|e| Error::invalid("email", e.reason))
        }
        Some(proto::lookup_request::Key::Phone(phone)) => {
            Phone::parse(&phone).map(LookupKey::Phone).map_err(|e| Error::invalid("phone", e.reason))
        }
        None => Err(Error::invalid("key", "an e-mail or a phone is required")),
    }
}

pub fn field_update(field: Field, value: &str) -> Result<FieldUpdate, Error> {
    match field {
        Field::Email => Email::parse(value).map(FieldUpdate::Email).map_err(|e| Error::invalid("value", e.reason)),
        Field::Phone => Phone::parse(value).map(FieldUpdate::Phone).map_err(|e| Error::invalid("value", e.reason)),
        Field::Patronymic if value.trim().is_empty() => Ok(FieldUpdate::Name(field, None)),
        Field::Surname | Field::GivenName | Field::Patronymic => NamePart::parse(value)
            .map(|part| FieldUpdate::Name(field, Some(part)))
            .map_err(|e| Error::invalid("value", e.reason)),
    }
}
