//! `qupiactl subject …`: the register of data-subject requests and complaints (policy
//! clause 5.2: answered within 30 working days) — record, update, show, list the
//! overdue — and serving an access or erasure request through the accounts service,
//! marking it completed on the register.
//!
//! Exit codes as everywhere (0 done, 2 not done), and `list --overdue --fail-if-any`
//! exits 3 when something is overdue, for a daily cron job.

use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};
use qupia_api::accounts::v1::accounts_service_client::AccountsServiceClient;
use qupia_api::gateway::v1::subject_request_service_client::SubjectRequestServiceClient;
use qupia_api::gateway::v1::*;
use tonic::transport::Channel;

use crate::account_cmd::{delete_account, export_account, print_export};
use crate::client::{Connection, status};
use crate::emit;

/// `list --overdue --fail-if-any` found overdue requests: exit code 3.
#[derive(Debug)]
pub struct OverdueFound(pub usize);

impl std::fmt::Display for OverdueFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} subject request(s) overdue", self.0)
    }
}

impl std::error::Error for OverdueFound {}

/// The exit code for `list --overdue --fail-if-any` finding something.
pub const EXIT_OVERDUE: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum SubjectCommand {
    /// The register: record, update, show and list requests and complaints.
    Requests {
        #[command(subcommand)]
        command: RequestsCommand,
    },
    /// Serve an access request: print everything held about the account's person
    /// (through the accounts service) and, with --request, mark it completed.
    Export {
        #[arg(long)]
        account: String,
        /// The access request this answers; its person must be the account's.
        #[arg(long)]
        request: Option<String>,
        /// A reference to the answer sent (an outgoing-letter number), for the register.
        #[arg(long, default_value = "")]
        evidence: String,
    },
    /// Serve an erasure request: delete the account (the person and their documents are
    /// erased) and mark the request completed. Cannot be undone.
    Erase {
        #[arg(long)]
        account: String,
        /// The erasure request this carries out: an erasure is always on the register.
        #[arg(long)]
        request: String,
        /// A reference to the answer sent, for the register.
        #[arg(long, default_value = "")]
        evidence: String,
        /// Confirms the erasure.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Enter a request as received; prints it with its due date.
    Record {
        /// access, rectification, erasure, consent_withdrawal or complaint.
        #[arg(long, value_parser = parse_kind)]
        kind: SubjectRequestKind,
        /// The person's token; may be omitted only for a complaint.
        #[arg(long, default_value = "")]
        person: String,
        /// How it came in: web, paper, e-mail, call-centre, …
        #[arg(long)]
        channel: String,
        /// A reference to the request (an incoming-letter number): never personal data.
        #[arg(long)]
        evidence: String,
        /// The day it was received, YYYY-MM-DD in Asia/Almaty; today when omitted.
        #[arg(long)]
        received_on: Option<String>,
    },
    /// Record a status change.
    Update {
        id: String,
        /// in_progress, completed or rejected.
        #[arg(long, value_parser = parse_status)]
        status: SubjectRequestStatus,
        /// Why it is rejected (with --status rejected): identity_not_verified,
        /// no_data_held, retention_required_by_law, duplicate, manifestly_unfounded,
        /// withdrawn_by_subject.
        #[arg(long, value_parser = parse_reason)]
        reason: Option<RejectionReason>,
        /// A reference to what was done (an outgoing-letter number).
        #[arg(long, default_value = "")]
        evidence: String,
    },
    /// A request and its history.
    Show { id: String },
    /// Requests by due date, soonest first.
    List {
        #[command(flatten)]
        filter: ListFilter,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ListFilter {
    /// Only open requests whose due date has passed (in Asia/Almaty).
    #[arg(long)]
    overdue: bool,
    /// With --overdue: exit 3 when any request is overdue.
    #[arg(long, requires = "overdue")]
    fail_if_any: bool,
    #[arg(long, value_parser = parse_status)]
    status: Option<SubjectRequestStatus>,
    #[arg(long, value_parser = parse_kind)]
    kind: Option<SubjectRequestKind>,
    /// Only this person token's requests.
    #[arg(long)]
    person: Option<String>,
}

/// The lowercase name of a proto enum value without its prefix: `in_progress`.
fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_ascii_lowercase()
}

fn parse_kind(text: &str) -> Result<SubjectRequestKind, String> {
    SubjectRequestKind::from_str_name(&format!("SUBJECT_REQUEST_KIND_{}", text.to_ascii_uppercase()))
        .filter(|kind| *kind != SubjectRequestKind::Unspecified)
        .ok_or_else(|| "expected access, rectification, erasure, consent_withdrawal or complaint".to_owned())
}

fn parse_status(text: &str) -> Result<SubjectRequestStatus, String> {
    SubjectRequestStatus::from_str_name(&format!("SUBJECT_REQUEST_STATUS_{}", text.to_ascii_uppercase()))
        .filter(|status| *status != SubjectRequestStatus::Unspecified)
        .ok_or_else(|| "expected received, in_progress, completed or rejected".to_owned())
}

fn parse_reason(text: &str) -> Result<RejectionReason, String> {
    RejectionReason::from_str_name(&format!("REJECTION_REASON_{}", text.to_ascii_uppercase()))
        .filter(|reason| *reason != RejectionReason::Unspecified)
        .ok_or_else(|| {
            "expected identity_not_verified, no_data_held, retention_required_by_law, duplicate, \
             manifestly_unfounded or withdrawn_by_subject"
                .to_owned()
        })
}

fn kind_name(value: i32) -> String {
    SubjectRequestKind::try_from(value)
        .map_or_else(|_| "unknown".to_owned(), |k| short_name(k.as_str_name(), "SUBJECT_REQUEST_KIND_"))
}

fn status_name(value: i32) -> String {
    SubjectRequestStatus::try_from(value)
        .map_or_else(|_| "unknown".to_owned(), |s| short_name(s.as_str_name(), "SUBJECT_REQUEST_STATUS_"))
}

/// Empty when no reason.
fn reason_name(value: i32) -> String {
    match RejectionReason::try_from(value) {
        Ok(RejectionReason::Unspecified) => String::new(),
        Ok(reason) => short_name(reason.as_str_name(), "REJECTION_REASON_"),
        Err(_) => "unknown".to_owned(),
    }
}

pub fn request_json(request: &SubjectRequest) -> serde_json::Value {
    serde_json::json!({
        "id": request.id, "person_token": request.person_token, "kind": kind_name(request.kind),
        "channel": request.channel, "evidence": request.evidence, "received_on": request.received_on,
        "due_on": request.due_on, "status": status_name(request.status),
        "rejection_reason": reason_name(request.rejection_reason), "overdue": request.overdue,
        "recorded_at_ms": request.recorded_at_ms, "recorded_by": request.recorded_by,
        "updated_at_ms": request.updated_at_ms, "updated_by": request.updated_by,
    })
}

fn event_json(event: &SubjectRequestEvent) -> serde_json::Value {
    serde_json::json!({
        "revision": event.revision, "status": status_name(event.status),
        "rejection_reason": reason_name(event.rejection_reason), "evidence": event.evidence,
        "recorded_at_ms": event.recorded_at_ms, "recorded_by": event.recorded_by,
    })
}

/// The last path segment of a SPIFFE id: `qupiactl`.
fn who(identity: &str) -> &str {
    identity.rsplit('/').next().unwrap_or(identity)
}

fn print_request(request: &SubjectRequest, json: bool) -> anyhow::Result<()> {
    if json {
        return emit(request_json(request));
    }
    let reason = reason_name(request.rejection_reason);
    emit(format_args!("request     {}", request.id))?;
    emit(format_args!("kind        {}", kind_name(request.kind)))?;
    emit(format_args!("person      {}", if request.person_token.is_empty() { "-" } else { &request.person_token }))?;
    emit(format_args!("channel     {}", request.channel))?;
    emit(format_args!("evidence    {}", request.evidence))?;
    emit(format_args!("received    {}", request.received_on))?;
    emit(format_args!("due         {}{}", request.due_on, if request.overdue { "  OVERDUE" } else { "" }))?;
    emit(format_args!(
        "status      {}{}",
        status_name(request.status),
        if reason.is_empty() { String::new() } else { format!(" ({reason})") }
    ))?;
    emit(format_args!("recorded    {} by {}", request.recorded_at_ms, who(&request.recorded_by)))?;
    emit(format_args!("updated     {} by {}", request.updated_at_ms, who(&request.updated_by)))
}

/// One line of the table; the header goes through the same format so the columns line up.
fn table_line(columns: [&str; 7]) -> String {
    let [id, kind, status, received, due, overdue, person] = columns;
    format!("{id:<36}  {kind:<18}  {status:<11}  {received:<10}  {due:<10}  {overdue:<7}  {person}")
}

fn table_row(request: &SubjectRequest) -> String {
    table_line([
        &request.id,
        &kind_name(request.kind),
        &status_name(request.status),
        &request.received_on,
        &request.due_on,
        if request.overdue { "yes" } else { "" },
        if request.person_token.is_empty() { "-" } else { &request.person_token },
    ])
}

/// Today in Asia/Almaty as YYYY-MM-DD, the day a request entered without a date was received.
fn today() -> String {
    let today = qupia_gateway::subject::today_in_almaty();
    format!("{:04}-{:02}-{:02}", today.year(), u8::from(today.month()), today.day())
}

/// Runs a subject command. The register is the gateway's (`channel`); export and erase
/// also call the accounts service.
pub async fn run(
    command: SubjectCommand,
    channel: Channel,
    connection: &Connection,
    dev_dir: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let mut register = SubjectRequestServiceClient::new(channel);
    match command {
        SubjectCommand::Requests { command } => run_requests(command, &mut register, json).await,
        SubjectCommand::Export { account, request, evidence } => {
            let open = match &request {
                Some(id) => Some(open_request(&mut register, id, SubjectRequestKind::Access).await?),
                None => None,
            };
            let mut accounts = AccountsServiceClient::new(connection.accounts_channel(dev_dir).await?);
            let export = export_account(&mut accounts, account).await?;
            if let Some(open) = &open {
                let person = export.account.as_ref().map(|a| a.person_token.as_str()).unwrap_or_default();
                anyhow::ensure!(
                    open.person_token == person,
                    "subject request {} is not about this account's person; nothing printed, nothing marked",
                    open.id
                );
            }
            print_export(&export, json)?;
            if let Some(open) = open {
                complete(&mut register, &open.id, evidence).await?;
            }
            Ok(())
        }
        SubjectCommand::Erase { account, request, evidence, yes } => {
            if !yes {
                anyhow::bail!("erasing account {account} cannot be undone; repeat with --yes");
            }
            let open = open_request(&mut register, &request, SubjectRequestKind::Erasure).await?;
            let mut accounts = AccountsServiceClient::new(connection.accounts_channel(dev_dir).await?);
            delete_account(&mut accounts, account, json).await?;
            complete(&mut register, &open.id, evidence).await.with_context(|| {
                format!(
                    "the account was deleted, but subject request {} could not be marked completed; \
                     run `qupiactl subject requests update {} --status completed`",
                    open.id, open.id
                )
            })
        }
    }
}

/// The request `id`, checked to be of `kind` and still open, before anything is done.
async fn open_request(
    register: &mut SubjectRequestServiceClient<Channel>,
    id: &str,
    kind: SubjectRequestKind,
) -> anyhow::Result<SubjectRequest> {
    let request = register
        .get_subject_request(GetSubjectRequestRequest { id: id.to_owned() })
        .await
        .map_err(status)?
        .into_inner()
        .request
        .context("the gateway sent no request")?;
    anyhow::ensure!(
        request.kind == kind as i32,
        "subject request {id} is a {} request, not {}",
        kind_name(request.kind),
        kind_name(kind as i32)
    );
    let open = [SubjectRequestStatus::Received as i32, SubjectRequestStatus::InProgress as i32];
    anyhow::ensure!(open.contains(&request.status), "subject request {id} is already {}", status_name(request.status));
    Ok(request)
}

async fn complete(
    register: &mut SubjectRequestServiceClient<Channel>,
    id: &str,
    evidence: String,
) -> anyhow::Result<()> {
    register
        .update_subject_request(UpdateSubjectRequestRequest {
            id: id.to_owned(),
            status: SubjectRequestStatus::Completed as i32,
            rejection_reason: RejectionReason::Unspecified as i32,
            evidence,
        })
        .await
        .map_err(status)?;
    // On standard error, so that an export on standard output stays one document.
    eprintln!("subject request {id} marked completed");
    Ok(())
}

async fn run_requests(
    command: RequestsCommand,
    register: &mut SubjectRequestServiceClient<Channel>,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        RequestsCommand::Record { kind, person, channel, evidence, received_on } => {
            let recorded = register
                .record_subject_request(RecordSubjectRequestRequest {
                    person_token: person,
                    kind: kind as i32,
                    channel,
                    evidence,
                    received_on: received_on.unwrap_or_else(today),
                })
                .await
                .map_err(status)?
                .into_inner()
                .request
                .context("the gateway sent no request")?;
            print_request(&recorded, json)
        }
        RequestsCommand::Update { id, status: next, reason, evidence } => {
            let updated = register
                .update_subject_request(UpdateSubjectRequestRequest {
                    id,
                    status: next as i32,
                    rejection_reason: reason.unwrap_or(RejectionReason::Unspecified) as i32,
                    evidence,
                })
                .await
                .map_err(status)?
                .into_inner()
                .request
                .context("the gateway sent no request")?;
            print_request(&updated, json)
        }
        RequestsCommand::Show { id } => {
            let found =
                register.get_subject_request(GetSubjectRequestRequest { id }).await.map_err(status)?.into_inner();
            let request = found.request.context("the gateway sent no request")?;
            if json {
                let mut document = request_json(&request);
                document["history"] = found.history.iter().map(event_json).collect::<Vec<_>>().into();
                return emit(document);
            }
            print_request(&request, false)?;
            for event in &found.history {
                let reason = reason_name(event.rejection_reason);
                emit(format_args!(
                    "history     #{} {} at {} by {}{}{}",
                    event.revision,
                    status_name(event.status),
                    event.recorded_at_ms,
                    who(&event.recorded_by),
                    if reason.is_empty() { String::new() } else { format!(" ({reason})") },
                    if event.evidence.is_empty() { String::new() } else { format!(" [{}]", event.evidence) }
                ))?;
            }
            Ok(())
        }
        RequestsCommand::List { filter } => {
            let count = list(register, &filter, json).await?;
            if filter.fail_if_any && count > 0 {
                return Err(OverdueFound(count).into());
            }
            Ok(())
        }
    }
}

/// Prints every request matching `filter`, following the pages; returns how many.
async fn list(
    register: &mut SubjectRequestServiceClient<Channel>,
    filter: &ListFilter,
    json: bool,
) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut page_token = String::new();
    if !json {
        emit(table_line(["ID", "KIND", "STATUS", "RECEIVED", "DUE", "OVERDUE", "PERSON"]))?;
    }
    loop {
        let page = register
            .list_subject_requests(ListSubjectRequestsRequest {
                status: filter.status.map_or(0, |s| s as i32),
                kind: filter.kind.map_or(0, |k| k as i32),
                person_token: filter.person.clone().unwrap_or_default(),
                overdue_only: filter.overdue,
                page_size: 0,
                page_token,
            })
            .await
            .map_err(status)?
            .into_inner();
        for request in &page.requests {
            if json {
                emit(request_json(request))?;
            } else {
                emit(table_row(request))?;
            }
        }
        count += page.requests.len();
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SubjectCommand,
    }

    fn parse(args: &[&str]) -> Result<SubjectCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("subject").chain(args.iter().copied())).map(|cli| cli.command)
    }

    #[test]
    fn names_parse_to_the_api_values() {
        assert_eq!(parse_kind("consent_withdrawal"), Ok(SubjectRequestKind::ConsentWithdrawal));
        assert_eq!(parse_status("in_progress"), Ok(SubjectRequestStatus::InProgress));
        assert_eq!(parse_reason("no_data_held"), Ok(RejectionReason::NoDataHeld));
        assert!(parse_kind("unspecified").is_err() && parse_kind("delete").is_err());
        assert_eq!(kind_name(SubjectRequestKind::ConsentWithdrawal as i32), "consent_withdrawal");
        assert_eq!(reason_name(0), "");
    }

    #[test]
    fn the_command_line_parses() {
        let recorded =
            parse(&["requests", "record", "--kind", "complaint", "--channel", "paper", "--evidence", "in-1"]);
        assert!(
            matches!(recorded, Ok(SubjectCommand::Requests { command: RequestsCommand::Record { kind: SubjectRequestKind::Complaint, ref person, .. } }) if person.is_empty()),
            "{recorded:?}"
        );
        let listed = parse(&["requests", "list", "--overdue", "--fail-if-any"]);
        assert!(
            matches!(listed, Ok(SubjectCommand::Requests { command: RequestsCommand::List { ref filter } }) if filter.overdue && filter.fail_if_any),
            "{listed:?}"
        );
        // --fail-if-any only makes sense for the overdue listing.
        assert!(parse(&["requests", "list", "--fail-if-any"]).is_err());
        assert!(parse(&["requests", "update", "x", "--status", "done"]).is_err());
        // An erasure is always on the register.
        assert!(parse(&["erase", "--account", "a1", "--yes"]).is_err());
        assert!(matches!(
            parse(&["erase", "--account", "a1", "--request", "r1"]),
            Ok(SubjectCommand::Erase { yes: false, .. })
        ));
        assert!(matches!(parse(&["export", "--account", "a1"]), Ok(SubjectCommand::Export { request: None, .. })));
    }
}
