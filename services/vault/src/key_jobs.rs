//! The rewrap and reindex jobs: background tasks in the vault that walk every person in
//! id order, a batch per transaction, at a bounded rate.
//!
//! A job's state (target version, cursor, counts) is saved in the same transaction as
//! the rows each batch changes, so after a crash or a restart the vault resumes exactly
//! where it stopped. A streaming call starts a job or joins the running one and follows
//! its progress; the client going away stops the stream, never the job. After the first
//! pass a job goes round again for rows that a concurrent write left behind (a write that
//! took its key before a rotation and committed after the cursor passed it).

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use qupia_audit::Operation;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;
use crate::key_admin::KeyAdmin;
use crate::key_store::{JobKind, JobRecord};
use crate::store::now_millis;

/// Passes after the first that a job makes for rows left behind, at most. A row that
/// still cannot be done then (its data key under a retired or destroyed version) is
/// counted as skipped.
const MAX_PASSES: u32 = 4;

/// How long a job waits before retrying a batch that failed (the database was down).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The running job of each kind and its progress.
#[derive(Debug, Default)]
pub struct Jobs {
    rewrap: JobSlot,
    reindex: JobSlot,
}

impl Jobs {
    pub fn slot(&self, kind: JobKind) -> &JobSlot {
        match kind {
            JobKind::Rewrap => &self.rewrap,
            JobKind::Reindex => &self.reindex,
        }
    }
}

/// One kind of job: its task, its progress for any number of followers, its rate.
#[derive(Debug)]
pub struct JobSlot {
    progress: watch::Sender<Option<JobRecord>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Whether the task is between start and finish (readable without the lock).
    running: Mutex<bool>,
    rate: AtomicU32,
}

impl Default for JobSlot {
    fn default() -> JobSlot {
        JobSlot {
            progress: watch::Sender::new(None),
            task: tokio::sync::Mutex::new(None),
            running: Mutex::new(false),
            rate: AtomicU32::new(1),
        }
    }
}

impl JobSlot {
    /// The progress of the job this process runs or ran last, if any.
    pub fn latest(&self) -> Option<JobRecord> {
        self.progress.borrow().clone()
    }

    pub fn is_running(&self) -> bool {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_running(&self, running: bool) {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = running;
    }
}

impl KeyAdmin {
    /// Starts a job of `kind`, or joins the running one; either way returns a receiver
    /// of its progress. `rate` (0 = the configured rate) can only lower the rate.
    pub async fn start_or_join(
        &self,
        kind: JobKind,
        requester: &str,
        rate: u32,
    ) -> Result<watch::Receiver<Option<JobRecord>>, Error> {
        let slot = self.inner.jobs.slot(kind);
        let mut task = slot.task.lock().await;
        let configured = self.configured_rate(kind);
        if slot.is_running() {
            if rate > 0 && rate < slot.rate.load(Ordering::Acquire) {
                slot.rate.store(rate, Ordering::Release);
                slot.progress.send_modify(|progress| {
                    if let Some(progress) = progress {
                        progress.rate_per_second = rate;
                    }
                });
            }
            return Ok(slot.progress.subscribe());
        }
        let rate = if rate == 0 { configured } else { rate.min(configured) };
        let target = self.job_target(kind);
        let total = match kind {
            JobKind::Rewrap => self.store().deks_not_under(target).await?,
            JobKind::Reindex => self.store().reindex_work(1, target).await?,
        };
        let now = now_millis();
        let job = JobRecord {
            kind,
            running: true,
            target_version: target,
            cursor: None,
            pass: 1,
            done: 0,
            skipped: 0,
            total,
            rate_per_second: rate,
            requested_by: requester.to_owned(),
            started_at_ms: now,
            updated_at_ms: now,
        };
        let (operation, reason) = match kind {
            JobKind::Rewrap => (
                Operation::KeyRewrapStarted,
                format!("rewrap to kek version {target}: {total} data keys to move, at most {rate} per second"),
            ),
            JobKind::Reindex => (
                Operation::IndexReindexStarted,
                format!("reindex under blind-index key version {target}: {total} people, at most {rate} per second"),
            ),
        };
        self.store().start_job(&job, &self.job_entry(&job, operation, reason)).await?;
        tracing::info!(job = kind.as_str(), target_version = target, total, rate, "key job started");
        *task = Some(self.spawn(job));
        Ok(slot.progress.subscribe())
    }

    fn configured_rate(&self, kind: JobKind) -> u32 {
        let options = &self.inner.options;
        match kind {
            JobKind::Rewrap => options.rewrap_rate_per_second,
            JobKind::Reindex => options.reindex_rate_per_second,
        }
        .max(1)
    }

    /// Resumes the jobs a previous run of the vault left running.
    pub async fn resume_jobs(&self) -> Result<(), Error> {
        for kind in JobKind::ALL {
            let Some(mut job) = self.store().job(kind).await? else { continue };
            if !job.running {
                self.inner.jobs.slot(kind).progress.send_replace(Some(job));
                continue;
            }
            job.rate_per_second = job.rate_per_second.clamp(1, self.configured_rate(kind));
            tracing::info!(job = kind.as_str(), done = job.done, total = job.total, "resuming key job");
            let slot = self.inner.jobs.slot(kind);
            let mut task = slot.task.lock().await;
            *task = Some(self.spawn(job));
        }
        Ok(())
    }

    fn spawn(&self, job: JobRecord) -> JoinHandle<()> {
        let slot = self.inner.jobs.slot(job.kind);
        slot.rate.store(job.rate_per_second, Ordering::Release);
        slot.set_running(true);
        slot.progress.send_replace(Some(job.clone()));
        self.publish_progress(&job);
        let admin = self.clone();
        tokio::spawn(async move {
            let kind = job.kind;
            admin.run(job).await;
            admin.inner.jobs.slot(kind).set_running(false);
        })
    }

    /// Waits for the jobs to stop (after [`KeyAdmin::stop_jobs`]).
    pub async fn join_jobs(&self) {
        for kind in JobKind::ALL {
            let task = self.inner.jobs.slot(kind).task.lock().await.take();
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }

    fn publish_progress(&self, job: &JobRecord) {
        let ratio = if job.total == 0 { 1.0 } else { job.done as f64 / job.total as f64 };
        let ratio = if job.running { ratio.min(1.0) } else { 1.0 };
        match job.kind {
            JobKind::Rewrap => self.inner.metrics.set_rewrap_progress(ratio),
            JobKind::Reindex => self.inner.metrics.set_reindex_progress(ratio),
        }
    }

    /// The job's loop: batches until done, stopping between batches at shutdown.
    async fn run(&self, mut job: JobRecord) {
        let slot = self.inner.jobs.slot(job.kind);
        let mut stopping = self.inner.stopping.subscribe();
        let mut pace = Pace::new(slot.rate.load(Ordering::Acquire));
        // After a restart nobody knows whether this pass changed anything yet.
        let mut progressed_in_pass = true;
        loop {
            if *stopping.borrow() {
                return;
            }
            // A request may have lowered the rate; the saved record follows.
            pace.rate = slot.rate.load(Ordering::Acquire);
            job.rate_per_second = pace.rate;
            match self.step(&mut job, &mut progressed_in_pass, &mut pace).await {
                Ok(Step::Finished) => {
                    slot.progress.send_replace(Some(job.clone()));
                    self.publish_progress(&job);
                    return;
                }
                Ok(Step::Continue) => {
                    slot.progress.send_replace(Some(job.clone()));
                    self.publish_progress(&job);
                    let wait = pace.wait();
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stopping.wait_for(|stop| *stop) => return,
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(job = job.kind.as_str(), error = %err, "key job batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                        _ = stopping.wait_for(|stop| *stop) => return,
                    }
                }
            }
        }
    }

    /// One batch, or the end of a pass. On error `job` is as before the step.
    async fn step(&self, job: &mut JobRecord, progressed_in_pass: &mut bool, pace: &mut Pace) -> Result<Step, Error> {
        let kind = job.kind;
        let target = self.job_target(kind);
        if target != job.target_version {
            // A rotation during the job: everything moves to the newer version.
            let mut next = job.clone();
            next.target_version = target;
            next.cursor = None;
            next.pass += 1;
            next.skipped = 0;
            next.updated_at_ms = now_millis();
            self.store().save_job(&next, None).await?;
            *job = next;
            *progressed_in_pass = true;
            return Ok(Step::Continue);
        }
        let limit = self.inner.options.job_batch_size.clamp(1, pace.rate.max(1));
        let mut next = job.clone();
        let (people, changed) = match kind {
            JobKind::Rewrap => {
                let rows = self.store().rewrap_batch(job.cursor, target, limit).await?;
                let Some(last) = rows.last().map(|r| r.person_id) else {
                    return self.end_pass(job, progressed_in_pass).await;
                };
                let people = rows.len();
                let (rewrapped, skipped) = self.rewrap(rows);
                next.cursor = Some(last);
                next.skipped += skipped;
                let written = self.store().apply_rewrap(&rewrapped, &mut next).await?;
                (people, written > 0)
            }
            JobKind::Reindex => {
                let rows = self.store().reindex_batch(job.cursor, job.pass, target, limit).await?;
                let Some(last) = rows.last().map(|r| r.person_id) else {
                    return self.end_pass(job, progressed_in_pass).await;
                };
                let people = rows.len();
                let (entries, done, skipped) = self.reindex(rows, target);
                next.cursor = Some(last);
                next.skipped += skipped;
                self.store().apply_reindex(&entries, target, &mut next, done).await?;
                (people, done > 0)
            }
        };
        *progressed_in_pass |= changed;
        pace.record(people);
        *job = next;
        Ok(Step::Continue)
    }

    /// The cursor reached the end: go round again for rows left behind, or finish.
    async fn end_pass(&self, job: &mut JobRecord, progressed_in_pass: &mut bool) -> Result<Step, Error> {
        let target = job.target_version;
        // Let every write still holding a key snapshot from before the rotation commit,
        // so that the count below sees what it wrapped or indexed under an old version.
        drop(self.inner.lifecycle.write_gate.write().await);
        let remaining = match job.kind {
            JobKind::Rewrap => self.store().deks_not_under(target).await?,
            JobKind::Reindex => self.store().reindex_work(2, target).await?,
        };
        let mut next = job.clone();
        next.cursor = None;
        next.updated_at_ms = now_millis();
        if remaining > 0 && *progressed_in_pass && job.pass < MAX_PASSES {
            next.pass += 1;
            next.skipped = 0;
            self.store().save_job(&next, None).await?;
            *job = next;
            *progressed_in_pass = false;
            return Ok(Step::Continue);
        }
        next.running = false;
        next.skipped = remaining;
        let (operation, reason) = match job.kind {
            JobKind::Rewrap => (
                Operation::KeyRewrapFinished,
                format!(
                    "rewrap to kek version {target} finished: {} data keys moved, {remaining} left under other versions",
                    next.done
                ),
            ),
            JobKind::Reindex => (
                Operation::IndexReindexFinished,
                format!(
                    "reindex under blind-index key version {target} finished: {} people reindexed, {remaining} left",
                    next.done
                ),
            ),
        };
        let entry = self.job_entry(&next, operation, reason);
        self.store().save_job(&next, Some(&entry)).await?;
        tracing::info!(job = job.kind.as_str(), done = next.done, remaining, "key job finished");
        *job = next;
        Ok(Step::Finished)
    }
}

enum Step {
    Continue,
    Finished,
}

/// Keeps a job at or under its rate: after `items` items since `since`, the next batch
/// may start at `since + items / rate`.
#[derive(Debug)]
struct Pace {
    rate: u32,
    since: Instant,
    items: u64,
    /// The rate `since` and `items` were counted at; a new rate starts a new count.
    counted_at: u32,
}

impl Pace {
    fn new(rate: u32) -> Pace {
        Pace { rate: rate.max(1), since: Instant::now(), items: 0, counted_at: rate.max(1) }
    }

    fn record(&mut self, items: usize) {
        if self.rate != self.counted_at {
            self.since = Instant::now();
            self.items = 0;
            self.counted_at = self.rate;
        }
        self.items += items as u64;
    }

    /// How long to wait before the next batch.
    fn wait(&self) -> Duration {
        let due = Duration::from_secs_f64(self.items as f64 / f64::from(self.counted_at.max(1)));
        due.saturating_sub(self.since.elapsed())
    }
}
