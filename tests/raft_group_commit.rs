//! The Raft leader's group commit (issue 11): many clients' writes proposed as one batch entry
//! (one `Txn` record) must each get the answer they would have had alone, and come back whole
//! from the log after every member is killed with kill -9 and restarted (recovery and
//! re-applying read the batch records back).
//!
//! What it proves is listed in docs/replication.md ("What the tests prove").

mod common;

use std::sync::{Arc, Mutex};

use common::raft::{free_port, get_min_seq, options, stats, wait_for, Cluster, LEADER_WAIT};
use kvs::client::Client;

const WRITERS: usize = 16;
const KEYS_PER_WRITER: usize = 25;

#[test]
fn batched_writes_answer_each_client_and_survive_kill9_of_every_member() {
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start(ports, |_| Vec::new());
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let addr = cluster.addr(leader);
    let newest = Arc::new(Mutex::new(0u64));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let addr = addr.clone();
            let newest = newest.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect_with(&addr, options()).unwrap();
                for i in 0..KEYS_PER_WRITER {
                    let key = format!("w{w}-{i}");
                    client.set(key.as_bytes(), b"first").unwrap();
                    let deleted = client.del(key.as_bytes()).unwrap();
                    assert!(
                        deleted.is_some(),
                        "{key}: a DEL of a key just set said NOT_FOUND"
                    );
                    let again = client.del(key.as_bytes()).unwrap();
                    assert!(again.is_none(), "{key}: a second DEL found the key");
                    // Every other key is set again; the rest stay deleted.
                    if i % 2 == 0 {
                        let value = format!("final-{w}-{i}");
                        let seq = client.set(key.as_bytes(), value.as_bytes()).unwrap();
                        let mut newest = newest.lock().unwrap();
                        *newest = (*newest).max(seq);
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let newest = *newest.lock().unwrap();
    let writes = WRITERS * KEYS_PER_WRITER * 4 - WRITERS * KEYS_PER_WRITER / 2;
    let last_seq: u64 = stats(&addr).unwrap()["last_seq"].parse().unwrap();
    eprintln!("{writes} writes took {last_seq} log entries");

    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    wait_for("a leader after the restart", LEADER_WAIT, || {
        cluster.leader()
    });
    for node in 0..3 {
        let addr = cluster.addr(node);
        for w in 0..WRITERS {
            for i in 0..KEYS_PER_WRITER {
                let key = format!("w{w}-{i}");
                let got = wait_for("a min_seq read", LEADER_WAIT, || {
                    get_min_seq(&addr, &key, newest).ok()
                });
                let want = (i % 2 == 0).then(|| format!("final-{w}-{i}"));
                assert_eq!(got, want, "n{}: {key}", node + 1);
            }
        }
    }
}
