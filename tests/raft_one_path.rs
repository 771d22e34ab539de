//! One request path on Raft nodes (issue 11): a Raft member serves clients through the same
//! connections and commands as a single node, so the ops of issue 13 (TXN, INCRBY, SET NX,
//! MGET/MSET, expiry, WATCH), `--resp-port` and per-request metrics work there, with a write
//! acknowledged only once a majority has it.
//!
//! - every acknowledged result of those ops (counters exact) is on the new leader after a
//!   kill -9 of the old one; an expiry set through Raft is kept, and one that ran out is
//!   removed by the leader's expirer through Raft;
//! - `/metrics` on the leader counts requests per op;
//! - redis-rs against a Raft leader's RESP port (SET, GET, INCR, MULTI/EXEC); a follower's
//!   RESP port answers writes with READONLY naming the leader;
//! - WATCH on a follower sees a write made on the leader.

mod common;

use std::time::Duration;

use common::http::get as http_get;
use common::raft::{free_port, options, wait_for, Cluster, LEADER_WAIT};
use kvs::client::{Client, ClientError, Written};
use kvs::protocol::ext::{
    Compare, CompareOp, Condition, Expiry, Operand, SetOptions, Txn, TxnWrite,
};

const WRITERS: usize = 4;
const INCRS_PER_WRITER: usize = 30;

fn flags(i: usize) -> Vec<String> {
    let _ = i;
    vec![
        "--resp-port".into(),
        "0".into(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--election-timeout-ms".into(),
        "1000".into(),
        "--heartbeat-ms".into(),
        "200".into(),
    ]
}

fn client(cluster: &Cluster, i: usize) -> Client {
    Client::connect_with(&cluster.addr(i), options()).unwrap()
}

#[test]
fn ext_ops_answered_by_a_raft_leader_survive_its_kill9() {
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start(ports, flags);
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());

    // INCRBY from several clients at once (their writes share entries): exact counts.
    let addr = cluster.addr(leader);
    let counters: Vec<_> = (0..WRITERS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect_with(&addr, options()).unwrap();
                let mut values = Vec::new();
                for _ in 0..INCRS_PER_WRITER {
                    values.push(client.incr_by(b"counter", 1).unwrap().0);
                }
                values
            })
        })
        .collect();
    let mut seen: Vec<i64> = counters
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    seen.sort_unstable();
    let total = (WRITERS * INCRS_PER_WRITER) as i64;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<i64>>(),
        "each INCRBY saw its own value"
    );

    let mut c = client(&cluster, leader);
    let nx = SetOptions {
        condition: Condition::Absent,
        ..SetOptions::default()
    };
    assert!(matches!(
        c.set_with(b"nx", b"first", nx).unwrap(),
        Written::Ok(_)
    ));
    assert!(matches!(
        c.set_with(b"nx", b"second", nx).unwrap(),
        Written::ConditionFailed(_)
    ));
    c.mset(&[(b"m1", b"one"), (b"m2", b"two")]).unwrap();
    let got = c.mget(&[b"m1", b"m2", b"m3"]).unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"one"[..]));
    assert_eq!(got[1].as_deref(), Some(&b"two"[..]));
    assert_eq!(got[2], None);
    let txn = |value: &str| Txn {
        compares: vec![Compare {
            key: "nx".into(),
            op: CompareOp::Eq,
            operand: Operand::Value("first".into()),
        }],
        success: vec![TxnWrite::Set {
            key: "t".into(),
            value: value.to_string().into(),
            expiry: None,
        }],
        failure: vec![TxnWrite::Del { key: "t".into() }],
    };
    assert!(c.txn(txn("yes")).unwrap().succeeded);
    c.set(b"long", b"kept").unwrap();
    c.expire(b"long", Some(Expiry::InMs(3_600_000))).unwrap();
    let short = SetOptions {
        expiry: Some(Expiry::InMs(300)),
        ..SetOptions::default()
    };
    c.set_with(b"short", b"gone soon", short).unwrap();
    // The leader's expirer removes it through Raft: every member's index loses it.
    wait_for("the expired key to be removed", LEADER_WAIT, || {
        let text = common::raft::stats(&cluster.addr(leader))?;
        let keys: u64 = text["keys"].parse().ok()?;
        // counter, nx, m1, m2, t, long
        (keys == 6).then_some(())
    });

    // Per-op request counts on the leader's /metrics.
    let metrics_addr = cluster.nodes[leader]
        .as_ref()
        .unwrap()
        .metrics_addr
        .clone()
        .expect("metrics_addr");
    let (status, page) = http_get(&metrics_addr, "/metrics");
    assert_eq!(status, 200);
    let incrby = page
        .lines()
        .find(|line| {
            line.starts_with("kvs_requests_total")
                && line.contains("op=\"incrby\"")
                && line.contains("status=\"ok\"")
        })
        .unwrap_or_else(|| panic!("no INCRBY count on /metrics:\n{page}"));
    let counted: f64 = incrby.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= total as f64, "{incrby}");

    // A follower refuses writes, naming the leader.
    let follower = (leader + 1) % 3;
    match client(&cluster, follower).incr_by(b"counter", 1) {
        Err(ClientError::NotLeader(addr)) => assert_eq!(addr, cluster.addr(leader)),
        other => panic!("a follower answered a write with {other:?}"),
    }

    cluster.kill(leader);
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    let new = loop {
        if let Some(new) = cluster.leader().filter(|&i| i != leader) {
            break new;
        }
        if std::time::Instant::now() > deadline {
            for (i, node) in cluster.nodes.iter().enumerate() {
                if let Some(node) = node {
                    let log = node.drain_log(Duration::from_millis(100));
                    eprintln!("n{} log:\n{}", i + 1, log.join("\n"));
                }
            }
            panic!("no new leader within {LEADER_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let mut c = client(&cluster, new);
    assert_eq!(c.incr_by(b"counter", 0).unwrap().0, total);
    assert_eq!(c.get(b"nx").unwrap().as_deref(), Some(&b"first"[..]));
    let got = c.mget(&[b"m1", b"m2"]).unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"one"[..]));
    assert_eq!(got[1].as_deref(), Some(&b"two"[..]));
    assert_eq!(c.get(b"t").unwrap().as_deref(), Some(&b"yes"[..]));
    let meta = c.meta(b"long").unwrap().expect("long is kept");
    assert!(meta.ttl_ms().is_some_and(|ttl| ttl > 3_000_000), "{meta:?}");
    assert_eq!(c.get(b"short").unwrap(), None);
    // The new leader takes the same ops.
    assert_eq!(c.incr_by(b"counter", 5).unwrap().0, total + 5);
}

fn redis(addr: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

#[test]
fn resp_and_watch_on_raft_members() {
    let ports = [free_port(), free_port(), free_port()];
    let cluster = Cluster::start(ports, flags);
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let follower = (leader + 1) % 3;
    let resp_addr = |i: usize| {
        cluster.nodes[i]
            .as_ref()
            .unwrap()
            .resp_addr
            .clone()
            .expect("resp_addr")
    };

    // WATCH on a follower, from the next change on.
    let mut watch = client(&cluster, follower).watch(b"w/", true, 0).unwrap();

    let mut con = redis(&resp_addr(leader));
    let _: () = redis::cmd("SET")
        .arg("w/a")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg("w/a").query(&mut con).unwrap();
    assert_eq!(got, "1");
    let n: i64 = redis::cmd("INCR").arg("n").query(&mut con).unwrap();
    assert_eq!(n, 1);
    let (set, incr): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("w/b")
        .arg("2")
        .cmd("INCR")
        .arg("n")
        .query(&mut con)
        .unwrap();
    assert_eq!((set.as_str(), incr), ("OK", 2));

    let event = watch.next_event().unwrap();
    assert_eq!((&event.key[..], &event.value[..]), (&b"w/a"[..], &b"1"[..]));
    let event = watch.next_event().unwrap();
    assert_eq!((&event.key[..], &event.value[..]), (&b"w/b"[..], &b"2"[..]));

    // A follower's RESP port: writes answer READONLY naming the leader; reads are local.
    let mut con = redis(&resp_addr(follower));
    let refused = redis::cmd("SET")
        .arg("x")
        .arg("1")
        .query::<()>(&mut con)
        .unwrap_err();
    let text = refused.to_string();
    assert_eq!(refused.kind(), redis::ErrorKind::ReadOnly, "{text}");
    let now = cluster.leader();
    assert!(
        text.contains(&cluster.addr(leader)),
        "{text} (leader was n{}, now {now:?})",
        leader + 1
    );
    let n: i64 = wait_for("the follower to apply n", LEADER_WAIT, || {
        redis::cmd("GET")
            .arg("n")
            .query::<Option<i64>>(&mut con)
            .ok()
            .flatten()
            .filter(|n| *n == 2)
    });
    assert_eq!(n, 2);
}

/// A member joins while a client writes: the leader's writes pause only while the membership
/// entries go in (their seqs are not the batch's), so every INCR is answered and counted once,
/// and the new member ends with the same count.
#[test]
fn writes_go_on_while_a_member_joins() {
    let ports = [free_port(), free_port(), free_port()];
    let cluster = Cluster::start(ports, flags);
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let addr = cluster.addr(leader);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut client = Client::connect_with(&addr, options()).unwrap();
            let (mut acked, mut failed) = (0i64, 0i64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.incr_by(b"joined", 1) {
                    Ok(_) => acked += 1,
                    Err(error) => {
                        eprintln!("an INCR during the join: {error}");
                        failed += 1;
                        client = Client::connect_with(&addr, options()).unwrap();
                    }
                }
            }
            (acked, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--node-id", "n4", "--join", &addr];
    let extra = flags(3);
    args.extend(extra.iter().map(String::as_str));
    let n4 = common::try_start_on(0, &dir.path().join("n4"), &args).unwrap();
    cluster.wait_voters(4);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = writer.join().unwrap();
    assert!(acked > 0);
    let (count, seq) = client(&cluster, leader).incr_by(b"joined", 0).unwrap();
    assert!(
        (acked..=acked + failed).contains(&count),
        "{acked} acknowledged and {failed} failed INCRs made the count {count}"
    );
    let mut on_n4 = Client::connect_with(&n4.addr, options()).unwrap();
    let got = wait_for("n4 to apply the count", LEADER_WAIT, || {
        on_n4.get_min_seq(b"joined", seq).ok()
    });
    assert_eq!(got.as_deref(), Some(count.to_string().as_bytes()));
}
