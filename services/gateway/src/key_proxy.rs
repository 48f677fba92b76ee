//! Key administration for the security team: the gateway serves `qupia.keys.v1` to the
//! security identities by forwarding to the vault, which answers only the gateway.
//!
//! The gateway names the caller from its certificate in each request's `requester`
//! (whatever the caller put there), so the vault's access log records the person who
//! acted, not the gateway.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use qupia_api::keys::v1 as proto;
use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_api::keys::v1::key_admin_service_server::KeyAdminService;
use qupia_telemetry::TracedChannel;
use qupia_transport::{ServiceIdentity, caller_of};
use tonic::{Request, Response, Status, Streaming};

use crate::Error;

#[derive(Debug, Clone)]
pub struct KeyAdminProxy {
    pub vault: KeyAdminServiceClient<TracedChannel>,
    pub security: Arc<[ServiceIdentity]>,
}

impl KeyAdminProxy {
    /// The security identity that calls, or PERMISSION_DENIED.
    fn security<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let caller = caller_of(request)?;
        if self.security.contains(&caller) {
            Ok(caller.to_string())
        } else {
            Err(Error::PermissionDenied(format!("{caller} may not administer keys")).into())
        }
    }
}

type ProgressStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl KeyAdminService for KeyAdminProxy {
    async fn get_key_status(
        &self,
        request: Request<proto::GetKeyStatusRequest>,
    ) -> Result<Response<proto::GetKeyStatusResponse>, Status> {
        let requester = self.security(&request)?;
        self.vault.clone().get_key_status(proto::GetKeyStatusRequest { requester }).await
    }

    async fn rotate_kek(
        &self,
        request: Request<proto::RotateKekRequest>,
    ) -> Result<Response<proto::RotateKekResponse>, Status> {
        let requester = self.security(&request)?;
        self.vault.clone().rotate_kek(proto::RotateKekRequest { requester }).await
    }

    type RewrapStream = ProgressStream<proto::RewrapResponse>;

    async fn rewrap(&self, request: Request<proto::RewrapRequest>) -> Result<Response<Self::RewrapStream>, Status> {
        let requester = self.security(&request)?;
        let forwarded = proto::RewrapRequest { requester, ..request.into_inner() };
        let upstream: Streaming<proto::RewrapResponse> = self.vault.clone().rewrap(forwarded).await?.into_inner();
        Ok(Response::new(Box::pin(upstream)))
    }

    async fn set_min_decrypt_version(
        &self,
        request: Request<proto::SetMinDecryptVersionRequest>,
    ) -> Result<Response<proto::SetMinDecryptVersionResponse>, Status> {
        let requester = self.security(&request)?;
        let forwarded = proto::SetMinDecryptVersionRequest { requester, ..request.into_inner() };
        self.vault.clone().set_min_decrypt_version(forwarded).await
    }

    async fn retire_kek(
        &self,
        request: Request<proto::RetireKekRequest>,
    ) -> Result<Response<proto::RetireKekResponse>, Status> {
        let requester = self.security(&request)?;
        let forwarded = proto::RetireKekRequest { requester, ..request.into_inner() };
        self.vault.clone().retire_kek(forwarded).await
    }

    async fn destroy_kek(
        &self,
        request: Request<proto::DestroyKekRequest>,
    ) -> Result<Response<proto::DestroyKekResponse>, Status> {
        let requester = self.security(&request)?;
        let forwarded = proto::DestroyKekRequest { requester, ..request.into_inner() };
        self.vault.clone().destroy_kek(forwarded).await
    }

    async fn rotate_index_key(
        &self,
        request: Request<proto::RotateIndexKeyRequest>,
    ) -> Result<Response<proto::RotateIndexKeyResponse>, Status> {
        let requester = self.security(&request)?;
        self.vault.clone().rotate_index_key(proto::RotateIndexKeyRequest { requester }).await
    }

    type ReindexStream = ProgressStream<proto::ReindexResponse>;

    async fn reindex(&self, request: Request<proto::ReindexRequest>) -> Result<Response<Self::ReindexStream>, Status> {
        let requester = self.security(&request)?;
        let forwarded = proto::ReindexRequest { requester, ..request.into_inner() };
        let upstream: Streaming<proto::ReindexResponse> = self.vault.clone().reindex(forwarded).await?.into_inner();
        Ok(Response::new(Box::pin(upstream)))
    }

    async fn remove_index_key(
        &self,
        request: Request<proto::RemoveIndexKeyRequest>,
    ) -> Result<Response<proto::RemoveIndexKeyResponse>, Status> {
        let requester = self.security(&request)?;
        let forwarded = proto::RemoveIndexKeyRequest { requester, ..request.into_inner() };
        self.vault.clone().remove_index_key(forwarded).await
    }
}
