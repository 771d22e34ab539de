//! What one client sends and when, and what it expects back: key choice, the SET:GET mix, the
//! open-loop schedule, the end of each phase, and the values that `--verify` can check.
//! Pure: no I/O; the drivers in `driver` ask it for the next request and hand it each reply.
//!
//! ## Values and `--verify`
//!
//! With `--verify` every value is derived from (run id, key, version):
//!
//! | offset | size | field                                              |
//! |--------|------|----------------------------------------------------|
//! | 0      | 8    | `version` u64 LE: 1 for the first SET of the key   |
//! | 8      | 8    | `run_id` u64 LE: random per run                    |
//! | 16     | rest | filler: splitmix64 of (run id, key, version)       |
//!
//! and each client reads and writes only its own keys (key index ≡ client index mod clients),
//! so what a GET may return is known exactly from the client's own history:
//!
//! - kvs and Redis apply a connection's requests in the order sent: a GET must return the
//!   version of the last SET sent before it on that connection (or, once a SET of that key got
//!   an error and so may or may not have happened, any version from the last one answered OK).
//! - etcd requests in flight on one channel are concurrent, so two SETs of one key in flight
//!   together may take effect in either order. A GET must return a version between the floor
//!   (the newest version answered OK before the GET was sent whose SET had no older SET of the
//!   key still in flight when it was sent: every older version took effect before it) and the
//!   newest version sent before the GET's reply came.
//!
//! A key that this run has not written yet may hold anything (a previous run's value), and is
//! counted as unchecked. Without `--verify` all clients share the whole keyspace, as in
//! memtier_benchmark, and the value is a fixed pseudo-random block.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

use crate::config::{Config, KeyPattern, Length};

/// Bytes of the version and run id that start a verifiable value.
const VALUE_HEADER_BYTES: usize = 16;
/// The key of index i is `key:` and i as 12 decimal digits.
const KEY_PREFIX: &[u8] = b"key:";
const KEY_DIGITS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Set,
    Get,
}

impl OpKind {
    pub const ALL: [OpKind; 2] = [OpKind::Set, OpKind::Get];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Set => "SET",
            OpKind::Get => "GET",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Warmup,
    Measure,
}

/// What `--verify` needs to judge a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    None,
    Set {
        slot: usize,
        version: u64,
        /// No older SET of the key was in flight when this one was sent.
        alone: bool,
    },
    Get {
        slot: usize,
        lo: u64,
        hi: u64,
    },
}

/// One request, planned by the workload and carried by a driver until its reply.
#[derive(Debug, Clone)]
pub struct Request {
    pub op: OpKind,
    pub key: Bytes,
    /// Empty for GET.
    pub value: Bytes,
    /// SET: milliseconds for the key to live; 0: no expiry.
    pub ttl_ms: u64,
    /// Latency is measured from here: the intended send time in the open loop, else the time
    /// the request was handed to the driver.
    pub start: Instant,
    pub phase: Phase,
    pub check: Check,
}

/// A reply, as every target's codec reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// SET done.
    Stored,
    /// GET found the key.
    Value(Bytes),
    /// GET found no such key.
    NotFound,
    /// The server refused or failed the request; the message is the server's.
    Error(String),
}

pub enum Next {
    Send(Request),
    /// Nothing is due before this instant (open loop).
    Wait(Instant),
    /// This phase has nothing more to send.
    Done,
}

/// The outcome of one reply, for the statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A GET of a key that does not exist: a success, counted apart.
    Miss,
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not verifying, or a SET.
    NotChecked,
    Pass,
    /// The key was not written by this run yet: anything goes.
    Unknown,
    Fail(FailKind, String),
}

/// How a GET's read was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// Older than the oldest version it may read (a SET that must show did not).
    Stale,
    /// Newer than the newest it may read: a SET sent after the GET showed (ordered targets).
    Ahead,
    /// This run's header with bytes that are not that version's value.
    Corrupt,
}

/// The shared clock of a run, the same instants for every client.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub start: Instant,
    pub measure_start: Instant,
    /// `Some` for --duration.
    pub end: Option<Instant>,
}

impl Timeline {
    pub fn new(start: Instant, config: &Config) -> Timeline {
        let measure_start = start + Duration::from_secs_f64(config.warmup_s);
        let end = match config.length {
            Length::Duration(secs) => Some(measure_start + Duration::from_secs_f64(secs)),
            Length::Requests(_) => None,
        };
        Timeline {
            start,
            measure_start,
            end,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct KeySlot {
    /// The newest version sent (0: none).
    sent: u64,
    /// The newest version answered OK.
    acked: u64,
    /// The newest version answered OK that was sent with no older SET of the key in flight.
    floor: u64,
    /// SETs of the key sent and not answered yet.
    sets_in_flight: u32,
    /// A SET of this key failed: it may or may not have happened.
    uncertain: bool,
}

enum Mode {
    /// Not started, or between phases.
    Idle,
    Prefill {
        next_slot: u64,
    },
    Run(Timeline),
}

/// One client's workload: one connection of kvs or Redis, one channel of etcd.
pub struct Workload {
    client: u64,
    clients: u64,
    keyspace: u64,
    /// Keys this client draws from: all of them, or with --verify the ones it owns.
    slots: u64,
    owns_keys: bool,
    pattern: KeyPattern,
    zipf: Option<Zipf<f64>>,
    sequential_next: u64,
    rng: SmallRng,
    ratio_set: u64,
    ratio_cycle: u64,
    op_count: u64,
    data_size: usize,
    ttl_ms: u64,
    fixed_value: Bytes,
    run_id: u64,
    verify: Option<Vec<KeySlot>>,
    /// The target applies one connection's requests in the order sent (kvs, Redis).
    ordered: bool,
    /// Open loop: seconds between this client's intended sends, and its offset.
    interval_s: Option<f64>,
    offset_s: f64,
    scheduled: u64,
    measured_share: Option<u64>,
    measured_sent: u64,
    mode: Mode,
}

impl Workload {
    pub fn new(config: &Config, client: usize, run_id: u64, ordered: bool) -> Workload {
        let clients = config.clients as u64;
        let client = client as u64;
        let owns_keys = config.verify;
        // Keys client, client + clients, ... below keyspace; keyspace >= clients is checked.
        let slots = if owns_keys {
            (config.keyspace - client).div_ceil(clients)
        } else {
            config.keyspace
        };
        let zipf = match config.key_pattern {
            KeyPattern::Zipf => Zipf::new(slots as f64, config.zipf_exp).ok(),
            _ => None,
        };
        let sequential_next = if owns_keys {
            0
        } else {
            config.keyspace / clients * client
        };
        let mut rng = SmallRng::seed_from_u64(mix(config.seed, client));
        let mut fixed = vec![0u8; config.data_size];
        fill(&mut fixed, rng.random());
        let (interval_s, offset_s) = match config.rate_ops_s {
            Some(rate) => (Some(clients as f64 / rate), client as f64 / rate),
            None => (None, 0.0),
        };
        let measured_share = match config.length {
            Length::Requests(total) => Some(total / clients + u64::from(client < total % clients)),
            Length::Duration(_) => None,
        };
        Workload {
            client,
            clients,
            keyspace: config.keyspace,
            slots,
            owns_keys,
            pattern: config.key_pattern,
            zipf,
            sequential_next,
            rng,
            ratio_set: u64::from(config.ratio_set),
            ratio_cycle: u64::from(config.ratio_set) + u64::from(config.ratio_get),
            op_count: 0,
            data_size: config.data_size,
            ttl_ms: config.ttl_ms,
            fixed_value: Bytes::from(fixed),
            run_id,
            verify: config
                .verify
                .then(|| vec![KeySlot::default(); slots as usize]),
            ordered,
            interval_s,
            offset_s,
            scheduled: 0,
            measured_share,
            measured_sent: 0,
            mode: Mode::Idle,
        }
    }

    /// The prefill phase: one SET of every key this client is in charge of (key ≡ client mod
    /// clients), with or without --verify.
    pub fn start_prefill(&mut self) {
        self.mode = Mode::Prefill { next_slot: 0 };
    }

    pub fn start_run(&mut self, timeline: Timeline) {
        self.mode = Mode::Run(timeline);
    }

    /// Requests of the prefill phase this client sends.
    pub fn prefill_count(&self) -> u64 {
        (self.keyspace.saturating_sub(self.client)).div_ceil(self.clients)
    }

    pub fn next(&mut self, now: Instant) -> Next {
        match self.mode {
            Mode::Idle => Next::Done,
            Mode::Prefill { next_slot } => {
                if next_slot >= self.prefill_count() {
                    return Next::Done;
                }
                self.mode = Mode::Prefill {
                    next_slot: next_slot + 1,
                };
                let key_index = next_slot * self.clients + self.client;
                // With --verify the prefill slot is the client's own slot of that key.
                let slot = if self.owns_keys { next_slot } else { key_index };
                Next::Send(self.set(slot, now, Phase::Prefill))
            }
            Mode::Run(timeline) => self.next_run(timeline, now),
        }
    }

    fn next_run(&mut self, timeline: Timeline, now: Instant) -> Next {
        let start = match self.interval_s {
            Some(interval_s) => {
                let after_start =
                    Duration::try_from_secs_f64(self.offset_s + self.scheduled as f64 * interval_s)
                        .ok();
                // A schedule past what an Instant can hold would never come: done.
                let Some(due) = after_start.and_then(|after| timeline.start.checked_add(after))
                else {
                    return Next::Done;
                };
                if let Some(end) = timeline.end {
                    if due >= end {
                        return Next::Done;
                    }
                }
                if due > now {
                    // Not due yet; but first make sure the budget is not already spent.
                    if self.budget_spent(timeline, due) {
                        return Next::Done;
                    }
                    return Next::Wait(due);
                }
                due
            }
            None => {
                // Every client starts at the common instant, not when its thread got going.
                if now < timeline.start {
                    return Next::Wait(timeline.start);
                }
                if timeline.end.is_some_and(|end| now >= end) {
                    return Next::Done;
                }
                now
            }
        };
        if self.budget_spent(timeline, start) {
            return Next::Done;
        }
        let phase = if start >= timeline.measure_start {
            self.measured_sent += 1;
            Phase::Measure
        } else {
            Phase::Warmup
        };
        self.scheduled += 1;
        let is_set = self.op_count % self.ratio_cycle < self.ratio_set;
        self.op_count += 1;
        let slot = self.choose_slot();
        let request = if is_set {
            self.set(slot, start, phase)
        } else {
            self.get(slot, start, phase)
        };
        Next::Send(request)
    }

    fn budget_spent(&self, timeline: Timeline, start: Instant) -> bool {
        match self.measured_share {
            Some(share) => start >= timeline.measure_start && self.measured_sent >= share,
            None => false,
        }
    }

    fn choose_slot(&mut self) -> u64 {
        match self.pattern {
            KeyPattern::Uniform => self.rng.random_range(0..self.slots),
            KeyPattern::Zipf => match &self.zipf {
                // Rank 1 (the most frequent) is slot 0.
                Some(zipf) => (zipf.sample(&mut self.rng) as u64).clamp(1, self.slots) - 1,
                None => self.rng.random_range(0..self.slots),
            },
            KeyPattern::Sequential => {
                let slot = self.sequential_next % self.slots;
                self.sequential_next = (slot + 1) % self.slots;
                slot
            }
        }
    }

    fn key_index(&self, slot: u64) -> u64 {
        if self.owns_keys {
            slot * self.clients + self.client
        } else {
            slot
        }
    }

    fn set(&mut self, slot: u64, start: Instant, phase: Phase) -> Request {
        let key_index = self.key_index(slot);
        let (value, check) = match &mut self.verify {
            Some(slots) => {
                let state = &mut slots[slot as usize];
                state.sent += 1;
                let version = state.sent;
                let value = make_value(self.run_id, key_index, version, self.data_size);
                let check = Check::Set {
                    slot: slot as usize,
                    version,
                    alone: state.sets_in_flight == 0,
                };
                state.sets_in_flight += 1;
                (value, check)
            }
            None => (self.fixed_value.clone(), Check::None),
        };
        Request {
            op: OpKind::Set,
            key: make_key(key_index),
            value,
            ttl_ms: self.ttl_ms,
            start,
            phase,
            check,
        }
    }

    fn get(&mut self, slot: u64, start: Instant, phase: Phase) -> Request {
        let check = match &self.verify {
            Some(slots) => {
                let state = slots[slot as usize];
                let lo = match (self.ordered, state.uncertain) {
                    (true, false) => state.sent,
                    // In order, but a SET failed: the newest one answered OK took effect last.
                    (true, true) => state.acked,
                    (false, _) => state.floor,
                };
                Check::Get {
                    slot: slot as usize,
                    lo,
                    hi: state.sent,
                }
            }
            None => Check::None,
        };
        Request {
            op: OpKind::Get,
            key: make_key(self.key_index(slot)),
            value: Bytes::new(),
            ttl_ms: 0,
            start,
            phase,
            check,
        }
    }

    /// Takes the reply to `request` into account; says how it went and, with --verify, whether
    /// a GET read what it should have.
    pub fn complete(&mut self, request: &Request, reply: Option<&Reply>) -> (Outcome, Verdict) {
        let outcome = match (request.op, reply) {
            (_, None) => Outcome::Error("no reply: the connection was lost".to_string()),
            (_, Some(Reply::Error(message))) => Outcome::Error(message.clone()),
            (OpKind::Set, Some(Reply::Stored)) => Outcome::Ok,
            (OpKind::Get, Some(Reply::Value(_))) => Outcome::Ok,
            (OpKind::Get, Some(Reply::NotFound)) => Outcome::Miss,
            (op, Some(other)) => {
                Outcome::Error(format!("unexpected reply to {}: {other:?}", op.name()))
            }
        };
        let verdict = match (request.check, &mut self.verify) {
            (
                Check::Set {
                    slot,
                    version,
                    alone,
                },
                Some(slots),
            ) => {
                let state = &mut slots[slot];
                state.sets_in_flight = state.sets_in_flight.saturating_sub(1);
                if outcome == Outcome::Ok {
                    state.acked = state.acked.max(version);
                    if alone {
                        state.floor = state.floor.max(version);
                    }
                } else {
                    state.uncertain = true;
                }
                Verdict::NotChecked
            }
            (Check::Get { slot, lo, hi }, Some(slots)) => {
                // Concurrent targets: a SET sent while the GET was in flight may show.
                let hi = if self.ordered { hi } else { slots[slot].sent };
                match reply {
                    Some(Reply::Value(value)) => check_value(
                        self.run_id,
                        self.key_index(slot as u64),
                        self.data_size,
                        lo,
                        hi,
                        Some(value),
                    ),
                    Some(Reply::NotFound) => check_value(
                        self.run_id,
                        self.key_index(slot as u64),
                        self.data_size,
                        lo,
                        hi,
                        None,
                    ),
                    _ => Verdict::NotChecked,
                }
            }
            _ => Verdict::NotChecked,
        };
        (outcome, verdict)
    }
}

/// Judges what a GET read (`None`: NOT_FOUND) given the versions it may see, `lo..=hi`.
pub fn check_value(
    run_id: u64,
    key_index: u64,
    data_size: usize,
    lo: u64,
    hi: u64,
    read: Option<&Bytes>,
) -> Verdict {
    let key = || String::from_utf8_lossy(&make_key(key_index)).into_owned();
    let ours = read
        .filter(|value| value.len() >= VALUE_HEADER_BYTES)
        .filter(|value| read_u64(&value[8..16]) == run_id);
    match ours {
        Some(value) => {
            let version = read_u64(&value[..8]);
            if version > hi {
                return Verdict::Fail(
                    FailKind::Ahead,
                    format!(
                        "{}: read version {version}, expected {lo}..={hi}: newer than every \
                         SET it may see (one sent after this GET showed)",
                        key()
                    ),
                );
            }
            if version < lo {
                return Verdict::Fail(
                    FailKind::Stale,
                    format!(
                        "{}: read version {version}, expected {lo}..={hi}: an older value \
                         than a SET that must show",
                        key()
                    ),
                );
            }
            if version == 0 || value[..] != make_value(run_id, key_index, version, data_size)[..] {
                return Verdict::Fail(
                    FailKind::Corrupt,
                    format!(
                        "{}: version {version} has the wrong bytes ({} bytes read)",
                        key(),
                        value.len()
                    ),
                );
            }
            Verdict::Pass
        }
        // Not found, or not a value of this run: only right while no SET of ours must show.
        None if lo == 0 && hi == 0 => Verdict::Unknown,
        None if lo == 0 => Verdict::Pass,
        None => Verdict::Fail(
            FailKind::Stale,
            format!(
                "{}: read {}, expected version {lo}..={hi} of this run",
                key(),
                match read {
                    None => "NOT_FOUND".to_string(),
                    Some(value) => format!("a {}-byte value this run did not write", value.len()),
                }
            ),
        ),
    }
}

pub fn make_key(index: u64) -> Bytes {
    let mut key = BytesMut::with_capacity(KEY_PREFIX.len() + KEY_DIGITS);
    key.put_slice(KEY_PREFIX);
    let mut digits = [b'0'; KEY_DIGITS];
    let mut rest = index;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    key.put_slice(&digits);
    key.freeze()
}

/// The value of version `version` of key `key_index` in run `run_id` (layout in the module doc).
pub fn make_value(run_id: u64, key_index: u64, version: u64, size: usize) -> Bytes {
    let mut value = vec![0u8; size.max(VALUE_HEADER_BYTES)];
    value[..8].copy_from_slice(&version.to_le_bytes());
    value[8..16].copy_from_slice(&run_id.to_le_bytes());
    fill(
        &mut value[VALUE_HEADER_BYTES..],
        mix(mix(run_id, key_index), version),
    );
    value.truncate(size);
    Bytes::from(value)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// Fills `dst` with the splitmix64 stream of `seed`.
fn fill(dst: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in dst.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let word = splitmix(state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Two numbers into one well-spread seed.
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix(a ^ splitmix(b.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Args, Config};
    use clap::Parser;

    fn config(extra: &[&str]) -> Config {
        let mut argv = vec!["kvs-bench", "--target", "kvs://127.0.0.1:1"];
        argv.extend_from_slice(extra);
        Config::from_args(Args::parse_from(argv)).unwrap()
    }

    #[test]
    fn keys_are_fixed_width() {
        assert_eq!(&make_key(42)[..], b"key:000000000042");
    }

    #[test]
    fn values_check_their_version_and_bytes() {
        let v3 = make_value(7, 5, 3, 40);
        assert_eq!(v3.len(), 40);
        assert_eq!(check_value(7, 5, 40, 3, 3, Some(&v3)), Verdict::Pass);
        assert_eq!(check_value(7, 5, 40, 1, 4, Some(&v3)), Verdict::Pass);
        assert!(matches!(
            check_value(7, 5, 40, 4, 4, Some(&v3)),
            Verdict::Fail(..)
        ));
        // The same version of another key is not this key's value.
        assert!(matches!(
            check_value(7, 6, 40, 3, 3, Some(&v3)),
            Verdict::Fail(..)
        ));
        let mut flipped = v3.to_vec();
        flipped[30] ^= 1;
        assert!(matches!(
            check_value(7, 5, 40, 3, 3, Some(&Bytes::from(flipped))),
            Verdict::Fail(..)
        ));
        // Another run's value, or none: fine until one of ours must show.
        let other_run = make_value(8, 5, 3, 40);
        assert_eq!(
            check_value(7, 5, 40, 0, 0, Some(&other_run)),
            Verdict::Unknown
        );
        assert_eq!(check_value(7, 5, 40, 0, 2, None), Verdict::Pass);
        assert!(matches!(
            check_value(7, 5, 40, 1, 2, None),
            Verdict::Fail(..)
        ));
    }

    #[test]
    fn ordered_verify_expects_the_last_set_sent() {
        let config = config(&[
            "--verify",
            "--clients",
            "2",
            "--keyspace",
            "4",
            "--ratio",
            "1:1",
        ]);
        let mut workload = Workload::new(&config, 1, 99, true);
        let now = Instant::now();
        workload.start_run(Timeline::new(now, &config));
        let Next::Send(set) = workload.next(now) else {
            panic!("a SET")
        };
        let Next::Send(get) = workload.next(now) else {
            panic!("a GET")
        };
        assert_eq!(set.op, OpKind::Set);
        assert_eq!(get.op, OpKind::Get);
        // Client 1 of 2 owns keys 1 and 3.
        assert!(set.key.ends_with(b"1") || set.key.ends_with(b"3"));
        if set.key == get.key {
            assert!(matches!(get.check, Check::Get { lo: 1, hi: 1, .. }));
            let (_, verdict) = workload.complete(&get, Some(&Reply::Value(set.value.clone())));
            assert_eq!(verdict, Verdict::Pass);
            let (_, verdict) = workload.complete(&get, Some(&Reply::NotFound));
            assert!(matches!(verdict, Verdict::Fail(..)));
        }
    }

    #[test]
    fn concurrent_sets_may_land_in_either_order() {
        let config = config(&[
            "--verify",
            "--clients",
            "1",
            "--keyspace",
            "1",
            "--ratio",
            "1:0",
        ]);
        let mut workload = Workload::new(&config, 0, 5, false);
        let now = Instant::now();
        workload.start_run(Timeline::new(now, &config));
        let Next::Send(v1) = workload.next(now) else {
            panic!("SET 1")
        };
        let (_, _) = workload.complete(&v1, Some(&Reply::Stored));
        // v2 and v3 in flight together, both answered OK: either may be the last to apply.
        let Next::Send(v2) = workload.next(now) else {
            panic!("SET 2")
        };
        let Next::Send(v3) = workload.next(now) else {
            panic!("SET 3")
        };
        workload.complete(&v3, Some(&Reply::Stored));
        workload.complete(&v2, Some(&Reply::Stored));
        let get = workload.get(0, now, Phase::Measure);
        assert!(
            matches!(get.check, Check::Get { lo: 2, hi: 3, .. }),
            "{:?}",
            get.check
        );
        let (_, verdict) = workload.complete(&get, Some(&Reply::Value(v2.value.clone())));
        assert_eq!(verdict, Verdict::Pass);
        let (_, verdict) = workload.complete(&get, Some(&Reply::Value(v1.value.clone())));
        assert!(matches!(verdict, Verdict::Fail(..)));
    }

    #[test]
    fn requests_are_split_over_clients_and_end() {
        let config = config(&["--requests", "5", "--clients", "2", "--ratio", "1:0"]);
        let now = Instant::now();
        let sent: Vec<usize> = (0..2)
            .map(|client| {
                let mut workload = Workload::new(&config, client, 1, true);
                workload.start_run(Timeline::new(now, &config));
                let mut sent = 0;
                while let Next::Send(request) = workload.next(now) {
                    assert_eq!(request.phase, Phase::Measure);
                    sent += 1;
                }
                sent
            })
            .collect();
        assert_eq!(sent, vec![3, 2]);
    }

    #[test]
    fn the_open_loop_waits_for_each_intended_time() {
        let config = config(&["--rate", "10", "--clients", "1", "--requests", "3"]);
        let mut workload = Workload::new(&config, 0, 1, true);
        let start = Instant::now();
        workload.start_run(Timeline::new(start, &config));
        let Next::Send(first) = workload.next(start) else {
            panic!("due at start")
        };
        assert_eq!(first.start, start);
        let Next::Wait(due) = workload.next(start) else {
            panic!("not due yet")
        };
        assert_eq!(due, start + Duration::from_millis(100));
        // Late: the request keeps its intended time, so its wait counts as latency.
        let late = start + Duration::from_secs(5);
        let Next::Send(second) = workload.next(late) else {
            panic!("due")
        };
        assert_eq!(second.start, due);
        assert!(matches!(workload.next(late), Next::Send(_)));
        assert!(matches!(workload.next(late), Next::Done));
    }

    #[test]
    fn prefill_covers_every_key_once() {
        let config = config(&["--keyspace", "10", "--clients", "3"]);
        let mut seen = Vec::new();
        for client in 0..3 {
            let mut workload = Workload::new(&config, client, 1, true);
            workload.start_prefill();
            while let Next::Send(request) = workload.next(Instant::now()) {
                assert_eq!(request.phase, Phase::Prefill);
                seen.push(request.key);
            }
        }
        seen.sort();
        let expected: Vec<Bytes> = (0..10).map(make_key).collect();
        assert_eq!(seen, expected);
    }
}
