//! `qupiactl account …`: what the web front end does through the accounts service —
//! register a person with their scan, sign in, read and rectify the profile, change
//! consents, export everything held, download the scan, delete the account.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use qupia_api::accounts::v1::accounts_service_client::AccountsServiceClient;
use qupia_api::accounts::v1::*;
use qupia_api::gateway::v1::ListPolicyVersionsRequest;
use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use tonic::transport::Channel;

use crate::audit_cmd::entry_json;
use crate::client::{Connection, status};
use crate::document_cmd::{info_json, partial_path};
use crate::emit;
use crate::person_cmd::{event_json, field_name, purpose, purpose_name, state_json, state_line};

/// The size of the pieces a document is sent in.
const CHUNK_BYTES: usize = 64 * 1024;

/// Whose data a registration enters (policy clause 2.4).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Attest {
    /// The data is the person's own.
    Own,
    /// Another person's data, under the authority of the document given with --authorisation.
    Authorised,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Register a person with their scanned identity document; prints the account.
    Register {
        #[arg(long)]
        surname: String,
        #[arg(long)]
        given_name: String,
        #[arg(long, default_value = "")]
        patronymic: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        phone: String,
        /// The scanned identity document: a PDF, JPEG or PNG file.
        #[arg(long)]
        document: PathBuf,
        /// A consent the person chose: advertising, statistics or
        /// third_party_transfer=<recipient>. Repeat for several.
        #[arg(long = "consent")]
        consents: Vec<String>,
        /// The privacy policy version the person accepted; the version in force when omitted.
        #[arg(long)]
        policy_version: Option<i64>,
        /// Whose data this is.
        #[arg(long, value_enum, default_value = "own")]
        attest: Attest,
        /// The document that authorises entering another person's data (with --attest authorised).
        #[arg(long)]
        authorisation: Option<PathBuf>,
        /// Retrying with the same key returns the first registration.
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Find the accounts of an e-mail address or phone number.
    Signin {
        #[arg(long, conflicts_with = "phone", required_unless_present = "phone")]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Show the person's data, the account and its consents.
    Profile { account_id: String },
    /// Rectify one or more fields (an empty --patronymic removes it).
    Update {
        account_id: String,
        #[arg(long)]
        surname: Option<String>,
        #[arg(long)]
        given_name: Option<String>,
        #[arg(long)]
        patronymic: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Grant or withdraw a consent.
    Consent {
        #[command(subcommand)]
        command: AccountConsentCommand,
    },
    /// Delete the account: the person and their documents are erased.
    Delete { account_id: String },
    /// Everything held about the person, as one JSON document.
    Export { account_id: String },
    /// The person's documents.
    Document {
        #[command(subcommand)]
        command: DocumentCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountConsentCommand {
    /// Record a consent (advertising, statistics, third_party_transfer).
    Grant {
        account_id: String,
        #[arg(long)]
        purpose: String,
        /// The third party, for third_party_transfer.
        #[arg(long, default_value = "")]
        recipient: String,
        /// The privacy policy version the person was shown; the version in force when omitted.
        #[arg(long, default_value_t = 0)]
        policy_version: i64,
    },
    /// Record a withdrawal; it holds from the next call on.
    Withdraw {
        account_id: String,
        #[arg(long)]
        purpose: String,
        #[arg(long, default_value = "")]
        recipient: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DocumentCommand {
    /// Download a document (the identity scan unless --document names another).
    Download {
        account_id: String,
        /// One of the account's document tokens.
        #[arg(long, default_value = "")]
        document: String,
        /// Where to write it; never overwritten half-way.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Writes a document's content to `partial`, readable by its owner only, and checks
/// that all of it came.
async fn write_content(
    stream: &mut tonic::Streaming<DownloadDocumentResponse>,
    partial: &Path,
    expected: u64,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // The document is personal data.
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(partial).await.with_context(|| format!("create {}", partial.display()))?;
    let mut written: u64 = 0;
    while let Some(message) = stream.message().await.map_err(status)? {
        let Some(download_document_response::Part::Chunk(bytes)) = message.part else {
            anyhow::bail!("the accounts service sent the document out of order");
        };
        file.write_all(&bytes).await.with_context(|| format!("write {}", partial.display()))?;
        written += bytes.len() as u64;
    }
    file.sync_all().await.with_context(|| format!("write {}", partial.display()))?;
    anyhow::ensure!(written == expected, "the download ended after {written} of {expected} bytes");
    Ok(())
}

/// `advertising`, `statistics` or `third_party_transfer=<recipient>`.
fn consent_choice(text: &str) -> anyhow::Result<ConsentChoice> {
    let (name, recipient) = text.split_once('=').unwrap_or((text, ""));
    Ok(ConsentChoice { purpose: purpose(name).context("consent")?, recipient: recipient.to_owned() })
}

fn read_document(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn account_json(account: &Account) -> serde_json::Value {
    serde_json::json!({
        "account_id": account.account_id, "person_token": account.person_token,
        "attestation": attestation_name(account.attestation), "policy_version": account.policy_version,
        "identity_document_token": account.identity_document_token,
        "authorisation_document_token": account.authorisation_document_token,
        "registered_at_ms": account.registered_at_ms, "updated_at_ms": account.updated_at_ms,
    })
}

fn data_json(data: &PersonalData) -> serde_json::Value {
    serde_json::json!({
        "surname": data.surname, "given_name": data.given_name, "patronymic": data.patronymic,
        "email": data.email, "phone": data.phone,
    })
}

fn attestation_name(value: i32) -> &'static str {
    match Attestation::try_from(value) {
        Ok(Attestation::OwnData) => "own_data",
        Ok(Attestation::Authorised) => "authorised",
        Ok(Attestation::Unspecified) | Err(_) => "unknown",
    }
}

fn print_account(account: &Account, json: bool) -> anyhow::Result<()> {
    if json {
        return emit(account_json(account));
    }
    emit(format_args!("account     {}", account.account_id))?;
    emit(format_args!("person      {}", account.person_token))?;
    emit(format_args!("attested    {}", attestation_name(account.attestation)))?;
    emit(format_args!("policy      v{}", account.policy_version))?;
    emit(format_args!("identity    {}", account.identity_document_token))?;
    if !account.authorisation_document_token.is_empty() {
        emit(format_args!("authority   {}", account.authorisation_document_token))?;
    }
    emit(format_args!("registered  {}", account.registered_at_ms))
}

/// The privacy policy version in force, from the gateway.
async fn current_policy_version(connection: &Connection, dev_dir: &Path) -> anyhow::Result<i64> {
    let versions = ConsentServiceClient::new(connection.channel(dev_dir).await?)
        .list_policy_versions(ListPolicyVersionsRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .versions;
    versions.iter().map(|v| v.version).max().context("no privacy policy version is published")
}

/// Deletes an account (its person and documents are erased) and says so; returns when
/// it was deleted. `account delete` and `subject erase`.
pub async fn delete_account(
    accounts: &mut AccountsServiceClient<Channel>,
    account_id: String,
    json: bool,
) -> anyhow::Result<i64> {
    let deleted = accounts
        .delete_account(DeleteAccountRequest { account_id: account_id.clone() })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        emit(serde_json::json!({"account_id": account_id, "deleted_at_ms": deleted.deleted_at_ms}))?;
    } else {
        emit(format_args!(
            "deleted {account_id}; the person and their documents were erased, and every token of theirs now answers NOT_FOUND"
        ))?;
    }
    Ok(deleted.deleted_at_ms)
}

/// Everything held about an account's person, as one JSON document. `account export`
/// and `subject export`, which prints it only once it has checked whose it is.
pub async fn export_account(
    accounts: &mut AccountsServiceClient<Channel>,
    account_id: String,
) -> anyhow::Result<ExportAccountResponse> {
    Ok(accounts.export_account(ExportAccountRequest { account_id }).await.map_err(status)?.into_inner())
}

/// Prints an export: one JSON line with `--json`, indented otherwise.
pub fn print_export(export: &ExportAccountResponse, json: bool) -> anyhow::Result<()> {
    let document = serde_json::json!({
        "exported_at_ms": export.exported_at_ms,
        "account": export.account.as_ref().map(account_json),
        "data": export.data.as_ref().map(data_json),
        "documents": export.documents.iter().map(info_json).collect::<Vec<_>>(),
        "consents": export.consents.iter().map(state_json).collect::<Vec<_>>(),
        "consent_history": export.consent_history.iter().map(event_json).collect::<Vec<_>>(),
        "access_history": export.access_history.iter().map(entry_json).collect::<Vec<_>>(),
    });
    if json { emit(document) } else { emit(serde_json::to_string_pretty(&document)?) }
}

pub async fn run(command: AccountCommand, connection: &Connection, dev_dir: &Path, json: bool) -> anyhow::Result<()> {
    let policy_version = match &command {
        AccountCommand::Register { policy_version: None, .. } => {
            Some(current_policy_version(connection, dev_dir).await?)
        }
        _ => None,
    };
    let mut accounts: AccountsServiceClient<Channel> =
        AccountsServiceClient::new(connection.accounts_channel(dev_dir).await?);
    match command {
        AccountCommand::Register {
            surname,
            given_name,
            patronymic,
            email,
            phone,
            document,
            consents,
            policy_version: accepted,
            attest,
            authorisation,
            idempotency_key,
        } => {
            let header = RegistrationHeader {
                surname,
                given_name,
                patronymic,
                email,
                phone,
                consents: consents.iter().map(|c| consent_choice(c)).collect::<anyhow::Result<_>>()?,
                policy_version: accepted.or(policy_version).unwrap_or_default(),
                attestation: match attest {
                    Attest::Own => Attestation::OwnData,
                    Attest::Authorised => Attestation::Authorised,
                } as i32,
                idempotency_key,
            };
            let identity = read_document(&document)?;
            let authority = authorisation.as_deref().map(read_document).transpose()?;
            use register_request::Part;
            let mut messages = vec![RegisterRequest { part: Some(Part::Header(header)) }];
            messages.extend(
                identity
                    .chunks(CHUNK_BYTES)
                    .map(|c| RegisterRequest { part: Some(Part::IdentityDocumentChunk(c.to_vec())) }),
            );
            messages.extend(
                authority
                    .iter()
                    .flat_map(|a| a.chunks(CHUNK_BYTES))
                    .map(|c| RegisterRequest { part: Some(Part::AuthorisationDocumentChunk(c.to_vec())) }),
            );
            let registered = accounts.register(tokio_stream::iter(messages)).await.map_err(status)?.into_inner();
            if json {
                emit(serde_json::json!({
                    "account_id": registered.account_id, "person_token": registered.person_token,
                    "identity_document_token": registered.identity_document_token,
                    "authorisation_document_token": registered.authorisation_document_token,
                    "replayed": registered.replayed,
                }))?;
            } else {
                emit(format_args!("account     {}", registered.account_id))?;
                emit(format_args!("person      {}", registered.person_token))?;
                emit(format_args!("identity    {}", registered.identity_document_token))?;
                if !registered.authorisation_document_token.is_empty() {
                    emit(format_args!("authority   {}", registered.authorisation_document_token))?;
                }
                if registered.replayed {
                    emit("(registered earlier with the same idempotency key)")?;
                }
            }
        }
        AccountCommand::Signin { email, phone } => {
            let key = match (email, phone) {
                (Some(email), _) => sign_in_request::Key::Email(email),
                (None, Some(phone)) => sign_in_request::Key::Phone(phone),
                (None, None) => anyhow::bail!("give --email or --phone"),
            };
            let found = accounts.sign_in(SignInRequest { key: Some(key) }).await.map_err(status)?.into_inner();
            for account in &found.accounts {
                if json {
                    emit(account_json(account))?;
                } else {
                    emit(format_args!("{}  {}", account.account_id, account.person_token))?;
                }
            }
        }
        AccountCommand::Profile { account_id } => {
            let profile = accounts.get_profile(GetProfileRequest { account_id }).await.map_err(status)?.into_inner();
            let account = profile.account.unwrap_or_default();
            let data = profile.data.unwrap_or_default();
            if json {
                emit(serde_json::json!({
                    "account": account_json(&account), "data": data_json(&data),
                    "consents": profile.consents.iter().map(state_json).collect::<Vec<_>>(),
                }))?;
            } else {
                print_account(&account, false)?;
                emit(format_args!("surname     {}", data.surname))?;
                emit(format_args!("given_name  {}", data.given_name))?;
                emit(format_args!("patronymic  {}", data.patronymic))?;
                emit(format_args!("email       {}", data.email))?;
                emit(format_args!("phone       {}", data.phone))?;
                for state in &profile.consents {
                    emit(format_args!("consent     {}", state_line(state)))?;
                }
            }
        }
        AccountCommand::Update { account_id, surname, given_name, patronymic, email, phone } => {
            let updated = accounts
                .update_profile(UpdateProfileRequest { account_id, surname, given_name, patronymic, email, phone })
                .await
                .map_err(status)?
                .into_inner();
            let names: Vec<&str> = updated.updated_fields.iter().map(|f| field_name(*f)).collect();
            if json {
                emit(serde_json::json!({"updated_fields": names}))?;
            } else {
                emit(format_args!("updated {}", names.join(", ")))?;
            }
        }
        AccountCommand::Consent { command } => {
            let request = match command {
                AccountConsentCommand::Grant { account_id, purpose: name, recipient, policy_version } => {
                    ChangeConsentRequest {
                        account_id,
                        action: ConsentAction::Grant as i32,
                        purpose: purpose(&name)?,
                        recipient,
                        policy_version,
                    }
                }
                AccountConsentCommand::Withdraw { account_id, purpose: name, recipient } => ChangeConsentRequest {
                    account_id,
                    action: ConsentAction::Withdraw as i32,
                    purpose: purpose(&name)?,
                    recipient,
                    policy_version: 0,
                },
            };
            let event = accounts.change_consent(request).await.map_err(status)?.into_inner().event.unwrap_or_default();
            if json {
                emit(event_json(&event))?;
            } else {
                let subject = if event.recipient.is_empty() {
                    purpose_name(event.purpose).to_owned()
                } else {
                    format!("{} to {}", purpose_name(event.purpose), event.recipient)
                };
                emit(format_args!(
                    "{} {subject} under policy v{} ({})",
                    if event.granted { "granted" } else { "withdrew" },
                    event.policy_version,
                    event.id
                ))?;
            }
        }
        AccountCommand::Delete { account_id } => {
            delete_account(&mut accounts, account_id, json).await?;
        }
        AccountCommand::Export { account_id } => {
            print_export(&export_account(&mut accounts, account_id).await?, json)?;
        }
        AccountCommand::Document { command: DocumentCommand::Download { account_id, document, output } } => {
            let mut stream = accounts
                .download_document(DownloadDocumentRequest { account_id, document_token: document })
                .await
                .map_err(status)?
                .into_inner();
            let first = stream.message().await.map_err(status)?.context("the accounts service sent nothing")?;
            let Some(download_document_response::Part::Info(info)) = first.part else {
                anyhow::bail!("the accounts service did not describe the document first");
            };
            let partial = partial_path(&output);
            if let Err(err) = write_content(&mut stream, &partial, info.size_bytes).await {
                // Nothing half-downloaded is left behind: it would be personal data on disk.
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(err);
            }
            tokio::fs::rename(&partial, &output)
                .await
                .with_context(|| format!("move the download to {}", output.display()))?;
            if json {
                let mut described = info_json(&info);
                described["path"] = output.display().to_string().into();
                emit(described)?;
            } else {
                emit(format_args!(
                    "wrote {} bytes to {} ({})",
                    info.size_bytes,
                    output.display(),
                    info.document_token
                ))?;
            }
        }
    }
    Ok(())
}
