//! The access log for the security team: the gateway serves `qupia.audit.v1` to the
//! security identities by forwarding to the vault, which answers only the gateway.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use qupia_api::audit::v1 as proto;
use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::audit::v1::audit_service_server::AuditService;
use qupia_telemetry::TracedChannel;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status, Streaming};

use crate::Error;

#[derive(Debug, Clone)]
pub struct AuditProxy {
    pub vault: AuditServiceClient<TracedChannel>,
    pub security: Arc<[ServiceIdentity]>,
}

impl AuditProxy {
    fn security<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let caller = caller_of(request)?;
        if self.security.contains(&caller) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!("{caller} may not read the access log")).into())
        }
    }
}

#[tonic::async_trait]
impl AuditService for AuditProxy {
    async fn query_audit(
        &self,
        request: Request<proto::QueryAuditRequest>,
    ) -> Result<Response<proto::QueryAuditResponse>, Status> {
        self.security(&request)?;
        self.vault.clone().query_audit(request.into_inner()).await
    }

    type TailAuditStream = Pin<Box<dyn Stream<Item = Result<proto::TailAuditResponse, Status>> + Send + 'static>>;

    async fn tail_audit(
        &self,
        request: Request<proto::TailAuditRequest>,
    ) -> Result<Response<Self::TailAuditStream>, Status> {
        self.security(&request)?;
        let upstream: Streaming<proto::TailAuditResponse> =
            self.vault.clone().tail_audit(request.into_inner()).await?.into_inner();
        Ok(Response::new(Box::pin(upstream)))
    }

    async fn verify_audit(
        &self,
        request: Request<proto::VerifyAuditRequest>,
    ) -> Result<Response<proto::VerifyAuditResponse>, Status> {
        self.security(&request)?;
        self.vault.clone().verify_audit(request.into_inner()).await
    }

    async fn create_checkpoint(
        &self,
        request: Request<proto::CreateCheckpointRequest>,
    ) -> Result<Response<proto::CreateCheckpointResponse>, Status> {
        self.security(&request)?;
        self.vault.clone().create_checkpoint(request.into_inner()).await
    }
}
