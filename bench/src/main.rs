//! `kvs-bench --target kvs://host:port|redis://host:port|etcd://host:port [options]`
//!
//! Exit status: 0 when the run had no error, 3 when it counted errors (the last line says how
//! many), 1 when it could not run (bad target, no connection), 2 for a bad command line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use kvs_bench::config::{Args, Config};
use kvs_bench::report;
use kvs_bench::runner;
use kvs_bench::workload::mix;

const EXIT_ERRORS: u8 = 3;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_ERRORS),
        Err(error) => {
            eprintln!("kvs-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<u64> {
    let config = Arc::new(Config::from_args(args)?);
    // Values of this run carry this id, so --verify can tell them from a previous run's.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let run_id = mix(now, u64::from(std::process::id()));

    eprintln!("{}", report::describe(&config));
    let result = runner::run(Arc::clone(&config), run_id)?;
    let rows = report::rows(&result);
    if let Some(path) = &config.json {
        let json = report::json(&config, &result, &rows);
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &config.hdr {
        std::fs::write(path, report::hdr_text(&rows))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{}", report::table(&rows));
    print!("{}", report::footer(&config, &result));
    Ok(result.stats.errors_total())
}
