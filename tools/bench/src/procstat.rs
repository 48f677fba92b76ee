//! CPU time and peak memory of the processes under load, read from `/proc`.
//!
//! CPU is `utime + stime` (every thread of the process), sampled at both ends of a timed
//! window. PostgreSQL is many processes: the postmaster, its background workers (WAL
//! writer, checkpointer, ...), which every database shares, and one backend per
//! connection. The machine's server may also serve other clients' databases, so a
//! backend counts only when its process title names one of this run's databases;
//! background workers always count.

use std::collections::HashMap;

use anyhow::Context;
use procfs::process::Process;

/// Which processes to measure.
#[derive(Debug, Clone)]
pub struct Probes {
    pub vault: Option<i32>,
    pub gateway: Option<i32>,
    /// This run's PostgreSQL databases.
    pub databases: Vec<String>,
    ticks_per_second: f64,
}

/// CPU ticks at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    vault: u64,
    gateway: u64,
    client: u64,
    postgres: HashMap<i32, u64>,
    ticks_per_second: f64,
}

/// CPU seconds used over a window, per process (group).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CpuSeconds {
    pub vault: f64,
    pub gateway: f64,
    pub postgres: f64,
    /// The benchmark client itself.
    pub client: f64,
}

fn ticks(process: &Process) -> procfs::ProcResult<u64> {
    let stat = process.stat()?;
    Ok(stat.utime + stat.stime)
}

impl Probes {
    pub fn new(vault: Option<i32>, gateway: Option<i32>, databases: Vec<String>) -> Probes {
        Probes { vault, gateway, databases, ticks_per_second: procfs::ticks_per_second() as f64 }
    }

    /// The CPU ticks of every measured process now.
    pub fn sample(&self) -> anyhow::Result<CpuSnapshot> {
        let of = |pid: Option<i32>, name: &str| -> anyhow::Result<u64> {
            match pid {
                Some(pid) => Process::new(pid)
                    .and_then(|process| ticks(&process))
                    .with_context(|| format!("read the CPU time of the {name} (has it stopped?)")),
                None => Ok(0),
            }
        };
        let mut postgres = HashMap::new();
        for process in procfs::process::all_processes().context("list the processes in /proc")? {
            // A process may exit between the listing and the read: skip it.
            let Ok(process) = process else { continue };
            let Ok(stat) = process.stat() else { continue };
            if stat.comm != "postgres" {
                continue;
            }
            let title = process.cmdline().map(|words| words.join(" ")).unwrap_or_default();
            if counts_for(&title, &self.databases) {
                postgres.insert(process.pid, stat.utime + stat.stime);
            }
        }
        Ok(CpuSnapshot {
            vault: of(self.vault, "vault")?,
            gateway: of(self.gateway, "gateway")?,
            client: ticks(&Process::myself()?)?,
            postgres,
            ticks_per_second: self.ticks_per_second,
        })
    }
}

impl CpuSnapshot {
    /// The CPU seconds used between `before` and this snapshot. A PostgreSQL process
    /// that started in between counts whole; one that exited in between is lost (the
    /// pools keep their connections open, so backends rarely come and go mid-window).
    pub fn since(&self, before: &CpuSnapshot) -> CpuSeconds {
        let seconds = |after: u64, before: u64| after.saturating_sub(before) as f64 / self.ticks_per_second;
        let postgres: u64 = self
            .postgres
            .iter()
            .map(|(pid, after)| after.saturating_sub(before.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        CpuSeconds {
            vault: seconds(self.vault, before.vault),
            gateway: seconds(self.gateway, before.gateway),
            postgres: postgres as f64 / self.ticks_per_second,
            client: seconds(self.client, before.client),
        }
    }
}

/// Whether the PostgreSQL process titled `title` works for `databases`: a backend
/// (its title names a client address, `host(port)` or `[local]`) only when it serves one
/// of them, an autovacuum worker likewise, every other process always.
fn counts_for(title: &str, databases: &[String]) -> bool {
    let words: Vec<&str> = title.split_whitespace().collect();
    if words.iter().any(|word| databases.iter().any(|db| db == word)) {
        return true;
    }
    let serves_a_client = words.iter().any(|word| word.starts_with("[local]") || word.ends_with(')'));
    let vacuums_a_database = title.contains("autovacuum worker");
    !(serves_a_client || vacuums_a_database)
}

/// The peak resident set (VmHWM) of a process, in bytes.
pub fn peak_rss_bytes(pid: i32) -> anyhow::Result<u64> {
    let status = Process::new(pid).and_then(|process| process.status()).context("read /proc/<pid>/status")?;
    let kib = status.vmhwm.context("the process reports no VmHWM")?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> Vec<String> {
        vec!["qupia_bench_1_vault".to_owned(), "qupia_bench_1_baseline".to_owned()]
    }

    #[test]
    fn backends_of_this_run_count_and_other_clients_do_not() {
        assert!(counts_for(
            "postgres: 15/main: qupia_bench_1_vault qupia_bench_1_vault 127.0.0.1(40112) idle",
            &ours()
        ));
        assert!(counts_for("postgres: qupia_bench_1_baseline qupia_bench_1_baseline [local] INSERT", &ours()));
        assert!(!counts_for("postgres: 15/main: postgres qupia_crash_4f2a 127.0.0.1(40200) idle", &ours()));
        assert!(!counts_for("postgres: 15/main: autovacuum worker qupia_other", &ours()));
        assert!(counts_for("postgres: 15/main: autovacuum worker qupia_bench_1_vault", &ours()));
    }

    #[test]
    fn shared_background_processes_count() {
        for title in [
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf",
            "postgres: 15/main: walwriter",
            "postgres: 15/main: checkpointer",
            "postgres: 15/main: background writer",
        ] {
            assert!(counts_for(title, &ours()), "{title}");
        }
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_peak_rss() {
        let probes = Probes::new(None, None, ours());
        let before = probes.sample().expect("sample");
        // Burn a little CPU so that the delta cannot be negative or absurd.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = probes.sample().expect("sample").since(&before);
        assert!(used.client >= 0.0 && used.client < 60.0);
        assert_eq!(used.vault, 0.0);
        assert!(peak_rss_bytes(std::process::id() as i32).expect("VmHWM") > 1024 * 1024);
    }
}
