//! `qupia.keys.v1.KeyAdminService` on the vault: key administration for the gateway,
//! which serves it on to the security team and names who asked in `requester`.

use std::pin::Pin;

use futures::Stream;
use qupia_api::keys::v1 as proto;
use qupia_api::keys::v1::key_admin_service_server::KeyAdminService;
use qupia_crypto::KeyState;
use qupia_transport::ServiceIdentity;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::key_admin::KeyAdmin;
use crate::key_store::{JobKind, JobRecord};

/// The tonic service; every call passes the vault's admission interceptor first.
#[derive(Debug, Clone)]
pub struct KeyApi {
    pub admin: KeyAdmin,
}

/// Who asked: `requester` when the gateway names one, else the direct caller.
fn requester<T>(request: &Request<T>, requester: &str) -> Result<String, Status> {
    let caller = qupia_transport::caller_of(request)?;
    if requester.is_empty() {
        return Ok(caller.to_string());
    }
    ServiceIdentity::parse(requester)
        .map(|identity| identity.to_string())
        .map_err(|e| Error::invalid("requester", e.to_string()).into())
}

fn version(value: u32) -> Result<u32, Status> {
    if value == 0 { Err(Error::invalid("version", "is required").into()) } else { Ok(value) }
}

fn state_to_proto(state: Option<KeyState>) -> proto::KeyState {
    match state {
        Some(KeyState::Active) => proto::KeyState::Active,
        Some(KeyState::DecryptOnly) => proto::KeyState::DecryptOnly,
        Some(KeyState::Retired) => proto::KeyState::Retired,
        None => proto::KeyState::Unspecified,
    }
}

pub fn job_to_proto(job: &JobRecord) -> proto::JobProgress {
    proto::JobProgress {
        kind: match job.kind {
            JobKind::Rewrap => proto::JobKind::Rewrap,
            JobKind::Reindex => proto::JobKind::Reindex,
        } as i32,
        state: if job.running { proto::JobState::Running } else { proto::JobState::Finished } as i32,
        target_version: job.target_version,
        done: job.done,
        total: job.total,
        skipped: job.skipped,
        rate_per_second: job.rate_per_second,
        requested_by: job.requested_by.clone(),
        started_at_ms: job.started_at_ms,
        updated_at_ms: job.updated_at_ms,
    }
}

type ProgressStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Every progress update of a job until it finishes, starting with the current one.
/// Updates a slow client misses are skipped (it always sees the latest).
///
/// The stream also ends when the vault shuts down (the job stops between batches and
/// resumes at the next start), so that it never holds up the drain.
fn follow<T: Send + 'static>(
    receiver: watch::Receiver<Option<JobRecord>>,
    stopping: watch::Receiver<bool>,
    wrap: fn(proto::JobProgress) -> T,
) -> ProgressStream<T> {
    let stream = futures::stream::unfold((receiver, false), move |(mut receiver, finished)| {
        let mut stopping = stopping.clone();
        async move {
            if finished {
                return None;
            }
            let job = receiver.borrow_and_update().clone()?;
            let done = !job.running;
            let item = Ok(wrap(job_to_proto(&job)));
            if done {
                return Some((item, (receiver, true)));
            }
            // Wait for the next change before the next item.
            let ended = tokio::select! {
                changed = receiver.changed() => changed.is_err(),
                _ = stopping.wait_for(|stop| *stop) => true,
            };
            Some((item, (receiver, ended)))
        }
    });
    Box::pin(stream)
}

#[tonic::async_trait]
impl KeyAdminService for KeyApi {
    async fn get_key_status(
        &self,
        request: Request<proto::GetKeyStatusRequest>,
    ) -> Result<Response<proto::GetKeyStatusResponse>, Status> {
        requester(&request, &request.get_ref().requester)?;
        let status = self.admin.status().await?;
        let encryption_alarm = status.keks.iter().any(|k| k.alarm);
        Ok(Response::new(proto::GetKeyStatusResponse {
            provider: status.provider.to_owned(),
            kek_versions: status
                .keks
                .iter()
                .map(|k| proto::KekVersion {
                    version: k.version,
                    state: state_to_proto(k.state) as i32,
                    wrapped_deks: k.wrapped_deks,
                    encryptions: k.encryptions,
                    encryption_alarm: k.alarm,
                })
                .collect(),
            min_decrypt_version: status.min_decrypt_version,
            deks_below_min_decrypt_version: status.deks_below_min,
            index_key_versions: status
                .index_keys
                .iter()
                .map(|k| proto::IndexKeyVersion { version: k.version, current: k.current, entries: k.entries })
                .collect(),
            jobs: status.jobs.iter().map(job_to_proto).collect(),
            encryption_alarm_threshold: status.alarm_threshold,
            encryption_alarm,
        }))
    }

    async fn rotate_kek(
        &self,
        request: Request<proto::RotateKekRequest>,
    ) -> Result<Response<proto::RotateKekResponse>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        let (active_version, previous_version) = self.admin.rotate_kek(&requester).await?;
        Ok(Response::new(proto::RotateKekResponse { active_version, previous_version }))
    }

    type RewrapStream = ProgressStream<proto::RewrapResponse>;

    async fn rewrap(&self, request: Request<proto::RewrapRequest>) -> Result<Response<Self::RewrapStream>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        let rate = request.get_ref().rate_per_second;
        let receiver = self.admin.start_or_join(JobKind::Rewrap, &requester, rate).await?;
        Ok(Response::new(follow(receiver, self.admin.stopping(), |progress| proto::RewrapResponse {
            progress: Some(progress),
        })))
    }

    async fn set_min_decrypt_version(
        &self,
        request: Request<proto::SetMinDecryptVersionRequest>,
    ) -> Result<Response<proto::SetMinDecryptVersionResponse>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        let version = request.get_ref().version;
        let deks_below = self.admin.set_min_decrypt_version(&requester, version).await?;
        Ok(Response::new(proto::SetMinDecryptVersionResponse { min_decrypt_version: version, deks_below }))
    }

    async fn retire_kek(
        &self,
        request: Request<proto::RetireKekRequest>,
    ) -> Result<Response<proto::RetireKekResponse>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        self.admin.retire_kek(&requester, version(request.get_ref().version)?).await?;
        Ok(Response::new(proto::RetireKekResponse {}))
    }

    async fn destroy_kek(
        &self,
        request: Request<proto::DestroyKekRequest>,
    ) -> Result<Response<proto::DestroyKekResponse>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        self.admin.destroy_kek(&requester, version(request.get_ref().version)?).await?;
        Ok(Response::new(proto::DestroyKekResponse {}))
    }

    async fn rotate_index_key(
        &self,
        request: Request<proto::RotateIndexKeyRequest>,
    ) -> Result<Response<proto::RotateIndexKeyResponse>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        let current_version = self.admin.rotate_index_key(&requester).await?;
        Ok(Response::new(proto::RotateIndexKeyResponse { current_version }))
    }

    type ReindexStream = ProgressStream<proto::ReindexResponse>;

    async fn reindex(&self, request: Request<proto::ReindexRequest>) -> Result<Response<Self::ReindexStream>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        let rate = request.get_ref().rate_per_second;
        let receiver = self.admin.start_or_join(JobKind::Reindex, &requester, rate).await?;
        Ok(Response::new(follow(receiver, self.admin.stopping(), |progress| proto::ReindexResponse {
            progress: Some(progress),
        })))
    }

    async fn remove_index_key(
        &self,
        request: Request<proto::RemoveIndexKeyRequest>,
    ) -> Result<Response<proto::RemoveIndexKeyResponse>, Status> {
        let requester = requester(&request, &request.get_ref().requester)?;
        let entries_deleted = self.admin.remove_index_key(&requester, version(request.get_ref().version)?).await?;
        Ok(Response::new(proto::RemoveIndexKeyResponse { entries_deleted }))
    }
}
