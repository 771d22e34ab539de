//! kvsctl against a real kvsd: one-shot commands and their exit statuses, binary values
//! through stdin, the shell through a pipe, and the client library's pipelining.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use common::{kvsctl, Kvsd, KVSCTL};
use kvs::client::Client;
use kvs::protocol::Request;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit status, showing everything kvsctl printed when it is wrong.
#[track_caller]
fn assert_status(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

fn start() -> (tempfile::TempDir, Kvsd) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    (dir, server)
}

#[test]
fn one_shot_set_get_del_with_exit_statuses() {
    let (_dir, server) = start();
    let addr = &server.addr;

    let set = kvsctl(addr, &["set", "name", "alice"], b"");
    assert_status(&set, 0);
    assert!(stdout(&set).starts_with("OK (seq "), "{}", stdout(&set));

    let get = kvsctl(addr, &["get", "name"], b"");
    assert_status(&get, 0);
    assert_eq!(stdout(&get), "alice\n");

    let missing = kvsctl(addr, &["get", "nobody"], b"");
    assert_status(&missing, 1);
    assert_eq!(stdout(&missing), "");
    assert!(stderr(&missing).contains("(not found)"));

    let del = kvsctl(addr, &["del", "name"], b"");
    assert_status(&del, 0);
    assert!(stdout(&del).starts_with("OK"));

    let del_again = kvsctl(addr, &["del", "name"], b"");
    assert_status(&del_again, 1);
    assert!(stderr(&del_again).contains("(not found)"));
    assert_status(&kvsctl(addr, &["get", "name"], b""), 1);

    // A value that starts with a hyphen is a value, not a flag.
    assert_status(&kvsctl(addr, &["set", "n", "-5"], b""), 0);
    assert_eq!(stdout(&kvsctl(addr, &["get", "n"], b"")), "-5\n");
}

#[test]
fn seqs_increase_by_one_per_write() {
    let (_dir, server) = start();
    let seq = |output: &Output| -> u64 {
        let text = stdout(output);
        let number = text
            .trim()
            .strip_prefix("OK (seq ")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no seq in {text:?}"));
        number.parse().unwrap()
    };
    let first = seq(&kvsctl(&server.addr, &["set", "a", "1"], b""));
    let second = seq(&kvsctl(&server.addr, &["set", "b", "2"], b""));
    let third = seq(&kvsctl(&server.addr, &["del", "a"], b""));
    assert_eq!((second, third), (first + 1, first + 2));
}

#[test]
fn a_binary_value_round_trips_through_stdin() {
    let (_dir, server) = start();
    let value: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let set = kvsctl(&server.addr, &["set", "blob", "-"], &value);
    assert_status(&set, 0);
    let get = kvsctl(&server.addr, &["get", "blob"], b"");
    assert_status(&get, 0);
    assert!(
        get.stdout == [&value[..], b"\n"].concat(),
        "the value came back changed"
    );

    // An empty stdin is an empty value.
    assert_status(&kvsctl(&server.addr, &["set", "empty", "-"], b""), 0);
    assert_eq!(stdout(&kvsctl(&server.addr, &["get", "empty"], b"")), "\n");
}

#[test]
fn the_largest_value_round_trips_through_stdin() {
    let (_dir, server) = start();
    // 1 MiB, kvsd's default --max-value-bytes: one frame spans many reads on both sides.
    let value: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let set = kvsctl(&server.addr, &["set", "big", "-"], &value);
    assert_status(&set, 0);
    let get = kvsctl(&server.addr, &["get", "big"], b"");
    assert_status(&get, 0);
    assert!(
        get.stdout == [&value[..], b"\n"].concat(),
        "the value came back changed"
    );

    let too_big = kvsctl(
        &server.addr,
        &["set", "big", "-"],
        &[&value[..], b"x"].concat(),
    );
    assert_status(&too_big, 2);
    assert!(stderr(&too_big).starts_with("kvsctl: "));
}

#[test]
fn a_value_with_spaces_is_kept_whole() {
    let (_dir, server) = start();
    assert_status(
        &kvsctl(&server.addr, &["set", "greeting", "hello  wide world"], b""),
        0,
    );
    assert_eq!(
        stdout(&kvsctl(&server.addr, &["get", "greeting"], b"")),
        "hello  wide world\n"
    );
}

#[test]
fn keys_lists_by_prefix_in_order() {
    let (_dir, server) = start();
    for key in ["user:2", "user:1", "order:1", "user:10"] {
        assert_status(&kvsctl(&server.addr, &["set", key, "x"], b""), 0);
    }
    let users = kvsctl(&server.addr, &["keys", "user:"], b"");
    assert_status(&users, 0);
    assert_eq!(stdout(&users), "user:1\nuser:10\nuser:2\n");
    let all = kvsctl(&server.addr, &["keys"], b"");
    assert_eq!(stdout(&all), "order:1\nuser:1\nuser:10\nuser:2\n");
    let none = kvsctl(&server.addr, &["keys", "nothing"], b"");
    assert_status(&none, 0);
    assert_eq!(stdout(&none), "");
}

#[test]
fn keys_follows_more_across_small_frames() {
    let dir = tempfile::tempdir().unwrap();
    // Frames of 2,000 bytes: 200 keys of 40 bytes take several KEYS replies.
    let server = common::start(
        dir.path(),
        &[
            "--max-frame-bytes",
            "2000",
            "--max-key-bytes",
            "100",
            "--max-value-bytes",
            "1000",
        ],
    );
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i:036}")).collect();
    let mut client = Client::connect(&server.addr).unwrap();
    for key in &keys {
        client
            .send(&Request::Set {
                key: Bytes::from(key.clone()),
                value: Bytes::from_static(b"v"),
            })
            .unwrap();
    }
    for _ in &keys {
        let response = client.recv().unwrap();
        assert_eq!(response.status, kvs::protocol::Status::Ok, "{response:?}");
    }
    let listed = kvsctl(&server.addr, &["keys", "key-"], b"");
    assert_status(&listed, 0);
    let expected: String = keys.iter().map(|key| format!("{key}\n")).collect();
    assert_eq!(stdout(&listed), expected);
    assert_eq!(client.keys(b"key-").unwrap().len(), 200);
}

#[test]
fn stats_and_ping() {
    let (_dir, server) = start();
    let stats = kvsctl(&server.addr, &["stats"], b"");
    assert_status(&stats, 0);
    let text = stdout(&stats);
    let role = text
        .lines()
        .find(|line| line.starts_with("role "))
        .unwrap_or_else(|| panic!("no role in:\n{text}"));
    assert_eq!(
        role.split_whitespace().collect::<Vec<_>>(),
        ["role", "leader"]
    );
    assert!(
        !text.contains("role:"),
        "name:value is shown as name  value"
    );
    // The values line up in one column.
    let columns: Vec<usize> = text
        .lines()
        .filter_map(|line| {
            let name_end = line.find(' ')?;
            Some(name_end + line[name_end..].len() - line[name_end..].trim_start().len())
        })
        .collect();
    assert!(columns.windows(2).all(|pair| pair[0] == pair[1]), "{text}");

    let ping = kvsctl(&server.addr, &["ping"], b"");
    assert_status(&ping, 0);
    assert_eq!(stdout(&ping), "PONG\n");
    assert_eq!(
        stdout(&kvsctl(&server.addr, &["ping", "hello there"], b"")),
        "hello there\n"
    );
}

#[test]
fn server_errors_exit_2_with_the_servers_message() {
    let (_dir, server) = start();
    let long_key = "k".repeat(5000);
    let output = kvsctl(&server.addr, &["get", &long_key], b"");
    assert_status(&output, 2);
    let message = stderr(&output);
    assert!(message.starts_with("kvsctl: "), "{message}");
    assert!(message.contains("5000"), "the server's message: {message}");

    let output = kvsctl(&server.addr, &["set", "", "v"], b"");
    assert_status(&output, 2);
    assert!(stderr(&output).starts_with("kvsctl: "));
}

#[test]
fn usage_errors_exit_2() {
    let output = kvsctl("127.0.0.1:1", &["set", "only-a-key"], b"");
    assert_status(&output, 2);
    let output = kvsctl("127.0.0.1:1", &["frobnicate"], b"");
    assert_status(&output, 2);
    let help = kvsctl("127.0.0.1:1", &["--help"], b"");
    assert_status(&help, 0);
    assert!(stdout(&help).contains("Exit status"));
}

#[test]
fn connection_refused_exits_2_and_says_so() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let output = kvsctl(&addr, &["get", "k"], b"");
    assert_status(&output, 2);
    assert_eq!(
        stderr(&output),
        format!("kvsctl: cannot connect to {addr}: Connection refused (is kvsd running?)\n")
    );
}

#[test]
fn kvs_addr_names_the_server() {
    let (_dir, server) = start();
    let output = Command::new(KVSCTL)
        .args(["ping", "via-env"])
        .env("KVS_ADDR", &server.addr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_status(&output, 0);
    assert_eq!(stdout(&output), "via-env\n");
}

#[test]
fn the_shell_reads_a_pipe() {
    let (_dir, server) = start();
    let script = b"set a 1\n\
        set greeting \"hello world\"\n\
        get greeting\n\
        bogus command\n\
        get missing\n\
        # a comment\n\
        \n\
        set 'with space' 'it''s'\n\
        keys with\n\
        get a\n\
        del a\n\
        del a\n\
        ping\n";
    let output = kvsctl(&server.addr, &[], script);
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 9, "{out}");
    assert!(lines[0].starts_with("OK (seq "));
    assert!(lines[1].starts_with("OK (seq "));
    assert_eq!(lines[2], "hello world");
    assert_eq!(lines[3], "(nil)");
    assert!(lines[4].starts_with("OK (seq "));
    assert_eq!(lines[5], "with space");
    assert_eq!(lines[6], "1");
    assert!(lines[7].starts_with("OK (seq "));
    assert_eq!(lines[8], "PONG");
    let err = stderr(&output);
    assert!(err.contains("kvsctl: unknown command 'bogus'"), "{err}");
    assert!(err.contains("(not found)"), "{err}");
    // The bad line did not stop the shell, but a script learns that something failed.
    assert_status(&output, 2);

    let clean = kvsctl(&server.addr, &[], b"get greeting\nexit\nget greeting\n");
    assert_status(&clean, 0);
    assert_eq!(stdout(&clean), "hello world\n");
}

#[test]
fn the_shell_goes_on_after_a_server_error() {
    let (_dir, server) = start();
    let script = format!("set {} v\nset k v\nget k\n", "x".repeat(5000));
    let output = kvsctl(&server.addr, &[], script.as_bytes());
    let out = stdout(&output);
    assert!(out.starts_with("OK (seq "), "{out}");
    assert!(out.ends_with("\nv\n"), "{out}");
    assert!(stderr(&output).starts_with("kvsctl: "));
    assert_status(&output, 2);
}

#[test]
fn the_shell_without_a_server_reports_each_command() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let output = kvsctl(&addr, &[], b"get a\nping\n");
    assert_status(&output, 2);
    assert_eq!(stderr(&output).matches("Connection refused").count(), 2);
}

#[test]
fn the_client_pipelines_against_kvsd() {
    let (_dir, server) = start();
    let mut client = Client::connect(&server.addr).unwrap();
    let mut ids = Vec::new();
    for i in 0..100u32 {
        ids.push(
            client
                .send(&Request::Set {
                    key: Bytes::from(format!("p{i:03}")),
                    value: Bytes::from(i.to_le_bytes().to_vec()),
                })
                .unwrap(),
        );
    }
    let mut answered: Vec<u64> = (0..100).map(|_| client.recv().unwrap().id).collect();
    answered.sort_unstable();
    assert_eq!(answered, ids);
    assert_eq!(
        client.get(b"p042").unwrap().as_deref(),
        Some(&42u32.to_le_bytes()[..])
    );
    assert_eq!(client.keys(b"p").unwrap().len(), 100);
    assert!(client.stats().unwrap().contains("role:leader"));
}

/// A stand-in server that answers one PING per connection and then hangs up, as a restarted
/// kvsd would look to a client.
fn hang_up_after_each_ping(connections: usize) -> (String, std::thread::JoinHandle<()>) {
    use kvs::protocol::{frame, response, Status};
    use std::io::Read;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = bytes::BytesMut::new();
            let frame = loop {
                if let Some(frame) = frame::decode(&mut buf, 1 << 20).unwrap() {
                    break frame;
                }
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "kvsctl hung up before asking");
                buf.extend_from_slice(&chunk[..n]);
            };
            let mut reply = bytes::BytesMut::new();
            response::encode(&mut reply, Status::Ok, 0, frame.header.id, &[&frame.body]);
            stream.write_all(&reply).unwrap();
        }
    });
    (addr, handle)
}

#[test]
fn the_shell_connects_again_after_losing_the_connection() {
    let (addr, server) = hang_up_after_each_ping(2);
    let output = kvsctl(&addr, &[], b"ping one\nping lost\nping two\n");
    server.join().unwrap();
    assert_eq!(stdout(&output), "one\ntwo\n");
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("kvsctl: "), "{err}");
    assert_status(&output, 2);
}
