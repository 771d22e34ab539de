//! The I/O runtime, behind one seam: every other module spawns tasks, opens sockets and files,
//! and renames through here, so the runtime can be swapped (monoio, compio, or a raw `io-uring`
//! loop) by changing this file alone. Today it is tokio-uring: one single-threaded loop whose
//! socket and file operations go through one io_uring. `docs/runtime.md` says why.

use std::future::Future;
use std::io;
use std::path::Path;

pub use tokio_uring::buf::BoundedBuf;
pub use tokio_uring::fs::File;
pub use tokio_uring::net::{TcpListener, TcpStream};

/// A spawned task; dropping it does not stop the task, `abort` does.
pub type Task<T> = tokio::task::JoinHandle<T>;

/// Runs `future` to completion on a new loop on this thread, with everything it spawns.
///
/// The ring is made with COOP_TASKRUN and SINGLE_ISSUER where the kernel has them (5.19 and
/// 6.0): a completion then no longer interrupts the loop with an inter-processor interrupt to
/// run its task work; the work runs at the loop's next entry into the kernel, which it makes
/// every turn anyway. `docs/runtime.md` has the measurements.
pub fn start<F: Future>(future: F) -> F::Output {
    let mut ring = tokio_uring::uring_builder();
    ring.setup_coop_taskrun().setup_single_issuer();
    if ring.build(8).is_err() {
        tracing::info!(
            "this kernel's io_uring lacks COOP_TASKRUN or SINGLE_ISSUER; using a plain ring"
        );
        ring = tokio_uring::uring_builder();
    }
    tokio_uring::builder().uring_builder(&ring).start(future)
}

/// Runs `task` on this thread's loop, concurrently with the caller.
pub fn spawn<F: Future + 'static>(task: F) -> Task<F::Output> {
    tokio_uring::spawn(task)
}

/// Renames `from` to `to` through the ring (the caller fsyncs the directory).
pub async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    tokio_uring::fs::rename(from, to).await
}

/// Removes a file through the ring.
pub async fn remove_file(path: &Path) -> io::Result<()> {
    tokio_uring::fs::remove_file(path).await
}
