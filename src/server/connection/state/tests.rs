//! The connection's ordering rules, without sockets: frames in, the engine's progress moved by
//! hand (as the committer would), replies out.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::auth::Secret;
use crate::limits::{KEY_BYTES_MAX_DEFAULT, VALUE_BYTES_MAX_DEFAULT};
use crate::protocol::frame::Frame;
use crate::protocol::Response;

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

fn set(buf: &mut BytesMut, id: u64, key: &str, value: &str) {
    Request::Set {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
    .encode(id, buf);
}

fn get(buf: &mut BytesMut, id: u64, key: &str) {
    Request::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
        min_seq: None,
    }
    .encode(id, buf);
}

fn ping(buf: &mut BytesMut, id: u64) {
    Request::Ping {
        payload: Bytes::from_static(b"hi"),
    }
    .encode(id, buf);
}

/// Makes the open batch durable, as the committer does after its fdatasync.
fn commit(engine: &mut Engine) {
    if let Ok(mut batch) = engine.take_batch(Default::default()) {
        let buf = batch.take_buf();
        batch.restore_buf(buf);
        engine.apply_durable(&batch, 1, 0);
    }
}

fn no_values(_: Location) -> Result<Bytes, String> {
    Err("no log in this test".to_string())
}

fn no_cache(_: Location, _: &mut dyn FnMut(&[u8])) -> bool {
    false
}

/// Every reply that may go now, decoded.
fn replies(state: &mut ConnState, engine: &Engine) -> (Vec<Response>, Next) {
    let mut out = BytesMut::new();
    let progress = Progress {
        durable: engine.durable_seq(),
        replicated: u64::MAX,
        confirmed: None,
    };
    let next = state.replies(
        engine,
        &rules(),
        progress,
        &no_cache,
        Instant::now(),
        &mut out,
    );
    let mut decoded = Vec::new();
    while let Some(frame) = frame::decode(&mut out, u32::MAX).unwrap() {
        decoded.push(Response::decode(frame).unwrap());
    }
    (decoded, next)
}

fn ids(responses: &[Response]) -> Vec<u64> {
    responses.iter().map(|r| r.id).collect()
}

#[test]
fn a_read_after_a_pending_write_waits_for_it() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "v1");
    get(&mut buf, 2, "k");
    let intake = state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    assert!(intake.wrote);
    let (sent, next) = replies(&mut state, &engine);
    assert!(
        sent.is_empty(),
        "nothing may go before the write is durable"
    );
    assert_eq!(
        next,
        Next::Wait {
            seq: 1,
            replicated: true,
            deadline: None
        }
    );
    commit(&mut engine);
    let (sent, next) = replies(&mut state, &engine);
    assert_eq!(ids(&sent), vec![1, 2]);
    assert_eq!(sent[0].seq(), Some(1));
    assert_eq!(sent[1].body, "v1");
    assert_eq!(next, Next::Empty);
}

#[test]
fn replies_leave_in_request_order() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    ping(&mut buf, 1);
    set(&mut buf, 2, "a", "x");
    ping(&mut buf, 3);
    get(&mut buf, 4, "missing");
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    // The first PING may go; the second waits behind the write although it needs nothing.
    let (sent, _) = replies(&mut state, &engine);
    assert_eq!(ids(&sent), vec![1]);
    commit(&mut engine);
    let (sent, next) = replies(&mut state, &engine);
    assert_eq!(ids(&sent), vec![2, 3, 4]);
    assert_eq!(sent[2].status, Status::NotFound);
    assert_eq!(next, Next::Empty);
}

#[test]
fn a_read_of_another_connections_pending_write_waits_for_it() {
    let mut engine = Engine::new(0);
    let mut writer = ConnState::new(Gate::new(None));
    let mut reader = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "new");
    writer.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    get(&mut buf, 7, "k");
    reader.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    let (sent, next) = replies(&mut reader, &engine);
    assert!(
        sent.is_empty(),
        "a read must not see what a crash could take back"
    );
    assert!(matches!(next, Next::Wait { seq: 1, .. }));
    commit(&mut engine);
    let (sent, _) = replies(&mut reader, &engine);
    assert_eq!(sent[0].body, "new");
}

#[test]
fn a_poisoned_log_answers_error_never_ok() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "v");
    get(&mut buf, 2, "k");
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    engine.fail("fdatasync: Input/output error".into());
    let (sent, next) = replies(&mut state, &engine);
    assert_eq!(ids(&sent), vec![1, 2]);
    assert!(sent.iter().all(|r| r.status == Status::Error), "{sent:?}");
    assert!(String::from_utf8_lossy(&sent[0].body).contains("not acknowledged"));
    assert_eq!(next, Next::Empty);
    // Later writes are refused at once; reads of durable state go on.
    set(&mut buf, 3, "k2", "v");
    get(&mut buf, 4, "k2");
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    let (sent, _) = replies(&mut state, &engine);
    assert_eq!(sent[0].status, Status::Error);
    assert_eq!(sent[1].status, Status::NotFound);
}

#[test]
fn a_write_waits_for_followers_then_times_out_with_error() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let rules = Rules {
        min_acks: 1,
        ..rules()
    };
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "v");
    let start = Instant::now();
    state.take_requests(&mut buf, &mut engine, &rules, start, &mut no_values);
    commit(&mut engine);
    let progress = Progress {
        durable: 1,
        replicated: 0,
        confirmed: None,
    };
    let mut out = BytesMut::new();
    let next = state.replies(&engine, &rules, progress, &no_cache, start, &mut out);
    assert_eq!(
        next,
        Next::Wait {
            seq: 1,
            replicated: true,
            deadline: Some(start + rules.ack_timeout)
        }
    );
    assert!(out.is_empty());
    let late = start + rules.ack_timeout;
    state.replies(&engine, &rules, progress, &no_cache, late, &mut out);
    let reply = Response::decode(frame::decode(&mut out, u32::MAX).unwrap().unwrap()).unwrap();
    assert_eq!(reply.status, Status::Error);
    assert!(String::from_utf8_lossy(&reply.body).contains("--min-acks"));
}

#[test]
fn the_queue_caps_what_an_unread_client_costs() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    for id in 0..(CONNECTION_REQUESTS_IN_FLIGHT_MAX as u64 + 10) {
        ping(&mut buf, id);
    }
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    assert!(state.full());
    assert!(!buf.is_empty(), "frames past the cap stay unread");
    let (sent, next) = replies(&mut state, &engine);
    assert_eq!(
        (sent.len(), next),
        (CONNECTION_REQUESTS_IN_FLIGHT_MAX, Next::Empty)
    );
    assert!(!state.full());
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    assert!(buf.is_empty());
    assert_eq!(replies(&mut state, &engine).0.len(), 10);
}

#[test]
fn a_bad_frame_is_answered_then_the_connection_closes() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    ping(&mut buf, 1);
    buf.extend_from_slice(&u32::MAX.to_le_bytes());
    buf.extend_from_slice(&[0; 10]);
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    assert!(state.is_closing() && !state.open());
    let (sent, _) = replies(&mut state, &engine);
    assert_eq!(ids(&sent), vec![1, 0]);
    assert_eq!(sent[1].status, Status::Error);
}

#[test]
fn requests_before_auth_are_refused_and_hello_hands_over() {
    let secret = Secret::new(b"s3cret").unwrap();
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(Some(&secret)));
    let mut buf = BytesMut::new();
    ping(&mut buf, 1);
    Request::Auth {
        secret: crate::protocol::request::SecretBytes(Bytes::from_static(b"s3cret")),
    }
    .encode(2, &mut buf);
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    let (sent, _) = replies(&mut state, &engine);
    assert_eq!(
        sent.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![Status::Error, Status::Ok]
    );
    // A follower's HELLO ends the request stream once everything before it is answered.
    let hello = messages::Hello {
        node_id: "f1".into(),
        log_id: crate::wal::LogId([7; 16]),
        last_seq: 0,
        last_crc: 0,
        resync: false,
    };
    let mut frame_bytes = BytesMut::new();
    hello.encode(&mut frame_bytes);
    let frame: Frame = frame::decode(&mut frame_bytes, u32::MAX).unwrap().unwrap();
    let mut hello_then_ping = BytesMut::new();
    frame::encode(&mut hello_then_ping, frame.header, &[&frame.body]);
    ping(&mut hello_then_ping, 9);
    state.take_requests(
        &mut hello_then_ping,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    assert!(!state.open());
    assert!(state.take_handoff().is_some());
    assert!(
        !hello_then_ping.is_empty(),
        "bytes after HELLO belong to the stream"
    );
}

#[test]
fn a_follower_answers_writes_not_leader() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let rules = Rules {
        leader_addr: Some("127.0.0.1:7001"),
        ..rules()
    };
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "v");
    let intake = state.take_requests(
        &mut buf,
        &mut engine,
        &rules,
        Instant::now(),
        &mut no_values,
    );
    assert!(!intake.wrote);
    let mut out = BytesMut::new();
    let progress = Progress {
        durable: 0,
        replicated: u64::MAX,
        confirmed: None,
    };
    state.replies(
        &engine,
        &rules,
        progress,
        &no_cache,
        Instant::now(),
        &mut out,
    );
    let reply = Response::decode(frame::decode(&mut out, u32::MAX).unwrap().unwrap()).unwrap();
    assert_eq!(reply.status, Status::NotLeader);
    assert_eq!(reply.body, "127.0.0.1:7001");
}

#[test]
fn an_answered_writer_is_awaited_until_it_speaks_again() {
    let mut engine = Engine::new(0);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "v");
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    commit(&mut engine);
    replies(&mut state, &engine);
    assert!(state.awaiting_client);
    get(&mut buf, 2, "k");
    state.take_requests(
        &mut buf,
        &mut engine,
        &rules(),
        Instant::now(),
        &mut no_values,
    );
    assert!(!state.awaiting_client);
}

/// A Raft member's rules (`engine::raft`): `leader` is what NOT_LEADER names.
fn raft_rules(view: &RaftView) -> Rules<'_> {
    Rules {
        raft: Some(view),
        ..rules()
    }
}

fn raft_replies(
    state: &mut ConnState,
    engine: &Engine,
    rules: &Rules,
    confirmed: Option<Instant>,
) -> (Vec<Response>, Next) {
    let mut out = BytesMut::new();
    let progress = Progress {
        durable: engine.durable_seq(),
        replicated: u64::MAX,
        confirmed,
    };
    let next = state.replies(engine, rules, progress, &no_cache, Instant::now(), &mut out);
    let mut decoded = Vec::new();
    while let Some(frame) = frame::decode(&mut out, u32::MAX).unwrap() {
        decoded.push(Response::decode(frame).unwrap());
    }
    (decoded, next)
}

#[test]
fn a_raft_follower_refuses_writes_and_linearizable_reads_naming_the_leader() {
    let view = RaftView::default();
    *view.leader_addr.borrow_mut() = "10.0.0.1:7001".into();
    let rules = raft_rules(&view);
    let mut engine = Engine::new(0);
    engine.raft_member(1 << 20);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "v");
    get(&mut buf, 2, "k");
    ping(&mut buf, 3);
    let now = Instant::now();
    let intake = state.take_requests(&mut buf, &mut engine, &rules, now, &mut no_values);
    assert!(!intake.wrote);
    let (sent, next) = raft_replies(&mut state, &engine, &rules, None);
    assert_eq!(next, Next::Empty);
    let statuses: Vec<Status> = sent.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Status::NotLeader, Status::NotLeader, Status::Ok]);
    assert_eq!(sent[0].body, "10.0.0.1:7001");
}

#[test]
fn a_raft_leaders_read_waits_for_a_confirmation_begun_after_it_arrived() {
    let view = RaftView::default();
    let rules = raft_rules(&view);
    let mut engine = Engine::new(0);
    engine.raft_member(1 << 20);
    engine.lead(0);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    let before = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    get(&mut buf, 1, "k");
    let arrived = Instant::now();
    state.take_requests(&mut buf, &mut engine, &rules, arrived, &mut no_values);
    // A confirmation that began before the read does not answer it.
    let (sent, next) = raft_replies(&mut state, &engine, &rules, Some(before));
    assert!(sent.is_empty());
    assert!(matches!(next, Next::Confirm { .. }), "{next:?}");
    let (sent, next) = raft_replies(&mut state, &engine, &rules, Some(Instant::now()));
    assert_eq!(next, Next::Empty);
    assert_eq!(sent[0].status, Status::NotFound);
}

#[test]
fn a_write_pending_when_the_raft_leader_stops_leading_is_never_answered_ok() {
    let view = RaftView::default();
    let rules = raft_rules(&view);
    let mut engine = Engine::new(0);
    engine.raft_member(1 << 20);
    engine.applied_through(4);
    engine.lead(4);
    let mut state = ConnState::new(Gate::new(None));
    let mut buf = BytesMut::new();
    set(&mut buf, 1, "k", "v");
    let intake = state.take_requests(
        &mut buf,
        &mut engine,
        &rules,
        Instant::now(),
        &mut no_values,
    );
    assert!(intake.wrote);
    let (sent, next) = raft_replies(&mut state, &engine, &rules, None);
    assert!(sent.is_empty());
    assert!(matches!(next, Next::Wait { seq: 5, .. }), "{next:?}");
    // It stops leading; another leader's entry 5 is applied here afterwards.
    engine.abandon();
    engine.applied_through(5);
    let (sent, _) = raft_replies(&mut state, &engine, &rules, None);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, Status::Error);
    let text = String::from_utf8_lossy(&sent[0].body);
    assert!(text.contains("outcome of this write is unknown"), "{text}");
    assert!(
        !engine.current(b"k").exists(),
        "an abandoned write is not served"
    );
}
