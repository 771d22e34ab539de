//! Replays every kept fuzz input through the fuzz targets' checks, on stable `cargo test`: the
//! minimised corpus of each target (`fuzz/corpus/<target>/`) and every input that once failed
//! (`fuzz/regressions/<target>/`). The checks themselves are `fuzz/checks.rs`, the same file
//! the cargo-fuzz targets run; `tools/fuzz` runs the fuzzer itself.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOCATOR: checks::CountingAlloc = checks::CountingAlloc;

/// The kept inputs of `target`, corpus and regressions, sorted by path.
fn kept_inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read a fuzz input dir").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = kept_inputs(target);
    assert!(
        files.len() >= 10,
        "fuzz/corpus/{target} holds {} inputs: run tools/fuzz to rebuild it",
        files.len()
    );
    for file in &files {
        let data = std::fs::read(file).expect("read a fuzz input");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", file.display());
    }
    eprintln!("{target}: {} kept inputs pass", files.len());
}

#[test]
fn frame_inputs() {
    replay("frame", checks::frame);
}

#[test]
fn request_inputs() {
    replay("request", checks::request);
}

#[test]
fn record_inputs() {
    replay("record", checks::record);
}

#[test]
fn replication_inputs() {
    replay("replication", checks::replication);
}

#[test]
fn recovery_inputs() {
    replay("recovery", checks::recovery);
}

/// The inputs that exercise each check's main paths, so the checks are not only as good as
/// whatever the corpus happens to hold.
#[test]
fn hand_made_inputs() {
    // Frames: a PING (docs/protocol.md's example), then a length below the minimum.
    let ping = b"\x0c\x00\x00\x00\x05\x00\x07\x00\x00\x00\x00\x00\x00\x00hi";
    checks::frame(ping);
    checks::frame(&[&ping[..], b"\x09\x00\x00\x00"].concat());
    checks::frame(&[&ping[..], b"\xff\xff\xff\xff"].concat());
    // Requests: limits byte, op, flags, body.
    checks::request(b"\x11\x02\x00\x01\x00\x00\x00kvalue");
    checks::request(b"\x11\x01\x01\x05\x00\x00\x00\x00\x00\x00\x00key");
    checks::request(b"\x11\x04\x01\x01\x00\x00\x00pq");
    checks::request(b"\x00\x07\x00");
    // A record built from the input, and raw bytes with a plausible length.
    checks::record(b"\x05\x2bkeyvalue-bytes");
    checks::record(b"\x1e\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00");
    // RECORDS frames: 5 records, then the same with a bit flipped.
    checks::replication(b"\x03\x05\x00\x00abcdefghijklmnopqrstuvwxyz0123456789");
    checks::replication(b"\x03\x05\x37\x81abcdefghijklmnopqrstuvwxyz0123456789");
    // Recovery: for each damage kind, with and without --repair-truncate.
    for options in 0..20u8 {
        checks::recovery(&[
            options, 0x90, 0x00, 0x01, 0x06, 0x12, b'a', b'b', b'c', 0x2a, b'd', b'e', 0x81, b'f',
            0x0b, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
        ]);
    }
}

#[test]
fn the_allocation_check_catches_a_decoder_that_trusts_a_length() {
    checks::bounded("a careful decoder", 4, || vec![0u8; 64]);
    let careless = std::panic::catch_unwind(|| {
        let claimed = u32::from_le_bytes([0, 0, 0x10, 0]) as usize; // 1 MiB from 4 bytes
        checks::bounded("a careless decoder", 4, || vec![0u8; claimed])
    });
    assert!(careless.is_err(), "a 1 MiB allocation for 4 bytes passed");
}

#[test]
fn the_flip_check_catches_a_decoder_that_ignores_damage() {
    let bytes = [0x5au8; 40];
    checks::assert_every_flip_refused(&bytes, |_| {
        Err::<(), _>(kvs::wal::record::DecodeError::BadChecksum)
    });
    let careless = std::panic::catch_unwind(|| {
        checks::assert_every_flip_refused(&bytes, |_| Ok(()));
    });
    assert!(careless.is_err(), "a decoder that accepts damage passed");
}
