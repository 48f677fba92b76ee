//! `qupiactl disclosure …`: the register of disclosure requests of state bodies (policy
//! clause 3.4). One officer files (`request`), a second approves (`approve`); only
//! then does `person reveal --purpose legal_disclosure --disclosure-request ID` (or
//! `document download`) reveal, within the request's people and fields and before it
//! expires. Officers call with their own certificate (`--as officer-a`).

use clap::Subcommand;
use qupia_api::gateway::v1::disclosure_service_client::DisclosureServiceClient;
use qupia_api::gateway::v1::*;
use tonic::transport::Channel;

use crate::client::status;
use crate::demo::time;
use crate::emit;
use crate::person_cmd::{field, field_name};

#[derive(Debug, Subcommand)]
pub enum DisclosureCommand {
    /// File a request; it waits for a second officer's approval.
    Request {
        /// The state body asking.
        #[arg(long)]
        authority: String,
        /// The provision of law the request rests on.
        #[arg(long)]
        legal_basis: String,
        /// The authority's reference number.
        #[arg(long)]
        reference: String,
        /// The people it covers (person tokens, comma-separated; at most 100).
        #[arg(long = "people", value_delimiter = ',', required = true)]
        people: Vec<String>,
        /// The fields it covers (comma-separated).
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// Include the people's scanned identity documents.
        #[arg(long)]
        documents: bool,
        /// Days until it expires (at most 90).
        #[arg(long, default_value_t = 30)]
        expires_in_days: u32,
    },
    /// Approve a pending request (not one you filed).
    Approve { id: String },
    /// One request.
    Show { id: String },
    /// The register, newest first.
    List {
        /// pending, approved or expired; all when omitted.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn state_name(value: i32) -> &'static str {
    match DisclosureState::try_from(value) {
        Ok(DisclosureState::Pending) => "pending",
        Ok(DisclosureState::Approved) => "approved",
        Ok(DisclosureState::Expired) => "expired",
        _ => "unknown",
    }
}

fn state(name: &str) -> anyhow::Result<DisclosureState> {
    match name {
        "pending" => Ok(DisclosureState::Pending),
        "approved" => Ok(DisclosureState::Approved),
        "expired" => Ok(DisclosureState::Expired),
        other => anyhow::bail!("state: {other:?} is not pending, approved or expired"),
    }
}

fn disclosure_json(d: &Disclosure) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "state": state_name(d.state),
        "authority": d.authority,
        "legal_basis": d.legal_basis,
        "reference_number": d.reference_number,
        "person_tokens": d.person_tokens,
        "fields": d.fields.iter().map(|f| field_name(*f)).collect::<Vec<_>>(),
        "documents": d.documents,
        "expires_at_ms": d.expires_at_ms,
        "requested_by": d.requested_by,
        "requested_at_ms": d.requested_at_ms,
        "approved_by": d.approved_by,
        "approved_at_ms": d.approved_at_ms,
    })
}

fn scope(d: &Disclosure) -> String {
    let mut scope: Vec<&str> = d.fields.iter().map(|f| field_name(*f)).collect();
    if d.documents {
        scope.push("documents");
    }
    scope.join(",")
}

fn print_one(d: &Disclosure, json: bool) -> anyhow::Result<()> {
    if json {
        return emit(disclosure_json(d));
    }
    emit(format!("id           {}", d.id))?;
    emit(format!("state        {}", state_name(d.state)))?;
    emit(format!("authority    {}", d.authority))?;
    emit(format!("legal basis  {}", d.legal_basis))?;
    emit(format!("reference    {}", d.reference_number))?;
    emit(format!("scope        {} of {} people", scope(d), d.person_tokens.len()))?;
    for token in &d.person_tokens {
        emit(format!("               {token}"))?;
    }
    emit(format!("requested    {} by {}", time(d.requested_at_ms), d.requested_by))?;
    if !d.approved_by.is_empty() {
        emit(format!("approved     {} by {}", time(d.approved_at_ms), d.approved_by))?;
    }
    emit(format!("expires      {}", time(d.expires_at_ms)))
}

pub async fn run(command: DisclosureCommand, channel: Channel, json: bool) -> anyhow::Result<()> {
    let mut client = DisclosureServiceClient::new(channel);
    match command {
        DisclosureCommand::Request {
            authority,
            legal_basis,
            reference,
            people,
            fields,
            documents,
            expires_in_days,
        } => {
            let fields = fields.iter().map(|f| field(f)).collect::<anyhow::Result<Vec<_>>>()?;
            let now_ms = i64::try_from(std::time::UNIX_EPOCH.elapsed()?.as_millis())?;
            let request = CreateDisclosureRequest {
                authority,
                legal_basis,
                reference_number: reference,
                person_tokens: people,
                fields,
                documents,
                expires_at_ms: now_ms + i64::from(expires_in_days) * 86_400_000,
            };
            let filed = client.create_disclosure(request).await.map_err(status)?.into_inner();
            print_one(&filed.disclosure.unwrap_or_default(), json)
        }
        DisclosureCommand::Approve { id } => {
            let approved =
                client.approve_disclosure(ApproveDisclosureRequest { id }).await.map_err(status)?.into_inner();
            print_one(&approved.disclosure.unwrap_or_default(), json)
        }
        DisclosureCommand::Show { id } => {
            let found = client.get_disclosure(GetDisclosureRequest { id }).await.map_err(status)?.into_inner();
            print_one(&found.disclosure.unwrap_or_default(), json)
        }
        DisclosureCommand::List { state: wanted, limit } => {
            let state = wanted.as_deref().map(state).transpose()?.unwrap_or(DisclosureState::Unspecified);
            let request = ListDisclosuresRequest { state: state as i32, page_token: String::new(), limit };
            let page = client.list_disclosures(request).await.map_err(status)?.into_inner();
            if !json {
                emit(format!(
                    "{:<39} {:<9} {:<19} {:<16} {:>6}  {:<24} {}",
                    "ID", "STATE", "EXPIRES (UTC)", "REFERENCE", "PEOPLE", "SCOPE", "AUTHORITY"
                ))?;
            }
            for d in &page.disclosures {
                if json {
                    emit(disclosure_json(d))?;
                } else {
                    emit(format!(
                        "{:<39} {:<9} {:<19} {:<16} {:>6}  {:<24} {}",
                        d.id,
                        state_name(d.state),
                        time(d.expires_at_ms),
                        d.reference_number,
                        d.person_tokens.len(),
                        scope(d),
                        d.authority
                    ))?;
                }
            }
            Ok(())
        }
    }
}
