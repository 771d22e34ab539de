//! Raft failover with real kvsd processes (issue 11): a 3-node cluster made with `--bootstrap`
//! and `--join`, the leader killed with kill -9 under concurrent writers (several times, each
//! time restarted with the same command line), and a leader cut off from the others by fault
//! proxies on every Raft link.
//!
//! What each proves is listed in docs/replication.md ("What the tests prove").

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Mode;
use common::raft::{
    free_port, get, get_min_seq, options, stats, wait_for, Cluster, Mesh, LEADER_WAIT,
};
use kvs::client::{Client, ClientError};

/// What concurrent writers were told: every (key, value) answered OK.
type Acked = Arc<Mutex<Vec<(String, String, u64)>>>;

/// A writer: unique keys, following NOT_LEADER, trying the next node on anything else.
fn writer(id: usize, addrs: Vec<String>, stop: Arc<AtomicBool>, acked: Acked) {
    let mut target = 0;
    let mut client: Option<Client> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match Client::connect_with(&addrs[target], options()) {
                Ok(c) => client.insert(c),
                Err(_) => {
                    target = (target + 1) % addrs.len();
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        let key = format!("w{id}-{i}");
        let value = format!("value-{id}-{i}");
        i += 1;
        match c.set(key.as_bytes(), value.as_bytes()) {
            Ok(seq) => acked.lock().unwrap().push((key, value, seq)),
            Err(ClientError::NotLeader(leader)) => {
                client = None;
                match addrs.iter().position(|a| *a == leader) {
                    Some(at) => target = at,
                    None => {
                        target = (target + 1) % addrs.len();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            Err(_) => {
                // Indeterminate (a kill, a timeout): it may or may not be in; not counted.
                client = None;
                target = (target + 1) % addrs.len();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Three voters made with --bootstrap and --join; the leader is killed with kill -9 under four
/// concurrent writers, `KVS_RAFT_KILLS` times (3 by default), and restarted each time with its
/// own command line. A new leader must serve within `LEADER_WAIT` each time, and every write
/// ever acknowledged must then be on the leader, and on every member once it has applied the
/// newest acknowledged seq.
#[test]
fn leader_kill9_under_writers_loses_no_acknowledged_write() {
    let kills: usize = std::env::var("KVS_RAFT_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start(ports, |_| Vec::new());
    let addrs: Vec<String> = (0..3).map(|i| cluster.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let writers: Vec<_> = (0..4)
        .map(|id| {
            let (addrs, stop, acked) = (addrs.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || writer(id, addrs, stop, acked))
        })
        .collect();
    let mut failovers = Vec::new();
    for round in 0..kills {
        wait_for("writes acknowledged", LEADER_WAIT, || {
            (acked.lock().unwrap().len() >= 50 * (round + 1)).then_some(())
        });
        let old = wait_for("a leader", LEADER_WAIT, || cluster.leader());
        let acked_before = acked.lock().unwrap().len();
        let killed_at = Instant::now();
        cluster.kill(old);
        let new = wait_for("a new leader", LEADER_WAIT, || {
            cluster.leader().filter(|&l| l != old)
        });
        wait_for("a write acknowledged after the kill", LEADER_WAIT, || {
            (acked.lock().unwrap().len() > acked_before + 10).then_some(())
        });
        failovers.push(killed_at.elapsed());
        eprintln!(
            "round {round}: killed n{} ; n{} leads ; {} ms to a new leader serving writes",
            old + 1,
            new + 1,
            killed_at.elapsed().as_millis()
        );
        cluster.restart(old);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let newest = acked.iter().map(|(_, _, seq)| *seq).max().unwrap();
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let mut missing = Vec::new();
    for (key, value, _) in &acked {
        let got = wait_for("a read on the leader", LEADER_WAIT, || {
            get(&addrs[leader], key).ok()
        });
        if got.as_deref() != Some(value.as_str()) {
            missing.push((key.clone(), got));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost or wrong: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    // Every member, once it has applied the newest acknowledged write, holds every one.
    for addr in &addrs {
        for (key, value, _) in acked.iter().step_by(7) {
            let got = wait_for("a min_seq read", LEADER_WAIT, || {
                get_min_seq(addr, key, newest).ok()
            });
            assert_eq!(got.as_deref(), Some(value.as_str()), "{key} on {addr}");
        }
    }
    eprintln!(
        "{} acknowledged writes checked over {kills} leader kills; failover ms: {:?}",
        acked.len(),
        failovers.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
}

/// A leader cut off from both other voters (fault proxies on every Raft link, in both
/// directions) answers no write OK; the other two elect a leader that takes writes; once the
/// links heal, the old leader follows and holds the new write, and the write it was sent while
/// cut off is nowhere.
#[test]
fn a_partitioned_leader_stops_acknowledging_and_rejoins_as_follower() {
    let ports = [free_port(), free_port(), free_port()];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mesh = Mesh::new(ports);
    let cluster = Cluster::start(ports, |i| {
        let mut args = vec!["--ack-timeout-ms".to_string(), "2000".to_string()];
        args.extend(mesh.dial_args(i, ports));
        args
    });
    let old = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let old_term: u64 = stats(&addr(old)).unwrap()["term"].parse().unwrap();
    let mut client = Client::connect_with(&addr(old), options()).unwrap();
    client.set(b"before", b"1").unwrap();

    mesh.isolate(old, Mode::Down);
    // Sent straight to the old leader's client port, which still answers.
    let during = client.set(b"during", b"x");
    assert!(
        matches!(
            during,
            Err(ClientError::NotLeader(_)) | Err(ClientError::Server(_))
        ),
        "a cut-off leader acknowledged a write: {during:?}"
    );
    let new = wait_for("a leader among the other two", LEADER_WAIT, || {
        (0..3).filter(|&i| i != old).find(|&i| {
            stats(&addr(i)).is_some_and(|s| {
                s["role"] == "leader" && s["term"].parse::<u64>().unwrap() > old_term
            })
        })
    });
    let seq = Client::connect_with(&addr(new), options())
        .unwrap()
        .set(b"after", b"2")
        .unwrap();
    // The old leader, still cut off, refuses writes rather than hang.
    let refused = Client::connect_with(&addr(old), options())
        .unwrap()
        .set(b"late", b"y");
    assert!(
        matches!(
            refused,
            Err(ClientError::NotLeader(_)) | Err(ClientError::Server(_))
        ),
        "{refused:?}"
    );

    mesh.heal();
    let got = wait_for("the old leader to catch up", LEADER_WAIT, || {
        get_min_seq(&addr(old), "after", seq).ok()
    });
    assert_eq!(got.as_deref(), Some("2"));
    assert_eq!(stats(&addr(old)).unwrap()["role"], "follower");
    for i in 0..3 {
        assert_eq!(
            get_min_seq(&addr(i), "during", seq).unwrap(),
            None,
            "n{}",
            i + 1
        );
        assert_eq!(
            get_min_seq(&addr(i), "before", seq).unwrap().as_deref(),
            Some("1")
        );
    }
}
