//! kvs-bench against real Redis and etcd, when they are installed (`tools/install-peers`);
//! skipped with a note otherwise. Same checks as against kvsd: counts match, no error,
//! `--verify` passes. Servers run on 127.0.0.1 in temp dirs and are killed on drop.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{bench, free_port, have, Process};

fn wait_for_port(port: u16, process: &mut Process) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("the server exited: {status}");
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn redis_pipelined_verify() {
    if !have("redis-server") {
        eprintln!("skipped: no redis-server (tools/install-peers installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = Process(
        Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, &mut redis);
    let url = format!("redis://127.0.0.1:{port}");
    let run = bench(&[
        "--target",
        &url,
        "--clients",
        "4",
        "--threads",
        "2",
        "--pipeline",
        "16",
        "--duration",
        "1",
        "--ratio",
        "1:1",
        "--keyspace",
        "1000",
        "--prefill",
        "--verify",
    ]);
    run.assert_clean();
    assert!(run.u64("/verify/passed") > 0);
    assert_eq!(run.u64("/verify/unknown"), 0);
}

#[test]
fn etcd_concurrent_verify() {
    if !have("etcd") {
        eprintln!("skipped: no etcd (tools/install-peers installs etcd-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client_port = free_port();
    let peer_port = free_port();
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Process(
        Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(client_port, &mut etcd);
    let url = format!("etcd://127.0.0.1:{client_port}");
    // Few keys and several calls in flight per channel: SETs of one key overlap, which is
    // what the etcd rule of --verify is for.
    let run = bench(&[
        "--target",
        &url,
        "--clients",
        "2",
        "--pipeline",
        "8",
        "--duration",
        "1",
        "--ratio",
        "1:1",
        "--keyspace",
        "4",
        "--verify",
    ]);
    run.assert_clean();
    assert!(run.u64("/verify/passed") > 0);
}
