//! WATCH against the real kvsd: events from the log then live, in order, no gap and no
//! duplicate across a watcher's reconnection and a server restart; a seq that compaction
//! removed is answered with an ERROR naming the horizon; compaction with transactions and
//! expiries in the log keeps the current state.

mod common;

use bytes::Bytes;
use kvs::client::{stats_lines, Client, ClientError, Event, EventKind, Written};
use kvs::protocol::ext::{Expiry, SetOptions, Txn, TxnWrite};

fn connect(addr: &str) -> Client {
    Client::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

fn watch(addr: &str, prefix: &str, from_seq: u64) -> kvs::client::Watch {
    connect(addr)
        .watch(prefix.as_bytes(), true, from_seq)
        .unwrap()
}

fn next(watch: &mut kvs::client::Watch) -> Event {
    watch
        .next_event()
        .unwrap_or_else(|e| panic!("watch ended: {e}"))
}

#[test]
fn a_watcher_misses_nothing_across_reconnection_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let mut client = connect(&server.addr);
    for n in 0..50 {
        client.set(format!("w/{n}").as_bytes(), b"v").unwrap();
        client.set(b"other", b"not watched").unwrap();
    }
    // From the log: the 50 sets under w/, at seqs 1, 3, 5, ...
    let mut watcher = watch(&server.addr, "w/", 1);
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(next(&mut watcher));
    }
    drop(watcher);
    // Reconnect from the last seq seen + 1, while writes go on, then live.
    let mut watcher = watch(&server.addr, "w/", seen.last().unwrap().seq + 1);
    client.del(b"w/0").unwrap();
    client
        .txn(Txn {
            compares: vec![],
            success: vec![
                TxnWrite::Set {
                    key: Bytes::from("w/t"),
                    value: Bytes::from("in a txn"),
                    expiry: None,
                },
                TxnWrite::Set {
                    key: Bytes::from("elsewhere"),
                    value: Bytes::from("x"),
                    expiry: None,
                },
            ],
            failure: vec![],
        })
        .unwrap();
    for _ in 0..22 {
        seen.push(next(&mut watcher));
    }
    drop(watcher);
    // After a restart, on from where it stopped.
    server.stop();
    let server = common::start(dir.path(), &[]);
    let mut client = connect(&server.addr);
    let mut watcher = watch(&server.addr, "w/", seen.last().unwrap().seq + 1);
    let brief = SetOptions {
        expiry: Some(Expiry::InMs(100)),
        ..Default::default()
    };
    client.set_with(b"w/brief", b"v", brief).unwrap();
    client
        .expire(b"w/1", Some(Expiry::InMs(3_600_000)))
        .unwrap();
    for _ in 0..3 {
        seen.push(next(&mut watcher));
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(sorted, seqs, "in order, no duplicate: {seqs:?}");
    let expected_sets: Vec<u64> = (0..50).map(|n| 2 * n + 1).collect();
    assert_eq!(
        &seqs[..50],
        &expected_sets[..],
        "no gap in the sets from the log"
    );
    let kinds: Vec<(EventKind, &[u8])> = seen[50..].iter().map(|e| (e.kind, &e.key[..])).collect();
    // The del, the watched half of the txn, then after the restart: the brief set, the
    // expire, and the brief key's expiry (in whichever order active expiry and EXPIRE came).
    assert_eq!(kinds[0], (EventKind::Del, &b"w/0"[..]));
    assert_eq!(kinds[1], (EventKind::Set, &b"w/t"[..]));
    assert_eq!(kinds[2], (EventKind::Set, &b"w/brief"[..]));
    let rest: Vec<_> = kinds[3..].to_vec();
    assert_eq!(rest.len(), 2);
    assert!(rest.contains(&(EventKind::Expire, &b"w/1"[..])), "{rest:?}");
    assert!(
        rest.contains(&(EventKind::Expired, &b"w/brief"[..])),
        "{rest:?}"
    );
}

#[test]
fn a_compacted_seq_is_refused_naming_the_horizon_and_state_survives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--segment-bytes",
        "65536",
        "--compact-garbage-ratio",
        "never",
    ];
    let server = common::start(dir.path(), &args);
    let mut client = connect(&server.addr);
    let value = vec![b'x'; 1000];
    // Overwrites make garbage across many segments; transactions and expiries are in it.
    for round in 0..4 {
        for n in 0..100 {
            client.set(format!("k{n}").as_bytes(), &value).unwrap();
        }
        client
            .txn(Txn {
                compares: vec![],
                success: vec![
                    TxnWrite::Set {
                        key: Bytes::from("t/a"),
                        value: Bytes::from(format!("a{round}")),
                        expiry: None,
                    },
                    TxnWrite::Set {
                        key: Bytes::from("t/b"),
                        value: Bytes::from(format!("b{round}")),
                        expiry: Some(Expiry::InMs(3_600_000)),
                    },
                ],
                failure: vec![],
            })
            .unwrap();
    }
    client.set(b"ttl", b"v").unwrap();
    client
        .expire(b"ttl", Some(Expiry::InMs(7_200_000)))
        .unwrap();
    let before = client.meta(b"ttl").unwrap().unwrap();
    let summary = client.compact().unwrap();
    let horizon: u64 = stats_lines(&summary)
        .into_iter()
        .find(|(name, _)| *name == "horizon_seq")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap();
    assert!(horizon > 1, "{summary}");
    let mut refused = watch(&server.addr, "", 1);
    match refused.next_event() {
        Err(ClientError::Server(message)) => {
            assert!(message.contains("compacted"), "{message}");
            assert!(
                message.contains(&format!("after seq {horizon}")),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // From after the horizon it streams; and the state is whole, across a restart too.
    let mut watcher = watch(&server.addr, "", horizon + 1);
    client.set(b"after", b"1").unwrap();
    let mut event = next(&mut watcher);
    while &event.key[..] != b"after" {
        assert!(event.seq > horizon);
        event = next(&mut watcher);
    }
    {
        server.stop();
        let server = common::start(dir.path(), &args);
        let mut client = connect(&server.addr);
        assert_eq!(client.get(b"t/a").unwrap().as_deref(), Some(&b"a3"[..]));
        assert_eq!(client.get(b"t/b").unwrap().as_deref(), Some(&b"b3"[..]));
        assert!(client.meta(b"t/b").unwrap().unwrap().expires_at_ms > 0);
        assert_eq!(
            client.meta(b"ttl").unwrap().unwrap().expires_at_ms,
            before.expires_at_ms
        );
        assert_eq!(client.get(b"k99").unwrap().map(|v| v.len()), Some(1000));
        server.kill9();
        let server = common::start(dir.path(), &args);
        let mut client = connect(&server.addr);
        assert_eq!(client.get(b"t/b").unwrap().as_deref(), Some(&b"b3"[..]));
        assert_eq!(
            client.meta(b"ttl").unwrap().unwrap().expires_at_ms,
            before.expires_at_ms
        );
    }
}

/// Waits until the node at `addr` has applied `seq` (a read with `min_seq`).
fn applied(addr: &str, seq: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut client = connect(addr);
    while let Err(error) = client.get_min_seq(b"any", seq) {
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never applied seq {seq}: {error}"
        );
        client = connect(addr);
    }
}

#[test]
fn a_watcher_on_a_follower_sees_the_leaders_changes_in_order_with_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let leader = common::start(&dir.path().join("leader"), &[]);
    let follower = common::start(
        &dir.path().join("follower"),
        &[
            "--async-replication",
            "--leader-addr",
            &leader.addr,
            "--node-id",
            "f1",
        ],
    );
    let mut client = connect(&leader.addr);
    // What the watcher must see, as the leader wrote it: (seq, kind, key).
    let mut expected: Vec<(u64, EventKind, Vec<u8>)> = Vec::new();
    let write_all = |client: &mut Client, round: usize, expected: &mut Vec<_>| {
        for n in 0..20 {
            let key = format!("w/{round}/{n}");
            let seq = client.set(key.as_bytes(), b"v").unwrap();
            expected.push((seq, EventKind::Set, key.into_bytes()));
            client.set(b"other", b"not watched").unwrap();
        }
        let key = format!("w/{round}/0");
        let seq = client.del(key.as_bytes()).unwrap().unwrap();
        expected.push((seq, EventKind::Del, key.into_bytes()));
        let key = format!("w/{round}/1");
        let hour = Some(Expiry::InMs(3_600_000));
        let Written::Ok(seq) = client.expire(key.as_bytes(), hour).unwrap().unwrap() else {
            panic!("EXPIRE of an existing key");
        };
        expected.push((seq, EventKind::Expire, key.into_bytes()));
        let key = format!("w/{round}/t");
        let outcome = client
            .txn(Txn {
                compares: vec![],
                success: vec![
                    TxnWrite::Set {
                        key: Bytes::from(key.clone()),
                        value: Bytes::from("in a txn"),
                        expiry: None,
                    },
                    TxnWrite::Set {
                        key: Bytes::from("elsewhere"),
                        value: Bytes::from("x"),
                        expiry: None,
                    },
                ],
                failure: vec![],
            })
            .unwrap();
        expected.push((outcome.seq, EventKind::Set, key.into_bytes()));
        // Stored already expired: the leader's active expiry removes it with a record of
        // its own, which the follower applies like any other.
        let key = format!("w/{round}/gone");
        let past = SetOptions {
            expiry: Some(Expiry::AtUnixMs(1)),
            ..Default::default()
        };
        let Written::Ok(seq) = client.set_with(key.as_bytes(), b"v", past).unwrap() else {
            panic!("an unconditional SETX");
        };
        expected.push((seq, EventKind::Set, key.into_bytes()));
        seq
    };
    // Round 0 is in the follower's log before the watcher comes; round 1 arrives live.
    let last = write_all(&mut client, 0, &mut expected);
    applied(&follower.addr, last);
    let mut watcher = watch(&follower.addr, "w/", 1);
    let mut seen = Vec::new();
    for _ in 0..expected.len() / 2 {
        seen.push(next(&mut watcher));
    }
    write_all(&mut client, 1, &mut expected);
    // Every write, plus the two expired records (one per round), whenever expiry wrote them.
    while seen.len() < expected.len() + 2 {
        seen.push(next(&mut watcher));
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, no duplicate: {seqs:?}"
    );
    let (expired, changes): (Vec<&Event>, Vec<&Event>) =
        seen.iter().partition(|e| e.kind == EventKind::Expired);
    let changes: Vec<(u64, EventKind, Vec<u8>)> = changes
        .iter()
        .map(|e| (e.seq, e.kind, e.key.to_vec()))
        .collect();
    assert_eq!(
        changes, expected,
        "every change of the leader's, none missing"
    );
    let expired: Vec<&[u8]> = expired.iter().map(|e| &e.key[..]).collect();
    assert_eq!(expired, [&b"w/0/gone"[..], &b"w/1/gone"[..]]);
    // A watcher that reconnects to the follower from where it stopped gets the rest.
    let resume = seen[10].seq + 1;
    drop(watcher);
    let mut watcher = watch(&follower.addr, "w/", resume);
    for event in &seen[11..] {
        assert_eq!(
            &next(&mut watcher),
            event,
            "the same events again, from {resume}"
        );
    }
}
