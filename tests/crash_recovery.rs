//! Crash recovery of the real kvsd: `kill -9` during a multi-connection write load with every
//! acknowledged write checked after restart, a torn log tail (garbage appended, bytes cut) that
//! start-up truncates, and corruption before the tail that start-up refuses unless told to
//! repair. The client is `common::raw`, packed from the protocol docs.

mod common;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{frame, read_reply, set_body, Conn, OK, SET};
use common::{field, start_expecting_exit, Kvsd};

/// The segments of a data dir, oldest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension() == Some(OsStr::new("wal")))
        .collect();
    paths.sort();
    paths
}

/// The segment that holds a small log's records: the newest. (A fresh data dir moves from
/// its first segment to a zero-filled one as soon as that is ready, so it may not be the first.)
fn only_segment(data_dir: &Path) -> PathBuf {
    let paths = segments(data_dir);
    assert!(!paths.is_empty(), "a segment expected");
    paths.last().unwrap().clone()
}

/// Where the records end in a segment that may be zero-filled after them (the marked values
/// that end every test record are not zero).
fn data_end(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last + 1)
}

fn truncated_bytes(server: &Kvsd) -> u64 {
    field(&server.ready_line, "truncated_bytes")
        .unwrap_or_else(|| {
            panic!(
                "the ready line names truncated_bytes: {}",
                server.ready_line
            )
        })
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// kill -9 under load
// ---------------------------------------------------------------------------------------------

const WRITERS: usize = 4;
const KEYS_PER_WRITER: u64 = 8;
/// Requests each writer keeps in flight, so a crash lands in the middle of batches.
const WINDOW: usize = 16;
const ACKS_PER_CYCLE: usize = 2000;
const CYCLES: usize = 5;

/// One key's history: values are a counter that only goes up, so any value read back can be
/// placed between what was acknowledged and what was sent.
#[derive(Debug, Default, Clone, Copy)]
struct KeyState {
    /// The newest value known durable: acknowledged, or read back after a restart.
    durable: u64,
    /// The newest value ever sent.
    sent: u64,
}

fn load_key(writer: usize, k: u64) -> Vec<u8> {
    format!("load-w{writer}-k{k}").into_bytes()
}

/// The value for counter `n`: the counter, then padding that depends on it, so a torn or
/// mixed-up value does not parse.
fn load_value(n: u64) -> Vec<u8> {
    let mut value = n.to_le_bytes().to_vec();
    value.extend(std::iter::repeat_n((n % 251) as u8, 40 + (n % 60) as usize));
    value
}

#[track_caller]
fn parse_load_value(value: &[u8]) -> u64 {
    let n = u64::from_le_bytes(value[..8].try_into().expect("a load value has 8 bytes"));
    assert_eq!(value, load_value(n), "a load value came back altered");
    n
}

/// Writes SETs to its own keys with `WINDOW` in flight until the connection dies. Returns the
/// key states and the seqs of every acknowledged write.
fn write_until_killed(
    addr: String,
    writer: usize,
    mut keys: Vec<KeyState>,
    acks: Arc<AtomicUsize>,
) -> (Vec<KeyState>, Vec<u64>) {
    let mut conn = Conn::connect(&addr);
    let mut in_flight: VecDeque<(u64, u64, u64)> = VecDeque::new(); // (id, key, value)
    let mut seqs = Vec::new();
    let mut next_id = 0u64;
    loop {
        while in_flight.len() < WINDOW {
            next_id += 1;
            let k = next_id % KEYS_PER_WRITER;
            let state = &mut keys[k as usize];
            state.sent += 1;
            let bytes = frame(
                SET,
                0,
                next_id,
                &set_body(&load_key(writer, k), &load_value(state.sent)),
            );
            if std::io::Write::write_all(&mut conn.stream, &bytes).is_err() {
                return (keys, seqs);
            }
            in_flight.push_back((next_id, k, state.sent));
        }
        let Ok(reply) = read_reply(&mut conn.stream) else {
            return (keys, seqs);
        };
        let position = in_flight
            .iter()
            .position(|(id, _, _)| *id == reply.id)
            .unwrap_or_else(|| panic!("a reply to no request in flight: {reply:?}"));
        let (_, k, value) = in_flight.remove(position).unwrap();
        assert_eq!(reply.status, OK, "a SET under load: {reply:?}");
        seqs.push(reply.seq());
        let state = &mut keys[k as usize];
        state.durable = state.durable.max(value);
        acks.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn acknowledged_writes_survive_kill9_during_a_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut states: Vec<Vec<KeyState>> =
        vec![vec![KeyState::default(); KEYS_PER_WRITER as usize]; WRITERS];
    let mut acked_seqs: HashSet<u64> = HashSet::new();
    let mut max_acked_seq = 0u64;

    for cycle in 0..CYCLES {
        let server = common::start(dir.path(), &[]);
        let mut conn = Conn::connect(&server.addr);

        // Every write acknowledged before the last crash is there: the newest acknowledged
        // value or a later one that was sent, never an older one.
        for (writer, keys) in states.iter_mut().enumerate() {
            for (k, state) in keys.iter_mut().enumerate() {
                let key = load_key(writer, k as u64);
                let found = conn.value(&key).map_or(0, |v| parse_load_value(&v));
                assert!(
                    state.durable <= found && found <= state.sent,
                    "cycle {cycle}, {}: read {found}, acknowledged up to {}, sent up to {}",
                    String::from_utf8_lossy(&key),
                    state.durable,
                    state.sent
                );
                state.durable = found;
            }
        }

        // seq continues after every acknowledged write.
        let probe = conn.set(b"probe", &(cycle as u64).to_le_bytes());
        assert!(
            probe > max_acked_seq,
            "cycle {cycle}: a new SET got seq {probe}, not above the acknowledged {max_acked_seq}"
        );
        acked_seqs.insert(probe);
        max_acked_seq = probe;
        drop(conn);

        let acks = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = states
            .iter()
            .cloned()
            .enumerate()
            .map(|(writer, keys)| {
                let (addr, acks) = (server.addr.clone(), acks.clone());
                thread::spawn(move || write_until_killed(addr, writer, keys, acks))
            })
            .collect();

        // Kill once the load is well under way; the writers are still writing.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acks.load(Ordering::Relaxed) < ACKS_PER_CYCLE {
            assert!(Instant::now() < deadline, "the write load stalled");
            thread::sleep(Duration::from_millis(1));
        }
        server.kill9();

        let mut cycle_seqs = Vec::new();
        for (writer, handle) in writers.into_iter().enumerate() {
            let (keys, seqs) = handle.join().expect("a writer failed");
            states[writer] = keys;
            cycle_seqs.extend(seqs);
        }
        for seq in &cycle_seqs {
            assert!(
                *seq > probe,
                "cycle {cycle}: seq {seq} not above the probe's {probe}"
            );
            assert!(acked_seqs.insert(*seq), "seq {seq} acknowledged twice");
        }
        max_acked_seq = max_acked_seq.max(cycle_seqs.iter().copied().max().unwrap_or(0));
    }

    // The last crash's writes, checked once more.
    let server = common::start(dir.path(), &[]);
    let mut conn = Conn::connect(&server.addr);
    for (writer, keys) in states.iter().enumerate() {
        for (k, state) in keys.iter().enumerate() {
            let key = load_key(writer, k as u64);
            let found = conn.value(&key).map_or(0, |v| parse_load_value(&v));
            assert!(
                state.durable <= found && found <= state.sent,
                "after the last crash, {}: read {found}, acknowledged up to {}, sent up to {}",
                String::from_utf8_lossy(&key),
                state.durable,
                state.sent
            );
        }
    }
    assert!(conn.set(b"probe", b"end") > max_acked_seq);
}

#[test]
fn acknowledged_deletes_and_overwrites_survive_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let mut conn = Conn::connect(&server.addr);
    let mut model = BTreeMap::new();
    for i in 0..60u32 {
        let key = format!("d{i}").into_bytes();
        conn.set(&key, b"first");
        model.insert(key, b"first".to_vec());
    }
    for i in (0..60u32).step_by(3) {
        let key = format!("d{i}").into_bytes();
        conn.del(&key).seq();
        model.remove(&key);
    }
    for i in (1..60u32).step_by(3) {
        let key = format!("d{i}").into_bytes();
        conn.set(&key, b"second");
        model.insert(key, b"second".to_vec());
    }
    let last = conn.set(b"d0", b"back");
    model.insert(b"d0".to_vec(), b"back".to_vec());
    server.kill9();

    let server = common::start(dir.path(), &[]);
    let mut conn = Conn::connect(&server.addr);
    for i in 0..60u32 {
        let key = format!("d{i}").into_bytes();
        assert_eq!(conn.value(&key).as_ref(), model.get(&key), "d{i}");
    }
    let stats = conn.stats();
    assert_eq!(stats["keys"], model.len().to_string());
    assert_eq!(stats["last_seq"], last.to_string());
}

// ---------------------------------------------------------------------------------------------
// Damaged logs
// ---------------------------------------------------------------------------------------------

/// A value that can be found in the segment file by its bytes.
fn marked_value(i: usize) -> Vec<u8> {
    format!("<<record-{i:04}-{}>>", "m".repeat(40)).into_bytes()
}

/// Writes `count` SETs (key `r{i}`, `marked_value(i)`), stops kvsd cleanly, and returns the
/// seq of the last one.
fn write_records_and_stop(data_dir: &Path, count: usize) -> u64 {
    let server = common::start(data_dir, &[]);
    let mut conn = Conn::connect(&server.addr);
    let mut last = 0;
    for i in 0..count {
        last = conn.set(format!("r{i}").as_bytes(), &marked_value(i));
    }
    drop(conn);
    assert!(server.stop().success());
    last
}

/// Where `needle` starts in `haystack`; it must occur once.
fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(hits.len(), 1, "{:?}", String::from_utf8_lossy(needle));
    hits[0]
}

#[track_caller]
fn assert_records(server: &Kvsd, present: std::ops::Range<usize>, count: usize) {
    let mut conn = Conn::connect(&server.addr);
    for i in 0..count {
        let found = conn.value(format!("r{i}").as_bytes());
        if present.contains(&i) {
            assert_eq!(found, Some(marked_value(i)), "r{i} must be intact");
        } else {
            assert_eq!(found, None, "r{i} was cut from the log");
        }
    }
}

#[test]
fn garbage_appended_to_the_last_segment_is_truncated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let last = write_records_and_stop(dir.path(), 30);
    let segment = only_segment(dir.path());

    // Garbage right after the last record, as a write torn by a crash leaves it.
    let garbage: Vec<u8> = (0..37u8).map(|b| b.wrapping_mul(101) ^ 0x5a).collect();
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = data_end(&bytes);
    bytes.truncate(end);
    bytes.extend_from_slice(&garbage);
    let file_len = std::fs::metadata(&segment).unwrap().len() as usize;
    bytes.resize(bytes.len().max(file_len), 0);
    std::fs::write(&segment, &bytes).unwrap();

    let server = common::start(dir.path(), &[]);
    assert_eq!(
        truncated_bytes(&server),
        garbage.len() as u64,
        "the ready line reports the garbage cut: {}",
        server.ready_line
    );
    assert_records(&server, 0..30, 30);
    assert_eq!(Conn::connect(&server.addr).set(b"next", b"x"), last + 1);
    assert!(server.stop().success());

    // The cut was made on disk: the next start finds nothing to truncate.
    let server = common::start(dir.path(), &[]);
    assert_eq!(truncated_bytes(&server), 0, "{}", server.ready_line);
    assert_eq!(
        Conn::connect(&server.addr).value(b"next"),
        Some(b"x".to_vec())
    );
    assert_records(&server, 0..30, 30);
}

#[test]
fn bytes_cut_off_the_last_record_are_truncated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write_records_and_stop(dir.path(), 30);
    let segment = only_segment(dir.path());
    let bytes = std::fs::read(&segment).unwrap();
    // Cut the last record inside its value, as a write torn by a crash would.
    let last_value_at = find_once(&bytes, &marked_value(29));
    let cut_at = last_value_at + 5;
    let mut torn = bytes.clone();
    let end = data_end(&bytes);
    torn[cut_at..end].fill(0);
    std::fs::write(&segment, &torn).unwrap();

    let server = common::start(dir.path(), &[]);
    let truncated = truncated_bytes(&server);
    assert!(truncated > 0, "{}", server.ready_line);
    assert!(
        truncated < cut_at as u64 - find_once(&bytes, &marked_value(28)) as u64,
        "only the torn record is cut ({truncated} bytes)"
    );
    assert_records(&server, 0..29, 30);
    let mut conn = Conn::connect(&server.addr);
    assert!(conn.set(b"next", b"x") >= 30);
    assert_eq!(conn.stats()["keys"], "30");
}

#[test]
fn corruption_before_the_tail_refuses_to_start_unless_repair_truncate() {
    let dir = tempfile::tempdir().unwrap();
    write_records_and_stop(dir.path(), 20);
    // The segment holding the third record (a fresh dir may have moved to a second segment
    // part way: then the damage is in a sealed segment, corruption all the same).
    let segment = segments(dir.path())
        .into_iter()
        .find(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes
                .windows(marked_value(2).len())
                .any(|w| w == marked_value(2))
        })
        .expect("a segment holds record 2");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Flip one bit in the value of the third record; seventeen good records follow it.
    let flipped_at = find_once(&bytes, &marked_value(2)) + 10;
    let previous_value_end = find_once(&bytes, &marked_value(1)) + marked_value(1).len();
    bytes[flipped_at] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();

    let data_dir = dir.path().as_os_str();
    let args = [
        OsStr::new("--port"),
        OsStr::new("0"),
        OsStr::new("--data-dir"),
        data_dir,
    ];
    let (status, stderr) = start_expecting_exit(&args);
    assert!(
        !status.success(),
        "kvsd must refuse a corrupt log: {stderr}"
    );
    let name = segment.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        stderr.contains(&name),
        "the message names the file:\n{stderr}"
    );
    // After the file name, it names the offset of the bad record: after the end of record 1's
    // value, no later than the flipped byte.
    let offsets: Vec<usize> = stderr
        .lines()
        .filter_map(|line| line.split_once(name.as_str()).map(|(_, after)| after))
        .flat_map(|after| after.split(|c: char| !c.is_ascii_digit()))
        .filter_map(|word| word.parse().ok())
        .filter(|n| (previous_value_end..=flipped_at).contains(n))
        .collect();
    assert!(
        !offsets.is_empty(),
        "the message names an offset in {previous_value_end}..={flipped_at}:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "a refused start changes nothing on disk"
    );

    // Told to repair, it cuts the log at the bad record and starts.
    let server = common::start(dir.path(), &["--repair-truncate"]);
    assert!(truncated_bytes(&server) > 0, "{}", server.ready_line);
    assert_records(&server, 0..2, 20);
    let next = Conn::connect(&server.addr).set(b"next", b"x");
    assert!(next >= 3, "seq {next} after keeping two records");
    assert!(server.stop().success());

    // The repair is on disk: a plain start now works.
    let server = common::start(dir.path(), &[]);
    assert_eq!(truncated_bytes(&server), 0, "{}", server.ready_line);
    assert_records(&server, 0..2, 20);
    assert_eq!(
        Conn::connect(&server.addr).value(b"next"),
        Some(b"x".to_vec())
    );
}

// ---------------------------------------------------------------------------------------------
// Relaxed fsync policies: many batches, then a clean stop and a kill -9
// ---------------------------------------------------------------------------------------------

/// Under `--fsync never` and `interval`, batches are handed back for reuse without a flush
/// between them: every write must reach the log exactly once, in seq order (a batch reused
/// without being emptied once wrote its records a second time, which recovery then refused).
#[test]
fn relaxed_fsync_policies_log_every_batch_once_in_order() {
    for policy in ["never", "interval=5"] {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let server = common::start(&data_dir, &["--fsync", policy]);
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let addr = server.addr.clone();
                thread::spawn(move || {
                    let mut conn = Conn::connect(&addr);
                    for round in 0..50u64 {
                        // 16 in flight per connection, so batches hold several writes each.
                        let mut burst = Vec::new();
                        for i in 0..16u64 {
                            let key = format!("w{writer}-{}", round * 16 + i);
                            burst.extend(frame(SET, 0, i, &set_body(key.as_bytes(), b"v")));
                        }
                        conn.send(&burst);
                        for _ in 0..16 {
                            assert_eq!(conn.reply().status, OK);
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let stats = Conn::connect(&server.addr).stats();
        let batches: u64 = stats["batches_total"].parse().unwrap();
        assert!(batches > 1, "{policy}: one batch proves nothing: {stats:?}");
        assert_eq!(server.stop().code(), Some(0), "{policy}: clean stop");
        let server = common::start(&data_dir, &["--fsync", policy]);
        assert_eq!(
            server.last_seq,
            4 * 50 * 16,
            "{policy}: one record per write"
        );
        let mut conn = Conn::connect(&server.addr);
        for key in ["w0-0", "w3-799", "w2-400"] {
            assert_eq!(
                conn.value(key.as_bytes()).as_deref(),
                Some(&b"v"[..]),
                "{policy}"
            );
        }
        // After kill -9 the log still reads back in order (what reached it is there once).
        server.kill9();
        let server = common::start(&data_dir, &["--fsync", policy]);
        assert_eq!(server.last_seq, 4 * 50 * 16, "{policy}");
    }
}
