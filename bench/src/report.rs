//! What a run tells a person and a script: the summary table, the last line that says whether
//! errors occurred, the `--json` file and the `--hdr` file.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::config::{Config, KeyPattern, Length};
use crate::runner::RunResult;
use crate::stats::{hgrm, new_histogram, OpStats, Percentiles};
use crate::workload::OpKind;

/// One line of the configuration, printed before the run.
pub fn describe(config: &Config) -> String {
    let length = match config.length {
        Length::Requests(n) => format!("{n} requests"),
        Length::Duration(secs) => format!("{secs} s"),
    };
    let warmup = if config.warmup_s > 0.0 {
        format!(" after {} s warmup", config.warmup_s)
    } else {
        String::new()
    };
    let lp = match config.rate_ops_s {
        Some(rate) => format!("open loop at {rate} ops/s"),
        None => "closed loop".to_string(),
    };
    let cores = if config.cores.is_empty() {
        String::new()
    } else {
        format!(
            " (cores {})",
            config
                .cores
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    format!(
        "kvs-bench {}: {} clients x pipeline {} on {} thread(s){cores}, {lp}, {length}{warmup}, \
         SET:GET {}:{}, {}-byte values, {} keys {}{}{}, seed {}",
        config.target,
        config.clients,
        config.pipeline,
        config.threads,
        config.ratio_set,
        config.ratio_get,
        config.data_size,
        config.keyspace,
        match config.key_pattern {
            KeyPattern::Uniform => "uniform".to_string(),
            KeyPattern::Zipf => format!("zipf {}", config.zipf_exp),
            KeyPattern::Sequential => "sequential".to_string(),
        },
        if config.prefill { ", prefilled" } else { "" },
        if config.verify { ", verifying" } else { "" },
        config.seed,
    )
}

/// The measured figures of one op, or of all ops merged.
pub struct Row {
    pub name: &'static str,
    pub ops: u64,
    pub errors: u64,
    pub misses: u64,
    pub ops_s: f64,
    pub latency: Percentiles,
    pub histogram: Histogram<u64>,
}

pub fn rows(result: &RunResult) -> Vec<Row> {
    let seconds = result.measured_seconds;
    let rate = |ops: u64| {
        if seconds > 0.0 {
            ops as f64 / seconds
        } else {
            0.0
        }
    };
    let row = |name, op: &OpStats| Row {
        name,
        ops: op.ops,
        errors: op.errors,
        misses: op.misses,
        ops_s: rate(op.ops),
        latency: Percentiles::of(&op.latency_ns),
        histogram: op.latency_ns.clone(),
    };
    let mut all = OpStats {
        ops: 0,
        errors: 0,
        misses: 0,
        latency_ns: new_histogram(),
    };
    let mut rows = Vec::new();
    for op in OpKind::ALL {
        let stats = &result.stats.measured[op.index()];
        all.merge(stats);
        rows.push(row(op.name(), stats));
    }
    rows.push(row("ALL", &all));
    rows
}

pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<4} {:>10} {:>12} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "op",
        "ops",
        "ops/s",
        "errors",
        "misses",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "p99.99 ms",
        "max ms"
    );
    for row in rows {
        let ms = |us: f64| us / 1_000.0;
        let l = &row.latency;
        out.push_str(&format!(
            "{:<4} {:>10} {:>12.1} {:>7} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
            row.name,
            row.ops,
            row.ops_s,
            row.errors,
            row.misses,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.p9999),
            ms(l.max)
        ));
    }
    out
}

/// The lines after the table: counts, and last the line that says whether errors occurred.
pub fn footer(config: &Config, result: &RunResult) -> String {
    let stats = &result.stats;
    let mut out = format!(
        "measured {:.2} s; requests sent {}, replies matched {}, lost {}, unmatched replies {}\n",
        result.measured_seconds, stats.sent, stats.matched, stats.lost, stats.unmatched
    );
    out.push_str(&server_lines(result));
    if let Some(seconds) = result.prefill_seconds {
        out.push_str(&format!(
            "prefill: {} keys in {seconds:.2} s, {} errors\n",
            stats.prefill.ops, stats.prefill.errors
        ));
    }
    if config.warmup_s > 0.0 {
        out.push_str(&format!(
            "warmup: {} ops, {} errors (not in the table)\n",
            stats.warmup.ops, stats.warmup.errors
        ));
    }
    if config.verify {
        out.push_str(&format!(
            "verify: {} GETs read the expected value, {} failed ({} stale, {} ahead of the \
             connection's order, {} corrupt), {} read keys this run had not written yet\n",
            stats.verify.passed,
            stats.verify.failed,
            stats.verify.stale,
            stats.verify.ahead,
            stats.verify.corrupt,
            stats.verify.unknown
        ));
    }
    for (message, count) in &stats.error_samples {
        out.push_str(&format!("error x{count}: {message}\n"));
    }
    let errors = stats.errors_total();
    if errors == 0 {
        out.push_str("no errors\n");
    } else {
        out.push_str(&format!(
            "ERRORS: {errors} errors in this run (measured {}, warmup {}, prefill {}, \
             connections and unmatched replies {}; verify failures {})\n",
            stats.measured.iter().map(|op| op.errors).sum::<u64>(),
            stats.warmup.errors,
            stats.prefill.errors,
            stats.other_errors,
            stats.verify.failed
        ));
    }
    out
}

/// The server's side of the measured window, when `--server-pid` or `--server-stats` asked.
fn server_lines(result: &RunResult) -> String {
    let mut out = String::new();
    let Some(server) = &result.server else {
        return out;
    };
    if let Some(cpu) = &server.cpu {
        out.push_str(&format!(
            "server pid {}: {:.1} µs CPU per request ({:.2} s CPU for {} replies; {:.0}% of a \
             core over {:.2} s)\n",
            cpu.pid, cpu.cpu_us_per_request, cpu.cpu_s, cpu.requests, cpu.busy_pct, server.window_s
        ));
    }
    if let Some(batches) = &server.batches {
        if batches.batches == 0 {
            out.push_str("fsync batches: none in the measured window\n");
        } else {
            out.push_str(&format!(
                "fsync batches: {:.1} records per batch ({} records in {} batches); fsync \
                 batches hold {:.0}% of the {} connected writers\n",
                batches.records_per_batch,
                batches.records,
                batches.batches,
                batches.fill_pct,
                batches.writers
            ));
        }
    }
    out
}

pub fn json(config: &Config, result: &RunResult, rows: &[Row]) -> Value {
    let stats = &result.stats;
    let all = rows.last().expect("the ALL row");
    let per_op: serde_json::Map<String, Value> = rows[..rows.len() - 1]
        .iter()
        .map(|row| {
            (
                row.name.to_lowercase(),
                json!({
                    "ops": row.ops,
                    "throughput_ops_s": row.ops_s,
                    "errors": row.errors,
                    "misses": row.misses,
                    "latency_us": row.latency,
                }),
            )
        })
        .collect();
    json!({
        "target": config.target.to_string(),
        "target_kind": config.target.kind,
        "throughput_ops_s": all.ops_s,
        "ops": all.ops,
        "errors": stats.errors_total(),
        "measured_s": result.measured_seconds,
        "latency_us": all.latency,
        "per_op": per_op,
        "requests_sent": stats.sent,
        "responses_matched": stats.matched,
        "responses_unmatched": stats.unmatched,
        "requests_lost": stats.lost,
        "connections_failed": stats.connections_failed,
        "prefill": result.prefill_seconds.map(|seconds| json!({
            "ops": stats.prefill.ops,
            "errors": stats.prefill.errors,
            "seconds": seconds,
        })),
        "warmup": { "ops": stats.warmup.ops, "errors": stats.warmup.errors },
        "verify": {
            "enabled": config.verify,
            "passed": stats.verify.passed,
            "unknown": stats.verify.unknown,
            "failed": stats.verify.failed,
            "failed_stale": stats.verify.stale,
            "failed_ahead": stats.verify.ahead,
            "failed_corrupt": stats.verify.corrupt,
        },
        "error_samples": stats.error_samples.iter()
            .map(|(message, count)| json!({ "message": message, "count": count }))
            .collect::<Vec<_>>(),
        "server": result.server,
        "server_cpu_us_per_request": result.server.as_ref()
            .and_then(|server| server.cpu.as_ref())
            .map(|cpu| cpu.cpu_us_per_request),
        "batch_fill_pct": result.server.as_ref()
            .and_then(|server| server.batches.as_ref())
            .map(|batches| batches.fill_pct),
        "config": config,
    })
}

pub fn hdr_text(rows: &[Row]) -> String {
    hgrm(&rows.last().expect("the ALL row").histogram)
}
