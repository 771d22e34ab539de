//! kvs: a durable, replicated key-value store served by one io_uring event loop on one
//! (optionally pinned) core. Per-core shards (one loop per core, keys hashed to shards) are
//! planned, not built.
//!
//! Data flows one way: `protocol` (bytes to requests) → `command` (a request's effect on the
//! engine, and the reply) → `engine` (the index and the rules of visibility and order) →
//! `wal` (records on disk). `server` wires them to sockets and files through `runtime`, the
//! one module that names the io_uring runtime (tokio-uring).
//!
//! - `limits`: every limit and default, units last.
//! - `auth`: the shared secret of `--auth-file` and the per-connection gate. Pure.
//! - `protocol`: frames, requests, responses. Pure.
//! - `resp`: the Redis protocol's codec and command table (`--resp-port`). Pure.
//! - `client`: a plain blocking client of the protocol (kvsctl, tests, tools).
//! - `cpu`: pinning a thread to one CPU (kvsd's `--core`, kvs-bench's load threads).
//! - `metrics`: `/metrics`, `/health` and `/ready` over HTTP (`--metrics-addr`).

pub mod auth;
pub mod client;
pub mod command;
pub mod cpu;
pub mod engine;
pub mod int_hash;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod raft;
pub mod replication;
pub mod resp;
pub mod runtime;
pub mod server;
pub mod wal;
