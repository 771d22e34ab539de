//! `kvsctl cluster` against a real Raft cluster (issue 11): a learner joins with `--join
//! --learner` and serves `min_seq` reads; `kvsctl cluster` shows members, roles, term, commit
//! seq and lag; `cluster promote` makes the learner a voter, `cluster transfer` hands
//! leadership to a named voter, `cluster remove` takes a member out; each sent to any member
//! (kvsctl follows NOT_LEADER to the leader).

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::raft::{free_port, get_min_seq, options, stats, wait_for, Cluster, LEADER_WAIT};
use kvs::client::Client;

fn kvsctl(addr: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::KVSCTL)
        .arg("--addr")
        .arg(addr)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kvsctl cluster` on `addr`: the node's view (name → value) and the member rows (name →
/// cells after the name: id, addr, role, matched seq, lag).
/// The header's (name, value) pairs, and each member's (id, columns).
type ClusterTable = (Vec<(String, String)>, Vec<(String, Vec<String>)>);

fn cluster_table(addr: &str) -> Option<ClusterTable> {
    let (ok, out, _) = kvsctl(addr, &["cluster"]);
    if !ok {
        return None;
    }
    let mut view = Vec::new();
    let mut members = Vec::new();
    let mut in_table = false;
    for line in out.lines() {
        if line.starts_with("MEMBER") {
            in_table = true;
        } else if in_table && !line.is_empty() {
            let mut cells = line.split_whitespace().map(str::to_string);
            let name = cells.next().unwrap();
            members.push((name, cells.collect()));
        } else if let Some((name, value)) = line.split_once(char::is_whitespace) {
            view.push((name.to_string(), value.trim().to_string()));
        }
    }
    Some((view, members))
}

fn member_role(addr: &str, name: &str) -> Option<String> {
    let (_, members) = cluster_table(addr)?;
    members
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, cells)| cells[2].clone())
}

#[test]
fn kvsctl_cluster_shows_and_changes_the_membership() {
    let cluster = Cluster::start([free_port(), free_port(), free_port()], |_| Vec::new());
    let leader = wait_for("a leader", LEADER_WAIT, || cluster.leader());
    let dir = tempfile::tempdir().unwrap();
    let learner = common::start(
        dir.path(),
        &[
            "--node-id",
            "n4",
            "--join",
            &cluster.addr(leader),
            "--learner",
        ],
    );
    let follower = (0..3).find(|&i| i != leader).unwrap();

    // The learner is listed as such, from any member (a follower's view lists it too).
    let role = wait_for("n4 listed as a learner", LEADER_WAIT, || {
        member_role(&cluster.addr(follower), "n4").filter(|r| r == "learner")
    });
    assert_eq!(role, "learner");
    assert_eq!(stats(&learner.addr).unwrap()["role"], "learner");

    // It serves read-your-writes reads; the leader's view shows term, commit seq and lags.
    let seq = Client::connect_with(&cluster.addr(leader), options())
        .unwrap()
        .set(b"k", b"v")
        .unwrap();
    let got = wait_for("the learner applies k", LEADER_WAIT, || {
        get_min_seq(&learner.addr, "k", seq).ok()
    });
    assert_eq!(got.as_deref(), Some("v"));
    let (view, members) = cluster_table(&cluster.addr(leader)).unwrap();
    let field = |name: &str| {
        view.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {view:?}"))
    };
    assert_eq!(field("role"), "leader");
    assert!(field("term").parse::<u64>().unwrap() >= 1);
    let commit_seq: u64 = field("commit_seq").parse().unwrap();
    assert!(
        commit_seq >= seq,
        "commit_seq {commit_seq} < {seq}: {view:?}"
    );
    assert_eq!(members.len(), 4, "{members:?}");
    for (name, cells) in &members {
        assert_eq!(cells.len(), 5, "{name}: {cells:?}");
        if cells[2] != "leader" {
            // matched seq and lag, known on the leader
            cells[3].parse::<u64>().unwrap();
            cells[4].parse::<u64>().unwrap();
        }
    }

    // promote, sent to a follower: kvsctl follows NOT_LEADER to the leader.
    let (ok, out, err) = kvsctl(&cluster.addr(follower), &["cluster", "promote", "n4"]);
    assert!(ok, "promote: {out} {err}");
    wait_for("n4 a voter", LEADER_WAIT, || {
        member_role(&cluster.addr(leader), "n4").filter(|r| r == "follower")
    });

    // transfer leadership to a named voter.
    let target = format!("n{}", follower + 1);
    // It answers OK only once the target leads, else an error saying to try again (an
    // election among busy nodes can go elsewhere): up to three tries, as a user would.
    let mut tries = Vec::new();
    for _ in 0..3 {
        let (ok, out, err) = kvsctl(&cluster.addr(follower), &["cluster", "transfer", &target]);
        tries.push(format!("{out} {err}"));
        if ok {
            break;
        }
    }
    assert!(
        tries.len() < 3 || tries[2].contains("OK"),
        "transfer: {tries:?}"
    );
    wait_for("the named voter leads", LEADER_WAIT, || {
        stats(&cluster.addr(follower)).filter(|s| s["role"] == "leader")
    });

    // remove n4; the cluster keeps serving writes with three voters.
    let (ok, out, err) = kvsctl(&cluster.addr(leader), &["cluster", "remove", "n4"]);
    assert!(ok, "remove: {out} {err}");
    wait_for("n4 gone from the membership", LEADER_WAIT, || {
        let (_, members) = cluster_table(&cluster.addr(follower))?;
        (!members.iter().any(|(n, _)| n == "n4")).then_some(())
    });
    let (ok, out, err) = kvsctl(&cluster.addr(leader), &["set", "after", "1"]);
    assert!(ok, "set after the changes: {out} {err}");

    // An unknown member is refused with a message, not a hang.
    let (ok, _, err) = kvsctl(&cluster.addr(follower), &["cluster", "remove", "nobody"]);
    assert!(!ok);
    assert!(!err.is_empty());
}

/// Members join at once while clients write to the leader (the README's seed commands,
/// started together under load): each join is a membership change, whose entries take seqs
/// the leader's open batch would otherwise be promised, so writes are held while one is under
/// way. Writes must go on once all joined: none may hang or be refused for good. Two voters
/// and two learners join together, in three formations, since the joins' overlap varies.
#[test]
fn writes_go_on_after_members_join_at_once_under_load() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let ports = [
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        ];
        let first = format!("127.0.0.1:{}", ports[0]);
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let n1 = common::try_start_on(
            ports[0],
            &dir.path().join("n1"),
            &["--node-id", "n1", "--bootstrap"],
        )
        .unwrap_or_else(|log| panic!("n1 did not start:\n{log}"));
        wait_for("n1 to lead", LEADER_WAIT, || {
            stats(&addrs[0]).filter(|s| s["role"] == "leader")
        });

        // Writers on the leader, through the joins; each counts what was acknowledged.
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, stop) = (addrs[0].clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut acked = 0u64;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut client) = Client::connect_with(&addr, options()) else {
                            continue;
                        };
                        while !stop.load(Ordering::Relaxed) {
                            i += 1;
                            match client.set(format!("w{w}-{i}").as_bytes(), b"v") {
                                Ok(_) => acked += 1,
                                Err(_) => break,
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        // Started on threads, so that the joins overlap.
        let joiners: Vec<_> = (1..5)
            .map(|i| {
                let (port, data_dir, first) = (
                    ports[i],
                    dir.path().join(format!("n{}", i + 1)),
                    first.clone(),
                );
                std::thread::spawn(move || {
                    let mut args = vec![
                        "--node-id".to_string(),
                        format!("n{}", i + 1),
                        "--join".to_string(),
                        first,
                    ];
                    if i >= 3 {
                        args.push("--learner".into());
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    common::try_start_on(port, &data_dir, &args)
                        .unwrap_or_else(|log| panic!("n{} did not start:\n{log}", i + 1))
                })
            })
            .collect();
        let joiners: Vec<_> = joiners.into_iter().map(|j| j.join().unwrap()).collect();
        wait_for("three voters and two learners", LEADER_WAIT * 2, || {
            let (_, members) = cluster_table(&addrs[0])?;
            let count = |role: &str| {
                members
                    .iter()
                    .filter(|(_, cells)| cells.iter().any(|c| c == role))
                    .count()
            };
            (count("leader") + count("follower") == 3 && count("learner") == 2).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        let during: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();

        // After the joins: writes on the leader (whichever member leads) are acknowledged
        // again within the wait for a leader, and land on every member.
        let mut last = 0;
        for i in 0..50 {
            let key = format!("after-{i}");
            last = wait_for("a write after the joins", LEADER_WAIT, || {
                let leader = addrs
                    .iter()
                    .find(|addr| stats(addr).is_some_and(|s| s["role"] == "leader"))?;
                let mut client = Client::connect_with(leader, options()).ok()?;
                client.set(key.as_bytes(), b"v").ok()
            });
        }
        for addr in &addrs {
            assert_eq!(
                get_min_seq(addr, "after-49", last).unwrap().as_deref(),
                Some("v"),
                "round {round}: {addr} has the last write"
            );
        }
        eprintln!("round {round}: {during} writes acknowledged during the joins");
        drop(joiners);
        drop(n1);
    }
}
