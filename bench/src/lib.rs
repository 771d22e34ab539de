//! kvs-bench: a load generator that measures kvsd, Redis and etcd with the same workload.
//!
//! - `config`: the command line and the checked configuration.
//! - `workload`: per client, which request comes next and when, and what its reply must be
//!   (`--verify`). Pure.
//! - `codec`: the bytes of the pipelined targets: `kvs` (through `kvs::protocol`) and `resp`.
//! - `etcd`: etcd v3 KV over gRPC (tonic), with hand-written prost messages.
//! - `driver`: one connection's send and receive loop, pipelined, matched by id.
//! - `stats`: counts and HdrHistograms per thread, merged; the `.hgrm` text.
//! - `runner`: the load threads (one current_thread runtime each, optionally pinned), the
//!   phases (connect, prefill, warmup and measure) and the progress line.
//! - `server_cpu`: the server's CPU time per request and kvsd's fsync batch fill over the
//!   measured window (`--server-pid`, `--server-stats`).
//! - `report`: the summary table, the last line, the JSON file.

pub mod codec;
pub mod config;
pub mod driver;
pub mod etcd;
pub mod report;
pub mod runner;
pub mod server_cpu;
pub mod stats;
pub mod workload;
