//! A follower that rejoins deep inside a big log segment: the leader must find where to resume
//! within the follower's patience. Found by the replicated crash drill: once a segment held
//! ~240,000 records, the leader's search for the follower's next record read a 256 KiB chunk
//! per record it skipped, took longer than the follower waits for WELCOME, and the follower
//! stayed disconnected for good.

mod common;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{frame, parse_stats, read_reply, set_body, Conn, OK, SET, STATS};

/// Records in the segment before the follower rejoins. With the old search (a chunk read per
/// record) the leader needed well over the follower's 5 s handshake wait for this many, even in
/// release.
const RECORDS: u64 = 150_000;
const IN_FLIGHT: usize = 256;
const CONVERGE: Duration = Duration::from_secs(60);

fn stats(addr: &str) -> BTreeMap<String, String> {
    let mut conn = Conn::connect(addr);
    let id = conn.id();
    let reply = conn.call(STATS, 0, id, b"");
    assert_eq!(reply.status, OK, "{reply:?}");
    parse_stats(&reply.body)
}

/// `count` small SETs on one connection, `IN_FLIGHT` at a time; returns the last seq.
fn write_many(addr: &str, first: u64, count: u64) -> u64 {
    let mut conn = Conn::connect(addr);
    let mut in_flight = VecDeque::new();
    let mut last = 0;
    let mut next = first;
    let mut batch = Vec::new();
    while next < first + count || !in_flight.is_empty() {
        batch.clear();
        while in_flight.len() < IN_FLIGHT && next < first + count {
            let key = format!("r{:06}", next % 1000);
            batch.extend(frame(
                SET,
                0,
                next,
                &set_body(key.as_bytes(), &next.to_le_bytes()),
            ));
            in_flight.push_back(next);
            next += 1;
        }
        conn.stream.write_all(&batch).unwrap();
        let reply = read_reply(&mut conn.stream).expect("a reply");
        assert_eq!(Some(reply.id), in_flight.pop_front(), "replies in order");
        last = last.max(reply.seq());
    }
    last
}

#[test]
fn a_follower_rejoins_deep_in_a_big_segment() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let leader = common::start(dirs[0].path(), &["--node-id", "leader"]);
    let follower_flags = [
        "--node-id",
        "f1",
        "--async-replication",
        "--leader-addr",
        leader.addr.as_str(),
    ];
    let follower = common::start(dirs[1].path(), &follower_flags);
    let last = write_many(&leader.addr, 1, RECORDS);
    // Wait until the follower holds it all, then take it away and write a little more.
    let deadline = Instant::now() + CONVERGE;
    while stats(&follower.addr)["applied_seq"] != last.to_string() {
        assert!(Instant::now() < deadline, "the follower did not catch up");
        thread::sleep(Duration::from_millis(50));
    }
    follower.kill9();
    let last = write_many(&leader.addr, RECORDS + 1, 100);
    assert_eq!(stats(&leader.addr)["segments"], "1", "all in one segment");

    let follower = common::start(dirs[1].path(), &follower_flags);
    let deadline = Instant::now() + CONVERGE;
    loop {
        let theirs = stats(&follower.addr);
        if theirs["applied_seq"] == last.to_string() && theirs["link_state"] == "connected" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not rejoin within {CONVERGE:?}: {theirs:?}\nfollower log:\n{}",
            follower.drain_log(Duration::from_millis(100)).join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
}
