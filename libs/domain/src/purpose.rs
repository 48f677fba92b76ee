//! The purposes for which personal data may be revealed (privacy policy 2.2, 3.4, 3.5).

use std::fmt;
use std::str::FromStr;

use crate::InvalidValue;

/// Why a caller asks to see personal data. Every reveal names one, and the policy
/// decides per caller, purpose and field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    ServiceDelivery,
    Identification,
    Communication,
    Advertising,
    Statistics,
    LegalDisclosure,
    ThirdPartyTransfer,
}

impl Purpose {
    pub const ALL: [Purpose; 7] = [
        Purpose::ServiceDelivery,
        Purpose::Identification,
        Purpose::Communication,
        Purpose::Advertising,
        Purpose::Statistics,
        Purpose::LegalDisclosure,
        Purpose::ThirdPartyTransfer,
    ];

    /// The stable name of the purpose. These strings are stored in the consent history
    /// and the audit ledger and written in policies, so they must never change.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::ServiceDelivery => "service_delivery",
            Purpose::Identification => "identification",
            Purpose::Communication => "communication",
            Purpose::Advertising => "advertising",
            Purpose::Statistics => "statistics",
            Purpose::LegalDisclosure => "legal_disclosure",
            Purpose::ThirdPartyTransfer => "third_party_transfer",
        }
    }

    /// Whether the person's recorded consent is needed. The others rest on the contract
    /// (or, for a legal disclosure, on an approved request), not on consent. Spelled out
    /// per variant so that adding a purpose forces this decision.
    pub fn requires_consent(self) -> bool {
        match self {
            Purpose::Advertising | Purpose::Statistics | Purpose::ThirdPartyTransfer => true,
            Purpose::ServiceDelivery | Purpose::Identification | Purpose::Communication | Purpose::LegalDisclosure => {
                false
            }
        }
    }
}

impl FromStr for Purpose {
    type Err = InvalidValue;

    /// Accepts exactly the [`Purpose::as_str`] forms.
    fn from_str(s: &str) -> Result<Purpose, InvalidValue> {
        Purpose::ALL
            .into_iter()
            .find(|purpose| purpose.as_str() == s)
            .ok_or_else(|| InvalidValue::new("is not a known purpose"))
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purpose_round_trips_through_its_name() {
        for purpose in Purpose::ALL {
            assert_eq!(purpose.as_str().parse::<Purpose>(), Ok(purpose));
            assert_eq!(purpose.to_string(), purpose.as_str());
        }
    }

    #[test]
    fn stored_names_are_stable() {
        let names: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "service_delivery",
                "identification",
                "communication",
                "advertising",
                "statistics",
                "legal_disclosure",
                "third_party_transfer",
            ]
        );
    }

    #[test]
    fn consent_is_required_exactly_for_advertising_statistics_and_transfer() {
        let needing: Vec<Purpose> = Purpose::ALL.into_iter().filter(|p| p.requires_consent()).collect();
        assert_eq!(needing, [Purpose::Advertising, Purpose::Statistics, Purpose::ThirdPartyTransfer]);
    }

    #[test]
    fn unknown_names_are_refused_without_echoing_them() {
        for input in ["Advertising", "marketing", "service-delivery", ""] {
            let err = input.parse::<Purpose>().unwrap_err();
            assert_eq!(err.to_string(), "is not a known purpose");
        }
    }
}
