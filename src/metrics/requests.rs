//! Requests answered, by op and reply status, and their latency by op: what the connections
//! record on the loop as each reply is encoded. A table indexed by the op and status bytes, so
//! recording is two array indexes, two additions and a histogram observation.

use std::cell::Cell;
use std::time::Duration;

use super::histogram::{Histogram, HistogramSnapshot, LATENCY_BOUNDS_NS};
use crate::protocol::ext::op as ext;
use crate::protocol::request::op;
use crate::protocol::Status;

/// The row of every command on the RESP port (one row for all: their names are Redis's).
pub const RESP: u8 = 0x3f;
/// Op codes below this each have a row; every other op code shares the last row (`other`).
/// Covers the native ops of every issue so far (0x01-0x27: v1, expiry and friends, Raft admin).
const OP_ROWS: usize = 0x40;
/// Status codes below this each have a column; any other shares the last one.
const STATUS_COLUMNS: usize = 0x08;

/// One op's row: replies by status, and the latency of all of them.
struct Row {
    by_status: [Cell<u64>; STATUS_COLUMNS + 1],
    latency: Histogram,
}

pub struct RequestMetrics {
    rows: Box<[Row]>,
}

/// One op's figures, as a scrape reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSnapshot {
    pub op: String,
    /// (status label, replies) for each status seen.
    pub by_status: Vec<(String, u64)>,
    /// Seconds.
    pub latency: HistogramSnapshot,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            rows: (0..=OP_ROWS)
                .map(|_| Row {
                    by_status: Default::default(),
                    latency: Histogram::new(LATENCY_BOUNDS_NS),
                })
                .collect(),
        }
    }
}

impl RequestMetrics {
    /// A reply with status byte `status` to a request of op `op`, `took` after it was read.
    pub fn record(&self, op: u8, status: u8, took: Duration) {
        let row = &self.rows[usize::from(op).min(OP_ROWS)];
        let cell = &row.by_status[usize::from(status).min(STATUS_COLUMNS)];
        cell.set(cell.get() + 1);
        row.latency
            .observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Every reply recorded.
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|row| row.latency.count()).sum()
    }

    /// The ops with at least one reply.
    pub fn snapshot(&self) -> Vec<OpSnapshot> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.latency.count() > 0)
            .map(|(code, row)| OpSnapshot {
                op: op_label(code),
                by_status: row
                    .by_status
                    .iter()
                    .enumerate()
                    .filter(|(_, cell)| cell.get() > 0)
                    .map(|(status, cell)| (status_label(status), cell.get()))
                    .collect(),
                latency: row.latency.snapshot(1e-9),
            })
            .collect()
    }
}

/// The `op` label: the op's name in lower case, `none` for an ERROR sent with no request (a
/// connection closed for a bad frame or idling), the code in hex for an op this table has no
/// name for, `other` past the table.
fn op_label(code: usize) -> String {
    let name = match u8::try_from(code) {
        Ok(0) => "none",
        Ok(op::GET) => "get",
        Ok(op::SET) => "set",
        Ok(op::DEL) => "del",
        Ok(op::KEYS) => "keys",
        Ok(op::PING) => "ping",
        Ok(op::STATS) => "stats",
        Ok(op::AUTH) => "auth",
        Ok(op::COMPACT) => "compact",
        Ok(ext::SETX) => "setx",
        Ok(ext::EXPIRE) => "expire",
        Ok(ext::META) => "meta",
        Ok(ext::INCRBY) => "incrby",
        Ok(ext::MGET) => "mget",
        Ok(ext::MSET) => "mset",
        Ok(ext::TXN) => "txn",
        Ok(ext::WATCH) => "watch",
        Ok(RESP) => "resp",
        _ if code >= OP_ROWS => "other",
        _ => return format!("0x{code:02x}"),
    };
    name.to_string()
}

/// The `status` label, as `docs/protocol.md` names the statuses.
fn status_label(code: usize) -> String {
    let status = u8::try_from(code).ok().and_then(Status::from_u8);
    let name = match status {
        Some(Status::Ok) => "ok",
        Some(Status::NotFound) => "not_found",
        Some(Status::NotLeader) => "not_leader",
        Some(Status::Error) => "error",
        Some(Status::ConditionFailed) => "condition_failed",
        Some(Status::Event) => "event",
        None if code >= STATUS_COLUMNS => "other",
        None => return format!("0x{code:02x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_counted_by_op_and_status() {
        let metrics = RequestMetrics::default();
        let ms = Duration::from_millis(1);
        metrics.record(op::SET, Status::Ok as u8, ms);
        metrics.record(op::SET, Status::Ok as u8, ms);
        metrics.record(op::GET, Status::NotFound as u8, ms);
        metrics.record(0x21, 0x06, ms);
        metrics.record(0xff, 0xff, ms);
        assert_eq!(metrics.total(), 5);
        let rows = metrics.snapshot();
        let find = |op: &str| rows.iter().find(|row| row.op == op).unwrap();
        assert_eq!(find("set").by_status, vec![("ok".to_string(), 2)]);
        assert_eq!(find("get").by_status, vec![("not_found".to_string(), 1)]);
        assert_eq!(find("0x21").by_status, vec![("0x06".to_string(), 1)]);
        assert_eq!(find("other").by_status, vec![("other".to_string(), 1)]);
        assert_eq!(find("set").latency.count, 2);
        assert!((find("set").latency.sum - 0.002).abs() < 1e-12);
        assert_eq!(rows.len(), 4, "ops never seen are left out: {rows:?}");
    }
}
