//! Bounded disk on a Raft cluster (issue 11), with real kvsd processes: snapshots of the live
//! keys (`raft-snapshot`), the log before them deleted, members that catch up by a snapshot,
//! and a member killed in the middle of installing one.
//!
//! What each proves is listed in docs/replication.md ("What the tests prove").

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::raft::{free_port, get, get_min_seq, options, stats, wait_for, Cluster, LEADER_WAIT};
use common::try_start_on;
use kvs::client::{Client, ClientError};

const SEGMENT_BYTES: u64 = 128 * 1024;
const KEEP_ENTRIES: u64 = 10;
const VALUE_BYTES: usize = 32 * 1024;

/// Small segments and frequent snapshots, so a short load crosses many of both; elections
/// slower than the default, so that a loaded 2-core machine (these tests write a few MiB while
/// other tests run) does not turn stalls of the loop into elections.
fn flags(snapshot_entries: u64) -> Vec<String> {
    [
        "--election-timeout-ms",
        "1000",
        "--heartbeat-ms",
        "200",
        "--segment-bytes",
        &SEGMENT_BYTES.to_string(),
        "--raft-snapshot-entries",
        &snapshot_entries.to_string(),
        "--raft-keep-entries",
        &KEEP_ENTRIES.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Bytes of every file in `dir` (not below it).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

/// Sets `key` through whichever member leads, following NOT_LEADER and retrying (the same
/// value) after anything else, until acknowledged; returns its seq.
fn set_on_leader(addrs: &[String], client: &mut Option<Client>, key: &str, value: &str) -> u64 {
    let mut target = 0;
    wait_for(&format!("SET {key} acknowledged"), LEADER_WAIT, || {
        if client.is_none() {
            *client = Client::connect_with(&addrs[target], options()).ok();
        }
        let answer = client.as_mut()?.set(key.as_bytes(), value.as_bytes());
        match answer {
            Ok(seq) => return Some(seq),
            Err(ClientError::NotLeader(leader)) if !leader.is_empty() => {
                target = addrs.iter().position(|a| *a == leader).unwrap_or(0);
            }
            Err(_) => {
                target = (target + 1) % addrs.len();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        *client = None;
        None
    })
}

/// `rounds` overwrites of `keys` keys of `VALUE_BYTES` bytes, from four threads; returns each
/// key's last acknowledged value and the newest acknowledged seq.
fn overwrite(cluster: &Cluster, keys: usize, rounds: usize) -> (BTreeMap<String, String>, u64) {
    let addrs: Vec<String> = (0..3).map(|i| cluster.addr(i)).collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let mut client = None;
                let mut last = BTreeMap::new();
                let mut newest = 0;
                for round in 0..rounds {
                    for k in (t..keys).step_by(4) {
                        let key = format!("k{k:04}");
                        let mut value = format!("r{round}-{key}-");
                        value.extend(std::iter::repeat_n('x', VALUE_BYTES - value.len()));
                        let seq = set_on_leader(&addrs, &mut client, &key, &value);
                        newest = newest.max(seq);
                        last.insert(key, value);
                    }
                }
                (last, newest)
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    let mut newest = 0;
    for thread in threads {
        let Ok((last, seq)) = thread.join() else {
            dump_logs(cluster);
            panic!("a writer failed");
        };
        all.extend(last);
        newest = newest.max(seq);
    }
    (all, newest)
}

/// What the members logged, for a failure's message.
fn dump_logs(cluster: &Cluster) {
    for (i, node) in cluster.nodes.iter().enumerate() {
        if let Some(node) = node {
            for line in node.drain_log(Duration::ZERO) {
                if !line.contains("DEBUG") {
                    eprintln!("n{}: {line}", i + 1);
                }
            }
        }
    }
}

/// Every key holds its last acknowledged value on the member at `addr` once it has applied
/// `newest` (a `min_seq` read: any member answers it from its own state).
fn assert_holds(addr: &str, expected: &BTreeMap<String, String>, newest: u64, who: &str) {
    for (key, value) in expected {
        let got = wait_for(&format!("{who} to answer {key}"), LEADER_WAIT, || {
            get_min_seq(addr, key, newest).ok()
        });
        assert_eq!(got.as_deref(), Some(value.as_str()), "{who}: {key}");
    }
}

fn stat(addr: &str, name: &str) -> u64 {
    let stats = wait_for("STATS", LEADER_WAIT, || stats(addr));
    stats[name].parse().unwrap()
}

/// (a) and (d): an overwrite load of 30 times the live data; the automatic policy
/// (`--raft-snapshot-entries`) makes snapshots on every member and deletes the log before
/// them, so each data dir stays within a bound of the live data that is far below what was
/// written. Then every member is killed with -9 and restarted: all acknowledged writes are
/// there, on every member.
#[test]
fn overwrites_keep_every_data_dir_bounded_and_survive_killing_every_node() {
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start(ports, |_| flags(30));
    let (keys, rounds) = (8, 30);
    let (expected, newest) = overwrite(&cluster, keys, rounds);
    let live = (keys * VALUE_BYTES) as u64;
    let written = live * rounds as u64;
    // The snapshot (the live data), the log since it (up to 30 entries, the 10 kept, and what
    // arrived while the last snapshot was made), whole segments (each preallocated whole, one
    // more zero-filled ahead) and small files.
    let bound = 2 * live + 60 * VALUE_BYTES as u64 + 8 * SEGMENT_BYTES + 64 * 1024;
    assert!(bound * 2 < written, "the load must dwarf the bound");
    for i in 0..3 {
        let addr = cluster.addr(i);
        assert_holds(&addr, &expected, newest, &format!("n{}", i + 1));
        assert!(
            stat(&addr, "snapshots_built") >= 1,
            "n{} made no snapshot",
            i + 1
        );
        assert!(stat(&addr, "purged_seq") > 0, "n{} purged nothing", i + 1);
        let bytes = dir_bytes(&cluster.dirs[i]);
        eprintln!(
            "n{}: {bytes} bytes on disk; live {live}, written {written}, bound {bound}",
            i + 1
        );
        assert!(
            bytes <= bound,
            "n{}: {bytes} bytes on disk for {live} bytes of live data (bound {bound}; {written} written)",
            i + 1
        );
    }
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    for (key, value) in &expected {
        // Linearizable reads, on whichever member leads at the time.
        let got = wait_for("a read on the leader", LEADER_WAIT, || {
            get(&cluster.addr(cluster.leader()?), key).ok()
        });
        assert_eq!(
            got.as_deref(),
            Some(value.as_str()),
            "after the restart: {key}"
        );
    }
    for i in 0..3 {
        assert_holds(
            &cluster.addr(i),
            &expected,
            newest,
            &format!("n{} restarted", i + 1),
        );
    }
}

/// Starts node `name` joining the cluster (as a learner if asked), with `extra` flags.
fn join(
    cluster: &Cluster,
    dir: &Path,
    port: u16,
    name: &str,
    learner: bool,
    extra: &[&str],
) -> Result<common::Kvsd, String> {
    let first = cluster.addr(0);
    let mut args = vec!["--node-id", name, "--join", &first];
    if learner {
        args.push("--learner");
    }
    let flags = flags(0);
    args.extend(flags.iter().map(String::as_str));
    args.extend(extra);
    try_start_on(port, dir, &args)
}

/// Makes a snapshot on every member with COMPACT, so the log the new member would need is gone.
fn compact_all(cluster: &Cluster, newest: u64) {
    for i in 0..3 {
        let mut client = Client::connect_with(&cluster.addr(i), options()).unwrap();
        let answer = client.compact().unwrap();
        assert!(answer.contains("snapshot_seq:"), "{answer}");
    }
    let leader = cluster.addr(cluster.leader().unwrap());
    wait_for("the leader to purge its log", LEADER_WAIT, || {
        (stat(&leader, "purged_seq") + KEEP_ENTRIES + 10 >= newest).then_some(())
    });
}

/// (b): a member added after the log was purged catches up by a snapshot (the leader has no log
/// to send it) and holds every key, and becomes a voter.
#[test]
fn a_member_added_after_the_purge_catches_up_by_snapshot() {
    let ports = [free_port(), free_port(), free_port()];
    // Only COMPACT makes snapshots here.
    let cluster = Cluster::start(ports, |_| flags(0));
    let (expected, newest) = overwrite(&cluster, 20, 3);
    compact_all(&cluster, newest);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let n4 = join(&cluster, dir.path(), port, "n4", false, &[]).unwrap();
    let addr = format!("127.0.0.1:{port}");
    assert_holds(&addr, &expected, newest, "n4");
    assert!(
        stat(&addr, "snapshots_installed") >= 1,
        "n4 did not install a snapshot"
    );
    cluster.wait_voters(4);
    // Its state is its own now: a restart recovers it from its snapshot and log.
    n4.kill9();
    let _n4 = join(&cluster, dir.path(), port, "n4", false, &[]).unwrap();
    assert_holds(&addr, &expected, newest, "n4 restarted");
}

/// (c): a member killed (abort, as kill -9) in the middle of installing a snapshot, once with the
/// snapshot written and fsynced under its temp name, once right after the rename, restarts
/// with either its old state or the whole snapshot, catches up and holds every key.
#[test]
fn a_member_killed_during_snapshot_install_restarts_consistent() {
    let ports = [free_port(), free_port(), free_port()];
    let cluster = Cluster::start(ports, |_| flags(0));
    let (expected, newest) = overwrite(&cluster, 20, 3);
    compact_all(&cluster, newest);
    for (n, point) in ["snapshot-install:synced", "snapshot-install:renamed"]
        .iter()
        .enumerate()
    {
        let name = format!("l{n}");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let crash = ["--crash-point", point];
        match join(&cluster, dir.path(), port, &name, true, &crash) {
            // It may get ready before the snapshot arrives; then it aborts while installing.
            Ok(mut node) => {
                let status = node.wait();
                assert!(!status.success(), "{name} should have aborted at {point}");
            }
            Err(log) => assert!(log.contains("KVS_CRASH_POINT"), "{name}: {log}"),
        }
        let addr = format!("127.0.0.1:{port}");
        let node = join(&cluster, dir.path(), port, &name, true, &[]).unwrap();
        let caught_up = std::panic::catch_unwind(|| {
            assert_holds(
                &addr,
                &expected,
                newest,
                &format!("{name} after a crash at {point}"),
            )
        });
        if let Err(failure) = caught_up {
            for line in node.drain_log(Duration::ZERO) {
                eprintln!("{name}: {line}");
            }
            dump_logs(&cluster);
            std::panic::resume_unwind(failure);
        }
        // And once more from its own disk.
        node.kill9();
        let _node = join(&cluster, dir.path(), port, &name, true, &[]).unwrap();
        assert_holds(&addr, &expected, newest, &format!("{name} restarted"));
    }
}

/// The value `addr` holds for `key` by its own applied state (GET_LOCAL: no leader asked).
fn get_local(addr: &str, key: &str) -> Option<String> {
    let (status, body) = kvs::client::cluster::admin(
        addr,
        kvs::raft::op::GET_LOCAL,
        key.as_bytes(),
        options(),
        None,
    )
    .ok()?;
    (status == kvs::protocol::Status::Ok).then(|| String::from_utf8_lossy(&body).into_owned())
}

/// Whether process `pid` is running (not gone, not a zombie waiting to be reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with(|c| c != 'Z')))
        .unwrap_or(false)
}

/// Sets every key of `values` on the member at `addr` (the leader); returns the newest seq.
fn set_all(addr: &str, values: &BTreeMap<String, String>) -> u64 {
    let addrs = [addr.to_string()];
    let mut client = None;
    values
        .iter()
        .map(|(key, value)| set_on_leader(&addrs, &mut client, key, value))
        .max()
        .unwrap_or(0)
}

fn values(round: &str, keys: usize) -> BTreeMap<String, String> {
    (0..keys)
        .map(|k| {
            let key = format!("k{k:04}");
            let mut value = format!("{round}-{key}-");
            value.extend(std::iter::repeat_n('x', VALUE_BYTES - value.len()));
            (key, value)
        })
        .collect()
}

/// (e): a snapshot damaged on its way (the leader's `--damage-snapshot-sends` test knob flips a
/// bit in every chunk it sends after the first) is refused by the member that receives it, which keeps running
/// on its old state and never installs it; once the leader sends a clean copy, the member
/// installs that and holds every key.
#[test]
fn a_damaged_snapshot_is_refused_and_the_member_catches_up_from_a_clean_copy() {
    let (leader_dir, learner_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader_port, learner_port) = (free_port(), free_port());
    let leader_addr = format!("127.0.0.1:{leader_port}");
    let learner_addr = format!("127.0.0.1:{learner_port}");
    let mut leader_args = vec!["--node-id".to_string(), "n1".into(), "--bootstrap".into()];
    leader_args.extend(flags(0));
    let leader_args: Vec<&str> = leader_args.iter().map(String::as_str).collect();
    let start_leader = |extra: &[&str]| {
        let mut args = leader_args.clone();
        args.extend(extra);
        try_start_on(leader_port, leader_dir.path(), &args).unwrap()
    };
    let mut learner_args = vec![
        "--node-id".to_string(),
        "l1".into(),
        "--join".into(),
        leader_addr.clone(),
        "--learner".into(),
    ];
    learner_args.extend(flags(0));
    let learner_args: Vec<&str> = learner_args.iter().map(String::as_str).collect();
    let start_learner = || try_start_on(learner_port, learner_dir.path(), &learner_args).unwrap();

    // Every snapshot read this leader sends is damaged.
    let leader = start_leader(&["--damage-snapshot-sends", "1000000000"]);
    let old = values("old", 20);
    let old_seq = set_all(&leader_addr, &old);
    let learner = start_learner();
    assert_holds(&learner_addr, &old, old_seq, "l1");
    learner.kill9();

    // While l1 is down: new values, and the log l1 would need is purged.
    let new = values("new", 20);
    let new_seq = set_all(&leader_addr, &new);
    let mut client = Client::connect_with(&leader_addr, options()).unwrap();
    assert!(client.compact().unwrap().contains("snapshot_seq:"));
    wait_for("the leader to purge past l1", LEADER_WAIT, || {
        (stat(&leader_addr, "purged_seq") > old_seq).then_some(())
    });

    let learner = start_learner();
    wait_for("l1 to refuse damaged snapshots", LEADER_WAIT, || {
        (stat(&learner_addr, "snapshots_rejected") >= 3).then_some(())
    });
    assert!(running(learner.pid), "l1 stopped on a damaged snapshot");
    let stats = wait_for("STATS", LEADER_WAIT, || stats(&learner_addr));
    assert_eq!(stats["role"], "learner");
    assert_eq!(
        stats["snapshots_installed"], "0",
        "a damaged snapshot was installed"
    );
    assert!(!learner_dir.path().join("raft-snapshot").exists());
    for (key, value) in &old {
        assert_eq!(
            get_local(&learner_addr, key).as_deref(),
            Some(value.as_str()),
            "l1: {key}"
        );
    }

    // The same leader without the knob: its snapshot goes through clean.
    leader.kill9();
    let leader = start_leader(&[]);
    // A lone voter that restarts resumes leading its term without a new entry, and openraft
    // starts replicating to the learner at the next write.
    let after = BTreeMap::from([("after".to_string(), "restart".to_string())]);
    let after_seq = set_all(&leader_addr, &after);
    let caught_up = std::panic::catch_unwind(|| {
        assert_holds(
            &learner_addr,
            &new,
            new_seq.max(after_seq),
            "l1 after a clean copy",
        )
    });
    if let Err(failure) = caught_up {
        for (who, node) in [("l1", &learner), ("n1", &leader)] {
            for line in node.drain_log(Duration::ZERO) {
                eprintln!("{who}: {line}");
            }
        }
        std::panic::resume_unwind(failure);
    }
    assert!(running(learner.pid), "l1 was restarted");
    assert!(stat(&learner_addr, "snapshots_installed") >= 1);
    assert!(learner_dir.path().join("raft-snapshot").exists());
    let log = learner.drain_log(Duration::ZERO).join("\n");
    assert!(log.contains("refused the snapshot"), "{log}");
}
