//! The `qupia-bench` binary: parses the command line, runs the benchmark, prints the
//! report. Exit codes: 0 the final check passed, 1 it failed, 2 the run could not be
//! carried out.

use std::process::ExitCode;

use clap::Parser;
use qupia_bench::Options;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    if let Some(path) = &options.show {
        return match qupia_bench::show(path, options.compare.as_deref()) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("qupia-bench: {err:#}");
                ExitCode::from(2)
            }
        };
    }
    match qupia_bench::run(&options).await {
        Ok(report) => {
            if options.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("qupia-bench: failed to write the report as JSON: {err}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{report}");
            }
            if report.check.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(err) => {
            eprintln!("qupia-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
