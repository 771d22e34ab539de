//! Expiry, counters, conditional writes, batches and transactions against the real kvsd:
//! through kvsctl (exit statuses, JSON, txn from stdin), across a restart and a kill -9, on a
//! follower, and a kill -9 in the middle of a stream of transactions, none of them torn.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{kvsctl, Kvsd};
use kvs::client::{stats_lines, Client, Written};
use kvs::protocol::ext::{
    Compare, CompareOp, Condition, Expiry, Operand, SetOptions, Txn, TxnWrite,
};
use kvs::protocol::Request;

/// How long anything that happens "soon" (active expiry, a follower catching up) may take
/// before the test fails.
const SOON: Duration = Duration::from_secs(20);

#[track_caller]
fn ok(output: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn connect(addr: &str) -> Client {
    Client::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

fn stat(addr: &str, name: &str) -> u64 {
    let text = connect(addr).stats().unwrap();
    stats_lines(&text)
        .into_iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in STATS:\n{text}"))
}

#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !done() {
        assert!(Instant::now() < deadline, "not within {SOON:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kvsctl_speaks_expiry_conditions_counters_batches_and_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let addr = &server.addr;

    assert!(ok(
        &kvsctl(addr, &["set", "session", "s1", "--ttl", "1h"], b""),
        0
    )
    .starts_with("OK (seq 1)"));
    let ttl = ok(&kvsctl(addr, &["ttl", "session"], b""), 0);
    let ms: u64 = ttl.split(' ').next().unwrap().parse().unwrap();
    assert!(ms > 3_500_000 && ms <= 3_600_000, "{ttl}");
    assert_eq!(
        ok(&kvsctl(addr, &["persist", "session"], b""), 0),
        "OK (seq 2)\n"
    );
    assert_eq!(
        ok(&kvsctl(addr, &["ttl", "session"], b""), 0),
        "no expiry (seq 2)\n"
    );
    assert_eq!(
        ok(&kvsctl(addr, &["persist", "session"], b""), 3),
        "NOT SET (key seq 2)\n"
    );
    ok(&kvsctl(addr, &["ttl", "nobody"], b""), 1);

    // Conditions: exit 3 and the key's seq when they fail.
    assert_eq!(
        ok(&kvsctl(addr, &["set", "session", "x", "--nx"], b""), 3),
        "NOT SET (key seq 2)\n"
    );
    ok(
        &kvsctl(addr, &["set", "lock", "me", "--if-seq", "0"], b""),
        0,
    );
    assert_eq!(
        ok(
            &kvsctl(addr, &["set", "lock", "you", "--if-seq", "0"], b""),
            3
        ),
        "NOT SET (key seq 3)\n"
    );
    ok(
        &kvsctl(addr, &["set", "lock", "you", "--if-seq", "3"], b""),
        0,
    );
    ok(&kvsctl(addr, &["set", "absent", "v", "--xx"], b""), 3);

    // Counters, with Redis's errors.
    assert_eq!(ok(&kvsctl(addr, &["incr", "hits"], b""), 0), "1\n");
    assert_eq!(ok(&kvsctl(addr, &["incr", "hits", "-11"], b""), 0), "-10\n");
    let bad = kvsctl(addr, &["incr", "session"], b"");
    ok(&bad, 2);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("value is not an integer or out of range")
    );
    ok(
        &kvsctl(addr, &["set", "big", "9223372036854775807"], b""),
        0,
    );
    let overflow = kvsctl(addr, &["incr", "big"], b"");
    ok(&overflow, 2);
    assert!(
        String::from_utf8_lossy(&overflow.stderr).contains("increment or decrement would overflow")
    );

    // Batches.
    ok(&kvsctl(addr, &["mset", "a", "1", "b", "two words"], b""), 0);
    assert_eq!(
        ok(&kvsctl(addr, &["mget", "a", "nope", "b"], b""), 0),
        "1\n(nil)\ntwo words\n"
    );
    ok(&kvsctl(addr, &["mset", "a", "1", "b"], b""), 2);
    assert_eq!(
        ok(&kvsctl(addr, &["--json", "mget", "a", "nope"], b""), 0),
        "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"nope\",\"value\":null}\n"
    );

    // A transaction from stdin, etcdctl-style: compares, success writes, failure writes.
    let txn = b"value a = 1\nmissing c\n\nset c 3 --ttl 1h\ndel a\n\nset failed yes\n";
    let first = ok(&kvsctl(addr, &["txn"], txn), 0);
    assert!(first.starts_with("SUCCESS (seq "), "{first}");
    let again = ok(&kvsctl(addr, &["txn"], txn), 3);
    assert!(again.starts_with("FAILURE (seq "), "{again}");
    assert_eq!(
        ok(&kvsctl(addr, &["mget", "a", "c", "failed"], b""), 0),
        "(nil)\n3\nyes\n"
    );
    let json = ok(&kvsctl(addr, &["--json", "ttl", "c"], b""), 0);
    assert!(json.contains("\"ttl_ms\":"), "{json}");
    let bad_txn = kvsctl(addr, &["txn"], b"frob\n");
    ok(&bad_txn, 2);
    assert!(String::from_utf8_lossy(&bad_txn.stderr).contains("txn line 1"));

    // A key that expires is gone at once for GET, MGET and KEYS.
    ok(
        &kvsctl(addr, &["set", "short", "v", "--ttl", "200ms"], b""),
        0,
    );
    std::thread::sleep(Duration::from_millis(300));
    ok(&kvsctl(addr, &["get", "short"], b""), 1);
    assert_eq!(ok(&kvsctl(addr, &["mget", "short"], b""), 0), "(nil)\n");
    assert!(!ok(&kvsctl(addr, &["keys"], b""), 0).contains("short"));
    // ... and active expiry writes it away.
    wait_until("active expiry removes the key", || {
        stat(addr, "expired_keys_total") >= 1
    });

    // The shell takes the same commands.
    let shell = ok(
        &kvsctl(addr, &[], b"incr hits 10\nset s v --nx\nttl lock\n"),
        0,
    );
    let lines: Vec<&str> = shell.lines().collect();
    assert_eq!(lines.len(), 3, "{shell}");
    assert_eq!(lines[0], "0");
    assert!(lines[1].starts_with("OK (seq "), "{shell}");
    assert_eq!(lines[2], "no expiry (seq 4)");
}

#[test]
fn expiry_and_seqs_survive_a_clean_restart_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let mut client = connect(&server.addr);
    let hour = SetOptions {
        expiry: Some(Expiry::InMs(3_600_000)),
        ..Default::default()
    };
    client.set_with(b"ttl", b"v", hour).unwrap();
    client.set(b"plain", b"v").unwrap();
    client
        .expire(b"plain", Some(Expiry::InMs(7_200_000)))
        .unwrap();
    client.incr_by(b"n", 5).unwrap();
    client.mset(&[(b"m1", b"1"), (b"m2", b"2")]).unwrap();
    let before: BTreeMap<&str, _> = ["ttl", "plain", "n", "m1", "m2"]
        .into_iter()
        .map(|key| {
            (
                key,
                client
                    .meta(key.as_bytes())
                    .unwrap()
                    .map(|m| (m.seq, m.expires_at_ms)),
            )
        })
        .collect();
    drop(client);
    let check = |server: &Kvsd| {
        let mut client = connect(&server.addr);
        for (key, meta) in &before {
            let now = client
                .meta(key.as_bytes())
                .unwrap()
                .map(|m| (m.seq, m.expires_at_ms));
            assert_eq!(&now, meta, "{key}");
        }
        assert_eq!(client.get(b"n").unwrap().as_deref(), Some(&b"5"[..]));
    };
    // Clean: the index checkpoint carries seqs and expiries.
    server.stop();
    let server = common::start(dir.path(), &[]);
    check(&server);
    // kill -9: no checkpoint, the log alone.
    server.kill9();
    let server = common::start(dir.path(), &[]);
    check(&server);
    // A key that expired while kvsd was down is gone when it comes back.
    let mut client = connect(&server.addr);
    let brief = SetOptions {
        expiry: Some(Expiry::InMs(300)),
        ..Default::default()
    };
    client.set_with(b"brief", b"v", brief).unwrap();
    server.kill9();
    std::thread::sleep(Duration::from_millis(400));
    let server = common::start(dir.path(), &[]);
    let mut client = connect(&server.addr);
    assert_eq!(client.get(b"brief").unwrap(), None);
    assert_eq!(client.meta(b"brief").unwrap(), None);
}

#[test]
fn conditional_writes_answer_the_current_seq() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let mut client = connect(&server.addr);
    let if_seq = |seq| SetOptions {
        condition: Condition::Seq(seq),
        ..Default::default()
    };
    assert_eq!(
        client.set_with(b"k", b"1", if_seq(0)).unwrap(),
        Written::Ok(1)
    );
    assert_eq!(
        client.set_with(b"k", b"2", if_seq(0)).unwrap(),
        Written::ConditionFailed(1)
    );
    assert_eq!(
        client.set_with(b"k", b"2", if_seq(1)).unwrap(),
        Written::Ok(2)
    );
    // Pipelined: the second CAS sees the first (pending) one's seq.
    for _ in 0..2 {
        client
            .send(&Request::Ext(kvs::protocol::ext::ExtRequest::SetX {
                key: Bytes::from("k"),
                value: Bytes::from("3"),
                options: if_seq(2),
            }))
            .unwrap();
    }
    let first = client.recv().unwrap();
    let second = client.recv().unwrap();
    assert_eq!(first.status, kvs::protocol::Status::Ok);
    assert_eq!(second.status, kvs::protocol::Status::ConditionFailed);
    assert_eq!(second.seq(), Some(3));
    assert_eq!(client.get(b"k").unwrap().as_deref(), Some(&b"3"[..]));
}

#[test]
fn a_follower_applies_expiry_counters_and_transactions() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = common::start(leader_dir.path(), &["--node-id", "leader"]);
    let follower = common::start(
        follower_dir.path(),
        &[
            "--node-id",
            "f1",
            "--async-replication",
            "--leader-addr",
            &leader.addr,
        ],
    );
    let mut client = connect(&leader.addr);
    client.incr_by(b"n", 41).unwrap();
    let (_, seq) = client.incr_by(b"n", 1).unwrap();
    let brief = SetOptions {
        expiry: Some(Expiry::InMs(300)),
        ..Default::default()
    };
    client.set_with(b"brief", b"v", brief).unwrap();
    let outcome = client
        .txn(Txn {
            compares: vec![Compare {
                key: Bytes::from("n"),
                op: CompareOp::Eq,
                operand: Operand::Seq(seq),
            }],
            success: vec![
                TxnWrite::Set {
                    key: Bytes::from("t1"),
                    value: Bytes::from("a"),
                    expiry: None,
                },
                TxnWrite::Set {
                    key: Bytes::from("t2"),
                    value: Bytes::from("b"),
                    expiry: Some(Expiry::InMs(3_600_000)),
                },
            ],
            failure: vec![],
        })
        .unwrap();
    assert!(outcome.succeeded);
    let mut reader = connect(&follower.addr);
    assert_eq!(
        reader.get_min_seq(b"t2", outcome.seq).unwrap().as_deref(),
        Some(&b"b"[..])
    );
    assert_eq!(reader.get(b"n").unwrap().as_deref(), Some(&b"42"[..]));
    assert!(reader.meta(b"t2").unwrap().unwrap().expires_at_ms > 0);
    // The leader's Expired record reaches the follower; it also hides the key by itself.
    wait_until("the leader expires the key", || {
        stat(&leader.addr, "expired_keys_total") >= 1
    });
    let leader_seq = stat(&leader.addr, "durable_seq");
    assert_eq!(reader.get_min_seq(b"brief", leader_seq).unwrap(), None);
    assert_eq!(
        reader.get_min_seq(b"t1", leader_seq).unwrap().as_deref(),
        Some(&b"a"[..])
    );
}

/// Transactions that set ten keys to the same number, pipelined from several connections;
/// kvsd is killed with -9 in the middle, three times. After each restart the ten keys agree
/// (a transaction is applied whole or not at all) and no acknowledged one is lost.
#[test]
fn kill_9_during_a_stream_of_transactions_tears_none() {
    const KEYS: usize = 10;
    const WRITERS: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path(), &[]);
    for round in 0..3u64 {
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let addr = server.addr.clone();
            let acked = acked.clone();
            writers.push(std::thread::spawn(move || {
                let Ok(mut client) = Client::connect(&addr) else {
                    return;
                };
                // Numbers rise across rounds, so an old round's values are told apart.
                let mut n = round * 1_000_000;
                loop {
                    n += 1;
                    let txn = Txn {
                        compares: vec![],
                        success: (0..KEYS)
                            .map(|k| TxnWrite::Set {
                                key: Bytes::from(format!("w{writer}/k{k}")),
                                value: Bytes::from(n.to_string()),
                                expiry: None,
                            })
                            .collect(),
                        failure: vec![],
                    };
                    match client.txn(txn) {
                        Ok(_) => acked[writer as usize].store(n, Ordering::SeqCst),
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let some transactions through, then kill in the middle of the stream.
        wait_until("transactions are acknowledged", || {
            acked
                .iter()
                .all(|a| a.load(Ordering::SeqCst) > round * 1_000_000 + 20)
        });
        server.kill9();
        for writer in writers {
            writer.join().unwrap();
        }
        server = common::start(dir.path(), &[]);
        let mut client = connect(&server.addr);
        for writer in 0..WRITERS {
            let keys: Vec<Vec<u8>> = (0..KEYS)
                .map(|k| format!("w{writer}/k{k}").into_bytes())
                .collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let values = client.mget(&refs).unwrap();
            let first = values[0].clone();
            assert!(
                values.iter().all(|v| *v == first),
                "round {round}, writer {writer}: a torn transaction: {values:?}"
            );
            let value: u64 = std::str::from_utf8(&first.expect("written"))
                .unwrap()
                .parse()
                .unwrap();
            let acknowledged = acked[writer as usize].load(Ordering::SeqCst);
            assert!(
                value >= acknowledged,
                "round {round}, writer {writer}: acknowledged {acknowledged}, recovered {value}"
            );
        }
    }
}
