//! The command line and the checked run configuration it becomes.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Load generator for kvsd, Redis and etcd: the same workload against each, with latency
/// percentiles from HdrHistogram.
#[derive(Debug, Parser)]
#[command(name = "kvs-bench", version)]
pub struct Args {
    /// kvs://host:port, redis://host:port or etcd://host:port
    #[arg(long)]
    pub target: String,
    /// Connections, spread over the threads.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Load threads, each its own single-threaded event loop.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Cores to pin the load threads to, e.g. `1` or `0,2-3`; thread i takes the i-th (cycling).
    #[arg(long)]
    pub core: Option<String>,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Measured requests in all (split over the clients); instead of --duration.
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Seconds of measured load (default 10 when --requests is not given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of load before measuring; counted apart, errors included.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// SET:GET, e.g. `1:0` (only SET), `0:1` (only GET), `1:10`.
    #[arg(long, default_value = "1:10")]
    pub ratio: String,
    /// Bytes per value.
    #[arg(long, default_value_t = 32)]
    pub data_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Which key each request picks.
    #[arg(long, value_enum, default_value_t = KeyPattern::Uniform)]
    pub key_pattern: KeyPattern,
    /// The exponent of --key-pattern zipf.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exp: f64,
    /// SET every key of the keyspace once before the run (not measured).
    #[arg(long)]
    pub prefill: bool,
    /// Open loop: this many requests per second in all, each latency measured from the
    /// request's intended send time (coordinated-omission correction).
    #[arg(long)]
    pub rate: Option<f64>,
    /// GET checks the value it reads against what this run wrote (needs --data-size >= 16).
    #[arg(long)]
    pub verify: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency distribution of all ops to this file, HdrHistogram .hgrm text (ms).
    #[arg(long)]
    pub hdr: Option<PathBuf>,
    /// Seed of the key and op choice; the same seed gives the same sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds a connection may wait for any reply while it has requests in flight; past it
    /// they are counted as errors and the connection is given up.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
    /// kvs targets: a file holding the server's secret (its --auth-file), sent in AUTH on
    /// every connection; without it, the secret is taken from KVS_AUTH, if set.
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,
    /// The server's process id: its CPU time (utime + stime, /proc/PID/stat) over the measured
    /// window is reported per request (`server_cpu_us_per_request`).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// kvs targets: read STATS at the start and end of the measured window and report the
    /// records per fsync batch and how many of the writing connections a batch holds.
    #[arg(long)]
    pub server_stats: bool,
    /// kvs targets: every SET gives its key this time to live (the SETX op), to compare with
    /// plain SETs; 0: none
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPattern {
    Uniform,
    Zipf,
    Sequential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Kvs,
    Redis,
    Etcd,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Kvs => "kvs",
            TargetKind::Redis => "redis",
            TargetKind::Etcd => "etcd",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub kind: TargetKind,
    /// host:port
    pub addr: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("target {url:?} is not scheme://host:port"))?;
        let kind = match scheme {
            "kvs" => TargetKind::Kvs,
            "redis" => TargetKind::Redis,
            "etcd" => TargetKind::Etcd,
            _ => bail!("target scheme {scheme:?} is not one of kvs, redis, etcd"),
        };
        let addr = rest.trim_end_matches('/');
        let Some((host, port)) = addr.rsplit_once(':') else {
            bail!("target {url:?} has no port: write {scheme}://host:port");
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            bail!("target {url:?}: host or port is not valid");
        }
        Ok(Target {
            kind,
            addr: addr.to_string(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind, self.addr)
    }
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Length {
    /// Measured requests in all.
    Requests(u64),
    /// Seconds of measured load.
    Duration(f64),
}

/// A checked configuration; also what the JSON file reports under `config`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub target: Target,
    pub clients: usize,
    pub threads: usize,
    pub cores: Vec<usize>,
    pub pipeline: usize,
    pub length: Length,
    pub warmup_s: f64,
    pub ratio_set: u32,
    pub ratio_get: u32,
    pub data_size: usize,
    pub keyspace: u64,
    pub key_pattern: KeyPattern,
    pub zipf_exp: f64,
    pub prefill: bool,
    pub rate_ops_s: Option<f64>,
    pub verify: bool,
    pub seed: u64,
    pub timeout_s: f64,
    #[serde(skip)]
    pub json: Option<PathBuf>,
    #[serde(skip)]
    pub hdr: Option<PathBuf>,
    #[serde(skip)]
    pub quiet: bool,
    /// The secret kvs connections send in AUTH first.
    #[serde(skip)]
    pub auth: Option<kvs::auth::Secret>,
    pub server_pid: Option<u32>,
    pub server_stats: bool,
    /// Milliseconds to live for every SET's key; 0: none.
    pub ttl_ms: u64,
}

/// The smallest value that can carry its version and the run's id for --verify.
pub const VERIFY_DATA_SIZE_MIN: usize = 16;
/// Values larger than this are refused before the run: kvsd's own default is 1 MiB.
pub const DATA_SIZE_MAX: usize = 64 * 1024 * 1024;
/// Bounds that keep one load thread's memory and the scheduler sane.
pub const CLIENTS_MAX: usize = 100_000;
pub const PIPELINE_MAX: usize = 100_000;
pub const DURATION_DEFAULT_S: f64 = 10.0;
/// Bounds on every time and rate given, so the schedule's instants never overflow.
pub const SECONDS_MAX: f64 = 10_000_000.0;
pub const RATE_MIN: f64 = 0.01;
pub const RATE_MAX: f64 = 1e9;

impl Config {
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let target = Target::parse(&args.target)?;
        if args.clients == 0 || args.clients > CLIENTS_MAX {
            bail!("--clients must be 1 to {CLIENTS_MAX}");
        }
        if args.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if args.pipeline == 0 || args.pipeline > PIPELINE_MAX {
            bail!("--pipeline must be 1 to {PIPELINE_MAX}");
        }
        let threads = args.threads.min(args.clients);
        let cores = match &args.core {
            Some(list) => parse_core_list(list)?,
            None => Vec::new(),
        };
        let length = match (args.requests, args.duration) {
            (Some(0), _) => bail!("--requests must be at least 1"),
            (Some(n), _) => Length::Requests(n),
            (None, Some(secs)) if !(secs > 0.0 && secs <= SECONDS_MAX) => {
                bail!("--duration must be a positive number of seconds, at most {SECONDS_MAX}")
            }
            (None, Some(secs)) => Length::Duration(secs),
            (None, None) => Length::Duration(DURATION_DEFAULT_S),
        };
        if !(args.warmup >= 0.0 && args.warmup <= SECONDS_MAX) {
            bail!("--warmup must be 0 to {SECONDS_MAX} seconds");
        }
        let (ratio_set, ratio_get) = parse_ratio(&args.ratio)?;
        if args.data_size > DATA_SIZE_MAX {
            bail!("--data-size must be at most {DATA_SIZE_MAX}");
        }
        if args.verify && args.data_size < VERIFY_DATA_SIZE_MIN {
            bail!("--verify needs --data-size of at least {VERIFY_DATA_SIZE_MIN}: each value carries its version and the run's id");
        }
        if args.keyspace == 0 {
            bail!("--keyspace must be at least 1");
        }
        if args.verify && args.keyspace < args.clients as u64 {
            bail!("--verify gives each client its own keys: --keyspace must be at least --clients");
        }
        if !(args.zipf_exp >= 0.0 && args.zipf_exp.is_finite()) {
            bail!("--zipf-exp must be zero or more");
        }
        if let Some(rate) = args.rate {
            if !(RATE_MIN..=RATE_MAX).contains(&rate) {
                bail!("--rate must be {RATE_MIN} to {RATE_MAX} requests per second");
            }
        }
        if !(args.timeout > 0.0 && args.timeout <= SECONDS_MAX) {
            bail!("--timeout must be a positive number of seconds, at most {SECONDS_MAX}");
        }
        if args.ttl_ms > 0 && target.kind != TargetKind::Kvs {
            bail!("--ttl-ms is for kvs:// targets only");
        }
        if args.auth_file.is_some() && target.kind != TargetKind::Kvs {
            bail!("--auth-file is for kvs:// targets only");
        }
        let auth = match target.kind {
            TargetKind::Kvs => kvs::auth::Secret::for_client(args.auth_file.as_deref())?,
            _ => None,
        };
        let auth = auth.map(|file| {
            if let Some(warning) = file.warning {
                eprintln!("kvs-bench: warning: {warning}");
            }
            file.secret
        });
        Ok(Config {
            target,
            clients: args.clients,
            threads,
            cores,
            pipeline: args.pipeline,
            length,
            warmup_s: args.warmup,
            ratio_set,
            ratio_get,
            data_size: args.data_size,
            keyspace: args.keyspace,
            key_pattern: args.key_pattern,
            zipf_exp: args.zipf_exp,
            prefill: args.prefill,
            rate_ops_s: args.rate,
            verify: args.verify,
            seed: args.seed,
            timeout_s: args.timeout,
            json: args.json,
            hdr: args.hdr,
            quiet: args.quiet,
            auth,
            server_pid: args.server_pid,
            server_stats: args.server_stats,
            ttl_ms: args.ttl_ms,
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// Connections that send SETs: all of them unless the ratio has no SET.
    pub fn writers(&self) -> usize {
        if self.ratio_set > 0 {
            self.clients
        } else {
            0
        }
    }
}

/// `1:10` → (1, 10); at least one side non-zero.
pub fn parse_ratio(text: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = text
        .split_once(':')
        .and_then(|(set, get)| Some((set.trim().parse().ok()?, get.trim().parse().ok()?)));
    match parsed {
        Some((0, 0)) => bail!("--ratio {text:?}: SET and GET cannot both be 0"),
        Some((set, get)) if u64::from(set) + u64::from(get) <= 1_000_000 => Ok((set, get)),
        _ => bail!("--ratio {text:?} is not SET:GET, e.g. 1:10 (each side 0 to 1000000 in all)"),
    }
}

/// `0,2-3` → [0, 2, 3].
pub fn parse_core_list(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--core {text:?}: {part:?} is not a core number or range a-b");
        match part.split_once('-') {
            Some((first, last)) => {
                let first: usize = first.trim().parse().with_context(bad)?;
                let last: usize = last.trim().parse().with_context(bad)?;
                if first > last || last >= 1024 {
                    bail!(bad());
                }
                cores.extend(first..=last);
            }
            None => {
                let core: usize = part.parse().with_context(bad)?;
                if core >= 1024 {
                    bail!(bad());
                }
                cores.push(core);
            }
        }
    }
    if cores.is_empty() {
        bail!("--core {text:?} names no core");
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("kvs://127.0.0.1:7379").unwrap();
        assert_eq!(t.kind, TargetKind::Kvs);
        assert_eq!(t.addr, "127.0.0.1:7379");
        assert_eq!(
            Target::parse("etcd://localhost:2379/").unwrap().to_string(),
            "etcd://localhost:2379"
        );
        assert!(Target::parse("http://x:1").is_err());
        assert!(Target::parse("redis://x").is_err());
        assert!(Target::parse("redis://:1").is_err());
    }

    #[test]
    fn ratios_parse() {
        assert_eq!(parse_ratio("1:10").unwrap(), (1, 10));
        assert_eq!(parse_ratio("0:1").unwrap(), (0, 1));
        assert!(parse_ratio("0:0").is_err());
        assert!(parse_ratio("1").is_err());
        assert!(parse_ratio("a:b").is_err());
    }

    #[test]
    fn core_lists_parse() {
        assert_eq!(parse_core_list("1").unwrap(), vec![1]);
        assert_eq!(parse_core_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_core_list("3-2").is_err());
        assert!(parse_core_list("x").is_err());
        assert!(parse_core_list("").is_err());
    }
}
