//! `SubjectRequestService`: the register of data-subject requests and complaints, for
//! the services and people allowed to keep it.

use std::sync::Arc;

use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::subject_request_service_server::SubjectRequestService;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::subject::{
    NewSubjectRequest, RejectionReason, SubjectRequest, SubjectRequestEvent, SubjectRequestFilter, SubjectRequestKind,
    SubjectRequestStatus, SubjectRequestStore, SubjectRequestUpdate, parse_date, today_in_almaty,
};

#[derive(Debug, Clone)]
pub struct SubjectRequestApi {
    pub store: SubjectRequestStore,
    /// May record requests (the accounts service, for requests made online).
    pub writers: Arc<[ServiceIdentity]>,
    /// May do everything: record, update, read and list (the security team's CLI).
    pub security: Arc<[ServiceIdentity]>,
}

impl SubjectRequestApi {
    fn recorder<T>(&self, request: &Request<T>) -> Result<ServiceIdentity, Status> {
        let caller = caller_of(request)?;
        if self.writers.contains(&caller) || self.security.contains(&caller) {
            Ok(caller)
        } else {
            Err(Error::PermissionDenied(format!("{caller} may not record subject requests")).into())
        }
    }

    fn keeper<T>(&self, request: &Request<T>) -> Result<ServiceIdentity, Status> {
        let caller = caller_of(request)?;
        if self.security.contains(&caller) {
            Ok(caller)
        } else {
            Err(Error::PermissionDenied(format!("{caller} may not keep the subject request register")).into())
        }
    }
}

fn kind(value: i32, field: &str) -> Result<SubjectRequestKind, Error> {
    use proto::SubjectRequestKind as P;
    match P::try_from(value) {
        Ok(P::Access) => Ok(SubjectRequestKind::Access),
        Ok(P::Rectification) => Ok(SubjectRequestKind::Rectification),
        Ok(P::Erasure) => Ok(SubjectRequestKind::Erasure),
        Ok(P::ConsentWithdrawal) => Ok(SubjectRequestKind::ConsentWithdrawal),
        Ok(P::Complaint) => Ok(SubjectRequestKind::Complaint),
        Ok(P::Unspecified) | Err(_) => {
            Err(Error::invalid(field, "must be access, rectification, erasure, consent_withdrawal or complaint"))
        }
    }
}

fn kind_to_proto(kind: SubjectRequestKind) -> proto::SubjectRequestKind {
    use proto::SubjectRequestKind as P;
    match kind {
        SubjectRequestKind::Access => P::Access,
        SubjectRequestKind::Rectification => P::Rectification,
        SubjectRequestKind::Erasure => P::Erasure,
        SubjectRequestKind::ConsentWithdrawal => P::ConsentWithdrawal,
        SubjectRequestKind::Complaint => P::Complaint,
    }
}

/// `None` for UNSPECIFIED (a filter's "any").
fn status(value: i32, field: &str) -> Result<Option<SubjectRequestStatus>, Error> {
    use proto::SubjectRequestStatus as P;
    match P::try_from(value) {
        Ok(P::Unspecified) => Ok(None),
        Ok(P::Received) => Ok(Some(SubjectRequestStatus::Received)),
        Ok(P::InProgress) => Ok(Some(SubjectRequestStatus::InProgress)),
        Ok(P::Completed) => Ok(Some(SubjectRequestStatus::Completed)),
        Ok(P::Rejected) => Ok(Some(SubjectRequestStatus::Rejected)),
        Err(_) => Err(Error::invalid(field, "is not a subject request status")),
    }
}

fn status_to_proto(status: SubjectRequestStatus) -> proto::SubjectRequestStatus {
    use proto::SubjectRequestStatus as P;
    match status {
        SubjectRequestStatus::Received => P::Received,
        SubjectRequestStatus::InProgress => P::InProgress,
        SubjectRequestStatus::Completed => P::Completed,
        SubjectRequestStatus::Rejected => P::Rejected,
    }
}

/// `None` for UNSPECIFIED (no reason given).
fn rejection_reason(value: i32) -> Result<Option<RejectionReason>, Error> {
    use proto::RejectionReason as P;
    match P::try_from(value) {
        Ok(P::Unspecified) => Ok(None),
        Ok(P::IdentityNotVerified) => Ok(Some(RejectionReason::IdentityNotVerified)),
        Ok(P::NoDataHeld) => Ok(Some(RejectionReason::NoDataHeld)),
        Ok(P::RetentionRequiredByLaw) => Ok(Some(RejectionReason::RetentionRequiredByLaw)),
        Ok(P::Duplicate) => Ok(Some(RejectionReason::Duplicate)),
        Ok(P::ManifestlyUnfounded) => Ok(Some(RejectionReason::ManifestlyUnfounded)),
        Ok(P::WithdrawnBySubject) => Ok(Some(RejectionReason::WithdrawnBySubject)),
        Err(_) => Err(Error::invalid("rejection_reason", "is not a rejection reason")),
    }
}

fn rejection_reason_to_proto(reason: Option<RejectionReason>) -> proto::RejectionReason {
    use proto::RejectionReason as P;
    match reason {
        None => P::Unspecified,
        Some(RejectionReason::IdentityNotVerified) => P::IdentityNotVerified,
        Some(RejectionReason::NoDataHeld) => P::NoDataHeld,
        Some(RejectionReason::RetentionRequiredByLaw) => P::RetentionRequiredByLaw,
        Some(RejectionReason::Duplicate) => P::Duplicate,
        Some(RejectionReason::ManifestlyUnfounded) => P::ManifestlyUnfounded,
        Some(RejectionReason::WithdrawnBySubject) => P::WithdrawnBySubject,
    }
}

fn event_to_proto(event: SubjectRequestEvent) -> proto::SubjectRequestEvent {
    proto::SubjectRequestEvent {
        revision: event.revision,
        status: status_to_proto(event.status) as i32,
        rejection_reason: rejection_reason_to_proto(event.rejection_reason) as i32,
        evidence: event.evidence,
        recorded_at_ms: event.recorded_at_ms,
        recorded_by: event.recorded_by,
    }
}

fn request_to_proto(request: SubjectRequest, today: time::Date) -> proto::SubjectRequest {
    proto::SubjectRequest {
        overdue: request.is_overdue(today),
        id: request.id,
        person_token: request.person_token,
        kind: kind_to_proto(request.kind) as i32,
        channel: request.channel,
        evidence: request.evidence,
        received_on: crate::subject::format_date(request.received_on),
        due_on: crate::subject::format_date(request.due_on),
        status: status_to_proto(request.latest.status) as i32,
        rejection_reason: rejection_reason_to_proto(request.latest.rejection_reason) as i32,
        recorded_at_ms: request.recorded_at_ms,
        recorded_by: request.recorded_by,
        updated_at_ms: request.latest.recorded_at_ms,
        updated_by: request.latest.recorded_by,
    }
}

#[tonic::async_trait]
impl SubjectRequestService for SubjectRequestApi {
    async fn record_subject_request(
        &self,
        request: Request<proto::RecordSubjectRequestRequest>,
    ) -> Result<Response<proto::RecordSubjectRequestResponse>, Status> {
        let caller = self.recorder(&request)?;
        let r = request.into_inner();
        let received_on = parse_date(&r.received_on)
            .ok_or_else(|| Error::invalid("received_on", "must be a calendar date as YYYY-MM-DD"))?;
        let recorded = self
            .store
            .record(NewSubjectRequest {
                person_token: r.person_token,
                kind: kind(r.kind, "kind")?,
                channel: r.channel,
                evidence: r.evidence,
                received_on,
                recorded_by: caller.to_string(),
            })
            .await
            .map_err(Error::from)?;
        tracing::info!(subject_request_id = %recorded.id, kind = %recorded.kind, "subject request recorded");
        Ok(Response::new(proto::RecordSubjectRequestResponse {
            request: Some(request_to_proto(recorded, today_in_almaty())),
        }))
    }

    async fn update_subject_request(
        &self,
        request: Request<proto::UpdateSubjectRequestRequest>,
    ) -> Result<Response<proto::UpdateSubjectRequestResponse>, Status> {
        let caller = self.keeper(&request)?;
        let r = request.into_inner();
        let next = status(r.status, "status")?
            .ok_or_else(|| Error::invalid("status", "must be in_progress, completed or rejected"))?;
        let updated = self
            .store
            .update(SubjectRequestUpdate {
                id: r.id,
                status: next,
                rejection_reason: rejection_reason(r.rejection_reason)?,
                evidence: r.evidence,
                updated_by: caller.to_string(),
            })
            .await
            .map_err(Error::from)?;
        tracing::info!(subject_request_id = %updated.id, status = %updated.latest.status, "subject request updated");
        Ok(Response::new(proto::UpdateSubjectRequestResponse {
            request: Some(request_to_proto(updated, today_in_almaty())),
        }))
    }

    async fn get_subject_request(
        &self,
        request: Request<proto::GetSubjectRequestRequest>,
    ) -> Result<Response<proto::GetSubjectRequestResponse>, Status> {
        self.keeper(&request)?;
        let (found, history) = self.store.get(&request.get_ref().id).await.map_err(Error::from)?;
        Ok(Response::new(proto::GetSubjectRequestResponse {
            request: Some(request_to_proto(found, today_in_almaty())),
            history: history.into_iter().map(event_to_proto).collect(),
        }))
    }

    async fn list_subject_requests(
        &self,
        request: Request<proto::ListSubjectRequestsRequest>,
    ) -> Result<Response<proto::ListSubjectRequestsResponse>, Status> {
        self.keeper(&request)?;
        let r = request.into_inner();
        let filter = SubjectRequestFilter {
            status: status(r.status, "status")?,
            kind: if r.kind == proto::SubjectRequestKind::Unspecified as i32 {
                None
            } else {
                Some(kind(r.kind, "kind")?)
            },
            person_token: r.person_token,
            overdue_only: r.overdue_only,
        };
        let today = today_in_almaty();
        let page = self.store.list(&filter, today, r.page_size, &r.page_token).await.map_err(Error::from)?;
        Ok(Response::new(proto::ListSubjectRequestsResponse {
            requests: page.requests.into_iter().map(|found| request_to_proto(found, today)).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
