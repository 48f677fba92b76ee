//! `ConsentService`: consents and policy versions, for the services and people
//! allowed to manage them.

use std::sync::Arc;

use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::consent_service_server::ConsentService;
use qupia_domain::Purpose;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status};

use crate::consent::{ConsentAction, ConsentEvent, ConsentStore, NewConsentEvent, PolicyVersion, now_ms};
use crate::{Error, model};

#[derive(Debug, Clone)]
pub struct ConsentApi {
    pub store: ConsentStore,
    pub managers: Arc<[ServiceIdentity]>,
    pub security: Arc<[ServiceIdentity]>,
}

fn event_to_proto(event: ConsentEvent) -> proto::ConsentEvent {
    proto::ConsentEvent {
        id: event.id,
        person_token: event.person_token,
        purpose: model::purpose_to_proto(event.purpose) as i32,
        recipient: event.recipient,
        granted: event.action == ConsentAction::Granted,
        policy_version: event.policy_version,
        channel: event.channel,
        evidence: event.evidence,
        expires_at_ms: event.expires_at_ms.unwrap_or(0),
        recorded_at_ms: event.recorded_at_ms,
        recorded_by: event.recorded_by,
    }
}

fn version_to_proto(version: PolicyVersion) -> proto::PolicyVersion {
    proto::PolicyVersion {
        version: version.version,
        text_sha256: version.text_sha256,
        reconsent_purposes: version.reconsent_purposes.into_iter().map(|p| model::purpose_to_proto(p) as i32).collect(),
        published_at_ms: version.published_at_ms,
        published_by: version.published_by,
    }
}

impl ConsentApi {
    fn manager<T>(&self, request: &Request<T>) -> Result<ServiceIdentity, Status> {
        let caller = caller_of(request)?;
        if self.managers.contains(&caller) || self.security.contains(&caller) {
            Ok(caller)
        } else {
            Err(Error::PermissionDenied(format!("{caller} may not manage consents")).into())
        }
    }
}

#[tonic::async_trait]
impl ConsentService for ConsentApi {
    async fn grant_consent(
        &self,
        request: Request<proto::GrantConsentRequest>,
    ) -> Result<Response<proto::GrantConsentResponse>, Status> {
        let caller = self.manager(&request)?;
        let r = request.into_inner();
        let event = self
            .store
            .record(NewConsentEvent {
                person_token: r.person_token,
                purpose: model::purpose(r.purpose, "purpose")?,
                recipient: r.recipient,
                action: ConsentAction::Granted,
                policy_version: r.policy_version,
                channel: r.channel,
                evidence: r.evidence,
                expires_at_ms: (r.expires_at_ms != 0).then_some(r.expires_at_ms),
                recorded_by: caller.to_string(),
            })
            .await
            .map_err(Error::from)?;
        tracing::info!(consent_id = %event.id, purpose = %event.purpose, "consent granted");
        Ok(Response::new(proto::GrantConsentResponse { event: Some(event_to_proto(event)) }))
    }

    async fn withdraw_consent(
        &self,
        request: Request<proto::WithdrawConsentRequest>,
    ) -> Result<Response<proto::WithdrawConsentResponse>, Status> {
        let caller = self.manager(&request)?;
        let r = request.into_inner();
        let current = self
            .store
            .current_policy_version()
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::FailedPrecondition("no policy version has been published".to_owned()))?;
        let event = self
            .store
            .record(NewConsentEvent {
                person_token: r.person_token,
                purpose: model::purpose(r.purpose, "purpose")?,
                recipient: r.recipient,
                action: ConsentAction::Withdrawn,
                policy_version: current.version,
                channel: r.channel,
                evidence: r.evidence,
                expires_at_ms: None,
                recorded_by: caller.to_string(),
            })
            .await
            .map_err(Error::from)?;
        tracing::info!(consent_id = %event.id, purpose = %event.purpose, "consent withdrawn");
        Ok(Response::new(proto::WithdrawConsentResponse { event: Some(event_to_proto(event)) }))
    }

    async fn get_consents(
        &self,
        request: Request<proto::GetConsentsRequest>,
    ) -> Result<Response<proto::GetConsentsResponse>, Status> {
        self.manager(&request)?;
        let states = self.store.states(&request.get_ref().person_token, now_ms()).await.map_err(Error::from)?;
        let consents = states
            .into_iter()
            .map(|state| {
                let (active, reason) = match state.check {
                    crate::consent::ConsentCheck::Active { .. } => (true, String::new()),
                    crate::consent::ConsentCheck::Inactive { reason } => (false, reason),
                };
                proto::ConsentState {
                    purpose: model::purpose_to_proto(state.purpose) as i32,
                    recipient: state.recipient,
                    active,
                    reason,
                    latest: Some(event_to_proto(state.latest)),
                }
            })
            .collect();
        Ok(Response::new(proto::GetConsentsResponse { consents }))
    }

    async fn list_consent_history(
        &self,
        request: Request<proto::ListConsentHistoryRequest>,
    ) -> Result<Response<proto::ListConsentHistoryResponse>, Status> {
        self.manager(&request)?;
        let events = self.store.history(&request.get_ref().person_token).await.map_err(Error::from)?;
        Ok(Response::new(proto::ListConsentHistoryResponse {
            events: events.into_iter().map(event_to_proto).collect(),
        }))
    }

    async fn publish_policy_version(
        &self,
        request: Request<proto::PublishPolicyVersionRequest>,
    ) -> Result<Response<proto::PublishPolicyVersionResponse>, Status> {
        let caller = caller_of(&request)?;
        if !self.security.contains(&caller) {
            return Err(Error::PermissionDenied(format!("{caller} may not publish policy versions")).into());
        }
        let r = request.into_inner();
        let mut purposes: Vec<Purpose> = Vec::with_capacity(r.reconsent_purposes.len());
        for (i, value) in r.reconsent_purposes.iter().enumerate() {
            purposes.push(model::purpose(*value, &format!("reconsent_purposes[{i}]"))?);
        }
        let version =
            self.store.publish_policy_version(&r.text_sha256, &purposes, caller.as_str()).await.map_err(Error::from)?;
        tracing::info!(version = version.version, "policy version published");
        Ok(Response::new(proto::PublishPolicyVersionResponse { version: Some(version_to_proto(version)) }))
    }

    async fn list_policy_versions(
        &self,
        request: Request<proto::ListPolicyVersionsRequest>,
    ) -> Result<Response<proto::ListPolicyVersionsResponse>, Status> {
        caller_of(&request)?;
        let versions = self.store.policy_versions().await.map_err(Error::from)?;
        Ok(Response::new(proto::ListPolicyVersionsResponse {
            versions: versions.into_iter().map(version_to_proto).collect(),
        }))
    }
}
