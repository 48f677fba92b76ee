//! `PolicyService`: explains the purpose policy's decisions.

use std::sync::Arc;

use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::policy_service_server::PolicyService;
use qupia_domain::Field;
use qupia_policy::{AccessRequest, PolicyStore, Resource};
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status};

use crate::{Error, model};

#[derive(Debug, Clone)]
pub struct PolicyApi {
    pub policy: Arc<PolicyStore>,
    pub security: Arc<[ServiceIdentity]>,
}

fn resource(name: &str) -> Result<Resource, Error> {
    match name {
        "document" => Ok(Resource::Document),
        "aggregate" => Ok(Resource::Aggregate),
        other => other
            .parse::<Field>()
            .map(Resource::Field)
            .map_err(|_| Error::invalid("resource", "must be a field name, \"document\" or \"aggregate\"")),
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn explain(
        &self,
        request: Request<proto::ExplainRequest>,
    ) -> Result<Response<proto::ExplainResponse>, Status> {
        let caller = caller_of(&request)?;
        let r = request.into_inner();
        // Anyone may ask about themselves; only the security team about others.
        let subject = if r.caller.is_empty() || r.caller == caller.as_str() {
            caller.clone()
        } else if self.security.contains(&caller) {
            ServiceIdentity::parse(&r.caller).map_err(|e| Error::invalid("caller", e.to_string()))?
        } else {
            return Err(Error::PermissionDenied(format!("{caller} may only explain its own decisions")).into());
        };
        let purpose = model::purpose(r.purpose, "purpose")?;
        let resource = resource(&r.resource)?;
        let policy = self.policy.current();
        let explanation = policy.explain(&AccessRequest {
            caller: subject.as_str(),
            purpose,
            resource,
            recipient: (!r.recipient.is_empty()).then_some(r.recipient.as_str()),
        });
        Ok(Response::new(proto::ExplainResponse {
            allowed: explanation.decision.allowed,
            reason: explanation.decision.reason,
            rules: explanation
                .rules
                .into_iter()
                .map(|rule| proto::ExplainedRule { id: rule.id, description: rule.description, effect: rule.effect })
                .collect(),
            policy_sha256: policy.hash_hex(),
        }))
    }
}
