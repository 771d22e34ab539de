//! A deliberately slow target shows coordinated-omission correction: a tiny in-test server
//! speaks the kvs protocol (through `kvs::protocol`), answers in order, and stalls once for
//! 200 ms before one reply. In the open loop (`--rate`) every request due during the stall
//! waits for it and its latency is counted from its intended send time, so the stall raises
//! the open-loop p99; the closed loop sees the stall in one request only.
//!
//! No timing assertions: the bounds follow from the schedule, whatever the machine's speed.
//! At 1,000 requests/s with one connection and pipeline 1, the stalled reply is request K;
//! request K+j was due at most j ms after K was sent and cannot be answered before the stall
//! ends, so its latency is at least 200 - j ms: requests K..K+100 all wait at least 100 ms.
//! Those are 100 of 2,000 measured requests (5 %), so the p99 is at least 100 ms.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use kvs::protocol::frame;
use kvs::protocol::response::{self, Status};
use kvs::protocol::{Request, RequestLimits};

const STALL: Duration = Duration::from_millis(200);
/// The request (counted from 1, over all connections) whose reply is held back.
const STALL_AT: u64 = 500;
const RATE: &str = "1000";
const REQUESTS: &str = "2000";

/// A kvs server on 127.0.0.1 that stalls once; its threads live until the test ends.
fn slow_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let answered = Arc::new(AtomicU64::new(0));
    let store = Arc::new(Mutex::new(HashMap::new()));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let answered = Arc::clone(&answered);
            let store = Arc::clone(&store);
            thread::spawn(move || serve(stream, &answered, &store));
        }
    });
    addr
}

fn serve(mut stream: TcpStream, answered: &AtomicU64, store: &Mutex<HashMap<Vec<u8>, Vec<u8>>>) {
    let _ = stream.set_nodelay(true);
    let limits = RequestLimits {
        key_bytes_max: 4096,
        value_bytes_max: 1 << 20,
    };
    let mut input = BytesMut::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.extend_from_slice(&chunk[..n]);
        let mut output = BytesMut::new();
        while let Ok(Some(frame)) = frame::decode(&mut input, 2 << 20) {
            let id = frame.header.id;
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == STALL_AT {
                // Everything queued behind this reply waits too: replies go out in order.
                let _ = stream.write_all(&output);
                output.clear();
                thread::sleep(STALL);
            }
            match Request::decode(&frame, limits) {
                Ok(Request::Set { key, value }) => {
                    store.lock().unwrap().insert(key.to_vec(), value.to_vec());
                    response::encode(&mut output, Status::Ok, 0, id, &[&id.to_le_bytes()]);
                }
                Ok(Request::Get { key, .. }) => match store.lock().unwrap().get(&key[..]) {
                    Some(value) => response::encode(&mut output, Status::Ok, 0, id, &[value]),
                    None => response::encode(&mut output, Status::NotFound, 0, id, &[]),
                },
                _ => response::encode_error(&mut output, id, "not served by this test"),
            }
        }
        if stream.write_all(&output).is_err() {
            return;
        }
    }
}

fn run(open_loop: bool) -> common::BenchRun {
    let target = format!("kvs://{}", slow_server());
    let mut args = vec![
        "--target",
        &target,
        "--clients",
        "1",
        "--pipeline",
        "1",
        "--requests",
        REQUESTS,
        "--ratio",
        "1:1",
        "--keyspace",
        "100",
        "--data-size",
        "32",
        "--verify",
    ];
    if open_loop {
        args.extend_from_slice(&["--rate", RATE]);
    }
    let run = common::bench(&args);
    run.assert_clean();
    assert_eq!(run.u64("/ops"), 2000, "every measured request answered");
    run
}

#[test]
fn a_stall_raises_the_open_loop_p99() {
    let open = run(true);
    let closed = run(false);
    let stall_us = STALL.as_micros() as f64;
    println!(
        "p99 open loop {:.0} us, closed loop {:.0} us; max {:.0} / {:.0} us",
        open.f64("/latency_us/p99"),
        closed.f64("/latency_us/p99"),
        open.f64("/latency_us/max"),
        closed.f64("/latency_us/max"),
    );
    // Both loops see the stalled request itself.
    assert!(open.f64("/latency_us/max") >= stall_us * 0.99);
    assert!(closed.f64("/latency_us/max") >= stall_us * 0.99);
    // Only the open loop counts the requests that were due during the stall (module doc):
    // at least 5 % of them waited at least half the stall.
    assert!(open.f64("/latency_us/p99") >= stall_us / 2.0 * 0.99);
}
