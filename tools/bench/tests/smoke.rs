//! The whole benchmark at tiny scale (`--quick`: 200 people, 1 s runs, 1 and 4 in
//! flight) against the real vault and gateway binaries on PostgreSQL: every operation
//! produces figures on both sides, every ratio is a number, and the final check passes.
//!
//! Needs the qupia-vault and qupia-gateway binaries beside qupia-bench's (`cargo test
//! --workspace` builds them) and PostgreSQL (`QUPIA_TEST_POSTGRES_URL`); skipped
//! without PostgreSQL, as the other storage tests are.

use std::path::Path;

use clap::Parser;
use qupia_bench::{Operation, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_run_measures_every_operation_and_passes_the_final_check() {
    let Some(postgres) = std::env::var("QUPIA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty()) else {
        eprintln!("skipped: QUPIA_TEST_POSTGRES_URL is not set");
        return;
    };
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_qupia-bench")).parent().expect("the binary's directory");
    let options = Options::parse_from([
        "qupia-bench",
        "--quick",
        "--postgres",
        &postgres,
        "--bin-dir",
        bin_dir.to_str().expect("a UTF-8 path"),
    ]);

    let report = qupia_bench::run(&options).await.expect("the run completes");

    let timed =
        [Operation::Tokenize, Operation::BatchTokenize, Operation::Reveal, Operation::BatchReveal, Operation::Lookup];
    assert_eq!(report.rows.len(), timed.len() * 2, "a row per operation and concurrency level");
    for operation in timed {
        for concurrency in [1, 4] {
            let row = report
                .rows
                .iter()
                .find(|row| row.operation == operation && row.concurrency == concurrency)
                .unwrap_or_else(|| panic!("no row for {operation:?} at {concurrency}"));
            for (side, figures) in [("Qupia", &row.qupia), ("baseline", &row.baseline)] {
                assert!(figures.ops > 0, "{side} did no {operation:?} at {concurrency}");
                assert_eq!(figures.errors, 0, "{side} {operation:?} at {concurrency}: {:?}", figures.first_error);
                assert!(figures.p50_ms > 0.0 && figures.p50_ms <= figures.p99_ms, "{side} {operation:?} latencies");
            }
            let ratio = row.ratio.expect("a ratio");
            assert!(ratio.is_finite() && ratio > 0.0, "{operation:?} at {concurrency}: ratio {ratio}");
            assert!(row.ratio_met.is_some() && row.p99_met.is_some(), "every timed row is judged against its target");
            let cpu = row.qupia.cpu_per_1000_ops;
            assert!(cpu.vault + cpu.gateway + cpu.postgres > 0.0, "{operation:?}: the suite's CPU time was read");
        }
    }

    let rewrap = report.rewrap.as_ref().expect("the rewrap row");
    assert!(rewrap.baseline.deks >= report.people, "the baseline rewrapped every stored DEK");
    assert!(rewrap.qupia.deks >= report.people, "the vault rewrapped every stored DEK");
    assert!(rewrap.qupia.projected_secs_per_million.is_some_and(f64::is_finite));

    assert!(report.memory.vault_peak_rss_mib > 0.0 && report.memory.gateway_peak_rss_mib > 0.0);

    let check = &report.check;
    assert!(check.revealed >= 20, "the final check revealed a sample: {check:?}");
    assert!(check.passed(), "the final check failed: {check:?}");
    assert!(check.audit_intact);

    let json = serde_json::to_string(&report).expect("the report is JSON");
    let again: qupia_bench::Report = serde_json::from_str(&json).expect("and reads back, for --compare");
    assert_eq!(again.rows.len(), report.rows.len());
}
