//! Raft clusters of real kvsd processes for the scenario tests and drills (issue 11): start,
//! kill -9 and restart members with their own command lines and ports, find the leader, and put
//! fault proxies on every Raft link.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::proxy::{Mode, Proxy};
use super::{try_start_on, Kvsd};
use kvs::client::{Client, ClientError, ClientOptions};

/// How long a new leader may take in these tests (the target is about a second; a debug build
/// on 2 busy cores gets slack).
pub const LEADER_WAIT: Duration = Duration::from_secs(15);

pub fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Some(Duration::from_secs(8)),
        write_timeout: Some(Duration::from_secs(2)),
        ..ClientOptions::default()
    }
}

pub fn stats(addr: &str) -> Option<HashMap<String, String>> {
    let mut client = Client::connect_with(addr, options()).ok()?;
    let text = client.stats().ok()?;
    Some(
        kvs::client::stats_lines(&text)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A port free now, below Linux's ephemeral range (32768 and up): a port the kernel hands out
/// for `bind(0)` could be handed out again, between this call and kvsd's bind, to a fault
/// proxy's listener or a client's outgoing connection (a 100-run drill lost its last runs so:
/// "Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    loop {
        let mut x = seed.wrapping_add(
            NEXT.fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        let port = 20_000 + (x % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A cluster of kvsd nodes, each restartable with its own command line and port.
pub struct Cluster {
    _dir: tempfile::TempDir,
    pub dirs: Vec<PathBuf>,
    pub ports: Vec<u16>,
    pub args: Vec<Vec<String>>,
    pub nodes: Vec<Option<Kvsd>>,
    /// With `keep_logs`: every node's stderr lines (and the test's notes) as they arrived.
    kept: Option<Arc<Mutex<KeptLog>>>,
}

/// What `Cluster::keep_logs` keeps: the lines of the last `KEPT_FOR`, each with when it
/// arrived and whose it is (`n1`.., or `test` for a note).
#[derive(Default)]
struct KeptLog {
    lines: VecDeque<(Instant, String, String)>,
}

/// How long kept log lines are kept.
const KEPT_FOR: Duration = Duration::from_secs(30);

impl KeptLog {
    fn push(&mut self, at: Instant, who: &str, line: String) {
        self.lines.push_back((at, who.to_string(), line));
        while self
            .lines
            .front()
            .is_some_and(|(first, _, _)| at.saturating_duration_since(*first) > KEPT_FOR)
        {
            self.lines.pop_front();
        }
    }
}

impl Cluster {
    /// Three nodes on the given ports: n1 bootstraps, n2 and n3 join it; `extra(i)` adds flags.
    pub fn start(ports: [u16; 3], extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let first = format!("127.0.0.1:{}", ports[0]);
        Cluster::start_with(ports, |i| {
            let mut args = vec!["--node-id".to_string(), format!("n{}", i + 1)];
            if i == 0 {
                args.push("--bootstrap".into());
            } else {
                args.extend(["--join".to_string(), first.clone()]);
            }
            args.extend(extra(i));
            args
        })
    }

    /// Three nodes on the given ports, node i started with `args(i)` (in order), then waits
    /// until three voters are in the cluster.
    pub fn start_with(ports: [u16; 3], args: impl Fn(usize) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            dirs: (0..3)
                .map(|i| dir.path().join(format!("n{}", i + 1)))
                .collect(),
            _dir: dir,
            ports: ports.to_vec(),
            args: Vec::new(),
            nodes: Vec::new(),
            kept: None,
        };
        for i in 0..3 {
            cluster.args.push(args(i));
            cluster.nodes.push(None);
            cluster.restart(i);
        }
        cluster.wait_voters(3);
        cluster
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    pub fn restart(&mut self, i: usize) {
        let args: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        let mut node = try_start_on(self.ports[i], &self.dirs[i], &args)
            .unwrap_or_else(|log| panic!("n{} did not start:\n{log}", i + 1));
        if self.kept.is_some() {
            self.keep_log_of(i, &mut node);
        }
        self.nodes[i] = Some(node);
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill9();
        }
        self.note(&format!("kill -9 n{}", i + 1));
    }

    /// From now on, keeps every node's stderr lines (those of nodes restarted later too) for
    /// `log_excerpt`; the nodes' `log` receivers get nothing more.
    pub fn keep_logs(&mut self) {
        self.kept = Some(Arc::default());
        for i in 0..self.nodes.len() {
            if let Some(mut node) = self.nodes[i].take() {
                self.keep_log_of(i, &mut node);
                self.nodes[i] = Some(node);
            }
        }
    }

    fn keep_log_of(&self, i: usize, node: &mut Kvsd) {
        let kept = self.kept.clone().expect("keep_logs was called");
        let who = format!("n{}", i + 1);
        {
            let mut kept = kept.lock().unwrap();
            let now = Instant::now();
            for line in node.startup_log.iter().chain([&node.ready_line]) {
                kept.push(now, &who, line.clone());
            }
        }
        let (_, nothing) = mpsc::channel();
        let lines = std::mem::replace(&mut node.log, nothing);
        // Ends when the process does (its stderr closes).
        std::thread::spawn(move || {
            for line in lines {
                kept.lock().unwrap().push(Instant::now(), &who, line);
            }
        });
    }

    /// With `keep_logs`: a line of the test's own among the nodes' lines.
    pub fn note(&self, text: &str) {
        if let Some(kept) = &self.kept {
            kept.lock()
                .unwrap()
                .push(Instant::now(), "test", text.to_string());
        }
    }

    /// With `keep_logs`: node i's lines kept since `since`, in order.
    pub fn log_since(&self, i: usize, since: Instant) -> Vec<String> {
        let who = format!("n{}", i + 1);
        let kept = self.kept.as_ref().expect("keep_logs was called");
        let kept = kept.lock().unwrap();
        kept.lines
            .iter()
            .filter(|(at, whose, _)| *at >= since && *whose == who)
            .map(|(_, _, line)| line.clone())
            .collect()
    }

    /// With `keep_logs`: the lines kept from `from` to `to`, in the order they arrived, each
    /// as `+MS WHO LINE` with MS counted from `origin` (negative before it).
    pub fn log_excerpt(&self, origin: Instant, from: Instant, to: Instant) -> String {
        let Some(kept) = &self.kept else {
            return "(no log kept: Cluster::keep_logs was not called)".into();
        };
        let kept = kept.lock().unwrap();
        let mut text = String::new();
        for (at, who, line) in &kept.lines {
            if *at < from || *at > to {
                continue;
            }
            let ms = if *at >= origin {
                at.duration_since(origin).as_millis() as i64
            } else {
                -(origin.duration_since(*at).as_millis() as i64)
            };
            text.push_str(&format!("{ms:+6} {who:>4} {line}\n"));
        }
        text
    }

    /// The node every live node's STATS names as leader, once they agree.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| self.nodes[i].is_some())
            .filter(|&i| stats(&self.addr(i)).is_some_and(|s| s["role"] == "leader"))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    pub fn wait_voters(&self, voters: usize) {
        wait_for("the cluster's voters", LEADER_WAIT * 2, || {
            let leader = self.leader()?;
            (voting(&self.addr(leader))? >= voters).then_some(())
        });
    }
}

/// The voters (leader and followers) in the membership as the member at `addr` sees it.
pub fn voting(addr: &str) -> Option<usize> {
    let text = cluster_text(addr)?;
    // Member rows only (the node's own view has a `role:` line too).
    Some(
        text.lines()
            .filter(|line| line.starts_with("member:"))
            .filter(|line| line.contains(" role:follower") || line.contains(" role:leader"))
            .count(),
    )
}

pub fn cluster_text(addr: &str) -> Option<String> {
    let (status, body) =
        kvs::client::cluster::admin(addr, kvs::raft::op::CLUSTER, &[], options(), None).ok()?;
    (status == kvs::protocol::Status::Ok).then(|| String::from_utf8_lossy(&body).into_owned())
}

pub fn get(addr: &str, key: &str) -> Result<Option<String>, ClientError> {
    let mut client = Client::connect_with(addr, options())?;
    Ok(client
        .get(key.as_bytes())?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

pub fn get_min_seq(addr: &str, key: &str, seq: u64) -> Result<Option<String>, ClientError> {
    let mut client = Client::connect_with(addr, options())?;
    Ok(client
        .get_min_seq(key.as_bytes(), seq)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Fault proxies on every Raft link: `link(i, j)` carries what node i sends to node j.
pub struct Mesh {
    proxies: Vec<Vec<Option<Proxy>>>,
}

impl Mesh {
    pub fn new(ports: [u16; 3]) -> Mesh {
        let proxies = (0..3)
            .map(|i| {
                (0..3)
                    .map(|j| (i != j).then(|| Proxy::start(&format!("127.0.0.1:{}", ports[j]))))
                    .collect()
            })
            .collect();
        Mesh { proxies }
    }

    /// Node i's `--raft-dial` flags.
    pub fn dial_args(&self, i: usize, ports: [u16; 3]) -> Vec<String> {
        let mut args = Vec::new();
        for (j, proxy) in self.proxies[i].iter().enumerate() {
            if let Some(proxy) = proxy {
                args.extend([
                    "--raft-dial".to_string(),
                    format!("127.0.0.1:{}={}", ports[j], proxy.addr),
                ]);
            }
        }
        args
    }

    /// Cuts (Down) or heals (Pass) every link to and from node `i`.
    pub fn isolate(&self, i: usize, mode: Mode) {
        for a in 0..3 {
            for b in 0..3 {
                if a != b && (a == i || b == i) {
                    self.proxies[a][b].as_ref().expect("a link").set_mode(mode);
                }
            }
        }
    }

    /// Cuts (Down) or heals (Pass) the one link that carries what node `from` sends to node
    /// `to` (and its answers).
    pub fn set_link(&self, from: usize, to: usize, mode: Mode) {
        self.proxies[from][to]
            .as_ref()
            .expect("a link")
            .set_mode(mode);
    }

    pub fn heal(&self) {
        for row in &self.proxies {
            for proxy in row.iter().flatten() {
                proxy.set_mode(Mode::Pass);
            }
        }
    }
}
