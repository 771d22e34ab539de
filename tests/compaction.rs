//! Compaction of the real kvsd's log: every live key survives (values, deletes, KEYS), the log
//! shrinks, restarts (clean and kill -9) recover the compacted log, and a crash at each step of
//! a compaction (the `KVS_CRASH_POINT` fault hook aborts the process there, as kill -9 would)
//! loses no acknowledged write.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::raw::{frame, read_reply, set_body, Conn, DEL, NOT_FOUND, OK, SET};
use common::Kvsd;

const COMPACT: u8 = 0x08;
/// Small segments, so a few thousand writes make many of them.
const SEGMENT: &str = "65536";

/// What the store must hold: key → value (None: deleted).
type Model = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

fn start(dir: &Path, extra: &[&str]) -> Kvsd {
    let mut args = vec!["--segment-bytes", SEGMENT, "--compact-garbage-ratio", "1.0"];
    args.extend_from_slice(extra);
    common::start(dir, &args)
}

/// Pipelines SETs and DELs, checks every reply, and records them in `model`.
fn write(conn: &mut Conn, model: &mut Model, ops: &[(Vec<u8>, Option<Vec<u8>>)]) {
    // In slices, so neither side's socket buffers fill while the other waits.
    for slice in ops.chunks(500) {
        write_slice(conn, model, slice);
    }
}

fn write_slice(conn: &mut Conn, model: &mut Model, ops: &[(Vec<u8>, Option<Vec<u8>>)]) {
    let mut out = Vec::new();
    for (n, (key, value)) in ops.iter().enumerate() {
        match value {
            Some(value) => out.extend(frame(SET, 0, n as u64 + 1, &set_body(key, value))),
            None => out.extend(frame(DEL, 0, n as u64 + 1, key)),
        }
    }
    conn.send(&out);
    for (n, (key, value)) in ops.iter().enumerate() {
        let reply = read_reply(&mut conn.stream).expect("a reply");
        assert_eq!(reply.id, n as u64 + 1);
        let existed = model.get(key).is_some_and(Option::is_some);
        match value {
            Some(_) => assert_eq!(reply.status, OK, "{reply:?}"),
            None if existed => assert_eq!(reply.status, OK, "{reply:?}"),
            None => assert_eq!(reply.status, NOT_FOUND, "{reply:?}"),
        }
        model.insert(key.clone(), value.clone());
    }
}

/// Rounds of overwrites of `keys` keys, deleting every seventh key in the last round.
fn churn(conn: &mut Conn, model: &mut Model, keys: usize, rounds: usize, tag: &str) {
    for round in 0..rounds {
        let ops: Vec<_> = (0..keys)
            .map(|k| {
                let key = format!("key{k:05}").into_bytes();
                let value = (round + 1 == rounds && k % 7 == 3)
                    .then_some(())
                    .map_or_else(
                        || Some(format!("{tag}-{round}-{k}-{}", "x".repeat(150)).into_bytes()),
                        |()| None,
                    );
                (key, value)
            })
            .collect();
        write(conn, model, &ops);
    }
}

/// `gone` set, churn (keys, rounds), `gone` deleted, churn again: the deleted key's tombstone
/// must never let its old value come back.
fn history_with_a_deleted_key(
    conn: &mut Conn,
    model: &mut Model,
    (keys, rounds): (usize, usize),
    (keys_after, rounds_after): (usize, usize),
) {
    write(conn, model, &[(b"gone".to_vec(), Some(b"old".to_vec()))]);
    churn(conn, model, keys, rounds, "a");
    write(conn, model, &[(b"gone".to_vec(), None)]);
    churn(conn, model, keys_after, rounds_after, "b");
}

fn compact(conn: &mut Conn) -> BTreeMap<String, String> {
    let id = conn.id();
    let reply = conn.call(COMPACT, 0, id, b"");
    assert_eq!(reply.status, OK, "{reply:?}");
    common::raw::parse_stats(&reply.body)
}

fn check(addr: &str, model: &Model) {
    let mut conn = Conn::connect(addr);
    for (key, value) in model {
        assert_eq!(
            conn.value(key).as_ref(),
            value.as_ref(),
            "key {}",
            String::from_utf8_lossy(key)
        );
    }
    let live: Vec<Vec<u8>> = model
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(conn.keys(b"", 1 << 20).0, live, "KEYS lists the live keys");
}

fn stat(conn: &mut Conn, name: &str) -> u64 {
    conn.stats()[name].parse().unwrap()
}

#[test]
fn compaction_keeps_every_live_key_drops_garbage_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &[]);
    let mut conn = Conn::connect(&server.addr);
    let mut model = Model::new();
    history_with_a_deleted_key(&mut conn, &mut model, (300, 8), (300, 4));

    let before = stat(&mut conn, "log_bytes");
    let summary = compact(&mut conn);
    let after = stat(&mut conn, "log_bytes");
    assert!(
        summary["compacted"].parse::<u64>().unwrap() > 0,
        "{summary:?}"
    );
    assert!(
        after * 2 < before,
        "the log shrank: {before} -> {after} bytes"
    );
    assert!(stat(&mut conn, "horizon_seq") > 0);
    check(&server.addr, &model);

    // Writes after compaction, then a second compaction over compacted segments.
    churn(&mut conn, &mut model, 300, 3, "c");
    compact(&mut conn);
    check(&server.addr, &model);

    assert!(server.stop().success());
    let server = start(&data, &[]);
    check(&server.addr, &model);
    let mut conn = Conn::connect(&server.addr);
    churn(&mut conn, &mut model, 300, 2, "d");
    compact(&mut conn);
    server.kill9();
    let server = start(&data, &[]);
    check(&server.addr, &model);
}

#[test]
fn compaction_runs_by_itself_past_the_garbage_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start(
        &data,
        &["--segment-bytes", SEGMENT, "--compact-garbage-ratio", "0.5"],
    );
    let mut conn = Conn::connect(&server.addr);
    let mut model = Model::new();
    churn(&mut conn, &mut model, 200, 20, "auto");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stat(&mut conn, "compaction_runs_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction ran by itself"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    check(&server.addr, &model);
    server.kill9();
    let server = common::start(&data, &["--segment-bytes", SEGMENT]);
    check(&server.addr, &model);
}

/// Each point at which the compactor can die: after the output is synced under its temp name,
/// after it is renamed over the first segment, after the covered segments are deleted, after
/// the directory fsync, halfway through moving the index, and after it.
const STEPS: [&str; 6] = [
    "synced",
    "renamed",
    "covered-deleted",
    "installed",
    "switching",
    "switched",
];

#[test]
fn a_crash_at_every_step_of_compaction_loses_no_acknowledged_write() {
    for step in STEPS {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = start(&data, &[]);
        let mut conn = Conn::connect(&server.addr);
        let mut model = Model::new();
        // Live records spread over sealed segments full of garbage: keys 100.. stay at round 2
        // of the first churn while keys ..100 are overwritten on.
        history_with_a_deleted_key(&mut conn, &mut model, (600, 3), (100, 12));
        server.kill9();

        // The same data, and a kvsd that dies at `step` of the compaction COMPACT starts.
        let point = format!("compaction:{step}");
        let mut dying = common::start(
            &data,
            &[
                "--segment-bytes",
                SEGMENT,
                "--compact-garbage-ratio",
                "1.0",
                "--crash-point",
                &point,
            ],
        );
        let mut conn = Conn::connect(&dying.addr);
        let id = conn.id();
        conn.send(&frame(COMPACT, 0, id, b""));
        assert!(
            read_reply(&mut conn.stream).is_err(),
            "kvsd must die at {point} instead of answering"
        );
        let status = dying.wait();
        assert!(!status.success(), "{point}: {status}");

        let server = start(&data, &[]);
        check(&server.addr, &model);
        // And the log is in a state a compaction can finish from.
        let mut conn = Conn::connect(&server.addr);
        compact(&mut conn);
        check(&server.addr, &model);
        server.kill9();
        let server = start(&data, &[]);
        check(&server.addr, &model);
    }
}

/// A key's last acknowledged value, and values sent after it whose reply never came.
type Acked = (Option<Vec<u8>>, Vec<Vec<u8>>);

/// kill -9 at random moments while compactions run by themselves (small segments, a low
/// ratio) under a pipelined write load: after each restart every key holds its last
/// acknowledged value or a later one that was in flight.
#[test]
fn kill_9_at_random_moments_of_compaction_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("KVS_COMPACTION_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--segment-bytes", SEGMENT, "--compact-garbage-ratio", "0.3"];
    let mut acked: BTreeMap<Vec<u8>, Acked> = BTreeMap::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut runs_seen = 0;
    for cycle in 0..cycles {
        let server = common::start(&data, &args);
        let mut conn = Conn::connect(&server.addr);
        // Check the previous cycle's writes survived.
        for (key, (value, in_flight)) in &acked {
            let now = conn.value(key);
            assert!(
                now == *value || in_flight.iter().any(|v| Some(v) == now.as_ref()),
                "cycle {cycle}: key {} holds {:?}, acked {:?}",
                String::from_utf8_lossy(key),
                now.map(|v| String::from_utf8_lossy(&v).into_owned()),
                value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            );
        }
        // What each key holds now is the acknowledged state from here on.
        for (key, entry) in acked.iter_mut() {
            *entry = (conn.value(key), Vec::new());
        }
        // A writer in this thread; a killer thread ends the process at a random moment.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_millis(700 + seed % 1300);
        let pid = server.pid;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            common::signal(pid, "KILL");
        });
        let mut n = 0u64;
        'load: loop {
            let window: Vec<(Vec<u8>, Vec<u8>)> = (0..64)
                .map(|i| {
                    let key = format!("key{:03}", (n + i * 7) % 250).into_bytes();
                    let value = format!("c{cycle}-n{}-{}", n + i, "p".repeat(120)).into_bytes();
                    (key, value)
                })
                .collect();
            n += 64;
            let mut out = Vec::new();
            for (i, (key, value)) in window.iter().enumerate() {
                out.extend(frame(SET, 0, i as u64 + 1, &set_body(key, value)));
                acked.entry(key.clone()).or_default().1.push(value.clone());
            }
            if std::io::Write::write_all(&mut conn.stream, &out).is_err() {
                break 'load;
            }
            for (key, value) in &window {
                match read_reply(&mut conn.stream) {
                    Ok(reply) if reply.status == OK => {
                        let entry = acked.get_mut(key).unwrap();
                        let at = entry.1.iter().position(|v| v == value).unwrap();
                        entry.0 = Some(value.clone());
                        entry.1.drain(..=at);
                    }
                    Ok(reply) => panic!("a SET failed: {reply:?}"),
                    Err(_) => break 'load,
                }
            }
        }
        killer.join().unwrap();
        drop(server);
        runs_seen += 1;
    }
    let server = common::start(&data, &args);
    let mut conn = Conn::connect(&server.addr);
    for (key, (value, in_flight)) in &acked {
        let now = conn.value(key);
        assert!(now == *value || in_flight.iter().any(|v| Some(v) == now.as_ref()));
    }
    assert_eq!(runs_seen, cycles);
    // And the log the crashes left compacts cleanly, keeping every value.
    compact(&mut conn);
    for (key, (value, in_flight)) in &acked {
        let now = conn.value(key);
        assert!(now == *value || in_flight.iter().any(|v| Some(v) == now.as_ref()));
    }
}
