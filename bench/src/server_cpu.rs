//! What the server spent over the measured window, seen from outside it: the CPU time of its
//! process (`--server-pid`: utime + stime from `/proc/<pid>/stat`, every thread of the process
//! counted) and, for kvsd, how full its fsync batches were (`--server-stats`: STATS, read over
//! a connection of its own). Both are sampled once when the measured window opens and once
//! after its last reply, by a thread of its own, so warmup and prefill are not in the figures.
//!
//! This module only reads: it never sends a request that changes the server.

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::config::{Config, TargetKind};

/// What to sample, decided from the command line.
#[derive(Debug, Clone)]
pub struct Probe {
    pid: Option<u32>,
    /// `host:port` of a kvs target whose STATS to read.
    stats_addr: Option<String>,
    auth: Option<kvs::auth::Secret>,
}

/// One reading of the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// utime + stime, in clock ticks.
    cpu_ticks: Option<u64>,
    batches: Option<BatchCounters>,
}

/// kvsd's fsync batch counters at one instant.
#[derive(Debug, Clone, Copy)]
struct BatchCounters {
    batches_total: u64,
    /// Records written to the log so far: `batch_records_total` where STATS has it, else
    /// `last_seq` (every record takes one seq, so the two count the same thing).
    records_total: u64,
}

/// The server's side of one measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ServerWindow {
    /// Seconds between the two samples.
    pub window_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuFigures {
    pub pid: u32,
    /// utime + stime of the server process over the window.
    pub cpu_s: f64,
    /// Requests that got a reply in the measured window (errors included).
    pub requests: u64,
    pub cpu_us_per_request: f64,
    /// How much of one core the server used over the window.
    pub busy_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchFigures {
    pub batches: u64,
    pub records: u64,
    pub records_per_batch: f64,
    /// Connections that send SETs.
    pub writers: usize,
    /// records_per_batch ÷ writers, in percent: how many of the connected writers one fsync
    /// batch holds on average (above 100 with a pipeline deeper than 1).
    pub fill_pct: f64,
}

impl Probe {
    /// `None` when the command line asks for neither figure.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Probe>> {
        if config.server_stats && config.target.kind != TargetKind::Kvs {
            bail!("--server-stats reads kvsd's STATS: it is for kvs:// targets only");
        }
        if let Some(pid) = config.server_pid {
            read_cpu_ticks(pid).with_context(|| format!("--server-pid {pid}"))?;
        }
        let probe = Probe {
            pid: config.server_pid,
            stats_addr: config.server_stats.then(|| config.target.addr.clone()),
            auth: config.auth.clone(),
        };
        if probe.stats_addr.is_some() {
            probe.read_batches().context("--server-stats")?;
        }
        Ok((probe.pid.is_some() || probe.stats_addr.is_some()).then_some(probe))
    }

    /// Starts a thread that samples at `window_start`, then again when the returned `Watch`
    /// is finished.
    pub fn watch(self, window_start: Instant) -> anyhow::Result<Watch> {
        let pid = self.pid;
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("server-probe".to_string())
            .spawn(move || {
                if let Some(wait) = window_start.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let first = self.sample()?;
                // The sender is dropped (or sends) once the last reply is in.
                let _ = end_rx.recv();
                let last = self.sample()?;
                Ok((first, last))
            })?;
        Ok(Watch {
            pid,
            end_tx,
            handle,
        })
    }

    fn sample(&self) -> anyhow::Result<Sample> {
        let at = Instant::now();
        let cpu_ticks = self.pid.map(read_cpu_ticks).transpose()?;
        let batches = match self.stats_addr {
            Some(_) => Some(self.read_batches()?),
            None => None,
        };
        Ok(Sample {
            at,
            cpu_ticks,
            batches,
        })
    }

    /// A fresh connection each time: an idle one could be closed by the server's idle timeout
    /// during a long run.
    fn read_batches(&self) -> anyhow::Result<BatchCounters> {
        let addr = self.stats_addr.as_deref().expect("a kvs target");
        let mut client = kvs::client::Client::connect_auth(
            addr,
            kvs::client::ClientOptions::default(),
            self.auth.as_ref(),
        )?;
        parse_batches(&client.stats()?)
    }
}

/// The sampling thread of one run.
pub struct Watch {
    pid: Option<u32>,
    end_tx: mpsc::Sender<()>,
    handle: thread::JoinHandle<anyhow::Result<(Sample, Sample)>>,
}

impl Watch {
    /// Takes the closing sample now and works out the window's figures; `requests`: replies in
    /// the measured window, `writers`: connections that send SETs.
    pub fn finish(self, requests: u64, writers: usize) -> anyhow::Result<ServerWindow> {
        let _ = self.end_tx.send(());
        let (first, last) = self
            .handle
            .join()
            .map_err(|_| anyhow!("the server probe thread panicked"))??;
        Ok(window(
            &first,
            &last,
            Totals {
                pid: self.pid,
                requests,
                writers,
            },
            clock_ticks_per_second(),
        ))
    }
}

/// What the load side knows of the window.
struct Totals {
    pid: Option<u32>,
    requests: u64,
    writers: usize,
}

fn window(first: &Sample, last: &Sample, totals: Totals, ticks_per_second: u64) -> ServerWindow {
    let Totals {
        pid,
        requests,
        writers,
    } = totals;
    let window_s = last.at.saturating_duration_since(first.at).as_secs_f64();
    let cpu = match (pid, first.cpu_ticks, last.cpu_ticks) {
        (Some(pid), Some(before), Some(after)) => {
            let cpu_s = after.saturating_sub(before) as f64 / ticks_per_second as f64;
            Some(CpuFigures {
                pid,
                cpu_s,
                requests,
                cpu_us_per_request: if requests > 0 {
                    cpu_s * 1e6 / requests as f64
                } else {
                    0.0
                },
                busy_pct: if window_s > 0.0 {
                    cpu_s / window_s * 100.0
                } else {
                    0.0
                },
            })
        }
        _ => None,
    };
    let batches = match (first.batches, last.batches) {
        (Some(before), Some(after)) => {
            let batches = after.batches_total.saturating_sub(before.batches_total);
            let records = after.records_total.saturating_sub(before.records_total);
            let records_per_batch = if batches > 0 {
                records as f64 / batches as f64
            } else {
                0.0
            };
            Some(BatchFigures {
                batches,
                records,
                records_per_batch,
                writers,
                fill_pct: if writers > 0 {
                    records_per_batch / writers as f64 * 100.0
                } else {
                    0.0
                },
            })
        }
        _ => None,
    };
    ServerWindow {
        window_s,
        cpu,
        batches,
    }
}

/// utime + stime of process `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15; they
/// count every thread of the process, the ones that have exited too).
fn read_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path}: is the server running?"))?;
    parse_cpu_ticks(&text).with_context(|| format!("{path} is not in the expected format"))
}

fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')': the fields
    // after the last ')' start at field 3 (state).
    let (_, rest) = stat
        .rsplit_once(')')
        .context("no ')' after the command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u64> {
        fields
            .get(number - 3)
            .context("too few fields")?
            .parse::<u64>()
            .with_context(|| format!("field {number} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

fn parse_batches(stats: &str) -> anyhow::Result<BatchCounters> {
    let lines = kvs::client::stats_lines(stats);
    let value = |name: &str| -> Option<u64> {
        lines
            .iter()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.trim().parse().ok())
    };
    let batches_total = value("batches_total").context("STATS has no batches_total")?;
    let records_total = value("batch_records_total")
        .or_else(|| value("last_seq"))
        .context("STATS has neither batch_records_total nor last_seq")?;
    Ok(BatchCounters {
        batches_total,
        records_total,
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let stat = "4242 (kvs d) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 325);
        assert!(parse_cpu_ticks("4242 (kvsd) S 1 2").is_err());
        assert!(parse_cpu_ticks("no parenthesis").is_err());
    }

    #[test]
    fn own_process_has_cpu_ticks() {
        let spent: u64 = (0..2_000_000u64).map(|i| i ^ (i >> 3)).sum();
        assert!(spent > 0);
        read_cpu_ticks(std::process::id()).unwrap();
        assert!(read_cpu_ticks(u32::MAX).is_err());
    }

    #[test]
    fn batch_counters_prefer_batch_records_total() {
        let with = "batches_total:10\nbatch_records_total:240\nlast_seq:999\n";
        let counters = parse_batches(with).unwrap();
        assert_eq!((counters.batches_total, counters.records_total), (10, 240));
        let without = "batches_total:10\nbatch_records_avg:24.0\nlast_seq:999\n";
        assert_eq!(parse_batches(without).unwrap().records_total, 999);
        assert!(parse_batches("keys:1\n").is_err());
    }

    #[test]
    fn window_figures() {
        let at = Instant::now();
        let first = Sample {
            at,
            cpu_ticks: Some(1_000),
            batches: Some(BatchCounters {
                batches_total: 100,
                records_total: 5_000,
            }),
        };
        let last = Sample {
            at: at + Duration::from_secs(2),
            cpu_ticks: Some(1_100),
            batches: Some(BatchCounters {
                batches_total: 600,
                records_total: 25_000,
            }),
        };
        let totals = Totals {
            pid: Some(7),
            requests: 20_000,
            writers: 50,
        };
        let figures = window(&first, &last, totals, 100);
        let cpu = figures.cpu.unwrap();
        assert_eq!(cpu.cpu_s, 1.0);
        assert_eq!(cpu.cpu_us_per_request, 50.0);
        assert_eq!(cpu.busy_pct, 50.0);
        let batches = figures.batches.unwrap();
        assert_eq!((batches.batches, batches.records), (500, 20_000));
        assert_eq!(batches.records_per_batch, 40.0);
        assert_eq!(batches.fill_pct, 80.0);
    }
}
