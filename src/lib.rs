//! kvs: a durable, replicated key-value store on one io_uring loop per core.
//!
//! Data flows one way: `protocol` (bytes to requests) → `command` (a request's effect on the
//! engine, and the reply) → `engine` (the index and the rules of visibility and order) →
//! `wal` (records on disk). `server` wires them to sockets and files; it and `wal::file`
//! are the only places that name the io_uring runtime.
//!
//! - `limits`: every limit and default, units last.
//! - `auth`: the shared secret of `--auth-file` and the per-connection gate. Pure.
//! - `protocol`: frames, requests, responses. Pure.
//! - `client`: a plain blocking client of the protocol (kvsctl, tests, tools).

pub mod auth;
pub mod client;
pub mod command;
pub mod engine;
pub mod limits;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod wal;
