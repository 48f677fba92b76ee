//! What the gateway asks the policy, and what it gets back.

use qupia_domain::{Field, Purpose};

/// A resource the gateway asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A field of the person's record, to be seen in clear.
    Field(Field),
    /// The scanned document given at registration (privacy policy 1.6).
    Document,
    /// Aggregate statistics over consenting people; never a value in clear.
    Aggregate,
}

impl Resource {
    /// Every resource a policy can speak about, in the order explanations list them.
    pub const ALL: [Resource; 7] = [
        Resource::Field(Field::Surname),
        Resource::Field(Field::GivenName),
        Resource::Field(Field::Patronymic),
        Resource::Field(Field::Email),
        Resource::Field(Field::Phone),
        Resource::Document,
        Resource::Aggregate,
    ];

    /// The Cedar entity that stands for this resource: its type and id as written in
    /// policies (`Field::"email"`, `Field::"document"`, `Aggregate::"statistics"`).
    pub(crate) fn entity(self) -> (&'static str, &'static str) {
        match self {
            Resource::Field(field) => ("Field", field.as_str()),
            Resource::Document => ("Field", "document"),
            Resource::Aggregate => ("Aggregate", "statistics"),
        }
    }

    /// How reasons name the resource: "see surname", "see aggregates".
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Resource::Field(field) => field.as_str(),
            Resource::Document => "document",
            Resource::Aggregate => "aggregates",
        }
    }
}

/// One question: may `caller` see `resource` for `purpose`?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// The caller's service identity (a SPIFFE ID from its mTLS certificate).
    pub caller: &'a str,
    pub purpose: Purpose,
    pub resource: Resource,
    /// The third party, for `third_party_transfer`; `None` (seen by policies as "")
    /// otherwise.
    pub recipient: Option<&'a str>,
}

/// The policy's answer to one [`AccessRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision (the permits that matched, or
    /// the forbids that overrode them); empty on default deny.
    pub policies: Vec<String>,
    /// A readable, lowercase reason without a final period, e.g.
    /// `permitted by "advertising-contacts"` or
    /// `no policy permits spiffe://qupia/ns/default/sa/marketing to see surname for advertising`.
    pub reason: String,
}

/// A decision with everything a reviewer needs to understand it, for the Explain RPC
/// and `qupiactl policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    /// The determining policies, in the order they appear in the policy text.
    pub rules: Vec<ExplainedRule>,
    /// Policies that failed to evaluate (and were therefore ignored), with the reason.
    pub errors: Vec<String>,
}

/// One determining policy, as its author annotated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainedRule {
    pub id: String,
    /// The `@description` annotation ("" when the policy has none).
    pub description: String,
    /// "permit" or "forbid".
    pub effect: String,
}
