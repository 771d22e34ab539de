//! Linearizability of the leader under concurrent clients and crashes: several client threads
//! do random SET/GET/DEL on a few keys while kvsd is killed with `kill -9` and restarted on the
//! same data dir; every key's history is then checked by a Wing–Gong search
//! (`common/linearizability.rs`). Each SET writes a value no other SET writes, so a read names
//! the write it saw. A request whose reply never came (the kill cut the connection) or a write
//! answered ERROR is indeterminate: it may or may not have taken effect.
//!
//! The default run is short; `KVS_LIN_RUNS=N` runs N rounds and `KVS_LIN_SECONDS=S` makes each
//! round last S seconds (`tools/lin-drill` runs a long version).
//!
//! The checker's own tests, on hand-written histories (including ones that are not
//! linearizable, so it provably fails them), come first.

mod common;

use common::rng::Rng;
#[path = "common/linearizability.rs"]
mod linearizability;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kvs::client::{Client, ClientError, ClientOptions};
use linearizability::{check, excerpt, Op, Operation, Verdict};

// ---------------------------------------------------------------------------------------------
// The checker on hand-written histories

/// Builds a history from (client, op, call, return) with times in ticks of 1 ms; `None`: the
/// reply never came.
fn history(ops: &[(usize, Op, u64, Option<u64>)]) -> (Vec<Operation>, Instant) {
    let epoch = Instant::now();
    let at = |tick: u64| epoch + Duration::from_millis(tick);
    let history = ops
        .iter()
        .map(|&(client, op, call, ret)| Operation {
            client,
            op,
            call: at(call),
            ret: ret.map(at),
        })
        .collect();
    (history, epoch)
}

fn verdict(ops: &[(usize, Op, u64, Option<u64>)]) -> Verdict {
    check(&history(ops).0, None)
}

fn is_violation(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Violation { .. })
}

use Op::{Del, Get, Set};

#[test]
fn checker_accepts_a_sequential_history() {
    let ops = [
        (0, Get(None), 0, Some(1)),
        (0, Del(Some(false)), 2, Some(3)),
        (0, Set(1), 4, Some(5)),
        (1, Get(Some(1)), 6, Some(7)),
        (1, Set(2), 8, Some(9)),
        (0, Get(Some(2)), 10, Some(11)),
        (0, Del(Some(true)), 12, Some(13)),
        (1, Get(None), 14, Some(15)),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
    assert_eq!(verdict(&[]), Verdict::Linearizable);
}

#[test]
fn checker_accepts_reads_that_overlap_a_write_either_way() {
    // Reads overlapping a SET may see the old or the new value, in that order.
    let ops = [
        (0, Set(1), 0, Some(1)),
        (1, Set(2), 2, Some(20)),
        (2, Get(Some(1)), 3, Some(4)),
        (3, Get(Some(2)), 5, Some(6)),
        (2, Get(Some(2)), 7, Some(8)),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
    // Two concurrent SETs, read in either order of effect, as long as reads agree afterwards.
    let ops = [
        (0, Set(1), 0, Some(10)),
        (1, Set(2), 0, Some(10)),
        (2, Get(Some(1)), 11, Some(12)),
        (2, Get(Some(1)), 13, Some(14)),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
}

#[test]
fn checker_refuses_a_stale_read_after_a_completed_write() {
    let ops = [
        (0, Set(1), 0, Some(1)),
        (0, Set(2), 2, Some(3)),
        (1, Get(Some(1)), 4, Some(5)),
    ];
    assert!(is_violation(&verdict(&ops)), "{:?}", verdict(&ops));
}

#[test]
fn checker_refuses_reads_that_go_back_in_time() {
    // Both reads overlap the SET, but once one saw the new value a later one cannot miss it.
    let ops = [
        (0, Set(1), 0, Some(100)),
        (1, Get(Some(1)), 10, Some(20)),
        (2, Get(None), 30, Some(40)),
    ];
    assert!(is_violation(&verdict(&ops)));
    let ops = [
        (0, Set(1), 0, Some(10)),
        (1, Set(2), 0, Some(10)),
        (2, Get(Some(1)), 11, Some(12)),
        (3, Get(Some(2)), 13, Some(14)),
        (2, Get(Some(1)), 15, Some(16)),
    ];
    assert!(is_violation(&verdict(&ops)));
}

#[test]
fn checker_refuses_a_read_of_a_value_never_written() {
    let ops = [(0, Set(1), 0, Some(1)), (1, Get(Some(99)), 2, Some(3))];
    assert!(is_violation(&verdict(&ops)));
}

#[test]
fn checker_refuses_a_lost_acknowledged_write() {
    // SET acknowledged, then (after a crash and restart) the key is gone.
    let ops = [
        (0, Set(1), 0, Some(1)),
        (1, Set(2), 2, None), // cut by the kill: may or may not have happened
        (2, Get(None), 10, Some(11)),
    ];
    assert!(is_violation(&verdict(&ops)));
    // And a DEL answered NOT_FOUND while the key holds a value.
    let ops = [(0, Set(1), 0, Some(1)), (1, Del(Some(false)), 2, Some(3))];
    assert!(is_violation(&verdict(&ops)));
}

#[test]
fn checker_lets_an_unanswered_write_happen_late_or_never() {
    // Never happened.
    let ops = [(0, Set(1), 0, None), (1, Get(None), 5, Some(6))];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
    // Happened after a read that missed it.
    let ops = [
        (0, Set(1), 0, None),
        (1, Get(None), 5, Some(6)),
        (1, Get(Some(1)), 7, Some(8)),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
    // An unanswered DEL, likewise; unanswered GETs promise nothing.
    let ops = [
        (0, Set(1), 0, Some(1)),
        (1, Del(None), 2, None),
        (0, Get(Some(1)), 3, Some(4)),
        (2, Get(Some(7)), 3, None),
        (0, Get(None), 5, Some(6)),
    ];
    assert_eq!(verdict(&ops), Verdict::Linearizable);
    // But once seen it cannot be unseen, and it cannot happen before it was sent.
    let ops = [
        (0, Set(1), 0, None),
        (1, Get(Some(1)), 5, Some(6)),
        (1, Get(None), 7, Some(8)),
    ];
    assert!(is_violation(&verdict(&ops)));
    let ops = [(1, Get(Some(1)), 0, Some(1)), (0, Set(1), 2, None)];
    assert!(is_violation(&verdict(&ops)));
}

/// A tiny deterministic generator (xorshift64*), so runs need no crate and can be replayed.
/// Histories made by running a real register with random overlapping intervals around each
/// instant of effect: always linearizable. Corrupting one read makes them not.
#[test]
fn checker_on_generated_histories() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let mut state: Option<u32> = None;
        let mut ops = Vec::new();
        let mut next_value = 0;
        for effect in 0..60u64 {
            let t = 100 + effect * 10;
            let op = match rng.below(3) {
                0 => {
                    next_value += 1;
                    state = Some(next_value);
                    Set(next_value)
                }
                1 => Get(state),
                _ => {
                    let found = state.is_some();
                    state = None;
                    Del(Some(found))
                }
            };
            // The interval contains the instant of effect, and may reach far either side.
            let call = t - rng.below(40);
            let ret = t + rng.below(40);
            let ret = (rng.below(20) != 0 || !matches!(op, Set(_))).then_some(ret);
            ops.push((round % 5, op, call, ret));
        }
        assert_eq!(verdict(&ops), Verdict::Linearizable, "round {round}");
        // A read that saw a value no one wrote.
        let reads: Vec<usize> = (0..ops.len())
            .filter(|at| matches!(ops[*at].1, Get(_)) && ops[*at].3.is_some())
            .collect();
        if let Some(&at) = reads.get(rng.below(reads.len().max(1) as u64) as usize) {
            let mut bad = ops.clone();
            bad[at].1 = Get(Some(10_000));
            assert!(is_violation(&verdict(&bad)), "round {round}");
        }
    }
}

#[test]
fn a_violation_names_the_operation_it_got_stuck_on() {
    let ops = [
        (0, Set(1), 0, Some(1)),
        (0, Set(2), 2, Some(3)),
        (1, Get(Some(1)), 4, Some(5)),
    ];
    let (history, epoch) = history(&ops);
    match check(&history, None) {
        Verdict::Violation { stuck, .. } => {
            let text = excerpt(&history, stuck, epoch);
            assert!(text.contains("<-- stuck"), "{text}");
            assert!(text.contains("GET -> v1"), "{text}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The real server

const KEYS: usize = 4;
const CLIENTS: usize = 6;

/// One round's record: each key's history.
struct Round {
    histories: Vec<Vec<Operation>>,
    kills: u32,
    indeterminate: u64,
}

/// The address the clients dial; changes only if a restart cannot get the old port back.
type Address = Arc<RwLock<String>>;

#[test]
fn concurrent_clients_with_kill9_restarts_are_linearizable() {
    let runs: u32 = env_number("KVS_LIN_RUNS", 1);
    let seconds: u64 = env_number("KVS_LIN_SECONDS", 12);
    let started = Instant::now();
    let (mut operations, mut kills, mut indeterminate, mut violations) = (0u64, 0u32, 0u64, 0u64);
    for run in 0..runs {
        let round = run_round(u64::from(run), Duration::from_secs(seconds), false);
        kills += round.kills;
        indeterminate += round.indeterminate;
        for (key, history) in round.histories.iter().enumerate() {
            operations += history.len() as u64;
            let epoch = history
                .iter()
                .map(|op| op.call)
                .min()
                .unwrap_or_else(Instant::now);
            match check(history, None) {
                Verdict::Linearizable => {}
                Verdict::Violation { stuck, linearized } => {
                    violations += 1;
                    eprintln!(
                        "VIOLATION run {run} key k{key}: {linearized} operations placed, then \
                         stuck on this one:\n{}",
                        excerpt(history, stuck, epoch)
                    );
                }
                Verdict::TooHard { steps } => {
                    violations += 1;
                    eprintln!("run {run} key k{key}: the search gave up after {steps} steps");
                }
            }
        }
    }
    eprintln!(
        "linearizability: runs {runs}, operations checked {operations} ({indeterminate} \
         indeterminate), kills {kills}, violations: {violations}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(violations, 0, "histories that are not linearizable (above)");
    assert!(kills >= runs, "every round kills kvsd at least once");
    assert!(
        operations >= 100 * u64::from(runs),
        "too few operations to mean anything"
    );
}

/// The same run against a server that forgets its log at each restart: the check must fail it,
/// or the test above could not fail either.
#[test]
fn the_check_catches_a_server_that_loses_acknowledged_writes() {
    let round = run_round(99, Duration::from_secs(4), true);
    assert!(round.kills >= 1);
    let violations = round
        .histories
        .iter()
        .filter(|history| check(history, None) != Verdict::Linearizable)
        .count();
    assert!(
        violations >= 1,
        "a server that lost every acknowledged write at a restart passed the check"
    );
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
        Err(_) => default,
    }
}

/// One round of `length` with kills; `wipe_on_restart` restarts kvsd on an empty data dir, a
/// server that loses acknowledged writes, which the check must catch.
fn run_round(seed: u64, length: Duration, wipe_on_restart: bool) -> Round {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = common::start(&data, &[]);
    let port: u16 = server
        .addr
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the ready line names a port");
    let address: Address = Arc::new(RwLock::new(server.addr.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let next_value = Arc::new(AtomicU64::new(1));
    let histories: Arc<Vec<Mutex<Vec<Operation>>>> =
        Arc::new((0..KEYS).map(|_| Mutex::new(Vec::new())).collect());
    let indeterminate = Arc::new(AtomicU64::new(0));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (address, stop, next_value, histories, indeterminate) = (
                address.clone(),
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
                    &address,
                    &stop,
                    &next_value,
                    &histories,
                    &indeterminate,
                )
            })
        })
        .collect();

    // Kill -9 and restart a few times while the clients run, at times that vary per round.
    let mut server = Some(server);
    let mut kills = 0;
    let mut rng = Rng(0xdead_beef_cafe_f00d ^ seed);
    let deadline = Instant::now() + length;
    let kill_every = length / 4;
    while Instant::now() + kill_every / 2 < deadline {
        std::thread::sleep(
            kill_every / 2
                + Duration::from_millis(rng.below(kill_every.as_millis() as u64 / 2 + 1)),
        );
        server.take().expect("running").kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        let data = if wipe_on_restart {
            dir.path().join(format!("wiped{kills}"))
        } else {
            data.clone()
        };
        let restarted = common::try_start_on(port, &data, &[])
            .or_else(|_| common::try_start(&data, &[]))
            .unwrap_or_else(|log| panic!("kvsd did not restart:\n{log}"));
        *address.write().expect("address lock") = restarted.addr.clone();
        server = Some(restarted);
    }
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread panicked");
    }
    drop(server);
    let histories = Arc::try_unwrap(histories)
        .expect("clients are done")
        .into_iter()
        .map(|history| history.into_inner().expect("history lock"))
        .collect();
    Round {
        histories,
        kills,
        indeterminate: indeterminate.load(Ordering::Relaxed),
    }
}

/// One client: random operations on random keys, each recorded with its invocation and reply
/// times, reconnecting after a kill for as long as the round lasts.
fn run_client(
    client_id: usize,
    rng: &mut Rng,
    address: &Address,
    stop: &AtomicBool,
    next_value: &AtomicU64,
    histories: &[Mutex<Vec<Operation>>],
    indeterminate: &AtomicU64,
) {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Some(Duration::from_secs(30)),
        write_timeout: Some(Duration::from_secs(30)),
        ..ClientOptions::default()
    };
    let mut client: Option<Client> = None;
    let mut last_seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(connection) = client.as_mut() else {
            let addr = address.read().expect("address lock").clone();
            match Client::connect_with(&addr, options) {
                Ok(connected) => client = Some(connected),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            continue;
        };
        let key_index = rng.below(KEYS as u64) as usize;
        let key = format!("k{key_index}");
        let choice = rng.below(10);
        let call = Instant::now();
        // (what the client saw, whether the connection must be dropped)
        let (op, broken): (Option<Op>, bool) = match choice {
            0..=3 => {
                let value = next_value.fetch_add(1, Ordering::Relaxed) as u32;
                match connection.set(key.as_bytes(), &value_bytes(value)) {
                    Ok(seq) => {
                        last_seq = last_seq.max(seq);
                        (Some(Set(value)), false)
                    }
                    Err(error) => {
                        record(histories, key_index, client_id, Set(value), call, None);
                        indeterminate.fetch_add(1, Ordering::Relaxed);
                        (None, is_broken(&error))
                    }
                }
            }
            4..=7 => {
                // Some reads carry min_seq (read-your-writes), which a leader has always reached.
                let got = if choice == 7 {
                    connection.get_min_seq(key.as_bytes(), last_seq)
                } else {
                    connection.get(key.as_bytes())
                };
                match got {
                    Ok(value) => (Some(Get(value.map(|v| value_id(&v)))), false),
                    Err(error) => (None, is_broken(&error)),
                }
            }
            _ => match connection.del(key.as_bytes()) {
                Ok(seq) => {
                    if let Some(seq) = seq {
                        last_seq = last_seq.max(seq);
                    }
                    (Some(Del(Some(seq.is_some()))), false)
                }
                Err(error) => {
                    record(histories, key_index, client_id, Del(None), call, None);
                    indeterminate.fetch_add(1, Ordering::Relaxed);
                    (None, is_broken(&error))
                }
            },
        };
        let ret = Instant::now();
        if let Some(op) = op {
            record(histories, key_index, client_id, op, call, Some(ret));
        }
        if broken {
            client = None;
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

/// Errors after which the connection is of no further use (the server went away).
fn is_broken(error: &ClientError) -> bool {
    !matches!(error, ClientError::Server(_))
}

/// Values name their SET: `v<id>` padded, so no two SETs write the same bytes.
fn value_bytes(id: u32) -> Vec<u8> {
    format!("v{id:08}").into_bytes()
}

fn value_id(value: &[u8]) -> u32 {
    // A value that is not one of ours maps to an id no SET used, which no read can justify.
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.strip_prefix('v'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(u32::MAX)
}
