//! kvsd's Redis port (`--resp-port`, `docs/resp.md`) driven by clients nobody here wrote:
//! redis-rs (the `redis` crate) and `redis-cli`; one store shared with the native protocol;
//! acknowledged writes through RESP surviving kill -9; `--auth-file`; a follower; hostile input.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::resp::{addr as resp_addr, connect, error_text, redis_cli, start};
use redis::{Commands, Value};

fn server_error(result: redis::RedisResult<Value>) -> String {
    error_text(&result.expect_err("an error reply"))
}

#[test]
fn redis_rs_reads_and_writes_every_string_command() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hi").query(&mut con).unwrap();
    assert_eq!(echo, "hi");
    let () = con.set("k", "v1").unwrap();
    let value: Option<String> = con.get("k").unwrap();
    assert_eq!(value.as_deref(), Some("v1"));
    let old: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("v2")
        .arg("GET")
        .query(&mut con)
        .unwrap();
    assert_eq!(old.as_deref(), Some("v1"));
    let () = con.mset(&[("a", "1"), ("b", "22"), ("c", "333")]).unwrap();
    let values: Vec<Option<String>> = con.mget(&["a", "nope", "c"]).unwrap();
    assert_eq!(values, vec![Some("1".into()), None, Some("333".into())]);
    let len: usize = con.strlen("c").unwrap();
    assert_eq!(len, 3);
    let kind: String = redis::cmd("TYPE").arg("b").query(&mut con).unwrap();
    assert_eq!(kind, "string");
    let count: usize = con.exists(&["a", "a", "nope"]).unwrap();
    assert_eq!(count, 2);
    let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 4);
    let mut keys: Vec<String> = con.keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a", "b", "c", "k"]);
    let taken: Option<String> = redis::cmd("GETDEL").arg("b").query(&mut con).unwrap();
    assert_eq!(taken.as_deref(), Some("22"));
    let deleted: usize = con.del(&["a", "b", "nope"]).unwrap();
    assert_eq!(deleted, 1);
    let deleted: usize = redis::cmd("UNLINK").arg("c").query(&mut con).unwrap();
    assert_eq!(deleted, 1);
    let () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    let error = server_error(redis::cmd("SELECT").arg(1).query(&mut con));
    assert_eq!(error, "ERR DB index is out of range");
    let error = server_error(redis::cmd("FLUSHALL").arg("x").query(&mut con));
    assert_eq!(
        error,
        "ERR unknown command 'FLUSHALL', with args beginning with: 'x' "
    );
    let error = server_error(
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("EX")
            .arg(0)
            .query(&mut con),
    );
    assert_eq!(error, "ERR invalid expire time in 'set' command");
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut con)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, "tester");
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    for field in [
        "# Server",
        "redis_version:",
        "connected_clients:",
        "role:master",
        "db0:keys=1",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
    let role: Vec<Value> = redis::cmd("ROLE").query(&mut con).unwrap();
    assert_eq!(role[0], Value::BulkString(b"master".to_vec()));
    let acked: usize = redis::cmd("WAIT").arg(0).arg(0).query(&mut con).unwrap();
    assert_eq!(acked, 0);
}

#[test]
fn pipelines_and_scan_through_redis_rs() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.set(format!("key:{i:04}"), i).ignore();
    }
    pipe.get("key:0999");
    let (last,): (String,) = pipe.query(&mut con).unwrap();
    assert_eq!(last, "999");
    let mut scanned: Vec<String> = con.scan_match::<_, String>("key:0*").unwrap().collect();
    scanned.sort();
    let expected: Vec<String> = (0..1000).map(|i| format!("key:{i:04}")).collect();
    assert_eq!(scanned, expected);
}

#[test]
fn resp3_after_hello_3() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let url = format!("redis://{}/?protocol=resp3", resp_addr(&kvsd));
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let () = con.set("k", "v").unwrap();
    let missing: Value = redis::cmd("GET").arg("nope").query(&mut con).unwrap();
    assert_eq!(missing, Value::Nil);
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut con).unwrap();
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 answers a map: {hello:?}")
    };
    assert!(fields.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
    let info: Value = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(matches!(info, Value::VerbatimString { .. }), "{info:?}");
}

#[test]
fn one_store_for_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut native = kvs::client::Client::connect(&kvsd.addr).unwrap();
    let mut con = connect(&kvsd);
    native.set(b"from-native", b"n").unwrap();
    let value: Option<String> = con.get("from-native").unwrap();
    assert_eq!(value.as_deref(), Some("n"));
    let () = con.set("from-resp", "r").unwrap();
    assert_eq!(
        native.get(b"from-resp").unwrap().as_deref(),
        Some(&b"r"[..])
    );
}

#[test]
fn an_acknowledged_resp_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.set(format!("k{i}"), format!("v{i}")).ignore();
    }
    let () = pipe.query(&mut con).unwrap();
    kvsd.kill9();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    for i in 0..500 {
        let value: Option<String> = con.get(format!("k{i}")).unwrap();
        assert_eq!(value, Some(format!("v{i}")), "k{i}");
    }
}

#[test]
fn auth_file_gates_the_resp_port() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let data = dir.path().join("data");
    let kvsd = start(&data, &["--auth-file", secret.to_str().unwrap()]);
    let mut con = connect(&kvsd);
    let error = server_error(redis::cmd("GET").arg("k").query(&mut con));
    assert_eq!(error, "NOAUTH Authentication required.");
    let url = format!("redis://:s3cret@{}/", resp_addr(&kvsd));
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let () = con.set("k", "v").unwrap();
    let url = format!("redis://:wrong@{}/", resp_addr(&kvsd));
    let refused = redis::Client::open(url).unwrap().get_connection();
    let error = refused.err().expect("a wrong secret is refused");
    assert_eq!(
        error.kind(),
        redis::ErrorKind::AuthenticationFailed,
        "{error}"
    );
    // redis-rs words WRONGPASS its own way: the wire text, as Redis's.
    let mut stream = TcpStream::connect(resp_addr(&kvsd)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n")
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line,
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
}

#[test]
fn a_follower_serves_reads_and_refuses_writes_and_wait_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let leader = start(&dir.path().join("leader"), &[]);
    let follower = start(
        &dir.path().join("follower"),
        &[
            "--leader-addr",
            &leader.addr,
            "--node-id",
            "f1",
            "--async-replication",
        ],
    );
    let mut on_leader = connect(&leader);
    let () = on_leader.set("k", "v").unwrap();
    let acked: usize = redis::cmd("WAIT")
        .arg(1)
        .arg(20_000)
        .query(&mut on_leader)
        .unwrap();
    assert_eq!(acked, 1, "the follower has the write durable");
    let mut on_follower = connect(&follower);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value: Option<String> = on_follower.get("k").unwrap();
        if value.as_deref() == Some("v") {
            break;
        }
        assert!(Instant::now() < deadline, "the follower never served k");
        std::thread::sleep(Duration::from_millis(20));
    }
    let error = server_error(redis::cmd("SET").arg("k").arg("x").query(&mut on_follower));
    assert_eq!(
        error,
        "READONLY You can't write against a read only replica."
    );
    let role: Vec<Value> = redis::cmd("ROLE").query(&mut on_follower).unwrap();
    assert_eq!(role[0], Value::BulkString(b"slave".to_vec()));
}

/// Sends `input` on a fresh connection and returns everything the server answers before it
/// closes the connection (as Redis closes after a protocol error).
fn raw_exchange(addr: &str, input: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(input).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server closes the connection after a protocol error");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn hostile_input_gets_redis_protocol_errors_and_a_close_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let addr = resp_addr(&kvsd);
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n+PING\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-3\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$99999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*4294967296\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"PING\r\nSET \"a b\r\n",
            "+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(raw_exchange(&addr, input), *expected, "{input:?}");
    }
    // A header longer than Redis reads without its CRLF.
    let mut long = b"*".to_vec();
    long.extend(std::iter::repeat_n(b'1', 70 * 1024));
    assert_eq!(
        raw_exchange(&addr, &long),
        "-ERR Protocol error: too big mbulk count string\r\n"
    );
    // Random bytes, and half commands left hanging: the server lives on.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..50 {
        let mut junk = Vec::new();
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"*$\r\n0123-+x ";
            junk.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let mut stream = TcpStream::connect(&addr).unwrap();
        let _ = stream.write_all(&junk);
    }
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc")
        .unwrap();
    let mut con = connect(&kvsd);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    drop(half);
}

#[test]
fn redis_cli_works_against_kvsd() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let addr = resp_addr(&kvsd);
    assert_eq!(redis_cli(&addr, &["PING"]), "PONG\n");
    assert_eq!(
        redis_cli(&addr, &["SET", "greeting", "hello world"]),
        "OK\n"
    );
    assert_eq!(redis_cli(&addr, &["GET", "greeting"]), "hello world\n");
    assert_eq!(redis_cli(&addr, &["MSET", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(
        redis_cli(&addr, &["--no-raw", "MGET", "a", "nope"]),
        "1) \"1\"\n2) (nil)\n"
    );
    assert_eq!(redis_cli(&addr, &["DEL", "a", "b", "c"]), "2\n");
    assert_eq!(redis_cli(&addr, &["DBSIZE"]), "1\n");
    assert_eq!(
        redis_cli(&addr, &["--scan", "--pattern", "gr*"]),
        "greeting\n"
    );
    let info = redis_cli(&addr, &["INFO", "replication"]);
    assert!(info.contains("role:master"), "{info}");
    // Commands piped in, as in `redis-cli < script`.
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut child = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SET piped yes\nGET piped\nSTRLEN piped\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\nyes\n3\n");
}

#[test]
fn mset_is_one_log_record_so_a_crash_keeps_all_of_its_pairs_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut con = connect(&kvsd);
    let mut native = common::raw::Conn::connect(&kvsd.addr);
    let last_seq =
        |native: &mut common::raw::Conn| -> u64 { native.stats()["last_seq"].parse().unwrap() };
    let before = last_seq(&mut native);
    let () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2", "c", "3", "a", "4"])
        .query(&mut con)
        .unwrap();
    assert_eq!(
        last_seq(&mut native),
        before + 1,
        "one record for every pair"
    );
    let got: Vec<Option<String>> = con.mget(&["a", "b", "c"]).unwrap();
    assert_eq!(got, [Some("4".into()), Some("2".into()), Some("3".into())]);
    // Still all or nothing with a pair that cannot be written.
    let error = server_error(redis::cmd("MSET").arg(&["d", "1", "", "2"]).query(&mut con));
    assert!(error.starts_with("ERR"), "{error}");
    assert!(
        !con.exists::<_, bool>("d").unwrap(),
        "no pair of a refused MSET is written"
    );
}
