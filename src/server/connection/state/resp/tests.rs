//! The RESP side of the connection state: commands in, the engine moved by hand as the
//! committer would, RESP bytes out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::super::*;
use crate::auth::Secret;
use crate::limits::{KEY_BYTES_MAX_DEFAULT, VALUE_BYTES_MAX_DEFAULT};
use crate::resp::Session;

fn rules() -> Rules<'static> {
    Rules {
        limits: RequestLimits {
            key_bytes_max: KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
        },
        frame_bytes_max: crate::limits::FRAME_BYTES_MAX_DEFAULT,
        leader_addr: None,
        min_acks: 0,
        ack_timeout: Duration::from_secs(5),
        min_seq_wait: Duration::from_secs(5),
        raft: None,
    }
}

pub(super) fn resp_state(secret: Option<&Secret>) -> ConnState<'_> {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    ConnState::resp(Gate::new(secret), Session::new(addr, addr))
}

/// A command as a client library sends it: an array of bulk strings.
fn command(buf: &mut BytesMut, args: &[&str]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        buf.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
}

pub(super) fn commit(engine: &mut Engine) {
    if let Ok(mut batch) = engine.take_batch(Default::default()) {
        let buf = batch.take_buf();
        batch.restore_buf(buf);
        engine.apply_durable(&batch, 1, 0);
    }
}

pub(super) fn send(state: &mut ConnState, engine: &mut Engine, commands: &[&[&str]]) -> Intake {
    let mut buf = BytesMut::new();
    for args in commands {
        command(&mut buf, args);
    }
    state.take_requests(&mut buf, engine, &rules(), Instant::now(), &mut no_values)
}

/// What may go now, as text; values not in `cache` stop it with `Next::ReadValue`.
pub(super) fn replies(
    state: &mut ConnState,
    engine: &Engine,
    cache: Option<&[u8]>,
) -> (String, Next) {
    let mut out = BytesMut::new();
    let progress = Progress {
        durable: engine.durable_seq(),
        replicated: u64::MAX,
        confirmed: None,
    };
    let cached = |_, read: &mut dyn FnMut(&[u8])| cache.map(read).is_some();
    let next = state.replies(
        engine,
        &rules(),
        progress,
        &cached,
        Instant::now(),
        &mut out,
    );
    (String::from_utf8_lossy(&out).into_owned(), next)
}

#[test]
fn a_write_is_answered_once_durable_and_a_pipelined_read_after_it() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    let intake = send(
        &mut state,
        &mut engine,
        &[&["SET", "k", "v"], &["GET", "k"], &["PING"]],
    );
    assert!(intake.wrote);
    let (sent, next) = replies(&mut state, &engine, None);
    assert_eq!(sent, "", "nothing may go before the write is durable");
    assert!(matches!(next, Next::Wait { seq: 1, .. }));
    commit(&mut engine);
    let (sent, next) = replies(&mut state, &engine, None);
    assert_eq!(sent, "+OK\r\n$1\r\nv\r\n+PONG\r\n");
    assert_eq!(next, Next::Empty);
}

#[test]
fn a_key_written_natively_is_read_through_resp() {
    let mut engine = Engine::new(0);
    let mut native = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    Request::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"native"),
    }
    .encode(1, &mut buf);
    native.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    commit(&mut engine);
    let mut state = resp_state(None);
    send(
        &mut state,
        &mut engine,
        &[&["MGET", "k", "nope"], &["STRLEN", "k"]],
    );
    // The durable value is read from the log by the connection's task.
    let (sent, next) = replies(&mut state, &engine, None);
    assert_eq!(sent, "*2\r\n");
    let Next::ReadValue { id, .. } = next else {
        panic!("{next:?}")
    };
    let mut out = BytesMut::new();
    state.encode_read(&mut out, id, Ok(Bytes::from_static(b"native")));
    assert_eq!(&out[..], b"$6\r\nnative\r\n");
    let (sent, _) = replies(&mut state, &engine, None);
    assert_eq!(sent, "$-1\r\n:6\r\n");
}

#[test]
fn del_counts_what_it_deleted_and_exists_counts_duplicates() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    send(
        &mut state,
        &mut engine,
        &[
            &["MSET", "a", "1", "b", "2"],
            &["EXISTS", "a", "a", "zz"],
            &["DEL", "a", "zz", "b"],
            &["DEL", "a"],
            &["GETDEL", "nothing"],
            &["TYPE", "b"],
        ],
    );
    commit(&mut engine);
    let (sent, _) = replies(&mut state, &engine, None);
    assert_eq!(sent, "+OK\r\n:2\r\n:2\r\n:0\r\n$-1\r\n+none\r\n");
}

#[test]
fn a_protocol_error_is_answered_then_the_connection_closes() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    let mut buf = BytesMut::from(&b"PING\r\n*1\r\n+x\r\nPING\r\n"[..]);
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    let (sent, _) = replies(&mut state, &engine, None);
    assert_eq!(
        sent,
        "+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    );
    assert!(state.is_closing() && !state.open());
}

#[test]
fn auth_gates_every_command_as_redis_does() {
    let secret = Secret::new(b"s3cret").unwrap();
    let mut engine = Engine::new(0);
    let mut state = resp_state(Some(&secret));
    send(
        &mut state,
        &mut engine,
        &[
            &["GET", "k"],
            &["AUTH", "wrong"],
            &["AUTH", "default", "s3cret"],
            &["GET", "k"],
        ],
    );
    let (sent, _) = replies(&mut state, &engine, None);
    assert_eq!(
        sent,
        "-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n$-1\r\n"
    );
    assert_eq!(state.take_auth_failures(), vec![false, false]);
}

#[test]
fn hello_3_switches_the_replies_to_resp3() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    send(
        &mut state,
        &mut engine,
        &[&["HELLO", "3"], &["GET", "missing"]],
    );
    let (sent, _) = replies(&mut state, &engine, None);
    assert!(
        sent.starts_with("%8\r\n$6\r\nserver\r\n$3\r\nkvs\r\n"),
        "{sent}"
    );
    assert!(sent.ends_with("$7\r\nmodules\r\n*0\r\n_\r\n"), "{sent}");
}

#[test]
fn a_follower_refuses_writes_and_serves_reads() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    let follower = Rules {
        leader_addr: Some("127.0.0.1:7379"),
        ..rules()
    };
    let mut buf = BytesMut::new();
    command(&mut buf, &["SET", "k", "v"]);
    command(&mut buf, &["GET", "k"]);
    state.take_requests(
        &mut buf,
        &mut engine,
        &follower,
        Instant::now(),
        &mut no_values,
    );
    let (sent, _) = replies(&mut state, &engine, None);
    assert_eq!(
        sent,
        "-READONLY You can't write against a read only replica.\r\n$-1\r\n"
    );
}

#[test]
fn a_poisoned_log_answers_error_never_ok() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    send(
        &mut state,
        &mut engine,
        &[&["SET", "k", "v"], &["SET", "k2", "v", "GET"]],
    );
    engine.fail("fdatasync: Input/output error".into());
    let (sent, _) = replies(&mut state, &engine, None);
    let lines: Vec<&str> = sent.lines().collect();
    assert_eq!(lines.len(), 2, "{sent}");
    assert!(lines.iter().all(|line| line.starts_with("-ERR ")), "{sent}");
    assert!(lines[0].contains("not acknowledged"), "{sent}");
}

#[test]
fn scan_pages_through_every_key_once_while_keys_change() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    let keys: Vec<String> = (0..25).map(|i| format!("key:{i:02}")).collect();
    for key in &keys {
        send(&mut state, &mut engine, &[&["SET", key, "v"]]);
    }
    commit(&mut engine);
    replies(&mut state, &engine, None);
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    loop {
        send(&mut state, &mut engine, &[&["SCAN", &cursor, "COUNT", "7"]]);
        let (sent, _) = replies(&mut state, &engine, None);
        let lines: Vec<&str> = sent.split("\r\n").collect();
        cursor = lines[2].to_string();
        seen.extend(lines[4..].iter().skip(1).step_by(2).map(|k| k.to_string()));
        // A key added behind the cursor is not needed; the ones there all along must come.
        send(&mut state, &mut engine, &[&["SET", "key:00a", "new"]]);
        commit(&mut engine);
        replies(&mut state, &engine, None);
        if cursor == "0" {
            break;
        }
    }
    seen.retain(|k| !k.is_empty() && k != "key:00a");
    assert_eq!(seen, keys);
}

#[test]
fn unknown_commands_and_bad_arity_read_as_redis_writes_them() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    send(
        &mut state,
        &mut engine,
        &[
            &["foo", "bar", "baz"],
            &["get"],
            &["CLIENT", "nope"],
            &["SET", "k", "v", "EX", "0"],
        ],
    );
    let (sent, _) = replies(&mut state, &engine, None);
    let lines: Vec<&str> = sent.lines().collect();
    assert_eq!(
        lines[0],
        "-ERR unknown command 'foo', with args beginning with: 'bar' 'baz' "
    );
    assert_eq!(lines[1], "-ERR wrong number of arguments for 'get' command");
    assert_eq!(lines[2], "-ERR unknown subcommand 'nope'. Try CLIENT HELP.");
    assert_eq!(lines[3], "-ERR invalid expire time in 'set' command");
}

/// The RESP commands here never read a stored value through the task.
fn no_values(_: crate::wal::Location) -> Result<Bytes, String> {
    Err("no value reads in these tests".into())
}

#[test]
fn exec_writes_one_record_and_answers_its_array_once_that_record_is_durable() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    let intake = send(
        &mut state,
        &mut engine,
        &[
            &["MULTI"],
            &["SET", "a", "1"],
            &["GET", "a"],
            &["DEL", "a", "b"],
            &["SET", "b", "2"],
            &["EXEC"],
        ],
    );
    assert!(intake.wrote);
    // One record in the open batch: the transaction's.
    assert_eq!(engine.last_seq(), 1);
    let (out, next) = replies(&mut state, &engine, None);
    assert_eq!(out, "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n");
    assert!(matches!(next, Next::Wait { seq: 1, .. }), "{next:?}");
    let batch = engine.take_batch(Default::default()).unwrap();
    assert_eq!((batch.len(), batch.entries().len()), (1, 3));
    engine.apply_durable(&batch, 1, 0);
    let (out, next) = replies(&mut state, &engine, None);
    assert_eq!(out, "*4\r\n+OK\r\n$1\r\n1\r\n:1\r\n+OK\r\n");
    assert_eq!(next, Next::Empty);
}

#[test]
fn a_queuing_error_aborts_exec_and_a_changed_watched_key_answers_a_null_array() {
    let mut engine = Engine::new(0);
    let mut state = resp_state(None);
    send(
        &mut state,
        &mut engine,
        &[&["MULTI"], &["SET", "a"], &["SET", "a", "1"], &["EXEC"]],
    );
    let (out, _) = replies(&mut state, &engine, None);
    assert_eq!(
        out,
        "+OK\r\n-ERR wrong number of arguments for 'set' command\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(engine.last_seq(), 0);
    let mut other = resp_state(None);
    send(&mut state, &mut engine, &[&["WATCH", "a"]]);
    send(&mut other, &mut engine, &[&["SET", "a", "x"]]);
    send(
        &mut state,
        &mut engine,
        &[&["MULTI"], &["SET", "a", "mine"], &["EXEC"]],
    );
    commit(&mut engine);
    let (out, _) = replies(&mut state, &engine, None);
    assert_eq!(out, "+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n");
    assert_eq!(engine.last_seq(), 1, "the aborted EXEC wrote nothing");
}
