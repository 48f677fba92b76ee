//! Validated, normalised personal-data types that every Qupia service uses at its edge:
//! a request is parsed into [`PersonName`], [`Email`], [`Phone`], [`Field`] and
//! [`Purpose`] once, and nothing malformed travels further ("parse, don't validate").
//! The normalised forms are what the vault encrypts and what its blind index hashes, so
//! two spellings of the same e-mail or phone must come out identical here. Because these
//! values are personal data, the types never print them: `Debug` is redacted, there is no
//! `Display`, and an [`InvalidValue`] says what is wrong without repeating the input.

mod email;
mod error;
mod field;
mod name;
mod phone;
mod purpose;

pub use email::Email;
pub use error::InvalidValue;
pub use field::Field;
pub use name::{NamePart, PersonName};
pub use phone::Phone;
pub use purpose::Purpose;
