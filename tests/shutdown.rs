//! Graceful shutdown of the real kvsd: SIGTERM or SIGINT while a client has pipelined writes in
//! flight. kvsd must exit 0, every write it answered OK must be there after a restart, and the
//! log must end cleanly (nothing to truncate). The client is `common::raw`, packed from the
//! protocol docs.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::field;
use common::raw::{frame, read_reply, set_body, Conn, ERROR, OK, SET};

const WRITES: u64 = 20_000;
/// Replies read before the signal, so that it lands in the middle of the load.
const REPLIES_BEFORE_SIGNAL: usize = 500;

fn key(i: u64) -> Vec<u8> {
    format!("shutdown-{i:05}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "s".repeat((i % 64) as usize)).into_bytes()
}

/// Pipelines `WRITES` SETs on one connection, sends `signal` once some are answered, and
/// checks the exit status and, after a restart, every write that was answered OK.
fn signal_during_pipelined_writes(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path(), &[]);
    let conn = Conn::connect(&server.addr);

    let mut bytes = Vec::new();
    for i in 0..WRITES {
        bytes.extend(frame(SET, 0, i, &set_body(&key(i), &value(i))));
    }
    let mut writer = conn.stream.try_clone().unwrap();
    // The server stops reading at the signal, so this may end in an error: that is expected.
    let writing = thread::spawn(move || writer.write_all(&bytes).is_ok());

    let answered = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default(); // id -> seq
    let mut reader = conn.stream.try_clone().unwrap();
    let reading = {
        let (answered, acked) = (answered.clone(), acked.clone());
        thread::spawn(move || {
            // Until the server closes the connection.
            while let Ok(reply) = read_reply(&mut reader) {
                assert!(reply.id < WRITES, "a reply to no request: {reply:?}");
                match reply.status {
                    OK => {
                        let seq = reply.seq();
                        let earlier = acked.lock().unwrap().insert(reply.id, seq);
                        assert!(earlier.is_none(), "two replies for id {}", reply.id);
                    }
                    // A write refused during shutdown is allowed; it must say so.
                    ERROR => reply.assert_error(reply.id),
                    _ => panic!("a SET got {reply:?}"),
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::Relaxed) < REPLIES_BEFORE_SIGNAL {
        assert!(Instant::now() < deadline, "the writes are not answered");
        thread::sleep(Duration::from_millis(1));
    }
    server.signal(signal);
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "kvsd after SIG{signal}: {status}");
    let log: Vec<String> = server.drain_log(Duration::from_millis(100));
    drop(server);

    reading.join().expect("the reader failed");
    let _ = writing.join();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= REPLIES_BEFORE_SIGNAL,
        "{} writes acknowledged",
        acked.len()
    );
    // One connection's writes take effect in the order sent: seqs rise with the ids.
    let seqs: Vec<u64> = acked.values().copied().collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "seqs out of the order sent"
    );

    let server = common::start(dir.path(), &[]);
    let truncated = field(&server.ready_line, "truncated_bytes").expect("truncated_bytes");
    assert_eq!(
        truncated,
        "0",
        "a graceful stop leaves no torn tail: {}\nthe stop logged:\n{}",
        server.ready_line,
        log.join("\n")
    );
    let mut conn = Conn::connect(&server.addr);
    for id in acked.keys() {
        assert_eq!(
            conn.value(&key(*id)),
            Some(value(*id)),
            "write {id} was answered OK before SIG{signal}"
        );
    }
    let last_acked = *seqs.last().unwrap();
    let stats = conn.stats();
    let last_seq: u64 = stats["last_seq"].parse().unwrap();
    assert!(last_seq >= last_acked);
    assert_eq!(conn.set(b"after", b"restart"), last_seq + 1);
}

#[test]
fn sigterm_with_pipelined_writes_in_flight_exits_0_and_keeps_every_acknowledged_write() {
    signal_during_pipelined_writes("TERM");
}

#[test]
fn sigint_with_pipelined_writes_in_flight_exits_0_and_keeps_every_acknowledged_write() {
    signal_during_pipelined_writes("INT");
}

#[test]
fn sigterm_with_an_idle_client_connected_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let mut idle = Conn::connect(&server.addr);
    let seq = idle.set(b"k", b"v");
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "{status}");
    idle.expect_closed();

    let server = common::start(dir.path(), &[]);
    assert_eq!(
        field(&server.ready_line, "truncated_bytes").as_deref(),
        Some("0")
    );
    let mut conn = Conn::connect(&server.addr);
    assert_eq!(conn.value(b"k"), Some(b"v".to_vec()));
    assert_eq!(conn.set(b"k", b"w"), seq + 1);
}
