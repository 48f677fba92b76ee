//! Registration (policy clauses 1.4, 1.6 and 2.4): the whole request is received and
//! checked first, so that bad input stores nothing; then the person is stored through
//! the gateway, their documents streamed to the vault, the consents they chose recorded
//! and the account row written. A step that fails after the person was stored erases
//! the person again (their documents go with them), so nothing half-registered remains,
//! and the error says so.

use std::sync::Arc;

use qupia_api::accounts::v1 as proto;
use qupia_api::accounts::v1::register_request::Part;
use qupia_transport::ServiceIdentity;
use tonic::Streaming;
use tracing::Instrument;

use crate::Error;
use crate::gateway::{Document, Gateway};
use crate::model::{AccountId, Attestation, DocumentKind, Registration, document_type, scoped_idempotency_key};
use crate::store::{Account, Inserted, Store, now_ms};

/// The consent ledger's channel for consents chosen on the registration form.
const REGISTRATION_CHANNEL: &str = "registration";

/// A registration received whole and checked.
#[derive(Debug)]
pub struct Received {
    pub registration: Registration,
    pub identity: Document,
    pub authorisation: Option<Document>,
}

/// A document's content as it arrives, with its size limit.
struct Incoming {
    kind: DocumentKind,
    content: Vec<u8>,
    limit: usize,
}

impl Incoming {
    fn new(kind: DocumentKind, limit: usize) -> Incoming {
        Incoming { kind, content: Vec::new(), limit }
    }

    fn append(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if self.content.len().saturating_add(chunk.len()) > self.limit {
            return Err(Error::invalid(self.kind.field(), format!("the document is larger than {} bytes", self.limit)));
        }
        self.content.extend_from_slice(chunk);
        Ok(())
    }

    /// The document, if any content arrived; it must be a PDF, JPEG or PNG.
    fn finish(self) -> Result<Option<Document>, Error> {
        if self.content.is_empty() {
            return Ok(None);
        }
        let declared_type = document_type(&self.content)
            .ok_or_else(|| Error::invalid(self.kind.field(), "the document must be a PDF, JPEG or PNG file"))?;
        Ok(Some(Document { kind: self.kind, declared_type, content: Arc::from(self.content) }))
    }
}

/// Reads and checks the whole registration. The policy version is checked against the
/// version in force as soon as the header is in, so a stale form is refused before
/// its documents are sent.
pub async fn receive(
    stream: &mut Streaming<proto::RegisterRequest>,
    gateway: &Gateway,
    max_document_bytes: usize,
) -> Result<Received, Error> {
    let header = match stream.message().await.map_err(Error::Stream)?.and_then(|m| m.part) {
        Some(Part::Header(header)) => header,
        _ => return Err(Error::invalid("header", "must be the first message")),
    };
    let registration = Registration::parse(header)?;
    let current = gateway.current_policy_version().await?;
    if registration.policy_version != current {
        return Err(Error::FailedPrecondition(format!(
            "the privacy policy version accepted ({}) is not the version in force ({current}); the person must \
             accept version {current}",
            registration.policy_version
        )));
    }

    let mut identity = Incoming::new(DocumentKind::Identity, max_document_bytes);
    let mut authorisation = Incoming::new(DocumentKind::Authorisation, max_document_bytes);
    let mut authorisation_started = false;
    while let Some(message) = stream.message().await.map_err(Error::Stream)? {
        match message.part {
            Some(Part::Header(_)) => return Err(Error::invalid("header", "must be sent once, as the first message")),
            Some(Part::IdentityDocumentChunk(_)) if authorisation_started => {
                return Err(Error::invalid(
                    "identity_document_chunk",
                    "must all come before the authorisation document",
                ));
            }
            Some(Part::IdentityDocumentChunk(chunk)) => identity.append(&chunk)?,
            Some(Part::AuthorisationDocumentChunk(chunk)) => {
                authorisation_started = true;
                authorisation.append(&chunk)?;
            }
            None => return Err(Error::invalid("part", "every message must carry a header or a document chunk")),
        }
    }

    let identity = identity.finish()?.ok_or_else(|| {
        Error::invalid("identity_document_chunk", "the scanned identity document is required (policy clause 1.6)")
    })?;
    let authorisation = authorisation.finish()?;
    match (registration.attestation, &authorisation) {
        (Attestation::Authorised, None) => Err(Error::invalid(
            "authorisation_document_chunk",
            "a registration attested as authorised needs the authorisation document (policy clause 2.4)",
        )),
        (Attestation::OwnData, Some(_)) => {
            Err(Error::invalid("authorisation_document_chunk", "is only for a registration attested as authorised"))
        }
        (Attestation::Authorised, Some(_)) | (Attestation::OwnData, None) => {
            Ok(Received { registration, identity, authorisation })
        }
    }
}

/// Carries out registrations.
#[derive(Debug, Clone)]
pub struct Registrar {
    pub store: Store,
    pub gateway: Gateway,
}

impl Registrar {
    /// Registers what was received. The work runs in a task of its own, so that a
    /// caller who hangs up half-way cannot leave a half-registered person behind: the
    /// registration finishes, or is undone, either way.
    pub async fn register(
        &self,
        caller: &ServiceIdentity,
        received: Received,
    ) -> Result<proto::RegisterResponse, Error> {
        let registrar = self.clone();
        let key = received
            .registration
            .idempotency_key
            .as_deref()
            .map(|key| scoped_idempotency_key(caller.as_str(), key))
            .unwrap_or_default();
        let task = tokio::spawn(async move { registrar.run(received, key).await }.instrument(tracing::Span::current()));
        match task.await {
            Ok(outcome) => outcome,
            // The task panicked: what it had stored is not known here. Say so rather
            // than pretend it was undone.
            Err(_) => Err(Error::Internal("the registration stopped unexpectedly; it may be incomplete")),
        }
    }

    async fn run(&self, received: Received, idempotency_key: String) -> Result<proto::RegisterResponse, Error> {
        let (person_token, replayed) =
            self.gateway.tokenize(received.registration.person_input(), idempotency_key).await?;
        if replayed && let Some(account) = self.store.account_of_person(&person_token).await? {
            tracing::info!(account_id = %account.id, "registration replayed");
            return Ok(response(&account, true));
        }
        match self.complete(&person_token, &received).await {
            Ok((account, replayed)) => {
                tracing::info!(account_id = %account.id, replayed, "account registered");
                Ok(response(&account, replayed))
            }
            Err(cause) => Err(self.undo(&person_token, cause).await),
        }
    }

    /// Everything after the person is stored. Returns the account, and whether it is
    /// another call's (a retry with the same idempotency key that finished first).
    async fn complete(&self, person_token: &str, received: &Received) -> Result<(Account, bool), Error> {
        let id = AccountId::generate();
        let identity = self.gateway.upload_document(person_token, &received.identity).await?;
        let authorisation = match &received.authorisation {
            Some(document) => Some(self.gateway.upload_document(person_token, document).await?),
            None => None,
        };
        let registration = &received.registration;
        // The evidence is the account id: the consent was given on this account's
        // registration form. Never personal data.
        let evidence = id.to_string();
        for subject in &registration.consents {
            self.gateway
                .grant(person_token, subject, registration.policy_version, REGISTRATION_CHANNEL, &evidence)
                .await?;
        }
        let now = now_ms();
        let account = Account {
            id,
            person_token: person_token.to_owned(),
            attestation: registration.attestation,
            policy_version: registration.policy_version,
            identity_document_token: identity.document_token,
            authorisation_document_token: authorisation.map(|d| d.document_token),
            registered_at_ms: now,
            updated_at_ms: now,
        };
        match self.store.insert_account(&account).await? {
            Inserted::New => Ok((account, false)),
            Inserted::Existing(existing) => {
                // The person is the other call's account now: keep them, drop only the
                // documents this call added.
                for token in account.document_tokens() {
                    if let Err(err) = self.gateway.delete_document(token).await {
                        tracing::warn!(error = %err, account_id = %existing.id, "failed to delete a duplicate document");
                    }
                }
                Ok((existing, true))
            }
        }
    }

    /// Erases the person stored by a registration that failed, and says what happened.
    async fn undo(&self, person_token: &str, cause: Error) -> Error {
        match self.gateway.erase(person_token).await {
            Ok(()) => {
                tracing::warn!(error = %cause, "registration failed; the stored person was erased");
                Error::RegistrationUndone { cause: Box::new(cause) }
            }
            Err(undo) => {
                // The token is what an operator needs to finish the erasure by hand; it is
                // an opaque token, not personal data.
                tracing::error!(
                    error = %cause, undo_error = %undo, %person_token,
                    "registration failed and the stored person could not be erased; erase this person token"
                );
                Error::RegistrationNotUndone { cause: Box::new(cause), undo: Box::new(undo) }
            }
        }
    }
}

fn response(account: &Account, replayed: bool) -> proto::RegisterResponse {
    proto::RegisterResponse {
        account_id: account.id.to_string(),
        person_token: account.person_token.clone(),
        identity_document_token: account.identity_document_token.clone(),
        authorisation_document_token: account.authorisation_document_token.clone().unwrap_or_default(),
        replayed,
    }
}
