//! runtime-probe: the same PING/GET server on three io_uring runtimes, so kvsd's runtime is
//! chosen on measurements (`tools/runtime-probe`, `docs/runtime.md`).
//!
//! - `store`: what is served (kvs's codec, an in-memory map). Pure, shared by all three.
//! - `tokio_uring_server`: (a) tokio-uring as kvsd uses it, (b) the same with ring flags.
//! - `raw`: (c) one loop on the `io-uring` crate.

mod raw;
mod store;
mod tokio_uring_server;

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::store::Store;
use crate::tokio_uring_server::RingFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// (a) `tokio_uring::start`, a task per connection: kvsd today.
    TokioUring,
    /// (b) the same, ring built with COOP_TASKRUN + TASKRUN_FLAG.
    TokioUringFlags,
    /// (c) SINGLE_ISSUER + DEFER_TASKRUN, multishot RECV into a buffer ring, one
    /// `submit_and_wait` per turn.
    Raw,
}

/// Serves kvs PING and GET (and an in-memory SET) on 127.0.0.1 from a map prefilled with
/// kvs-bench's keys, on the runtime chosen.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, value_enum)]
    runtime: Runtime,
    /// 0 picks a free port; the line `listening on 127.0.0.1:PORT` says which.
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Pin the server's one thread to this CPU.
    #[arg(long)]
    core: Option<usize>,
    /// Keys to prefill, `key:000000000000` up (kvs-bench's `--keyspace`), 100-byte values.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(core) = args.core {
        pin_to(core).with_context(|| format!("pinning to CPU {core}"))?;
    }
    let store = Store::prefilled(args.keys);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))
        .with_context(|| format!("listening on 127.0.0.1:{}", args.port))?;
    println!("listening on {}", listener.local_addr()?);
    match args.runtime {
        Runtime::TokioUring => tokio_uring_server::run(listener, store, RingFlags::Default),
        Runtime::TokioUringFlags => {
            tokio_uring_server::run(listener, store, RingFlags::CoopTaskrun)
        }
        Runtime::Raw => raw::run(listener, store).context("the raw io_uring loop"),
    }
}

fn pin_to(core: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain bytes; the call gets its exact size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
