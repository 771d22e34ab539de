//! The load threads and their coordination. Each load thread runs its own single-threaded
//! tokio runtime (current_thread with a LocalSet), pinned to a core when `--core` says so, and
//! drives its share of the clients. The main thread only coordinates: it lets every thread
//! connect, runs the prefill phase, then starts the measured run at one instant for all, prints
//! a progress line each second from the threads' interval histograms, and merges their final
//! statistics.
//!
//! Thread to main: `Report`s over one channel. Main to thread: a `Command` channel each.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use tokio::task::LocalSet;

use crate::config::Config;
use crate::driver::Connection;
use crate::server_cpu::{Probe, ServerWindow};
use crate::stats::ThreadStats;
use crate::workload::{Timeline, Workload};

/// How far ahead of now the main thread sets the common start, so every thread is waiting.
const START_DELAY: Duration = Duration::from_millis(20);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

enum Command {
    Prefill,
    Run(Timeline),
    Stop,
}

enum Report {
    Connected(Result<(), String>),
    PrefillDone { seconds: f64 },
    Progress(Tick),
    Finished(Box<ThreadStats>),
}

struct Tick {
    label: &'static str,
    index: u64,
    ops: u64,
    errors: u64,
    latency_ns: Histogram<u64>,
}

/// What a run measured, merged over the threads.
pub struct RunResult {
    pub stats: ThreadStats,
    /// From the start of the measured phase to its last reply.
    pub measured_seconds: f64,
    pub prefill_seconds: Option<f64>,
    /// The server's CPU time and fsync batches over the measured window, when asked for.
    pub server: Option<ServerWindow>,
}

pub fn run(config: Arc<Config>, run_id: u64) -> anyhow::Result<RunResult> {
    let probe = Probe::from_config(&config)?;
    let (report_tx, report_rx) = mpsc::channel::<(usize, Report)>();
    let mut commands = Vec::new();
    let mut handles = Vec::new();
    for thread_index in 0..config.threads {
        let (command_tx, command_rx) = mpsc::channel();
        commands.push(command_tx);
        let clients: Vec<usize> = (thread_index..config.clients)
            .step_by(config.threads)
            .collect();
        let core =
            (!config.cores.is_empty()).then(|| config.cores[thread_index % config.cores.len()]);
        let config = Arc::clone(&config);
        let reports = report_tx.clone();
        let handle = thread::Builder::new()
            .name(format!("load-{thread_index}"))
            .spawn(move || {
                let report = |report| {
                    let _ = reports.send((thread_index, report));
                };
                load_thread(&config, core, &clients, run_id, &report, &command_rx);
            })?;
        handles.push(handle);
    }
    drop(report_tx);

    let result = coordinate(&config, &commands, &report_rx, probe);
    if result.is_err() {
        for command in &commands {
            let _ = command.send(Command::Stop);
        }
    }
    drop(commands);
    for handle in handles {
        if handle.join().is_err() {
            bail!("a load thread panicked");
        }
    }
    result
}

fn coordinate(
    config: &Config,
    commands: &[mpsc::Sender<Command>],
    reports: &mpsc::Receiver<(usize, Report)>,
    probe: Option<Probe>,
) -> anyhow::Result<RunResult> {
    let threads = commands.len();
    let lost = || anyhow!("a load thread stopped early");
    let mut failures = Vec::new();
    for _ in 0..threads {
        match reports.recv().map_err(|_| lost())? {
            (_, Report::Connected(Ok(()))) => {}
            (thread_index, Report::Connected(Err(why))) => {
                failures.push(format!("thread {thread_index}: {why}"))
            }
            _ => bail!("load thread out of step"),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }

    let mut prefill_seconds = None;
    if config.prefill {
        for command in commands {
            command.send(Command::Prefill).map_err(|_| lost())?;
        }
        let mut slowest = 0.0f64;
        let mut ticks = Ticks::new(threads, config.quiet);
        let mut done = 0;
        while done < threads {
            match reports.recv().map_err(|_| lost())? {
                (_, Report::PrefillDone { seconds }) => {
                    slowest = slowest.max(seconds);
                    done += 1;
                    ticks.running = threads - done;
                    ticks.flush();
                }
                (_, Report::Progress(tick)) => ticks.add(tick),
                _ => bail!("load thread out of step"),
            }
        }
        prefill_seconds = Some(slowest);
    }

    let timeline = Timeline::new(Instant::now() + START_DELAY, config);
    let watch = probe
        .map(|probe| probe.watch(timeline.measure_start))
        .transpose()?;
    for command in commands {
        command.send(Command::Run(timeline)).map_err(|_| lost())?;
    }
    let mut merged = ThreadStats::new();
    let mut ticks = Ticks::new(threads, config.quiet);
    let mut finished = 0;
    while finished < threads {
        match reports.recv().map_err(|_| lost())? {
            (_, Report::Progress(tick)) => ticks.add(tick),
            (_, Report::Finished(stats)) => {
                merged.merge(&stats);
                finished += 1;
                ticks.running = threads - finished;
                ticks.flush();
            }
            _ => bail!("load thread out of step"),
        }
    }
    let server = match watch {
        Some(watch) => {
            let replies = merged.measured.iter().map(|op| op.ops + op.errors).sum();
            Some(watch.finish(replies, config.writers())?)
        }
        None => None,
    };
    let measured_seconds = merged.measured_last.map_or(0.0, |last| {
        last.saturating_duration_since(timeline.measure_start)
            .as_secs_f64()
    });
    Ok(RunResult {
        stats: merged,
        measured_seconds,
        prefill_seconds,
        server,
    })
}

/// Progress lines: one per second once every running thread has reported that second.
struct Ticks {
    running: usize,
    quiet: bool,
    pending: BTreeMap<u64, (usize, Tick)>,
}

impl Ticks {
    fn new(running: usize, quiet: bool) -> Ticks {
        Ticks {
            running,
            quiet,
            pending: BTreeMap::new(),
        }
    }

    fn add(&mut self, tick: Tick) {
        match self.pending.get_mut(&tick.index) {
            Some((count, sum)) => {
                *count += 1;
                sum.ops += tick.ops;
                sum.errors += tick.errors;
                let _ = sum.latency_ns.add(&tick.latency_ns);
            }
            None => {
                self.pending.insert(tick.index, (1, tick));
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().0 < self.running {
                break;
            }
            let (_, tick) = entry.remove();
            if !self.quiet {
                let ms = |q: f64| tick.latency_ns.value_at_quantile(q) as f64 / 1e6;
                eprintln!(
                    "[{:>4} s] {:<7} {:>10.0} ops/s  p50 {:>9.3} ms  p99 {:>9.3} ms  errors {}",
                    tick.index,
                    tick.label,
                    tick.ops as f64 / PROGRESS_INTERVAL.as_secs_f64(),
                    ms(0.5),
                    ms(0.99),
                    tick.errors
                );
            }
        }
    }
}

fn load_thread(
    config: &Config,
    core: Option<usize>,
    clients: &[usize],
    run_id: u64,
    report: &dyn Fn(Report),
    commands: &mpsc::Receiver<Command>,
) {
    if let Some(core) = core {
        if let Err(why) = kvs::cpu::pin_to(core) {
            report(Report::Connected(Err(format!(
                "cannot pin a load thread to core {core}: {why}"
            ))));
            return;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report(Report::Connected(Err(format!(
                "cannot start a runtime: {error}"
            ))));
            return;
        }
    };
    let local = LocalSet::new();
    let stats = Rc::new(RefCell::new(ThreadStats::new()));
    let ordered = Connection::ordered(config.target.kind);

    let connected = local.block_on(&runtime, async {
        let mut connections = Vec::with_capacity(clients.len());
        for _ in clients {
            connections.push(
                Connection::connect(&config.target, config.timeout(), config.auth.as_ref()).await?,
            );
        }
        Ok::<_, anyhow::Error>(connections)
    });
    let mut pairs: Vec<(Connection, Workload)> = match connected {
        Ok(connections) => connections
            .into_iter()
            .zip(clients)
            .map(|(connection, &client)| {
                (connection, Workload::new(config, client, run_id, ordered))
            })
            .collect(),
        Err(error) => {
            report(Report::Connected(Err(format!("{error:#}"))));
            return;
        }
    };
    report(Report::Connected(Ok(())));

    while let Ok(command) = commands.recv() {
        match command {
            Command::Prefill => {
                let began = Instant::now();
                for (_, workload) in &mut pairs {
                    workload.start_prefill();
                }
                pairs = run_phase(
                    config, &runtime, &local, pairs, &stats, began, "prefill", report,
                );
                report(Report::PrefillDone {
                    seconds: began.elapsed().as_secs_f64(),
                });
            }
            Command::Run(timeline) => {
                for (_, workload) in &mut pairs {
                    workload.start_run(timeline);
                }
                let label = if timeline.measure_start > timeline.start {
                    "warmup"
                } else {
                    "run"
                };
                let _ = run_phase(
                    config,
                    &runtime,
                    &local,
                    pairs,
                    &stats,
                    timeline.start,
                    label,
                    report,
                );
                let stats = stats.borrow().clone();
                report(Report::Finished(Box::new(stats)));
                return;
            }
            Command::Stop => return,
        }
    }
}

/// Runs one phase on every client of this thread, with a progress tick each second.
#[allow(clippy::too_many_arguments)]
fn run_phase(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    local: &LocalSet,
    pairs: Vec<(Connection, Workload)>,
    stats: &Rc<RefCell<ThreadStats>>,
    began: Instant,
    label: &'static str,
    report: &dyn Fn(Report),
) -> Vec<(Connection, Workload)> {
    local.block_on(runtime, async {
        let pipeline = config.pipeline;
        let timeout = config.timeout();
        let tasks: Vec<_> = pairs
            .into_iter()
            .map(|(mut connection, mut workload)| {
                let stats = Rc::clone(stats);
                tokio::task::spawn_local(async move {
                    connection
                        .run_phase(&mut workload, &stats, pipeline, timeout)
                        .await;
                    (connection, workload)
                })
            })
            .collect();
        let ticker = async {
            let measure_start = match label {
                "warmup" => Some(began + Duration::from_secs_f64(config.warmup_s)),
                _ => None,
            };
            for index in 1u64.. {
                let at = began + PROGRESS_INTERVAL * index as u32;
                tokio::time::sleep_until(at.into()).await;
                let interval = stats.borrow_mut().take_interval();
                let label = match measure_start {
                    Some(measure_start) if at <= measure_start => "warmup",
                    Some(_) => "run",
                    None => label,
                };
                report(Report::Progress(Tick {
                    label,
                    index,
                    ops: interval.ops,
                    errors: interval.errors,
                    latency_ns: interval.latency_ns,
                }));
            }
        };
        let all_done = async {
            let mut pairs = Vec::with_capacity(tasks.len());
            for task in tasks {
                match task.await {
                    Ok(pair) => pairs.push(pair),
                    Err(error) => stats
                        .borrow_mut()
                        .connection_failed(format!("a client task failed: {error}")),
                }
            }
            pairs
        };
        tokio::select! {
            pairs = all_done => pairs,
            _ = ticker => unreachable!("the ticker never ends"),
        }
    })
}
