//! kvsd's Redis port under the same limits and timeouts as the native port (`docs/resp.md`,
//! "What is the same"): `--idle-timeout-secs` (an idle client, and one stalled in the middle of a
//! command), `--output-stall-secs` (a client that stops reading its replies),
//! `--max-connections` across both ports, `--max-value-bytes`, and a command over the size
//! limit; and SIGTERM with RESP clients connected. Real kvsd, real sockets; every wait is a
//! poll with a generous deadline, never a timing assertion.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::resp::start;
use common::Kvsd;

fn connect(kvsd: &Kvsd) -> TcpStream {
    let stream = TcpStream::connect(kvsd.resp_addr.as_deref().expect("resp_addr")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Sends one command as a RESP array and returns its reply, which must be one line (CRLF
/// included): anything the reader took past it is dropped.
fn command(stream: &mut TcpStream, args: &[&[u8]]) -> String {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).bytes());
        out.extend_from_slice(arg);
        out.extend(b"\r\n");
    }
    stream.write_all(&out).unwrap();
    let mut line = String::new();
    BufReader::new(&*stream).read_line(&mut line).unwrap();
    line
}

/// Everything the server sends until it closes the connection.
fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn idle_resp_clients_are_closed_with_a_resp_error_even_mid_command() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &["--idle-timeout-secs", "1"]);
    let expected = "-ERR closing the connection: it sent nothing for 1 s (--idle-timeout-secs)\r\n";
    let mut idle = connect(&kvsd);
    assert_eq!(until_closed(&mut idle), expected);
    // Stalled in the middle of a command: the same.
    let mut half = connect(&kvsd);
    half.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc")
        .unwrap();
    assert_eq!(until_closed(&mut half), expected);
    // The server serves on.
    let mut client = connect(&kvsd);
    assert_eq!(command(&mut client, &[b"PING"]), "+PONG\r\n");
}

#[test]
fn max_connections_counts_both_ports_and_refuses_in_resp() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &["--max-connections", "2"]);
    let mut native = kvs::client::Client::connect(&kvsd.addr).unwrap();
    // Served (so counted) before the RESP clients come: the ports accept independently.
    assert_eq!(native.get(b"nothing").unwrap(), None);
    let mut resp = connect(&kvsd);
    assert_eq!(command(&mut resp, &[b"PING"]), "+PONG\r\n");
    let mut refused = connect(&kvsd);
    let answer = until_closed(&mut refused);
    assert!(
        answer.starts_with("-ERR max number of clients reached: ") && answer.ends_with("\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("--max-connections"), "{answer:?}");
    drop(resp);
    // Its slot frees once kvsd sees the close.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut again = connect(&kvsd);
        let mut out = Vec::new();
        again.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let _ = (&again).take(7).read_to_end(&mut out);
        if out == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never freed: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn values_and_commands_over_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(
        dir.path(),
        &["--max-value-bytes", "16", "--max-frame-bytes", "8192"],
    );
    let mut client = connect(&kvsd);
    assert_eq!(
        command(&mut client, &[b"SET", b"k", &[b'x'; 17]]),
        "-ERR the value is 17 bytes, over this server's limit of 16 (--max-value-bytes)\r\n"
    );
    // Refused, and nothing was written: the connection goes on.
    assert_eq!(command(&mut client, &[b"GET", b"k"]), "$-1\r\n");
    assert_eq!(
        command(&mut client, &[b"SET", b"k", &[b'x'; 16]]),
        "+OK\r\n"
    );
    // A bulk longer than a command may be: Redis's text for a bulk over its own limit, and a
    // close, before the bulk arrives.
    let mut big = connect(&kvsd);
    big.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10000000\r\n")
        .unwrap();
    assert_eq!(
        until_closed(&mut big),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    // Bulks each within the limit, together over it (8 KiB + 64 KiB of headers): kvs's own text.
    let mut many = connect(&kvsd);
    let bulk = 40 * 1024;
    many.write_all(format!("*3\r\n$4\r\nMSET\r\n${bulk}\r\n").as_bytes())
        .unwrap();
    many.write_all(&vec![b'k'; bulk]).unwrap();
    many.write_all(format!("\r\n${bulk}\r\n").as_bytes())
        .unwrap();
    let answer = until_closed(&mut many);
    assert!(
        answer.starts_with("-ERR Protocol error: the command is over this server's limit of "),
        "{answer:?}"
    );
    // The first connection was never disturbed.
    assert_eq!(command(&mut client, &[b"PING"]), "+PONG\r\n");
}

#[test]
fn a_client_that_stops_reading_is_closed_after_output_stall_secs() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &["--output-stall-secs", "1"]);
    let mut writer = connect(&kvsd);
    let value = vec![b'v'; 1 << 20];
    assert_eq!(command(&mut writer, &[b"SET", b"big", &value]), "+OK\r\n");
    // 64 MiB of replies asked for, none read: far past what the socket buffers hold.
    let mut stalled = connect(&kvsd);
    // Served (and counted) before the watch below starts.
    assert_eq!(command(&mut stalled, &[b"PING"]), "+PONG\r\n");
    let get = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(64);
    stalled
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stalled.write_all(&get).unwrap();
    // Wait until kvsd counts only the watcher's connection.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        writer
            .write_all(b"*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n")
            .unwrap();
        let mut reader = BufReader::new(&writer);
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let len: usize = header.trim_start_matches('$').trim().parse().unwrap();
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body).unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        if body.contains("connected_clients:1\r\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled client was never closed: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // What it finally reads ends early: kvsd dropped the rest.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut received = Vec::new();
    if let Err(error) = stalled.read_to_end(&mut received) {
        // A reset is a close too; a timeout is not.
        assert!(
            !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "kvsd counted the connection closed but kept its socket open: {error}"
        );
    }
    assert!(
        received.len() < 64 * (value.len() + 16),
        "all {} bytes arrived",
        received.len()
    );
}

#[test]
fn sigterm_with_resp_clients_exits_0_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let kvsd = start(dir.path(), &[]);
    let mut idle = connect(&kvsd);
    assert_eq!(command(&mut idle, &[b"PING"]), "+PONG\r\n");
    // Writes pipelined while the signal comes: every one answered +OK is kept.
    let mut writer = connect(&kvsd);
    let mut pipeline = Vec::new();
    for i in 0..2000 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        pipeline.extend(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .bytes(),
        );
    }
    writer.write_all(&pipeline).unwrap();
    let mut first = [0u8; 5];
    writer.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"+OK\r\n");
    let status = kvsd.stop();
    assert!(status.success(), "kvsd exited {status}");
    let mut rest = Vec::new();
    let _ = writer.read_to_end(&mut rest);
    assert!(
        rest.chunks(5).all(|reply| reply == b"+OK\r\n"),
        "only +OK before the close"
    );
    let acknowledged = 1 + rest.len() / 5;
    assert_eq!(until_closed(&mut idle), "", "the idle client sees a close");
    let kvsd = start(dir.path(), &[]);
    let mut client = connect(&kvsd);
    let mut replies = BufReader::new(client.try_clone().unwrap());
    for i in 0..acknowledged {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        client
            .write_all(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes())
            .unwrap();
        let mut header = String::new();
        replies.read_line(&mut header).unwrap();
        assert_eq!(
            header,
            format!("${}\r\n", value.len()),
            "{key} was acknowledged"
        );
        let mut body = vec![0; value.len() + 2];
        replies.read_exact(&mut body).unwrap();
        assert_eq!(body, format!("{value}\r\n").into_bytes());
    }
}
