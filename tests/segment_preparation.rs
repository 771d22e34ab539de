//! The next log segment is zero-filled in the background, paced to the log (`src/wal/prepare.rs`):
//! the segments the log moves into are whole, written files (so an append overwrites
//! allocated blocks and its fdatasync needs no journal commit), and a kill -9 in the middle of
//! a preparation leaves nothing behind that recovery could mistake for log, and loses no
//! acknowledged write.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::field;
use common::raw::Conn;

const SEGMENT_BYTES: u64 = 256 * 1024;

fn value(n: usize) -> Vec<u8> {
    format!("value-{n:06}-")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(1000)
        .collect()
}

fn key(n: usize) -> Vec<u8> {
    format!("key-{n:06}").into_bytes()
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    paths.sort();
    paths
}

/// Extents of `file` that FIEMAP reports as unwritten (allocated, but reading as zeros only
/// because the file system says so: the first write into one is a metadata change). None when
/// `filefrag` or FIEMAP is not available here.
fn unwritten_extents(file: &Path) -> Option<Vec<String>> {
    let output = Command::new("filefrag")
        .args(["-v", file.to_str().unwrap()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !text.contains("ext:") {
        return None;
    }
    Some(
        text.lines()
            .filter(|line| line.contains("unwritten"))
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn the_log_moves_into_whole_zero_filled_segments_and_they_recover() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--segment-bytes",
        "262144",
        "--compact-garbage-ratio",
        "never",
    ];
    let server = common::start(&data, &flags);
    let mut conn = Conn::connect(&server.addr);
    // About 1 MiB of records: four segments' worth, written one at a time.
    let count = 1000;
    for n in 0..count {
        conn.set(&key(n), &value(n));
    }
    let log = server.drain_log(Duration::from_secs(1));
    let rotations: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("started a new log segment"))
        .collect();
    assert!(rotations.len() >= 3, "rotations:\n{}", log.join("\n"));
    // The first segment is zero-filled at creation; the others were prepared in the background
    // unless the log outran the preparation (then the rotation says preallocated=false).
    let mut preallocated = vec![segment_path(&data, 1)];
    for line in &rotations {
        if field(line, "preallocated").as_deref() == Some("true") {
            preallocated.push(PathBuf::from(field(line, "segment").unwrap()));
        }
    }
    assert!(
        preallocated.len() >= 2,
        "no rotation found its segment prepared:\n{}",
        log.join("\n")
    );
    for path in &preallocated {
        // (At least: the batch that fills a segment may end past its size.)
        let len = fs::metadata(path).unwrap().len();
        assert!(len >= SEGMENT_BYTES, "{} is {len} bytes", path.display());
        match unwritten_extents(path) {
            Some(unwritten) => assert!(
                unwritten.is_empty(),
                "{} has unwritten extents: {unwritten:?}",
                path.display()
            ),
            None => eprintln!(
                "no FIEMAP here: the extents of {} not checked",
                path.display()
            ),
        }
    }
    server.kill9();

    let server = common::start(&data, &flags);
    assert_eq!(
        field(&server.ready_line, "truncated_bytes").as_deref(),
        Some("0")
    );
    let mut conn = Conn::connect(&server.addr);
    for n in 0..count {
        assert_eq!(conn.value(&key(n)), Some(value(n)), "key {n}");
    }
}

fn segment_path(data: &Path, id: u32) -> PathBuf {
    data.join(format!("{id:010}.wal"))
}

/// Waits (up to a minute: this is not a timing assertion) for a file with `suffix` in `dir`.
fn wait_for_file(dir: &Path, suffix: &str) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(path) = files(dir, suffix).into_iter().next() {
            return path;
        }
        assert!(
            Instant::now() < deadline,
            "no {suffix} file in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn kill_9_in_the_middle_of_a_preparation_loses_nothing_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The default 64 MiB segments: a preparation takes seconds at its pace, so the kill lands
    // in the middle of one.
    let server = common::start(&data, &[]);
    let mut conn = Conn::connect(&server.addr);
    for n in 0..200 {
        conn.set(&key(n), &value(n));
    }
    let prepared = wait_for_file(&data, ".prepared.wal.tmp");
    let part = fs::metadata(&prepared).map(|m| m.len()).unwrap_or(0);
    server.kill9();
    println!(
        "killed with {} at {part} bytes",
        prepared.file_name().unwrap().to_string_lossy()
    );

    let server = common::start(&data, &[]);
    assert_eq!(
        field(&server.ready_line, "truncated_bytes").as_deref(),
        Some("0")
    );
    assert_eq!(field(&server.ready_line, "records").as_deref(), Some("200"));
    let mut conn = Conn::connect(&server.addr);
    for n in 0..200 {
        assert_eq!(conn.value(&key(n)), Some(value(n)), "key {n}");
    }
    // Only the log's own segment is left, and the preparation starts over.
    assert_eq!(files(&data, ".wal"), vec![segment_path(&data, 1)]);
    conn.set(b"after", b"restart");
    wait_for_file(&data, ".prepared.wal.tmp");
    server.kill9();

    let server = common::start(&data, &[]);
    let mut conn = Conn::connect(&server.addr);
    assert_eq!(conn.value(b"after"), Some(b"restart".to_vec()));
    assert_eq!(files(&data, ".wal"), vec![segment_path(&data, 1)]);
}
