//! `StatisticsService`: aggregates for purpose statistics (policy clause 2.2.5).
//!
//! The purpose policy must permit the caller `Aggregate::"statistics"`; then only people
//! with an active statistics consent are counted (the others are skipped, counted and
//! recorded as denials), and the vault computes the aggregate with the gateway's
//! minimum group size, so that no value and no small group ever leaves it.

use std::collections::HashSet;
use std::sync::Arc;

use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::statistics_service_server::StatisticsService;
use qupia_api::types::v1 as types;
use qupia_api::vault::v1 as vault;
use qupia_api::vault::v1::vault_statistics_service_client::VaultStatisticsServiceClient;
use qupia_domain::Purpose;
use qupia_ops::DecisionResult;
use qupia_policy::{AccessRequest, Resource};
use qupia_telemetry::TracedChannel;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status};

use crate::consent::{ConsentCheck, now_ms};
use crate::enforce::{Enforcer, decision_result, is_person_token, vault_error};
use crate::rate_limit::CallerLimits;
use crate::{Error, model};

/// People per unit of rate-limit cost: an aggregate over an audience costs more than
/// one reveal, far less than revealing each person.
const PEOPLE_PER_COST: usize = 1000;

const PURPOSE: Purpose = Purpose::Statistics;
const OPERATION: &str = "aggregate";

#[derive(Debug, Clone)]
pub struct StatisticsApi {
    pub enforcer: Enforcer,
    pub statistics: VaultStatisticsServiceClient<TracedChannel>,
    pub limits: Arc<CallerLimits>,
    /// The smallest group reported (k), from `statistics_min_group_size`.
    pub min_group_size: u32,
}

/// What one aggregate decided, for the metrics: people counted, skipped for want of
/// consent, or refused by the policy.
#[derive(Debug, Default)]
struct Tally {
    allowed: usize,
    without_consent: usize,
}

impl StatisticsApi {
    fn denial(
        caller: &ServiceIdentity,
        person: &str,
        reason: &str,
        decision_id: &str,
        trace_id: &str,
    ) -> vault::DecisionRecord {
        vault::DecisionRecord {
            caller: caller.as_str().to_owned(),
            purpose: model::purpose_to_proto(PURPOSE) as i32,
            person_token: person.to_owned(),
            fields: Vec::new(),
            allowed: false,
            reason: reason.to_owned(),
            decision_id: decision_id.to_owned(),
            trace_id: trace_id.to_owned(),
            consent_id: String::new(),
            request_id: String::new(),
            operation: OPERATION.to_owned(),
        }
    }

    async fn decide_and_aggregate(
        &self,
        caller: &ServiceIdentity,
        people: &[String],
        dimension: i32,
        trace_id: &str,
        tally: &mut Tally,
    ) -> Result<proto::AggregateResponse, Error> {
        let decision_id = uuid::Uuid::new_v4().to_string();

        // 1. The policy: may this caller see aggregates for statistics?
        let decision = self.enforcer.policy.current().decide(&AccessRequest {
            caller: caller.as_str(),
            purpose: PURPOSE,
            resource: Resource::Aggregate,
            recipient: None,
        });
        if !decision.allowed {
            let records = if people.is_empty() {
                vec![Self::denial(caller, "", &decision.reason, &decision_id, trace_id)]
            } else {
                people.iter().map(|p| Self::denial(caller, p, &decision.reason, &decision_id, trace_id)).collect()
            };
            self.enforcer.record(records).await?;
            return Err(Error::PermissionDenied(decision.reason));
        }

        // 2. Consent, now: only people with an active statistics consent are counted.
        let subjects: Vec<vault::AggregateSubject> = if people.is_empty() {
            self.enforcer
                .consents
                .active_consents(PURPOSE, "", now_ms())
                .await?
                .into_iter()
                .map(|(person_token, consent_id)| vault::AggregateSubject { person_token, consent_id })
                .collect()
        } else {
            let checks = self.enforcer.consents.check_many(people, PURPOSE, "", now_ms()).await?;
            let mut subjects = Vec::with_capacity(people.len());
            let mut denials = Vec::new();
            for person in people {
                match checks.get(person) {
                    Some(ConsentCheck::Active { consent_id }) => subjects
                        .push(vault::AggregateSubject { person_token: person.clone(), consent_id: consent_id.clone() }),
                    Some(ConsentCheck::Inactive { reason }) => {
                        let why = format!("not counted: no active consent for statistics: {reason}");
                        denials.push(Self::denial(caller, person, &why, &decision_id, trace_id));
                    }
                    None => {
                        let why = "not counted: no active consent for statistics: no consent recorded";
                        denials.push(Self::denial(caller, person, why, &decision_id, trace_id));
                    }
                }
            }
            tally.without_consent = denials.len();
            // 3. Every skipped person is in the access log before anyone hears of it.
            self.enforcer.record(denials).await?;
            subjects
        };

        // 4. The vault counts, logging each person counted before it answers.
        let mut response = proto::AggregateResponse {
            groups: Vec::new(),
            suppressed_groups: 0,
            skipped_without_consent: tally.without_consent as u64,
            min_group_size: self.min_group_size,
            decision_id: decision_id.clone(),
        };
        if subjects.is_empty() {
            return Ok(response);
        }
        tally.allowed = subjects.len();
        let access = vault::AccessContext {
            purpose: model::purpose_to_proto(PURPOSE) as i32,
            decision_id,
            caller: caller.as_str().to_owned(),
            consent_id: String::new(),
            request_id: String::new(),
            trace_id: trace_id.to_owned(),
            reason: decision.reason,
        };
        let counted = self
            .statistics
            .clone()
            .aggregate(vault::AggregateRequest {
                subjects,
                dimension,
                min_group_size: self.min_group_size,
                access: Some(access),
            })
            .await
            .map_err(vault_error)?
            .into_inner();
        response.groups = counted.groups;
        response.suppressed_groups = counted.suppressed_groups;
        Ok(response)
    }
}

/// The distinct person tokens asked for, in order; a malformed one refuses the call.
fn people(tokens: Vec<String>) -> Result<Vec<String>, Error> {
    let mut seen = HashSet::with_capacity(tokens.len());
    let mut people = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        if !is_person_token(&token) {
            return Err(Error::invalid(format!("person_tokens[{i}]"), "is not a well-formed person token"));
        }
        if seen.insert(token.clone()) {
            people.push(token);
        }
    }
    Ok(people)
}

fn dimension(value: i32) -> Result<i32, Error> {
    match types::AggregateDimension::try_from(value) {
        Ok(types::AggregateDimension::Unspecified) => Err(Error::invalid("dimension", "must name a dimension")),
        Ok(_) => Ok(value),
        Err(_) => Err(Error::invalid("dimension", "is not a known dimension")),
    }
}

#[tonic::async_trait]
impl StatisticsService for StatisticsApi {
    #[tracing::instrument(skip_all)]
    async fn aggregate(
        &self,
        request: Request<proto::AggregateRequest>,
    ) -> Result<Response<proto::AggregateResponse>, Status> {
        let caller = caller_of(&request)?;
        let cost = 1 + request.get_ref().person_tokens.len() / PEOPLE_PER_COST;
        if !self.limits.admit(&caller, u32::try_from(cost).unwrap_or(u32::MAX)) {
            return Err(Error::RateLimited.into());
        }
        let trace_id = model::trace_id(&request);
        let request = request.into_inner();
        let dimension = dimension(request.dimension)?;
        let people = people(request.person_tokens)?;

        let mut tally = Tally::default();
        let aggregated = self.decide_and_aggregate(&caller, &people, dimension, &trace_id, &mut tally).await;
        // Counted like reveals: one decision per person.
        let metrics = &self.enforcer.metrics;
        match &aggregated {
            Ok(_) => {
                for _ in 0..tally.allowed {
                    metrics.decision(PURPOSE.as_str(), DecisionResult::Allowed);
                }
                for _ in 0..tally.without_consent {
                    metrics.decision(PURPOSE.as_str(), DecisionResult::DeniedConsent);
                }
            }
            Err(error) => {
                if let Some(result) = decision_result(error) {
                    for _ in 0..people.len().max(1) {
                        metrics.decision(PURPOSE.as_str(), result);
                    }
                }
            }
        }
        Ok(Response::new(aggregated?))
    }
}
