//! `GatewayService`: what internal services call to store and reveal people.

use std::sync::Arc;

use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::gateway_service_server::GatewayService;
use qupia_api::vault::v1 as vault;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status};

use crate::disclosure::check_request_field;
use crate::enforce::{Enforcer, RevealAsk, fields_of, vault_error};
use crate::rate_limit::CallerLimits;
use crate::{Error, model};

#[derive(Debug, Clone)]
pub struct GatewayApi {
    pub enforcer: Enforcer,
    pub limits: Arc<CallerLimits>,
    pub writers: Arc<[ServiceIdentity]>,
    pub max_batch_items: usize,
}

impl GatewayApi {
    /// The caller's identity, once it is within its rate limit.
    fn admit<T>(&self, request: &Request<T>, cost: usize) -> Result<ServiceIdentity, Status> {
        let caller = caller_of(request)?;
        if !self.limits.admit(&caller, u32::try_from(cost).unwrap_or(u32::MAX)) {
            return Err(Error::RateLimited.into());
        }
        Ok(caller)
    }

    fn writer<T>(&self, request: &Request<T>, cost: usize) -> Result<ServiceIdentity, Status> {
        let caller = self.admit(request, cost)?;
        if !self.writers.contains(&caller) {
            return Err(Error::PermissionDenied(format!("{caller} may not store or change personal data")).into());
        }
        Ok(caller)
    }

    fn check_batch(&self, len: usize, name: &str) -> Result<(), Status> {
        if len == 0 {
            return Err(Error::invalid(name, "must not be empty").into());
        }
        if len > self.max_batch_items {
            return Err(Error::invalid(name, format!("has more than {} items", self.max_batch_items)).into());
        }
        Ok(())
    }

    fn write_access(caller: &ServiceIdentity, trace_id: String) -> Option<vault::AccessContext> {
        Some(vault::AccessContext { caller: caller.as_str().to_owned(), trace_id, ..Default::default() })
    }

    fn ask<T>(
        request: &Request<T>,
        caller: ServiceIdentity,
        purpose: i32,
        fields: &[i32],
        recipient: &str,
        disclosure_request_id: &str,
    ) -> Result<RevealAsk, Status> {
        let purpose = model::purpose(purpose, "purpose")?;
        check_request_field("disclosure_request_id", disclosure_request_id, purpose)?;
        Ok(RevealAsk {
            caller,
            purpose,
            fields: fields_of(fields)?,
            recipient: model::recipient(recipient)?,
            trace_id: model::trace_id(request),
            disclosure_request_id: disclosure_request_id.to_owned(),
        })
    }
}

#[tonic::async_trait]
impl GatewayService for GatewayApi {
    #[tracing::instrument(skip_all)]
    async fn tokenize(
        &self,
        request: Request<proto::TokenizeRequest>,
    ) -> Result<Response<proto::TokenizeResponse>, Status> {
        let caller = self.writer(&request, 1)?;
        let trace_id = model::trace_id(&request);
        let request = request.into_inner();
        let response = self
            .enforcer
            .vault
            .clone()
            .tokenize(vault::TokenizeRequest {
                person: request.person,
                idempotency_key: request.idempotency_key,
                access: Self::write_access(&caller, trace_id),
            })
            .await?
            .into_inner();
        Ok(Response::new(proto::TokenizeResponse { tokens: response.tokens, replayed: response.replayed }))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_tokenize(
        &self,
        request: Request<proto::BatchTokenizeRequest>,
    ) -> Result<Response<proto::BatchTokenizeResponse>, Status> {
        let caller = self.writer(&request, request.get_ref().items.len())?;
        self.check_batch(request.get_ref().items.len(), "items")?;
        let trace_id = model::trace_id(&request);
        let response = self
            .enforcer
            .vault
            .clone()
            .batch_tokenize(vault::BatchTokenizeRequest {
                items: request.into_inner().items,
                access: Self::write_access(&caller, trace_id),
            })
            .await?
            .into_inner();
        Ok(Response::new(proto::BatchTokenizeResponse { results: response.results }))
    }

    #[tracing::instrument(skip_all)]
    async fn reveal(&self, request: Request<proto::RevealRequest>) -> Result<Response<proto::RevealResponse>, Status> {
        let caller = self.admit(&request, 1)?;
        let body = request.get_ref();
        let ask =
            Self::ask(&request, caller, body.purpose, &body.fields, &body.recipient, &body.disclosure_request_id)?;
        let tokens = vec![body.token.clone()];
        let (decision_id, mut outcomes) = self.enforcer.reveal(&ask, &tokens).await?;
        let revealed = outcomes.pop().ok_or_else(|| Status::internal("no outcome"))??;
        Ok(Response::new(proto::RevealResponse {
            person_token: revealed.person_token,
            values: revealed.values,
            decision_id,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_reveal(
        &self,
        request: Request<proto::BatchRevealRequest>,
    ) -> Result<Response<proto::BatchRevealResponse>, Status> {
        let caller = self.admit(&request, request.get_ref().tokens.len())?;
        let body = request.get_ref();
        self.check_batch(body.tokens.len(), "tokens")?;
        let ask =
            Self::ask(&request, caller, body.purpose, &body.fields, &body.recipient, &body.disclosure_request_id)?;
        let (decision_id, outcomes) = self.enforcer.reveal(&ask, &body.tokens).await?;
        let results = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| proto::BatchRevealResult {
                result: Some(match outcome {
                    Ok(revealed) => proto::batch_reveal_result::Result::Revealed(proto::RevealResponse {
                        person_token: revealed.person_token,
                        values: revealed.values,
                        decision_id: decision_id.clone(),
                    }),
                    Err(err) => {
                        let mut item = qupia_api::types::v1::ItemError::from(err);
                        if !item.field.is_empty() {
                            item.field = format!("tokens[{i}]");
                        }
                        proto::batch_reveal_result::Result::Error(item)
                    }
                }),
            })
            .collect();
        Ok(Response::new(proto::BatchRevealResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn lookup(&self, request: Request<proto::LookupRequest>) -> Result<Response<proto::LookupResponse>, Status> {
        let caller = self.admit(&request, 1)?;
        let trace_id = model::trace_id(&request);
        let key = match request.into_inner().key {
            Some(proto::lookup_request::Key::Email(email)) => vault::lookup_request::Key::Email(email),
            Some(proto::lookup_request::Key::Phone(phone)) => vault::lookup_request::Key::Phone(phone),
            None => return Err(Error::invalid("key", "an e-mail or a phone is required").into()),
        };
        let person_tokens = self.enforcer.lookup(&caller, key, &trace_id).await?;
        Ok(Response::new(proto::LookupResponse { person_tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_field(
        &self,
        request: Request<proto::UpdateFieldRequest>,
    ) -> Result<Response<proto::UpdateFieldResponse>, Status> {
        let caller = self.writer(&request, 1)?;
        let trace_id = model::trace_id(&request);
        let request = request.into_inner();
        let response = self
            .enforcer
            .vault
            .clone()
            .update_field(vault::UpdateFieldRequest {
                person_token: request.person_token,
                field: request.field,
                value: request.value,
                access: Self::write_access(&caller, trace_id),
            })
            .await
            .map_err(vault_error)?
            .into_inner();
        Ok(Response::new(proto::UpdateFieldResponse { field_token: response.field_token }))
    }

    #[tracing::instrument(skip_all)]
    async fn erase(&self, request: Request<proto::EraseRequest>) -> Result<Response<proto::EraseResponse>, Status> {
        let caller = self.writer(&request, 1)?;
        let trace_id = model::trace_id(&request);
        let response = self
            .enforcer
            .vault
            .clone()
            .erase(vault::EraseRequest {
                person_token: request.into_inner().person_token,
                access: Self::write_access(&caller, trace_id),
            })
            .await
            .map_err(vault_error)?
            .into_inner();
        Ok(Response::new(proto::EraseResponse { erased_fields: response.erased_fields }))
    }
}
