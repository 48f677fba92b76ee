//! `qupia.audit.v1.AuditService` on the vault: the access log for the gateway (which
//! serves it on to the security team).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use qupia_api::audit::v1 as proto;
use qupia_api::audit::v1::audit_service_server::AuditService;
use qupia_audit::{AuditLedger, Checkpoint, Entry, Filter, MAX_QUERY_LIMIT, Outcome, Problem};
use tonic::{Request, Response, Status};

use crate::Error;

/// How often a tail looks for new entries.
const TAIL_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct AuditApi {
    pub ledger: AuditLedger,
}

fn filter(filter: Option<proto::AuditFilter>) -> Filter {
    let filter = filter.unwrap_or_default();
    let text = |s: String| (!s.is_empty()).then_some(s);
    Filter {
        person: text(filter.person_token),
        caller: text(filter.caller),
        purpose: text(filter.purpose),
        operation: text(filter.operation),
        from_ms: (filter.from_ms != 0).then_some(filter.from_ms),
        to_ms: (filter.to_ms != 0).then_some(filter.to_ms),
    }
}

pub fn entry_to_proto(entry: Entry) -> proto::AuditEntry {
    proto::AuditEntry {
        seq: entry.seq,
        at_ms: entry.at_ms,
        caller: entry.caller,
        operation: entry.operation,
        purpose: entry.purpose,
        person_token: entry.person,
        fields: entry.fields,
        allowed: entry.outcome == Outcome::Allowed,
        reason: entry.reason,
        consent_id: entry.consent_id,
        request_id: entry.request_id,
        decision_id: entry.decision_id,
        trace_id: entry.trace_id,
        prev_hash: entry.prev_hash,
        hash: entry.hash,
    }
}

fn checkpoint_to_proto(checkpoint: Checkpoint) -> proto::Checkpoint {
    proto::Checkpoint { seq: checkpoint.seq, hash: checkpoint.hash, at_ms: checkpoint.at_ms }
}

fn first_bad_seq(problem: &Problem) -> i64 {
    match problem {
        Problem::Altered { seq } | Problem::BrokenLink { seq } | Problem::CheckpointMismatch { seq } => *seq,
        Problem::Missing { expected, .. } => *expected,
        Problem::Truncated { head_seq, .. } => head_seq + 1,
        Problem::HeadMismatch { last_seq, .. } => *last_seq,
    }
}

fn audit_error(err: qupia_audit::Error) -> Status {
    Error::from(err).into()
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_audit(
        &self,
        request: Request<proto::QueryAuditRequest>,
    ) -> Result<Response<proto::QueryAuditResponse>, Status> {
        let request = request.into_inner();
        let limit = if request.limit == 0 { 100 } else { request.limit.min(MAX_QUERY_LIMIT) };
        let entries =
            self.ledger.query(&filter(request.filter), request.after_seq.max(0), limit).await.map_err(audit_error)?;
        let next_after_seq = if entries.len() == limit as usize { entries.last().map_or(0, |e| e.seq) } else { 0 };
        Ok(Response::new(proto::QueryAuditResponse {
            entries: entries.into_iter().map(entry_to_proto).collect(),
            next_after_seq,
        }))
    }

    type TailAuditStream = Pin<Box<dyn Stream<Item = Result<proto::TailAuditResponse, Status>> + Send + 'static>>;

    async fn tail_audit(
        &self,
        request: Request<proto::TailAuditRequest>,
    ) -> Result<Response<Self::TailAuditStream>, Status> {
        let request = request.into_inner();
        let filter = filter(request.filter);
        let mut after =
            if request.after_seq > 0 { request.after_seq } else { self.ledger.head().await.map_err(audit_error)?.0 };
        let ledger = self.ledger.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let page = match ledger.query(&filter, after, 200).await {
                    Ok(page) => page,
                    Err(err) => {
                        let _ = sender.send(Err(audit_error(err))).await;
                        return;
                    }
                };
                let empty = page.is_empty();
                for entry in page {
                    after = entry.seq;
                    if sender.send(Ok(proto::TailAuditResponse { entry: Some(entry_to_proto(entry)) })).await.is_err() {
                        return; // the client went away
                    }
                }
                if empty {
                    tokio::select! {
                        _ = tokio::time::sleep(TAIL_POLL) => {}
                        _ = sender.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    async fn verify_audit(
        &self,
        request: Request<proto::VerifyAuditRequest>,
    ) -> Result<Response<proto::VerifyAuditResponse>, Status> {
        let external = request.into_inner().external.map(|c| Checkpoint { seq: c.seq, hash: c.hash, at_ms: c.at_ms });
        let report = self.ledger.verify(external.as_ref()).await.map_err(audit_error)?;
        Ok(Response::new(proto::VerifyAuditResponse {
            intact: report.problem.is_none(),
            entries: report.entries,
            head_seq: report.head_seq,
            problem: report.problem.as_ref().map(ToString::to_string).unwrap_or_default(),
            first_bad_seq: report.problem.as_ref().map_or(0, first_bad_seq),
        }))
    }

    async fn create_checkpoint(
        &self,
        _request: Request<proto::CreateCheckpointRequest>,
    ) -> Result<Response<proto::CreateCheckpointResponse>, Status> {
        let checkpoint = self.ledger.checkpoint().await.map_err(audit_error)?;
        Ok(Response::new(proto::CreateCheckpointResponse { checkpoint: Some(checkpoint_to_proto(checkpoint)) }))
    }
}
