//! Requests parsed into validated values at the edge: account ids, the registration
//! header, sign-in keys, profile changes, consent changes and documents. A malformed
//! request is refused here with INVALID_ARGUMENT naming the request field, and never
//! reaches the gateway or the database. Reasons never repeat the value.
//!
//! Names, e-mail addresses and phone numbers are checked with `qupia-domain`, the same
//! parsers the vault runs: cheap, and the forms sent on are the normalised ones the
//! vault would store anyway.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use qupia_api::accounts::v1 as proto;
use qupia_api::types::v1 as types;
use qupia_domain::{Email, Field, NamePart, PersonName, Phone, Purpose};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use crate::Error;

const ACCOUNT_ID_PREFIX: &str = "acc_";
const ACCOUNT_ID_BYTES: usize = 16;
/// `acc_` and base64url without padding of 16 bytes.
const ACCOUNT_ID_LEN: usize = ACCOUNT_ID_PREFIX.len() + 22;
/// `qpd_` and base64url of the vault's 26 token bytes.
const DOCUMENT_TOKEN_PREFIX: &str = "qpd_";
const DOCUMENT_TOKEN_LEN: usize = 39;
const MAX_IDEMPOTENCY_KEY: usize = 128;
const MAX_RECIPIENT: usize = 64;

/// An account's id: 16 random bytes from the operating system, derived from nothing,
/// so it says nothing about the person or the time and cannot be guessed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountId([u8; ACCOUNT_ID_BYTES]);

impl AccountId {
    pub fn generate() -> AccountId {
        let mut id = [0u8; ACCOUNT_ID_BYTES];
        OsRng.fill_bytes(&mut id);
        AccountId(id)
    }

    /// Parses the text form; only the canonical spelling is accepted, so each account
    /// has exactly one id.
    pub fn parse(text: &str, field: &str) -> Result<AccountId, Error> {
        let malformed = || Error::invalid(field, "is not a well-formed account id");
        if text.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let encoded =
            text.strip_prefix(ACCOUNT_ID_PREFIX).filter(|_| text.len() == ACCOUNT_ID_LEN).ok_or_else(malformed)?;
        // The decoder refuses non-zero trailing bits, which keeps the spelling canonical.
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
        Ok(AccountId(bytes.try_into().map_err(|_| malformed())?))
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ACCOUNT_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

/// Whose data a registration enters (clause 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attestation {
    /// The person registering attests that the data is their own.
    OwnData,
    /// Another person's data, under the authority of a document that comes with it.
    Authorised,
}

impl Attestation {
    /// The stored name; these strings are in the database and must never change.
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::OwnData => "own_data",
            Attestation::Authorised => "authorised",
        }
    }

    pub fn from_stored(text: &str) -> Option<Attestation> {
        [Attestation::OwnData, Attestation::Authorised].into_iter().find(|a| a.as_str() == text)
    }

    fn parse(value: i32, field: &str) -> Result<Attestation, Error> {
        match proto::Attestation::try_from(value) {
            Ok(proto::Attestation::OwnData) => Ok(Attestation::OwnData),
            Ok(proto::Attestation::Authorised) => Ok(Attestation::Authorised),
            Ok(proto::Attestation::Unspecified) => Err(Error::invalid(field, "must say whose data this is")),
            Err(_) => Err(Error::invalid(field, "is not a known attestation")),
        }
    }

    pub fn to_proto(self) -> proto::Attestation {
        match self {
            Attestation::OwnData => proto::Attestation::OwnData,
            Attestation::Authorised => proto::Attestation::Authorised,
        }
    }
}

/// A consent-gated purpose, and the third party for `third_party_transfer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentSubject {
    pub purpose: Purpose,
    /// Empty for every purpose but `third_party_transfer`.
    pub recipient: String,
}

impl ConsentSubject {
    /// `prefix` is the path of the message holding `purpose` and `recipient` ("" or
    /// "header.consents[2].").
    fn parse(purpose: i32, recipient: &str, prefix: &str) -> Result<ConsentSubject, Error> {
        let purpose_field = format!("{prefix}purpose");
        let purpose = qupia_api::convert::purpose(purpose).map_err(|reason| Error::invalid(&purpose_field, reason))?;
        if !purpose.requires_consent() {
            return Err(Error::invalid(
                purpose_field,
                "must be a purpose that needs consent: advertising, statistics or third_party_transfer",
            ));
        }
        let recipient_field = format!("{prefix}recipient");
        match (purpose, recipient.is_empty()) {
            (Purpose::ThirdPartyTransfer, true) => {
                Err(Error::invalid(recipient_field, "is required for third_party_transfer"))
            }
            (Purpose::ThirdPartyTransfer, false) if !is_recipient(recipient) => Err(Error::invalid(
                recipient_field,
                "must be a lowercase identifier of letters, digits, '.', '_' or '-', at most 64 characters",
            )),
            (Purpose::ThirdPartyTransfer, false) | (_, true) => {
                Ok(ConsentSubject { purpose, recipient: recipient.to_owned() })
            }
            (_, false) => Err(Error::invalid(recipient_field, "is only for third_party_transfer")),
        }
    }
}

/// The consent ledger's rule for a third party's identifier.
fn is_recipient(value: &str) -> bool {
    value.len() <= MAX_RECIPIENT
        && value.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// The first message of a registration, validated.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: PersonName,
    pub email: Email,
    pub phone: Phone,
    pub consents: Vec<ConsentSubject>,
    pub policy_version: i64,
    pub attestation: Attestation,
    pub idempotency_key: Option<String>,
}

fn name_part(value: &str, field: &str) -> Result<NamePart, Error> {
    NamePart::parse(value).map_err(|e| Error::invalid(field, e.reason))
}

/// A patronymic: optional, so empty (or only spaces) means none.
fn patronymic(value: &str, field: &str) -> Result<Option<NamePart>, Error> {
    if value.trim().is_empty() { Ok(None) } else { name_part(value, field).map(Some) }
}

fn email(value: &str, field: &str) -> Result<Email, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Email::parse(value).map_err(|e| Error::invalid(field, e.reason))
}

fn phone(value: &str, field: &str) -> Result<Phone, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Phone::parse(value).map_err(|e| Error::invalid(field, e.reason))
}

impl Registration {
    /// Parses the header; fields are named by their path in `RegisterRequest`.
    pub fn parse(header: proto::RegistrationHeader) -> Result<Registration, Error> {
        let name = PersonName {
            surname: name_part(&header.surname, "header.surname")?,
            given_name: name_part(&header.given_name, "header.given_name")?,
            patronymic: patronymic(&header.patronymic, "header.patronymic")?,
        };
        let email = email(&header.email, "header.email")?;
        let phone = phone(&header.phone, "header.phone")?;
        let mut consents: Vec<ConsentSubject> = Vec::with_capacity(header.consents.len());
        for (i, choice) in header.consents.iter().enumerate() {
            let prefix = format!("header.consents[{i}].");
            let subject = ConsentSubject::parse(choice.purpose, &choice.recipient, &prefix)?;
            if consents.contains(&subject) {
                return Err(Error::invalid(format!("header.consents[{i}]"), "repeats an earlier choice"));
            }
            consents.push(subject);
        }
        if header.policy_version <= 0 {
            return Err(Error::invalid(
                "header.policy_version",
                "must be the version of the privacy policy the person accepted",
            ));
        }
        let attestation = Attestation::parse(header.attestation, "header.attestation")?;
        let idempotency_key = match header.idempotency_key.as_str() {
            "" => None,
            key if key.len() <= MAX_IDEMPOTENCY_KEY && key.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(key.to_owned())
            }
            _ => {
                return Err(Error::invalid(
                    "header.idempotency_key",
                    "must be at most 128 printable ASCII characters without spaces",
                ));
            }
        };
        Ok(Registration {
            name,
            email,
            phone,
            consents,
            policy_version: header.policy_version,
            attestation,
            idempotency_key,
        })
    }

    /// The person as the gateway's `Tokenize` takes them, in normalised form.
    pub fn person_input(&self) -> qupia_api::vault::v1::PersonInput {
        qupia_api::vault::v1::PersonInput {
            surname: self.name.surname.as_str().to_owned(),
            given_name: self.name.given_name.as_str().to_owned(),
            patronymic: self.name.patronymic.as_ref().map(|p| p.as_str().to_owned()).unwrap_or_default(),
            email: self.email.as_str().to_owned(),
            phone: self.phone.e164().to_owned(),
        }
    }
}

/// The idempotency key sent to the gateway for `key` from `caller`: the vault scopes
/// keys by the gateway's caller (always this service), so keys are scoped here by our
/// own caller, lest the web front end and the CLI replay each other's registrations.
/// A digest also keeps whatever the caller put in the key out of the vault.
pub fn scoped_idempotency_key(caller: &str, key: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"qupia.accounts.idempotency.v1\0");
    digest.update(caller.as_bytes());
    digest.update(b"\0");
    digest.update(key.as_bytes());
    hex::encode(digest.finalize())
}

/// Why a document is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// The scanned identity document (clause 1.6).
    Identity,
    /// The authority to enter another person's data (clause 2.4).
    Authorisation,
}

impl DocumentKind {
    /// The request field its content arrives in.
    pub fn field(self) -> &'static str {
        match self {
            DocumentKind::Identity => "identity_document_chunk",
            DocumentKind::Authorisation => "authorisation_document_chunk",
        }
    }

    pub fn to_proto(self) -> types::DocumentKind {
        match self {
            DocumentKind::Identity => types::DocumentKind::Identity,
            DocumentKind::Authorisation => types::DocumentKind::Authorisation,
        }
    }
}

/// What a document's first bytes say it is: PDF, JPEG or PNG, the types the vault
/// keeps. The vault judges the content again; this refuses the obvious mistake (a
/// text file, an empty upload) before anything is stored.
pub fn document_type(content: &[u8]) -> Option<types::DocumentType> {
    if content.starts_with(b"%PDF-") {
        Some(types::DocumentType::Pdf)
    } else if content.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(types::DocumentType::Jpeg)
    } else if content.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(types::DocumentType::Png)
    } else {
        None
    }
}

/// A document token's shape (`qpd_` and 35 base64url characters); only the vault can
/// tell a forged one.
pub fn document_token(value: &str, field: &str) -> Result<String, Error> {
    let well_formed = value.len() == DOCUMENT_TOKEN_LEN
        && value.starts_with(DOCUMENT_TOKEN_PREFIX)
        && value.bytes().skip(DOCUMENT_TOKEN_PREFIX.len()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed { Ok(value.to_owned()) } else { Err(Error::invalid(field, "is not a well-formed document token")) }
}

/// How a person signs in.
#[derive(Debug, Clone)]
pub enum SignInKey {
    Email(Email),
    Phone(Phone),
}

impl SignInKey {
    pub fn parse(request: proto::SignInRequest) -> Result<SignInKey, Error> {
        match request.key {
            Some(proto::sign_in_request::Key::Email(value)) => Ok(SignInKey::Email(email(&value, "email")?)),
            Some(proto::sign_in_request::Key::Phone(value)) => Ok(SignInKey::Phone(phone(&value, "phone")?)),
            None => Err(Error::invalid("key", "an e-mail address or a phone number is required")),
        }
    }

    /// What the gateway's `Lookup` takes.
    pub fn lookup_key(&self) -> qupia_api::gateway::v1::lookup_request::Key {
        use qupia_api::gateway::v1::lookup_request::Key;
        match self {
            SignInKey::Email(email) => Key::Email(email.as_str().to_owned()),
            SignInKey::Phone(phone) => Key::Phone(phone.e164().to_owned()),
        }
    }

    /// What was looked for, for a NOT_FOUND that says nothing of the value.
    pub fn not_found(&self) -> &'static str {
        match self {
            SignInKey::Email(_) => "no account has this e-mail address",
            SignInKey::Phone(_) => "no account has this phone number",
        }
    }
}

/// A rectification: the fields to change and their new values, normalised, in the
/// order surname, given name, patronymic, e-mail, phone. An empty patronymic removes it.
#[derive(Clone)]
pub struct ProfileChanges(pub Vec<(Field, String)>);

impl fmt::Debug for ProfileChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<Field> = self.0.iter().map(|(field, _)| *field).collect();
        write!(f, "ProfileChanges({fields:?})")
    }
}

impl ProfileChanges {
    /// Checks every change before any is made, so that a bad one changes nothing.
    pub fn parse(request: &proto::UpdateProfileRequest) -> Result<ProfileChanges, Error> {
        let mut changes = Vec::new();
        if let Some(value) = &request.surname {
            changes.push((Field::Surname, name_part(value, "surname")?.as_str().to_owned()));
        }
        if let Some(value) = &request.given_name {
            changes.push((Field::GivenName, name_part(value, "given_name")?.as_str().to_owned()));
        }
        if let Some(value) = &request.patronymic {
            let part = patronymic(value, "patronymic")?;
            changes.push((Field::Patronymic, part.map(|p| p.as_str().to_owned()).unwrap_or_default()));
        }
        if let Some(value) = &request.email {
            changes.push((Field::Email, email(value, "email")?.as_str().to_owned()));
        }
        if let Some(value) = &request.phone {
            changes.push((Field::Phone, phone(value, "phone")?.e164().to_owned()));
        }
        if changes.is_empty() {
            return Err(Error::invalid(
                "request",
                "must change at least one of surname, given_name, patronymic, email, phone",
            ));
        }
        Ok(ProfileChanges(changes))
    }
}

/// A consent to grant or withdraw.
#[derive(Debug, Clone)]
pub enum ConsentChange {
    /// Under `policy_version`, or the version in force when `None`.
    Grant {
        subject: ConsentSubject,
        policy_version: Option<i64>,
    },
    Withdraw {
        subject: ConsentSubject,
    },
}

impl ConsentChange {
    pub fn parse(request: &proto::ChangeConsentRequest) -> Result<ConsentChange, Error> {
        let action = match proto::ConsentAction::try_from(request.action) {
            Ok(proto::ConsentAction::Unspecified) => return Err(Error::invalid("action", "must be grant or withdraw")),
            Ok(action) => action,
            Err(_) => return Err(Error::invalid("action", "is not a known action")),
        };
        let subject = ConsentSubject::parse(request.purpose, &request.recipient, "")?;
        match (action, request.policy_version) {
            (_, version) if version < 0 => Err(Error::invalid("policy_version", "must not be negative")),
            (proto::ConsentAction::Grant, 0) => Ok(ConsentChange::Grant { subject, policy_version: None }),
            (proto::ConsentAction::Grant, version) => {
                Ok(ConsentChange::Grant { subject, policy_version: Some(version) })
            }
            (_, 0) => Ok(ConsentChange::Withdraw { subject }),
            (_, _) => Err(Error::invalid(
                "policy_version",
                "must be 0 for a withdrawal, which is recorded under the version in force",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    fn header() -> proto::RegistrationHeader {
        proto::RegistrationHeader {
            surname: " Нұрланова ".into(),
            given_name: "Әйгерім".into(),
            patronymic: "".into(),
            email: " Aigerim@Mail.KZ ".into(),
            phone: "8 (701) 123-45-67".into(),
            consents: vec![proto::ConsentChoice { purpose: types::Purpose::Advertising as i32, recipient: "".into() }],
            policy_version: 1,
            attestation: proto::Attestation::OwnData as i32,
            idempotency_key: "".into(),
        }
    }

    #[test]
    fn account_ids_are_random_and_round_trip_only_in_their_one_spelling() {
        let id = AccountId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), ACCOUNT_ID_LEN);
        assert!(text.starts_with("acc_"));
        assert_eq!(AccountId::parse(&text, "account_id").unwrap(), id);
        assert_ne!(AccountId::generate(), id);
        for bad in
            ["", "acc_", "acc_AAAAAAAAAAAAAAAAAAAAAB", "qpp_AAAAAAAAAAAAAAAAAAAAAA", "acc_AAAAAAAAAAAAAAAAAAAA*A"]
        {
            assert_eq!(field_of(AccountId::parse(bad, "account_id").unwrap_err()), "account_id", "{bad:?}");
        }
        // Non-zero trailing bits: another spelling of some id, refused.
        assert!(AccountId::parse("acc_AAAAAAAAAAAAAAAAAAAAAB", "account_id").is_err());
    }

    #[test]
    fn a_registration_header_is_normalised_and_each_bad_field_named() {
        let registration = Registration::parse(header()).expect("valid");
        let person = registration.person_input();
        assert_eq!(person.surname, "Нұрланова");
        assert_eq!(person.email, "Aigerim@mail.kz");
        assert_eq!(person.phone, "+77011234567");
        assert_eq!(person.patronymic, "");

        type Breaks = fn(&mut proto::RegistrationHeader);
        let broken: Vec<(Breaks, &str)> = vec![
            (|h| h.surname = " ".into(), "header.surname"),
            (|h| h.given_name = "R2D2".into(), "header.given_name"),
            (|h| h.patronymic = "x\u{202e}y".into(), "header.patronymic"),
            (|h| h.email = "no-at-sign".into(), "header.email"),
            (|h| h.email = "".into(), "header.email"),
            (|h| h.phone = "12".into(), "header.phone"),
            (|h| h.policy_version = 0, "header.policy_version"),
            (|h| h.attestation = 0, "header.attestation"),
            (|h| h.attestation = 9, "header.attestation"),
            (|h| h.idempotency_key = "has space".into(), "header.idempotency_key"),
            (|h| h.consents[0].purpose = types::Purpose::ServiceDelivery as i32, "header.consents[0].purpose"),
            (|h| h.consents[0].recipient = "bank-a".into(), "header.consents[0].recipient"),
            (
                |h| {
                    h.consents.push(proto::ConsentChoice {
                        purpose: types::Purpose::ThirdPartyTransfer as i32,
                        recipient: "".into(),
                    })
                },
                "header.consents[1].recipient",
            ),
            (
                |h| {
                    h.consents.push(proto::ConsentChoice {
                        purpose: types::Purpose::ThirdPartyTransfer as i32,
                        recipient: "Bank A".into(),
                    })
                },
                "header.consents[1].recipient",
            ),
            (|h| h.consents.push(h.consents[0].clone()), "header.consents[1]"),
        ];
        for (breaks, field) in broken {
            let mut h = header();
            breaks(&mut h);
            let err = Registration::parse(h).unwrap_err();
            let message = err.to_string();
            assert_eq!(field_of(err), field);
            assert!(!message.contains("R2D2") && !message.contains("no-at-sign"), "never echoes: {message}");
        }
    }

    #[test]
    fn idempotency_keys_are_scoped_by_caller() {
        let web = scoped_idempotency_key("spiffe://qupia/ns/default/sa/web", "k1");
        assert_eq!(web, scoped_idempotency_key("spiffe://qupia/ns/default/sa/web", "k1"));
        assert_ne!(web, scoped_idempotency_key("spiffe://qupia/ns/default/sa/qupiactl", "k1"));
        assert_ne!(web, scoped_idempotency_key("spiffe://qupia/ns/default/sa/web", "k2"));
        assert_eq!(web.len(), 64);
    }

    #[test]
    fn documents_are_judged_by_their_first_bytes() {
        assert_eq!(document_type(b"%PDF-1.7\n"), Some(types::DocumentType::Pdf));
        assert_eq!(document_type(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(types::DocumentType::Jpeg));
        assert_eq!(document_type(b"\x89PNG\r\n\x1a\n\0"), Some(types::DocumentType::Png));
        assert_eq!(document_type(b""), None);
        assert_eq!(document_type(b"hello"), None);
    }

    #[test]
    fn profile_changes_name_the_field_and_keep_order() {
        let request = proto::UpdateProfileRequest {
            account_id: String::new(),
            phone: Some("+7 701 555 12 34".into()),
            patronymic: Some(" ".into()),
            ..Default::default()
        };
        let changes = ProfileChanges::parse(&request).unwrap();
        assert_eq!(changes.0, vec![(Field::Patronymic, String::new()), (Field::Phone, "+77015551234".into())]);
        assert!(!format!("{changes:?}").contains("555"), "Debug shows fields, not values");

        let bad = proto::UpdateProfileRequest { email: Some("broken".into()), ..Default::default() };
        assert_eq!(field_of(ProfileChanges::parse(&bad).unwrap_err()), "email");
        assert_eq!(field_of(ProfileChanges::parse(&proto::UpdateProfileRequest::default()).unwrap_err()), "request");
    }

    #[test]
    fn consent_changes_take_consent_gated_purposes_only() {
        let request = |action: proto::ConsentAction, purpose: types::Purpose, recipient: &str, version| {
            proto::ChangeConsentRequest {
                account_id: String::new(),
                action: action as i32,
                purpose: purpose as i32,
                recipient: recipient.into(),
                policy_version: version,
            }
        };
        use proto::ConsentAction::{Grant, Unspecified, Withdraw};
        use types::Purpose::{Advertising, ServiceDelivery, ThirdPartyTransfer};
        assert!(matches!(
            ConsentChange::parse(&request(Grant, Advertising, "", 0)),
            Ok(ConsentChange::Grant { policy_version: None, .. })
        ));
        assert!(matches!(
            ConsentChange::parse(&request(Grant, ThirdPartyTransfer, "bank-a", 3)),
            Ok(ConsentChange::Grant { policy_version: Some(3), .. })
        ));
        assert!(matches!(
            ConsentChange::parse(&request(Withdraw, Advertising, "", 0)),
            Ok(ConsentChange::Withdraw { .. })
        ));
        for (r, field) in [
            (request(Unspecified, Advertising, "", 0), "action"),
            (request(Grant, ServiceDelivery, "", 0), "purpose"),
            (request(Grant, ThirdPartyTransfer, "", 0), "recipient"),
            (request(Grant, Advertising, "", -1), "policy_version"),
            (request(Withdraw, Advertising, "", 2), "policy_version"),
        ] {
            assert_eq!(field_of(ConsentChange::parse(&r).unwrap_err()), field);
        }
    }
}
