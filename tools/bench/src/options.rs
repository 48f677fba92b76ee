//! The command line, and the plan of a run it makes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// An operation the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Tokenize, one person per call.
    Tokenize,
    /// BatchTokenize, `--batch` people per call.
    BatchTokenize,
    /// Reveal through the gateway for advertising (consent check and access-log entry).
    Reveal,
    /// BatchReveal of `--batch` tokens for advertising.
    BatchReveal,
    /// Lookup by e-mail.
    Lookup,
    /// Rewrap of every stored DEK under a new key-encryption key.
    Rewrap,
}

impl Operation {
    /// Every operation, in the order the report lists them.
    pub const ALL: [Operation; 6] = [
        Operation::Tokenize,
        Operation::BatchTokenize,
        Operation::Reveal,
        Operation::BatchReveal,
        Operation::Lookup,
        Operation::Rewrap,
    ];

    /// The order a run measures them in: reads first, on the stores as preloaded; then
    /// writes, which grow them; the rewrap last, over everything stored.
    pub const RUN_ORDER: [Operation; 6] = [
        Operation::Reveal,
        Operation::BatchReveal,
        Operation::Lookup,
        Operation::Tokenize,
        Operation::BatchTokenize,
        Operation::Rewrap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Tokenize => "tokenize",
            Operation::BatchTokenize => "batch tokenize",
            Operation::Reveal => "reveal",
            Operation::BatchReveal => "batch reveal",
            Operation::Lookup => "lookup",
            Operation::Rewrap => "rewrap",
        }
    }
}

/// Where the vault keeps its key-encryption keys during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyProvider {
    /// A keyring file the run creates.
    Keyring,
    /// A SoftHSM2 token the run initialises (PKCS#11; Debian package softhsm2).
    Pkcs11,
}

impl KeyProvider {
    pub fn describe(self) -> &'static str {
        match self {
            KeyProvider::Keyring => "the keyring file",
            KeyProvider::Pkcs11 => "SoftHSM2 over PKCS#11",
        }
    }
}

/// Measures Qupia's vault and gateway under load, beside plain PostgreSQL doing the same
/// rows at the same concurrency.
///
/// Starts the release binaries qupia-vault and qupia-gateway (built beside this one) on
/// fresh PostgreSQL databases, preloads people, runs each operation at each concurrency
/// (warm-up, then a timed run) against Qupia and then against the baseline, and prints
/// the figures with their ratios and targets. Exits 0 when the final check passed, 1
/// when it failed (a revealed value differed, a request failed, or the access log is
/// broken), 2 when the run could not be carried out.
#[derive(Debug, Clone, Parser)]
#[command(name = "qupia-bench", version)]
pub struct Options {
    /// PostgreSQL server to create the run's databases and roles on, as a role allowed
    /// to create both.
    #[arg(long, env = "QUPIA_BENCH_POSTGRES", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
    /// People stored before the timed runs (in Qupia and in the baseline).
    #[arg(long, default_value_t = 10_000)]
    pub people: u64,
    /// How many of them consent to advertising (the people reveals pick from);
    /// all of them when omitted.
    #[arg(long)]
    pub consented: Option<u64>,
    /// Operations in flight, one timed run per level.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Seconds of load before each timed run, not measured.
    #[arg(long, default_value_t = 5.0)]
    pub warmup_secs: f64,
    /// Seconds of each timed run.
    #[arg(long, default_value_t = 15.0)]
    pub duration_secs: f64,
    /// Operations to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["tokenize", "batch-tokenize", "reveal", "batch-reveal", "lookup", "rewrap"])]
    pub operations: Vec<Operation>,
    /// People or tokens per batch call.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Connections in each pool: the vault's, the gateway's and the baseline's.
    #[arg(long, default_value_t = 16)]
    pub pool_size: u32,
    /// Where the vault keeps its key-encryption keys.
    #[arg(long, value_enum, default_value = "keyring")]
    pub key_provider: KeyProvider,
    /// Unwrapped data keys the vault keeps in memory (its --dek-cache-capacity);
    /// 0 turns the cache off.
    #[arg(long, default_value_t = 10_000)]
    pub dek_cache: usize,
    /// People revealed and compared in the final check.
    #[arg(long, default_value_t = 100)]
    pub check_sample: usize,
    /// A report of an earlier run (--json) at another size: adds each operation's
    /// throughput as a ratio to that run's.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// The directory holding qupia-vault and qupia-gateway; by default, this
    /// executable's own.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Run nothing: print the tables of an earlier run's report (--json), with
    /// --compare if given.
    #[arg(long)]
    pub show: Option<PathBuf>,
    /// Keep the databases, certificates, keyring and service logs after the run.
    #[arg(long)]
    pub keep: bool,
    /// A tiny run (200 people, 1 and 4 in flight, 1 s runs after 0.25 s of warm-up, 20
    /// people checked) that shows everything works; its figures mean little.
    #[arg(long)]
    pub quick: bool,
}

/// What a run does, with `--quick` applied and everything checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub postgres: String,
    pub people: u64,
    pub consented: u64,
    pub concurrency: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// In run order.
    pub operations: Vec<Operation>,
    pub batch: u64,
    pub pool_size: u32,
    pub key_provider: KeyProvider,
    pub dek_cache: usize,
    pub check_sample: usize,
    pub compare: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub keep: bool,
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("{name} must be a number of seconds, at least 0"))
}

impl Options {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let mut options = self.clone();
        if options.quick {
            options.people = 200;
            options.consented = None;
            options.concurrency = vec![1, 4];
            options.warmup_secs = 0.25;
            options.duration_secs = 1.0;
            options.check_sample = 20;
        }
        anyhow::ensure!(options.people > 0, "--people must be at least 1");
        anyhow::ensure!(
            options.people <= crate::people::MAX_PEOPLE / 2,
            "--people must be at most {}: the timed runs store new people after them",
            crate::people::MAX_PEOPLE / 2
        );
        let consented = options.consented.unwrap_or(options.people);
        anyhow::ensure!(
            (1..=options.people).contains(&consented),
            "--consented must be between 1 and --people ({})",
            options.people
        );
        anyhow::ensure!(!options.concurrency.is_empty(), "--concurrency needs at least one level");
        anyhow::ensure!(
            options.concurrency.iter().all(|c| (1..=1024).contains(c)),
            "--concurrency levels must be 1 to 1024"
        );
        anyhow::ensure!((1..=1000).contains(&options.batch), "--batch must be 1 to 1000 (the gateway's limit)");
        anyhow::ensure!(options.pool_size >= 1, "--pool-size must be at least 1");
        anyhow::ensure!(options.check_sample >= 1, "--check-sample must be at least 1");
        let duration = seconds(options.duration_secs, "--duration-secs")?;
        anyhow::ensure!(!duration.is_zero(), "--duration-secs must be more than 0");
        let operations =
            Operation::RUN_ORDER.iter().copied().filter(|operation| options.operations.contains(operation)).collect();
        Ok(Plan {
            postgres: options.postgres,
            people: options.people,
            consented,
            concurrency: options.concurrency,
            warmup: seconds(options.warmup_secs, "--warmup-secs")?,
            duration,
            operations,
            batch: options.batch,
            pool_size: options.pool_size,
            key_provider: options.key_provider,
            dek_cache: options.dek_cache,
            check_sample: options.check_sample,
            compare: options.compare,
            bin_dir: options.bin_dir,
            keep: options.keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("qupia-bench").chain(args.iter().copied())).expect("valid arguments")
    }

    #[test]
    fn the_defaults_are_the_documented_full_run() {
        let plan = parse(&[]).plan().expect("a plan");
        assert_eq!(plan.people, 10_000);
        assert_eq!(plan.consented, 10_000);
        assert_eq!(plan.concurrency, vec![1, 16, 64]);
        assert_eq!(plan.operations, Operation::RUN_ORDER.to_vec());
        assert_eq!(plan.batch, 100);
        assert_eq!(plan.postgres, "postgres://postgres@127.0.0.1:5432/postgres");
    }

    #[test]
    fn quick_is_the_tiny_run() {
        let plan = parse(&["--quick", "--people", "1000000"]).plan().expect("a plan");
        assert_eq!(plan.people, 200);
        assert_eq!(plan.concurrency, vec![1, 4]);
        assert_eq!(plan.duration, Duration::from_secs(1));
    }

    #[test]
    fn operations_run_reads_first_whatever_the_order_asked() {
        let plan = parse(&["--operations", "rewrap,tokenize,lookup"]).plan().expect("a plan");
        assert_eq!(plan.operations, vec![Operation::Lookup, Operation::Tokenize, Operation::Rewrap]);
    }

    #[test]
    fn impossible_plans_are_refused_with_the_flag_named() {
        for (args, flag) in [
            (&["--people", "0"][..], "--people"),
            (&["--people", "10", "--consented", "11"][..], "--consented"),
            (&["--batch", "1001"][..], "--batch"),
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--duration-secs", "0"][..], "--duration-secs"),
            (&["--warmup-secs=-1"][..], "--warmup-secs"),
        ] {
            let err = parse(args).plan().expect_err("refused").to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }
}
