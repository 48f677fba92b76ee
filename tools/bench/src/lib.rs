//! `qupia-bench`: Qupia's vault and gateway under load, over real gRPC with mTLS,
//! measured beside a plain client writing and reading the same rows straight to
//! PostgreSQL in the same run, so that every figure also reads as a ratio that compares
//! across machines.
//!
//! A run creates fresh databases and roles, a CA and a keyring; starts the release
//! binaries of the vault and the gateway as child processes; publishes the privacy
//! policy; preloads people (and consent to advertising) into Qupia and the baseline;
//! measures each operation at each concurrency level; rewraps every DEK; and ends with
//! a check that the invariants held under the load. The people are synthetic, but the
//! tool treats them as personal data all the same: no value is printed or logged.

pub mod baseline;
pub mod check;
pub mod driver;
pub mod options;
pub mod people;
pub mod postgres;
pub mod procstat;
pub mod qupia;
pub mod report;
pub mod rewrap;
pub mod suite;

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;

pub use options::{Operation, Options, Plan};
pub use report::Report;

use crate::baseline::BaselineStore;
use crate::check::CheckSample;
use crate::driver::{Measured, RunSpec, drive};
use crate::people::Picker;
use crate::postgres::Databases;
use crate::procstat::Probes;
use crate::qupia::Qupia;
use crate::report::{Environment, Figures, Memory, Preload, RewrapFigures, RewrapRow, Row};
use crate::suite::Suite;

/// People per BatchTokenize call while preloading (the vault takes up to 1 000).
const PRELOAD_QUPIA_BATCH: u64 = 500;
/// People per transaction while preloading the baseline.
const PRELOAD_BASELINE_BATCH: u64 = 1000;
/// Calls in flight while preloading: enough to keep two cores busy.
const PRELOAD_WORKERS: usize = 4;
/// Consents granted in flight while preloading (each is one small call).
const CONSENT_WORKERS: usize = 16;

/// A line of progress on stderr; the report goes to stdout.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("qupia-bench: {}", format_args!($($arg)*)) };
}

/// Runs the benchmark `options` describe and returns its report.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let plan = options.plan()?;
    // Everything that can be refused is refused before any database is created.
    let binaries = suite::binaries(plan.bin_dir.as_deref())?;
    let earlier = plan.compare.as_deref().map(read_report).transpose()?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let databases = Databases::create(&plan.postgres, &run_id).await?;
    let dir = tempfile::Builder::new().prefix("qupia-bench-").tempdir().context("create the run directory")?;

    // Ctrl-C stops the run but not the clean-up: the services are killed with the
    // run's future, and the databases are dropped below.
    let outcome = tokio::select! {
        outcome = run_on(&plan, &binaries, &databases, dir.path(), &run_id) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };

    if plan.keep || outcome.is_err() {
        // The services' logs say why a run failed; they hold no personal data.
        let kept = dir.keep();
        progress!("kept the certificates, keyring and service logs in {}", kept.display());
    }
    if plan.keep {
        progress!("kept the databases {}", databases.names().join(", "));
    } else if let Err(err) = databases.drop_all().await {
        progress!("warning: the run's databases were not all dropped: {err:#}");
    }
    let mut report = outcome?;
    if let Some(earlier) = earlier {
        report.compare_with(&earlier);
    }
    Ok(report)
}

/// An earlier run's report (`--json`), with `compare`'s throughput ratios added when given.
pub fn show(path: &Path, compare: Option<&Path>) -> anyhow::Result<Report> {
    let mut report = read_report(path)?;
    if let Some(earlier) = compare {
        report.compare_with(&read_report(earlier)?);
    }
    Ok(report)
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a qupia-bench --json report", path.display()))
}

fn load_average() -> f64 {
    use procfs::Current;
    procfs::LoadAverage::current().map(|load| f64::from(load.one)).unwrap_or(0.0)
}

async fn run_on(
    plan: &Plan,
    binaries: &(PathBuf, PathBuf),
    databases: &Databases,
    dir: &Path,
    run_id: &str,
) -> anyhow::Result<Report> {
    let load_average_at_start = load_average();
    let mut suite = Suite::start(dir, binaries, databases, plan).await?;
    let outcome = measure(plan, &mut suite, databases, run_id).await;
    suite.stop().await;
    let (rows, rewrap, memory, preload, check) = outcome?;
    Ok(Report {
        people: plan.people,
        consented: plan.consented,
        batch: plan.batch,
        concurrency: plan.concurrency.clone(),
        warmup_secs: plan.warmup.as_secs_f64(),
        duration_secs: plan.duration.as_secs_f64(),
        environment: Environment {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            load_average_at_start,
            load_average_at_end: load_average(),
            postgres_version: databases.server_version.clone(),
            postgres_settings: databases.settings.clone(),
            pool_size: plan.pool_size,
            key_provider: plan.key_provider,
            dek_cache: plan.dek_cache,
        },
        preload,
        rows,
        rewrap,
        memory,
        scale: Vec::new(),
        check,
    })
}

type Measurements = (Vec<Row>, Option<RewrapRow>, Memory, Preload, check::FinalCheck);

async fn measure(plan: &Plan, suite: &mut Suite, databases: &Databases, run_id: &str) -> anyhow::Result<Measurements> {
    let qupia = Qupia::new(suite, run_id);
    qupia.wait_ready(suite).await?;
    let policy_version = qupia.publish_policy().await?;
    let baseline = BaselineStore::connect(&databases.baseline.url, plan.pool_size).await?;

    // Preload: the same people in both, and the same people consenting.
    let started = Instant::now();
    let tokens = Arc::new(preload_qupia(&qupia, plan.people).await?);
    let qupia_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    grant_consents(&qupia, &tokens, plan.consented, policy_version).await?;
    let qupia_consent_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    preload_baseline(&baseline, plan.people, plan.consented).await?;
    let baseline_seconds = started.elapsed().as_secs_f64();
    // Fresh statistics for the planner, on both sides alike.
    databases.vacuum_analyze().await?;
    let preload = Preload { qupia_seconds, qupia_consent_seconds, baseline_seconds };

    let probes = Probes::new(Some(suite.vault_pid), Some(suite.gateway_pid), databases.names());
    let picker = Picker { stored: plan.people, consenting: plan.consented };
    let next_qupia = Arc::new(AtomicU64::new(plan.people));
    let next_baseline = Arc::new(AtomicU64::new(plan.people));
    let sample = Arc::new(CheckSample::new(plan.check_sample));
    let batch = usize::try_from(plan.batch).unwrap_or(usize::MAX);
    let mut failed_requests = 0;
    let mut rows = Vec::new();
    let timed: Vec<Operation> = plan.operations.iter().copied().filter(|op| *op != Operation::Rewrap).collect();
    let total = timed.len() * plan.concurrency.len();
    for operation in &timed {
        for &concurrency in &plan.concurrency {
            let spec = RunSpec { concurrency, warmup: plan.warmup, duration: plan.duration };
            let q = match operation {
                Operation::Tokenize => {
                    let next = next_qupia.clone();
                    let work = qupia::TokenizeOne { qupia: qupia.clone(), next, sample: sample.clone() };
                    drive(Arc::new(work), spec, &probes).await?
                }
                Operation::BatchTokenize => {
                    let next = next_qupia.clone();
                    let work =
                        qupia::TokenizeBatch { qupia: qupia.clone(), next, batch: plan.batch, sample: sample.clone() };
                    drive(Arc::new(work), spec, &probes).await?
                }
                Operation::Reveal => {
                    let work = qupia::RevealOne { qupia: qupia.clone(), tokens: tokens.clone(), picker };
                    drive(Arc::new(work), spec, &probes).await?
                }
                Operation::BatchReveal => {
                    let work = qupia::RevealBatch { qupia: qupia.clone(), tokens: tokens.clone(), picker, batch };
                    drive(Arc::new(work), spec, &probes).await?
                }
                Operation::Lookup => {
                    let work = qupia::LookupEmail { qupia: qupia.clone(), tokens: tokens.clone(), picker };
                    drive(Arc::new(work), spec, &probes).await?
                }
                Operation::Rewrap => continue,
            };
            suite.ensure_running()?;
            let store = baseline.clone();
            let b = match operation {
                Operation::Tokenize => {
                    drive(Arc::new(baseline::InsertOne { store, next: next_baseline.clone() }), spec, &probes).await?
                }
                Operation::BatchTokenize => {
                    let work = baseline::InsertBatch { store, next: next_baseline.clone(), batch: plan.batch };
                    drive(Arc::new(work), spec, &probes).await?
                }
                Operation::Reveal => drive(Arc::new(baseline::RevealOne { store, picker }), spec, &probes).await?,
                Operation::BatchReveal => {
                    drive(Arc::new(baseline::RevealBatch { store, picker, batch }), spec, &probes).await?
                }
                Operation::Lookup => drive(Arc::new(baseline::LookupEmail { store, picker }), spec, &probes).await?,
                Operation::Rewrap => continue,
            };
            failed_requests += q.errors + q.warmup_errors;
            rows.push(Row::new(*operation, concurrency, Figures::of(&q), Figures::of(&b)));
            progress!(
                "[{}/{total}] {}, {concurrency} in flight: Qupia {:.1}/s, baseline {:.1}/s{}",
                rows.len(),
                operation.name(),
                q.ops_per_sec(),
                b.ops_per_sec(),
                failures(&q, &b)
            );
        }
    }
    rows.sort_by_key(|row| (Operation::ALL.iter().position(|op| *op == row.operation), row.concurrency));

    let rewrap = if plan.operations.contains(&Operation::Rewrap) {
        Some(measure_rewrap(suite, &baseline, &probes).await?)
    } else {
        None
    };
    suite.ensure_running()?;
    let memory = peak_memory(suite)?;

    // The final check: people stored in the timed runs, and some of the preloaded.
    let mut people = sample.people();
    for index in picker.stored_distinct((plan.check_sample / 4).max(1)) {
        people.push((index, tokens[usize::try_from(index)?].clone()));
    }
    let check = check::run(&qupia, &people, failed_requests).await?;
    progress!(
        "final check: {} of {} revealed as stored, access log {}",
        check.matched,
        check.revealed,
        if check.audit_intact { "intact" } else { "BROKEN" }
    );
    Ok((rows, rewrap, memory, preload, check))
}

fn failures(qupia: &Measured, baseline: &Measured) -> String {
    let failed = qupia.errors + qupia.warmup_errors + baseline.errors + baseline.warmup_errors;
    if failed == 0 {
        return String::new();
    }
    let first = qupia.first_error.as_deref().or(baseline.first_error.as_deref()).unwrap_or("");
    format!(" ({failed} failed; first: {first})")
}

async fn measure_rewrap(suite: &Suite, baseline: &BaselineStore, probes: &Probes) -> anyhow::Result<RewrapRow> {
    let stored = baseline.count_people().await?;
    let measured = rewrap::measure(&rewrap::BaselineRewrap { store: baseline.clone() }, probes).await?;
    anyhow::ensure!(measured.deks == stored, "the baseline rewrapped {} of {stored} DEKs", measured.deks);
    let baseline = RewrapFigures::of(&measured);
    progress!("rewrap: baseline {} DEKs in {:.2} s", baseline.deks, baseline.seconds);
    let runner = rewrap::QupiaRewrap { keys: KeyAdminServiceClient::new(suite.qupiactl.clone()) };
    let qupia = RewrapFigures::of(&rewrap::measure(&runner, probes).await?);
    progress!("rewrap: Qupia {} DEKs in {:.2} s", qupia.deks, qupia.seconds);
    let target = report::REWRAP_TARGET_SECS_PER_MILLION;
    let met = qupia.projected_secs_per_million.is_some_and(|secs| secs <= target);
    Ok(RewrapRow { qupia, baseline, target_secs_per_million: target, met })
}

fn peak_memory(suite: &Suite) -> anyhow::Result<Memory> {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let vault = mib(procstat::peak_rss_bytes(suite.vault_pid).context("read the vault's peak RSS")?);
    let gateway = mib(procstat::peak_rss_bytes(suite.gateway_pid).context("read the gateway's peak RSS")?);
    Ok(Memory {
        vault_peak_rss_mib: vault,
        gateway_peak_rss_mib: gateway,
        vault_target_mib: report::VAULT_RSS_TARGET_MIB,
        met: vault < report::VAULT_RSS_TARGET_MIB,
    })
}

/// Runs `work` over `0..total` in chunks of `chunk`, `workers` at a time, printing
/// progress every few seconds.
async fn in_chunks<F, Fut>(what: &str, total: u64, chunk: u64, workers: usize, work: F) -> anyhow::Result<()>
where
    F: Fn(Range<u64>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (work, next, done) = (work.clone(), next.clone(), done.clone());
        tasks.spawn(async move {
            loop {
                let start = next.fetch_add(chunk, Ordering::Relaxed);
                if start >= total {
                    return anyhow::Ok(());
                }
                let end = (start + chunk).min(total);
                work(start..end).await?;
                done.fetch_add(end - start, Ordering::Relaxed);
            }
        });
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            finished = tasks.join_next() => match finished {
                Some(outcome) => outcome??,
                None => break,
            },
            _ = ticker.tick() => {
                let count = done.load(Ordering::Relaxed);
                let rate = count as f64 / started.elapsed().as_secs_f64();
                progress!("{what}: {count} of {total} ({rate:.0}/s)");
            }
        }
    }
    progress!("{what}: {total} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Stores people `0..people` in Qupia with BatchTokenize; returns their person tokens,
/// by index.
async fn preload_qupia(qupia: &Qupia, people: u64) -> anyhow::Result<Vec<String>> {
    let tokens = Arc::new(std::sync::Mutex::new(vec![String::new(); usize::try_from(people)?]));
    let (client, slots) = (qupia.clone(), tokens.clone());
    in_chunks("preloading Qupia", people, PRELOAD_QUPIA_BATCH, PRELOAD_WORKERS, move |range| {
        let (client, slots) = (client.clone(), slots.clone());
        async move {
            let start = usize::try_from(range.start)?;
            let stored = client.batch_tokenize(range).await.context("preload people with BatchTokenize")?;
            let mut slots = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (offset, token) in stored.into_iter().enumerate() {
                slots[start + offset] = token;
            }
            Ok(())
        }
    })
    .await?;
    let tokens = std::mem::take(&mut *tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok(tokens)
}

/// Grants consent to advertising for people `0..consented`, one GrantConsent call each.
async fn grant_consents(
    qupia: &Qupia,
    tokens: &Arc<Vec<String>>,
    consented: u64,
    policy_version: i64,
) -> anyhow::Result<()> {
    let (client, tokens) = (qupia.clone(), tokens.clone());
    in_chunks("granting consents in Qupia", consented, 50, CONSENT_WORKERS, move |range| {
        let (client, tokens) = (client.clone(), tokens.clone());
        async move {
            for index in range {
                client
                    .grant_advertising(&tokens[usize::try_from(index)?], policy_version)
                    .await
                    .context("grant consent with GrantConsent")?;
            }
            Ok(())
        }
    })
    .await
}

/// The same people and consents in the baseline.
async fn preload_baseline(store: &BaselineStore, people: u64, consented: u64) -> anyhow::Result<()> {
    let writer = store.clone();
    in_chunks("preloading the baseline", people, PRELOAD_BASELINE_BATCH, PRELOAD_WORKERS, move |range| {
        let writer = writer.clone();
        async move { writer.insert_people(range).await.map(|_| ()) }
    })
    .await?;
    let writer = store.clone();
    in_chunks("granting consents in the baseline", consented, 5000, 1, move |range| {
        let writer = writer.clone();
        async move { writer.grant_consents(range).await }
    })
    .await
}
