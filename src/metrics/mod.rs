//! Metrics and health over HTTP: `kvsd --metrics-addr HOST:PORT` serves `/metrics` (the
//! Prometheus text format), `/health` and `/ready`.
//!
//! - `histogram`, `requests`: the figures the loop records on its hot path, in plain cells
//!   (`server::stats` holds them with the STATS counters).
//! - `exposition`: a scrape's `Snapshot` of the node, written by the `prometheus-client` crate.
//! - `http`: the little HTTP/1.1 this needs, as plain functions. Pure.
//! - `serve`: the listener on the event loop, through `crate::runtime`; `recovering`: the same
//!   port answered from a plain thread while the log is recovered, before the loop exists.
//!
//! Nothing here reads the node: the server hands a scrape a `Site` that answers each endpoint.

pub mod exposition;
pub mod histogram;
pub mod http;
pub mod recovering;
pub mod requests;
pub mod serve;

pub use exposition::Snapshot;
pub use http::{Endpoint, Reply};
pub use requests::RequestMetrics;

/// What answers the endpoints: the serving node.
pub trait Site {
    fn answer(&self, endpoint: Endpoint) -> Reply;
}
