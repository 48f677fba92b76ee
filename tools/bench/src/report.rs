//! The report: each Qupia figure beside its baseline, the ratio, and the target with
//! met / not met; as tables for a terminal or as JSON for a file and `--compare`.

use std::fmt;

use crate::check::FinalCheck;
use crate::driver::Measured;
use crate::options::{KeyProvider, Operation};
use crate::procstat::CpuSeconds;
use crate::rewrap::RewrapMeasured;

/// A target: throughput at least `min_ratio` of the baseline's, p99 latency at most
/// `max_p99_ms`. Latency targets are checked at every concurrency level.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub min_ratio: f64,
    pub max_p99_ms: f64,
}

/// The targets of the issue that asked for this benchmark (2 cores, PostgreSQL on the
/// same machine).
pub fn target(operation: Operation) -> Option<Target> {
    let target = |min_ratio, max_p99_ms| Some(Target { min_ratio, max_p99_ms });
    match operation {
        Operation::Tokenize => target(1.0, 10.0),
        Operation::BatchTokenize => target(0.7, 40.0),
        Operation::Reveal => target(0.8, 10.0),
        Operation::BatchReveal => target(0.7, 20.0),
        Operation::Lookup => target(0.6, 5.0),
        Operation::Rewrap => None,
    }
}

/// Rewrap of a million DEKs within this many seconds.
pub const REWRAP_TARGET_SECS_PER_MILLION: f64 = 30.0;
/// The vault's peak resident memory under the load, below this.
pub const VAULT_RSS_TARGET_MIB: f64 = 256.0;
/// Throughput with more people stored, at least this fraction of the smaller run's.
pub const SCALE_TARGET_RATIO: f64 = 0.8;

/// One side's figures for one operation at one concurrency.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Successful operations in the timed run.
    pub ops: u64,
    /// People or tokens they covered.
    pub items: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub items_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// CPU seconds per 1 000 operations, per process.
    pub cpu_per_1000_ops: CpuSeconds,
}

impl Figures {
    pub fn of(measured: &Measured) -> Figures {
        let per_1000 = |seconds: f64| if measured.ops == 0 { 0.0 } else { seconds * 1000.0 / measured.ops as f64 };
        let secs = measured.elapsed.as_secs_f64();
        Figures {
            ops: measured.ops,
            items: measured.items,
            errors: measured.errors,
            first_error: measured.first_error.clone(),
            seconds: secs,
            ops_per_sec: measured.ops_per_sec(),
            items_per_sec: if secs > 0.0 { measured.items as f64 / secs } else { 0.0 },
            p50_ms: measured.quantile_ms(0.5),
            p99_ms: measured.quantile_ms(0.99),
            p999_ms: measured.quantile_ms(0.999),
            cpu_per_1000_ops: CpuSeconds {
                vault: per_1000(measured.cpu.vault),
                gateway: per_1000(measured.cpu.gateway),
                postgres: per_1000(measured.cpu.postgres),
                client: per_1000(measured.cpu.client),
            },
        }
    }
}

/// One operation at one concurrency, both sides.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub operation: Operation,
    pub concurrency: usize,
    pub qupia: Figures,
    pub baseline: Figures,
    /// Qupia's throughput over the baseline's; absent when the baseline did nothing.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub ratio_met: Option<bool>,
    pub p99_met: Option<bool>,
}

impl Row {
    pub fn new(operation: Operation, concurrency: usize, qupia: Figures, baseline: Figures) -> Row {
        let ratio = (baseline.ops_per_sec > 0.0).then(|| qupia.ops_per_sec / baseline.ops_per_sec);
        let target = target(operation);
        Row {
            operation,
            concurrency,
            ratio_met: target.map(|t| ratio.is_some_and(|r| r >= t.min_ratio)),
            p99_met: target.map(|t| qupia.ops > 0 && qupia.p99_ms <= t.max_p99_ms),
            ratio,
            target,
            qupia,
            baseline,
        }
    }
}

/// One side's rewrap.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RewrapFigures {
    pub deks: u64,
    pub seconds: f64,
    pub deks_per_sec: f64,
    /// At this rate, the seconds a million DEKs would take (none when nothing moved).
    pub projected_secs_per_million: Option<f64>,
    pub cpu: CpuSeconds,
}

impl RewrapFigures {
    pub fn of(measured: &RewrapMeasured) -> RewrapFigures {
        let deks_per_sec = if measured.seconds > 0.0 { measured.deks as f64 / measured.seconds } else { 0.0 };
        RewrapFigures {
            deks: measured.deks,
            seconds: measured.seconds,
            deks_per_sec,
            projected_secs_per_million: (deks_per_sec > 0.0).then(|| 1_000_000.0 / deks_per_sec),
            cpu: measured.cpu,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RewrapRow {
    pub qupia: RewrapFigures,
    pub baseline: RewrapFigures,
    pub target_secs_per_million: f64,
    /// Whether Qupia's rate would rewrap a million DEKs within the target.
    pub met: bool,
}

/// Peak resident memory (VmHWM) over the whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    pub vault_peak_rss_mib: f64,
    pub gateway_peak_rss_mib: f64,
    pub vault_target_mib: f64,
    pub met: bool,
}

/// One operation's throughput at this run's size against an earlier run's.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScaleRow {
    pub operation: Operation,
    pub concurrency: usize,
    pub people_before: u64,
    pub people_now: u64,
    pub ops_per_sec_before: f64,
    pub ops_per_sec_now: f64,
    pub ratio: f64,
    pub target: f64,
    pub met: bool,
}

/// Where the numbers were taken.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Environment {
    pub cores: usize,
    /// The 1-minute load average before the run: other work on the machine shows here.
    pub load_average_at_start: f64,
    pub load_average_at_end: f64,
    pub postgres_version: String,
    /// Server settings that decide what a commit costs (synchronous_commit, fsync, ...).
    pub postgres_settings: std::collections::BTreeMap<String, String>,
    pub pool_size: u32,
    /// Where the vault kept its KEKs (reports from before this was recorded: the keyring).
    #[serde(default = "keyring")]
    pub key_provider: KeyProvider,
    /// Unwrapped data keys the vault kept (0 in reports from before the cache).
    #[serde(default)]
    pub dek_cache: usize,
}

fn keyring() -> KeyProvider {
    KeyProvider::Keyring
}

/// How the stores were filled.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Preload {
    pub qupia_seconds: f64,
    pub qupia_consent_seconds: f64,
    pub baseline_seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub people: u64,
    pub consented: u64,
    pub batch: u64,
    pub concurrency: Vec<usize>,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub environment: Environment,
    pub preload: Preload,
    pub rows: Vec<Row>,
    pub rewrap: Option<RewrapRow>,
    pub memory: Memory,
    /// Against the report given with `--compare`.
    pub scale: Vec<ScaleRow>,
    pub check: FinalCheck,
}

impl Report {
    /// Each operation's Qupia throughput against `earlier`'s at the same concurrency.
    pub fn compare_with(&mut self, earlier: &Report) {
        self.scale = self
            .rows
            .iter()
            .filter_map(|row| {
                let before =
                    earlier.rows.iter().find(|e| e.operation == row.operation && e.concurrency == row.concurrency)?;
                (before.qupia.ops_per_sec > 0.0).then(|| {
                    let ratio = row.qupia.ops_per_sec / before.qupia.ops_per_sec;
                    ScaleRow {
                        operation: row.operation,
                        concurrency: row.concurrency,
                        people_before: earlier.people,
                        people_now: self.people,
                        ops_per_sec_before: before.qupia.ops_per_sec,
                        ops_per_sec_now: row.qupia.ops_per_sec,
                        ratio,
                        target: SCALE_TARGET_RATIO,
                        met: ratio >= SCALE_TARGET_RATIO,
                    }
                })
            })
            .collect();
    }
}

fn met(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "-",
    }
}

fn label(operation: Operation, batch: u64) -> String {
    match operation {
        Operation::BatchTokenize | Operation::BatchReveal => format!("{} ({batch}/call)", operation.name()),
        _ => operation.name().to_owned(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = &self.environment;
        writeln!(
            f,
            "Qupia beside PostgreSQL doing the same rows: {} people stored ({} consenting), {} cores, \
             pools of {}, load average {:.2} before and {:.2} after",
            self.people, self.consented, env.cores, env.pool_size, env.load_average_at_start, env.load_average_at_end
        )?;
        let settings: Vec<String> =
            env.postgres_settings.iter().map(|(name, value)| format!("{name}={value}")).collect();
        writeln!(f, "PostgreSQL {} ({})", env.postgres_version, settings.join(", "))?;
        writeln!(
            f,
            "vault keys in {}, data-key cache of {}",
            env.key_provider.describe(),
            match env.dek_cache {
                0 => "none".to_owned(),
                capacity => format!("{capacity} keys"),
            }
        )?;
        writeln!(
            f,
            "each run: {:.1} s warm-up, {:.1} s timed; ops/s counts calls; latencies in ms are Qupia's \
             unless marked baseline",
            self.warmup_secs, self.duration_secs
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<26} {:>4} {:>10} {:>10} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8}  errors",
            "operation",
            "c",
            "Qupia/s",
            "base/s",
            "ratio",
            "target",
            "ratio",
            "p50",
            "p99",
            "p99.9",
            "base p99",
            "target",
            "p99",
        )?;
        for row in &self.rows {
            let target = row.target;
            writeln!(
                f,
                "{:<26} {:>4} {:>10.1} {:>10.1} {:>6} {:>6} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>8}  {}",
                label(row.operation, self.batch),
                row.concurrency,
                row.qupia.ops_per_sec,
                row.baseline.ops_per_sec,
                row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
                target.map_or("-".to_owned(), |t| format!("≥{:.1}", t.min_ratio)),
                met(row.ratio_met),
                row.qupia.p50_ms,
                row.qupia.p99_ms,
                row.qupia.p999_ms,
                row.baseline.p99_ms,
                target.map_or("-".to_owned(), |t| format!("≤{:.0}", t.max_p99_ms)),
                met(row.p99_met),
                errors(row)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "CPU seconds per 1 000 operations")?;
        writeln!(
            f,
            "{:<26} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
            "operation", "c", "vault", "gateway", "postgres", "client", "total", "b.postgr", "b.client", "b.total"
        )?;
        for row in &self.rows {
            let q = row.qupia.cpu_per_1000_ops;
            let b = row.baseline.cpu_per_1000_ops;
            writeln!(
                f,
                "{:<26} {:>4} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} | {:>9.3} {:>9.3} {:>9.3}",
                label(row.operation, self.batch),
                row.concurrency,
                q.vault,
                q.gateway,
                q.postgres,
                q.client,
                q.vault + q.gateway + q.postgres + q.client,
                b.postgres,
                b.client,
                b.postgres + b.client
            )?;
        }
        if let Some(rewrap) = &self.rewrap {
            writeln!(f)?;
            writeln!(f, "rewrap (target: 1 000 000 DEKs in ≤ {:.0} s)", rewrap.target_secs_per_million)?;
            writeln!(f, "  Qupia     {}  {}", rewrap_line(&rewrap.qupia), met(Some(rewrap.met)))?;
            writeln!(f, "  baseline  {}", rewrap_line(&rewrap.baseline))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "peak RSS: vault {:.1} MiB (target < {:.0} MiB: {}), gateway {:.1} MiB",
            self.memory.vault_peak_rss_mib,
            self.memory.vault_target_mib,
            met(Some(self.memory.met)),
            self.memory.gateway_peak_rss_mib
        )?;
        if !self.scale.is_empty() {
            writeln!(f)?;
            writeln!(f, "throughput with more people stored (target ≥ {SCALE_TARGET_RATIO:.1} of the smaller run)")?;
            for row in &self.scale {
                writeln!(
                    f,
                    "  {:<26} {:>4}  {} people {:>10.1}/s, {} people {:>10.1}/s  ratio {:.2}  {}",
                    label(row.operation, self.batch),
                    row.concurrency,
                    row.people_before,
                    row.ops_per_sec_before,
                    row.people_now,
                    row.ops_per_sec_now,
                    row.ratio,
                    met(Some(row.met))
                )?;
            }
        }
        writeln!(f)?;
        let check = &self.check;
        writeln!(
            f,
            "final check: {} of {} people revealed as stored; access log {} ({} entries, {} acknowledged); \
             {} failed requests: {}",
            check.matched,
            check.revealed,
            if check.audit_intact { "intact" } else { "BROKEN" },
            check.audit_entries,
            check.acknowledged_entries,
            check.failed_requests,
            if check.passed() { "passed" } else { "FAILED" }
        )?;
        if let Some(problem) = &check.first_problem {
            writeln!(f, "  first problem: {problem}")?;
        }
        if !check.audit_problem.is_empty() {
            writeln!(f, "  access log: {}", check.audit_problem)?;
        }
        Ok(())
    }
}

fn errors(row: &Row) -> String {
    if row.qupia.errors == 0 && row.baseline.errors == 0 {
        return "0".to_owned();
    }
    let first = row.qupia.first_error.as_deref().or(row.baseline.first_error.as_deref()).unwrap_or("");
    format!("Qupia {}, baseline {}: {first}", row.qupia.errors, row.baseline.errors)
}

fn rewrap_line(figures: &RewrapFigures) -> String {
    format!(
        "{} DEKs in {:.2} s, {:.0} DEKs/s, a million in {} s; CPU s: vault {:.2}, postgres {:.2}, client {:.2}",
        figures.deks,
        figures.seconds,
        figures.deks_per_sec,
        figures.projected_secs_per_million.map_or("-".to_owned(), |secs| format!("{secs:.1}")),
        figures.cpu.vault,
        figures.cpu.postgres,
        figures.cpu.client
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(ops_per_sec: f64, p99_ms: f64) -> Figures {
        Figures {
            ops: 100,
            items: 100,
            errors: 0,
            first_error: None,
            seconds: 1.0,
            ops_per_sec,
            items_per_sec: ops_per_sec,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            p999_ms: p99_ms,
            cpu_per_1000_ops: CpuSeconds::default(),
        }
    }

    #[test]
    fn a_row_is_judged_by_its_ratio_and_its_p99() {
        let row = Row::new(Operation::Reveal, 16, figures(800.0, 9.0), figures(1000.0, 2.0));
        assert_eq!(row.ratio, Some(0.8));
        assert_eq!(row.ratio_met, Some(true));
        assert_eq!(row.p99_met, Some(true));

        let slow = Row::new(Operation::Reveal, 16, figures(790.0, 11.0), figures(1000.0, 2.0));
        assert_eq!(slow.ratio_met, Some(false));
        assert_eq!(slow.p99_met, Some(false));
    }

    #[test]
    fn a_baseline_that_did_nothing_gives_no_ratio_and_no_pass() {
        let row = Row::new(Operation::Lookup, 1, figures(100.0, 1.0), figures(0.0, 0.0));
        assert_eq!(row.ratio, None);
        assert_eq!(row.ratio_met, Some(false));
    }

    fn report(people: u64, rows: Vec<Row>) -> Report {
        Report {
            people,
            consented: people,
            batch: 100,
            concurrency: vec![1, 16],
            warmup_secs: 1.0,
            duration_secs: 1.0,
            environment: Environment {
                cores: 2,
                load_average_at_start: 0.0,
                load_average_at_end: 0.0,
                postgres_version: "15".to_owned(),
                postgres_settings: Default::default(),
                pool_size: 16,
                key_provider: KeyProvider::Pkcs11,
                dek_cache: 10_000,
            },
            preload: Preload { qupia_seconds: 1.0, qupia_consent_seconds: 1.0, baseline_seconds: 1.0 },
            rows,
            rewrap: None,
            memory: Memory { vault_peak_rss_mib: 1.0, gateway_peak_rss_mib: 1.0, vault_target_mib: 256.0, met: true },
            scale: Vec::new(),
            check: FinalCheck::default(),
        }
    }

    #[test]
    fn a_report_says_where_the_keys_were_and_older_reports_still_read() {
        let report = report(10_000, Vec::new());
        let shown = report.to_string();
        assert!(shown.contains("vault keys in SoftHSM2 over PKCS#11, data-key cache of 10000 keys"), "{shown}");

        // Reports written before these were recorded: the keyring, no cache.
        let mut json = serde_json::to_value(&report).expect("serializes");
        let environment = json["environment"].as_object_mut().expect("an object");
        environment.remove("key_provider");
        environment.remove("dek_cache");
        let older: Report = serde_json::from_value(json).expect("an older report reads");
        assert_eq!(older.environment.key_provider, KeyProvider::Keyring);
        assert_eq!(older.environment.dek_cache, 0);
        assert!(older.to_string().contains("vault keys in the keyring file, data-key cache of none"));
    }

    #[test]
    fn a_larger_run_is_compared_with_the_same_operation_and_concurrency_of_a_smaller_one() {
        let row = |operation, concurrency, ops| Row::new(operation, concurrency, figures(ops, 1.0), figures(ops, 1.0));
        let small = report(10_000, vec![row(Operation::Reveal, 1, 100.0), row(Operation::Reveal, 16, 1000.0)]);
        let mut large = report(
            1_000_000,
            vec![row(Operation::Reveal, 1, 90.0), row(Operation::Reveal, 16, 700.0), row(Operation::Lookup, 1, 50.0)],
        );
        // Through JSON, as --compare reads it.
        let small: Report = serde_json::from_str(&serde_json::to_string(&small).expect("json")).expect("read back");
        large.compare_with(&small);
        assert_eq!(large.scale.len(), 2, "lookup has nothing to compare with");
        assert_eq!((large.scale[0].concurrency, large.scale[0].ratio, large.scale[0].met), (1, 0.9, true));
        assert_eq!((large.scale[1].concurrency, large.scale[1].ratio, large.scale[1].met), (16, 0.7, false));
        assert_eq!((large.scale[1].people_before, large.scale[1].people_now), (10_000, 1_000_000));
        assert!(large.to_string().contains("NOT MET"), "the table shows the miss");
    }

    #[test]
    fn rewrap_is_projected_to_a_million() {
        let figures = RewrapFigures::of(&RewrapMeasured { deks: 10_000, seconds: 0.5, cpu: CpuSeconds::default() });
        assert_eq!(figures.deks_per_sec, 20_000.0);
        assert_eq!(figures.projected_secs_per_million, Some(50.0));
    }
}
