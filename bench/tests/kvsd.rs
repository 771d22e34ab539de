//! kvs-bench against the real kvsd: the counts must add up (every request sent gets exactly one
//! reply matched by id, none lost, no error) and `--verify` must pass, on several threads,
//! pipelined, over a prefilled keyspace. The kvsd binary is found or built as
//! `common::kvsd_binary` says.

mod common;

use common::{bench, Kvsd};

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
