//! The enforcement point: policy, consent and the access log decide, in that order,
//! whether a value may leave the vault. Nothing is revealed unless every check passes
//! and the vault has written the decision to the access log.

use std::collections::HashMap;
use std::sync::Arc;

use qupia_api::vault::v1 as vault;
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_domain::{Field, Purpose};
use qupia_ops::DecisionResult;
use qupia_policy::{PolicyStore, Resource};
use qupia_telemetry::TracedChannel;
use qupia_transport::ServiceIdentity;

use crate::Error;
use crate::consent::{ConsentCheck, ConsentStore, now_ms};
use crate::disclosure::DisclosureStore;
use crate::model;

/// A person token: `qpp_` and 35 base64url characters. The gateway cannot check a
/// token's tag (the vault holds the token key); it only refuses what cannot be one.
pub fn is_person_token(token: &str) -> bool {
    token.len() == 39
        && token.starts_with("qpp_")
        && token[4..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the caller asked to see, and why.
#[derive(Debug, Clone)]
pub struct RevealAsk {
    pub caller: ServiceIdentity,
    pub purpose: Purpose,
    pub fields: Vec<Field>,
    pub recipient: String,
    pub trace_id: String,
    /// For legal_disclosure: the approved disclosure request the reveal rests on.
    pub disclosure_request_id: String,
}

/// One token's outcome.
pub type ItemOutcome = Result<vault::RevealResponse, Error>;

#[derive(Debug, Clone)]
pub struct Enforcer {
    pub policy: Arc<PolicyStore>,
    pub consents: ConsentStore,
    pub vault: VaultServiceClient<TracedChannel>,
    /// The disclosure register: legal_disclosure reveals only within an approved request.
    pub disclosures: DisclosureStore,
    /// Counts decisions by purpose and result: one per token, as the access log has them.
    pub metrics: qupia_ops::Metrics,
}

/// Decisions per RecordDecisions call: the vault's default batch limit.
const RECORD_BATCH: usize = 1000;

/// What a decision counts as; `None` for a malformed request, which decided nothing.
pub fn decision_result(error: &Error) -> Option<DecisionResult> {
    match error {
        Error::InvalidArgument { .. } | Error::CallerStream(_) => None,
        Error::PermissionDenied(_) => Some(DecisionResult::DeniedPolicy),
        Error::FailedPrecondition(_)
        | Error::NotFound(_)
        | Error::RateLimited
        | Error::AuditUnavailable
        | Error::Vault(_)
        | Error::Consent(_)
        | Error::Subject(_) => Some(DecisionResult::Error),
    }
}

impl Enforcer {
    /// Decides and reveals for each token; returns the decision id and a result per
    /// token in order. An error of the whole call means nothing was revealed.
    pub async fn reveal(&self, ask: &RevealAsk, tokens: &[String]) -> Result<(String, Vec<ItemOutcome>), Error> {
        let purpose = ask.purpose.as_str();
        let revealed = self.decide_and_reveal(ask, tokens).await;
        match &revealed {
            Ok((_, outcomes)) => {
                for outcome in outcomes {
                    let result = match outcome {
                        Ok(_) => Some(DecisionResult::Allowed),
                        // Per token, only consent denies: the policy decides for the whole call.
                        Err(Error::PermissionDenied(_)) => Some(DecisionResult::DeniedConsent),
                        Err(error) => decision_result(error),
                    };
                    if let Some(result) = result {
                        self.metrics.decision(purpose, result);
                    }
                }
            }
            Err(error) => {
                if let Some(result) = decision_result(error) {
                    for _ in tokens {
                        self.metrics.decision(purpose, result);
                    }
                }
            }
        }
        revealed
    }

    async fn decide_and_reveal(&self, ask: &RevealAsk, tokens: &[String]) -> Result<(String, Vec<ItemOutcome>), Error> {
        let decision_id = uuid::Uuid::new_v4().to_string();
        let policy = self.policy.current();
        let caller = ask.caller.as_str();
        let recipient = (!ask.recipient.is_empty()).then_some(ask.recipient.as_str());

        // 1. The policy: may this caller see these fields for this purpose?
        let (mut allowed, denied) = policy.allowed_fields(caller, ask.purpose, &ask.fields, recipient);
        let mut refusal = if !policy.permits_purpose(caller, ask.purpose) {
            Some(format!("{caller} may not use the purpose {}", ask.purpose))
        } else if let Some((_, decision)) = denied.first().filter(|_| !ask.fields.is_empty()) {
            Some(decision.reason.clone())
        } else if allowed.is_empty() {
            Some(format!("the purpose {} reveals no field values to {caller}", ask.purpose))
        } else {
            None
        };
        // 1b. Legal disclosure: only under an approved, unexpired request, and only the
        // fields it names (the people are checked per token below).
        let mut disclosure = None;
        if refusal.is_none() && ask.purpose == Purpose::LegalDisclosure {
            match self.disclosures.usable(&ask.disclosure_request_id).await? {
                Err(reason) => refusal = Some(reason),
                Ok(request) => {
                    if let Some(field) = ask.fields.iter().find(|f| !request.fields.contains(f)) {
                        refusal = Some(format!("{field} is outside the scope of disclosure request {}", request.id));
                    } else {
                        allowed.retain(|f| request.fields.contains(f));
                        if allowed.is_empty() {
                            refusal =
                                Some(format!("disclosure request {} covers no field this caller may see", request.id));
                        }
                    }
                    disclosure = Some(request);
                }
            }
        }
        if let Some(reason) = refusal {
            let fields = if ask.fields.is_empty() { allowed.clone() } else { ask.fields.clone() };
            let request_id = &ask.disclosure_request_id;
            let records = tokens
                .iter()
                .map(|token| self.denial(ask, &decision_id, token, &fields, &reason, request_id))
                .collect();
            self.record(records).await?;
            return Err(Error::PermissionDenied(reason));
        }
        if ask.purpose == Purpose::ThirdPartyTransfer && ask.recipient.is_empty() {
            return Err(Error::invalid("recipient", "is required for third_party_transfer"));
        }
        let reason = allowed_reason(&policy, caller, ask.purpose, &allowed, recipient);

        // 2. Consent, for the purposes that need it: checked per person, now.
        let mut outcomes: Vec<Option<ItemOutcome>> = (0..tokens.len()).map(|_| None).collect();
        let mut consent_ids: HashMap<usize, String> = HashMap::new();
        let mut denials = Vec::new();
        if let Some(request) = &disclosure {
            for (i, token) in tokens.iter().enumerate() {
                if !request.covers_person(token) {
                    let why = format!("the person is outside the scope of disclosure request {}", request.id);
                    denials.push(self.denial(ask, &decision_id, token, &allowed, &why, &request.id));
                    outcomes[i] = Some(Err(Error::PermissionDenied(why)));
                }
            }
        }
        if ask.purpose.requires_consent() {
            let people: Vec<String> = tokens.iter().filter(|t| is_person_token(t)).cloned().collect();
            let checks = self.consents.check_many(&people, ask.purpose, &ask.recipient, now_ms()).await?;
            for (i, token) in tokens.iter().enumerate() {
                if !is_person_token(token) {
                    outcomes[i] =
                        Some(Err(Error::invalid("token", format!("the purpose {} takes person tokens", ask.purpose))));
                    continue;
                }
                match checks.get(token) {
                    Some(ConsentCheck::Active { consent_id }) => {
                        consent_ids.insert(i, consent_id.clone());
                    }
                    Some(ConsentCheck::Inactive { reason }) => {
                        let why = format!("no active consent for {}: {reason}", ask.purpose);
                        denials.push(self.denial(ask, &decision_id, token, &allowed, &why, ""));
                        outcomes[i] = Some(Err(Error::PermissionDenied(why)));
                    }
                    None => {
                        let why = format!("no active consent for {}: no consent recorded", ask.purpose);
                        denials.push(self.denial(ask, &decision_id, token, &allowed, &why, ""));
                        outcomes[i] = Some(Err(Error::PermissionDenied(why)));
                    }
                }
            }
        }
        // 3. Every denial is in the access log before anyone hears of it.
        if !denials.is_empty() {
            self.record(denials).await?;
        }

        // 4. The vault writes the allowed decisions to the access log, then reveals.
        let pending: Vec<usize> = (0..tokens.len()).filter(|i| outcomes[*i].is_none()).collect();
        if !pending.is_empty() {
            let request = vault::BatchRevealRequest {
                items: pending
                    .iter()
                    .map(|i| vault::BatchRevealItem {
                        token: tokens[*i].clone(),
                        fields: allowed.iter().map(|f| model::field_to_proto(*f) as i32).collect(),
                        consent_id: consent_ids.get(i).cloned().unwrap_or_default(),
                    })
                    .collect(),
                access: Some(self.access(ask, &decision_id, &reason)),
            };
            let response = self.vault.clone().batch_reveal(request).await.map_err(vault_error)?.into_inner();
            if response.results.len() != pending.len() {
                return Err(Error::Vault(tonic::Status::internal("the vault answered a different number of items")));
            }
            for (i, result) in pending.into_iter().zip(response.results) {
                outcomes[i] = Some(match result.result {
                    Some(vault::batch_reveal_result::Result::Revealed(revealed)) => Ok(revealed),
                    Some(vault::batch_reveal_result::Result::Error(err)) => {
                        Err(Error::Vault(tonic::Status::new(tonic::Code::from_i32(err.code), err.message)))
                    }
                    None => Err(Error::Vault(tonic::Status::internal("the vault returned an empty result"))),
                });
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::Vault(tonic::Status::internal("no outcome")))))
            .collect();
        Ok((decision_id, outcomes))
    }

    /// Looks up a person by e-mail or phone for identification.
    pub async fn lookup(
        &self,
        caller: &ServiceIdentity,
        key: vault::lookup_request::Key,
        trace_id: &str,
    ) -> Result<Vec<String>, Error> {
        let found = self.decide_and_lookup(caller, key, trace_id).await;
        let result = match &found {
            Ok(_) => Some(DecisionResult::Allowed),
            Err(error) => decision_result(error),
        };
        if let Some(result) = result {
            self.metrics.decision(Purpose::Identification.as_str(), result);
        }
        found
    }

    async fn decide_and_lookup(
        &self,
        caller: &ServiceIdentity,
        key: vault::lookup_request::Key,
        trace_id: &str,
    ) -> Result<Vec<String>, Error> {
        let decision_id = uuid::Uuid::new_v4().to_string();
        let field = match key {
            vault::lookup_request::Key::Email(_) => Field::Email,
            vault::lookup_request::Key::Phone(_) => Field::Phone,
        };
        let policy = self.policy.current();
        let decision = policy.decide(&qupia_policy::AccessRequest {
            caller: caller.as_str(),
            purpose: Purpose::Identification,
            resource: Resource::Field(field),
            recipient: None,
        });
        let ask = RevealAsk {
            caller: caller.clone(),
            purpose: Purpose::Identification,
            fields: vec![field],
            recipient: String::new(),
            trace_id: trace_id.to_owned(),
            disclosure_request_id: String::new(),
        };
        if !decision.allowed {
            let mut record = self.denial(&ask, &decision_id, "", &[field], &decision.reason, "");
            record.operation = "lookup".to_owned();
            self.record(vec![record]).await?;
            return Err(Error::PermissionDenied(decision.reason));
        }
        let request =
            vault::LookupRequest { key: Some(key), access: Some(self.access(&ask, &decision_id, &decision.reason)) };
        Ok(self.vault.clone().lookup(request).await.map_err(vault_error)?.into_inner().person_tokens)
    }

    /// The access context the vault records with an allowed call.
    pub fn access(&self, ask: &RevealAsk, decision_id: &str, reason: &str) -> vault::AccessContext {
        vault::AccessContext {
            purpose: model::purpose_to_proto(ask.purpose) as i32,
            decision_id: decision_id.to_owned(),
            caller: ask.caller.as_str().to_owned(),
            consent_id: String::new(),
            request_id: ask.disclosure_request_id.clone(),
            trace_id: ask.trace_id.clone(),
            reason: reason.to_owned(),
        }
    }

    fn denial(
        &self,
        ask: &RevealAsk,
        decision_id: &str,
        token: &str,
        fields: &[Field],
        reason: &str,
        request_id: &str,
    ) -> vault::DecisionRecord {
        vault::DecisionRecord {
            caller: ask.caller.as_str().to_owned(),
            purpose: model::purpose_to_proto(ask.purpose) as i32,
            person_token: token.to_owned(),
            fields: fields.iter().map(|f| model::field_to_proto(*f) as i32).collect(),
            allowed: false,
            reason: reason.to_owned(),
            decision_id: decision_id.to_owned(),
            trace_id: ask.trace_id.clone(),
            consent_id: String::new(),
            request_id: request_id.to_owned(),
            operation: "reveal".to_owned(),
        }
    }

    /// Writes decisions to the access log, in batches the vault accepts; if it cannot,
    /// the call fails closed.
    pub async fn record(&self, mut decisions: Vec<vault::DecisionRecord>) -> Result<(), Error> {
        while !decisions.is_empty() {
            let rest = decisions.split_off(decisions.len().min(RECORD_BATCH));
            let batch = std::mem::replace(&mut decisions, rest);
            if let Err(status) =
                self.vault.clone().record_decisions(vault::RecordDecisionsRequest { decisions: batch }).await
            {
                tracing::error!(code = ?status.code(), "failed to record a decision in the access log");
                return Err(Error::AuditUnavailable);
            }
        }
        Ok(())
    }
}

/// A vault failure as the gateway reports it: an unwritable access log is UNAVAILABLE
/// with nothing revealed, other errors pass through (their messages hold no values).
pub fn vault_error(status: tonic::Status) -> Error {
    Error::Vault(status)
}

fn allowed_reason(
    policy: &qupia_policy::Policy,
    caller: &str,
    purpose: Purpose,
    allowed: &[Field],
    recipient: Option<&str>,
) -> String {
    let mut rules: Vec<String> = Vec::new();
    for field in allowed {
        let decision = policy.decide(&qupia_policy::AccessRequest {
            caller,
            purpose,
            resource: Resource::Field(*field),
            recipient,
        });
        for rule in decision.policies {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    format!("permitted by {}", rules.join(", "))
}

/// Converts the domain field list of a proto request.
pub fn fields_of(values: &[i32]) -> Result<Vec<Field>, Error> {
    let mut fields = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let field = model::field(*value, &format!("fields[{i}]"))?;
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}
