//! `qupiactl document …`: scanned documents through the gateway, for trying the suite
//! out (`--as accounts`). Files are streamed in pieces both ways, never read whole, and
//! a download is written to a private temporary file that takes the final name only
//! once the whole document has arrived and been authenticated by the vault.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use qupia_api::gateway::v1::document_service_client::DocumentServiceClient;
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::{DocumentInfo, DocumentKind, DocumentType};
use qupia_api::vault::v1::DocumentUploadHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::status;
use crate::emit;
use crate::person_cmd::purpose;

/// Bytes per upload message: well under every message limit on the way.
const PIECE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// The scanned identity document sent at registration.
    Identity,
    /// The document that authorises someone to enter another person's data.
    Authorisation,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Type {
    Pdf,
    Jpeg,
    Png,
}

#[derive(Debug, Subcommand)]
pub enum DocumentCommand {
    /// Store a person's document (writers only); its type is judged from the content.
    Upload {
        person_token: String,
        file: PathBuf,
        #[arg(long, value_enum)]
        kind: Kind,
        /// What the file is; the vault refuses it if the content says otherwise.
        #[arg(long = "type", value_enum)]
        declared_type: Option<Type>,
    },
    /// Download a document for a purpose (identification, or legal_disclosure).
    Download {
        document_token: String,
        #[arg(long, default_value = "identification")]
        purpose: String,
        /// The approved disclosure request, for legal_disclosure.
        #[arg(long, default_value = "")]
        disclosure_request: String,
        /// Where to write it; never overwritten half-way.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Describe a person's documents without reading them.
    List { person_token: String },
    /// Destroy one document.
    Delete { document_token: String },
}

fn type_name(value: i32) -> &'static str {
    match DocumentType::try_from(value) {
        Ok(DocumentType::Pdf) => "pdf",
        Ok(DocumentType::Jpeg) => "jpeg",
        Ok(DocumentType::Png) => "png",
        _ => "unknown",
    }
}

fn kind_name(value: i32) -> &'static str {
    match DocumentKind::try_from(value) {
        Ok(DocumentKind::Identity) => "identity",
        Ok(DocumentKind::Authorisation) => "authorisation",
        _ => "unknown",
    }
}

pub fn info_json(info: &DocumentInfo) -> serde_json::Value {
    serde_json::json!({
        "document_token": info.document_token, "person_token": info.person_token,
        "type": type_name(info.r#type), "kind": kind_name(info.kind),
        "size_bytes": info.size_bytes, "uploaded_at_ms": info.uploaded_at_ms,
    })
}

fn print_info(info: &DocumentInfo, json: bool) -> anyhow::Result<()> {
    if json {
        emit(info_json(info))
    } else {
        emit(format_args!(
            "{}  {:<5} {:<13} {:>10} bytes  {}",
            info.document_token,
            type_name(info.r#type),
            kind_name(info.kind),
            info.size_bytes,
            info.uploaded_at_ms
        ))
    }
}

pub async fn run(command: DocumentCommand, channel: Channel, json: bool) -> anyhow::Result<()> {
    let mut documents = DocumentServiceClient::new(channel);
    match command {
        DocumentCommand::Upload { person_token, file, kind, declared_type } => {
            let info = upload(&mut documents, person_token, &file, kind, declared_type).await?;
            print_info(&info, json)?;
        }
        DocumentCommand::Download { document_token, purpose: purpose_arg, disclosure_request, output } => {
            let request = DownloadDocumentRequest {
                document_token,
                purpose: purpose(&purpose_arg)?,
                disclosure_request_id: disclosure_request,
            };
            let (info, decision_id) = download(&mut documents, request, &output).await?;
            if json {
                let mut line = info_json(&info);
                line["file"] = output.display().to_string().into();
                line["decision_id"] = decision_id.into();
                emit(line)?;
            } else {
                emit(format_args!(
                    "saved {} bytes ({}, {}) to {} (decision {decision_id})",
                    info.size_bytes,
                    type_name(info.r#type),
                    kind_name(info.kind),
                    output.display()
                ))?;
            }
        }
        DocumentCommand::List { person_token } => {
            let listed =
                documents.list_documents(ListDocumentsRequest { person_token }).await.map_err(status)?.into_inner();
            for info in &listed.documents {
                print_info(info, json)?;
            }
        }
        DocumentCommand::Delete { document_token } => {
            documents
                .delete_document(DeleteDocumentRequest { document_token: document_token.clone() })
                .await
                .map_err(status)?;
            if json {
                emit(serde_json::json!({"deleted": document_token}))?;
            } else {
                emit(format_args!("deleted {document_token}"))?;
            }
        }
    }
    Ok(())
}

async fn upload(
    documents: &mut DocumentServiceClient<Channel>,
    person_token: String,
    file: &Path,
    kind: Kind,
    declared_type: Option<Type>,
) -> anyhow::Result<DocumentInfo> {
    let mut reader = tokio::fs::File::open(file).await.with_context(|| format!("open {}", file.display()))?;
    let size = reader.metadata().await.with_context(|| format!("read {}", file.display()))?.len();
    let header = DocumentUploadHeader {
        person_token,
        kind: match kind {
            Kind::Identity => DocumentKind::Identity,
            Kind::Authorisation => DocumentKind::Authorisation,
        } as i32,
        declared_type: match declared_type {
            None => DocumentType::Unspecified,
            Some(Type::Pdf) => DocumentType::Pdf,
            Some(Type::Jpeg) => DocumentType::Jpeg,
            Some(Type::Png) => DocumentType::Png,
        } as i32,
        declared_size_bytes: size,
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let _ = sender.try_send(UploadDocumentRequest { part: Some(upload_document_request::Part::Header(header)) });
    let path = file.to_owned();
    // Reads the file while the call sends it; a read error stops the stream short, and
    // the declared size makes the vault refuse a short document.
    let reading = tokio::spawn(async move {
        loop {
            let mut piece = vec![0u8; PIECE_BYTES];
            let read = reader.read(&mut piece).await.with_context(|| format!("read {}", path.display()))?;
            if read == 0 {
                return Ok::<(), anyhow::Error>(());
            }
            piece.truncate(read);
            let message = UploadDocumentRequest { part: Some(upload_document_request::Part::Chunk(piece)) };
            if sender.send(message).await.is_err() {
                return Ok(());
            }
        }
    });
    let answer = documents.upload_document(ReceiverStream::new(receiver)).await;
    reading.await.context("the file reader stopped")??;
    answer.map_err(status)?.into_inner().document.context("the gateway did not describe the stored document")
}

async fn download(
    documents: &mut DocumentServiceClient<Channel>,
    request: DownloadDocumentRequest,
    output: &Path,
) -> anyhow::Result<(DocumentInfo, String)> {
    let mut stream = documents.download_document(request).await.map_err(status)?.into_inner();
    let first = stream.message().await.map_err(status)?.context("the gateway sent nothing")?;
    let Some(download_document_response::Part::Info(info)) = first.part else {
        anyhow::bail!("the gateway did not describe the document first");
    };
    let partial = partial_path(output);
    let written = write_content(&mut stream, &partial, info.size_bytes).await;
    if let Err(err) = written {
        // Nothing half-downloaded is left behind: it would be personal data on disk.
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(err);
    }
    tokio::fs::rename(&partial, output).await.with_context(|| format!("move the download to {}", output.display()))?;
    Ok((info, first.decision_id))
}

/// `<output>.part`, beside it, so the final rename stays on one file system.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    output.with_file_name(name)
}

async fn write_content(
    stream: &mut tonic::Streaming<DownloadDocumentResponse>,
    partial: &Path,
    expected: u64,
) -> anyhow::Result<()> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // The document is personal data: readable by its owner only.
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(partial).await.with_context(|| format!("create {}", partial.display()))?;
    let mut written: u64 = 0;
    while let Some(message) = stream.message().await.map_err(status)? {
        let Some(download_document_response::Part::Chunk(bytes)) = message.part else {
            anyhow::bail!("the gateway sent the document out of order");
        };
        file.write_all(&bytes).await.with_context(|| format!("write {}", partial.display()))?;
        written += bytes.len() as u64;
    }
    file.sync_all().await.with_context(|| format!("write {}", partial.display()))?;
    anyhow::ensure!(written == expected, "the download ended after {written} of {expected} bytes");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_written_beside_its_final_name() {
        assert_eq!(partial_path(Path::new("/tmp/out/passport.pdf")), Path::new("/tmp/out/passport.pdf.part"));
        assert_eq!(partial_path(Path::new("scan")), Path::new("scan.part"));
    }
}
