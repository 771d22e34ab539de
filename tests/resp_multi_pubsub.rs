//! RESP transactions (MULTI/EXEC/DISCARD/WATCH) and pub/sub (`docs/resp.md`) driven by
//! redis-rs and redis-cli against the real kvsd: a WATCH-based compare-and-set loop under
//! contention loses no increment; EXEC's writes are one log record, so kill -9 during a stream
//! of transactions tears none and loses none acknowledged; a key changed through the native
//! protocol aborts a WATCHing EXEC; pub/sub delivers to channel and pattern subscribers, and
//! a subscriber that stops reading is cut off while PUBLISH goes on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::resp::{addr as resp_addr, connect, start};
use redis::{Commands, Value};

#[test]
fn an_atomic_pipeline_is_one_transaction_and_reads_its_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let () = con.set("a", "old").unwrap();
    let (old, new, gone, count): (String, String, Option<String>, usize) = redis::pipe()
        .atomic()
        .get("a")
        .set("a", "new")
        .ignore()
        .get("a")
        .del("a")
        .ignore()
        .get("a")
        .exists(&["a", "b"])
        .query(&mut con)
        .unwrap();
    assert_eq!(
        (old.as_str(), new.as_str(), gone, count),
        ("old", "new", None, 0)
    );
    // Errors at run time sit in the array; the rest applies (as Redis).
    let mut raw = TcpStream::connect(resp_addr(&kvsd)).unwrap();
    raw.write_all(b"MULTI\r\nSET b 1\r\nSET c v BOGUS\r\nSET d 2\r\nEXEC\r\n")
        .unwrap();
    let answer = read_until(&mut raw, b"+OK\r\n-ERR syntax error\r\n+OK\r\n");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n-ERR syntax error\r\n+OK\r\n"
    );
    let values: Vec<Option<String>> = con.mget(&["b", "c", "d"]).unwrap();
    assert_eq!(values, vec![Some("1".into()), None, Some("2".into())]);
}

#[test]
fn watch_makes_a_compare_and_set_loop_that_loses_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let () = con.set("counter", 0).unwrap();
    let (threads, each) = (3, 40);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let mut con = connect(&kvsd);
            std::thread::spawn(move || {
                for _ in 0..each {
                    let _: () = redis::transaction(&mut con, &["counter"], |con, pipe| {
                        let value: i64 = con.get("counter")?;
                        pipe.set("counter", value + 1).ignore().query(con)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let total: i64 = con.get("counter").unwrap();
    assert_eq!(total, threads * each);
}

#[test]
fn a_write_through_the_native_protocol_aborts_a_watching_exec() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let () = con.set("k", "1").unwrap();
    let () = redis::cmd("WATCH").arg("k").query(&mut con).unwrap();
    let out = common::kvsctl(&kvsd.addr, &["set", "k", "2"], b"");
    assert!(out.status.success(), "{out:?}");
    let () = redis::cmd("MULTI").query(&mut con).unwrap();
    let queued: String = redis::cmd("SET").arg("k").arg("3").query(&mut con).unwrap();
    assert_eq!(queued, "QUEUED");
    let exec: Value = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(
        exec,
        Value::Nil,
        "a changed WATCHed key answers a null array"
    );
    let value: String = con.get("k").unwrap();
    assert_eq!(value, "2");
}

/// Transactions of three keys each, from two connections, while kvsd is killed -9: after
/// the restart every transaction's keys agree (none torn) and each is at least the last one
/// acknowledged (none lost).
#[test]
fn kill_9_during_a_stream_of_transactions_tears_none_and_loses_none_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let mut con = connect(&kvsd);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acknowledged = 0u64;
                for n in 1.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    for part in ["a", "b", "c"] {
                        pipe.set(format!("w{writer}:{part}"), n).ignore();
                    }
                    // A wider value now and then, so records differ in size.
                    pipe.set(format!("w{writer}:pad"), "x".repeat(n as usize % 3000))
                        .ignore();
                    match pipe.query::<()>(&mut con) {
                        Ok(()) => acknowledged = n,
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    // Let some transactions through, then kill in the middle of the stream.
    let mut probe = connect(&kvsd);
    loop {
        let n: Option<u64> = probe.get("w1:c").unwrap();
        if n.unwrap_or(0) >= 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kvsd.kill9();
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    for (writer, acknowledged) in acknowledged.into_iter().enumerate() {
        let keys: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|part| format!("w{writer}:{part}"))
            .collect();
        let values: Vec<Option<u64>> = con.mget(&keys).unwrap();
        assert!(
            values.iter().all(|v| *v == values[0]),
            "writer {writer}: a transaction torn by kill -9: {values:?}"
        );
        let recovered = values[0].unwrap_or(0);
        assert!(
            recovered >= acknowledged,
            "writer {writer}: transaction {acknowledged} was acknowledged, recovery has {recovered}"
        );
    }
}

#[test]
fn redis_rs_pubsub_gets_channel_and_pattern_messages() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut sub_con = connect(&kvsd);
    let mut publisher = connect(&kvsd);
    let mut pubsub = sub_con.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub.psubscribe("sport.*").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let receivers: usize = publisher.publish("news", "hello").unwrap();
    assert_eq!(receivers, 1);
    let receivers: usize = publisher.publish("sport.tennis", "ace").unwrap();
    assert_eq!(receivers, 1);
    let receivers: usize = publisher.publish("weather", "rain").unwrap();
    assert_eq!(receivers, 0);
    let first = pubsub.get_message().unwrap();
    assert_eq!(first.get_channel_name(), "news");
    assert_eq!(first.get_payload::<String>().unwrap(), "hello");
    let second = pubsub.get_message().unwrap();
    assert_eq!(second.get_channel_name(), "sport.tennis");
    assert_eq!(second.get_pattern::<String>().unwrap(), "sport.*");
    assert_eq!(second.get_payload::<String>().unwrap(), "ace");
    let numsub: Vec<Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("news")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(numsub[1], Value::Int(1));
    pubsub.unsubscribe("news").unwrap();
    pubsub.punsubscribe("sport.*").unwrap();
    drop(pubsub);
    drop(sub_con);
    // Gone with its connection: nobody hears the channel any more.
    let receivers: usize = loop {
        let receivers: usize = publisher.publish("news", "again").unwrap();
        if receivers == 0 {
            break receivers;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(receivers, 0);
}

/// Reads one RESP line from a raw socket.
fn read_until(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(end) {
        match stream.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => panic!(
                "the stream ended before {:?}: {seen:?}",
                String::from_utf8_lossy(end)
            ),
        }
    }
    seen
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off_while_publish_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let addr = resp_addr(&kvsd);
    // The slow one: subscribes, then reads nothing.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"SUBSCRIBE feed\r\n").unwrap();
    read_until(&mut slow, b":1\r\n");
    // A subscriber that keeps up, reading in a thread.
    let mut fast = connect(&kvsd);
    let fast_thread = std::thread::spawn(move || {
        let mut pubsub = fast.as_pubsub();
        pubsub.subscribe("feed").unwrap();
        let mut heard = 0;
        loop {
            let message = pubsub.get_message().unwrap();
            heard += 1;
            if message.get_payload::<Vec<u8>>().unwrap() == b"last" {
                return heard;
            }
        }
    });
    let mut publisher = connect(&kvsd);
    while redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("feed")
        .query::<Vec<Value>>(&mut publisher)
        .unwrap()[1]
        != Value::Int(2)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // 64 KiB messages: past the 32 MiB hard limit (plus what the sockets buffer) the slow
    // subscriber is cut, and PUBLISH then counts only the fast one.
    let message = vec![b'm'; 64 * 1024];
    let mut published = 0;
    loop {
        let receivers: usize = publisher.publish("feed", &message[..]).unwrap();
        published += 1;
        if receivers == 1 {
            break;
        }
        assert!(
            published < 4000,
            "the slow subscriber was never cut off (250 MiB published)"
        );
    }
    for _ in 0..10 {
        let receivers: usize = publisher.publish("feed", &message[..]).unwrap();
        assert_eq!(receivers, 1);
    }
    let receivers: usize = publisher.publish("feed", "last").unwrap();
    assert_eq!(receivers, 1);
    assert_eq!(fast_thread.join().unwrap(), published + 11);
    // The slow socket was closed: reading it drains what was sent, then ends.
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut drained = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match slow.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("the cut subscriber's socket neither ended nor reset: {error}"),
        }
    }
    assert!(
        drained < 48 * 1024 * 1024,
        "{drained} bytes reached a cut subscriber"
    );
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut publisher)
        .unwrap();
    assert!(
        info.contains("kvs_pubsub_subscribers_cut_total:1"),
        "INFO stats counts the cut: {info}"
    );
}

#[test]
fn redis_cli_runs_a_transaction_and_a_subscriber_hears_it() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let addr = resp_addr(&kvsd);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut child = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli runs (tools/install-peers installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"MULTI\nSET a 1\nGET a\nNOSUCH\nEXEC\nMULTI\nSET a 2\nDEL a\nEXEC\nPUBLISH ch hi\n",
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with("OK\nQUEUED\nQUEUED\nERR unknown command 'NOSUCH'"),
        "{text}"
    );
    assert!(
        text.contains("EXECABORT Transaction discarded because of previous errors."),
        "{text}"
    );
    assert!(text.ends_with("OK\nQUEUED\nQUEUED\nOK\n1\n0\n"), "{text}");
}

/// On a follower: an EXEC's record arrives as one unit (both keys or neither, never one), a
/// replicated write to a WATCHed key aborts the follower's EXEC, and a write queued there is
/// refused at once and discards the transaction.
#[test]
fn a_follower_applies_a_transaction_as_one_record_and_its_watch_sees_replicated_writes() {
    let dir = tempfile::tempdir().unwrap();
    let leader = common::start(&dir.path().join("leader"), &["--resp-port", "0"]);
    let follower = common::start(
        &dir.path().join("follower"),
        &[
            "--resp-port",
            "0",
            "--async-replication",
            "--leader-addr",
            &leader.addr,
            "--node-id",
            "f1",
        ],
    );
    let mut on_leader = connect(&leader);
    let mut on_follower = connect(&follower);
    let () = on_leader.set("watched", "0").unwrap();
    let wait_for = |con: &mut redis::Connection, key: &str, value: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got: Option<String> = con.get(key).unwrap();
            if got.as_deref() == Some(value) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{key} never became {value}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(&mut on_follower, "watched", "0");
    for n in 1..=20 {
        let () = redis::pipe()
            .atomic()
            .set("x", n)
            .ignore()
            .set("y", n)
            .ignore()
            .query(&mut on_leader)
            .unwrap();
        let (x, y): (Option<i64>, Option<i64>) = redis::pipe()
            .atomic()
            .get("x")
            .get("y")
            .query(&mut on_follower)
            .unwrap();
        assert_eq!(x, y, "the follower showed half a transaction");
    }
    let () = redis::cmd("WATCH")
        .arg("watched")
        .query(&mut on_follower)
        .unwrap();
    let () = on_leader.set("watched", "1").unwrap();
    wait_for(&mut connect(&follower), "watched", "1");
    let () = redis::cmd("MULTI").query(&mut on_follower).unwrap();
    let _: String = redis::cmd("GET")
        .arg("watched")
        .query(&mut on_follower)
        .unwrap();
    let exec: Value = redis::cmd("EXEC").query(&mut on_follower).unwrap();
    assert_eq!(
        exec,
        Value::Nil,
        "a replicated write to a WATCHed key aborts EXEC"
    );
    let mut raw = TcpStream::connect(follower.resp_addr.as_deref().unwrap()).unwrap();
    raw.write_all(b"MULTI\r\nSET k v\r\nEXEC\r\n").unwrap();
    let answer = read_until(&mut raw, b"previous errors.\r\n");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "+OK\r\n-READONLY You can't write against a read only replica.\r\n-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
}

#[test]
fn the_idle_timeout_spares_a_subscriber_but_not_a_silent_client() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = common::start(
        dir.path(),
        &["--resp-port", "0", "--idle-timeout-secs", "1"],
    );
    let addr = resp_addr(&kvsd);
    let mut subscriber = TcpStream::connect(&addr).unwrap();
    subscriber
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    subscriber.write_all(b"SUBSCRIBE news\r\n").unwrap();
    read_until(&mut subscriber, b":1\r\n");
    // A client that says nothing is closed after the timeout, with Redis-style text...
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut closed = Vec::new();
    silent.read_to_end(&mut closed).unwrap();
    assert!(
        String::from_utf8_lossy(&closed).contains("--idle-timeout-secs"),
        "{closed:?}"
    );
    // ...while the subscriber, silent for longer still, hears what is published.
    std::thread::sleep(Duration::from_secs(3));
    let mut publisher = connect(&kvsd);
    let receivers: i64 = publisher.publish("news", "hello").unwrap();
    assert_eq!(receivers, 1);
    let message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n";
    let mut got = vec![0; message.len()];
    subscriber.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(message),
        "the subscriber's next bytes"
    );
}
