//! `DisclosureService`: the register of disclosure requests of state bodies (policy
//! clause 3.4), for the disclosure officers who file and approve them and the security
//! team who reviews them.

use std::sync::Arc;

use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::disclosure_service_server::DisclosureService;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status};

use crate::consent::now_ms;
use crate::disclosure::{Disclosure, DisclosureStore, NewDisclosure, State, validate_id};
use crate::enforce::fields_of;
use crate::{Error, model};

/// The default and the largest page of the register.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct DisclosureApi {
    pub store: DisclosureStore,
    pub officers: Arc<[ServiceIdentity]>,
    pub security: Arc<[ServiceIdentity]>,
}

impl DisclosureApi {
    fn officer<T>(&self, request: &Request<T>) -> Result<ServiceIdentity, Status> {
        let caller = caller_of(request)?;
        if self.officers.contains(&caller) {
            Ok(caller)
        } else {
            Err(Error::PermissionDenied(format!("{caller} is not a disclosure officer")).into())
        }
    }

    fn reader<T>(&self, request: &Request<T>) -> Result<ServiceIdentity, Status> {
        let caller = caller_of(request)?;
        if self.officers.contains(&caller) || self.security.contains(&caller) {
            Ok(caller)
        } else {
            Err(Error::PermissionDenied(format!("{caller} may not read the disclosure register")).into())
        }
    }
}

fn state_to_proto(state: State) -> proto::DisclosureState {
    match state {
        State::Pending => proto::DisclosureState::Pending,
        State::Approved => proto::DisclosureState::Approved,
        State::Expired => proto::DisclosureState::Expired,
    }
}

fn to_proto(disclosure: Disclosure, now_ms: i64) -> proto::Disclosure {
    let state = state_to_proto(disclosure.state(now_ms)) as i32;
    let (approved_by, approved_at_ms) = disclosure.approval.unwrap_or_default();
    proto::Disclosure {
        id: disclosure.id,
        authority: disclosure.authority,
        legal_basis: disclosure.legal_basis,
        reference_number: disclosure.reference_number,
        person_tokens: disclosure.person_tokens,
        fields: disclosure.fields.into_iter().map(|f| model::field_to_proto(f) as i32).collect(),
        documents: disclosure.documents,
        expires_at_ms: disclosure.expires_at_ms,
        requested_by: disclosure.requested_by,
        requested_at_ms: disclosure.requested_at_ms,
        approved_by,
        approved_at_ms,
        state,
    }
}

#[tonic::async_trait]
impl DisclosureService for DisclosureApi {
    #[tracing::instrument(skip_all)]
    async fn create_disclosure(
        &self,
        request: Request<proto::CreateDisclosureRequest>,
    ) -> Result<Response<proto::CreateDisclosureResponse>, Status> {
        let caller = self.officer(&request)?;
        let body = request.into_inner();
        let new = NewDisclosure {
            authority: body.authority,
            legal_basis: body.legal_basis,
            reference_number: body.reference_number,
            person_tokens: body.person_tokens,
            fields: fields_of(&body.fields)?,
            documents: body.documents,
            expires_at_ms: body.expires_at_ms,
        };
        let disclosure = self.store.create(new, caller.as_str()).await?;
        tracing::info!(id = %disclosure.id, people = disclosure.person_tokens.len(), "disclosure request filed");
        Ok(Response::new(proto::CreateDisclosureResponse { disclosure: Some(to_proto(disclosure, now_ms())) }))
    }

    #[tracing::instrument(skip_all)]
    async fn approve_disclosure(
        &self,
        request: Request<proto::ApproveDisclosureRequest>,
    ) -> Result<Response<proto::ApproveDisclosureResponse>, Status> {
        let caller = self.officer(&request)?;
        let id = request.into_inner().id;
        validate_id("id", &id)?;
        let disclosure = self.store.approve(&id, caller.as_str()).await?;
        tracing::info!(id = %disclosure.id, "disclosure request approved");
        Ok(Response::new(proto::ApproveDisclosureResponse { disclosure: Some(to_proto(disclosure, now_ms())) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_disclosure(
        &self,
        request: Request<proto::GetDisclosureRequest>,
    ) -> Result<Response<proto::GetDisclosureResponse>, Status> {
        self.reader(&request)?;
        let id = request.into_inner().id;
        validate_id("id", &id)?;
        let disclosure =
            self.store.get(&id).await?.ok_or_else(|| Error::NotFound(format!("disclosure request {id}")))?;
        Ok(Response::new(proto::GetDisclosureResponse { disclosure: Some(to_proto(disclosure, now_ms())) }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_disclosures(
        &self,
        request: Request<proto::ListDisclosuresRequest>,
    ) -> Result<Response<proto::ListDisclosuresResponse>, Status> {
        self.reader(&request)?;
        let body = request.into_inner();
        let state = match proto::DisclosureState::try_from(body.state) {
            Ok(proto::DisclosureState::Unspecified) => None,
            Ok(proto::DisclosureState::Pending) => Some(State::Pending),
            Ok(proto::DisclosureState::Approved) => Some(State::Approved),
            Ok(proto::DisclosureState::Expired) => Some(State::Expired),
            Err(_) => return Err(Error::invalid("state", "is not a known disclosure state").into()),
        };
        let before_seq = if body.page_token.is_empty() {
            0
        } else {
            body.page_token
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| Error::invalid("page_token", "is not a page token of this register"))?
        };
        let limit = match body.limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => return Err(Error::invalid("limit", format!("must be at most {MAX_PAGE}")).into()),
            n => n,
        };
        let now = now_ms();
        let page = self.store.list(state, before_seq, limit as usize, now).await?;
        let next_page_token = match page.last() {
            Some(last) if page.len() == limit as usize => last.seq.to_string(),
            _ => String::new(),
        };
        let disclosures = page.into_iter().map(|d| to_proto(d, now)).collect();
        Ok(Response::new(proto::ListDisclosuresResponse { disclosures, next_page_token }))
    }
}
