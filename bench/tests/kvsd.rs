//! kvs-bench against the real kvsd: the counts must add up (every request sent gets exactly one
//! reply matched by id, none lost, no error) and `--verify` must pass, on several threads,
//! pipelined, over a prefilled keyspace. The kvsd binary is found or built as
//! `kvs_testkit::workspace_kvsd` says.

mod common;

use common::{bench, bench_env, Kvsd};

#[test]
fn pipelined_mixed_load_verifies_and_counts_match() {
    let kvsd = Kvsd::start(&[]);
    let url = kvsd.url();
    let run = bench(&[
        "--target",
        &url,
        "--clients",
        "4",
        "--threads",
        "2",
        "--pipeline",
        "8",
        "--duration",
        "2",
        "--ratio",
        "1:1",
        "--keyspace",
        "1000",
        "--prefill",
        "--verify",
    ]);
    run.assert_clean();
    assert_eq!(run.u64("/prefill/ops"), 1000);
    assert_eq!(run.u64("/verify/failed"), 0);
    assert!(run.u64("/verify/passed") > 0, "{}", run.stdout);
    // After the prefill every key is this run's: nothing read is unknown, nothing missing.
    assert_eq!(run.u64("/verify/unknown"), 0);
    assert_eq!(run.u64("/per_op/get/misses"), 0);
    assert!(run.u64("/per_op/set/ops") > 0 && run.u64("/per_op/get/ops") > 0);
}

#[test]
fn a_request_count_is_met_exactly() {
    let kvsd = Kvsd::start(&[]);
    let url = kvsd.url();
    let run = bench(&[
        "--target",
        &url,
        "--clients",
        "3",
        "--pipeline",
        "4",
        "--requests",
        "3001",
        "--ratio",
        "1:3",
        "--keyspace",
        "300",
        "--verify",
    ]);
    run.assert_clean();
    assert_eq!(run.u64("/requests_sent"), 3001);
    assert_eq!(run.u64("/ops"), 3001);
    assert_eq!(
        run.u64("/per_op/set/ops") + run.u64("/per_op/get/ops"),
        3001
    );
    assert_eq!(run.u64("/verify/failed"), 0);
}

#[test]
fn an_open_loop_run_against_kvsd_is_clean() {
    let kvsd = Kvsd::start(&[]);
    let url = kvsd.url();
    let run = bench(&[
        "--target",
        &url,
        "--clients",
        "2",
        "--pipeline",
        "4",
        "--rate",
        "2000",
        "--requests",
        "1000",
        "--ratio",
        "1:1",
        "--keyspace",
        "100",
        "--verify",
    ]);
    run.assert_clean();
    assert_eq!(run.u64("/ops"), 1000);
}

#[test]
fn auth_file_and_kvs_auth_authenticate_every_connection() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "bench secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = secret.to_str().unwrap();
    let kvsd = Kvsd::start(&["--auth-file", secret]);
    let url = kvsd.url();
    let load = [
        "--target",
        &url,
        "--clients",
        "3",
        "--requests",
        "300",
        "--keyspace",
        "50",
    ];

    let mut with_file = load.to_vec();
    with_file.extend(["--auth-file", secret]);
    bench(&with_file).assert_clean();

    let run = bench_env(&load, Some("bench secret"));
    run.assert_clean();

    // Without the secret every connection is refused, and kvs-bench says why.
    for (secret, says) in [
        (None, "authentication required"),
        (Some("wrong"), "authentication failed"),
    ] {
        let run = bench_env(&load, secret);
        let output = format!("{}{}", run.stdout, run.stderr);
        assert_ne!(run.code, Some(0), "{output}");
        assert!(output.contains(says), "{output}");
    }
}
