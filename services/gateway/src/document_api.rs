//! `DocumentService`: scanned documents through the gateway.
//!
//! Storing, listing and deleting are for the writers (the accounts service). Reading is
//! a reveal: the purpose policy must allow the resource `document` to the caller for
//! the purpose, only identification and legal_disclosure can, and every decision,
//! allowed or denied, is in the access log before any byte leaves the vault. Documents
//! stream through: the gateway holds a few pieces in flight, never a whole document,
//! and never logs or stores a byte of one.

use std::sync::Arc;

use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::document_service_server::DocumentService;
use qupia_api::vault::v1 as vault;
use qupia_api::vault::v1::vault_document_service_client::VaultDocumentServiceClient;
use qupia_domain::Purpose;
use qupia_ops::DecisionResult;
use qupia_policy::{AccessRequest, Resource};
use qupia_telemetry::TracedChannel;
use qupia_transport::{ServiceIdentity, caller_of};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::disclosure::check_request_field;
use crate::enforce::{Enforcer, decision_result, vault_error};
use crate::rate_limit::CallerLimits;
use crate::{Error, model};

const MIB: u64 = 1024 * 1024;

/// Content is passed to the vault in pieces of at most this size, well under the
/// vault's per-message limit (1 MiB by default) whatever size the caller sent.
const FORWARD_PIECE_BYTES: usize = 256 * 1024;

/// Messages in flight between the caller and the vault, either way: enough to keep both
/// connections busy, a megabyte or so, never a document.
const FORWARD_BUFFER: usize = 4;

/// How the access log spells a download (`qupia_audit::Operation::DocumentDownload`).
const DOWNLOAD_OPERATION: &str = "document_download";

/// A document token: `qpd_` and 35 base64url characters. Only the vault can tell a
/// forged one; the gateway refuses what cannot be one.
pub fn is_document_token(token: &str) -> bool {
    token.len() == 39
        && token.starts_with("qpd_")
        && token[4..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, Clone)]
pub struct DocumentApi {
    pub enforcer: Enforcer,
    pub documents: VaultDocumentServiceClient<TracedChannel>,
    pub limits: Arc<CallerLimits>,
    pub writers: Arc<[ServiceIdentity]>,
}

/// An allowed download: what the vault records with it.
#[derive(Debug)]
struct Allowed {
    decision_id: String,
    reason: String,
    request_id: String,
}

impl DocumentApi {
    /// Charges `cost` against the caller's rate limit (one per call, one per MiB moved).
    fn charge(&self, caller: &ServiceIdentity, cost: u64) -> Result<(), Error> {
        if cost == 0 || self.limits.admit(caller, u32::try_from(cost).unwrap_or(u32::MAX)) {
            Ok(())
        } else {
            Err(Error::RateLimited)
        }
    }

    fn writer<T>(&self, request: &Request<T>) -> Result<ServiceIdentity, Error> {
        let caller = caller_of(request).map_err(|status| Error::PermissionDenied(status.message().to_owned()))?;
        self.charge(&caller, 1)?;
        if !self.writers.contains(&caller) {
            return Err(Error::PermissionDenied(format!("{caller} may not store or delete documents")));
        }
        Ok(caller)
    }

    fn write_access(caller: &ServiceIdentity, trace_id: &str) -> vault::AccessContext {
        vault::AccessContext { caller: caller.as_str().to_owned(), trace_id: trace_id.to_owned(), ..Default::default() }
    }

    /// Passes the caller's upload to the vault message by message. If the caller's
    /// stream breaks or the caller goes over its rate limit, an empty message goes to
    /// the vault before the stream is closed: the vault refuses it, so a cut-off upload
    /// can never be stored as a shorter document.
    async fn forward_upload(
        &self,
        caller: &ServiceIdentity,
        trace_id: &str,
        inbound: &mut Streaming<proto::UploadDocumentRequest>,
        outbound: mpsc::Sender<vault::UploadDocumentRequest>,
    ) -> Result<(), Error> {
        let forwarded = self.forward_messages(caller, trace_id, inbound, &outbound).await;
        if forwarded.is_err() {
            let _ = outbound.send(vault::UploadDocumentRequest { part: None, access: None }).await;
        }
        forwarded
    }

    async fn forward_messages(
        &self,
        caller: &ServiceIdentity,
        trace_id: &str,
        inbound: &mut Streaming<proto::UploadDocumentRequest>,
        outbound: &mpsc::Sender<vault::UploadDocumentRequest>,
    ) -> Result<(), Error> {
        let mut access = Some(Self::write_access(caller, trace_id));
        let mut received: u64 = 0;
        let mut charged_mib: u64 = 0;
        while let Some(message) = inbound.message().await.map_err(Error::CallerStream)? {
            let parts: Vec<Option<vault::upload_document_request::Part>> = match message.part {
                Some(proto::upload_document_request::Part::Header(header)) => {
                    // A declared size is paid for up front.
                    let declared_mib = header.declared_size_bytes / MIB;
                    self.charge(caller, declared_mib.saturating_sub(charged_mib))?;
                    charged_mib = charged_mib.max(declared_mib);
                    vec![Some(vault::upload_document_request::Part::Header(header))]
                }
                Some(proto::upload_document_request::Part::Chunk(bytes)) => {
                    received = received.saturating_add(bytes.len() as u64);
                    let due = received / MIB;
                    if due > charged_mib {
                        self.charge(caller, due - charged_mib)?;
                        charged_mib = due;
                    }
                    if bytes.is_empty() {
                        Vec::new()
                    } else {
                        bytes
                            .chunks(FORWARD_PIECE_BYTES)
                            .map(|piece| Some(vault::upload_document_request::Part::Chunk(piece.to_vec())))
                            .collect()
                    }
                }
                // The vault refuses it, with its own words.
                None => vec![None],
            };
            for part in parts {
                let message = vault::UploadDocumentRequest { part, access: access.take() };
                if outbound.send(message).await.is_err() {
                    // The vault has answered already (a refusal); its answer says why.
                    return Ok(());
                }
            }
        }
        // The caller's stream ended cleanly: only now is the upload complete. A failure
        // above never reaches this, so the vault stores nothing without it.
        let end = Some(vault::upload_document_request::Part::End(vault::DocumentUploadEnd {}));
        let _ = outbound.send(vault::UploadDocumentRequest { part: end, access: access.take() }).await;
        Ok(())
    }

    /// Decides a download and records a refusal. The policy must permit the caller the
    /// resource `document` for the purpose; only identification and legal_disclosure
    /// can reveal a document; legal_disclosure also needs an approved request.
    async fn decide_download(
        &self,
        caller: &ServiceIdentity,
        purpose: Purpose,
        request: &proto::DownloadDocumentRequest,
        trace_id: &str,
    ) -> Result<Allowed, Error> {
        let decision_id = uuid::Uuid::new_v4().to_string();
        let policy = self.enforcer.policy.current();
        let decision = policy.decide(&AccessRequest {
            caller: caller.as_str(),
            purpose,
            resource: Resource::Document,
            recipient: None,
        });
        let refusal = if !matches!(purpose, Purpose::Identification | Purpose::LegalDisclosure) {
            Some(format!("documents are revealed only for identification or legal_disclosure, not {purpose}"))
        } else if !decision.allowed {
            Some(decision.reason.clone())
        } else if purpose == Purpose::LegalDisclosure {
            self.check_disclosure(caller, &request.disclosure_request_id, &request.document_token, trace_id)
                .await?
                .err()
        } else {
            None
        };
        if let Some(reason) = refusal {
            let record = vault::DecisionRecord {
                caller: caller.as_str().to_owned(),
                purpose: model::purpose_to_proto(purpose) as i32,
                // The vault files it under the document's owner.
                person_token: request.document_token.clone(),
                fields: Vec::new(),
                allowed: false,
                reason: reason.clone(),
                decision_id,
                trace_id: trace_id.to_owned(),
                consent_id: String::new(),
                request_id: request.disclosure_request_id.clone(),
                operation: DOWNLOAD_OPERATION.to_owned(),
            };
            self.enforcer.record(vec![record]).await?;
            return Err(Error::PermissionDenied(reason));
        }
        Ok(Allowed { decision_id, reason: decision.reason, request_id: request.disclosure_request_id.clone() })
    }

    /// Whether an approved disclosure request (policy clause 3.4) covers this download
    /// by `caller`: the one check legal_disclosure needs beyond the policy, for
    /// documents as for fields. The request must be approved, unexpired, include
    /// documents, and name the document's owner; the owner is found by listing the
    /// documents of the people in scope (metadata only, nothing is decrypted). `Err`
    /// carries the reason for the access log.
    async fn check_disclosure(
        &self,
        caller: &ServiceIdentity,
        disclosure_request_id: &str,
        document_token: &str,
        trace_id: &str,
    ) -> Result<Result<(), String>, Error> {
        let request = match self.enforcer.disclosures.usable(disclosure_request_id).await? {
            Ok(request) => request,
            Err(reason) => return Ok(Err(reason)),
        };
        if !request.documents {
            return Ok(Err(format!("disclosure request {} does not include documents", request.id)));
        }
        for person_token in &request.person_tokens {
            let mut access = Self::write_access(caller, trace_id);
            access.purpose = model::purpose_to_proto(Purpose::LegalDisclosure) as i32;
            access.request_id = request.id.clone();
            let listed = self
                .documents
                .clone()
                .list_documents(vault::ListDocumentsRequest {
                    person_token: person_token.clone(),
                    access: Some(access),
                })
                .await;
            match listed {
                Ok(response) => {
                    if response.into_inner().documents.iter().any(|d| d.document_token == document_token) {
                        return Ok(Ok(()));
                    }
                }
                // An erased person has no documents.
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => return Err(vault_error(status)),
            }
        }
        Ok(Err(format!("the document is outside the scope of disclosure request {}", request.id)))
    }

    async fn download(
        &self,
        caller: &ServiceIdentity,
        purpose: Purpose,
        request: proto::DownloadDocumentRequest,
        trace_id: &str,
    ) -> Result<ReceiverStream<Result<proto::DownloadDocumentResponse, Status>>, Error> {
        let allowed = self.decide_download(caller, purpose, &request, trace_id).await?;
        let access = vault::AccessContext {
            purpose: model::purpose_to_proto(purpose) as i32,
            decision_id: allowed.decision_id.clone(),
            caller: caller.as_str().to_owned(),
            consent_id: String::new(),
            request_id: allowed.request_id,
            trace_id: trace_id.to_owned(),
            reason: allowed.reason,
        };
        let mut stream = self
            .documents
            .clone()
            .download_document(vault::DownloadDocumentRequest {
                document_token: request.document_token,
                access: Some(access),
            })
            .await
            .map_err(vault_error)?
            .into_inner();
        // The vault describes the document first; a refusal arrives instead of it.
        let info = match stream.message().await.map_err(vault_error)?.and_then(|m| m.part) {
            Some(vault::download_document_response::Part::Info(info)) => info,
            _ => return Err(Error::Vault(Status::internal("the vault did not describe the document first"))),
        };
        // The whole document is paid for before its first byte moves.
        self.charge(caller, info.size_bytes.div_ceil(MIB))?;

        let (sender, receiver) = mpsc::channel(FORWARD_BUFFER);
        let first = proto::DownloadDocumentResponse {
            part: Some(proto::download_document_response::Part::Info(info)),
            decision_id: allowed.decision_id,
        };
        // Cannot fail: the channel is new and has room.
        let _ = sender.try_send(Ok(first));
        tokio::spawn(
            async move {
                loop {
                    let message = match stream.message().await {
                        Ok(Some(vault::DownloadDocumentResponse {
                            part: Some(vault::download_document_response::Part::Chunk(bytes)),
                        })) => Ok(proto::DownloadDocumentResponse {
                            part: Some(proto::download_document_response::Part::Chunk(bytes)),
                            decision_id: String::new(),
                        }),
                        Ok(None) => break,
                        Ok(Some(_)) => Err(Status::internal("the vault sent a document out of order")),
                        // DATA_LOSS and the rest pass on as the vault worded them (no values).
                        Err(status) => Err(status),
                    };
                    let failed = message.is_err();
                    if sender.send(message).await.is_err() || failed {
                        break;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        Ok(ReceiverStream::new(receiver))
    }
}

#[tonic::async_trait]
impl DocumentService for DocumentApi {
    type DownloadDocumentStream = ReceiverStream<Result<proto::DownloadDocumentResponse, Status>>;

    #[tracing::instrument(skip_all)]
    async fn upload_document(
        &self,
        request: Request<Streaming<proto::UploadDocumentRequest>>,
    ) -> Result<Response<proto::UploadDocumentResponse>, Status> {
        let caller = self.writer(&request)?;
        let trace_id = model::trace_id(&request);
        let mut inbound = request.into_inner();
        let (outbound, to_vault) = mpsc::channel(FORWARD_BUFFER);
        let mut client = self.documents.clone();
        let call = client.upload_document(ReceiverStream::new(to_vault));
        let forward = self.forward_upload(&caller, &trace_id, &mut inbound, outbound);
        tokio::pin!(call, forward);
        let answer = tokio::select! {
            forwarded = &mut forward => {
                // On a failure the vault has been sent a message it refuses; the call
                // is dropped unanswered.
                forwarded?;
                call.await
            }
            // The vault answered before the caller finished: it refused the upload.
            answered = &mut call => answered,
        };
        let stored = answer.map_err(vault_error)?.into_inner();
        Ok(Response::new(proto::UploadDocumentResponse { document: stored.document }))
    }

    #[tracing::instrument(skip_all)]
    async fn download_document(
        &self,
        request: Request<proto::DownloadDocumentRequest>,
    ) -> Result<Response<Self::DownloadDocumentStream>, Status> {
        let caller = caller_of(&request)?;
        self.charge(&caller, 1)?;
        let trace_id = model::trace_id(&request);
        let request = request.into_inner();
        let purpose = model::purpose(request.purpose, "purpose")?;
        if !is_document_token(&request.document_token) {
            return Err(Error::invalid("document_token", "is not a well-formed document token").into());
        }
        check_request_field("disclosure_request_id", &request.disclosure_request_id, purpose)?;
        let downloaded = self.download(&caller, purpose, request, &trace_id).await;
        let result = match &downloaded {
            Ok(_) => Some(DecisionResult::Allowed),
            Err(error) => decision_result(error),
        };
        if let Some(result) = result {
            self.enforcer.metrics.decision(purpose.as_str(), result);
        }
        Ok(Response::new(downloaded?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_documents(
        &self,
        request: Request<proto::ListDocumentsRequest>,
    ) -> Result<Response<proto::ListDocumentsResponse>, Status> {
        let caller = self.writer(&request)?;
        let trace_id = model::trace_id(&request);
        let response = self
            .documents
            .clone()
            .list_documents(vault::ListDocumentsRequest {
                person_token: request.into_inner().person_token,
                access: Some(Self::write_access(&caller, &trace_id)),
            })
            .await
            .map_err(vault_error)?
            .into_inner();
        Ok(Response::new(proto::ListDocumentsResponse { documents: response.documents }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_document(
        &self,
        request: Request<proto::DeleteDocumentRequest>,
    ) -> Result<Response<proto::DeleteDocumentResponse>, Status> {
        let caller = self.writer(&request)?;
        let trace_id = model::trace_id(&request);
        self.documents
            .clone()
            .delete_document(vault::DeleteDocumentRequest {
                document_token: request.into_inner().document_token,
                access: Some(Self::write_access(&caller, &trace_id)),
            })
            .await
            .map_err(vault_error)?;
        Ok(Response::new(proto::DeleteDocumentResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_tokens_are_told_from_other_strings() {
        assert!(is_document_token(&format!("qpd_{}", "A".repeat(35))));
        assert!(!is_document_token(&format!("qpp_{}", "A".repeat(35))));
        assert!(!is_document_token(&format!("qpd_{}", "A".repeat(34))));
        assert!(!is_document_token(&format!("qpd_{}+", "A".repeat(34))));
    }
}
