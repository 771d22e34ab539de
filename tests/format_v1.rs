//! A data dir written by a kvsd of segment header version 1 (`tests/fixtures/v1-segments/`, made
//! as `tests/fixtures/README.md` says) still starts today's kvsd: it rewrites the old segments
//! once into version 3 (record format 2), and every key and value is there, deletes and binary
//! keys and values included; new writes continue its seqs, first in its rewritten active segment
//! and then in new ones; and all of it survives a clean restart, a compaction, and a kill -9.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::raw::{Conn, OK};

const COMPACT: u8 = 0x08;
/// The fixture's segment size (the smallest there is), so its active segment fills as it would.
const SEGMENT_BYTES: &str = "65536";
/// The writes `make-v1-segments.py` made: seqs 1 to 11.
const FIXTURE_LAST_SEQ: u64 = 11;

/// Key → value (None: deleted).
type Model = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// As in `make-v1-segments.py`.
fn pattern(length: usize, seed: usize) -> Vec<u8> {
    (0..length).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

/// What the fixture holds after its 11 writes.
fn fixture_model() -> Model {
    let binary: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    [
        (&b"alpha"[..], Some(b"two".to_vec())),
        (b"beta", Some(binary)),
        (b"gamma", None),
        (b"empty", Some(Vec::new())),
        (b"\x00key\xff", Some(b"binary key".to_vec())),
        (b"big1", None),
        (b"big2", Some(pattern(40_000, 2))),
        (b"after-roll", Some(b"in segment 2".to_vec())),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_vec(), value))
    .collect()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-segments")
}

/// The header version of each segment file in `dir`, by file name.
fn versions(dir: &Path) -> BTreeMap<String, u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "wal"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"KVSWAL\0\0", "{}", path.display());
            let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, version)
        })
        .collect()
}

#[track_caller]
fn check(addr: &str, model: &Model) {
    let mut conn = Conn::connect(addr);
    for (key, value) in model {
        assert_eq!(
            &conn.value(key),
            value,
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    let live: Vec<Vec<u8>> = model
        .iter()
        .filter(|(_, value)| value.is_some())
        .map(|(key, _)| key.clone())
        .collect();
    assert_eq!(conn.keys(b"", 1 << 20).0, live);
}

#[test]
fn a_version_1_log_is_read_whole_and_written_on() {
    let fixture = fixture_dir();
    let old = versions(&fixture);
    assert_eq!(
        old.values().copied().collect::<Vec<_>>(),
        vec![1, 1],
        "the fixture is two version-1 segments: {old:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for name in old.keys() {
        std::fs::copy(fixture.join(name), data.join(name)).unwrap();
    }
    // No compaction until the test asks for one: reads come from the rewritten files.
    let args = [
        "--segment-bytes",
        SEGMENT_BYTES,
        "--compact-garbage-ratio",
        "never",
    ];

    let server = common::start(&data, &args);
    assert_eq!(server.last_seq, FIXTURE_LAST_SEQ, "{}", server.ready_line);
    let mut model = fixture_model();
    check(&server.addr, &model);

    // The start rewrote both files in today's format, under their names.
    let upgraded = versions(&data);
    assert_eq!(
        upgraded
            .iter()
            .map(|(n, v)| (n.as_str(), *v))
            .collect::<Vec<_>>(),
        vec![("0000000001.wal", 3), ("0000000002.wal", 3)],
        "the old segments were rewritten as version 3"
    );

    // New writes continue the seqs, fill the rewritten active segment and roll into new ones.
    let mut conn = Conn::connect(&server.addr);
    let mut seq = FIXTURE_LAST_SEQ;
    for n in 0..200u32 {
        let key = format!("new{n:03}").into_bytes();
        let value = format!("{n}-{}", "n".repeat(1000)).into_bytes();
        seq += 1;
        assert_eq!(conn.set(&key, &value), seq);
        model.insert(key, Some(value));
    }
    seq += 1;
    assert_eq!(conn.set(b"alpha", b"three"), seq);
    model.insert(b"alpha".to_vec(), Some(b"three".to_vec()));
    seq += 1;
    assert_eq!(conn.set(b"gamma", b"back"), seq);
    model.insert(b"gamma".to_vec(), Some(b"back".to_vec()));
    seq += 1;
    let reply = conn.del(b"beta");
    assert_eq!((reply.status, reply.seq()), (OK, seq), "{reply:?}");
    model.insert(b"beta".to_vec(), None);
    check(&server.addr, &model);
    drop(conn);

    let status = server.stop();
    assert_eq!(status.code(), Some(0), "clean stop: {status}");
    let now = versions(&data);
    assert!(
        now.len() > old.len() && now.values().all(|v| *v == 3),
        "every segment is version 3, the new ones too: {now:?}"
    );

    let server = common::start(&data, &args);
    assert_eq!(server.last_seq, seq, "{}", server.ready_line);
    check(&server.addr, &model);

    // Compaction reads the rewritten segments as any others.
    let mut conn = Conn::connect(&server.addr);
    let id = conn.id();
    let reply = conn.call(COMPACT, 0, id, b"");
    assert_eq!(reply.status, OK, "{reply:?}");
    check(&server.addr, &model);
    drop(conn);
    server.kill9();

    let server = common::start(&data, &args);
    assert_eq!(server.last_seq, seq, "{}", server.ready_line);
    check(&server.addr, &model);
    let compacted = versions(&data);
    assert!(
        compacted.get("0000000001.wal") == Some(&3),
        "the first segment was compacted into a version-3 file: {compacted:?}"
    );
}
