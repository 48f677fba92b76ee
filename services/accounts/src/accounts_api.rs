//! `AccountsService`: registration, sign-in, the profile and the person's rights over
//! their data (clause 3.1: access, rectification, erasure, consent withdrawal), each
//! a few gateway calls under a named purpose around one account row.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use qupia_api::accounts::v1 as proto;
use qupia_api::accounts::v1::accounts_service_server::AccountsService;
use qupia_api::gateway::v1 as gw;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::gateway::{Gateway, Revealed};
use crate::model::{AccountId, ConsentChange, ProfileChanges, SignInKey, document_token};
use crate::register::{Registrar, receive};
use crate::store::{Account, AccountLookup, Store, now_ms};

/// The consent ledger's channel when the caller's name cannot be one.
const FALLBACK_CHANNEL: &str = "account";

#[derive(Debug, Clone)]
pub struct AccountsApi {
    pub store: Store,
    pub gateway: Gateway,
    pub registrar: Registrar,
    pub max_document_bytes: usize,
}

pub fn account_to_proto(account: &Account) -> proto::Account {
    proto::Account {
        account_id: account.id.to_string(),
        person_token: account.person_token.clone(),
        attestation: account.attestation.to_proto() as i32,
        policy_version: account.policy_version,
        identity_document_token: account.identity_document_token.clone(),
        authorisation_document_token: account.authorisation_document_token.clone().unwrap_or_default(),
        registered_at_ms: account.registered_at_ms,
        updated_at_ms: account.updated_at_ms,
    }
}

fn data_to_proto(revealed: Revealed) -> proto::PersonalData {
    proto::PersonalData {
        surname: revealed.surname,
        given_name: revealed.given_name,
        patronymic: revealed.patronymic,
        email: revealed.email,
        phone: revealed.phone,
    }
}

/// How the consent ledger records where a change came from: the calling service's
/// name (`web`, `qupiactl`), when it fits the ledger's rule for a channel.
fn channel_of(caller: &ServiceIdentity) -> &str {
    let name = caller.as_str().rsplit('/').next().unwrap_or_default();
    let fits = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if fits { name } else { FALLBACK_CHANNEL }
}

impl AccountsApi {
    /// The account a request names; NOT_FOUND for an unknown or deleted one.
    async fn account(&self, account_id: &str) -> Result<Account, Error> {
        let id = AccountId::parse(account_id, "account_id")?;
        match self.store.account(&id).await? {
            AccountLookup::Found(account) => Ok(account),
            AccountLookup::Deleted { .. } => Err(Error::NotFound("the account was deleted")),
            AccountLookup::Unknown => Err(Error::NotFound("the account was not found")),
        }
    }
}

#[tonic::async_trait]
impl AccountsService for AccountsApi {
    #[tracing::instrument(skip_all)]
    async fn register(
        &self,
        request: Request<Streaming<proto::RegisterRequest>>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let caller = caller_of(&request)?;
        let mut stream = request.into_inner();
        let received = receive(&mut stream, &self.gateway, self.max_document_bytes).await?;
        Ok(Response::new(self.registrar.register(&caller, received).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn sign_in(&self, request: Request<proto::SignInRequest>) -> Result<Response<proto::SignInResponse>, Status> {
        let key = SignInKey::parse(request.into_inner())?;
        let people = self.gateway.lookup(key.lookup_key()).await?;
        let accounts = self.store.accounts_of_people(&people).await.map_err(Error::from)?;
        if accounts.is_empty() {
            return Err(Error::NotFound(key.not_found()).into());
        }
        Ok(Response::new(proto::SignInResponse { accounts: accounts.iter().map(account_to_proto).collect() }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_profile(
        &self,
        request: Request<proto::GetProfileRequest>,
    ) -> Result<Response<proto::GetProfileResponse>, Status> {
        let account = self.account(&request.get_ref().account_id).await?;
        let data = self.gateway.reveal_profile(&account.person_token).await?;
        let consents = self.gateway.consents(&account.person_token).await?;
        Ok(Response::new(proto::GetProfileResponse {
            account: Some(account_to_proto(&account)),
            data: Some(data_to_proto(data)),
            consents,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_profile(
        &self,
        request: Request<proto::UpdateProfileRequest>,
    ) -> Result<Response<proto::UpdateProfileResponse>, Status> {
        let request = request.into_inner();
        let changes = ProfileChanges::parse(&request)?;
        let account = self.account(&request.account_id).await?;
        let mut updated = Vec::with_capacity(changes.0.len());
        for (field, value) in changes.0 {
            if let Err(cause) = self.gateway.update_field(&account.person_token, field, value).await {
                let error = if updated.is_empty() {
                    cause
                } else {
                    let names: Vec<&str> = updated.iter().map(|f: &qupia_domain::Field| f.as_str()).collect();
                    Error::PartlyUpdated { updated: names.join(", "), cause: Box::new(cause) }
                };
                return Err(error.into());
            }
            updated.push(field);
        }
        // The rectification has happened; failing the call now would tell the person
        // otherwise. The time of it is bookkeeping: log, and answer with what changed.
        if let Err(err) = self.store.touch(&account.id, now_ms()).await {
            tracing::warn!(error = %err, account_id = %account.id, "failed to note the time of a rectification");
        }
        tracing::info!(account_id = %account.id, fields = ?updated, "profile rectified");
        Ok(Response::new(proto::UpdateProfileResponse {
            updated_fields: updated.into_iter().map(|f| qupia_api::convert::field_to_proto(f) as i32).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_consent(
        &self,
        request: Request<proto::ChangeConsentRequest>,
    ) -> Result<Response<proto::ChangeConsentResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let change = ConsentChange::parse(&request)?;
        let account = self.account(&request.account_id).await?;
        let channel = channel_of(&caller);
        // The evidence is the account id: the person asked on their own account.
        let evidence = account.id.to_string();
        let event = match change {
            ConsentChange::Grant { subject, policy_version } => {
                let current = self.gateway.current_policy_version().await?;
                if let Some(shown) = policy_version
                    && shown != current
                {
                    return Err(Error::FailedPrecondition(format!(
                        "the privacy policy version shown ({shown}) is not the version in force ({current})"
                    ))
                    .into());
                }
                self.gateway.grant(&account.person_token, &subject, current, channel, &evidence).await?
            }
            ConsentChange::Withdraw { subject } => {
                self.gateway.withdraw(&account.person_token, &subject, channel, &evidence).await?
            }
        };
        tracing::info!(account_id = %account.id, consent_id = %event.id, granted = event.granted, "consent changed");
        Ok(Response::new(proto::ChangeConsentResponse { event: Some(event) }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_account(
        &self,
        request: Request<proto::DeleteAccountRequest>,
    ) -> Result<Response<proto::DeleteAccountResponse>, Status> {
        let id = AccountId::parse(&request.get_ref().account_id, "account_id")?;
        let account = match self.store.account(&id).await.map_err(Error::from)? {
            AccountLookup::Found(account) => account,
            AccountLookup::Deleted { .. } => return Err(Error::NotFound("the account was already deleted").into()),
            AccountLookup::Unknown => return Err(Error::NotFound("the account was not found").into()),
        };
        // Erasure first: if it fails, the account stays and the call can be repeated;
        // if the row's removal fails after it, a repeat finds the person already erased.
        self.gateway.erase(&account.person_token).await?;
        let deleted_at_ms = self.store.delete_account(&account.id, now_ms()).await.map_err(Error::from)?;
        tracing::info!(account_id = %account.id, "account deleted; the person was erased");
        Ok(Response::new(proto::DeleteAccountResponse { deleted_at_ms }))
    }

    #[tracing::instrument(skip_all)]
    async fn export_account(
        &self,
        request: Request<proto::ExportAccountRequest>,
    ) -> Result<Response<proto::ExportAccountResponse>, Status> {
        let account = self.account(&request.get_ref().account_id).await?;
        let token = &account.person_token;
        let data = self.gateway.reveal_profile(token).await?;
        let documents = self.gateway.documents(token).await?;
        let consents = self.gateway.consents(token).await?;
        let consent_history = self.gateway.consent_history(token).await?;
        // Last, so that the history includes the reveal above.
        let access_history = self.gateway.access_history(token).await?;
        tracing::info!(account_id = %account.id, entries = access_history.len(), "account exported");
        Ok(Response::new(proto::ExportAccountResponse {
            account: Some(account_to_proto(&account)),
            data: Some(data_to_proto(data)),
            documents,
            consents,
            consent_history,
            access_history,
            exported_at_ms: now_ms(),
        }))
    }

    type DownloadDocumentStream =
        Pin<Box<dyn Stream<Item = Result<proto::DownloadDocumentResponse, Status>> + Send + 'static>>;

    #[tracing::instrument(skip_all)]
    async fn download_document(
        &self,
        request: Request<proto::DownloadDocumentRequest>,
    ) -> Result<Response<Self::DownloadDocumentStream>, Status> {
        let request = request.into_inner();
        let account = self.account(&request.account_id).await?;
        let token = if request.document_token.is_empty() {
            account.identity_document_token.clone()
        } else {
            let token = document_token(&request.document_token, "document_token")?;
            // Only the account's own documents: a token of someone else's is as good as
            // unknown here.
            if !account.document_tokens().any(|own| own == token) {
                return Err(Error::NotFound("the document was not found on this account").into());
            }
            token
        };
        let upstream = self.gateway.download_document(&token).await?;
        let stream = upstream.map(|item| {
            item.map(|message| proto::DownloadDocumentResponse {
                part: message.part.map(|part| match part {
                    gw::download_document_response::Part::Info(info) => {
                        proto::download_document_response::Part::Info(info)
                    }
                    gw::download_document_response::Part::Chunk(chunk) => {
                        proto::download_document_response::Part::Chunk(chunk)
                    }
                }),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consent_channel_is_the_calling_service() {
        assert_eq!(channel_of(&ServiceIdentity::for_service("default", "web")), "web");
        assert_eq!(channel_of(&ServiceIdentity::for_service("default", "qupiactl")), "qupiactl");
        assert_eq!(channel_of(&ServiceIdentity::parse("spiffe://qupia/ns/default/sa/Web.Front").unwrap()), "account");
    }
}
