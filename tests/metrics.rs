//! `kvsd --metrics-addr`: /metrics moves with the traffic and passes `promtool check metrics`
//! (Debian's prometheus package; `tools/install-peers` installs it), /health and /ready answer
//! what a prober needs, on a leader and on a follower, and the port refuses what it does not
//! serve. The disk-failure case of /health is in `disk_faults.rs` (it needs a dying disk).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{exchange, get, sample};
use common::raw::{Conn, NOT_FOUND, OK};
use common::Kvsd;

const METRICS: [&str; 2] = ["--metrics-addr", "127.0.0.1:0"];

fn metrics_addr(server: &Kvsd) -> &str {
    server
        .metrics_addr
        .as_deref()
        .expect("the ready file names metrics_addr")
}

fn scrape(server: &Kvsd) -> String {
    let (status, page) = get(metrics_addr(server), "/metrics");
    assert_eq!(status, 200, "{page}");
    page
}

#[track_caller]
fn value(page: &str, series: &str) -> f64 {
    sample(page, series).unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

/// Runs `promtool check metrics` on `page`: None if promtool is not installed.
fn promtool(page: &str) -> Option<Result<(), String>> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => panic!("promtool: {error}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(match output.status.success() && said.trim().is_empty() {
        true => Ok(()),
        false => Err(format!(
            "promtool check metrics ({}): {said}",
            output.status
        )),
    })
}

#[test]
fn scrapes_follow_the_writes_and_reads_and_promtool_accepts_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &METRICS);
    let before = scrape(&server);
    assert_eq!(value(&before, "kvs_ready"), 1.0);
    assert_eq!(value(&before, "kvs_role{role=\"leader\"}"), 1.0);
    assert_eq!(value(&before, "kvs_keys"), 0.0);
    assert_eq!(
        sample(&before, "kvs_requests_total{op=\"set\",status=\"ok\"}"),
        None
    );

    let mut conn = Conn::connect(&server.addr);
    for i in 0..20u32 {
        conn.set(format!("k{i}").as_bytes(), b"some value");
    }
    for i in 0..5u32 {
        assert_eq!(conn.get(format!("k{i}").as_bytes()).status, OK);
    }
    assert_eq!(conn.get(b"absent").status, NOT_FOUND);
    assert_eq!(conn.del(b"k0").status, OK);
    let stats = conn.stats();

    let after = scrape(&server);
    let requests = |op: &str, status: &str| {
        value(
            &after,
            &format!("kvs_requests_total{{op=\"{op}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(requests("set", "ok"), 20.0);
    assert_eq!(requests("get", "ok"), 5.0);
    assert_eq!(requests("get", "not_found"), 1.0);
    assert_eq!(requests("del", "ok"), 1.0);
    assert_eq!(requests("stats", "ok"), 1.0);
    assert_eq!(
        value(&after, "kvs_request_duration_seconds_count{op=\"set\"}"),
        20.0
    );
    assert_eq!(
        value(
            &after,
            "kvs_request_duration_seconds_bucket{op=\"set\",le=\"+Inf\"}"
        ),
        20.0
    );
    assert!(value(&after, "kvs_request_duration_seconds_sum{op=\"set\"}") > 0.0);
    assert_eq!(value(&after, "kvs_keys"), 19.0);
    assert_eq!(value(&after, "kvs_durable_seq"), 21.0);
    // STATS and /metrics read the same cells.
    assert_eq!(
        stats["batches_total"],
        value(&after, "kvs_batch_records_count").to_string()
    );
    let flushes = value(&after, "kvs_fsync_duration_seconds_count");
    assert!(
        (1.0..=21.0).contains(&flushes),
        "{flushes} fdatasyncs for 21 writes"
    );
    assert_eq!(value(&after, "kvs_batch_records_sum"), 21.0);
    assert!(value(&after, "kvs_log_bytes") > 0.0);
    let live = value(&after, "kvs_live_bytes");
    assert!(
        live > 0.0 && live < value(&after, "kvs_log_bytes"),
        "{live}"
    );
    assert_eq!(value(&after, "kvs_connections"), 1.0);
    assert_eq!(value(&after, "kvs_writes_refused"), 0.0);
    assert_eq!(value(&after, "kvs_term"), 0.0);

    match promtool(&after) {
        Some(result) => result.unwrap(),
        None => eprintln!(
            "SKIPPED promtool check: promtool not installed (tools/install-peers installs it)"
        ),
    }
    drop(conn);
    server.stop();
}

#[test]
fn health_and_ready_on_a_follower_follow_its_link_to_the_leader() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    // Start the leader first to learn its port, stop it, and start the follower on it alone:
    // a follower whose leader is away knows no leader.
    let leader = common::start(leader_dir.path(), &METRICS);
    let leader_addr = leader.addr.clone();
    let port: u16 = leader_addr.rsplit_once(':').unwrap().1.parse().unwrap();
    leader.stop();
    let follower = common::start(
        follower_dir.path(),
        &[
            "--node-id",
            "f1",
            "--async-replication",
            "--leader-addr",
            &leader_addr,
            METRICS[0],
            METRICS[1],
        ],
    );
    let metrics = metrics_addr(&follower).to_string();
    let (status, body) = get(&metrics, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no leader known"), "{body}");
    assert_eq!(get(&metrics, "/ready"), (200, "ready\n".to_string()));
    let page = scrape(&follower);
    assert_eq!(value(&page, "kvs_leader_known"), 0.0);
    assert_eq!(value(&page, "kvs_role{role=\"follower\"}"), 1.0);

    // The leader comes back on its port; the follower's link finds it by itself.
    let leader = common::try_start_on(port, leader_dir.path(), &METRICS).unwrap();
    Conn::connect(&leader.addr).set(b"x", b"1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(&metrics, "/health");
        if status == 200 {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The leader reports the follower's lag by its node id once it has acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = scrape(&leader);
        if sample(&page, "kvs_replication_acked_seq{follower=\"f1\"}") == Some(1.0) {
            assert_eq!(
                value(&page, "kvs_replication_lag_records{follower=\"f1\"}"),
                0.0
            );
            assert!(sample(&page, "kvs_replication_lag_bytes{follower=\"f1\"}").is_some());
            if let Some(result) = promtool(&page) {
                result.unwrap();
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no acked_seq 1 for f1 in:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    follower.stop();
    leader.stop();
}

#[test]
fn the_metrics_port_answers_only_what_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &METRICS);
    let addr = metrics_addr(&server);
    assert_eq!(get(addr, "/ready").0, 200);
    assert_eq!(get(addr, "/nothing-here").0, 404);
    let (status, head, _) = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(exchange(addr, b"hello\r\n\r\n").0, 400);
    // A head that never ends is cut off at its cap, not buffered without bound.
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 64 * 1024));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let _ = stream.write_all(&huge);
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut reply);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply:?}");
    // HEAD: the head of a GET, no body.
    let (status, head, body) = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    // Clients are served as before.
    Conn::connect(&server.addr).ping(b"still here");
    server.stop();
}

/// The scrape config and alert rules that docs/operations.md shows are valid for Prometheus.
#[test]
fn the_documented_scrape_config_and_alerts_pass_promtool() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let blocks: Vec<&str> = docs
        .split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "a scrape config and the alert rules");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("kvs-alerts.yml");
    std::fs::write(&rules, blocks[1]).unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        blocks[0].replace("kvs-alerts.yml", rules.to_str().unwrap()),
    )
    .unwrap();
    for (what, file) in [("rules", &rules), ("config", &config)] {
        let output = match Command::new("promtool")
            .args(["check", what, file.to_str().unwrap()])
            .output()
        {
            Ok(output) => output,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("SKIPPED promtool check {what}: promtool not installed (tools/install-peers installs it)");
                return;
            }
            Err(error) => panic!("promtool: {error}"),
        };
        assert!(
            output.status.success(),
            "promtool check {what}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
