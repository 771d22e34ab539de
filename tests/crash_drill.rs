//! The crash drill: cycles of a multi-connection write load (SETs and DELs), `kill -9` of the
//! real kvsd at a random moment, restart, and a check of every acknowledged write (its key
//! holds the newest acknowledged version or a later one that was sent, never an older one) and
//! of seqs (a new write's seq is above every seq ever acknowledged; none is acknowledged twice).
//!
//! With replication (leader + one follower, `--min-acks 1`), each cycle kills the leader, the
//! follower or both; when the leader alone dies, the follower must already hold every
//! acknowledged write; after the restarts the follower must converge to the leader's state.
//!
//! `KVS_DRILL_CYCLES` sets the cycles (default: a short run that fits the test suite);
//! `KVS_DRILL_SEED` replays a run (every run prints its seed). `tools/crash-drill` runs 200
//! cycles of each in release. Each drill prints one summary line:
//! `crash drill (MODE): cycles N, acked writes checked N, lost: 0, ...`.
//!
//! The checker is tested too: `the_checker_catches_lost_writes_and_reused_seqs` cuts
//! acknowledged records off a log and expects the drill's checks to report them.

mod common;

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{
    frame, min_seq_body, parse_stats, read_reply, set_body, Conn, DEL, ERROR, GET, GET_MIN_SEQ,
    NOT_FOUND, OK, SET, STATS,
};
use common::rng::Rng;
use common::Kvsd;

const WRITERS: usize = 4;
const KEYS_PER_WRITER: u64 = 16;
/// Requests each writer keeps in flight, so a kill lands in the middle of batches.
const WINDOW: usize = 16;
/// The load runs for a random time up to this before the kill.
const LOAD_MS_MAX: u64 = 250;
/// Cycles of the default (test suite) run, per mode.
const CYCLES_DEFAULT_SINGLE: usize = 12;
const CYCLES_DEFAULT_REPLICATED: usize = 6;
/// How long a follower may take to converge after restarts before the drill fails.
const CONVERGE: Duration = Duration::from_secs(60);

/// Drill cycles: `KVS_DRILL_CYCLES`, else `default` (the seed is `KVS_DRILL_SEED`).
fn cycles(default: usize) -> usize {
    std::env::var("KVS_DRILL_CYCLES")
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("KVS_DRILL_CYCLES={s:?} is not a number"))
        })
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The model: per key, versions that only go up
// ---------------------------------------------------------------------------------------------

/// Version `n` of a key is a DEL when this holds, else a SET of `value(n)`.
fn is_del(n: u64) -> bool {
    n.is_multiple_of(5)
}

fn key(writer: usize, k: u64) -> Vec<u8> {
    format!("drill-w{writer}-k{k:02}").into_bytes()
}

/// The value of version `n`: the number, then padding that depends on it, so a torn or
/// mixed-up value does not parse.
fn value(n: u64) -> Vec<u8> {
    let mut value = n.to_le_bytes().to_vec();
    value.extend(std::iter::repeat_n((n % 251) as u8, 24 + (n % 90) as usize));
    value
}

/// The version a value read back is, or why it is not one.
fn parse_value(bytes: &[u8]) -> Result<u64, String> {
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .ok_or_else(|| format!("a value of {} bytes", bytes.len()))?;
    if bytes == value(n) {
        Ok(n)
    } else {
        Err(format!("an altered value ({} bytes)", bytes.len()))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyState {
    /// A lower bound of the version on disk: the newest acknowledged, or what was read back.
    durable: u64,
    /// The newest version ever sent.
    sent: u64,
}

/// Whether `found` (a version read back, `None` for not found) is a state a crash may leave a
/// key in: at least the newest acknowledged version, at most the newest sent. Returns the new
/// lower bound of the key's version, or what is wrong.
fn judge(state: KeyState, found: Result<Option<u64>, String>) -> Result<u64, String> {
    match found? {
        Some(n) if is_del(n) => Err(format!("holds version {n}, which was a DEL")),
        Some(n) if state.durable <= n && n <= state.sent => Ok(n),
        Some(n) => Err(format!(
            "holds version {n}; acknowledged up to {}, sent up to {}",
            state.durable, state.sent
        )),
        // Not found: never written, or at one of the DEL versions in range (the lowest is the
        // bound that is sure).
        None if state.durable == 0 || is_del(state.durable) => Ok(state.durable),
        None => (state.durable..=state.sent)
            .find(|n| is_del(*n))
            .ok_or_else(|| {
                format!(
                    "is missing; acknowledged up to version {} (a SET), sent up to {} with no DEL \
                 between",
                    state.durable, state.sent
                )
            }),
    }
}

/// Everything the drill knows was acknowledged, and what it found wrong.
struct Model {
    keys: Vec<Vec<KeyState>>,
    acked_seqs: HashSet<u64>,
    max_acked_seq: u64,
    acked_writes: u64,
    /// Key reads compared with the model.
    reads_checked: u64,
    /// Keys found behind their acknowledged version, or altered.
    lost: u64,
    /// Seqs acknowledged twice, or not above every seq acknowledged before.
    seq_errors: u64,
    /// Every failure, those above and any other (a follower that does not converge...).
    violations: Vec<String>,
}

impl Model {
    fn new() -> Model {
        Model {
            keys: vec![vec![KeyState::default(); KEYS_PER_WRITER as usize]; WRITERS],
            acked_seqs: HashSet::new(),
            max_acked_seq: 0,
            acked_writes: 0,
            reads_checked: 0,
            lost: 0,
            seq_errors: 0,
            violations: Vec::new(),
        }
    }

    /// Reads every key from `addr` and checks it against the model: the version found is at
    /// least the newest acknowledged and at most the newest sent. With `tighten`, what was read
    /// becomes the new lower bound (the node is the source of truth from now on). `min_seq`
    /// makes each GET wait until the node applied that seq (for a follower).
    fn check_node(&mut self, addr: &str, label: &str, tighten: bool, min_seq: Option<u64>) {
        let mut conn = Conn::connect(addr);
        for writer in 0..WRITERS {
            for k in 0..KEYS_PER_WRITER {
                let key = key(writer, k);
                let reply = match min_seq {
                    Some(seq) => {
                        let id = conn.id();
                        conn.call(GET, GET_MIN_SEQ, id, &min_seq_body(seq, &key))
                    }
                    None => conn.get(&key),
                };
                self.reads_checked += 1;
                let state = &mut self.keys[writer][k as usize];
                let name = String::from_utf8_lossy(&key).into_owned();
                let found = match reply.status {
                    OK => parse_value(&reply.body).map(Some),
                    NOT_FOUND => Ok(None),
                    _ => Err(format!("GET answered {reply:?}")),
                };
                match judge(*state, found) {
                    Ok(lower_bound) => {
                        if tighten {
                            state.durable = lower_bound;
                        }
                    }
                    Err(why) => {
                        self.lost += 1;
                        self.violations.push(format!("{label}: {name}: {why}"));
                    }
                }
            }
        }
    }

    /// A new write after a restart must get a seq above every seq ever acknowledged.
    fn check_probe(&mut self, label: &str, seq: u64) {
        if seq <= self.max_acked_seq || !self.acked_seqs.insert(seq) {
            self.seq_errors += 1;
            self.violations.push(format!(
                "{label}: a new write got seq {seq}, not above the acknowledged {}",
                self.max_acked_seq
            ));
        }
        self.max_acked_seq = self.max_acked_seq.max(seq);
    }

    /// The writers' results: new key states, and the seqs of the writes acknowledged (each
    /// above the probe that opened the cycle, none acknowledged before).
    fn record_load(&mut self, label: &str, probe: u64, results: Vec<WriterResult>) {
        for (writer, result) in results.into_iter().enumerate() {
            self.keys[writer] = result.keys;
            for seq in result.seqs {
                self.acked_writes += 1;
                if seq <= probe {
                    self.seq_errors += 1;
                    self.violations
                        .push(format!("{label}: seq {seq} not above the probe's {probe}"));
                }
                if !self.acked_seqs.insert(seq) {
                    self.seq_errors += 1;
                    self.violations
                        .push(format!("{label}: seq {seq} acknowledged twice"));
                }
                self.max_acked_seq = self.max_acked_seq.max(seq);
            }
        }
    }

    fn summary(&self, mode: &str, cycles: usize, seed: u64, took: Duration) -> String {
        format!(
            "crash drill ({mode}): cycles {cycles}, acked writes checked {}, lost: {}, \
             seq errors: {}, failures: {}, key reads checked {}, max seq {}, seed {seed}, {:.1} s",
            self.acked_writes,
            self.lost,
            self.seq_errors,
            self.violations.len(),
            self.reads_checked,
            self.max_acked_seq,
            took.as_secs_f64()
        )
    }

    /// Fails the drill with the summary and the first violations, if there are any.
    #[track_caller]
    fn assert_clean(&self, mode: &str, cycles: usize, seed: u64, took: Duration) {
        if !self.violations.is_empty() {
            let shown: Vec<&str> = self
                .violations
                .iter()
                .take(20)
                .map(String::as_str)
                .collect();
            panic!(
                "{}\nreplay with KVS_DRILL_SEED={seed}\n{}",
                self.summary(mode, cycles, seed, took),
                shown.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

struct WriterResult {
    keys: Vec<KeyState>,
    seqs: Vec<u64>,
}

/// Writes SETs and DELs to its own keys with `WINDOW` in flight until the connection dies, or
/// until `stop` is set and its replies have come back. OK replies raise the key's lower bound;
/// an ERROR (with `--min-acks`: durable on the leader, not confirmed in time) acknowledges
/// nothing. Any other reply is a violation, reported through a panic of the thread.
fn write_until_stopped(
    addr: String,
    writer: usize,
    mut keys: Vec<KeyState>,
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> WriterResult {
    let mut seqs = Vec::new();
    let Ok(stream) = std::net::TcpStream::connect(&addr) else {
        return WriterResult { keys, seqs };
    };
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(common::raw::READ_TIMEOUT))
        .unwrap();
    let mut stream = stream;
    let mut in_flight: VecDeque<(u64, u64, u64)> = VecDeque::new(); // (id, key, version)
    let mut next_id = 0u64;
    loop {
        while in_flight.len() < WINDOW && !stop.load(Ordering::Relaxed) {
            next_id += 1;
            let k = (next_id * 7 + writer as u64) % KEYS_PER_WRITER;
            let state = &mut keys[k as usize];
            state.sent += 1;
            let n = state.sent;
            let bytes = if is_del(n) {
                frame(DEL, 0, next_id, &key(writer, k))
            } else {
                frame(SET, 0, next_id, &set_body(&key(writer, k), &value(n)))
            };
            if stream.write_all(&bytes).is_err() {
                return WriterResult { keys, seqs };
            }
            in_flight.push_back((next_id, k, n));
        }
        if in_flight.is_empty() {
            return WriterResult { keys, seqs };
        }
        let Ok(reply) = read_reply(&mut stream) else {
            return WriterResult { keys, seqs };
        };
        let position = in_flight
            .iter()
            .position(|(id, _, _)| *id == reply.id)
            .unwrap_or_else(|| panic!("a reply to no request in flight: {reply:?}"));
        let (_, k, n) = in_flight.remove(position).unwrap();
        match reply.status {
            OK => {
                seqs.push(reply.seq());
                let state = &mut keys[k as usize];
                state.durable = state.durable.max(n);
                acks.fetch_add(1, Ordering::Relaxed);
            }
            ERROR => {
                let message = String::from_utf8_lossy(&reply.body);
                assert!(
                    message.contains("not confirmed"),
                    "a write got an unexpected ERROR: {message}"
                );
            }
            _ => panic!("a write got {reply:?}"),
        }
    }
}

struct Load {
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writers: Vec<thread::JoinHandle<WriterResult>>,
}

impl Load {
    fn start(addr: &str, model: &Model) -> Load {
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = model
            .keys
            .iter()
            .cloned()
            .enumerate()
            .map(|(writer, keys)| {
                let (addr, acks, stop) = (addr.to_string(), acks.clone(), stop.clone());
                thread::spawn(move || write_until_stopped(addr, writer, keys, acks, stop))
            })
            .collect();
        Load {
            acks,
            stop,
            writers,
        }
    }

    fn join(self) -> Vec<WriterResult> {
        self.stop.store(true, Ordering::Relaxed);
        self.writers
            .into_iter()
            .map(|handle| handle.join().expect("a writer failed"))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// A SET that must succeed; returns its seq, or why it did not. With `--min-acks`, a follower
/// whose link has just come up may not be counted by the leader yet: such a write is durable
/// on the leader but not confirmed (an ERROR that says so), and is tried again, for a while.
fn probe(addr: &str, cycle: usize) -> Result<u64, String> {
    let mut conn = Conn::connect(addr);
    let mut last = String::new();
    for _ in 0..30 {
        let id = conn.id();
        let reply = conn.call(
            SET,
            0,
            id,
            &set_body(b"drill-probe", &(cycle as u64).to_le_bytes()),
        );
        if reply.status == OK {
            return Ok(reply.seq());
        }
        last = String::from_utf8_lossy(&reply.body).into_owned();
        if !last.contains("not confirmed") {
            break;
        }
    }
    Err(format!("a new write was refused: {last}"))
}

fn stats(addr: &str) -> std::collections::BTreeMap<String, String> {
    let mut conn = Conn::connect(addr);
    let id = conn.id();
    let reply = conn.call(STATS, 0, id, b"");
    assert_eq!(reply.status, OK, "{reply:?}");
    parse_stats(&reply.body)
}

fn figure(stats: &std::collections::BTreeMap<String, String>, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("STATS has no number {name}: {stats:?}"))
}

/// Starts kvsd on `port` (a restarted leader keeps its address), retrying while the port is
/// still held by the killed process's sockets.
fn start_on(port: u16, data_dir: &Path, extra: &[&str]) -> Kvsd {
    let mut last = String::new();
    for _ in 0..50 {
        match common::try_start_on(port, data_dir, extra) {
            Ok(server) => return server,
            Err(log) => last = log,
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("kvsd on port {port} did not start:\n{last}")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

const LEADER_FLAGS: [&str; 6] = [
    "--node-id",
    "leader",
    "--min-acks",
    "1",
    "--ack-timeout-ms",
    "1000",
];

fn start_follower(data_dir: &Path, leader_port: u16) -> Kvsd {
    let leader_addr = format!("127.0.0.1:{leader_port}");
    common::start(
        data_dir,
        &[
            "--node-id",
            "f1",
            "--async-replication",
            "--leader-addr",
            leader_addr.as_str(),
        ],
    )
}

/// Waits until the follower has applied everything the idle leader holds and its link is up.
fn wait_converged(leader: &Kvsd, follower: &Kvsd) -> Result<u64, String> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let ours = stats(&leader.addr);
        let theirs = stats(&follower.addr);
        let durable = figure(&ours, "durable_seq");
        let applied = figure(&theirs, "applied_seq");
        let connected = theirs.get("link_state").map(String::as_str) == Some("connected");
        if figure(&ours, "last_seq") == durable && applied == durable && connected {
            return Ok(durable);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the follower did not converge within {CONVERGE:?}: leader durable_seq \
                 {durable}, follower applied_seq {applied}, link {:?}",
                theirs.get("link_state")
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines a node logged (since the last call), for a failure's report.
fn log_tail(server: &Kvsd) -> String {
    let lines = server.drain_log(Duration::from_millis(100));
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Every drill key as the node holds it, raw.
fn snapshot(addr: &str) -> Vec<Option<Vec<u8>>> {
    let mut conn = Conn::connect(addr);
    (0..WRITERS)
        .flat_map(|w| (0..KEYS_PER_WRITER).map(move |k| key(w, k)))
        .map(|key| conn.value(&key))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The drills
// ---------------------------------------------------------------------------------------------

#[test]
fn crash_drill_single_node() {
    let cycles = cycles(CYCLES_DEFAULT_SINGLE);
    let mut rng = Rng::from_env("KVS_DRILL_SEED");
    let seed = rng.seed();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();

    for cycle in 0..=cycles {
        let label = format!("cycle {cycle}");
        let server = common::start(dir.path(), &[]);
        model.check_node(&server.addr, &label, true, None);
        let probe = match probe(&server.addr, cycle) {
            Ok(seq) => seq,
            Err(why) => {
                model.violations.push(format!("{label}: {why}"));
                0
            }
        };
        model.check_probe(&label, probe);
        model.assert_clean("single node", cycle, seed, started.elapsed());
        if cycle == cycles {
            // The last restart only checks the last crash.
            break;
        }

        let load = Load::start(&server.addr, &model);
        thread::sleep(Duration::from_millis(rng.below(LOAD_MS_MAX + 1)));
        server.kill9();
        let acked_before = load.acks.load(Ordering::Relaxed);
        let results = load.join();
        model.record_load(&label, probe, results);
        assert!(
            model.acked_writes >= acked_before,
            "every acknowledgement seen is recorded"
        );
    }
    println!(
        "{}",
        model.summary("single node", cycles, seed, started.elapsed())
    );
    model.assert_clean("single node", cycles, seed, started.elapsed());
    assert!(
        cycles == 0 || model.acked_writes > 0,
        "the load acknowledged nothing: the drill checked nothing"
    );
}

#[derive(Debug, Clone, Copy)]
enum Victim {
    Leader,
    Follower,
    Both,
}

#[test]
fn crash_drill_leader_and_follower() {
    let cycles = cycles(CYCLES_DEFAULT_REPLICATED);
    let mut rng = Rng::from_env("KVS_DRILL_SEED");
    let seed = rng.seed();
    let started = Instant::now();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port();
    let mut model = Model::new();
    let mut leader = Some(start_on(port, dirs[0].path(), &LEADER_FLAGS));
    let mut follower = Some(start_follower(dirs[1].path(), port));
    let mut kills = [0usize; 3];

    for cycle in 0..=cycles {
        let label = format!("cycle {cycle}");
        let l = leader.get_or_insert_with(|| start_on(port, dirs[0].path(), &LEADER_FLAGS));
        let f = follower.get_or_insert_with(|| start_follower(dirs[1].path(), port));
        match wait_converged(l, f) {
            Ok(_) => {}
            Err(why) => model.violations.push(format!(
                "{label}: {why}\nleader log:\n{}\nfollower log:\n{}",
                log_tail(l),
                log_tail(f)
            )),
        }
        model.check_node(&l.addr, &format!("{label}, leader"), true, None);
        // The follower holds exactly the leader's state.
        let (ours, theirs) = (snapshot(&l.addr), snapshot(&f.addr));
        if ours != theirs {
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            model.violations.push(format!(
                "{label}: the follower differs from the leader on {differ} keys"
            ));
        }
        let probe = match probe(&l.addr, cycle) {
            Ok(seq) => seq,
            Err(why) => {
                model.violations.push(format!(
                    "{label}: {why}\nleader STATS {:?}\nfollower STATS {:?}\nleader log:\n{}\n\
                     follower log:\n{}",
                    stats(&l.addr),
                    stats(&f.addr),
                    log_tail(l),
                    log_tail(f)
                ));
                0
            }
        };
        model.check_probe(&label, probe);
        model.assert_clean("leader and follower", cycle, seed, started.elapsed());
        if cycle == cycles {
            break;
        }

        let load = Load::start(&l.addr, &model);
        thread::sleep(Duration::from_millis(rng.below(LOAD_MS_MAX + 1)));
        let victim = match rng.below(3) {
            0 => Victim::Leader,
            1 => Victim::Follower,
            _ => Victim::Both,
        };
        kills[victim as usize] += 1;
        match victim {
            Victim::Leader => leader.take().unwrap().kill9(),
            Victim::Follower => follower.take().unwrap().kill9(),
            Victim::Both => {
                if rng.below(2) == 0 {
                    leader.take().unwrap().kill9();
                    thread::sleep(Duration::from_millis(rng.below(20)));
                    follower.take().unwrap().kill9();
                } else {
                    follower.take().unwrap().kill9();
                    thread::sleep(Duration::from_millis(rng.below(20)));
                    leader.take().unwrap().kill9();
                }
            }
        }
        let results = load.join();
        model.record_load(&label, probe, results);

        // With --min-acks 1 an OK means the follower has the write durable: with the leader
        // dead, the follower alone must hold every acknowledged write.
        if let (Victim::Leader, Some(f)) = (victim, &follower) {
            let max = model.max_acked_seq;
            model.check_node(
                &f.addr,
                &format!("{label}, follower with the leader down"),
                false,
                Some(max),
            );
        }
    }
    println!(
        "{} (kills: leader {}, follower {}, both {})",
        model.summary("leader and follower", cycles, seed, started.elapsed()),
        kills[0],
        kills[1],
        kills[2]
    );
    model.assert_clean("leader and follower", cycles, seed, started.elapsed());
    assert!(
        cycles == 0 || model.acked_writes > 0,
        "the load acknowledged nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// The checker catches what it is there to catch
// ---------------------------------------------------------------------------------------------

/// The newest segment of a data dir.
fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension() == Some(OsStr::new("wal")))
        .collect();
    paths.sort();
    paths.pop().expect("a segment")
}

#[test]
fn the_checker_catches_lost_writes_and_reused_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let server = common::start(dir.path(), &[]);
    let probe_seq = probe(&server.addr, 0).unwrap();
    model.check_probe("start", probe_seq);
    let load = Load::start(&server.addr, &model);
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acks.load(Ordering::Relaxed) < 3000 {
        assert!(Instant::now() < deadline, "the write load stalled");
        thread::sleep(Duration::from_millis(1));
    }
    server.kill9();
    model.record_load("load", probe_seq, load.join());
    assert!(model.violations.is_empty(), "{:?}", model.violations);

    // A disk that lied: the last 64 KiB of records are gone (zeroed, so recovery takes them for
    // a torn tail and cuts them). Not 8 KiB: the newest batches may all be unacknowledged (the
    // kill came before their replies), and on a loaded machine one batch can exceed 8 KiB.
    let segment = newest_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    assert!(end > 128 * 1024, "the load wrote enough to cut from");
    bytes[end - 64 * 1024..end].fill(0);
    std::fs::write(&segment, &bytes).unwrap();

    let server = common::start(dir.path(), &[]);
    model.check_node(&server.addr, "after the cut", true, None);
    let lost_keys = model.violations.len();
    assert_eq!(model.lost, lost_keys as u64);
    assert!(
        lost_keys > 0,
        "the checker missed acknowledged writes cut from the log"
    );
    assert!(
        model.violations.iter().all(|v| v.contains("acknowledged")),
        "{:?}",
        model.violations
    );
    model.check_probe("after the cut", probe(&server.addr, 1).unwrap());
    assert_eq!(
        (model.violations.len(), model.seq_errors),
        (lost_keys + 1, 1),
        "the checker missed a seq at or below an acknowledged one"
    );
    println!(
        "the checker reported {} keys behind their acknowledged version and a reused seq",
        lost_keys
    );
}

#[test]
fn the_checker_accepts_every_state_a_crash_may_leave_and_nothing_else() {
    // Acknowledged up to version 3, sent up to 7; version 5 is a DEL.
    let state = KeyState {
        durable: 3,
        sent: 7,
    };
    assert_eq!(judge(state, Ok(Some(3))), Ok(3));
    assert_eq!(
        judge(state, Ok(Some(7))),
        Ok(7),
        "sent, not acknowledged: may land"
    );
    assert_eq!(
        judge(state, Ok(None)),
        Ok(5),
        "the unacknowledged DEL may have landed"
    );
    assert!(
        judge(state, Ok(Some(2))).is_err(),
        "older than acknowledged"
    );
    assert!(judge(state, Ok(Some(8))).is_err(), "never sent");
    assert!(
        judge(state, Ok(Some(5))).is_err(),
        "version 5 was a DEL, not a SET"
    );
    let no_del = KeyState {
        durable: 1,
        sent: 4,
    };
    assert!(
        judge(no_del, Ok(None)).is_err(),
        "an acknowledged SET is gone"
    );
    assert_eq!(judge(KeyState::default(), Ok(None)), Ok(0), "never written");
    assert!(judge(state, Err("torn".into())).is_err());
    assert_eq!(parse_value(&value(42)), Ok(42));
    let mut torn = value(42);
    torn.pop();
    assert!(parse_value(&torn).is_err());
}
