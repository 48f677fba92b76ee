//! The closed-loop load driver: a fixed number of operations in flight, a warm-up whose
//! results are thrown away, then a timed window whose latencies go into an HDR histogram.
//!
//! Closed loop on purpose: each of the `concurrency` workers starts its next operation
//! when the previous one returns, which is how a pool of callers (or of database
//! connections) behaves, and what "16 in flight" means in the report.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::procstat::{CpuSeconds, Probes};

/// The slowest latency a histogram holds, in microseconds (a minute); slower ones are
/// clamped to it, which the p99.9 would show.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// One kind of operation, done once per call.
pub trait Workload: Send + Sync + 'static {
    /// Performs one operation and checks its answer. Returns how many items it covered
    /// (1, or the people or tokens in a batch).
    fn once(&self) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// How long to load, and how hard.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What a timed window measured.
#[derive(Debug)]
pub struct Measured {
    /// Operations started in the window that succeeded.
    pub ops: u64,
    pub items: u64,
    /// Operations started in the window that failed.
    pub errors: u64,
    /// The first failure's message (gRPC and SQL messages carry no personal values).
    pub first_error: Option<String>,
    /// From the start of the window to the end of its last operation.
    pub elapsed: Duration,
    /// Latency of each successful operation, in microseconds.
    pub latency: Histogram<u64>,
    /// CPU seconds each process used over the window.
    pub cpu: CpuSeconds,
    /// Operations of the warm-up that succeeded (they are in the stores too), and
    /// those that failed.
    pub warmup_ops: u64,
    pub warmup_items: u64,
    pub warmup_errors: u64,
}

impl Measured {
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.ops as f64 / secs } else { 0.0 }
    }

    /// A latency quantile in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// What one worker saw.
struct WorkerTally {
    ops: u64,
    items: u64,
    errors: u64,
    first_error: Option<String>,
    last_finish: Option<Instant>,
    latency: Histogram<u64>,
    warmup_ops: u64,
    warmup_items: u64,
    warmup_errors: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("valid histogram bounds")
}

/// Runs `workload` with `spec.concurrency` operations in flight: the warm-up, then the
/// timed window, sampling the processes' CPU time at the window's two ends.
pub async fn drive<W: Workload>(workload: Arc<W>, spec: RunSpec, probes: &Probes) -> anyhow::Result<Measured> {
    anyhow::ensure!(spec.concurrency > 0, "the concurrency must be at least 1");
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;

    let mut workers = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        let workload = workload.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = WorkerTally {
                ops: 0,
                items: 0,
                errors: 0,
                first_error: None,
                last_finish: None,
                latency: histogram(),
                warmup_ops: 0,
                warmup_items: 0,
                warmup_errors: 0,
            };
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let outcome = workload.once().await;
                let finished = Instant::now();
                let timed = started >= measure_from;
                match outcome {
                    Ok(items) if timed => {
                        tally.ops += 1;
                        tally.items += items;
                        let micros = u64::try_from((finished - started).as_micros()).unwrap_or(u64::MAX);
                        tally.latency.saturating_record(micros.clamp(1, MAX_LATENCY_MICROS));
                    }
                    Ok(items) => {
                        tally.warmup_ops += 1;
                        tally.warmup_items += items;
                    }
                    Err(err) => {
                        if timed {
                            tally.errors += 1;
                        } else {
                            tally.warmup_errors += 1;
                        }
                        if tally.first_error.is_none() {
                            tally.first_error = Some(format!("{err:#}"));
                        }
                    }
                }
                if timed {
                    tally.last_finish = Some(finished);
                }
            }
            tally
        }));
    }

    tokio::time::sleep_until(measure_from.into()).await;
    let before = probes.sample()?;
    let mut tallies = Vec::with_capacity(workers.len());
    for worker in workers {
        tallies.push(worker.await?);
    }
    let after = probes.sample()?;

    let mut measured = Measured {
        ops: 0,
        items: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latency: histogram(),
        cpu: after.since(&before),
        warmup_ops: 0,
        warmup_items: 0,
        warmup_errors: 0,
    };
    let mut last_finish = measure_from;
    for tally in tallies {
        measured.ops += tally.ops;
        measured.items += tally.items;
        measured.errors += tally.errors;
        measured.warmup_ops += tally.warmup_ops;
        measured.warmup_items += tally.warmup_items;
        measured.warmup_errors += tally.warmup_errors;
        if measured.first_error.is_none() {
            measured.first_error = tally.first_error;
        }
        measured.latency.add(&tally.latency)?;
        if let Some(finish) = tally.last_finish {
            last_finish = last_finish.max(finish);
        }
    }
    measured.elapsed = last_finish.saturating_duration_since(measure_from);
    Ok(measured)
}
