//! The Raft partition drill (issue 11): a 3-voter cluster under concurrent clients doing
//! SET/GET/DEL on a few keys, while any member is killed with kill -9 (and restarted with its
//! command line) or cut off from the others by fault proxies on its Raft links, at random. Every
//! key's history is checked for linearizability (`tests/common/linearizability.rs`); an
//! acknowledged write that is lost shows up there as a read that no order can explain.
//! Failover time: from a kill -9 of the leader to another member reporting itself leader.
//!
//! A failover slower than `KVS_RAFT_DRILL_SLOW_MS` (2000) prints the members' logs around it
//! (`SLOW FAILOVER` .. `SLOW FAILOVER END`), from 4 s before the kill, with the drill's own faults
//! among them.
//!
//! The test suite runs one short round; `tools/raft-drill RUNS SECONDS` runs the long drill
//! (`KVS_RAFT_DRILL_RUNS`, `KVS_RAFT_DRILL_SECONDS`).

mod common;
#[path = "common/linearizability.rs"]
mod linearizability;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Mode;
use common::raft::{free_port, stats, wait_for, Cluster, Mesh, LEADER_WAIT};
use common::rng::Rng;
use kvs::client::{Client, ClientError, ClientOptions};
use linearizability::{check, excerpt, Op, Operation, Verdict};

const KEYS: usize = 4;
const CLIENTS: usize = 5;

#[derive(Default)]
struct Totals {
    operations: u64,
    indeterminate: u64,
    kills: u64,
    leader_kills: u64,
    partitions: u64,
    violations: u64,
    failovers_ms: Vec<u64>,
}

#[test]
fn raft_cluster_under_kills_and_partitions_is_linearizable() {
    let runs: u64 = env_number("KVS_RAFT_DRILL_RUNS", 1);
    let seconds: u64 = env_number("KVS_RAFT_DRILL_SECONDS", 10);
    let started = Instant::now();
    let mut totals = Totals::default();
    for run in 0..runs {
        run_round(run, Duration::from_secs(seconds), &mut totals);
    }
    let mut failovers = totals.failovers_ms.clone();
    failovers.sort_unstable();
    let pct = |p: usize| {
        failovers
            .get((failovers.len() * p / 100).min(failovers.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "raft-drill: runs {runs}, operations checked {} ({} indeterminate), kills {} (leader {}), \
         partitions {}, violations {}, failover ms p50 {} p99 {} max {} over {} leader kills, {:.1} s",
        totals.operations,
        totals.indeterminate,
        totals.kills,
        totals.leader_kills,
        totals.partitions,
        totals.violations,
        pct(50),
        pct(99),
        failovers.last().copied().unwrap_or(0),
        failovers.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        totals.violations, 0,
        "histories that are not linearizable (above)"
    );
    assert!(
        totals.operations >= 100 * runs,
        "too few operations to mean anything"
    );
    assert!(
        totals.kills + totals.partitions >= runs,
        "every round has faults"
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name}={text} is not a number"))
        })
        .unwrap_or(default)
}

fn run_round(seed: u64, length: Duration, totals: &mut Totals) {
    let ports = [free_port(), free_port(), free_port()];
    let mesh = Mesh::new(ports);
    let mut cluster = Cluster::start(ports, |i| {
        let mut args = vec!["--ack-timeout-ms".to_string(), "3000".to_string()];
        args.extend(mesh.dial_args(i, ports));
        args
    });
    cluster.keep_logs();
    let slow = Duration::from_millis(env_number("KVS_RAFT_DRILL_SLOW_MS", 2000));
    let addrs: Vec<String> = (0..3).map(|i| cluster.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let next_value = Arc::new(AtomicU64::new(1));
    let histories: Arc<Vec<Mutex<Vec<Operation>>>> =
        Arc::new((0..KEYS).map(|_| Mutex::new(Vec::new())).collect());
    let indeterminate = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (addrs, stop, next_value, histories, indeterminate) = (
                addrs.clone(),
                stop.clone(),
                next_value.clone(),
                histories.clone(),
                indeterminate.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678_9abc_def1 ^ (seed << 16) ^ (client as u64 + 1));
                run_client(
                    client,
                    &mut rng,
                    &addrs,
                    &stop,
                    &next_value,
                    &histories,
                    &indeterminate,
                )
            })
        })
        .collect();

    let mut rng = Rng(0xdead_beef_cafe_f00d ^ seed);
    let deadline = Instant::now() + length;
    while Instant::now() + Duration::from_millis(1500) < deadline {
        std::thread::sleep(Duration::from_millis(500 + rng.below(1000)));
        let leader = cluster.leader();
        let victim = match (leader, rng.below(3)) {
            (Some(leader), 0 | 1) => leader,
            _ => rng.below(3) as usize,
        };
        if rng.below(3) < 2 {
            let was_leader = leader == Some(victim);
            let killed_at = Instant::now();
            cluster.kill(victim);
            totals.kills += 1;
            if was_leader {
                totals.leader_kills += 1;
                let elected = wait_for("a new leader", LEADER_WAIT, || {
                    (0..3)
                        .filter(|&i| i != victim && cluster.nodes[i].is_some())
                        .find(|&i| stats(&cluster.addr(i)).is_some_and(|s| s["role"] == "leader"))
                });
                let took = killed_at.elapsed();
                let ms = took.as_millis() as u64;
                eprintln!(
                    "run {seed}: killed leader n{}; n{} leads after {ms} ms",
                    victim + 1,
                    elected + 1
                );
                if took > slow {
                    // What the members logged around it, from a few seconds before the kill
                    // (the faults that came before it) until now.
                    eprintln!(
                        "SLOW FAILOVER run {seed}: {ms} ms; the members' logs (ms from the kill):\n{}SLOW FAILOVER END",
                        cluster.log_excerpt(
                            killed_at,
                            killed_at
                                .checked_sub(Duration::from_secs(4))
                                .unwrap_or(killed_at),
                            Instant::now()
                        )
                    );
                }
                totals.failovers_ms.push(ms);
            }
            std::thread::sleep(Duration::from_millis(rng.below(500)));
            cluster.note(&format!("restarting n{}", victim + 1));
            cluster.restart(victim);
        } else {
            mesh.isolate(victim, Mode::Down);
            cluster.note(&format!("cut n{} off", victim + 1));
            totals.partitions += 1;
            std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
            mesh.heal();
            cluster.note("healed");
        }
    }
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread panicked");
    }
    totals.indeterminate += indeterminate.load(Ordering::Relaxed);
    for (key, history) in histories.iter().enumerate() {
        let history = history.lock().unwrap();
        totals.operations += history.len() as u64;
        let epoch = history
            .iter()
            .map(|op| op.call)
            .min()
            .unwrap_or_else(Instant::now);
        match check(&history, None) {
            Verdict::Linearizable => {}
            Verdict::Violation { stuck, linearized } => {
                totals.violations += 1;
                eprintln!(
                    "VIOLATION run {seed} key k{key}: {linearized} operations placed, then stuck on:\n{}",
                    excerpt(&history, stuck, epoch)
                );
            }
            Verdict::TooHard { steps } => {
                totals.violations += 1;
                eprintln!("run {seed} key k{key}: the search gave up after {steps} steps");
            }
        }
    }
}

/// One client: random operations on random keys, each recorded with its invocation and reply;
/// it follows NOT_LEADER and moves to the next member when one does not answer.
fn run_client(
    client_id: usize,
    rng: &mut Rng,
    addrs: &[String],
    stop: &AtomicBool,
    next_value: &AtomicU64,
    histories: &[Mutex<Vec<Operation>>],
    indeterminate: &AtomicU64,
) {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(300),
        read_timeout: Some(Duration::from_secs(10)),
        write_timeout: Some(Duration::from_secs(10)),
        ..ClientOptions::default()
    };
    let mut target = client_id % addrs.len();
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(connection) = client.as_mut() else {
            match Client::connect_with(&addrs[target], options) {
                Ok(connected) => client = Some(connected),
                Err(_) => {
                    target = (target + 1) % addrs.len();
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            continue;
        };
        let key_index = rng.below(KEYS as u64) as usize;
        let key = format!("k{key_index}");
        let choice = rng.below(10);
        let call = Instant::now();
        // What the client saw; a write with no definite answer is recorded as unanswered.
        let (op, error): (Option<Op>, Option<ClientError>) = match choice {
            0..=3 => {
                let value = next_value.fetch_add(1, Ordering::Relaxed) as u32;
                match connection.set(key.as_bytes(), format!("v{value:08}").as_bytes()) {
                    Ok(_) => (Some(Op::Set(value)), None),
                    Err(error) => {
                        if !matches!(error, ClientError::NotLeader(_)) {
                            record(histories, key_index, client_id, Op::Set(value), call, None);
                            indeterminate.fetch_add(1, Ordering::Relaxed);
                        }
                        (None, Some(error))
                    }
                }
            }
            4..=7 => match connection.get(key.as_bytes()) {
                Ok(value) => (Some(Op::Get(value.map(|v| value_id(&v)))), None),
                Err(error) => (None, Some(error)),
            },
            _ => match connection.del(key.as_bytes()) {
                Ok(seq) => (Some(Op::Del(Some(seq.is_some()))), None),
                Err(error) => {
                    if !matches!(error, ClientError::NotLeader(_)) {
                        record(histories, key_index, client_id, Op::Del(None), call, None);
                        indeterminate.fetch_add(1, Ordering::Relaxed);
                    }
                    (None, Some(error))
                }
            },
        };
        let ret = Instant::now();
        if let Some(op) = op {
            record(histories, key_index, client_id, op, call, Some(ret));
        }
        match error {
            None => {}
            Some(ClientError::NotLeader(leader)) => {
                client = None;
                match addrs.iter().position(|a| *a == leader) {
                    Some(at) => target = at,
                    None => {
                        target = (target + 1) % addrs.len();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            Some(ClientError::Server(_)) => std::thread::sleep(Duration::from_millis(20)),
            Some(_) => {
                client = None;
                target = (target + 1) % addrs.len();
            }
        }
    }
}

fn record(
    histories: &[Mutex<Vec<Operation>>],
    key: usize,
    client: usize,
    op: Op,
    call: Instant,
    ret: Option<Instant>,
) {
    histories[key]
        .lock()
        .expect("history lock")
        .push(Operation {
            client,
            op,
            call,
            ret,
        });
}

fn value_id(value: &[u8]) -> u32 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.strip_prefix('v'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(u32::MAX)
}
