//! How long one durable write takes on this disk, each way a server can make one.
//!
//! A durable SET at 50 clients × 1 is bounded by the durable write of one batch: every writer
//! waits for one, and a batch holds nearly all of them (kvsd's STATS `batch_fill_pct_avg`;
//! Redis's `appendfsync always` writes and syncs its AOF once per event-loop turn). So the
//! ratio of two servers' SET 50×1 throughput is at most the ratio of their durable writes. This
//! measures those writes with nothing else in the way, in interleaved rounds:
//!
//! - `overwrite`: `pwrite` into a zero-filled file + `fdatasync` (kvsd: preallocated segments,
//!   so the sync commits no new file size);
//! - `append`: `write` at the end of a growing file + `fdatasync` (Redis's AOF);
//! - `o_dsync`: `pwrite` into a zero-filled file opened `O_DSYNC`;
//! - `rwf_dsync`: `pwritev2(RWF_DSYNC)` into a zero-filled file (what an io_uring write with
//!   `RWF_DSYNC` does);
//! - `direct`: `O_DIRECT | O_DSYNC` into a zero-filled file, in whole 4 KiB blocks.
//!
//! Usage: `fsync-probe --dir DIR [--bytes 7000] [--writes 1500] [--rounds 3]`; prints a
//! markdown table (`tools/fsync-probe` runs it and saves the result in `bench/results/`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

const FILE_BYTES: usize = 64 << 20;
const BLOCK: usize = 4096;
const WAYS: [&str; 5] = ["overwrite", "append", "o_dsync", "rwf_dsync", "direct"];

fn main() {
    let mut dir = None;
    let (mut bytes, mut writes, mut rounds) = (7000usize, 1500usize, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value())),
            "--bytes" => bytes = number(&value()),
            "--writes" => writes = number(&value()),
            "--rounds" => rounds = number(&value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let dir = dir.unwrap_or_else(|| usage("--dir is required"));
    if bytes == 0 || bytes > 1 << 20 || writes == 0 || rounds == 0 {
        usage("--bytes must be 1..=1048576, --writes and --rounds at least 1");
    }
    if writes * bytes + BLOCK > FILE_BYTES {
        usage("--writes × --bytes must fit the 64 MiB file");
    }
    // (way, round) → sorted latencies in µs
    let mut results: Vec<Vec<Vec<f64>>> = vec![Vec::new(); WAYS.len()];
    for _ in 0..rounds {
        for (i, way) in WAYS.iter().enumerate() {
            let path = dir.join(format!("fsync-probe-{way}.dat"));
            let mut latencies = match probe(&path, way, bytes, writes) {
                Ok(latencies) => latencies,
                Err(error) => {
                    let _ = std::fs::remove_file(&path);
                    eprintln!("fsync-probe: {way}: {error}");
                    std::process::exit(1);
                }
            };
            let _ = std::fs::remove_file(&path);
            latencies.sort_by(f64::total_cmp);
            results[i].push(latencies);
        }
    }
    println!(
        "Durable writes of {bytes} bytes, {writes} per way per round, {rounds} interleaved rounds, in {}",
        dir.display()
    );
    println!(
        "(median over rounds of each round's percentile, µs; ratio = append ÷ this way at p50)\n"
    );
    println!("| way | p50 µs | p90 µs | p99 µs | append ÷ way (p50) |");
    println!("|---|---|---|---|---|");
    let p50 = |i: usize| median(results[i].iter().map(|r| percentile(r, 0.50)).collect());
    let append_p50 = p50(1);
    for (i, way) in WAYS.iter().enumerate() {
        let at = |q| median(results[i].iter().map(|r| percentile(r, q)).collect());
        println!(
            "| {way} | {:.1} | {:.1} | {:.1} | {:.2}× |",
            at(0.50),
            at(0.90),
            at(0.99),
            append_p50 / p50(i)
        );
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("fsync-probe: {problem}");
    }
    eprintln!("usage: fsync-probe --dir DIR [--bytes 7000] [--writes 1500] [--rounds 3]");
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

fn number(text: &str) -> usize {
    text.parse()
        .unwrap_or_else(|_| usage(&format!("{text:?} is not a number")))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A block-aligned buffer (O_DIRECT needs one), freed on drop.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, BLOCK).expect("layout");
        // SAFETY: the layout has a non-zero size; the pointer is checked and freed in drop.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "out of memory");
        // SAFETY: ptr points to len writable bytes.
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        Aligned { ptr, len }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, BLOCK).expect("layout");
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

fn check(result: libc::ssize_t, what: &str) -> std::io::Result<usize> {
    if result < 0 {
        let error = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            error.kind(),
            format!("{what}: {error}"),
        ));
    }
    Ok(result as usize)
}

fn open(path: &Path, flags: libc::c_int) -> std::io::Result<libc::c_int> {
    let name = CString::new(path.as_os_str().as_bytes()).expect("no NUL in the path");
    // SAFETY: name is a valid C string.
    let fd = unsafe { libc::open(name.as_ptr(), flags | libc::O_RDWR | libc::O_CREAT, 0o644) };
    check(fd as libc::ssize_t, "open").map(|_| fd)
}

/// Zero-fills a new file and makes it durable, as kvsd prepares a segment.
fn preallocate(path: &Path) -> std::io::Result<()> {
    let fd = open(path, libc::O_TRUNC)?;
    let zeros = Aligned::new(1 << 20, 0);
    for at in (0..FILE_BYTES).step_by(1 << 20) {
        // SAFETY: zeros holds 1 MiB.
        let wrote = unsafe { libc::pwrite(fd, zeros.ptr.cast(), 1 << 20, at as libc::off_t) };
        check(wrote, "zero-fill")?;
    }
    // SAFETY: fd is open.
    check(unsafe { libc::fsync(fd) } as libc::ssize_t, "fsync")?;
    // SAFETY: fd is open and not used after.
    unsafe { libc::close(fd) };
    Ok(())
}

fn probe(path: &Path, way: &str, bytes: usize, writes: usize) -> std::io::Result<Vec<f64>> {
    let extra = match way {
        "append" => libc::O_TRUNC | libc::O_APPEND,
        "o_dsync" => libc::O_DSYNC,
        "direct" => libc::O_DIRECT | libc::O_DSYNC,
        _ => 0,
    };
    if way != "append" {
        preallocate(path)?;
    }
    let fd = open(path, extra)?;
    let data = Aligned::new(bytes.next_multiple_of(BLOCK) + BLOCK, b'x');
    let mut latencies = Vec::with_capacity(writes);
    let mut offset = 0usize;
    for _ in 0..writes {
        let started = Instant::now();
        // SAFETY (all calls below): data holds at least the bytes written; fd is open.
        match way {
            "append" => {
                check(unsafe { libc::write(fd, data.ptr.cast(), bytes) }, "write")?;
                check(unsafe { libc::fdatasync(fd) } as libc::ssize_t, "fdatasync")?;
            }
            "overwrite" => {
                let wrote = unsafe { libc::pwrite(fd, data.ptr.cast(), bytes, offset as i64) };
                check(wrote, "pwrite")?;
                check(unsafe { libc::fdatasync(fd) } as libc::ssize_t, "fdatasync")?;
            }
            "o_dsync" => {
                let wrote = unsafe { libc::pwrite(fd, data.ptr.cast(), bytes, offset as i64) };
                check(wrote, "pwrite")?;
            }
            "rwf_dsync" => {
                let iov = libc::iovec {
                    iov_base: data.ptr.cast(),
                    iov_len: bytes,
                };
                let wrote = unsafe { libc::pwritev2(fd, &iov, 1, offset as i64, libc::RWF_DSYNC) };
                check(wrote, "pwritev2")?;
            }
            _ => {
                // Whole blocks: the partly written last block is written again next time.
                let start = offset / BLOCK * BLOCK;
                let end = (offset + bytes).next_multiple_of(BLOCK);
                let wrote = unsafe { libc::pwrite(fd, data.ptr.cast(), end - start, start as i64) };
                check(wrote, "pwrite O_DIRECT")?;
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
        offset += bytes;
    }
    // SAFETY: fd is open and not used after.
    unsafe { libc::close(fd) };
    Ok(latencies)
}
