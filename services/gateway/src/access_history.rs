//! `AccessHistoryService`: the access-log entries about one person, for a subject
//! access request (policy clause 3.1). The accounts service asks on the person's
//! behalf; the security team may ask too. The gateway forwards to the vault's access
//! log with a person filter, so nobody outside those roles reads any part of the log
//! and nobody inside them reads more than one person's entries through this API.

use std::sync::Arc;

use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::audit::v1::{AuditFilter, QueryAuditRequest};
use qupia_api::gateway::v1 as proto;
use qupia_api::gateway::v1::access_history_service_server::AccessHistoryService;
use qupia_telemetry::TracedChannel;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::enforce::is_person_token;

/// The page size when the request names none, and the largest page: the access log's
/// own API has the same two (and caps a larger limit the same way).
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone)]
pub struct AccessHistoryApi {
    pub vault: AuditServiceClient<TracedChannel>,
    /// The writers (acting on the person's own request) and the security team.
    pub readers: Arc<[ServiceIdentity]>,
}

/// A request checked at the edge: a person token of the right shape, a sequence
/// number that can be one, and a page size within the access log's limits.
fn query(request: proto::GetAccessHistoryRequest) -> Result<QueryAuditRequest, Error> {
    if !is_person_token(&request.person_token) {
        return Err(Error::invalid("person_token", "is not a well-formed person token"));
    }
    if request.after_seq < 0 {
        return Err(Error::invalid("after_seq", "must not be negative"));
    }
    Ok(QueryAuditRequest {
        filter: Some(AuditFilter { person_token: request.person_token, ..Default::default() }),
        after_seq: request.after_seq,
        limit: if request.limit == 0 { DEFAULT_LIMIT } else { request.limit.min(MAX_LIMIT) },
    })
}

#[tonic::async_trait]
impl AccessHistoryService for AccessHistoryApi {
    #[tracing::instrument(skip_all)]
    async fn get_access_history(
        &self,
        request: Request<proto::GetAccessHistoryRequest>,
    ) -> Result<Response<proto::GetAccessHistoryResponse>, Status> {
        let caller = caller_of(&request)?;
        if !self.readers.contains(&caller) {
            return Err(Error::PermissionDenied(format!("{caller} may not read access histories")).into());
        }
        let query = query(request.into_inner())?;
        let page = self.vault.clone().query_audit(query).await?.into_inner();
        Ok(Response::new(proto::GetAccessHistoryResponse {
            entries: page.entries,
            next_after_seq: page.next_after_seq,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "qpp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn refuses_what_cannot_be_a_page_of_one_persons_entries() {
        let ok = query(proto::GetAccessHistoryRequest { person_token: TOKEN.into(), after_seq: 0, limit: 0 })
            .expect("a well-formed request");
        assert_eq!(ok.limit, DEFAULT_LIMIT);
        assert_eq!(ok.filter.expect("a filter").person_token, TOKEN, "always filtered by the person");

        let field = |request| match query(request) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        };
        assert_eq!(field(proto::GetAccessHistoryRequest::default()), "person_token", "no person, no history");
        assert_eq!(
            field(proto::GetAccessHistoryRequest { person_token: "qpf_x".into(), ..Default::default() }),
            "person_token"
        );
        assert_eq!(
            field(proto::GetAccessHistoryRequest { person_token: TOKEN.into(), after_seq: -1, limit: 1 }),
            "after_seq"
        );
        let capped = query(proto::GetAccessHistoryRequest { person_token: TOKEN.into(), after_seq: 0, limit: 5000 })
            .expect("a large page is capped, not refused");
        assert_eq!(capped.limit, MAX_LIMIT);
    }
}
