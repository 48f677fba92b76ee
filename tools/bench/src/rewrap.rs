//! Rewrap of every stored DEK under a new key-encryption key, timed from the request to
//! the last DEK moved. One job, not a concurrency level: a rewrap runs in the vault's
//! background at the rate it is given.
//!
//! Each side plugs in a [`RewrapRunner`]. The baseline's reads every wrapped key in key
//! order and writes a new one of the same length, 500 per transaction, with a
//! compare-and-set on the old value. Qupia's asks the vault, through the gateway's
//! key-administration API as the security team, to rotate the KEK and then rewrap,
//! follows the job's progress stream to its end, and checks in the key status that no
//! DEK is left under the old version.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use anyhow::Context;
use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_api::keys::v1::{GetKeyStatusRequest, JobState, RewrapRequest, RotateKekRequest};
use tonic::transport::Channel;

use crate::baseline::BaselineStore;
use crate::procstat::{CpuSeconds, Probes};

/// DEKs per transaction, as the vault's rewrap job batches them.
pub const REWRAP_BATCH: i64 = 500;

/// A future the runner returns: boxed, so runners can be chosen at run time.
pub type RewrapFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send + 'a>>;

/// Moves every stored DEK to a new key version; returns how many moved.
pub trait RewrapRunner: Send + Sync {
    fn rewrap_all(&self) -> RewrapFuture<'_>;
}

/// What one rewrap took.
#[derive(Debug, Clone, Copy)]
pub struct RewrapMeasured {
    pub deks: u64,
    pub seconds: f64,
    pub cpu: CpuSeconds,
}

/// Runs `runner` once, timing it and sampling the processes' CPU around it.
pub async fn measure(runner: &dyn RewrapRunner, probes: &Probes) -> anyhow::Result<RewrapMeasured> {
    let before = probes.sample()?;
    let started = Instant::now();
    let deks = runner.rewrap_all().await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = probes.sample()?.since(&before);
    Ok(RewrapMeasured { deks, seconds, cpu })
}

/// The baseline's rewrap: bulk reads and compare-and-set updates of `persons`.
#[derive(Debug)]
pub struct BaselineRewrap {
    pub store: BaselineStore,
}

impl RewrapRunner for BaselineRewrap {
    fn rewrap_all(&self) -> RewrapFuture<'_> {
        // Version 2: every DEK was stored under version 1.
        Box::pin(self.store.rewrap_all(2, REWRAP_BATCH))
    }
}

/// Qupia's rewrap: rotate the KEK, then the vault's rewrap job to its end.
#[derive(Debug)]
pub struct QupiaRewrap {
    /// `KeyAdminService` on the gateway, as the security team's identity.
    pub keys: KeyAdminServiceClient<Channel>,
}

fn status(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

impl QupiaRewrap {
    async fn rotate_and_rewrap(&self) -> anyhow::Result<u64> {
        let mut keys = self.keys.clone();
        let rotated = keys
            .rotate_kek(RotateKekRequest { requester: String::new() })
            .await
            .map_err(status)
            .context("rotate the KEK")?
            .into_inner();
        // 0: the vault's own rate, which the run sets high enough not to be the limit.
        let mut progress = keys
            .rewrap(RewrapRequest { requester: String::new(), rate_per_second: 0 })
            .await
            .map_err(status)
            .context("start the rewrap")?
            .into_inner();
        let mut last = None;
        while let Some(message) = progress.message().await.map_err(status).context("follow the rewrap")? {
            last = message.progress;
        }
        let last = last.context("the rewrap reported no progress")?;
        anyhow::ensure!(last.state == JobState::Finished as i32, "the rewrap stream ended before the job finished");
        anyhow::ensure!(last.skipped == 0, "the rewrap skipped {} data keys", last.skipped);
        anyhow::ensure!(
            last.target_version == rotated.active_version,
            "the rewrap moved keys to version {}, not to the new version {}",
            last.target_version,
            rotated.active_version
        );
        let key_status = keys
            .get_key_status(GetKeyStatusRequest { requester: String::new() })
            .await
            .map_err(status)
            .context("read the key status")?
            .into_inner();
        let left = key_status
            .kek_versions
            .iter()
            .filter(|kek| kek.version != rotated.active_version)
            .map(|kek| kek.wrapped_deks)
            .sum::<u64>();
        anyhow::ensure!(left == 0, "{left} data keys are still wrapped under an older KEK version");
        Ok(last.done)
    }
}

impl RewrapRunner for QupiaRewrap {
    fn rewrap_all(&self) -> RewrapFuture<'_> {
        Box::pin(self.rotate_and_rewrap())
    }
}
