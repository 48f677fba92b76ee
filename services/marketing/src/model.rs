//! Request values parsed into domain types at the edge: ids, person tokens, names,
//! channels and delivery states. A parse error names the request field and never
//! repeats the value.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use qupia_api::marketing::v1 as proto;
use qupia_domain::Field;
use rand::RngCore;

use crate::Error;

/// The longest audience or campaign name.
const MAX_LABEL_CHARS: usize = 200;

/// A new random id: `prefix` and 22 base64url characters of 16 random bytes, so it
/// says nothing about the time, the order or anyone's data.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn is_id(value: &str, prefix: &str) -> bool {
    value.len() == prefix.len() + 22
        && value.starts_with(prefix)
        && value[prefix.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses an id of the given prefix; anything else could not have been issued here.
fn id(value: &str, prefix: &str, field: &str, what: &'static str) -> Result<String, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if is_id(value, prefix) { Ok(value.to_owned()) } else { Err(Error::invalid(field, format!("is not {what} id"))) }
}

pub fn audience_id(value: &str, field: &str) -> Result<String, Error> {
    id(value, "aud_", field, "an audience")
}

pub fn campaign_id(value: &str, field: &str) -> Result<String, Error> {
    id(value, "cmp_", field, "a campaign")
}

/// A person token: `qpp_` and 35 base64url characters. Only the vault can tell a
/// real one from a forgery; here a value that cannot be one is refused.
pub fn is_person_token(token: &str) -> bool {
    token.len() == 39
        && token.starts_with("qpp_")
        && token[4..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Person tokens of a request, in order, each once. `max` bounds one call.
pub fn person_tokens(values: &[String], field: &str, max: usize) -> Result<Vec<String>, Error> {
    if values.len() > max {
        return Err(Error::invalid(field, format!("has more than {max} tokens")));
    }
    let mut seen = HashSet::with_capacity(values.len());
    let mut tokens = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        if !is_person_token(value) {
            return Err(Error::invalid(format!("{field}[{i}]"), "is not a person token"));
        }
        if seen.insert(value.as_str()) {
            tokens.push(value.clone());
        }
    }
    Ok(tokens)
}

/// An audience or campaign name: 1 to 200 characters, no control characters, not
/// only spaces.
pub fn label(value: &str, field: &str) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_LABEL_CHARS {
        return Err(Error::invalid(field, format!("must be at most {MAX_LABEL_CHARS} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// How a campaign reaches people; each channel reveals exactly one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    /// The field the channel reveals, and the only one.
    pub fn field(self) -> Field {
        match self {
            Channel::Email => Field::Email,
            Channel::Sms => Field::Phone,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    pub fn parse_stored(value: &str) -> Option<Channel> {
        match value {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }

    pub fn from_proto(value: i32, field: &str) -> Result<Channel, Error> {
        match proto::Channel::try_from(value) {
            Ok(proto::Channel::Email) => Ok(Channel::Email),
            Ok(proto::Channel::Sms) => Ok(Channel::Sms),
            Ok(proto::Channel::Unspecified) => Err(Error::invalid(field, "must name a channel")),
            Err(_) => Err(Error::invalid(field, "is not a known channel")),
        }
    }

    pub fn to_proto(self) -> proto::Channel {
        match self {
            Channel::Email => proto::Channel::Email,
            Channel::Sms => proto::Channel::Sms,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one outbox message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    Pending,
    Sent,
    SkippedNoConsent,
    SkippedErased,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::SkippedNoConsent => "skipped_no_consent",
            DeliveryState::SkippedErased => "skipped_erased",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse_stored(value: &str) -> Option<DeliveryState> {
        match value {
            "pending" => Some(DeliveryState::Pending),
            "sent" => Some(DeliveryState::Sent),
            "skipped_no_consent" => Some(DeliveryState::SkippedNoConsent),
            "skipped_erased" => Some(DeliveryState::SkippedErased),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_parse_back() {
        let a = new_id("aud_");
        let b = new_id("aud_");
        assert_ne!(a, b);
        assert_eq!(audience_id(&a, "audience_id").unwrap(), a);
        assert_eq!(campaign_id(&a, "campaign_id").unwrap_err().to_string(), "campaign_id: is not a campaign id");
        assert_eq!(audience_id("", "audience_id").unwrap_err().to_string(), "audience_id: is required");
    }

    #[test]
    fn tokens_are_checked_and_deduplicated_without_echoing() {
        let token = format!("qpp_{}", "A".repeat(35));
        let tokens = person_tokens(&[token.clone(), token.clone()], "person_tokens", 10).unwrap();
        assert_eq!(tokens, vec![token.clone()]);
        let err = person_tokens(&[token, "someone@example.com".into()], "person_tokens", 10).unwrap_err();
        assert_eq!(err.to_string(), "person_tokens[1]: is not a person token");
        assert!(person_tokens(&vec![String::new(); 3], "person_tokens", 2).is_err());
    }

    #[test]
    fn labels_refuse_empty_long_and_control_text() {
        assert!(label("Spring courses", "name").is_ok());
        assert!(label("  ", "name").is_err());
        assert!(label(&"x".repeat(201), "name").is_err());
        assert!(label("a\nb", "name").is_err());
    }
}
