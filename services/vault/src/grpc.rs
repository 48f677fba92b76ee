//! The gRPC face of the vault: who may call, how big a request may be, and the
//! translation between protobuf messages and the vault's operations.

use std::sync::Arc;

use prost::Message;
use qupia_api::types::v1::ItemError;
use qupia_api::vault::v1 as proto;
use qupia_api::vault::v1::vault_service_server::VaultService;
use qupia_transport::{CallerIdentity, ServiceIdentity};
use tonic::{Request, Response, Status};

use crate::vault::{Revealed, TokenizeItem, Tokenized, Vault};
use crate::{Error, Limits, model};

/// The tonic service. Every call passes [`authorize`] first (installed as an
/// interceptor in `server.rs`), which puts the caller's identity in the extensions.
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
        let caller = request
            .extensions()
            .get::<ServiceIdentity>()
            .cloned()
            .ok_or_else(|| Status::permission_denied("the caller has no identity"))?;
        let size = request.get_ref().encoded_len();
        if size > self.limits.max_request_bytes {
            return Err(Error::invalid(
                "request",
                format!(
                    "is {size} bytes, over the limit of {} bytes",
                    self.limits.max_request_bytes
                ),
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
            return Err(Error::invalid(
                "items",
                format!("has more than {} items", self.limits.max_batch_items),
            )
            .into());
        }
        Ok(())
    }
}

/// Builds the interceptor that admits only `trusted` callers. The identity comes
/// from the client certificate (or, in `insecure-dev`, from configuration), never
/// from request metadata.
pub fn authorize(
    trusted: Arc<[ServiceIdentity]>,
    insecure_dev: Option<ServiceIdentity>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let caller = CallerIdentity::of(&request, insecure_dev.as_ref());
        match caller.service() {
            Some(identity) if trusted.contains(identity) => {
                let identity = identity.clone();
                request.extensions_mut().insert(identity);
                Ok(request)
            }
            _ => {
                tracing::warn!(
                    caller = caller.label(),
                    "vault call refused: caller not trusted"
                );
                Err(Status::permission_denied(
                    "this caller may not call the vault",
                ))
            }
        }
    }
}

fn tokens_to_proto(tokens: Tokenized) -> proto::PersonTokens {
    proto::PersonTokens {
        person_token: tokens.person_token,
        field_tokens: tokens
            .field_tokens
            .into_iter()
            .map(|(field, token)| proto::FieldToken {
                field: model::field_to_proto(field) as i32,
                token,
            })
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
        let item = TokenizeItem {
            person: model::person(request.person)?,
            idempotency_key: model::idempotency_key(&request.idempotency_key)?,
        };
        let mut results = self.vault.tokenize(&caller, vec![item]).await?;
        let tokens = results
            .pop()
            .ok_or_else(|| Status::internal("no result"))??;
        let replayed = tokens.replayed;
        Ok(Response::new(proto::TokenizeResponse {
            tokens: Some(tokens_to_proto(tokens)),
            replayed,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_tokenize(
        &self,
        request: Request<proto::BatchTokenizeRequest>,
    ) -> Result<Response<proto::BatchTokenizeResponse>, Status> {
        let caller = self.admit(&request)?;
        let items = request.into_inner().items;
        self.check_batch(items.len())?;

        // Invalid items get their error; the valid ones are stored together.
        let mut slots: Vec<Result<usize, Error>> = Vec::with_capacity(items.len());
        let mut valid = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let parsed = model::person(item.person).and_then(|person| {
                Ok(TokenizeItem {
                    person,
                    idempotency_key: model::idempotency_key(&item.idempotency_key)?,
                })
            });
            match parsed {
                Ok(item) => {
                    slots.push(Ok(valid.len()));
                    valid.push(item);
                }
                Err(err) => slots.push(Err(err.in_item(&format!("items[{i}].")))),
            }
        }
        let mut stored: Vec<Option<Result<Tokenized, Error>>> = if valid.is_empty() {
            Vec::new()
        } else {
            self.vault.tokenize(&caller, valid).await?
        }
        .into_iter()
        .map(Some)
        .collect();
        let results = slots
            .into_iter()
            .map(|slot| {
                let outcome = slot.and_then(|index| {
                    stored[index]
                        .take()
                        .unwrap_or(Err(Error::NotFound("result")))
                });
                match outcome {
                    Ok(tokens) => proto::BatchTokenizeResult {
                        replayed: tokens.replayed,
                        result: Some(proto::batch_tokenize_result::Result::Tokens(
                            tokens_to_proto(tokens),
                        )),
                    },
                    Err(err) => proto::BatchTokenizeResult {
                        replayed: false,
                        result: Some(proto::batch_tokenize_result::Result::Error(
                            ItemError::from(err),
                        )),
                    },
                }
            })
            .collect();
        Ok(Response::new(proto::BatchTokenizeResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn reveal(
        &self,
        request: Request<proto::RevealRequest>,
    ) -> Result<Response<proto::RevealResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        model::access_purpose(request.access.as_ref())?;
        let token = self.vault.parse_token(&request.token, "token")?;
        let fields = model::fields(&request.fields, "fields")?;
        let revealed = self.vault.reveal(&token, &fields).await?;
        Ok(Response::new(revealed_to_proto(revealed)))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_reveal(
        &self,
        request: Request<proto::BatchRevealRequest>,
    ) -> Result<Response<proto::BatchRevealResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        model::access_purpose(request.access.as_ref())?;
        self.check_batch(request.items.len())?;
        let mut results = Vec::with_capacity(request.items.len());
        for (i, item) in request.items.into_iter().enumerate() {
            let prefix = format!("items[{i}].");
            let outcome = async {
                let token = self.vault.parse_token(&item.token, "token")?;
                let fields = model::fields(&item.fields, "fields")?;
                self.vault.reveal(&token, &fields).await
            }
            .await;
            let result = match outcome {
                Ok(revealed) => {
                    proto::batch_reveal_result::Result::Revealed(revealed_to_proto(revealed))
                }
                // Storage trouble fails the whole call rather than one item.
                Err(err @ Error::Storage(_)) => return Err(err.into()),
                Err(err) => {
                    proto::batch_reveal_result::Result::Error(ItemError::from(err.in_item(&prefix)))
                }
            };
            results.push(proto::BatchRevealResult {
                result: Some(result),
            });
        }
        Ok(Response::new(proto::BatchRevealResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn lookup(
        &self,
        request: Request<proto::LookupRequest>,
    ) -> Result<Response<proto::LookupResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        model::access_purpose(request.access.as_ref())?;
        let key = model::lookup_key(request.key)?;
        let person_tokens = self.vault.lookup(&key).await?;
        Ok(Response::new(proto::LookupResponse { person_tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_field(
        &self,
        request: Request<proto::UpdateFieldRequest>,
    ) -> Result<Response<proto::UpdateFieldResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let person = self
            .vault
            .parse_token(&request.person_token, "person_token")?;
        let field = model::field(request.field, "field")?;
        let update = model::field_update(field, &request.value)?;
        let field_token = self
            .vault
            .update_field(&person, update)
            .await?
            .unwrap_or_default();
        Ok(Response::new(proto::UpdateFieldResponse { field_token }))
    }

    #[tracing::instrument(skip_all)]
    async fn erase(
        &self,
        request: Request<proto::EraseRequest>,
    ) -> Result<Response<proto::EraseResponse>, Status> {
        self.admit(&request)?;
        let person = self
            .vault
            .parse_token(&request.get_ref().person_token, "person_token")?;
        let erased_fields = self.vault.erase(&person).await?;
        tracing::info!("person erased");
        Ok(Response::new(proto::EraseResponse { erased_fields }))
    }
}
