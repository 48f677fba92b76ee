//! `qupia.vault.v1.VaultDocumentService`: documents streamed in and out of the vault.
//! Who may call is settled by the admission interceptor in `server.rs`; here each
//! message is held to the request-size limit, and the stream's shape is checked: the
//! header first and once, then content only.

use prost::Message;
use qupia_api::vault::v1 as proto;
use qupia_api::vault::v1::vault_document_service_server::VaultDocumentService;
use qupia_transport::ServiceIdentity;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use zeroize::Zeroize;

use crate::document::{DocumentKind, DocumentType};
use crate::grpc::access_record;
use crate::vault::{DocumentInfo, UploadHeader, Vault};
use crate::{Error, Limits};

/// Download messages buffered ahead of a slow reader: a few chunks, not the document.
const DOWNLOAD_BUFFER: usize = 4;

#[derive(Debug, Clone)]
pub struct DocumentApi {
    vault: Vault,
    limits: Limits,
}

impl DocumentApi {
    pub fn new(vault: Vault, limits: Limits) -> DocumentApi {
        DocumentApi { vault, limits }
    }

    /// One message of a call, held to the request-size limit.
    fn check_size(&self, message: &impl Message) -> Result<(), Error> {
        let size = message.encoded_len();
        if size > self.limits.max_request_bytes {
            return Err(Error::invalid(
                "request",
                format!("a message is {size} bytes, over the limit of {} bytes", self.limits.max_request_bytes),
            ));
        }
        Ok(())
    }

    fn header(&self, header: proto::DocumentUploadHeader) -> Result<UploadHeader, Error> {
        Ok(UploadHeader {
            person: self.vault.parse_token(&header.person_token, "header.person_token")?,
            kind: DocumentKind::from_proto(header.kind, "header.kind")?,
            declared_type: DocumentType::from_proto(header.declared_type, "header.declared_type")?,
            declared_size: (header.declared_size_bytes != 0).then_some(header.declared_size_bytes),
        })
    }

    /// Reads and seals a whole upload; nothing is stored until it has all arrived.
    async fn receive(
        &self,
        caller: &ServiceIdentity,
        mut stream: Streaming<proto::UploadDocumentRequest>,
    ) -> Result<DocumentInfo, Error> {
        let first = stream
            .message()
            .await
            .map_err(Error::Stream)?
            .ok_or_else(|| Error::invalid("header", "is required: the stream had no message"))?;
        self.check_size(&first)?;
        let access = access_record(caller, first.access.as_ref(), false)?;
        let header = match first.part {
            Some(proto::upload_document_request::Part::Header(header)) => self.header(header)?,
            Some(proto::upload_document_request::Part::Chunk(_)) | None => {
                return Err(Error::invalid("header", "must be the first message"));
            }
        };
        let mut upload = self.vault.begin_upload(header, self.limits.max_document_bytes).await?;
        while let Some(message) = stream.message().await.map_err(Error::Stream)? {
            self.check_size(&message)?;
            if message.access.is_some()
                && !matches!(message.part, Some(proto::upload_document_request::Part::Header(_)))
            {
                return Err(Error::invalid("access", "belongs on the first message only"));
            }
            match message.part {
                Some(proto::upload_document_request::Part::Chunk(mut bytes)) => {
                    let pushed = upload.push(&bytes);
                    // The plaintext does not outlive its sealing.
                    bytes.zeroize();
                    pushed?;
                }
                Some(proto::upload_document_request::Part::Header(_)) => {
                    return Err(Error::invalid("header", "must be sent once, in the first message"));
                }
                // An empty message is refused rather than skipped: a forwarder whose own
                // caller's stream broke sends one, so a cut-off upload can never end
                // as a shorter, valid-looking document.
                None => return Err(Error::invalid("chunk", "is required in every message after the header")),
            }
        }
        let sealed = upload.finish()?;
        self.vault.store_document(&access, sealed).await
    }
}

pub fn info_to_proto(info: DocumentInfo) -> qupia_api::types::v1::DocumentInfo {
    qupia_api::types::v1::DocumentInfo {
        document_token: info.document_token,
        person_token: info.person_token,
        r#type: info.content_type.to_proto() as i32,
        kind: info.kind.to_proto() as i32,
        size_bytes: info.size_bytes,
        uploaded_at_ms: info.uploaded_at_ms,
    }
}

#[tonic::async_trait]
impl VaultDocumentService for DocumentApi {
    type DownloadDocumentStream = ReceiverStream<Result<proto::DownloadDocumentResponse, Status>>;

    #[tracing::instrument(skip_all)]
    async fn upload_document(
        &self,
        request: Request<Streaming<proto::UploadDocumentRequest>>,
    ) -> Result<Response<proto::UploadDocumentResponse>, Status> {
        let caller = qupia_transport::caller_of(&request)?;
        let info = self.receive(&caller, request.into_inner()).await?;
        tracing::info!(size_bytes = info.size_bytes, "document stored");
        Ok(Response::new(proto::UploadDocumentResponse { document: Some(info_to_proto(info)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn download_document(
        &self,
        request: Request<proto::DownloadDocumentRequest>,
    ) -> Result<Response<Self::DownloadDocumentStream>, Status> {
        let caller = qupia_transport::caller_of(&request)?;
        self.check_size(request.get_ref())?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), true)?;
        let token = self.vault.parse_token(&request.document_token, "document_token")?;
        let mut download = self.vault.open_download(&access, &token).await?;

        let (sender, receiver) = mpsc::channel(DOWNLOAD_BUFFER);
        let info = proto::DownloadDocumentResponse {
            part: Some(proto::download_document_response::Part::Info(info_to_proto(download.info().clone()))),
        };
        // Cannot fail: the channel is new and has room.
        let _ = sender.try_send(Ok(info));
        tokio::spawn(
            async move {
                loop {
                    let message = match download.next_chunk().await {
                        Ok(Some(plaintext)) => Ok(proto::DownloadDocumentResponse {
                            // The content leaves the zeroizing buffer here, for the wire.
                            part: Some(proto::download_document_response::Part::Chunk(plaintext.to_vec())),
                        }),
                        Ok(None) => break,
                        Err(err) => {
                            if matches!(err, Error::Integrity) {
                                tracing::error!("a stored document failed its integrity check; download ended");
                            }
                            Err(Status::from(err))
                        }
                    };
                    let failed = message.is_err();
                    // A reader that went away ends the download.
                    if sender.send(message).await.is_err() || failed {
                        break;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_documents(
        &self,
        request: Request<proto::ListDocumentsRequest>,
    ) -> Result<Response<proto::ListDocumentsResponse>, Status> {
        let caller = qupia_transport::caller_of(&request)?;
        self.check_size(request.get_ref())?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), false)?;
        let person = self.vault.parse_token(&request.person_token, "person_token")?;
        let documents = self.vault.list_documents(&access, &person).await?;
        Ok(Response::new(proto::ListDocumentsResponse {
            documents: documents.into_iter().map(info_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_document(
        &self,
        request: Request<proto::DeleteDocumentRequest>,
    ) -> Result<Response<proto::DeleteDocumentResponse>, Status> {
        let caller = qupia_transport::caller_of(&request)?;
        self.check_size(request.get_ref())?;
        let request = request.into_inner();
        let access = access_record(&caller, request.access.as_ref(), false)?;
        let document = self.vault.parse_token(&request.document_token, "document_token")?;
        self.vault.delete_document(&access, &document).await?;
        tracing::info!("document deleted");
        Ok(Response::new(proto::DeleteDocumentResponse {}))
    }
}
