//! `--server-pid` and `--server-stats` against the real kvsd: the server's CPU time is read
//! from its /proc entry and divided by the replies of the measured window, and the fsync
//! batch counters come from its STATS; wrong uses are refused before any load is sent.

mod common;

use common::{bench, bench_env, Kvsd};

#[test]
fn cpu_per_request_and_batch_fill_of_a_set_run() {
    let kvsd = Kvsd::start(&["--fsync", "always"]);
    let url = kvsd.url();
    let pid = kvsd.server.pid.to_string();
    let run = bench(&[
        "--target",
        &url,
        "--clients",
        "4",
        "--requests",
        "2000",
        "--ratio",
        "1:0",
        "--keyspace",
        "500",
        "--server-pid",
        &pid,
        "--server-stats",
    ]);
    run.assert_clean();
    let context = format!("{}\n{}", run.stdout, run.json);
    assert_eq!(run.u64("/server/cpu/pid").to_string(), pid, "{context}");
    assert_eq!(run.u64("/server/cpu/requests"), 2000, "{context}");
    let cpu_s = run.f64("/server/cpu/cpu_s");
    let per_request = run.f64("/server_cpu_us_per_request");
    assert!(
        (per_request - cpu_s * 1e6 / 2000.0).abs() < 1e-6,
        "{context}"
    );
    assert!(run.f64("/server/window_s") > 0.0, "{context}");

    // Every SET is one log record in some fsync batch. The window opens as the load starts,
    // so the first batches may fall before the opening STATS, never more than were sent.
    let records = run.u64("/server/batches/records");
    let batches = run.u64("/server/batches/batches");
    assert!(records > 0 && records <= 2000, "{context}");
    assert!(batches > 0 && batches <= records, "{context}");
    assert_eq!(run.u64("/server/batches/writers"), 4, "{context}");
    let per_batch = run.f64("/server/batches/records_per_batch");
    assert!((per_batch - records as f64 / batches as f64).abs() < 1e-9);
    assert!((run.f64("/batch_fill_pct") - per_batch / 4.0 * 100.0).abs() < 1e-9);
    assert!(run.stdout.contains("µs CPU per request"), "{context}");
    assert!(
        run.stdout.contains("of the 4 connected writers"),
        "{context}"
    );
}

#[test]
fn a_get_run_has_no_batches() {
    let kvsd = Kvsd::start(&[]);
    let url = kvsd.url();
    let run = bench(&[
        "--target",
        &url,
        "--clients",
        "2",
        "--requests",
        "500",
        "--ratio",
        "0:1",
        "--keyspace",
        "100",
        "--server-stats",
    ]);
    run.assert_clean();
    assert_eq!(run.u64("/server/batches/batches"), 0, "{}", run.json);
    assert_eq!(run.u64("/server/batches/writers"), 0);
    assert!(run.json.pointer("/server/cpu").is_none(), "{}", run.json);
    assert!(run.json["server_cpu_us_per_request"].is_null());
    assert!(run.stdout.contains("fsync batches: none"), "{}", run.stdout);
}

#[test]
fn wrong_uses_are_refused_before_the_load() {
    let kvsd = Kvsd::start(&[]);
    let url = kvsd.url();
    let load = ["--clients", "1", "--requests", "10", "--keyspace", "10"];

    // STATS is kvsd's: a Redis target cannot have it (no Redis needs to listen for this).
    let mut redis = vec!["--target", "redis://127.0.0.1:1", "--server-stats"];
    redis.extend(load);
    let run = bench_env(&redis, None);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("kvs:// targets only"), "{}", run.stderr);

    // A process that does not exist.
    let mut gone = vec!["--target", &url, "--server-pid", "4294967295"];
    gone.extend(load);
    let run = bench_env(&gone, None);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("/proc/4294967295/stat"),
        "{}",
        run.stderr
    );
}
