//! The index checkpoint of the real kvsd: a clean stop writes it and the next start loads it
//! (and reads only what the log holds after it); after kill -9 there is none and the whole log
//! is read; a stale or damaged one is ignored, never trusted. Every case checks every key.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::raw::Conn;
use common::Kvsd;

const ARGS: [&str; 2] = ["--segment-bytes", "65536"];

fn write(addr: &str, model: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>, round: u32, keys: u32) {
    let mut conn = Conn::connect(addr);
    for k in 0..keys {
        let key = format!("k{k:05}").into_bytes();
        if k % 11 == 5 && round > 0 {
            conn.del(&key);
            model.insert(key, None);
        } else {
            let value = format!("r{round}-{k}-{}", "v".repeat(60)).into_bytes();
            conn.set(&key, &value);
            model.insert(key, Some(value));
        }
    }
}

fn check(addr: &str, model: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
    let mut conn = Conn::connect(addr);
    for (key, value) in model {
        assert_eq!(&conn.value(key), value, "{}", String::from_utf8_lossy(key));
    }
    let live: Vec<_> = model
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(conn.keys(b"", 1 << 20).0, live);
}

fn loaded_checkpoint(server: &Kvsd) -> bool {
    server.drain_log(std::time::Duration::from_millis(300));
    let ready = &server.ready_line;
    // The ready line counts the records read from the log: few when the checkpoint was used.
    common::field(ready, "records")
        .unwrap()
        .parse::<u64>()
        .unwrap()
        < 100
}

fn ckpt(dir: &Path) -> std::path::PathBuf {
    dir.join("index.ckpt")
}

#[test]
fn a_clean_stop_writes_a_checkpoint_that_the_next_start_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut model = BTreeMap::new();
    let server = common::start(&data, &ARGS);
    for round in 0..3 {
        write(&server.addr, &mut model, round, 800);
    }
    // Compacted segments are described as well as plain ones, also one whose last records
    // were dropped: the keys written last are written again before the compaction.
    let mut conn = Conn::connect(&server.addr);
    for k in 600..800u32 {
        let key = format!("k{k:05}").into_bytes();
        let value = format!("again-{k}").into_bytes();
        conn.set(&key, &value);
        model.insert(key, Some(value));
    }
    let id = conn.id();
    assert_eq!(conn.call(0x08, 0, id, b"").status, common::raw::OK);
    write(&server.addr, &mut model, 4, 100);
    assert!(server.stop().success());
    assert!(ckpt(&data).exists(), "a clean stop writes index.ckpt");

    let server = common::start(&data, &ARGS);
    assert!(loaded_checkpoint(&server), "{}", server.ready_line);
    assert!(!ckpt(&data).exists(), "loaded once, then removed");
    check(&server.addr, &model);
    // Writes after the checkpoint, then kill -9: no checkpoint, the whole log is read.
    write(&server.addr, &mut model, 3, 800);
    server.kill9();
    assert!(!ckpt(&data).exists());
    let server = common::start(&data, &ARGS);
    assert!(!loaded_checkpoint(&server), "{}", server.ready_line);
    check(&server.addr, &model);
}

#[test]
fn a_stale_or_damaged_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut model = BTreeMap::new();
    let server = common::start(&data, &ARGS);
    write(&server.addr, &mut model, 0, 800);
    write(&server.addr, &mut model, 1, 800);
    assert!(server.stop().success());
    let old = std::fs::read(ckpt(&data)).unwrap();

    // Stale: more writes and a compaction since it was written.
    let server = common::start(&data, &ARGS);
    write(&server.addr, &mut model, 2, 800);
    let mut conn = Conn::connect(&server.addr);
    let id = conn.id();
    conn.call(0x08, 0, id, b"");
    server.kill9();
    std::fs::write(ckpt(&data), &old).unwrap();
    let server = common::start(&data, &ARGS);
    assert!(
        !loaded_checkpoint(&server),
        "a stale checkpoint is not used: {}",
        server.ready_line
    );
    check(&server.addr, &model);
    assert!(server.stop().success());

    // Damaged: one flipped bit anywhere in it.
    let good = std::fs::read(ckpt(&data)).unwrap();
    for at in [5, good.len() / 2, good.len() - 2] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(ckpt(&data), &bad).unwrap();
        let server = common::start(&data, &ARGS);
        assert!(
            !loaded_checkpoint(&server),
            "byte {at}: {}",
            server.ready_line
        );
        check(&server.addr, &model);
        assert!(server.stop().success());
    }
}
