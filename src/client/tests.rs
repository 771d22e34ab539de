//! The client against canned servers: a `TcpListener` thread per test that reads requests
//! with the protocol codec and answers whatever bytes the test scripts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::protocol::request::{flag as request_flag, put_key_entry};
use crate::protocol::RequestLimits;

const LIMITS: RequestLimits = RequestLimits {
    key_bytes_max: limits::KEY_BYTES_MAX_CEILING,
    value_bytes_max: limits::VALUE_BYTES_MAX_CEILING,
};

/// The server's side of one connection.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    /// The next request and its frame's flags and id; `None` once the client has gone.
    fn request(&mut self) -> Option<(Request, u8, u64)> {
        loop {
            if let Some(frame) = frame::decode(&mut self.buf, limits::FRAME_BYTES_MAX_CEILING)
                .expect("client frames are readable")
            {
                let request = Request::decode(&frame, LIMITS).expect("client requests are valid");
                return Some((request, frame.header.flags, frame.header.id));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn reply(&mut self, status: Status, flags: u8, id: u64, body: &[u8]) {
        self.stream
            .write_all(&reply_bytes(status, flags, id, body))
            .unwrap();
    }
}

fn reply_bytes(status: Status, flags: u8, id: u64, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    response::encode(&mut out, status, flags, id, &[body]);
    out
}

/// Starts a one-connection server running `script`; returns its address.
fn fake_server(script: impl FnOnce(&mut Peer) + Send + 'static) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        let mut peer = Peer {
            stream,
            buf: BytesMut::new(),
        };
        script(&mut peer);
    });
    (addr, handle)
}

fn seq_body(seq: u64) -> [u8; 8] {
    seq.to_le_bytes()
}

fn keys_body(keys: &[&[u8]]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32_le(keys.len() as u32);
    for key in keys {
        put_key_entry(&mut body, key);
    }
    body
}

#[test]
fn typed_calls_read_their_replies() {
    let (addr, server) = fake_server(|peer| {
        while let Some((request, _, id)) = peer.request() {
            match request {
                Request::Set { .. } => peer.reply(Status::Ok, 0, id, &seq_body(5)),
                Request::Get { key, min_seq } if &key[..] == b"k" => {
                    assert_eq!(min_seq, Some(5));
                    peer.reply(Status::Ok, 0, id, b"v\0\xff")
                }
                Request::Get { .. } => peer.reply(Status::NotFound, 0, id, b""),
                Request::Del { key } if &key[..] == b"k" => {
                    peer.reply(Status::Ok, 0, id, &seq_body(6))
                }
                Request::Del { .. } => peer.reply(Status::NotFound, 0, id, b""),
                Request::Ping { payload } => peer.reply(Status::Ok, 0, id, &payload),
                Request::Stats => peer.reply(Status::Ok, 0, id, b"role:leader\nkeys:1\n"),
                Request::Keys { .. } => peer.reply(Status::Ok, 0, id, &keys_body(&[b"k"])),
                Request::Compact => peer.reply(Status::Ok, 0, id, b"compacted:1\n"),
                Request::Auth { secret } if &secret.0[..] == b"pw" => {
                    peer.reply(Status::Ok, 0, id, b"")
                }
                Request::Auth { .. } => peer.reply(Status::Error, 0, id, b"authentication failed"),
                Request::Ext(_) => peer.reply(Status::Error, 0, id, b"not in this test"),
            }
        }
    });
    let mut client = Client::connect(&addr).unwrap();
    let wrong = crate::auth::Secret::new(b"pq").unwrap();
    assert!(
        matches!(client.authenticate(&wrong), Err(ClientError::Server(m)) if m == "authentication failed")
    );
    client
        .authenticate(&crate::auth::Secret::new(b"pw").unwrap())
        .unwrap();
    assert_eq!(client.set(b"k", b"v\0\xff").unwrap(), 5);
    assert_eq!(
        client.get_min_seq(b"k", 5).unwrap(),
        Some(Bytes::from_static(b"v\0\xff"))
    );
    assert_eq!(client.get(b"nope").unwrap(), None);
    assert_eq!(client.del(b"k").unwrap(), Some(6));
    assert_eq!(client.del(b"nope").unwrap(), None);
    assert_eq!(&client.ping(b"hi").unwrap()[..], b"hi");
    let stats = client.stats().unwrap();
    assert_eq!(stats_lines(&stats), vec![("role", "leader"), ("keys", "1")]);
    assert_eq!(client.keys(b"").unwrap(), vec![Bytes::from_static(b"k")]);
    drop(client);
    server.join().unwrap();
}

#[test]
fn keys_follows_the_more_flag() {
    let (addr, server) = fake_server(|peer| {
        let (request, flags, id) = peer.request().unwrap();
        assert_eq!(
            request,
            Request::Keys {
                prefix: Bytes::from_static(b"p"),
                start_after: None
            }
        );
        assert_eq!(flags, 0);
        peer.reply(
            Status::Ok,
            response::flag::KEYS_MORE,
            id,
            &keys_body(&[b"pa", b"pb"]),
        );
        let (request, flags, id) = peer.request().unwrap();
        assert_eq!(flags, request_flag::KEYS_START_AFTER);
        assert_eq!(
            request,
            Request::Keys {
                prefix: Bytes::from_static(b"p"),
                start_after: Some(Bytes::from_static(b"pb"))
            }
        );
        peer.reply(Status::Ok, 0, id, &keys_body(&[b"pc"]));
    });
    let mut client = Client::connect(&addr).unwrap();
    let keys = client.keys(b"p").unwrap();
    assert_eq!(keys, vec![&b"pa"[..], &b"pb"[..], &b"pc"[..]]);
    server.join().unwrap();
}

/// Runs `operation` against a server that answers its first request with `reply`.
fn against_reply<T: std::fmt::Debug>(
    reply: impl FnOnce(u64) -> BytesMut + Send + 'static,
    operation: impl FnOnce(&mut Client) -> Result<T, ClientError>,
) -> (Result<T, ClientError>, Client) {
    let (addr, server) = fake_server(move |peer| {
        let (_, _, id) = peer.request().unwrap();
        peer.stream.write_all(&reply(id)).unwrap();
        // Hold the connection open until the client is done.
        let _ = peer.request();
    });
    let mut client = Client::connect_with(
        &addr,
        ClientOptions {
            read_timeout: Some(Duration::from_secs(5)),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let result = operation(&mut client);
    let _ = client.stream.shutdown(std::net::Shutdown::Both);
    server.join().unwrap();
    (result, client)
}

#[test]
fn malformed_keys_replies_are_errors() {
    let cases: Vec<(&[u8], u8, BytesMut)> = vec![
        (b"", 0, BytesMut::from(&b"\x05\x00\x00\x00"[..])), // count 5, no keys
        (b"", 0, BytesMut::from(&b"\x01\x00"[..])),         // count cut short
        (b"", 0, keys_body(&[b"b", b"a"])),                 // not ascending
        (b"p", 0, keys_body(&[b"zz"])),                     // outside the prefix
        (b"", response::flag::KEYS_MORE, keys_body(&[])),   // more, but no progress
    ];
    for (prefix, flags, body) in cases {
        let (result, _) = against_reply(
            move |id| reply_bytes(Status::Ok, flags, id, &body),
            |client| client.keys(prefix),
        );
        let error = result.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::Malformed {
                    request: "KEYS",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().starts_with("malformed KEYS reply: "));
    }
}

#[test]
fn a_reply_with_another_id_is_an_error_and_breaks_the_connection() {
    let (result, mut client) = against_reply(
        |id| reply_bytes(Status::Ok, 0, id + 1, b""),
        |client| client.ping(b""),
    );
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::IdMismatch {
                sent: 1,
                received: 2
            }
        ),
        "{error:?}"
    );
    assert!(client.is_broken());
    assert!(matches!(client.ping(b""), Err(ClientError::Broken)));
}

#[test]
fn an_error_with_id_zero_is_the_servers_message() {
    let (result, _) = against_reply(
        |_| reply_bytes(Status::Error, 0, 0, b"frame length 9 is below the minimum"),
        |client| client.get(b"k"),
    );
    let error = result.unwrap_err();
    assert_eq!(error.to_string(), "frame length 9 is below the minimum");
}

#[test]
fn refusals_carry_the_servers_words() {
    let (result, client) = against_reply(
        |id| reply_bytes(Status::Error, 0, id, b"the key is empty\x1b[31m"),
        |client| client.set(b"k", b"v"),
    );
    let error = result.unwrap_err();
    assert!(matches!(error, ClientError::Server(_)));
    // Control characters are escaped so a reply cannot drive the terminal.
    assert_eq!(error.to_string(), "the key is empty\\u{1b}[31m");
    assert!(
        !client.is_broken(),
        "an ERROR reply leaves the connection usable"
    );

    let (result, _) = against_reply(
        |id| reply_bytes(Status::NotLeader, 0, id, b"10.0.0.1:7379"),
        |client| client.del(b"k"),
    );
    let error = result.unwrap_err();
    assert!(matches!(&error, ClientError::NotLeader(addr) if addr == "10.0.0.1:7379"));
    assert_eq!(
        error.to_string(),
        "this node is a follower; the leader is at 10.0.0.1:7379"
    );

    let (result, _) = against_reply(
        |id| reply_bytes(Status::NotLeader, 0, id, b""),
        |client| client.set(b"k", b"v"),
    );
    assert_eq!(
        result.unwrap_err().to_string(),
        "this node is a follower and does not know the leader"
    );

    let (result, _) = against_reply(
        |id| reply_bytes(Status::NotFound, 0, id, b""),
        |client| client.ping(b"x"),
    );
    assert_eq!(
        result.unwrap_err().to_string(),
        "the server answered NOT_FOUND to PING"
    );
}

#[test]
fn bad_bodies_and_statuses_are_errors() {
    let (result, _) = against_reply(
        |id| reply_bytes(Status::Ok, 0, id, b"\x01\x02\x03"),
        |client| client.set(b"k", b"v"),
    );
    assert_eq!(
        result.unwrap_err().to_string(),
        "malformed SET reply: the body is 3 bytes, not an 8-byte seq"
    );

    let (result, _) = against_reply(
        |id| reply_bytes(Status::Ok, 0, id, b"pong"),
        |client| client.ping(b"ping"),
    );
    assert!(matches!(
        result,
        Err(ClientError::Malformed {
            request: "PING",
            ..
        })
    ));

    let (result, _) = against_reply(
        |id| reply_bytes(Status::Ok, 0, id, b"role:\xff\n"),
        |client| client.stats(),
    );
    assert!(matches!(
        result,
        Err(ClientError::Malformed {
            request: "STATS",
            ..
        })
    ));

    let (result, _) = against_reply(
        |id| {
            let mut out = BytesMut::new();
            frame::encode(
                &mut out,
                frame::Header {
                    kind: 0x42,
                    flags: 0,
                    id,
                },
                &[],
            );
            out
        },
        |client| client.get(b"k"),
    );
    assert_eq!(
        result.unwrap_err().to_string(),
        "the server answered with unknown status 0x42"
    );
}

#[test]
fn unreadable_frame_lengths_cost_nothing_and_break_the_connection() {
    let (result, client) = against_reply(
        |_| BytesMut::from(&u32::MAX.to_le_bytes()[..]),
        |client| client.get(b"k"),
    );
    let error = result.unwrap_err();
    assert!(matches!(error, ClientError::Frame(_)), "{error:?}");
    assert!(error.to_string().contains("over this client's limit"));
    assert!(client.is_broken());
    assert!(client.read_buf.capacity() < 1024 * 1024);

    let (result, _) = against_reply(
        |_| BytesMut::from(&3u32.to_le_bytes()[..]),
        |client| client.get(b"k"),
    );
    assert!(matches!(result, Err(ClientError::Frame(_))));
}

#[test]
fn replies_that_trickle_in_byte_by_byte_are_put_together() {
    let value = vec![7u8; 1000];
    let expected = value.clone();
    let (addr, server) = fake_server(move |peer| {
        for _ in 0..2 {
            let (_, _, id) = peer.request().unwrap();
            for byte in reply_bytes(Status::Ok, 0, id, &value).iter() {
                peer.stream.write_all(&[*byte]).unwrap();
                peer.stream.flush().unwrap();
            }
        }
    });
    let mut client = Client::connect(&addr).unwrap();
    assert_eq!(client.get(b"k").unwrap().as_deref(), Some(&expected[..]));
    assert_eq!(client.get(b"k").unwrap().as_deref(), Some(&expected[..]));
    server.join().unwrap();
}

#[test]
fn a_connection_closed_mid_reply_says_so() {
    let (addr, server) = fake_server(|peer| {
        let (_, _, id) = peer.request().unwrap();
        let reply = reply_bytes(Status::Ok, 0, id, b"hello");
        peer.stream.write_all(&reply[..reply.len() - 2]).unwrap();
    });
    let mut client = Client::connect(&addr).unwrap();
    let error = client.get(b"k").unwrap_err();
    server.join().unwrap();
    assert!(
        matches!(error, ClientError::Closed { partial_bytes: 17 }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the server closed the connection in the middle of a reply (17 bytes of it received)"
    );
}

#[test]
fn a_silent_server_times_out() {
    let (addr, server) = fake_server(|peer| {
        let _ = peer.request();
        let _ = peer.request(); // until the client hangs up
    });
    let options = ClientOptions {
        read_timeout: Some(Duration::from_millis(100)),
        ..ClientOptions::default()
    };
    let mut client = Client::connect_with(&addr, options).unwrap();
    let error = client.ping(b"").unwrap_err();
    assert_eq!(
        error.to_string(),
        "timed out after 100 ms waiting for a reply"
    );
    drop(client);
    server.join().unwrap();
}

#[test]
fn pipelined_requests_get_their_replies_in_turn() {
    let (addr, server) = fake_server(|peer| {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (request, _, id) = peer.request().unwrap();
            assert!(matches!(request, Request::Ping { .. }));
            ids.push(id);
        }
        assert_eq!(ids, vec![1, 2, 3]);
        // Out of order, as the protocol allows.
        for id in [3, 1, 2] {
            peer.reply(Status::Ok, 0, id, &[id as u8]);
        }
    });
    let mut client = Client::connect(&addr).unwrap();
    for payload in [b"a", b"b", b"c"] {
        client
            .send(&Request::Ping {
                payload: Bytes::from_static(payload),
            })
            .unwrap();
    }
    assert_eq!(client.pending(), 3);
    assert!(matches!(
        client.call(&Request::Stats),
        Err(ClientError::Pipelined { pending: 3 })
    ));
    let ids: Vec<u64> = (0..3).map(|_| client.recv().unwrap().id).collect();
    assert_eq!(ids, vec![3, 1, 2]);
    assert_eq!(client.pending(), 0);
    server.join().unwrap();
}

#[test]
fn connection_refused_says_what_to_check() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let error = Client::connect(&addr).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("cannot connect to {addr}: Connection refused (is kvsd running?)")
    );
    let error = Client::connect("no-port-here").unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }));
    assert!(error
        .to_string()
        .starts_with("cannot connect to no-port-here: "));
}

#[test]
fn follow_leader_retries_once_on_the_leader() {
    let (leader_addr, leader) = fake_server(|peer| {
        let (request, _, id) = peer.request().unwrap();
        assert!(matches!(request, Request::Set { .. }));
        peer.reply(Status::Ok, 0, id, &seq_body(9));
    });
    let redirect = leader_addr.clone();
    let (follower_addr, follower) = fake_server(move |peer| {
        let (_, _, id) = peer.request().unwrap();
        peer.reply(Status::NotLeader, 0, id, redirect.as_bytes());
        let (_, _, id) = peer.request().unwrap();
        peer.reply(Status::NotLeader, 0, id, b"");
        let _ = peer.request();
    });
    let mut client = Client::connect(&follower_addr).unwrap();
    let mut redirected_to = None;
    let seq = client
        .follow_leader(
            |client| client.set(b"k", b"v"),
            |leader| redirected_to = Some(leader.to_string()),
        )
        .unwrap();
    assert_eq!(seq, 9);
    assert_eq!(redirected_to.as_deref(), Some(&leader_addr[..]));
    leader.join().unwrap();

    // Without an address there is nowhere to go.
    let error = client
        .follow_leader(|client| client.set(b"k", b"v"), |_| panic!("no redirect"))
        .unwrap_err();
    assert!(matches!(&error, ClientError::NotLeader(addr) if addr.is_empty()));
    drop(client);
    follower.join().unwrap();
}
