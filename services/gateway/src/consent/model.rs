//! The ledger's values, how a request is validated before it reaches storage, and how a
//! consent's state is judged from its latest event. No SQL here.

use qupia_domain::Purpose;

use super::ConsentError;

/// `qpp_` and base64url (no padding) of 26 bytes: a 16-byte id and a 10-byte tag.
const PERSON_TOKEN_PREFIX: &str = "qpp_";
const PERSON_TOKEN_LEN: usize = 39;
const MAX_CHANNEL: usize = 32;
const MAX_RECIPIENT: usize = 64;
const MAX_EVIDENCE: usize = 256;
/// Room for any SPIFFE id we issue, with a wide margin.
const MAX_IDENTITY: usize = 256;

/// What an event says about a consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentAction {
    Granted,
    Withdrawn,
}

impl ConsentAction {
    /// The stored name; these strings are in the database and must never change.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentAction::Granted => "granted",
            ConsentAction::Withdrawn => "withdrawn",
        }
    }

    pub(crate) fn from_stored(text: &str) -> Option<ConsentAction> {
        [ConsentAction::Granted, ConsentAction::Withdrawn].into_iter().find(|action| action.as_str() == text)
    }
}

/// One published version of the privacy policy (clauses 5.4, 5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// 1, 2, 3... without gaps.
    pub version: i64,
    /// Lowercase hex of the SHA-256 of the published text.
    pub text_sha256: String,
    /// The purposes whose consents given under earlier versions stop counting from this
    /// version on; sorted, without duplicates.
    pub reconsent_purposes: Vec<Purpose>,
    pub published_at_ms: i64,
    /// The publisher's identity (a SPIFFE id).
    pub published_by: String,
}

/// A grant or withdrawal to record.
#[derive(Debug, Clone)]
pub struct NewConsentEvent {
    /// The person's opaque token (`qpp_...`); only its shape is checked here, the vault
    /// authenticates it.
    pub person_token: String,
    /// One of the purposes that need consent: advertising, statistics,
    /// third_party_transfer.
    pub purpose: Purpose,
    /// A short lowercase identifier of the third party (such as `bank-a`); required for
    /// `third_party_transfer`, empty for every other purpose.
    pub recipient: String,
    pub action: ConsentAction,
    /// A grant must name the version in force: the person consents to the text they
    /// were shown, and a stale one is refused. A withdrawal may name any published
    /// version, or 0 (proto3's unset value) to be recorded under the current one: a
    /// withdrawal is never refused for naming an older text.
    pub policy_version: i64,
    /// How the consent was given: a lowercase identifier such as `web`, `mobile`,
    /// `paper` or `call-centre`, at most 32 characters.
    pub channel: String,
    /// A *reference* to the proof, such as a form id or a document token: never personal
    /// data itself (no name, e-mail, phone or scan), since the gateway's database must
    /// hold none. At most 256 printable ASCII characters without `@` or `+`, which keeps
    /// an e-mail address or an international phone number from being pasted in.
    /// Required for a grant (the controller must be able to show the consent); may be
    /// empty for a withdrawal, which must never be refused for want of paperwork.
    pub evidence: String,
    /// When a grant lapses, in unix milliseconds; must be in the future when recorded.
    /// Must be `None` for a withdrawal.
    pub expires_at_ms: Option<i64>,
    /// The caller's identity from its certificate (a SPIFFE id), not from the request.
    pub recorded_by: String,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEvent {
    /// A random UUID (v4): the "consent id" that reveal decisions and the audit ledger cite.
    pub id: String,
    /// The ledger's order of events; increases with every event, unlike the clock.
    pub seq: i64,
    pub person_token: String,
    pub purpose: Purpose,
    pub recipient: String,
    pub action: ConsentAction,
    pub policy_version: i64,
    pub channel: String,
    pub evidence: String,
    pub expires_at_ms: Option<i64>,
    pub recorded_at_ms: i64,
    pub recorded_by: String,
}

/// Whether a consent counts right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentCheck {
    /// The grant that makes it count.
    Active { consent_id: String },
    /// Why not, in words fit for a caller and a log: never personal data.
    Inactive { reason: String },
}

impl ConsentCheck {
    pub fn is_active(&self) -> bool {
        matches!(self, ConsentCheck::Active { .. })
    }

    pub(crate) fn none_recorded() -> ConsentCheck {
        ConsentCheck::Inactive { reason: "no consent recorded".to_owned() }
    }
}

/// Where one (purpose, recipient) of a person stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentState {
    pub purpose: Purpose,
    pub recipient: String,
    pub check: ConsentCheck,
    /// The event the check was judged from.
    pub latest: ConsentEvent,
}

/// Judges a consent from its latest event. `reconsent_version` is the newest policy
/// version that requires re-consent for the event's purpose, if any.
///
/// Withdrawal is reported first because it is the person's own, final word; re-consent
/// before expiry because a lapsed grant under an old text needs a new grant either way.
pub(crate) fn judge(latest: &ConsentEvent, reconsent_version: Option<i64>, now_ms: i64) -> ConsentCheck {
    let inactive = |reason: String| ConsentCheck::Inactive { reason };
    if latest.action == ConsentAction::Withdrawn {
        return inactive("consent withdrawn".to_owned());
    }
    if let Some(required) = reconsent_version
        && latest.policy_version < required
    {
        return inactive(format!(
            "consent predates policy version {required}, which requires re-consent for {}",
            latest.purpose
        ));
    }
    if latest.expires_at_ms.is_some_and(|expires| expires <= now_ms) {
        return inactive("consent expired".to_owned());
    }
    ConsentCheck::Active { consent_id: latest.id.clone() }
}

impl NewConsentEvent {
    /// Checks every field against the rules on [`NewConsentEvent`]; the first broken one
    /// is the error. Whether `policy_version` is the current one is the store's to check.
    pub(crate) fn validate(&self, now_ms: i64) -> Result<(), ConsentError> {
        validate_person_token(&self.person_token)?;
        validate_subject(self.purpose, &self.recipient)?;
        let granted = self.action == ConsentAction::Granted;
        if self.policy_version < 0 || (granted && self.policy_version == 0) {
            return Err(ConsentError::invalid("policy_version", "must be the number of a published policy version"));
        }
        if !is_lowercase_identifier(&self.channel, MAX_CHANNEL) {
            return Err(ConsentError::invalid(
                "channel",
                "must be a lowercase identifier of at most 32 characters, such as web",
            ));
        }
        validate_evidence(&self.evidence, granted)?;
        match (self.action, self.expires_at_ms) {
            (ConsentAction::Withdrawn, Some(_)) => {
                return Err(ConsentError::invalid("expires_at_ms", "must not be set on a withdrawal"));
            }
            (ConsentAction::Granted, Some(expires)) if expires <= now_ms => {
                return Err(ConsentError::invalid("expires_at_ms", "must be in the future"));
            }
            _ => {}
        }
        validate_identity("recorded_by", &self.recorded_by)
    }
}

/// The shape of a person token; the vault alone can tell a forged one.
///
/// The last character must leave the unused low bits zero (canonical base64, as the
/// vault's parser requires), so each token has one spelling and one history.
pub(crate) fn validate_person_token(token: &str) -> Result<(), ConsentError> {
    let well_formed = token.len() == PERSON_TOKEN_LEN
        && token.starts_with(PERSON_TOKEN_PREFIX)
        && token.bytes().skip(PERSON_TOKEN_PREFIX.len()).all(is_base64url)
        && token.bytes().last().and_then(base64url_value).is_some_and(|v| v & 0b11 == 0);
    if well_formed { Ok(()) } else { Err(ConsentError::invalid("person_token", "is not a well-formed person token")) }
}

/// Only purposes that rest on consent take it, and only a transfer has a recipient.
pub(crate) fn validate_subject(purpose: Purpose, recipient: &str) -> Result<(), ConsentError> {
    if !purpose.requires_consent() {
        return Err(ConsentError::invalid(
            "purpose",
            "takes no consent: it rests on the contract or an approved request",
        ));
    }
    match purpose {
        Purpose::ThirdPartyTransfer if recipient.is_empty() => {
            Err(ConsentError::invalid("recipient", "is required for third_party_transfer"))
        }
        Purpose::ThirdPartyTransfer if !is_recipient(recipient) => Err(ConsentError::invalid(
            "recipient",
            "must be a lowercase identifier of at most 64 characters, such as bank-a",
        )),
        Purpose::ThirdPartyTransfer => Ok(()),
        _ if !recipient.is_empty() => {
            Err(ConsentError::invalid("recipient", "must be empty for purposes other than third_party_transfer"))
        }
        _ => Ok(()),
    }
}

pub(crate) fn validate_evidence(evidence: &str, required: bool) -> Result<(), ConsentError> {
    if evidence.is_empty() {
        return if required {
            Err(ConsentError::invalid("evidence", "is required for a grant: a reference such as a form id"))
        } else {
            Ok(())
        };
    }
    let reference_like = evidence.len() <= MAX_EVIDENCE
        && evidence.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'@' && b != b'+');
    if reference_like {
        Ok(())
    } else {
        Err(ConsentError::invalid(
            "evidence",
            "must be a reference such as a form id, never personal data: at most 256 \
             printable ascii characters without '@' or '+'",
        ))
    }
}

/// A caller's identity as taken from its certificate: visible ASCII, bounded.
pub(crate) fn validate_identity(field: &'static str, identity: &str) -> Result<(), ConsentError> {
    if !identity.is_empty() && identity.len() <= MAX_IDENTITY && identity.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ConsentError::invalid(field, "must be the caller's identity, such as a spiffe id"))
    }
}

/// Lowercase hex of a SHA-256, exactly as `hex::encode` writes it.
pub(crate) fn validate_text_sha256(digest: &str) -> Result<(), ConsentError> {
    if digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ConsentError::invalid("text_sha256", "must be the sha-256 of the policy text as 64 lowercase hex digits"))
    }
}

/// The purposes a new version requires re-consent for, sorted and without duplicates.
pub(crate) fn reconsent_set(purposes: &[Purpose]) -> Result<Vec<Purpose>, ConsentError> {
    if purposes.iter().any(|p| !p.requires_consent()) {
        return Err(ConsentError::invalid("reconsent_purposes", "may only name purposes that need consent"));
    }
    let mut set = purposes.to_vec();
    set.sort_unstable();
    set.dedup();
    Ok(set)
}

/// `[a-z][a-z0-9_-]*`, at most `max` bytes.
fn is_lowercase_identifier(text: &str, max: usize) -> bool {
    text.len() <= max
        && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `[a-z0-9][a-z0-9._-]*`, at most 64 bytes: room for names like `kaspi.kz` or `1c-bitrix`.
fn is_recipient(text: &str) -> bool {
    text.len() <= MAX_RECIPIENT
        && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_base64url(b: u8) -> bool {
    base64url_value(b).is_some()
}

fn base64url_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: ConsentAction, policy_version: i64, expires_at_ms: Option<i64>) -> ConsentEvent {
        ConsentEvent {
            id: "c1".into(),
            seq: 1,
            person_token: format!("qpp_{}", "A".repeat(35)),
            purpose: Purpose::Advertising,
            recipient: String::new(),
            action,
            policy_version,
            channel: "web".into(),
            evidence: "form-1".into(),
            expires_at_ms,
            recorded_at_ms: 0,
            recorded_by: "spiffe://qupia/ns/test/sa/accounts".into(),
        }
    }

    #[test]
    fn judges_the_latest_event() {
        let active = ConsentCheck::Active { consent_id: "c1".into() };
        assert_eq!(judge(&event(ConsentAction::Granted, 1, None), None, 10), active);
        assert_eq!(judge(&event(ConsentAction::Granted, 2, Some(11)), Some(2), 10), active);
        let reason = |check: ConsentCheck| match check {
            ConsentCheck::Inactive { reason } => reason,
            ConsentCheck::Active { .. } => "active".to_owned(),
        };
        assert_eq!(reason(judge(&event(ConsentAction::Withdrawn, 1, None), None, 10)), "consent withdrawn");
        assert_eq!(reason(judge(&event(ConsentAction::Granted, 1, Some(10)), None, 10)), "consent expired");
        assert_eq!(
            reason(judge(&event(ConsentAction::Granted, 1, None), Some(3), 10)),
            "consent predates policy version 3, which requires re-consent for advertising"
        );
    }

    #[test]
    fn person_tokens_are_checked_for_shape_only() {
        let good = format!("qpp_{}", "A".repeat(35));
        assert!(validate_person_token(&good).is_ok());
        assert!(validate_person_token(&format!("qpp_{}w", &"-_09az".repeat(6)[..34])).is_ok());
        for bad in [
            String::new(),
            format!("qpf_{}", "A".repeat(35)),
            format!("qpp_{}", "A".repeat(34)),
            format!("qpp_{}", "A".repeat(36)),
            format!("qpp_{}=", "A".repeat(34)),
            format!("qpp_{}B", "A".repeat(34)), // unused low bits set: not canonical
            format!("qpp_{}ä", "A".repeat(33)),
        ] {
            assert!(validate_person_token(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn evidence_must_look_like_a_reference() {
        assert!(validate_evidence("form-2024/17 v2", true).is_ok());
        assert!(validate_evidence("", false).is_ok());
        for bad in ["", "aigerim.nurlanova@mail.kz", "+77011234567", "Нұрланова", "a\tb"] {
            assert!(validate_evidence(bad, true).is_err(), "{bad:?}");
        }
        assert!(validate_evidence(&"x".repeat(257), true).is_err());
    }

    #[test]
    fn reconsent_purposes_are_a_sorted_set_of_consent_purposes() {
        let set = reconsent_set(&[Purpose::Statistics, Purpose::Advertising, Purpose::Statistics]);
        assert_eq!(set.ok(), Some(vec![Purpose::Advertising, Purpose::Statistics]));
        assert!(reconsent_set(&[Purpose::ServiceDelivery]).is_err());
    }
}
