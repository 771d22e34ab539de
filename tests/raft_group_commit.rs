//! The Raft leader's group commit (issue 11): many clients' writes proposed as one batch entry
//! (one `Txn` record) must each get the answer they would have had alone, and come back whole
//! from the log after every member is killed with kill -9 and restarted (recovery and
//! re-applying read the batch records back).
//!
//! What it proves is listed in docs/replication.md ("What the tests prove").

mod common;

use std::sync::{Arc, Mutex};

use common::raft::{free_port, get_min_seq, options, stats, wait_for, Cluster, LEADER_WAIT};
use kvs::client::{Client, ClientError};

const WRITERS: usize = 16;
const KEYS_PER_WRITER: usize = 25;

#[test]
fn batched_writes_answer_each_client_and_survive_kill9_of_every_member() {
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start(ports, |_| Vec::new());
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let newest = Arc::new(Mutex::new(0u64));
    // Keys whose every write was answered: only their answers and values are checked (a write
    // cut off by an election under load may or may not be in, as for any client).
    let answered = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let addrs: Vec<String> = (0..3).map(|i| cluster.addr(i)).collect();
            let mut target = leader;
            let newest = newest.clone();
            let answered = answered.clone();
            std::thread::spawn(move || {
                for i in 0..KEYS_PER_WRITER {
                    let key = format!("w{w}-{i}");
                    let outcome = (|| -> Result<(), ClientError> {
                        let mut client = Client::connect_with(&addrs[target], options())?;
                        client.set(key.as_bytes(), b"first")?;
                        let deleted = client.del(key.as_bytes())?;
                        assert!(
                            deleted.is_some(),
                            "{key}: a DEL of a key just set said NOT_FOUND"
                        );
                        let again = client.del(key.as_bytes())?;
                        assert!(again.is_none(), "{key}: a second DEL found the key");
                        // Every other key is set again; the rest stay deleted.
                        if i % 2 == 0 {
                            let value = format!("final-{w}-{i}");
                            let seq = client.set(key.as_bytes(), value.as_bytes())?;
                            let mut newest = newest.lock().unwrap();
                            *newest = (*newest).max(seq);
                        }
                        Ok(())
                    })();
                    match outcome {
                        Ok(()) => answered.lock().unwrap().push((w, i)),
                        Err(ClientError::NotLeader(addr)) => {
                            target = addrs
                                .iter()
                                .position(|a| *a == addr)
                                .unwrap_or((target + 1) % 3);
                        }
                        Err(error) => {
                            eprintln!("{key}: {error}; trying the next member");
                            target = (target + 1) % 3;
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= WRITERS * KEYS_PER_WRITER / 2,
        "only {} of {} keys had every write answered",
        answered.len(),
        WRITERS * KEYS_PER_WRITER
    );
    let newest = *newest.lock().unwrap();
    if let Some(stats) = stats(&cluster.addr(leader)) {
        eprintln!("the writes took {} log entries", stats["last_seq"]);
    }

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
        for &(w, i) in &answered {
            let key = format!("w{w}-{i}");
            let got = wait_for("a min_seq read", LEADER_WAIT, || {
                get_min_seq(&addr, &key, newest).ok()
            });
            let want = (i % 2 == 0).then(|| format!("final-{w}-{i}"));
            assert_eq!(got, want, "n{}: {key}", node + 1);
        }
    }
}
