//! Authentication against the real kvsd (`--auth-file`): every rule of `docs/protocol.md`
//! ("Authentication") over raw sockets, the start-up checks of the secret file, a follower with
//! the right secret and one with a wrong one, and kvsctl with `--auth-file` and `KVS_AUTH`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{frame, parse_stats, set_body, Conn, AUTH, ERROR, GET, OK, PING, SET, STATS};
use common::{start_expecting_exit, Kvsd, KVSCTL};

const SECRET: &[u8] = b"correct horse battery staple";
/// The documented limits: frames before authentication, failures before the close.
const PRE_AUTH_FRAME_BYTES_MAX: u32 = 4096;
const FAILURES_MAX: usize = 3;
/// HELLO, the follower's first replication message.
const HELLO: u8 = 0x40;

/// Writes `contents` to a file of mode `mode` in `dir`.
fn secret_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A kvsd with `--auth-file` holding `SECRET` (written with a trailing newline, as `echo` does).
fn start_with_secret(extra: &[&str]) -> (tempfile::TempDir, Kvsd) {
    let dir = tempfile::tempdir().unwrap();
    let mut contents = SECRET.to_vec();
    contents.push(b'\n');
    let path = secret_file(dir.path(), "secret", &contents, 0o600);
    let mut args = vec!["--auth-file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let data = dir.path().join("data");
    let server = common::start(&data, &args);
    (dir, server)
}

fn message(reply: &common::raw::Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[track_caller]
fn assert_error_says(reply: &common::raw::Reply, id: u64, words: &[&str]) {
    reply.assert_error(id);
    let text = message(reply);
    for word in words {
        assert!(text.contains(word), "ERROR {text:?} should say {word:?}");
    }
}

fn authenticate(conn: &mut Conn) {
    let id = conn.id();
    conn.call(AUTH, 0, id, SECRET).assert_ok(id, b"");
}

#[test]
fn requests_before_auth_are_refused_until_the_secret_opens_the_connection() {
    let (_dir, server) = start_with_secret(&[]);
    let mut conn = Conn::connect(&server.addr);

    // Any request first: ERROR with its id, saying what to do; the connection stays open.
    let id = conn.id();
    let reply = conn.call(PING, 0, id, b"hi");
    assert_error_says(
        &reply,
        id,
        &["authentication required", "--auth-file", "KVS_AUTH"],
    );
    // AUTH with flags it does not know is a bad request, not a failed attempt.
    let id = conn.id();
    let reply = conn.call(AUTH, 0x01, id, SECRET);
    assert_error_says(&reply, id, &["flag"]);
    // A wrong secret, then the right one (two failures so far: one more would close).
    let id = conn.id();
    let reply = conn.call(AUTH, 0, id, b"correct horse battery stapl");
    assert_error_says(&reply, id, &["authentication failed"]);
    authenticate(&mut conn);

    conn.ping(b"now served");
    let seq = conn.set(b"k", b"v");
    assert!(seq >= 1);
    assert_eq!(conn.value(b"k"), Some(b"v".to_vec()));
    // Past authentication the full frame size applies again.
    let big = vec![0x42; 64 * 1024];
    conn.set(b"big", &big);
    assert_eq!(conn.value(b"big"), Some(big));
    // Authenticating again with the right secret is fine.
    authenticate(&mut conn);

    let stats = conn.stats();
    assert_eq!(stats["auth"], "required");
    assert_eq!(stats["auth_failures_total"], "2", "{stats:?}");
    assert_eq!(stats["connections_closed_auth_total"], "0", "{stats:?}");
}

#[test]
fn auth_pipelined_with_requests_in_one_write_serves_them_in_order() {
    let (_dir, server) = start_with_secret(&[]);
    let mut conn = Conn::connect(&server.addr);
    // AUTH, then at once a SET larger than the pre-auth frame cap, then a GET, in one write:
    // the frames after AUTH are judged as an authenticated connection's.
    let value = vec![7u8; 3 * PRE_AUTH_FRAME_BYTES_MAX as usize];
    let mut bytes = frame(AUTH, 0, 1, SECRET);
    bytes.extend(frame(SET, 0, 2, &set_body(b"k", &value)));
    bytes.extend(frame(GET, 0, 3, b"k"));
    conn.send(&bytes);
    conn.reply().assert_ok(1, b"");
    let set = conn.reply();
    assert_eq!((set.status, set.id), (OK, 2), "{set:?}");
    conn.reply().assert_ok(3, &value);
}

#[test]
fn too_many_failures_close_the_connection() {
    let (_dir, server) = start_with_secret(&[]);
    let mut conn = Conn::connect(&server.addr);
    // Requests before AUTH and wrong secrets count alike; the last ERROR says it closes.
    let attempts: [(u8, &[u8]); FAILURES_MAX] = [(GET, b"k"), (AUTH, b"guess"), (AUTH, b"")];
    for (n, (op, body)) in attempts.into_iter().enumerate() {
        let id = conn.id();
        let reply = conn.call(op, 0, id, body);
        reply.assert_error(id);
        if n + 1 == FAILURES_MAX {
            assert_error_says(&reply, id, &["closing the connection"]);
        } else {
            assert!(!message(&reply).contains("closing"), "{reply:?}");
        }
    }
    conn.expect_closed();

    // A pipelined burst of requests without AUTH: three ERRORs, then the close.
    let mut burst = Conn::connect(&server.addr);
    let mut bytes = Vec::new();
    for id in 1..=10u64 {
        bytes.extend(frame(PING, 0, id, b"x"));
    }
    burst.send(&bytes);
    for id in 1..=FAILURES_MAX as u64 {
        burst.reply().assert_error(id);
    }
    burst.expect_closed();

    let mut admin = Conn::connect(&server.addr);
    authenticate(&mut admin);
    let stats = admin.stats();
    assert_eq!(stats["connections_closed_auth_total"], "2", "{stats:?}");
    assert_eq!(stats["auth_failures_total"], "6", "{stats:?}");
}

#[test]
fn a_large_header_before_auth_is_refused_from_the_header_alone() {
    let (_dir, server) = start_with_secret(&[]);
    // Lengths a little over the pre-auth cap, within the server's max_frame, and 4 GiB. Only
    // the header is sent: the ERROR (id 0) comes without the body, so nothing waited for it or
    // was allocated for it.
    for len in [PRE_AUTH_FRAME_BYTES_MAX + 1, 1 << 20, u32::MAX] {
        let mut conn = Conn::connect(&server.addr);
        let mut header = len.to_le_bytes().to_vec();
        header.extend([SET, 0]);
        header.extend(9u64.to_le_bytes());
        conn.send(&header);
        let reply = conn.reply();
        reply.assert_error(0);
        if len <= (1 << 20) {
            assert_error_says(&reply, 0, &["before it authenticates", "AUTH"]);
        }
        conn.expect_closed();
    }
    // At the cap itself the frame is read (and refused only for want of AUTH).
    let mut conn = Conn::connect(&server.addr);
    let body = vec![b'p'; PRE_AUTH_FRAME_BYTES_MAX as usize - 10];
    let reply = conn.call(PING, 0, 5, &body);
    assert_error_says(&reply, 5, &["authentication required"]);
}

#[test]
fn hello_needs_auth_first_and_auth_is_a_no_op_without_a_secret() {
    let (_dir, server) = start_with_secret(&[]);
    let mut conn = Conn::connect(&server.addr);
    let reply = conn.call(HELLO, 0, 0, &[0u8; 24]);
    assert_error_says(&reply, 0, &["authentication required"]);

    let plain_dir = tempfile::tempdir().unwrap();
    let plain = common::start(plain_dir.path(), &[]);
    let mut conn = Conn::connect(&plain.addr);
    for secret in [&b"anything"[..], b""] {
        let id = conn.id();
        conn.call(AUTH, 0, id, secret).assert_ok(id, b"");
    }
    conn.ping(b"served");
    assert_eq!(conn.stats()["auth"], "off");
}

#[test]
fn secret_file_problems_stop_kvsd_at_start_and_loose_modes_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |file: &Path| {
        let args: Vec<&OsStr> = vec![
            OsStr::new("--port"),
            OsStr::new("0"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--auth-file"),
            file.as_os_str(),
        ];
        start_expecting_exit(&args)
    };
    for (name, contents, says) in [
        ("empty", &b"\n"[..], "empty"),
        ("long", &[b'x'; 1025][..], "1024"),
    ] {
        let path = secret_file(dir.path(), name, contents, 0o600);
        let (status, stderr) = start(&path);
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("--auth-file"),
            "{stderr}"
        );
    }
    let (status, stderr) = start(&dir.path().join("missing"));
    assert!(!status.success() && stderr.contains("missing"), "{stderr}");

    let loose = secret_file(dir.path(), "loose", SECRET, 0o644);
    let server = common::start(&data, &["--auth-file", loose.to_str().unwrap()]);
    // The warning is logged before the ready line.
    assert!(
        server
            .startup_log
            .iter()
            .any(|line| line.contains("chmod 600")),
        "kvsd warns about a secret file others can read:\n{}",
        server.startup_log.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Followers
// ---------------------------------------------------------------------------------------------

fn stats_of(addr: &str) -> BTreeMap<String, String> {
    let mut conn = Conn::connect(addr);
    authenticate(&mut conn);
    conn.stats()
}

#[track_caller]
fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => panic!("{what}: not within 30 s: {last}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for a logged line of `server` that contains every word, and returns it.
#[track_caller]
fn wait_for_log(server: &Kvsd, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        for line in server.drain_log(Duration::from_millis(200)) {
            if words.iter().all(|word| line.contains(word)) {
                return line;
            }
            seen.push(line);
        }
    }
    panic!("no log line with {words:?}; saw:\n{}", seen.join("\n"));
}

#[test]
fn a_follower_with_the_secret_replicates_and_one_without_it_says_why() {
    let (dir, leader) = start_with_secret(&["--node-id", "leader"]);
    let right = secret_file(dir.path(), "right", SECRET, 0o600);
    let wrong = secret_file(dir.path(), "wrong", b"not the secret", 0o600);

    let good = common::start(
        &dir.path().join("good"),
        &[
            "--node-id",
            "good",
            "--async-replication",
            "--leader-addr",
            &leader.addr,
            "--auth-file",
            right.to_str().unwrap(),
        ],
    );
    let bad = common::start(
        &dir.path().join("bad"),
        &[
            "--node-id",
            "bad",
            "--async-replication",
            "--leader-addr",
            &leader.addr,
            "--auth-file",
            wrong.to_str().unwrap(),
        ],
    );
    let bare = common::start(
        &dir.path().join("bare"),
        &[
            "--node-id",
            "bare",
            "--async-replication",
            "--leader-addr",
            &leader.addr,
        ],
    );

    let mut client = Conn::connect(&leader.addr);
    authenticate(&mut client);
    let seq = client.set(b"replicated", b"yes");
    wait_until("the follower with the secret applies the write", || {
        let stats = stats_of(&good.addr);
        match stats["applied_seq"].parse::<u64>() {
            Ok(applied) if applied >= seq => Ok(()),
            _ => Err(format!("{stats:?}")),
        }
    });
    let mut reader = Conn::connect(&good.addr);
    authenticate(&mut reader);
    assert_eq!(reader.value(b"replicated"), Some(b"yes".to_vec()));

    // The wrong secret: refused, logged with the flag to fix, retried, never connected.
    let line = wait_for_log(&bad, &["refused this follower's secret", "--auth-file"]);
    assert!(line.contains("authentication failed"), "{line}");
    // No secret at all: the leader's "authentication required", and what to do.
    wait_for_log(
        &bare,
        &[
            "authentication required",
            "start this follower with --auth-file",
        ],
    );
    for follower in [&bad, &bare] {
        let mut conn = Conn::connect(&follower.addr);
        if follower.addr == bad.addr {
            // Its own clients authenticate with its own secret.
            let id = conn.id();
            conn.call(AUTH, 0, id, b"not the secret").assert_ok(id, b"");
        }
        let stats = conn.stats();
        assert_ne!(stats["link_state"], "connected", "{stats:?}");
        assert_eq!(stats["applied_seq"], "0", "{stats:?}");
        assert_eq!(conn.value(b"replicated"), None);
    }
    // The leader counted the refusals, and keeps seeing retries.
    wait_until("the bad follower retries", || {
        let failures: u64 = stats_of(&leader.addr)["auth_failures_total"]
            .parse()
            .unwrap();
        (failures >= 4)
            .then_some(())
            .ok_or(format!("auth_failures_total {failures}"))
    });
    let leader_stats = stats_of(&leader.addr);
    assert_eq!(leader_stats["followers"], "1", "{leader_stats:?}");
}

// ---------------------------------------------------------------------------------------------
// kvsctl
// ---------------------------------------------------------------------------------------------

fn kvsctl(addr: &str, env_secret: Option<&[u8]>, args: &[&str]) -> Output {
    let mut command = Command::new(KVSCTL);
    command
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("KVS_AUTH")
        .stdin(Stdio::null());
    if let Some(secret) = env_secret {
        command.env("KVS_AUTH", OsStr::from_bytes_compat(secret));
    }
    command.output().expect("run kvsctl")
}

trait FromBytesCompat {
    fn from_bytes_compat(bytes: &[u8]) -> &OsStr;
}

impl FromBytesCompat for OsStr {
    fn from_bytes_compat(bytes: &[u8]) -> &OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(bytes)
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn kvsctl_authenticates_with_auth_file_or_kvs_auth() {
    let (dir, server) = start_with_secret(&[]);
    let right = secret_file(
        dir.path(),
        "right",
        b"correct horse battery staple\n",
        0o600,
    );
    let wrong = secret_file(dir.path(), "wrong", b"nope", 0o600);
    let right = right.to_str().unwrap();

    let output = kvsctl(
        &server.addr,
        None,
        &["--auth-file", right, "set", "k", "from-file"],
    );
    assert!(output.status.success(), "{}", text(&output));
    let output = kvsctl(&server.addr, Some(SECRET), &["get", "k"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(output.stdout, b"from-file\n");
    // --auth-file wins over KVS_AUTH.
    let output = kvsctl(
        &server.addr,
        Some(b"nope"),
        &["--auth-file", right, "get", "k"],
    );
    assert!(output.status.success(), "{}", text(&output));
    // A shell sends it too.
    let mut shell = Command::new(KVSCTL)
        .args(["--addr", &server.addr, "--auth-file", right])
        .env_remove("KVS_AUTH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(shell.stdin.as_mut().unwrap(), b"set s 1\nget s\n").unwrap();
    let output = shell.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).ends_with("1\n"),
        "{}",
        text(&output)
    );

    // Without a secret, and with a wrong one: exit 2 and the server's reason.
    let output = kvsctl(&server.addr, None, &["get", "k"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("authentication required"),
        "{}",
        text(&output)
    );
    let output = kvsctl(
        &server.addr,
        None,
        &["--auth-file", wrong.to_str().unwrap(), "get", "k"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("authentication failed"),
        "{}",
        text(&output)
    );
    let output = kvsctl(&server.addr, Some(b"nope"), &["get", "k"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let output = kvsctl(
        &server.addr,
        None,
        &["--auth-file", "/nonexistent/secret", "get", "k"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--auth-file"),
        "{}",
        text(&output)
    );
}

#[test]
fn stats_and_other_ops_stay_closed_to_an_unauthenticated_raw_client() {
    let (_dir, server) = start_with_secret(&[]);
    let mut conn = Conn::connect(&server.addr);
    let reply = conn.call(STATS, 0, 3, b"");
    assert_eq!(reply.status, ERROR, "{reply:?}");
    assert!(
        parse_stats_safe(&reply.body).is_none(),
        "STATS must not leak before AUTH"
    );
}

fn parse_stats_safe(body: &[u8]) -> Option<BTreeMap<String, String>> {
    std::str::from_utf8(body)
        .ok()?
        .contains("node_id:")
        .then(|| parse_stats(body))
}
