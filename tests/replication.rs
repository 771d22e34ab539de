//! Replication scenarios with real kvsd processes on loopback, each in its own temp dirs: the
//! seed walkthrough, start order, NOT_LEADER and kvsctl's redirect, kill -9 of a follower under
//! load, synchronous acks (`--min-acks`) across a leader crash, the link through a fault proxy
//! (cuts, delay, byte-by-byte delivery), refused foreign logs, read-your-writes with `min_seq`,
//! and a leader restart that heals by itself.
//!
//! Nothing here asserts on time: every wait polls a condition for at most `CONVERGE`, and a
//! sleep only paces a load or a fault.

mod common;

use std::collections::BTreeMap;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proxy::{Mode, Proxy};
use common::raw::{self, Conn};
use common::{Kvsd, KVSCTL};
use kvs::client::{stats_lines, Client, ClientError};
use kvs::protocol::{Request, Status};

/// The longest any wait for convergence, a reconnection or a log line may take.
const CONVERGE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A port that was free a moment ago: for a node that must be named before it starts.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// As `Kvsd::start`, on a given port instead of `--port 0`.
fn start_on(port: u16, data_dir: &Path, extra: &[&str]) -> Kvsd {
    common::try_start_on(port, data_dir, extra)
        .unwrap_or_else(|log| panic!("kvsd on port {port} did not start:\n{log}"))
}

fn leader(data_dir: &Path, extra: &[&str]) -> Kvsd {
    let mut args = vec!["--node-id", "leader"];
    args.extend_from_slice(extra);
    common::start(data_dir, &args)
}

fn follower(data_dir: &Path, node_id: &str, leader_addr: &str, extra: &[&str]) -> Kvsd {
    let mut args = vec![
        "--node-id",
        node_id,
        "--async-replication",
        "--leader-addr",
        leader_addr,
    ];
    args.extend_from_slice(extra);
    common::start(data_dir, &args)
}

fn connect(addr: &str) -> Client {
    Client::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// STATS as a map (a repeated name keeps its last value; see `stats_text` for the lines).
fn stats(addr: &str) -> BTreeMap<String, String> {
    let text = stats_text(addr);
    stats_lines(&text)
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn stats_text(addr: &str) -> String {
    connect(addr)
        .stats()
        .unwrap_or_else(|e| panic!("STATS of {addr}: {e}"))
}

#[track_caller]
fn figure(stats: &BTreeMap<String, String>, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("STATS has no {name}: {stats:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("STATS {name} is not a number: {stats:?}"))
}

/// Polls `check` until it says Ok, for at most `CONVERGE`; panics with its last word.
#[track_caller]
fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {CONVERGE:?}; last seen: {last}")
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Waits until the follower's link is connected.
#[track_caller]
fn wait_connected(follower: &Kvsd) {
    wait_until("the follower connects to its leader", || {
        let stats = stats(&follower.addr);
        match stats.get("link_state").map(String::as_str) {
            Some("connected") => Ok(()),
            other => Err(format!("link_state {other:?}")),
        }
    });
}

/// Waits until every follower has applied everything the (idle) leader holds; returns that seq.
#[track_caller]
fn wait_caught_up(leader: &Kvsd, followers: &[&Kvsd]) -> u64 {
    let mut seq = 0;
    wait_until("the followers catch up with the leader", || {
        let ours = stats(&leader.addr);
        let (last, durable) = (figure(&ours, "last_seq"), figure(&ours, "durable_seq"));
        if last != durable {
            return Err(format!("leader last_seq {last}, durable_seq {durable}"));
        }
        for f in followers {
            let theirs = stats(&f.addr);
            let applied = figure(&theirs, "applied_seq");
            if applied != durable {
                return Err(format!(
                    "leader durable_seq {durable}, {} applied_seq {applied}, link_state {:?}",
                    theirs["node_id"],
                    theirs.get("link_state")
                ));
            }
        }
        seq = durable;
        Ok(())
    });
    seq
}

type Digest = Vec<(Bytes, Option<Bytes>)>;

/// The whole state as sorted key/value pairs, from KEYS and GET.
fn digest(addr: &str) -> Digest {
    let mut client = connect(addr);
    let keys = client.keys(b"").expect("KEYS");
    keys.into_iter()
        .map(|key| {
            let value = client.get(&key).expect("GET");
            (key, value)
        })
        .collect()
}

#[track_caller]
fn assert_same_state(leader: &Kvsd, follower: &Kvsd) {
    let (ours, theirs) = (digest(&leader.addr), digest(&follower.addr));
    if ours != theirs {
        let first = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "the follower's state differs from the leader's: {} vs {} keys, first difference at \
             #{first}: leader {:?}, follower {:?}",
            ours.len(),
            theirs.len(),
            ours.get(first),
            theirs.get(first)
        );
    }
}

#[track_caller]
fn set(addr: &str, key: &str, value: &str) -> u64 {
    connect(addr)
        .set(key.as_bytes(), value.as_bytes())
        .unwrap_or_else(|e| panic!("SET {key} on {addr}: {e}"))
}

#[track_caller]
fn get(addr: &str, key: &str) -> Option<String> {
    connect(addr)
        .get(key.as_bytes())
        .unwrap_or_else(|e| panic!("GET {key} on {addr}: {e}"))
        .map(|value| String::from_utf8(value.to_vec()).unwrap())
}

/// Reads the server's log until a line contains every one of `needles`; returns that line.
#[track_caller]
fn wait_for_log(server: &Kvsd, needles: &[&str]) -> String {
    let deadline = Instant::now() + CONVERGE;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match server.log.recv_timeout(left) {
            Ok(line) if needles.iter().all(|needle| line.contains(needle)) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!(
        "no log line with {needles:?} within {CONVERGE:?}; seen:\n{}",
        seen.join("\n")
    );
}

/// Pipelined writes to `addr` until `stop` (and at least `min_ops`): SETs over a few hundred
/// keys with varied values, and a DEL every 7th op. Returns the number of writes acknowledged.
/// `pace` sleeps after each window.
fn write_load(
    addr: &str,
    prefix: &str,
    min_ops: u64,
    stop: &AtomicBool,
    pace: Duration,
    acked: &AtomicU64,
) -> u64 {
    const WINDOW: u64 = 16;
    let mut client = connect(addr);
    let mut n = 0u64;
    while n < min_ops || !stop.load(Ordering::SeqCst) {
        for _ in 0..WINDOW {
            let key = Bytes::from(format!("{prefix}{:03}", (n * 37) % 300));
            let request = if n % 7 == 6 {
                Request::Del { key }
            } else {
                let mut value = format!("v{n}-").into_bytes();
                value.resize(8 + (n as usize * 13) % 300, b'a' + (n % 26) as u8);
                Request::Set {
                    key,
                    value: value.into(),
                }
            };
            client.send(&request).expect("send a write");
            n += 1;
        }
        for _ in 0..WINDOW {
            let response = client.recv().expect("a write's reply");
            assert!(
                matches!(response.status, Status::Ok | Status::NotFound),
                "a write to the leader failed: {:?} {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
            acked.fetch_add(1, Ordering::SeqCst);
        }
        if !pace.is_zero() {
            thread::sleep(pace);
        }
    }
    n
}

fn kvsctl(addr: &str, args: &[&str]) -> Output {
    Command::new(KVSCTL)
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("KVS_ADDR")
        .stdin(Stdio::null())
        .output()
        .expect("run kvsctl")
}

// ---------------------------------------------------------------------------------------------
// 1. The seed walkthrough
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_walkthrough_late_follower_and_restart_receive_only_what_they_miss() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &[]);
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    for key in ["a", "b", "c"] {
        set(&l.addr, key, &key.to_uppercase());
    }

    let f2 = follower(dirs[2].path(), "f2", &l.addr, &[]);
    wait_caught_up(&l, &[&f1, &f2]);
    for key in ["a", "b", "c"] {
        assert_eq!(get(&f2.addr, key).as_deref(), Some(&*key.to_uppercase()));
    }

    for key in ["d", "e"] {
        set(&l.addr, key, &key.to_uppercase());
    }
    wait_caught_up(&l, &[&f1, &f2]);
    let status = f2.stop();
    assert!(status.success(), "f2 exits 0 on SIGTERM: {status}");
    wait_until("the leader drops f2", || {
        let ours = stats(&l.addr);
        match ours.get("followers").map(String::as_str) {
            Some("1") => Ok(()),
            other => Err(format!("followers {other:?}")),
        }
    });

    for key in ["f", "g"] {
        set(&l.addr, key, &key.to_uppercase());
    }
    let f2 = follower(dirs[2].path(), "f2", &l.addr, &[]);
    let seq = wait_caught_up(&l, &[&f1, &f2]);
    assert_eq!(seq, 7);

    let theirs = stats(&f2.addr);
    assert_eq!(
        figure(&theirs, "records_received"),
        2,
        "f2 after its restart receives only f and g: {theirs:?}"
    );
    // The leader's side: one entry for f2 (the old link is gone), which sent 2 records.
    wait_until("the leader sees f2's ack of seq 7", || {
        let text = stats_text(&l.addr);
        let acked = stats_lines(&text)
            .into_iter()
            .filter(|(name, _)| *name == "follower.f2.acked_seq")
            .map(|(_, value)| value.to_string())
            .collect::<Vec<_>>();
        if acked == ["7"] {
            Ok(())
        } else {
            Err(text)
        }
    });
    let ours = stats(&l.addr);
    assert_eq!(figure(&ours, "followers"), 2, "{ours:?}");
    assert_eq!(figure(&ours, "follower.f2.records_sent"), 2, "{ours:?}");
    assert_eq!(figure(&ours, "follower.f2.sent_seq"), 7, "{ours:?}");
    assert_eq!(figure(&ours, "follower.f2.lag_records"), 0, "{ours:?}");
    assert_eq!(figure(&ours, "follower.f1.acked_seq"), 7, "{ours:?}");

    for f in [&f1, &f2] {
        for key in ["a", "b", "c", "d", "e", "f", "g"] {
            assert_eq!(
                get(&f.addr, key).as_deref(),
                Some(&*key.to_uppercase()),
                "{key} on {}",
                f.addr
            );
        }
        assert_same_state(&l, f);
        let theirs = stats(&f.addr);
        assert_eq!(theirs["role"], "follower");
        assert_eq!(
            theirs["log_id"], ours["log_id"],
            "followers hold the leader's log"
        );
        assert_eq!(figure(&theirs, "lag_records"), 0, "{theirs:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Start order
// ---------------------------------------------------------------------------------------------

#[test]
fn followers_started_before_the_leader_converge() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port();
    let leader_addr = format!("127.0.0.1:{port}");
    let f1 = follower(dirs[1].path(), "f1", &leader_addr, &[]);
    let f2 = follower(dirs[2].path(), "f2", &leader_addr, &[]);
    for f in [&f1, &f2] {
        let theirs = stats(&f.addr);
        assert_ne!(
            theirs["link_state"], "connected",
            "no leader yet: {theirs:?}"
        );
        assert_eq!(get(&f.addr, "k000"), None, "an empty follower serves reads");
    }

    let l = start_on(port, dirs[0].path(), &["--node-id", "leader"]);
    let (stop, acked) = (AtomicBool::new(true), AtomicU64::new(0));
    write_load(&l.addr, "k", 400, &stop, Duration::ZERO, &acked);
    wait_caught_up(&l, &[&f1, &f2]);
    let ours = stats(&l.addr);
    assert_eq!(figure(&ours, "followers"), 2, "{ours:?}");
    for f in [&f1, &f2] {
        assert_same_state(&l, f);
        assert_eq!(stats(&f.addr)["log_id"], ours["log_id"]);
    }
    assert!(!digest(&l.addr).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 3. NOT_LEADER and kvsctl's redirect
// ---------------------------------------------------------------------------------------------

#[test]
fn writes_to_a_follower_get_not_leader_and_kvsctl_follows_it() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &[]);
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);

    let mut conn = Conn::connect(&f1.addr);
    let id = conn.id();
    let reply = conn.call(raw::SET, 0, id, &raw::set_body(b"k", b"v"));
    assert_eq!(reply.status, raw::NOT_LEADER, "{reply:?}");
    assert_eq!(reply.body, l.addr.as_bytes(), "NOT_LEADER names the leader");
    let id = conn.id();
    let reply = conn.call(raw::DEL, 0, id, b"k");
    assert_eq!(reply.status, raw::NOT_LEADER, "{reply:?}");
    assert_eq!(reply.body, l.addr.as_bytes());
    // The connection stays usable for reads.
    assert_eq!(conn.value(b"k"), None);
    assert_eq!(get(&l.addr, "k"), None, "a refused write does not land");

    let output = kvsctl(&f1.addr, &["set", "k", "through-the-follower"]);
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("redirected") && err.contains(&l.addr),
        "kvsctl says it was redirected to the leader: {err}"
    );
    assert_eq!(get(&l.addr, "k").as_deref(), Some("through-the-follower"));
    let seq: u64 = out
        .trim()
        .strip_prefix("OK (seq ")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("kvsctl set prints OK (seq N): {out}"));
    let value = connect(&f1.addr)
        .get_min_seq(b"k", seq)
        .expect("GET min_seq");
    assert_eq!(value.as_deref(), Some(&b"through-the-follower"[..]));

    let output = kvsctl(&f1.addr, &["del", "k"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(get(&l.addr, "k"), None);
}

// ---------------------------------------------------------------------------------------------
// 4. kill -9 of a follower under load
// ---------------------------------------------------------------------------------------------

#[test]
fn follower_killed_during_a_write_load_catches_up_to_the_same_state() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &[]);
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (addr, stop, acked) = (l.addr.clone(), stop.clone(), acked.clone());
        thread::spawn(move || write_load(&addr, "load", 0, &stop, Duration::ZERO, &acked))
    };

    wait_until("f1 applies part of the load", || {
        let applied = figure(&stats(&f1.addr), "applied_seq");
        (applied >= 300)
            .then_some(())
            .ok_or(format!("applied_seq {applied}"))
    });
    f1.kill9();
    let at_kill = acked.load(Ordering::SeqCst);
    wait_until("the load goes on without f1", || {
        let now = acked.load(Ordering::SeqCst);
        (now >= at_kill + 500)
            .then_some(())
            .ok_or(format!("{now} acked"))
    });
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    let restarted_at = figure(&stats(&f1.addr), "applied_seq");
    wait_until("f1 applies live writes after its restart", || {
        let applied = figure(&stats(&f1.addr), "applied_seq");
        (applied > restarted_at + 300).then_some(()).ok_or(format!(
            "applied_seq {applied} (restarted at {restarted_at})"
        ))
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("the writer");

    wait_caught_up(&l, &[&f1]);
    assert_same_state(&l, &f1);
}

// ---------------------------------------------------------------------------------------------
// 5. Synchronous replication
// ---------------------------------------------------------------------------------------------

#[test]
fn with_min_acks_every_acknowledged_write_survives_a_leader_crash_on_the_follower() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(
        dirs[0].path(),
        &["--min-acks", "1", "--ack-timeout-ms", "10000"],
    );
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    wait_connected(&f1);
    wait_until("the leader counts f1", || {
        let ours = stats(&l.addr);
        (ours.get("followers").map(String::as_str) == Some("1"))
            .then_some(())
            .ok_or(format!("{ours:?}"))
    });

    // Pipelined, so the crash comes right after a burst of acknowledgements.
    let mut client = connect(&l.addr);
    let mut acked: Vec<(String, String, u64)> = Vec::new();
    for round in 0..10 {
        let mut sent = Vec::new();
        for i in 0..40 {
            let (key, value) = (
                format!("sync{:03}", (round * 40 + i) % 150),
                format!("r{round}i{i}"),
            );
            client
                .send(&Request::Set {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(value.clone()),
                })
                .unwrap();
            sent.push((key, value));
        }
        for (key, value) in sent {
            let response = client.recv().expect("reply");
            assert_eq!(
                response.status,
                Status::Ok,
                "{:?}",
                String::from_utf8_lossy(&response.body)
            );
            let seq = u64::from_le_bytes(response.body[..].try_into().unwrap());
            acked.push((key, value, seq));
        }
    }
    l.kill9();

    // The newest acknowledged value of every key.
    let mut expected: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for (key, value, seq) in &acked {
        expected.insert(key.clone(), (value.clone(), *seq));
    }
    let max_seq = acked.iter().map(|(_, _, seq)| *seq).max().unwrap();
    let check = |f: &Kvsd| {
        let theirs = stats(&f.addr);
        assert!(
            figure(&theirs, "applied_seq") >= max_seq,
            "the follower applied every acknowledged write (up to seq {max_seq}): {theirs:?}"
        );
        let mut client = connect(&f.addr);
        for (key, (value, seq)) in &expected {
            let got = client.get(key.as_bytes()).expect("GET on the follower");
            assert_eq!(
                got.as_deref(),
                Some(value.as_bytes()),
                "{key} was acknowledged with seq {seq}"
            );
        }
    };
    check(&f1);
    // In its log, not only in memory: a crash and restart of the follower keeps them.
    f1.kill9();
    let f1 = follower(dirs[1].path(), "f1", "127.0.0.1:1", &[]);
    check(&f1);
}

#[test]
fn with_min_acks_and_no_follower_a_write_is_durable_but_not_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let l = leader(dir.path(), &["--min-acks", "1", "--ack-timeout-ms", "300"]);
    let mut conn = Conn::connect(&l.addr);
    let id = conn.id();
    let reply = conn.call(raw::SET, 0, id, &raw::set_body(b"lonely", b"v1"));
    reply.assert_error(id);
    let message = String::from_utf8_lossy(&reply.body);
    assert!(
        message.contains("durable on the leader") && message.contains("not confirmed"),
        "the ERROR says durable on the leader but not confirmed: {message}"
    );
    // It is durable on the leader: readable, and the next write still gets an answer.
    assert_eq!(conn.value(b"lonely").as_deref(), Some(&b"v1"[..]));
    let id = conn.id();
    conn.call(raw::SET, 0, id, &raw::set_body(b"lonely", b"v2"))
        .assert_error(id);
    assert_eq!(conn.value(b"lonely").as_deref(), Some(&b"v2"[..]));
}

// ---------------------------------------------------------------------------------------------
// 6. The link through a fault proxy
// ---------------------------------------------------------------------------------------------

#[test]
fn link_through_a_fault_proxy_converges_after_cuts_delay_and_byte_by_byte() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &[]);
    let proxy = Proxy::start(&l.addr);
    let f1 = follower(dirs[1].path(), "f1", &proxy.addr, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (addr, stop, acked) = (l.addr.clone(), stop.clone(), acked.clone());
        let pace = Duration::from_millis(10);
        thread::spawn(move || write_load(&addr, "px", 0, &stop, pace, &acked))
    };
    let applied = || figure(&stats(&f1.addr), "applied_seq");
    let wait_progress = |what: &str| {
        let from = applied();
        wait_until(what, || {
            let now = applied();
            (now > from + 50)
                .then_some(())
                .ok_or(format!("applied_seq {now}, was {from}"))
        });
    };

    wait_progress("f1 applies through the proxy");
    for cut in 1..=3 {
        proxy.cut();
        wait_progress(&format!("f1 applies after cut {cut}"));
    }
    proxy.set_mode(Mode::Delay(Duration::from_millis(150)));
    wait_progress("f1 applies through a delayed link");
    thread::sleep(Duration::from_millis(1000));
    proxy.set_mode(Mode::ByteByByte);
    wait_progress("f1 applies through a byte-by-byte link");
    thread::sleep(Duration::from_millis(1500));
    // Cut in the middle of frames delivered byte by byte: the partial frame must be dropped.
    proxy.cut();
    wait_progress("f1 applies after a cut mid-frame");
    proxy.set_mode(Mode::Down);
    thread::sleep(Duration::from_millis(500));
    proxy.set_mode(Mode::Pass);
    wait_progress("f1 applies once the proxy is up again");

    stop.store(true, Ordering::SeqCst);
    writer.join().expect("the writer");
    let seq = wait_caught_up(&l, &[&f1]);
    assert_eq!(figure(&stats(&f1.addr), "applied_seq"), seq);
    assert_same_state(&l, &f1);
    assert!(
        proxy.accepted() >= 5,
        "the follower reconnected after each cut: {} connections",
        proxy.accepted()
    );

    // What it logged is whole records only: a restart (replaying its log), now straight to
    // the leader, finds the same state.
    f1.kill9();
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    assert_eq!(figure(&stats(&f1.addr), "applied_seq"), seq);
    assert_same_state(&l, &f1);
    set(&l.addr, "after", "heal");
    wait_caught_up(&l, &[&f1]);
}

// ---------------------------------------------------------------------------------------------
// 7. Foreign logs are refused
// ---------------------------------------------------------------------------------------------

#[test]
fn a_follower_of_another_log_is_refused_and_keeps_its_data() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = leader(dirs[0].path(), &[]);
    let b = leader(dirs[1].path(), &[]);
    let f1 = follower(dirs[2].path(), "f1", &a.addr, &[]);
    set(&a.addr, "x", "from-a");
    set(&b.addr, "y", "from-b");
    wait_caught_up(&a, &[&f1]);
    let a_log = stats(&a.addr)["log_id"].clone();
    let b_log = stats(&b.addr)["log_id"].clone();
    assert_ne!(a_log, b_log);
    assert!(f1.stop().success());

    let f1 = follower(dirs[2].path(), "f1", &b.addr, &[]);
    let refusal = wait_for_log(&f1, &["refused", &a_log]);
    assert!(
        refusal.contains(&b_log),
        "the refusal names both logs: {refusal}"
    );
    wait_for_log(&b, &["refused a follower", &a_log]);
    let theirs = stats(&f1.addr);
    assert_ne!(theirs["link_state"], "connected", "{theirs:?}");
    assert_eq!(theirs["log_id"], a_log, "the follower keeps its log");
    assert_eq!(get(&f1.addr, "x").as_deref(), Some("from-a"));
    assert_eq!(get(&f1.addr, "y"), None, "nothing of B is merged");
    assert_eq!(figure(&stats(&b.addr), "followers"), 0);

    // It retries (each retry is a new connection to B), but neither side says so again.
    // Every STATS call is a connection too: count ours out.
    let dialled = figure(&stats(&b.addr), "connections_total");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut polls = 0;
    loop {
        polls += 1;
        let total = figure(&stats(&b.addr), "connections_total");
        if total - polls >= dialled + 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower keeps retrying"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let again: Vec<_> = f1
        .drain_log(Duration::from_millis(200))
        .into_iter()
        .chain(b.drain_log(Duration::from_millis(200)))
        .filter(|line| line.contains("refused"))
        .collect();
    assert!(
        again.is_empty(),
        "the refusal is logged once on each side: {again:?}"
    );
}

#[test]
fn a_wiped_leader_does_not_wipe_its_followers() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port();
    let leader_dir = dirs[0].path().join("data");
    let l = start_on(port, &leader_dir, &["--node-id", "leader"]);
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    for i in 0..20 {
        set(&l.addr, &format!("key{i:02}"), &format!("value{i}"));
    }
    wait_caught_up(&l, &[&f1]);
    let before = digest(&f1.addr);
    let old_log = stats(&l.addr)["log_id"].clone();
    assert!(l.stop().success());

    std::fs::remove_dir_all(&leader_dir).unwrap();
    let l = start_on(port, &leader_dir, &["--node-id", "leader"]);
    let new_log = stats(&l.addr)["log_id"].clone();
    assert_ne!(old_log, new_log, "a wiped data dir gets a new log");
    set(&l.addr, "fresh", "only-on-the-new-leader");

    let refusal = wait_for_log(&f1, &["refused", &old_log]);
    assert!(refusal.contains(&new_log), "{refusal}");
    let theirs = stats(&f1.addr);
    assert_ne!(theirs["link_state"], "connected", "{theirs:?}");
    assert_eq!(theirs["log_id"], old_log);
    assert_eq!(figure(&theirs, "applied_seq"), 20);
    assert_eq!(digest(&f1.addr), before, "the follower keeps every key");
    assert_eq!(get(&f1.addr, "fresh"), None);
}

// ---------------------------------------------------------------------------------------------
// 8. Read-your-writes
// ---------------------------------------------------------------------------------------------

#[test]
fn get_with_min_seq_on_a_follower_reads_your_writes() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &[]);
    let f1 = follower(
        dirs[1].path(),
        "f1",
        &l.addr,
        &["--min-seq-wait-ms", "3000"],
    );
    let mut on_leader = connect(&l.addr);
    let mut on_follower = connect(&f1.addr);
    for i in 0..30 {
        let value = format!("v{i}");
        let seq = on_leader.set(b"ryw", value.as_bytes()).unwrap();
        let got = on_follower.get_min_seq(b"ryw", seq).unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()), "seq {seq}");
    }
    let seq = on_leader.del(b"ryw").unwrap().expect("ryw exists");
    assert_eq!(on_follower.get_min_seq(b"ryw", seq).unwrap(), None);

    // A seq the leader never wrote: ERROR after the documented wait, and the link is fine.
    match on_follower.get_min_seq(b"ryw", seq + 1_000_000) {
        Err(ClientError::Server(message)) => {
            assert!(message.contains("not applied"), "{message}")
        }
        other => panic!("GET with a future min_seq answers ERROR, got {other:?}"),
    }
    let seq = on_leader.set(b"ryw", b"last").unwrap();
    let got = connect(&f1.addr).get_min_seq(b"ryw", seq).unwrap();
    assert_eq!(got.as_deref(), Some(&b"last"[..]));
}

// ---------------------------------------------------------------------------------------------
// 9. Leader restart
// ---------------------------------------------------------------------------------------------

#[test]
fn a_leader_restart_heals_by_itself() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port();
    let l = start_on(port, dirs[0].path(), &["--node-id", "leader"]);
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    set(&l.addr, "before", "1");
    wait_caught_up(&l, &[&f1]);
    assert!(l.stop().success(), "the leader exits 0 on SIGTERM");
    wait_until("f1 sees the leader gone", || {
        let theirs = stats(&f1.addr);
        (theirs["link_state"] != "connected")
            .then_some(())
            .ok_or(format!("{theirs:?}"))
    });
    assert_eq!(get(&f1.addr, "before").as_deref(), Some("1"), "reads go on");

    let l = start_on(port, dirs[0].path(), &["--node-id", "leader"]);
    wait_connected(&f1);
    let seq = set(&l.addr, "after", "2");
    let got = connect(&f1.addr).get_min_seq(b"after", seq).unwrap();
    assert_eq!(got.as_deref(), Some(&b"2"[..]));
    wait_caught_up(&l, &[&f1]);
    let theirs = stats(&f1.addr);
    assert_eq!(figure(&theirs, "records_received"), 1, "{theirs:?}");
    assert_eq!(figure(&theirs, "records_received_total"), 2, "{theirs:?}");
    assert_same_state(&l, &f1);
}

// ---------------------------------------------------------------------------------------------
// More edges: many small segments and large records, a follower ahead of its leader, a
// follower pointed at a follower
// ---------------------------------------------------------------------------------------------

#[test]
fn catch_up_crosses_many_small_segments_and_records_larger_than_a_chunk() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let small = [
        "--segment-bytes",
        "65536",
        "--compact-garbage-ratio",
        "never",
    ];
    let l = leader(dirs[0].path(), &small);
    let (stop, acked) = (AtomicBool::new(true), AtomicU64::new(0));
    write_load(&l.addr, "seg", 3000, &stop, Duration::ZERO, &acked);
    let mut client = connect(&l.addr);
    // Larger than the 256 KiB replication chunk and than a segment.
    for (i, size) in [300_000usize, 1_048_576, 70_000].into_iter().enumerate() {
        client
            .set(format!("big{i}").as_bytes(), &vec![b'0' + i as u8; size])
            .expect("SET a large value");
    }
    write_load(&l.addr, "seg2-", 500, &stop, Duration::ZERO, &acked);
    let ours = stats(&l.addr);
    assert!(figure(&ours, "segments") > 10, "{ours:?}");

    let f1 = follower(dirs[1].path(), "f1", &l.addr, &small);
    wait_caught_up(&l, &[&f1]);
    assert_same_state(&l, &f1);

    // Live, too, and after a restart of the follower from its own many segments.
    client.set(b"big-live", &vec![b'L'; 1_048_576]).unwrap();
    write_load(&l.addr, "seg3-", 300, &stop, Duration::ZERO, &acked);
    wait_caught_up(&l, &[&f1]);
    f1.kill9();
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &small);
    client.set(b"after-restart", b"1").unwrap();
    wait_caught_up(&l, &[&f1]);
    assert_same_state(&l, &f1);
}

#[test]
fn a_follower_ahead_of_its_leader_is_refused_and_keeps_its_data() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = free_port();
    let leader_dir = dirs[0].path().join("data");
    let old_copy = dirs[2].path().join("old");
    let l = start_on(port, &leader_dir, &["--node-id", "leader"]);
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    for i in 0..5 {
        set(&l.addr, &format!("key{i}"), "v");
    }
    assert!(l.stop().success());
    // An old copy of the leader's data dir, taken at seq 5.
    std::fs::create_dir(&old_copy).unwrap();
    for entry in std::fs::read_dir(&leader_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), old_copy.join(entry.file_name())).unwrap();
    }
    let l = start_on(port, &leader_dir, &["--node-id", "leader"]);
    for i in 5..10 {
        set(&l.addr, &format!("key{i}"), "v");
    }
    wait_caught_up(&l, &[&f1]);
    let before = digest(&f1.addr);
    assert!(l.stop().success());

    // The leader comes back from the old copy: same log id, but it ends at seq 5.
    std::fs::remove_dir_all(&leader_dir).unwrap();
    std::fs::rename(&old_copy, &leader_dir).unwrap();
    let l = start_on(port, &leader_dir, &["--node-id", "leader"]);
    assert_eq!(figure(&stats(&l.addr), "durable_seq"), 5);
    let refusal = wait_for_log(&f1, &["refused", "ahead"]);
    assert!(
        refusal.contains("10"),
        "the refusal names the seqs: {refusal}"
    );
    let theirs = stats(&f1.addr);
    assert_ne!(theirs["link_state"], "connected", "{theirs:?}");
    assert_eq!(figure(&theirs, "applied_seq"), 10);
    assert_eq!(digest(&f1.addr), before, "the follower keeps every key");
}

#[test]
fn a_follower_pointed_at_a_follower_is_told_so() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &[]);
    let f1 = follower(dirs[1].path(), "f1", &l.addr, &[]);
    let f2 = follower(dirs[2].path(), "f2", &f1.addr, &[]);
    let line = wait_for_log(&f2, &["this node is a follower", &l.addr]);
    assert!(line.contains("refused"), "{line}");
    let theirs = stats(&f2.addr);
    assert_ne!(theirs["link_state"], "connected", "{theirs:?}");
    set(&l.addr, "k", "v");
    wait_caught_up(&l, &[&f1]);
    assert_eq!(get(&f2.addr, "k"), None);
}

/// SERVER BUG (ignored until fixed): admission compares only the log id and the last seq, so a
/// follower whose history diverged from the leader's after a failover is admitted and gets
/// the leader's later records appended on top of its own: a silent merge of two histories.
#[test]
fn a_diverged_old_leader_is_not_merged_into_the_new_leaders_history() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (old_port, new_port) = (free_port(), free_port());
    let old_addr = format!("127.0.0.1:{old_port}");
    let new_addr = format!("127.0.0.1:{new_port}");
    let node = |port: u16, dir: usize, extra: &[&str]| start_on(port, dirs[dir].path(), extra);

    // seq 1..=5 on both; seq 6, 7 (f, g) only on the old leader.
    let l = node(old_port, 0, &["--node-id", "n0"]);
    let f = node(
        new_port,
        1,
        &[
            "--node-id",
            "n1",
            "--async-replication",
            "--leader-addr",
            &old_addr,
        ],
    );
    for key in ["a", "b", "c", "d", "e"] {
        set(&l.addr, key, "old");
    }
    wait_caught_up(&l, &[&f]);
    assert!(f.stop().success());
    for key in ["f", "g"] {
        set(&l.addr, key, "old");
    }
    assert!(l.stop().success());

    // Failover: n1 becomes the leader and writes seq 6, 7, 8 (x, y, z) of its own.
    let new_leader = node(new_port, 1, &["--node-id", "n1"]);
    for key in ["x", "y", "z"] {
        set(&new_leader.addr, key, "new");
    }
    // The old leader comes back as a follower: its seq 6, 7 are not the new leader's 6, 7.
    let old = node(
        old_port,
        0,
        &[
            "--node-id",
            "n0",
            "--async-replication",
            "--leader-addr",
            &new_addr,
        ],
    );
    let mut outcome = String::new();
    wait_until("the old leader is refused or catches up", || {
        if let Ok(line) = old.log.try_recv() {
            if line.contains("refused") {
                outcome = line;
                return Ok(());
            }
        }
        let applied = figure(&stats(&old.addr), "applied_seq");
        if applied >= 8 {
            outcome = format!("applied_seq {applied}");
            return Ok(());
        }
        Err(format!("applied_seq {applied}"))
    });
    let state = digest(&old.addr);
    let has = |key: &str| state.iter().any(|(k, _)| k.as_ref() == key.as_bytes());
    assert!(
        !(has("f") && has("z")),
        "the old leader holds both histories (its own f, g and the new leader's z) after \
         '{outcome}': {state:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Compaction and snapshots
// ---------------------------------------------------------------------------------------------

/// Small segments, so that a little churn makes compactable history.
const SMALL_SEGMENTS: [&str; 4] = ["--segment-bytes", "65536", "--compact-garbage-ratio", "1.0"];

/// Overwrites `keys` keys `rounds` times (and deletes every 9th in the last round).
fn churn(addr: &str, keys: u64, rounds: u64, tag: &str) {
    let mut client = connect(addr);
    for round in 0..rounds {
        for k in 0..keys {
            let key = Bytes::from(format!("key{k:04}"));
            let request = if round + 1 == rounds && k % 9 == 4 {
                Request::Del { key }
            } else {
                let value = format!("{tag}-{round}-{k}-{}", "z".repeat(100));
                Request::Set {
                    key,
                    value: value.into(),
                }
            };
            client.send(&request).expect("send");
        }
        for _ in 0..keys {
            let response = client.recv().expect("reply");
            assert!(matches!(response.status, Status::Ok | Status::NotFound));
        }
    }
}

/// Waits until the follower received a snapshot and started again on it (it re-executes
/// itself: connections made meanwhile are reset).
#[track_caller]
fn wait_snapshot_installed(follower: &Kvsd) {
    wait_for_log(follower, &["snapshot received"]);
    wait_for_log(follower, &["kvsd ready"]);
}

fn compact(addr: &str) -> BTreeMap<String, String> {
    let summary = connect(addr).compact().expect("COMPACT");
    stats_lines(&summary)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_follower_joining_after_compaction_gets_a_snapshot_then_the_stream() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &SMALL_SEGMENTS);
    churn(&l.addr, 400, 6, "a");
    let summary = compact(&l.addr);
    assert!(figure(&summary, "compacted") > 0, "{summary:?}");
    assert!(figure(&stats(&l.addr), "horizon_seq") > 0);

    let mut args = SMALL_SEGMENTS.to_vec();
    args.extend_from_slice(&["--metrics-addr", "127.0.0.1:0", "--resp-port", "0"]);
    let f = follower(dirs[1].path(), "f1", &l.addr, &args);
    wait_for_log(&l, &["sending a snapshot", "f1"]);
    wait_snapshot_installed(&f);
    churn(&l.addr, 50, 2, "b");
    wait_caught_up(&l, &[&f]);
    assert_same_state(&l, &f);
    // The process that started again on the snapshot kept the metrics port it had picked.
    let metrics_addr = f.metrics_addr.as_deref().expect("metrics_addr");
    assert_eq!(common::http::get(metrics_addr, "/ready").0, 200);
    let (status, page) = common::http::get(metrics_addr, "/metrics");
    assert_eq!(status, 200, "{page}");
    let keys = common::http::sample(&page, "kvs_keys").expect("kvs_keys");
    assert_eq!(keys, figure(&stats(&f.addr), "keys") as f64, "{page}");
    // And the RESP port: a Redis client finds the follower where it was.
    let resp_addr = f.resp_addr.as_deref().expect("resp_addr");
    assert_eq!(resp_ping(resp_addr), "+PONG\r\n");
    // The follower's own log now starts with the snapshot: it survives a kill -9.
    let f_dir = f.data_dir.clone();
    f.kill9();
    let f = follower(&f_dir, "f1", &l.addr, &SMALL_SEGMENTS);
    wait_caught_up(&l, &[&f]);
    assert_same_state(&l, &f);
}

#[test]
fn compaction_while_a_follower_streams_and_a_returning_follower_behind_the_horizon() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &SMALL_SEGMENTS);
    let live = follower(dirs[1].path(), "live", &l.addr, &SMALL_SEGMENTS);
    let away = follower(dirs[2].path(), "away", &l.addr, &SMALL_SEGMENTS);
    churn(&l.addr, 300, 2, "a");
    wait_caught_up(&l, &[&live, &away]);
    let away_dir = away.data_dir.clone();
    assert!(away.stop().success());

    // Writes and compactions while `live` streams: it must never notice.
    for round in 0..4 {
        churn(&l.addr, 300, 3, &format!("r{round}"));
        compact(&l.addr);
    }
    wait_caught_up(&l, &[&live]);
    assert_same_state(&l, &live);
    let ours = stats(&l.addr);
    assert!(figure(&ours, "horizon_seq") > 300 * 2, "{ours:?}");

    // `away` stopped before the horizon: its next seq was compacted away.
    let away = follower(&away_dir, "away", &l.addr, &SMALL_SEGMENTS);
    wait_for_log(&l, &["sending a snapshot", "away", "compacted"]);
    wait_snapshot_installed(&away);
    wait_caught_up(&l, &[&live, &away]);
    assert_same_state(&l, &away);
}

#[test]
fn a_follower_killed_in_the_middle_of_a_snapshot_starts_it_again_cleanly() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let l = leader(dirs[0].path(), &SMALL_SEGMENTS);
    // Enough live data for several RECORDS frames (256 KiB each).
    churn(&l.addr, 6000, 2, "a");
    compact(&l.addr);
    let f_dir = dirs[1].path().join("f");
    let mut args = vec![
        "--node-id",
        "f1",
        "--async-replication",
        "--leader-addr",
        &l.addr,
    ];
    args.extend_from_slice(&SMALL_SEGMENTS);
    args.extend_from_slice(&["--crash-point", "snapshot:partial"]);
    let mut dying = common::start(&f_dir, &args);
    let status = dying.wait();
    assert!(
        !status.success(),
        "the follower died mid-snapshot: {status}"
    );
    assert!(
        f_dir.join("snapshot.tmp").exists(),
        "it left a partial snapshot behind"
    );
    drop(dying);

    let f = follower(&f_dir, "f1", &l.addr, &SMALL_SEGMENTS);
    assert!(
        f.ready_line.contains("keys=0"),
        "the partial snapshot was not installed: {}",
        f.ready_line
    );
    wait_snapshot_installed(&f);
    wait_caught_up(&l, &[&f]);
    assert_same_state(&l, &f);
    assert!(!f_dir.join("snapshot.tmp").exists());
}

#[test]
fn resync_replaces_a_foreign_log_only_when_asked() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = leader(dirs[0].path(), &[]);
    let b = leader(dirs[1].path(), &[]);
    let f = follower(dirs[2].path(), "f1", &a.addr, &[]);
    set(&a.addr, "x", "from-a");
    churn(&b.addr, 200, 2, "b");
    wait_caught_up(&a, &[&f]);
    let f_dir = f.data_dir.clone();
    assert!(f.stop().success());

    let f = follower(&f_dir, "f1", &b.addr, &[]);
    let refusal = wait_for_log(&f, &["refused"]);
    assert!(
        refusal.contains("--resync"),
        "the refusal names --resync: {refusal}"
    );
    assert_eq!(get(&f.addr, "x").as_deref(), Some("from-a"), "data kept");
    assert!(f.stop().success());

    let f = follower(&f_dir, "f1", &b.addr, &["--resync"]);
    wait_snapshot_installed(&f);
    wait_caught_up(&b, &[&f]);
    assert_same_state(&b, &f);
    assert_eq!(get(&f.addr, "x"), None, "A's data is gone");
    assert_eq!(stats(&f.addr)["log_id"], stats(&b.addr)["log_id"]);
}

/// PING on a RESP port, and the reply's first line.
fn resp_ping(addr: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the RESP port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("a reply");
    line
}
