//! `qupiactl audit …`: the security team's view of the access log.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::audit::v1::*;
use tonic::transport::Channel;

use crate::client::status;
use crate::emit;

#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only entries about this person token.
    #[arg(long)]
    person: Option<String>,
    /// Only entries of this caller (SPIFFE id).
    #[arg(long)]
    caller: Option<String>,
    #[arg(long)]
    purpose: Option<String>,
    /// reveal, lookup, tokenize, update, erase, …
    #[arg(long)]
    operation: Option<String>,
    /// From this time, unix milliseconds.
    #[arg(long)]
    from_ms: Option<i64>,
    /// Up to this time, unix milliseconds.
    #[arg(long)]
    to_ms: Option<i64>,
}

impl FilterArgs {
    fn to_proto(&self) -> AuditFilter {
        AuditFilter {
            person_token: self.person.clone().unwrap_or_default(),
            caller: self.caller.clone().unwrap_or_default(),
            purpose: self.purpose.clone().unwrap_or_default(),
            operation: self.operation.clone().unwrap_or_default(),
            from_ms: self.from_ms.unwrap_or(0),
            to_ms: self.to_ms.unwrap_or(0),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Entries matching a filter, oldest first.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Follow new entries as they are written (Ctrl-C to stop).
    Tail {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Every matching entry as JSON lines, for a SIEM.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Verify the hash chain; exits 1 when it is broken.
    Verify {
        /// A checkpoint kept outside the database (a JSON line written by `audit checkpoint`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Record a checkpoint of the chain's head and print it as a JSON line to keep elsewhere.
    Checkpoint,
}

pub fn entry_json(entry: &AuditEntry) -> serde_json::Value {
    serde_json::json!({
        "seq": entry.seq, "at_ms": entry.at_ms, "caller": entry.caller, "operation": entry.operation,
        "purpose": entry.purpose, "person": entry.person_token, "fields": entry.fields,
        "decision": if entry.allowed { "allowed" } else { "denied" }, "reason": entry.reason,
        "consent_id": entry.consent_id, "request_id": entry.request_id, "decision_id": entry.decision_id,
        "trace_id": entry.trace_id, "hash": entry.hash,
    })
}

fn print_entry(entry: &AuditEntry, json: bool) -> anyhow::Result<()> {
    if json {
        emit(entry_json(entry))
    } else {
        let caller = entry.caller.rsplit('/').next().unwrap_or(&entry.caller);
        emit(format_args!(
            "{:>6}  {:<13} {:<9} {:<10} {:<20} {:<7} {:<28} {}",
            entry.seq,
            entry.at_ms,
            caller,
            entry.operation,
            entry.purpose,
            if entry.allowed { "allowed" } else { "DENIED" },
            entry.fields.join(","),
            entry.reason
        ))
    }
}

/// Runs an audit command; returns false when verification found the log broken.
pub async fn run(command: AuditCommand, channel: Channel, json: bool) -> anyhow::Result<bool> {
    let mut audit = AuditServiceClient::new(channel);
    match command {
        AuditCommand::Query { filter, limit } => {
            let response = audit
                .query_audit(QueryAuditRequest { filter: Some(filter.to_proto()), after_seq: 0, limit })
                .await
                .map_err(status)?
                .into_inner();
            for entry in &response.entries {
                print_entry(entry, json)?;
            }
        }
        AuditCommand::Export { filter } => {
            let mut after_seq = 0;
            loop {
                let response = audit
                    .query_audit(QueryAuditRequest { filter: Some(filter.to_proto()), after_seq, limit: 1000 })
                    .await
                    .map_err(status)?
                    .into_inner();
                for entry in &response.entries {
                    emit(entry_json(entry))?;
                }
                if response.next_after_seq == 0 {
                    break;
                }
                after_seq = response.next_after_seq;
            }
        }
        AuditCommand::Tail { filter } => {
            let mut stream = audit
                .tail_audit(TailAuditRequest { filter: Some(filter.to_proto()), after_seq: 0 })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(item) = stream.message().await.map_err(status)? {
                if let Some(entry) = item.entry {
                    print_entry(&entry, json)?;
                }
            }
        }
        AuditCommand::Verify { checkpoint } => {
            let external = match checkpoint {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
                    let value: serde_json::Value =
                        serde_json::from_str(text.trim()).with_context(|| format!("parse {}", path.display()))?;
                    Some(Checkpoint {
                        seq: value["seq"].as_i64().context("checkpoint: seq is missing")?,
                        hash: value["hash"].as_str().context("checkpoint: hash is missing")?.to_owned(),
                        at_ms: value["at_ms"].as_i64().unwrap_or(0),
                    })
                }
                None => None,
            };
            let report = audit.verify_audit(VerifyAuditRequest { external }).await.map_err(status)?.into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"intact": report.intact, "entries": report.entries, "head_seq": report.head_seq, "problem": report.problem, "first_bad_seq": report.first_bad_seq})
                );
            } else if report.intact {
                println!("intact: {} entries, head at {}", report.entries, report.head_seq);
            } else {
                println!("BROKEN at entry {}: {}", report.first_bad_seq, report.problem);
            }
            return Ok(report.intact);
        }
        AuditCommand::Checkpoint => {
            let checkpoint = audit
                .create_checkpoint(CreateCheckpointRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .checkpoint
                .unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({"seq": checkpoint.seq, "hash": checkpoint.hash, "at_ms": checkpoint.at_ms})
            );
        }
    }
    Ok(true)
}
