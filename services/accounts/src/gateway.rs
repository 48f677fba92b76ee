//! The gateway, as this service uses it: one method per step, each naming the purpose
//! it asks under and turning a refusal into an [`Error`] that says which step failed.
//!
//! Every call carries the current trace context (the channel is wrapped in the
//! telemetry client layer), so a request is one trace from here through the gateway to
//! the vault.

use std::sync::Arc;

use qupia_api::audit::v1::AuditEntry;
use qupia_api::gateway::v1 as gw;
use qupia_api::gateway::v1::access_history_service_client::AccessHistoryServiceClient;
use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use qupia_api::gateway::v1::document_service_client::DocumentServiceClient;
use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::types::v1 as types;
use qupia_api::vault::v1::{DocumentUploadHeader, PersonInput};
use qupia_domain::{Field, Purpose};
use qupia_telemetry::TracedChannel;
use tonic::Code;
use tonic::codec::Streaming;

use crate::Error;
use crate::model::{ConsentSubject, DocumentKind};

/// The size of the pieces a document is sent to the gateway in: well under gRPC's
/// default 4 MiB message limit, large enough to keep the message count low.
const UPLOAD_CHUNK_BYTES: usize = 256 * 1024;
/// The page size for the access history, the access log's largest.
const HISTORY_PAGE: u32 = 1000;

/// A document received whole, ready to be stored.
#[derive(Clone)]
pub struct Document {
    pub kind: DocumentKind,
    pub declared_type: types::DocumentType,
    pub content: Arc<[u8]>,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the content: it is a scan of an identity document.
        f.debug_struct("Document")
            .field("kind", &self.kind)
            .field("declared_type", &self.declared_type)
            .field("size_bytes", &self.content.len())
            .finish()
    }
}

/// The values a reveal returned, by field.
#[derive(Default)]
pub struct Revealed {
    pub surname: String,
    pub given_name: String,
    pub patronymic: String,
    pub email: String,
    pub phone: String,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revealed(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Gateway {
    people: GatewayServiceClient<TracedChannel>,
    consents: ConsentServiceClient<TracedChannel>,
    documents: DocumentServiceClient<TracedChannel>,
    history: AccessHistoryServiceClient<TracedChannel>,
}

impl Gateway {
    pub fn new(channel: TracedChannel) -> Gateway {
        Gateway {
            people: GatewayServiceClient::new(channel.clone()),
            consents: ConsentServiceClient::new(channel.clone()),
            documents: DocumentServiceClient::new(channel.clone()),
            history: AccessHistoryServiceClient::new(channel),
        }
    }

    /// The privacy policy version in force: the latest published.
    pub async fn current_policy_version(&self) -> Result<i64, Error> {
        let versions = self
            .consents
            .clone()
            .list_policy_versions(gw::ListPolicyVersionsRequest {})
            .await
            .map_err(Error::gateway("read the published privacy policy versions"))?
            .into_inner()
            .versions;
        versions
            .iter()
            .map(|v| v.version)
            .max()
            .ok_or_else(|| Error::FailedPrecondition("no privacy policy version has been published".to_owned()))
    }

    /// Stores a person; returns their person token and whether an earlier call with the
    /// same idempotency key had stored them.
    pub async fn tokenize(&self, person: PersonInput, idempotency_key: String) -> Result<(String, bool), Error> {
        let response = self
            .people
            .clone()
            .tokenize(gw::TokenizeRequest { person: Some(person), idempotency_key })
            .await
            .map_err(Error::gateway("store the person"))?
            .into_inner();
        let token =
            response.tokens.map(|t| t.person_token).filter(|t| !t.is_empty()).ok_or_else(|| Error::Gateway {
                step: "store the person",
                status: tonic::Status::internal("the gateway returned no person token"),
            })?;
        Ok((token, response.replayed))
    }

    /// Streams a document to the gateway, a piece at a time.
    pub async fn upload_document(&self, person_token: &str, document: &Document) -> Result<types::DocumentInfo, Error> {
        let step = match document.kind {
            DocumentKind::Identity => "store the identity document",
            DocumentKind::Authorisation => "store the authorisation document",
        };
        let header = gw::UploadDocumentRequest {
            part: Some(gw::upload_document_request::Part::Header(DocumentUploadHeader {
                person_token: person_token.to_owned(),
                kind: document.kind.to_proto() as i32,
                declared_type: document.declared_type as i32,
                declared_size_bytes: document.content.len() as u64,
            })),
        };
        let content = document.content.clone();
        let pieces = content.len().div_ceil(UPLOAD_CHUNK_BYTES);
        // Each piece is copied out only when the transport asks for it.
        let chunks = (0..pieces).map(move |i| {
            let end = content.len().min((i + 1) * UPLOAD_CHUNK_BYTES);
            gw::UploadDocumentRequest {
                part: Some(gw::upload_document_request::Part::Chunk(content[i * UPLOAD_CHUNK_BYTES..end].to_vec())),
            }
        });
        let requests = futures::stream::iter(std::iter::once(header).chain(chunks));
        let response =
            self.documents.clone().upload_document(requests).await.map_err(Error::gateway(step))?.into_inner();
        response.document.ok_or_else(|| Error::Gateway {
            step,
            status: tonic::Status::internal("the gateway returned no document description"),
        })
    }

    /// Records a grant under `policy_version`.
    pub async fn grant(
        &self,
        person_token: &str,
        subject: &ConsentSubject,
        policy_version: i64,
        channel: &str,
        evidence: &str,
    ) -> Result<gw::ConsentEvent, Error> {
        let response = self
            .consents
            .clone()
            .grant_consent(gw::GrantConsentRequest {
                person_token: person_token.to_owned(),
                purpose: qupia_api::convert::purpose_to_proto(subject.purpose) as i32,
                recipient: subject.recipient.clone(),
                policy_version,
                channel: channel.to_owned(),
                evidence: evidence.to_owned(),
                expires_at_ms: 0,
            })
            .await
            .map_err(Error::gateway("record the consent"))?;
        Ok(response.into_inner().event.unwrap_or_default())
    }

    /// Records a withdrawal; it holds from the gateway's next decision on.
    pub async fn withdraw(
        &self,
        person_token: &str,
        subject: &ConsentSubject,
        channel: &str,
        evidence: &str,
    ) -> Result<gw::ConsentEvent, Error> {
        let response = self
            .consents
            .clone()
            .withdraw_consent(gw::WithdrawConsentRequest {
                person_token: person_token.to_owned(),
                purpose: qupia_api::convert::purpose_to_proto(subject.purpose) as i32,
                recipient: subject.recipient.clone(),
                channel: channel.to_owned(),
                evidence: evidence.to_owned(),
            })
            .await
            .map_err(Error::gateway("record the withdrawal"))?;
        Ok(response.into_inner().event.unwrap_or_default())
    }

    /// The person tokens of an e-mail address or phone number (purpose identification).
    pub async fn lookup(&self, key: gw::lookup_request::Key) -> Result<Vec<String>, Error> {
        Ok(self
            .people
            .clone()
            .lookup(gw::LookupRequest { key: Some(key) })
            .await
            .map_err(Error::gateway("look the person up"))?
            .into_inner()
            .person_tokens)
    }

    /// The person's name, e-mail and phone, for purpose service_delivery.
    pub async fn reveal_profile(&self, person_token: &str) -> Result<Revealed, Error> {
        let response = self
            .people
            .clone()
            .reveal(gw::RevealRequest {
                token: person_token.to_owned(),
                purpose: qupia_api::convert::purpose_to_proto(Purpose::ServiceDelivery) as i32,
                fields: vec![],
                recipient: String::new(),
                disclosure_request_id: String::new(),
            })
            .await
            .map_err(Error::gateway("read the person's data"))?
            .into_inner();
        let mut revealed = Revealed::default();
        for value in response.values {
            let slot = match qupia_api::convert::field(value.field) {
                Ok(Field::Surname) => &mut revealed.surname,
                Ok(Field::GivenName) => &mut revealed.given_name,
                Ok(Field::Patronymic) => &mut revealed.patronymic,
                Ok(Field::Email) => &mut revealed.email,
                Ok(Field::Phone) => &mut revealed.phone,
                // A field this service does not know of is not shown.
                Err(_) => continue,
            };
            *slot = value.value;
        }
        Ok(revealed)
    }

    /// Rectifies one field.
    pub async fn update_field(&self, person_token: &str, field: Field, value: String) -> Result<(), Error> {
        self.people
            .clone()
            .update_field(gw::UpdateFieldRequest {
                person_token: person_token.to_owned(),
                field: qupia_api::convert::field_to_proto(field) as i32,
                value,
            })
            .await
            .map_err(Error::gateway("rectify the field"))?;
        Ok(())
    }

    /// Erases the person (the vault crypto-shreds them and their documents). A person
    /// already erased counts as erased.
    pub async fn erase(&self, person_token: &str) -> Result<(), Error> {
        match self.people.clone().erase(gw::EraseRequest { person_token: person_token.to_owned() }).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(Error::gateway("erase the person")(status)),
        }
    }

    /// The current state of each of the person's consents.
    pub async fn consents(&self, person_token: &str) -> Result<Vec<gw::ConsentState>, Error> {
        Ok(self
            .consents
            .clone()
            .get_consents(gw::GetConsentsRequest { person_token: person_token.to_owned() })
            .await
            .map_err(Error::gateway("read the consents"))?
            .into_inner()
            .consents)
    }

    /// Every consent event of the person, oldest first.
    pub async fn consent_history(&self, person_token: &str) -> Result<Vec<gw::ConsentEvent>, Error> {
        Ok(self
            .consents
            .clone()
            .list_consent_history(gw::ListConsentHistoryRequest { person_token: person_token.to_owned() })
            .await
            .map_err(Error::gateway("read the consent history"))?
            .into_inner()
            .events)
    }

    /// The person's documents, described without their content.
    pub async fn documents(&self, person_token: &str) -> Result<Vec<types::DocumentInfo>, Error> {
        Ok(self
            .documents
            .clone()
            .list_documents(gw::ListDocumentsRequest { person_token: person_token.to_owned() })
            .await
            .map_err(Error::gateway("list the documents"))?
            .into_inner()
            .documents)
    }

    /// Destroys one document.
    pub async fn delete_document(&self, document_token: &str) -> Result<(), Error> {
        self.documents
            .clone()
            .delete_document(gw::DeleteDocumentRequest { document_token: document_token.to_owned() })
            .await
            .map_err(Error::gateway("delete the document"))?;
        Ok(())
    }

    /// Streams a document back, for purpose identification.
    pub async fn download_document(
        &self,
        document_token: &str,
    ) -> Result<Streaming<gw::DownloadDocumentResponse>, Error> {
        Ok(self
            .documents
            .clone()
            .download_document(gw::DownloadDocumentRequest {
                document_token: document_token.to_owned(),
                purpose: qupia_api::convert::purpose_to_proto(Purpose::Identification) as i32,
                disclosure_request_id: String::new(),
            })
            .await
            .map_err(Error::gateway("read the document"))?
            .into_inner())
    }

    /// Every access-log entry about the person, oldest first, every page of it.
    pub async fn access_history(&self, person_token: &str) -> Result<Vec<AuditEntry>, Error> {
        let mut entries = Vec::new();
        let mut after_seq = 0;
        loop {
            let page = self
                .history
                .clone()
                .get_access_history(gw::GetAccessHistoryRequest {
                    person_token: person_token.to_owned(),
                    after_seq,
                    limit: HISTORY_PAGE,
                })
                .await
                .map_err(Error::gateway("read the access history"))?
                .into_inner();
            entries.extend(page.entries);
            // A page that does not move forward would loop for ever: stop there.
            if page.next_after_seq <= after_seq {
                return Ok(entries);
            }
            after_seq = page.next_after_seq;
        }
    }
}
