//! Protected mode with the real binary: `--bind` beyond loopback without `--auth-file` refuses
//! to start and says what to do; with a secret, or with `--unprotected-bind`, kvsd serves.

mod common;

use std::ffi::OsStr;

use common::raw::{Conn, AUTH, OK};

#[test]
fn a_wide_bind_without_a_secret_refuses_to_start_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args: Vec<&OsStr> = ["--bind", "0.0.0.0", "--port", "0", "--data-dir"]
        .iter()
        .map(OsStr::new)
        .chain([data.as_os_str()])
        .collect();
    let (status, stderr) = common::start_expecting_exit(&args);
    assert_eq!(status.code(), Some(2), "{stderr}");
    for what in [
        "refusing to listen on 0.0.0.0",
        "--auth-file",
        "--bind 127.0.0.1",
        "--unprotected-bind",
    ] {
        assert!(stderr.contains(what), "{what:?} not in: {stderr}");
    }
    assert!(!data.exists(), "nothing was created before refusing");
}

#[test]
fn a_wide_bind_serves_with_a_secret_or_the_flag_that_names_the_risk() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret-for-tests\n").unwrap();
    let secret_arg = secret.to_str().unwrap();

    let server = common::start(
        &dir.path().join("with-secret"),
        &["--bind", "0.0.0.0", "--auth-file", secret_arg],
    );
    let port = server.addr.rsplit_once(':').unwrap().1.to_string();
    // The ready file names the bound address; reach it on loopback.
    let mut conn = Conn::connect(&format!("127.0.0.1:{port}"));
    let id = conn.id();
    assert_eq!(conn.call(AUTH, 0, id, b"s3cret-for-tests").status, OK);
    conn.ping(b"hi");
    drop(conn);
    server.stop();

    let server = common::start(
        &dir.path().join("unprotected"),
        &["--bind", "0.0.0.0", "--unprotected-bind"],
    );
    let port = server.addr.rsplit_once(':').unwrap().1.to_string();
    Conn::connect(&format!("127.0.0.1:{port}")).ping(b"hi");
    server.stop();
}
