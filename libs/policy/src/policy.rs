//! One loaded, validated policy version and the questions it answers.

use std::fmt;
use std::sync::{Arc, LazyLock};

use cedar_policy::{Authorizer, Effect, Entities, PolicySet, Response};
use quick_cache::sync::Cache;
use qupia_domain::{Field, Purpose};
use sha2::{Digest, Sha256};

use crate::parse::{self, Rule};
use crate::{AccessRequest, Decision, ExplainedRule, Explanation, PolicyError, Resource, model};

/// Parsed once per process; [`Policy::default_policy`] hands out clones.
static DEFAULT: LazyLock<Policy> = LazyLock::new(|| {
    Policy::parse(Policy::DEFAULT_TEXT, "default").expect("the embedded default policy is valid; a unit test proves it")
});

/// Decisions remembered per policy version (distinct caller, purpose, resource and
/// recipient combinations; a gateway sees a handful of callers, so this is ample).
const DECISIONS_REMEMBERED: usize = 4096;
/// `permits_purpose` answers remembered per policy version.
const PURPOSES_REMEMBERED: usize = 1024;

/// A validated purpose policy: who may see which fields in clear for which purpose.
///
/// Policies never consult entity data (no attributes, no hierarchy), so decisions need
/// nothing but the request: the entity store is always empty.
#[derive(Clone)]
pub struct Policy {
    text: String,
    hash: String,
    set: PolicySet,
    rules: Vec<Rule>,
    memo: Arc<Memo>,
}

/// Answers this policy version has already given. A decision depends on nothing but
/// the request — the caller, purpose, resource and recipient; no entity data, no clock —
/// so a remembered one is exactly what Cedar would answer again. Each parsed version has
/// its own, so a new policy is never answered from an old one's memory. Bounded: an
/// answer that has been evicted is simply evaluated again.
struct Memo {
    decisions: Cache<DecisionKey, Decision>,
    purposes: Cache<(String, Purpose), bool>,
}

type DecisionKey = (String, Purpose, Resource, Option<String>);

impl Memo {
    fn new() -> Memo {
        Memo { decisions: Cache::new(DECISIONS_REMEMBERED), purposes: Cache::new(PURPOSES_REMEMBERED) }
    }
}

impl Policy {
    /// The policy the gateway enforces when no policy file is configured.
    pub const DEFAULT_TEXT: &'static str = include_str!("../policies/default.cedar");

    /// The Cedar schema every policy is validated against.
    pub const SCHEMA_TEXT: &'static str = parse::SCHEMA_TEXT;

    /// Parses and validates `text` against the schema in strict mode. Validator warnings
    /// (a rule that can never apply, look-alike or bidirectional characters) are refused
    /// like errors, and so are a missing or duplicate `@id` and templates. `origin` (a
    /// file path or "default") starts every line of an error message.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let parsed = parse::parse(text, origin)?;
        Ok(Policy {
            text: text.to_owned(),
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            set: parsed.set,
            rules: parsed.rules,
            memo: Arc::new(Memo::new()),
        })
    }

    /// The embedded default policy.
    pub fn default_policy() -> Policy {
        DEFAULT.clone()
    }

    /// The text the policy was parsed from, byte for byte.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the text, in lowercase hex: the policy version's hash, which consents
    /// and audit records name.
    pub fn hash_hex(&self) -> String {
        self.hash.clone()
    }

    /// The `@id`s of the rules, in the order of the text.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| rule.id.as_str())
    }

    /// May the caller see this resource for this purpose?
    pub fn decide(&self, request: &AccessRequest<'_>) -> Decision {
        let key: DecisionKey =
            (request.caller.to_owned(), request.purpose, request.resource, request.recipient.map(str::to_owned));
        if let Some(decision) = self.memo.decisions.get(&key) {
            return decision;
        }
        let (decision, errors) = self.evaluate(request);
        // A rule that failed to evaluate is a policy bug; its warning is logged on every
        // request rather than once.
        if errors.is_empty() {
            self.memo.decisions.insert(key, decision.clone());
        }
        decision
    }

    /// The fields of `wanted` the caller may see for `purpose` (all five name and
    /// contact fields when `wanted` is empty), and the refused ones with their reasons.
    /// Each field is judged once, in the order first asked for.
    pub fn allowed_fields(
        &self,
        caller: &str,
        purpose: Purpose,
        wanted: &[Field],
        recipient: Option<&str>,
    ) -> (Vec<Field>, Vec<(Field, Decision)>) {
        let wanted = if wanted.is_empty() { &Field::ALL[..] } else { wanted };
        let mut allowed = Vec::new();
        let mut denied: Vec<(Field, Decision)> = Vec::new();
        for &field in wanted {
            if allowed.contains(&field) || denied.iter().any(|(seen, _)| *seen == field) {
                continue;
            }
            let decision = self.decide(&AccessRequest { caller, purpose, resource: Resource::Field(field), recipient });
            if decision.allowed {
                allowed.push(field);
            } else {
                denied.push((field, decision));
            }
        }
        (allowed, denied)
    }

    /// Whether some resource could be permitted to this caller for this purpose, for
    /// some recipient. False means every request of this caller for this purpose will be
    /// refused, which the gateway answers with PERMISSION_DENIED up front.
    ///
    /// The recipient is left unknown (Cedar partial evaluation) rather than guessed, so a
    /// rule that permits only named recipients still counts.
    pub fn permits_purpose(&self, caller: &str, purpose: Purpose) -> bool {
        let key = (caller.to_owned(), purpose);
        if let Some(permits) = self.memo.purposes.get(&key) {
            return permits;
        }
        let permits = self.evaluate_purpose(caller, purpose);
        self.memo.purposes.insert(key, permits);
        permits
    }

    fn evaluate_purpose(&self, caller: &str, purpose: Purpose) -> bool {
        let authorizer = Authorizer::new();
        let entities = Entities::empty();
        Resource::ALL.into_iter().any(|resource| {
            let Ok(request) = model::request_any_recipient(caller, purpose, resource) else {
                return false;
            };
            let response = authorizer.is_authorized_partial(&request, &self.set, &entities);
            match response.decision() {
                Some(decision) => decision == cedar_policy::Decision::Allow,
                None => response.may_be_determining().any(|policy| policy.effect() == Effect::Permit),
            }
        })
    }

    /// The decision with the determining rules as their authors described them, and any
    /// rule that failed to evaluate.
    pub fn explain(&self, request: &AccessRequest<'_>) -> Explanation {
        let (decision, errors) = self.evaluate(request);
        let rules = decision
            .policies
            .iter()
            .filter_map(|id| self.rules.iter().find(|rule| rule.id == *id))
            .map(|rule| ExplainedRule {
                id: rule.id.clone(),
                description: rule.description.clone(),
                effect: effect_name(rule.effect).to_owned(),
            })
            .collect();
        Explanation { decision, rules, errors }
    }

    fn evaluate(&self, request: &AccessRequest<'_>) -> (Decision, Vec<String>) {
        let cedar_request = match model::request(request) {
            Ok(cedar_request) => cedar_request,
            Err(err) => {
                tracing::error!(
                    caller = request.caller,
                    error = %err,
                    "policy request could not be built"
                );
                let decision = Decision { allowed: false, policies: Vec::new(), reason: format!("denied: {err}") };
                return (decision, vec![err]);
            }
        };
        let response = Authorizer::new().is_authorized(&cedar_request, &self.set, &Entities::empty());
        let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
        for error in &errors {
            // Cedar skips a policy that fails to evaluate; that is a policy bug to fix.
            tracing::warn!(
                caller = request.caller,
                purpose = %request.purpose,
                %error,
                "policy evaluation error"
            );
        }
        (self.decision(request, &response), errors)
    }

    fn decision(&self, request: &AccessRequest<'_>, response: &Response) -> Decision {
        let determining: Vec<&str> = response.diagnostics().reason().map(|id| id.as_ref()).collect();
        // Text order, so that the same request always gets the same reason.
        let policies: Vec<String> = self
            .rules
            .iter()
            .filter(|rule| determining.contains(&rule.id.as_str()))
            .map(|rule| rule.id.clone())
            .collect();
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        let reason = if policies.is_empty() {
            let mut reason = format!(
                "no policy permits {} to see {} for {}",
                request.caller,
                request.resource.describe(),
                request.purpose
            );
            if let Some(recipient) = request.recipient.filter(|r| !r.is_empty()) {
                reason.push_str(&format!(" to \"{recipient}\""));
            }
            reason
        } else {
            let quoted: Vec<String> = policies.iter().map(|id| format!("\"{id}\"")).collect();
            let verb = if allowed { "permitted" } else { "forbidden" };
            format!("{verb} by {}", quoted.join(", "))
        };
        Decision { allowed, policies, reason }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("hash", &self.hash).field("rules", &self.rule_ids().collect::<Vec<_>>()).finish()
    }
}

fn effect_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNTS: &str = "spiffe://qupia/ns/default/sa/accounts";

    fn parse(text: &str) -> Policy {
        match Policy::parse(text, "test.cedar") {
            Ok(policy) => policy,
            Err(err) => panic!("expected a valid policy, got {err}"),
        }
    }

    fn email_for<'a>(caller: &'a str, purpose: Purpose, recipient: Option<&'a str>) -> AccessRequest<'a> {
        AccessRequest { caller, purpose, resource: Resource::Field(Field::Email), recipient }
    }

    #[test]
    fn the_embedded_default_policy_parses_and_validates() {
        if let Err(err) = Policy::parse(Policy::DEFAULT_TEXT, "default") {
            panic!("the default policy is invalid: {err}");
        }
        assert_eq!(Policy::default_policy().rule_ids().count(), 7);
    }

    #[test]
    fn a_forbid_overrides_a_permit_and_is_named_in_the_reason() {
        let policy = parse(&format!(
            "{}\n{}",
            Policy::DEFAULT_TEXT,
            r#"@id("no-contacts-during-audit")
@description("an incident freeze: no e-mail for anyone")
forbid (principal, action, resource == Field::"email");"#
        ));
        let request = email_for(ACCOUNTS, Purpose::Communication, None);
        let decision = policy.decide(&request);
        assert!(!decision.allowed);
        assert_eq!(decision.policies, ["no-contacts-during-audit"]);
        assert_eq!(decision.reason, "forbidden by \"no-contacts-during-audit\"");
        let explanation = policy.explain(&request);
        assert_eq!(explanation.rules[0].effect, "forbid");
        assert_eq!(explanation.rules[0].description, "an incident freeze: no e-mail for anyone");
    }

    #[test]
    fn the_recipient_reaches_the_policy_and_permits_purpose_considers_any_recipient() {
        let policy = parse(
            r#"@id("transfer-to-kaspi")
permit (
    principal == Service::"spiffe://qupia/ns/default/sa/accounts",
    action == Action::"third_party_transfer",
    resource == Field::"email"
)
when { context.recipient == "Kaspi Bank JSC" };"#,
        );
        let transfer = Purpose::ThirdPartyTransfer;
        assert!(policy.decide(&email_for(ACCOUNTS, transfer, Some("Kaspi Bank JSC"))).allowed);
        assert!(!policy.decide(&email_for(ACCOUNTS, transfer, Some("Halyk Bank"))).allowed);
        assert!(!policy.decide(&email_for(ACCOUNTS, transfer, None)).allowed);

        assert!(policy.permits_purpose(ACCOUNTS, transfer));
        assert!(!policy.permits_purpose(ACCOUNTS, Purpose::Communication));
        assert!(!policy.permits_purpose("spiffe://qupia/ns/default/sa/marketing", transfer));
    }

    #[test]
    fn remembered_answers_belong_to_their_question_and_their_policy_version() {
        let permissive = Policy::default_policy();
        let frozen = parse(&format!(
            "{}\n{}",
            Policy::DEFAULT_TEXT,
            r#"@id("freeze")
forbid (principal, action == Action::"communication", resource);"#
        ));
        let communication = email_for(ACCOUNTS, Purpose::Communication, None);
        let marketing = email_for("spiffe://qupia/ns/default/sa/marketing", Purpose::Communication, None);
        for _ in 0..3 {
            // The same question asked again, of the same version, gets the same answer;
            // another caller or another version is answered for itself.
            assert!(permissive.decide(&communication).allowed);
            assert!(!permissive.decide(&marketing).allowed);
            let refused = frozen.decide(&communication);
            assert!(!refused.allowed);
            assert_eq!(refused.reason, "forbidden by \"freeze\"");
            assert!(permissive.permits_purpose(ACCOUNTS, Purpose::Communication));
            assert!(!frozen.permits_purpose(ACCOUNTS, Purpose::Communication));
        }
    }

    #[test]
    fn a_rule_that_fails_to_evaluate_is_skipped_and_explained() {
        // Overflow is a run-time error the validator can't see.
        let policy = parse(
            r#"@id("overflowing")
permit (principal, action == Action::"communication", resource)
when { 9223372036854775807 + 1 > 0 };"#,
        );
        let explanation = policy.explain(&email_for(ACCOUNTS, Purpose::Communication, None));
        assert!(!explanation.decision.allowed);
        assert_eq!(explanation.errors.len(), 1);
        assert!(explanation.errors[0].contains("overflowing"), "{:?}", explanation.errors);
    }
}
