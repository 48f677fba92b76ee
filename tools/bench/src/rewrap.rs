//! Rewrap of every stored DEK under a new key-encryption key, timed from the request to
//! the last DEK moved. One job, not a concurrency level: a rewrap runs in the vault's
//! background at the rate it is given.
//!
//! Each side plugs in a [`RewrapRunner`]. The baseline's reads every wrapped key in key
//! order and writes a new one of the same length, 500 per transaction, with a
//! compare-and-set on the old value. Qupia's drives the vault's key-administration API
//! (rotate the KEK, then rewrap with progress) once the vault serves one: until then
//! [`qupia_runner`] says why it cannot, and the report shows the rewrap row without a
//! Qupia figure.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::baseline::BaselineStore;
use crate::procstat::{CpuSeconds, Probes};
use crate::qupia::Qupia;

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

/// Qupia's rewrap, when the vault can do one. This build's vault serves no
/// key-administration API, so there is nothing to drive yet: the reason is reported
/// instead of a figure.
pub fn qupia_runner(_qupia: &Qupia) -> Result<Box<dyn RewrapRunner>, String> {
    Err("not measured: this build of the vault serves no key-administration API \
         (qupia.keys.v1.KeyAdminService) to rotate the KEK and rewrap with"
        .to_owned())
}
