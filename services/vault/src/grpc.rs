//! The gRPC face of the vault: who may call, how big a request may be, and the
//! translation between protobuf messages and the vault's operations.

use prost::Message;
use qupia_api::types::v1::ItemError;
use qupia_api::vault::v1 as proto;
use qupia_api::vault::v1::vault_service_server::VaultService;
use qupia_crypto::TokenKind;
use qupia_transport::ServiceIdentity;
use tonic::{Request, Response, Status};

use crate::vault::{AccessRecord, RevealItem, Revealed, TokenizeItem, Tokenized, Vault};
use crate::{Error, Limits, model};

/// The tonic service. Every call passes `qupia_transport::admit` first (installed
/// in `server.rs`), which puts the caller's identity in the extensions.
#[derive(Debug, Clone)]
pub struct VaultApi {
    vault: Vault,
    limits: Limits,
}

impl VaultApi {
    pub fn new(vault: Vault, limits: Limits) -> VaultApi {
        VaultApi { vault, limits }
    }

    fn admit<T: Message>(&self, request: &Request<T>) -> Result<ServiceIdentity, Status> {
        let caller = qupia_transport::caller_of(request)?;
        let size = request.get_ref().encoded_len();
        if size > self.limits.max_request_bytes {
            return Err(Error::invalid(
                "request",
                format!("is {size} bytes, over the limit of {} bytes", self.limits.max_request_bytes),
            )
            .into());
        }
        Ok(caller)
    }

    fn check_batch(&self, len: usize) -> Result<(), Status> {
        if len == 0 {
            return Err(Error::invalid("items", "must not be empty").into());
        }
        if len > self.limits.max_batch_items {
            return Err(Error::invalid("items", format!("has more than {} items", self.limits.max_batch_items)).into());
        }
        Ok(())
    }
}

/// The access-log record of a call. Reveals and lookups must carry the gateway's
/// decision (purpose, decision id, the caller it decided for); writes may.
pub(crate) fn access_record(
    caller: &ServiceIdentity,
    access: Option<&proto::AccessContext>,
    decided: bool,
) -> Result<AccessRecord, Error> {
    let Some(access) = access else {
        if decided {
            return Err(Error::invalid("access", "is required"));
        }
        return Ok(AccessRecord { caller: caller.to_string(), ..AccessRecord::default() });
    };
    let purpose = if decided || access.purpose != 0 {
        model::purpose(access.purpose, "access.purpose")?.as_str().to_owned()
    } else {
        String::new()
    };
    if decided && access.decision_id.is_empty() {
        return Err(Error::invalid("access.decision_id", "is required"));
    }
    let on_behalf_of = if access.caller.is_empty() {
        if decided {
            return Err(Error::invalid("access.caller", "is required"));
        }
        caller.clone()
    } else {
        ServiceIdentity::parse(&access.caller).map_err(|e| Error::invalid("access.caller", e.to_string()))?
    };
    Ok(AccessRecord {
        caller: on_behalf_of.to_string(),
        purpose,
        decision_id: access.decision_id.clone(),
        consent_id: access.consent_id.clone(),
        request_id: access.request_id.clone(),
        trace_id: access.trace_id.clone(),
        reason: access.reason.clone(),
    })
}

fn tokens_to_proto(tokens: Tokenized) -> proto::PersonTokens {
    proto::PersonTokens {
        person_token: tokens.person_token,
        field_tokens: tokens
            .field_tokens
            .into_iter()
            .map(|(field, token)| proto::FieldToken { field: model::field_to_proto(field) as i32, token })
            .collect(),
    }
}

fn revealed_to_proto(revealed: Revealed) -> proto::RevealResponse {
    proto::RevealResponse {
        person_token: revealed.person_token,
        values: revealed
            .values
            .into_iter()
            .map(|(field, value)| proto::FieldValue {
                field: model::field_to_proto(field) as i32,
                // The value leaves the zeroizing buffer here, for the wire.
                value: value.as_str().to_owned(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl VaultService for VaultApi {
    #[tracing::instrument(skip_all)]
    async fn tokenize(
        &self,
        request: Request<proto::TokenizeRequest>,
    ) -> Result<Response<proto::TokenizeResponse>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), false)?;
        let item = TokenizeItem {
            person: model::person(request.person)?,
            idempotency_key: model::idempotency_key(&request.idempotency_key)?,
        };
        let mut results = self.vault.tokenize(&caller, &access, vec![item]).await?;
        let tokens = results.pop().ok_or_else(|| Status::internal("no result"))??;
        let replayed = tokens.replayed;
        Ok(Response::new(proto::TokenizeResponse { tokens: Some(tokens_to_proto(tokens)), replayed }))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_tokenize(
        &self,
        request: Request<proto::BatchTokenizeRequest>,
    ) -> Result<Response<proto::BatchTokenizeResponse>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), false)?;
        let items = request.items;
        self.check_batch(items.len())?;

        // Invalid items get their error; the valid ones are stored together.
        let mut slots: Vec<Result<usize, Error>> = Vec::with_capacity(items.len());
        let mut valid = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let parsed = model::person(item.person).and_then(|person| {
                Ok(TokenizeItem { person, idempotency_key: model::idempotency_key(&item.idempotency_key)? })
            });
            match parsed {
                Ok(item) => {
                    slots.push(Ok(valid.len()));
                    valid.push(item);
                }
                Err(err) => slots.push(Err(err.in_item(&format!("items[{i}].")))),
            }
        }
        let mut stored: Vec<Option<Result<Tokenized, Error>>> =
            if valid.is_empty() { Vec::new() } else { self.vault.tokenize(&caller, &access, valid).await? }
                .into_iter()
                .map(Some)
                .collect();
        let results = slots
            .into_iter()
            .map(|slot| {
                let outcome = slot.and_then(|index| stored[index].take().unwrap_or(Err(Error::NotFound("result"))));
                match outcome {
                    Ok(tokens) => proto::BatchTokenizeResult {
                        replayed: tokens.replayed,
                        result: Some(proto::batch_tokenize_result::Result::Tokens(tokens_to_proto(tokens))),
                    },
                    Err(err) => proto::BatchTokenizeResult {
                        replayed: false,
                        result: Some(proto::batch_tokenize_result::Result::Error(ItemError::from(err))),
                    },
                }
            })
            .collect();
        Ok(Response::new(proto::BatchTokenizeResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn reveal(&self, request: Request<proto::RevealRequest>) -> Result<Response<proto::RevealResponse>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), true)?;
        let item = RevealItem {
            token: self.vault.parse_token(&request.token, "token")?,
            fields: model::fields(&request.fields, "fields")?,
            consent_id: String::new(),
        };
        let revealed =
            self.vault.reveal(&access, &[item]).await?.pop().ok_or_else(|| Status::internal("no result"))??;
        Ok(Response::new(revealed_to_proto(revealed)))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_reveal(
        &self,
        request: Request<proto::BatchRevealRequest>,
    ) -> Result<Response<proto::BatchRevealResponse>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), true)?;
        self.check_batch(request.items.len())?;
        // Items that do not parse fail alone; the others are revealed together.
        let mut slots: Vec<Result<usize, Error>> = Vec::with_capacity(request.items.len());
        let mut valid = Vec::new();
        for (i, item) in request.items.into_iter().enumerate() {
            let parsed = self.vault.parse_token(&item.token, "token").and_then(|token| {
                Ok(RevealItem { token, fields: model::fields(&item.fields, "fields")?, consent_id: item.consent_id })
            });
            match parsed {
                Ok(item) => {
                    slots.push(Ok(valid.len()));
                    valid.push(item);
                }
                Err(err) => slots.push(Err(err.in_item(&format!("items[{i}].")))),
            }
        }
        let mut revealed: Vec<Option<Result<Revealed, Error>>> =
            if valid.is_empty() { Vec::new() } else { self.vault.reveal(&access, &valid).await? }
                .into_iter()
                .map(Some)
                .collect();
        let results = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                let outcome = slot.and_then(|index| {
                    revealed[index]
                        .take()
                        .unwrap_or(Err(Error::NotFound("result")))
                        .map_err(|e| e.in_item(&format!("items[{i}].")))
                });
                proto::BatchRevealResult {
                    result: Some(match outcome {
                        Ok(revealed) => proto::batch_reveal_result::Result::Revealed(revealed_to_proto(revealed)),
                        Err(err) => proto::batch_reveal_result::Result::Error(ItemError::from(err)),
                    }),
                }
            })
            .collect();
        Ok(Response::new(proto::BatchRevealResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn lookup(&self, request: Request<proto::LookupRequest>) -> Result<Response<proto::LookupResponse>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), true)?;
        let key = model::lookup_key(request.key)?;
        let person_tokens = self.vault.lookup(&access, &key).await?;
        Ok(Response::new(proto::LookupResponse { person_tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_field(
        &self,
        request: Request<proto::UpdateFieldRequest>,
    ) -> Result<Response<proto::UpdateFieldResponse>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), false)?;
        let person = self.vault.parse_token(&request.person_token, "person_token")?;
        let field = model::field(request.field, "field")?;
        let update = model::field_update(field, &request.value)?;
        let field_token = self.vault.update_field(&access, &person, update).await?.unwrap_or_default();
        Ok(Response::new(proto::UpdateFieldResponse { field_token }))
    }

    #[tracing::instrument(skip_all)]
    async fn erase(&self, request: Request<proto::EraseRequest>) -> Result<Response<proto::EraseResponse>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), false)?;
        let person = self.vault.parse_token(&request.person_token, "person_token")?;
        let erased_fields = self.vault.erase(&access, &person).await?;
        tracing::info!("person erased");
        Ok(Response::new(proto::EraseResponse { erased_fields }))
    }

    #[tracing::instrument(skip_all)]
    async fn record_decisions(
        &self,
        request: Request<proto::RecordDecisionsRequest>,
    ) -> Result<Response<proto::RecordDecisionsResponse>, Status> {
        self.admit(&request)?;
        let decisions = request.into_inner().decisions;
        self.check_batch(decisions.len())?;
        let mut entries = Vec::with_capacity(decisions.len());
        for (i, d) in decisions.into_iter().enumerate() {
            let at = |name: &str| format!("decisions[{i}].{name}");
            let purpose = if d.purpose == 0 {
                String::new()
            } else {
                model::purpose(d.purpose, &at("purpose"))?.as_str().to_owned()
            };
            let fields = model::fields(&d.fields, &at("fields"))?;
            ServiceIdentity::parse(&d.caller).map_err(|e| Error::invalid(at("caller"), e.to_string()))?;
            let mut fields: Vec<String> = fields.iter().map(|f| f.as_str().to_owned()).collect();
            // A decision about a document is filed under its owner, so that a query by
            // person finds it; the document is named in the reason.
            let (person, reason) = if d.person_token.starts_with(TokenKind::Document.prefix()) {
                fields = vec!["document".to_owned()];
                match self.vault.parse_token(&d.person_token, &at("person_token")) {
                    Ok(document) => {
                        let owner = self.vault.document_owner_token(&document).await?.unwrap_or_default();
                        (owner, format!("document {}: {}", d.person_token, d.reason))
                    }
                    // A refusal of a forged token is still a decision to record; the
                    // token itself is not repeated.
                    Err(_) => (String::new(), format!("a document token that is not valid: {}", d.reason)),
                }
            } else {
                (d.person_token, d.reason)
            };
            entries.push(qupia_audit::NewEntry {
                caller: d.caller,
                operation: if d.operation.is_empty() { "decision".to_owned() } else { d.operation },
                purpose,
                person,
                fields,
                outcome: if d.allowed { qupia_audit::Outcome::Allowed } else { qupia_audit::Outcome::Denied },
                reason,
                consent_id: d.consent_id,
                request_id: d.request_id,
                decision_id: d.decision_id,
                trace_id: d.trace_id,
            });
        }
        let seqs = self.vault.append_audit(&entries).await.map_err(Error::from)?;
        Ok(Response::new(proto::RecordDecisionsResponse { seqs }))
    }
}
