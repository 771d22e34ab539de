//! `--metrics-addr` on a Raft node (issue 11): `/metrics` shows each member's Raft role and
//! term, and follows a failover; `/health` and `/ready` answer.
//!
//! What it proves is listed in docs/replication.md ("What the tests prove").

mod common;

use common::http::{get, sample};
use common::raft::{free_port, options, stats, wait_for, Cluster, LEADER_WAIT};
use kvs::client::Client;

fn scrape(cluster: &Cluster, i: usize) -> Option<String> {
    let node = cluster.nodes[i].as_ref()?;
    let addr = node
        .metrics_addr
        .as_deref()
        .expect("the ready file names metrics_addr");
    let (status, page) = get(addr, "/metrics");
    (status == 200).then_some(page)
}

#[track_caller]
fn value(page: &str, series: &str) -> f64 {
    sample(page, series).unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

#[test]
fn metrics_show_each_members_role_and_term_across_a_failover() {
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start(ports, |_| {
        vec!["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]
    });
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let seq = Client::connect_with(&cluster.addr(leader), options())
        .unwrap()
        .set(b"k", b"v")
        .unwrap();
    let term: f64 = stats(&cluster.addr(leader)).unwrap()["term"]
        .parse()
        .unwrap();
    for i in 0..3 {
        let page = scrape(&cluster, i).unwrap();
        let role = if i == leader { "leader" } else { "follower" };
        assert_eq!(
            value(&page, &format!("kvs_role{{role=\"{role}\"}}")),
            1.0,
            "n{}:\n{page}",
            i + 1
        );
        assert_eq!(value(&page, "kvs_term"), term, "n{}", i + 1);
        // A follower may get the entry after the leader has committed it with the other one.
        wait_for("the write on every member's /metrics", LEADER_WAIT, || {
            let page = scrape(&cluster, i)?;
            (value(&page, "kvs_last_seq") >= seq as f64).then_some(())
        });
        let metrics_addr = cluster.nodes[i]
            .as_ref()
            .unwrap()
            .metrics_addr
            .clone()
            .unwrap();
        assert_eq!(get(&metrics_addr, "/health").0, 200);
        assert_eq!(get(&metrics_addr, "/ready").0, 200);
    }

    cluster.kill(leader);
    let (new, page) = wait_for("a new leader on /metrics", LEADER_WAIT, || {
        (0..3).filter(|&i| i != leader).find_map(|i| {
            let page = scrape(&cluster, i)?;
            (sample(&page, "kvs_role{role=\"leader\"}") == Some(1.0)
                && sample(&page, "kvs_term").is_some_and(|t| t > term))
            .then_some((i, page))
        })
    });
    assert!(value(&page, "kvs_term") > term, "n{}", new + 1);
    assert_eq!(value(&page, "kvs_leader_known"), 1.0);
}
