//! Elections after a leader's kill -9, with real kvsd processes (issue 11): the member that holds
//! the newest log must stand without delays left over from an earlier election, and must not be
//! held a whole election timeout by a member behind it that stood first in the same term.
//!
//! Both caused the drill's slow failovers (`bench/results/2026-12-03-raft-drill-failover.md`):
//! openraft 0.9 kept a member's "seen a greater log" flag (an extra `2 × election_timeout_max`
//! before it stands) from an election it lost until it stood again, and a member whose log was
//! behind stood first, took the term, and made the member that alone could win wait a timeout
//! before the next term. The checks read what the members log; none measures time.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Mode;
use common::raft::{free_port, options, stats, wait_for, Cluster, Mesh, LEADER_WAIT};
use kvs::client::Client;
use kvs::protocol::Status;

fn last_seq(cluster: &Cluster, i: usize) -> u64 {
    let stats = stats(&cluster.addr(i)).expect("STATS");
    stats["last_seq"].parse().expect("last_seq is a number")
}

fn set(cluster: &Cluster, i: usize, key: &str, value: &str) {
    let mut client = Client::connect_with(&cluster.addr(i), options()).expect("connect");
    client
        .set(key.as_bytes(), value.as_bytes())
        .unwrap_or_else(|e| panic!("SET {key} on n{}: {e}", i + 1));
}

/// ELECT (op 0x25): the member stands for election now, whatever its timers say.
fn elect(cluster: &Cluster, i: usize) {
    let (status, body) =
        kvs::client::cluster::admin(&cluster.addr(i), kvs::raft::op::ELECT, &[], options(), None)
            .expect("ELECT");
    assert_eq!(
        status,
        Status::Ok,
        "ELECT: {}",
        String::from_utf8_lossy(&body)
    );
}

/// A leader every live member agrees on, that is not `not`.
fn leader_other_than(cluster: &Cluster, not: Option<usize>) -> usize {
    wait_for("a leader", LEADER_WAIT, || {
        cluster.leader().filter(|&l| Some(l) != not)
    })
}

/// Waits until node i's log (kept since `since`) has a line containing `needle`: the lines
/// before it have come too.
fn wait_log(cluster: &Cluster, i: usize, since: Instant, needle: &str) {
    wait_for(&format!("n{} to log {needle}", i + 1), LEADER_WAIT, || {
        cluster
            .log_since(i, since)
            .iter()
            .any(|line| line.contains(needle))
            .then_some(())
    });
}

/// What a member's vote for `i` as leader looks like in openraft's lines.
fn leader_vote_of(i: usize) -> String {
    format!(
        "-N{}:committed",
        kvs::raft::node_id_of(&format!("n{}", i + 1))
    )
}

fn dump(cluster: &Cluster, since: Instant) {
    eprintln!(
        "{}",
        cluster.log_excerpt(since, since, Instant::now() + Duration::from_secs(1))
    );
}

/// 1. Member x loses an election by its log (it stands while cut off from the leader's
///    appends, after a write it does not have): openraft notes that it saw a greater log.
/// 2. The links heal, a leader L is elected and x catches up from it.
/// 3. L's link to the third member s is cut, a write commits on L and x only, L is killed
///    with kill -9, and s (now behind x) is made to stand at once, so it takes the next term
///    before x's timer fires.
///
/// Then x alone can win. It must stand without the greater-log delay of step 1 (it has heard
/// a leader since), and win at its first timer-driven election: when s rejects it because s
/// voted for itself in that term, x stands again at once in the next one.
#[test]
fn the_member_with_the_newest_log_wins_without_delays_from_an_election_it_lost() {
    let ports = [free_port(), free_port(), free_port()];
    let mesh = Mesh::new(ports);
    let mut cluster = Cluster::start(ports, |i| mesh.dial_args(i, ports));
    cluster.keep_logs();
    let began = Instant::now();

    // 1. x loses an election by its log.
    let first = leader_other_than(&cluster, None);
    let x = (first + 1) % 3;
    let third = (first + 2) % 3;
    mesh.set_link(first, x, Mode::Down);
    mesh.set_link(third, x, Mode::Down);
    set(&cluster, first, "before", "x-does-not-have-this");
    let lost_at = Instant::now();
    elect(&cluster, x);
    wait_for("x to see a greater log", LEADER_WAIT, || {
        cluster
            .log_since(x, lost_at)
            .iter()
            .any(|line| line.contains("seen a greater log id"))
            .then_some(())
    });
    mesh.heal();

    // 2. A leader other than x (its log is behind), and x caught up with it.
    let leader = wait_for("a leader that x has caught up with", LEADER_WAIT, || {
        let leader = cluster.leader().filter(|&l| l != x)?;
        let role = stats(&cluster.addr(x))?["role"].clone();
        (role == "follower" && last_seq(&cluster, x) == last_seq(&cluster, leader))
            .then_some(leader)
    });

    // 3. x ahead of s, the leader killed, s standing first. (The write is tried on whoever
    //    leads, in case leadership moved since.)
    let mut leader = leader;
    let mut s = (0..3)
        .find(|&i| i != x && i != leader)
        .expect("a third member");
    for attempt in 0.. {
        mesh.set_link(leader, s, Mode::Down);
        let written = Client::connect_with(&cluster.addr(leader), options())
            .and_then(|mut client| client.set(b"after", b"s-does-not-have-this"));
        if written.is_ok() {
            break;
        }
        assert!(
            attempt < 5,
            "no write went through n{}: {written:?}",
            leader + 1
        );
        mesh.heal();
        leader = leader_other_than(&cluster, Some(x));
        s = (0..3)
            .find(|&i| i != x && i != leader)
            .expect("a third member");
    }
    let (x_seq, s_seq) = (last_seq(&cluster, x), last_seq(&cluster, s));
    // The leader's vote as x holds it: x's election checks after the kill start from it.
    let term: u64 = stats(&cluster.addr(x)).expect("STATS")["term"]
        .parse()
        .expect("term is a number");
    let leader_vote = format!(
        "vote=T{term}-N{}:committed",
        kvs::raft::node_id_of(&format!("n{}", leader + 1))
    );
    let killed_at = Instant::now();
    cluster.kill(leader);
    elect(&cluster, s);
    mesh.heal();
    assert!(
        s_seq < x_seq,
        "the setup needs s behind x (s at {s_seq}, x at {x_seq})"
    );

    let new = leader_other_than(&cluster, Some(leader));
    wait_log(&cluster, new, killed_at, &leader_vote_of(new));
    wait_log(&cluster, s, killed_at, &leader_vote_of(new));
    // Lines are stamped as the test reads them, late under load, so the checks go by what the
    // lines say (the vote they were logged under), not by when they came.
    let x_log = cluster.log_since(x, began);
    let s_log = cluster.log_since(s, killed_at);
    let failed = |why: &str| {
        dump(&cluster, began);
        panic!("{why}");
    };
    if new != x {
        failed(&format!(
            "n{} leads, but only x (n{}) holds the newest log",
            new + 1,
            x + 1
        ));
    }
    // x's first election check after the kill, under the dead leader's vote.
    let checks: Vec<&String> = x_log
        .iter()
        .filter(|line| line.contains("kvs: election timeout passed") && line.contains(&leader_vote))
        .collect();
    if checks.is_empty() {
        failed(&format!(
            "x won without an election check under the dead leader's vote ({leader_vote})"
        ));
    }
    if let Some(delayed) = checks
        .iter()
        .find(|line| !line.contains("greater_log=false"))
    {
        failed(&format!(
            "x still carried the greater-log delay of the election it lost before a leader was \
             heard: {delayed}"
        ));
    }
    // When s, behind, took the term x stood in first (it refused x for its own vote), x must
    // have stood again at once rather than after another timeout.
    let s_took_the_term = s_log
        .iter()
        .any(|line| line.contains("handle vote request result") && line.contains("ByVote"));
    let stood_again = x_log
        .iter()
        .any(|line| line.contains("standing again at once") && line.contains("split=false"));
    if s_took_the_term && !stood_again {
        failed(
            "s, behind x, refused x for its own vote in x's term, and x did not stand again at \
             once",
        );
    }
}

/// The two members left after the leader's kill -9, with equal logs, stand in the same term
/// (ELECT to both at once, once the old leader's lease has run out): each refuses the other,
/// having voted for itself. The member with the greater id must stand again at once and win,
/// rather than both waiting for their timers (which, drawn once per process in openraft 0.9,
/// had two members split again round after round in the drill).
#[test]
fn a_split_vote_between_equal_logs_is_won_at_once_by_the_greater_id() {
    let ports = [free_port(), free_port(), free_port()];
    let mut cluster = Cluster::start(ports, |_| Vec::new());
    cluster.keep_logs();
    let began = Instant::now();
    for attempt in 0..5 {
        let leader = leader_other_than(&cluster, None);
        let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
        wait_for("equal logs", LEADER_WAIT, || {
            let seq = last_seq(&cluster, leader);
            (last_seq(&cluster, a) == seq && last_seq(&cluster, b) == seq).then_some(())
        });
        let killed_at = Instant::now();
        cluster.kill(leader);
        // Past the old leader's lease (the longest election timeout, 400 ms), before either
        // member's own timer (the lease and at least 200 ms more).
        std::thread::sleep(Duration::from_millis(450));
        elect(&cluster, a);
        elect(&cluster, b);
        let new = leader_other_than(&cluster, Some(leader));
        wait_log(&cluster, a, killed_at, &leader_vote_of(new));
        wait_log(&cluster, b, killed_at, &leader_vote_of(new));
        let (a_log, b_log) = (
            cluster.log_since(a, killed_at),
            cluster.log_since(b, killed_at),
        );
        cluster.restart(leader);
        let refused = |log: &[String]| log.iter().any(|line| line.contains("result=Err(ByVote"));
        if !(refused(&a_log) && refused(&b_log)) {
            eprintln!("attempt {attempt}: no split vote (one request came first); again");
            continue;
        }
        let id = |i: usize| kvs::raft::node_id_of(&format!("n{}", i + 1));
        let greater = if id(a) > id(b) { a } else { b };
        let greater_log = if greater == a { &a_log } else { &b_log };
        if new != greater
            || !greater_log
                .iter()
                .any(|line| line.contains("standing again at once") && line.contains("split=true"))
        {
            dump(&cluster, began);
            panic!(
                "after a split vote, n{} leads; n{} (the greater id) should have stood again at \
                 once and won",
                new + 1,
                greater + 1
            );
        }
        return;
    }
    dump(&cluster, began);
    panic!("no split vote in 5 attempts: ELECT to both members did not make them stand together");
}
