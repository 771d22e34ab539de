//! Issue 13's string and expiry commands on the RESP port (`docs/resp.md`), driven by clients
//! nobody here wrote (redis-rs, redis-cli), against the real kvsd: SET's options, GETEX,
//! SETNX/SETEX/PSETEX/GETSET/MSETNX, the EXPIRE family with NX/XX/GT/LT, TTL and its kin,
//! PERSIST, INCR and its kin, APPEND/GETRANGE/SETRANGE; one expiry and one counter shared with
//! the native protocol and kvsctl; acknowledged counters and expiries surviving kill -9; a
//! follower serving TTL and refusing INCR. Redis's exact replies are the differential test's
//! (`tests/resp_differential.rs`); these check what the commands do to the store.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::resp::{connect, error_text, redis_cli, start};
use redis::Value;

fn query<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
        .query(con)
        .unwrap_or_else(|error| panic!("{args:?}: {error}"))
}

fn server_error(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    error_text(&command.query::<Value>(con).expect_err("an error reply"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn redis_rs_sets_with_options_expires_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);

    // SET's conditions and GET.
    let set: Option<String> = query(&mut con, &["SET", "k", "v1", "NX"]);
    assert_eq!(set.as_deref(), Some("OK"));
    let set: Option<String> = query(&mut con, &["SET", "k", "v2", "NX"]);
    assert_eq!(set, None, "NX on an existing key sets nothing");
    let set: Option<String> = query(&mut con, &["SET", "absent", "v", "XX"]);
    assert_eq!(set, None);
    let old: Option<String> = query(&mut con, &["SET", "k", "v3", "XX", "GET"]);
    assert_eq!(old.as_deref(), Some("v1"));
    let old: Option<String> = query(&mut con, &["SET", "k", "v4", "NX", "GET"]);
    assert_eq!(
        old.as_deref(),
        Some("v3"),
        "NX GET answers the value it kept"
    );
    let value: String = query(&mut con, &["GET", "k"]);
    assert_eq!(value, "v3");

    // Expiries: relative, absolute, kept, removed.
    let _: () = query(&mut con, &["SET", "k", "v", "EX", "100"]);
    let ttl: i64 = query(&mut con, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = query(&mut con, &["SET", "k", "w", "KEEPTTL"]);
    let pttl: i64 = query(&mut con, &["PTTL", "k"]);
    assert!((98_000..=100_000).contains(&pttl), "{pttl}");
    let at_s = now_ms() / 1000 + 1000;
    let _: () = query(&mut con, &["SET", "k", "v", "EXAT", &at_s.to_string()]);
    let expire_time: u64 = query(&mut con, &["EXPIRETIME", "k"]);
    assert_eq!(expire_time, at_s);
    let pexpire_time: u64 = query(&mut con, &["PEXPIRETIME", "k"]);
    assert_eq!(pexpire_time, at_s * 1000);
    let _: () = query(&mut con, &["SET", "k", "v"]);
    assert_eq!(
        query::<i64>(&mut con, &["TTL", "k"]),
        -1,
        "a plain SET drops the expiry"
    );
    assert_eq!(query::<i64>(&mut con, &["TTL", "nokey"]), -2);
    assert_eq!(
        server_error(&mut con, &["SET", "k", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        server_error(&mut con, &["SET", "k", "v", "KEEPTTL", "PX", "5"]),
        "ERR syntax error"
    );

    // The EXPIRE family and its conditions.
    assert_eq!(query::<i64>(&mut con, &["EXPIRE", "k", "100", "XX"]), 0);
    assert_eq!(query::<i64>(&mut con, &["EXPIRE", "k", "100", "GT"]), 0);
    assert_eq!(query::<i64>(&mut con, &["EXPIRE", "k", "100", "NX"]), 1);
    assert_eq!(query::<i64>(&mut con, &["EXPIRE", "k", "200", "LT"]), 0);
    assert_eq!(query::<i64>(&mut con, &["PEXPIRE", "k", "200000", "GT"]), 1);
    let ttl: i64 = query(&mut con, &["TTL", "k"]);
    assert!((199..=200).contains(&ttl), "{ttl}");
    assert_eq!(query::<i64>(&mut con, &["PERSIST", "k"]), 1);
    assert_eq!(query::<i64>(&mut con, &["PERSIST", "k"]), 0);
    assert_eq!(query::<i64>(&mut con, &["EXPIRE", "nokey", "10"]), 0);
    let at_ms = now_ms() + 500_000;
    assert_eq!(
        query::<i64>(&mut con, &["PEXPIREAT", "k", &at_ms.to_string()]),
        1
    );
    assert_eq!(query::<u64>(&mut con, &["PEXPIRETIME", "k"]), at_ms);
    // A time already past deletes the key.
    assert_eq!(query::<i64>(&mut con, &["EXPIRE", "k", "-1"]), 1);
    assert_eq!(query::<i64>(&mut con, &["EXISTS", "k"]), 0);
    let _: () = query(&mut con, &["SET", "k", "v"]);
    assert_eq!(query::<i64>(&mut con, &["EXPIREAT", "k", "1"]), 1);
    assert_eq!(query::<Option<String>>(&mut con, &["GET", "k"]), None);

    // GETEX, SETNX, SETEX, PSETEX, GETSET, MSETNX.
    let _: () = query(&mut con, &["SET", "g", "gv"]);
    let value: String = query(&mut con, &["GETEX", "g", "PX", "300000"]);
    assert_eq!(value, "gv");
    assert!(query::<i64>(&mut con, &["PTTL", "g"]) > 290_000);
    let value: String = query(&mut con, &["GETEX", "g", "PERSIST"]);
    assert_eq!(value, "gv");
    assert_eq!(query::<i64>(&mut con, &["TTL", "g"]), -1);
    let value: String = query(&mut con, &["GETEX", "g", "EXAT", "1"]);
    assert_eq!(
        value, "gv",
        "answers the value, then the past time deletes it"
    );
    assert_eq!(query::<i64>(&mut con, &["EXISTS", "g"]), 0);
    assert_eq!(query::<i64>(&mut con, &["SETNX", "n", "1"]), 1);
    assert_eq!(query::<i64>(&mut con, &["SETNX", "n", "2"]), 0);
    let _: () = query(&mut con, &["SETEX", "s", "100", "sv"]);
    assert!((99..=100).contains(&query::<i64>(&mut con, &["TTL", "s"])));
    let _: () = query(&mut con, &["PSETEX", "s", "50000", "sv"]);
    assert!(query::<i64>(&mut con, &["PTTL", "s"]) <= 50_000);
    let old: String = query(&mut con, &["GETSET", "s", "new"]);
    assert_eq!(old, "sv");
    assert_eq!(
        query::<i64>(&mut con, &["TTL", "s"]),
        -1,
        "GETSET drops the expiry"
    );
    assert_eq!(query::<i64>(&mut con, &["MSETNX", "m1", "a", "m2", "b"]), 1);
    assert_eq!(query::<i64>(&mut con, &["MSETNX", "m2", "x", "m3", "y"]), 0);
    assert_eq!(query::<i64>(&mut con, &["EXISTS", "m3"]), 0, "all or none");

    // Counters.
    assert_eq!(query::<i64>(&mut con, &["INCR", "c"]), 1);
    assert_eq!(query::<i64>(&mut con, &["INCRBY", "c", "41"]), 42);
    assert_eq!(query::<i64>(&mut con, &["DECR", "c"]), 41);
    assert_eq!(query::<i64>(&mut con, &["DECRBY", "c", "50"]), -9);
    let _: () = query(&mut con, &["SET", "c", "9223372036854775807", "EX", "100"]);
    assert_eq!(
        server_error(&mut con, &["INCR", "c"]),
        "ERR increment or decrement would overflow"
    );
    let _: () = query(&mut con, &["SET", "c", "10", "EX", "100"]);
    assert_eq!(query::<i64>(&mut con, &["INCR", "c"]), 11);
    assert!(
        query::<i64>(&mut con, &["TTL", "c"]) > 0,
        "INCR keeps the expiry"
    );
    let _: () = query(&mut con, &["SET", "word", "x"]);
    assert_eq!(
        server_error(&mut con, &["INCRBY", "word", "1"]),
        "ERR value is not an integer or out of range"
    );

    // APPEND, GETRANGE, SETRANGE.
    assert_eq!(query::<i64>(&mut con, &["APPEND", "a", "Hello"]), 5);
    assert_eq!(query::<i64>(&mut con, &["APPEND", "a", " World"]), 11);
    assert_eq!(
        query::<String>(&mut con, &["GETRANGE", "a", "0", "4"]),
        "Hello"
    );
    assert_eq!(
        query::<String>(&mut con, &["GETRANGE", "a", "-5", "-1"]),
        "World"
    );
    assert_eq!(query::<i64>(&mut con, &["SETRANGE", "a", "6", "Redis"]), 11);
    assert_eq!(query::<String>(&mut con, &["GET", "a"]), "Hello Redis");
    assert_eq!(query::<i64>(&mut con, &["SETRANGE", "z", "3", "x"]), 4);
    assert_eq!(query::<Vec<u8>>(&mut con, &["GET", "z"]), b"\0\0\0x");

    // INFO counts the keys with an expiry ("c" has one).
    let info: String = query(&mut con, &["INFO", "keyspace"]);
    assert!(
        info.contains(",expires=") && !info.contains(",expires=0,"),
        "{info}"
    );

    // COMMAND knows them all.
    let info: Vec<Value> = query(
        &mut con,
        &["COMMAND", "INFO", "getex", "pexpireat", "incrby"],
    );
    assert!(info.iter().all(|entry| *entry != Value::Nil), "{info:?}");
    let count: usize = query(&mut con, &["COMMAND", "COUNT"]);
    assert!(count >= 47, "{count}");
}

fn kvsctl_out(addr: &str, args: &[&str]) -> (i32, String) {
    let output = common::kvsctl(addr, args, b"");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// "1500 ms (seq N)" from `kvsctl ttl`: the milliseconds.
fn kvsctl_ttl_ms(addr: &str, key: &str) -> u64 {
    let (code, out) = kvsctl_out(addr, &["ttl", key]);
    assert_eq!(code, 0, "{out}");
    out.split_whitespace()
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("kvsctl ttl {key}: {out}"))
}

#[test]
fn one_expiry_and_one_counter_for_resp_native_and_kvsctl() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let addr = kvsd.addr.clone();

    // Set through RESP, read through kvsctl.
    let _: () = query(&mut con, &["SET", "from-resp", "v", "EX", "100"]);
    let ms = kvsctl_ttl_ms(&addr, "from-resp");
    assert!((95_000..=100_000).contains(&ms), "{ms}");

    // Set through kvsctl, read through RESP.
    let (code, out) = kvsctl_out(&addr, &["set", "from-kvsctl", "v", "--ttl", "300s"]);
    assert_eq!(code, 0, "{out}");
    let ttl: i64 = query(&mut con, &["TTL", "from-kvsctl"]);
    assert!((295..=300).contains(&ttl), "{ttl}");
    let (code, _) = kvsctl_out(&addr, &["persist", "from-kvsctl"]);
    assert_eq!(code, 0);
    assert_eq!(query::<i64>(&mut con, &["TTL", "from-kvsctl"]), -1);

    // kvsctl expire's conditions, as RESP's EXPIRE judges them.
    let (code, out) = kvsctl_out(&addr, &["expire", "from-kvsctl", "50s", "--xx"]);
    assert_eq!((code, out.starts_with("NOT SET")), (3, true), "{out}");
    let (code, out) = kvsctl_out(&addr, &["expire", "from-kvsctl", "50s", "--gt"]);
    assert_eq!(code, 3, "GT never holds for a key without an expiry: {out}");
    let (code, out) = kvsctl_out(&addr, &["expire", "from-kvsctl", "50s", "--lt"]);
    assert_eq!(code, 0, "LT always does: {out}");
    let (code, out) = kvsctl_out(&addr, &["expire", "from-kvsctl", "60s", "--lt"]);
    assert_eq!(code, 3, "{out}");
    let (code, out) = kvsctl_out(&addr, &["expire", "from-kvsctl", "60s", "--nx"]);
    assert_eq!(code, 3, "{out}");
    let (code, out) = kvsctl_out(&addr, &["expire", "from-kvsctl", "60s", "--xx", "--gt"]);
    assert_eq!(code, 0, "{out}");
    let ttl: i64 = query(&mut con, &["TTL", "from-kvsctl"]);
    assert!((55..=60).contains(&ttl), "{ttl}");
    let output = common::kvsctl(&addr, &["expire", "k", "1s", "--nx", "--gt"], b"");
    assert!(!output.status.success(), "clap refuses NX with GT");
    // RESP's conditions on a key kvsctl expired.
    assert_eq!(
        query::<i64>(&mut con, &["EXPIRE", "from-kvsctl", "10", "GT"]),
        0
    );
    assert_eq!(
        query::<i64>(&mut con, &["EXPIRE", "from-kvsctl", "10", "LT"]),
        1
    );

    // The native client's EXPIRE with a condition.
    let mut native = kvs::client::Client::connect(&addr).unwrap();
    let flags = kvs::protocol::ext::ExpireFlags {
        gt: true,
        ..Default::default()
    };
    let later = Some(kvs::protocol::ext::Expiry::InMs(400_000));
    let written = native.expire_if(b"from-resp", later, flags).unwrap();
    assert!(
        matches!(written, Some(kvs::client::Written::Ok(_))),
        "{written:?}"
    );
    let pttl: i64 = query(&mut con, &["PTTL", "from-resp"]);
    assert!(pttl > 395_000, "{pttl}");

    // One counter.
    assert_eq!(query::<i64>(&mut con, &["INCRBY", "count", "5"]), 5);
    let (code, out) = kvsctl_out(&addr, &["incr", "count", "10"]);
    assert_eq!((code, out.trim()), (0, "15"));
    assert_eq!(native.incr_by(b"count", -1).unwrap().0, 14);
    assert_eq!(query::<i64>(&mut con, &["DECR", "count"]), 13);
}

#[test]
fn acknowledged_counters_and_expiries_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let mut pipe = redis::pipe();
    for _ in 0..300 {
        pipe.cmd("INCR").arg("counter").ignore();
    }
    pipe.cmd("SET")
        .arg("session")
        .arg("s")
        .arg("EX")
        .arg(1000)
        .ignore();
    pipe.cmd("SET").arg("gone").arg("g").ignore();
    pipe.cmd("PEXPIREAT").arg("gone").arg(1).ignore();
    pipe.cmd("MSETNX")
        .arg("m1")
        .arg("1")
        .arg("m2")
        .arg("2")
        .ignore();
    let () = pipe.query(&mut con).unwrap();
    kvsd.kill9();

    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    assert_eq!(query::<String>(&mut con, &["GET", "counter"]), "300");
    let ttl: i64 = query(&mut con, &["TTL", "session"]);
    assert!(
        (900..=1000).contains(&ttl),
        "the absolute expiry came back: {ttl}"
    );
    assert_eq!(query::<i64>(&mut con, &["EXISTS", "gone", "m1", "m2"]), 2);
}

#[test]
fn redis_cli_sets_ttls_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let addr = kvsd.resp_addr.clone().unwrap();
    assert_eq!(
        redis_cli(&addr, &["SET", "k", "v", "EX", "100", "NX"]),
        "OK\n"
    );
    assert_eq!(redis_cli(&addr, &["SET", "k", "v", "NX"]), "\n");
    let ttl: i64 = redis_cli(&addr, &["TTL", "k"]).trim().parse().unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    assert_eq!(redis_cli(&addr, &["INCR", "n"]), "1\n");
    assert_eq!(redis_cli(&addr, &["INCRBY", "n", "9"]), "10\n");
    assert_eq!(
        redis_cli(&addr, &["INCR", "k"]),
        "ERR value is not an integer or out of range\n\n",
        "redis-cli prints an error and a blank line"
    );
    assert_eq!(redis_cli(&addr, &["GETEX", "k", "PERSIST"]), "v\n");
    assert_eq!(redis_cli(&addr, &["TTL", "k"]), "-1\n");
    assert_eq!(
        redis_cli(&addr, &["EXPIRE", "k", "10", "NX", "GT"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible\n\n"
    );
}

#[test]
fn a_follower_serves_ttls_and_refuses_counters() {
    let dir = tempfile::tempdir().unwrap();
    let leader = start(&dir.path().join("leader"), &[]);
    let follower = start(
        &dir.path().join("follower"),
        &[
            "--async-replication",
            "--leader-addr",
            &leader.addr,
            "--node-id",
            "f1",
        ],
    );
    let mut on_leader = connect(&leader);
    let _: () = query(&mut on_leader, &["SET", "k", "v", "EX", "500"]);
    assert_eq!(query::<i64>(&mut on_leader, &["INCR", "n"]), 1);
    let mut on_follower = connect(&follower);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: Option<String> = query(&mut on_follower, &["GET", "n"]);
        if n.as_deref() == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "the follower never applied n");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ttl: i64 = query(&mut on_follower, &["TTL", "k"]);
    assert!((490..=500).contains(&ttl), "the replicated expiry: {ttl}");
    for write in [
        &["INCR", "n"][..],
        &["EXPIRE", "k", "5"],
        &["SET", "k", "v", "NX"],
        &["PERSIST", "k"],
    ] {
        assert_eq!(
            server_error(&mut on_follower, write),
            "READONLY You can't write against a read only replica.",
            "{write:?}"
        );
    }
}
