//! The state machine's snapshot file, `raft-snapshot`: every live key of the state machine at
//! one applied log id, as log records, so that the Raft log before that id can be deleted.
//!
//! The index's values then live in this file (the records a snapshot copies are the keys'
//! current records, so the index is pointed at the copies) and in the log after it. A snapshot
//! is written to `raft-snapshot.tmp`, fsynced, renamed over `raft-snapshot` and the directory
//! fsynced: a crash leaves the old snapshot or the new one, never a mix. The same bytes are
//! what a leader streams to a member that needs them (`SnapshotFile` is openraft's snapshot
//! data), and a member that receives one checks every record, writes it the same way, and only
//! then takes it as its state.
//!
//! | offset | size     | field                                                 |
//! |--------|----------|-------------------------------------------------------|
//! | 0      | 8        | magic `KVSRSNAP`                                      |
//! | 8      | 4        | `version` u32 LE: 1                                   |
//! | 12     | 4        | `meta_len` u32 LE                                     |
//! | 16     | 4        | `meta_crc` u32 LE: CRC32 of the meta bytes            |
//! | 20     | 4        | zero                                                  |
//! | 24     | meta_len | meta: last log id, membership, `records` u64 LE       |
//! | …      |          | `records` records (record format 2, SET), to the end  |
//!
//! Memory stays bounded: files are read and written in `IO_BYTES` chunks, yielding between.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, Read, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};

use super::codec::{self, Reader};
use super::{LogId, StoredMembership};
use crate::engine::Engine;
use crate::runtime::File;
use crate::wal::record::{self, DecodeError, Op, Record};
use crate::wal::Location;

pub const FILE: &str = "raft-snapshot";
pub const TMP: &str = "raft-snapshot.tmp";
/// Where a snapshot being received from the leader is written, before it is checked.
pub const RECEIVING: &str = "raft-snapshot.recv";
const MAGIC: &[u8; 8] = b"KVSRSNAP";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 24;
/// The largest snapshot file: the index's value offsets are u32, as in a segment.
pub const FILE_BYTES_MAX: u64 = u32::MAX as u64;
/// Bytes per read and write when making, checking or copying a snapshot.
pub const IO_BYTES: usize = 1 << 20;
/// A meta larger than this is damage (a membership of a few members is a few hundred bytes).
const META_BYTES_MAX: usize = 1 << 20;

/// What a snapshot file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    pub records: u64,
}

impl Meta {
    /// openraft's id for the snapshot: one state per log id, so the log id names it.
    pub fn snapshot_id(&self) -> String {
        match &self.last_log_id {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index + 1),
            None => "empty".into(),
        }
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The header and meta, ready to be written at the start of a snapshot file.
pub fn encode_head(meta: &Meta) -> Vec<u8> {
    let mut body = BytesMut::new();
    codec::put_log_id(&mut body, meta.last_log_id.as_ref());
    codec::put_stored_membership(&mut body, &meta.membership);
    body.put_u64_le(meta.records);
    let mut head = Vec::with_capacity(HEADER_BYTES + body.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(body.len() as u32).to_le_bytes());
    head.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    head.extend_from_slice(&body);
    head
}

fn damaged(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("raft snapshot: {why}"))
}

/// Reads the header and meta from the start of `buf`: `Ok(None)` while they are not all there,
/// else the meta and the bytes they take.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<(Meta, usize)>> {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    if &header[..8] != MAGIC {
        return Err(damaged("not a kvsd raft snapshot (bad magic)"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
    if u32_at(8) != VERSION {
        return Err(damaged(format!(
            "version {} is not supported (this kvsd reads {VERSION})",
            u32_at(8)
        )));
    }
    let meta_len = u32_at(12) as usize;
    if meta_len > META_BYTES_MAX {
        return Err(damaged(format!("a meta of {meta_len} bytes")));
    }
    if u32_at(20) != 0 {
        return Err(damaged("the header's reserved bytes are not zero"));
    }
    let Some(body) = buf.get(HEADER_BYTES..HEADER_BYTES + meta_len) else {
        return Ok(None);
    };
    if crc32fast::hash(body) != u32_at(16) {
        return Err(damaged("meta checksum mismatch"));
    }
    let mut reader = Reader::new(body);
    let meta = (|| {
        let last_log_id = codec::get_log_id(&mut reader)?;
        let membership = codec::get_stored_membership(&mut reader)?;
        let records = reader.u64("records")?;
        reader.end("snapshot meta")?;
        Ok::<_, codec::DecodeError>(Meta {
            last_log_id,
            membership,
            records,
        })
    })()
    .map_err(|e| damaged(e.0))?;
    Ok(Some((meta, HEADER_BYTES + meta_len)))
}

/// Reads a snapshot's bytes in order, from its start, in pieces of any size: checks every
/// record and points a new engine at each value as it lies in file `file_no` (a file holding
/// these same bytes). No I/O: the caller reads or receives the bytes. Any damage (a flipped
/// bit anywhere, a record of another kind, a torn end, a count that differs from the meta's)
/// is an `InvalidData` error, and the loader is then of no more use.
pub struct Loader {
    file_no: u32,
    engine: Engine,
    meta: Option<Meta>,
    /// Bytes of a record (or of the head) not yet whole, at file offset `offset`.
    pending: Vec<u8>,
    offset: u64,
    records: u64,
}

impl Loader {
    pub fn new(file_no: u32) -> Loader {
        Loader {
            file_no,
            engine: Engine::new(0),
            meta: None,
            pending: Vec::new(),
            offset: 0,
            records: 0,
        }
    }

    /// The file number the engine's locations name.
    pub fn file_no(&self) -> u32 {
        self.file_no
    }

    /// The snapshot's meta, once its head has been read.
    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    /// Takes the next `bytes` of the snapshot.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.meta.is_none() {
            let Some((meta, used)) = parse_head(&self.pending)? else {
                return Ok(());
            };
            self.meta = Some(meta);
            self.pending.drain(..used);
            self.offset = used as u64;
        }
        let mut at = 0;
        while at < self.pending.len() {
            match record::decode(&self.pending[at..]) {
                Ok((header, rec)) => {
                    let here = self.offset + at as u64;
                    if header.op != Op::Set {
                        return Err(damaged(format!("a {:?} record at byte {here}", header.op)));
                    }
                    let value_offset = here + header.value_offset() as u64;
                    let location = Location {
                        file: self.file_no,
                        value_offset: u32::try_from(value_offset + u64::from(header.value_len))
                            .map(|_| value_offset as u32)
                            .map_err(|_| damaged("larger than 4 GiB"))?,
                        value_len: header.value_len,
                    };
                    self.engine
                        .recover(
                            &Record::set(rec.seq, rec.term, rec.key, rec.value),
                            location,
                        )
                        .map_err(damaged)?;
                    self.records += 1;
                    at += header.total_bytes;
                }
                Err(DecodeError::Incomplete { .. }) => break,
                Err(error) => {
                    let here = self.offset + at as u64;
                    return Err(damaged(format!("record at byte {here}: {error}")));
                }
            }
        }
        self.pending.drain(..at);
        self.offset += at as u64;
        Ok(())
    }

    /// At the end of the bytes: the meta, and the engine holding the snapshot's state.
    pub fn finish(self) -> io::Result<(Meta, Engine)> {
        let Some(meta) = self.meta else {
            return Err(damaged(format!(
                "it ends after {} bytes, inside its header",
                self.pending.len()
            )));
        };
        if !self.pending.is_empty() {
            return Err(damaged(format!(
                "a torn record at byte {} ({} bytes)",
                self.offset,
                self.pending.len()
            )));
        }
        if self.records != meta.records {
            return Err(damaged(format!(
                "{} records where the meta says {}",
                self.records, meta.records
            )));
        }
        Ok((meta, self.engine))
    }
}

/// Loads the snapshot file at `path` as file `file_no`: reads it on the ring in `IO_BYTES`
/// pieces, yielding between them.
pub async fn load_file(path: &Path, file_no: u32) -> io::Result<(Meta, Engine)> {
    let file = File::open(path).await?;
    let mut loader = Loader::new(file_no);
    let mut buf = Vec::with_capacity(IO_BYTES);
    let mut at = 0u64;
    loop {
        buf.clear();
        let (read, back) = file.read_at(buf, at).await;
        buf = back;
        if read? == 0 {
            break;
        }
        loader.push(&buf)?;
        at += buf.len() as u64;
        tokio::task::yield_now().await;
    }
    file.close().await?;
    loader.finish()
}

/// Reads only the meta of the snapshot in `dir`, if there is one.
pub fn read_meta(dir: &Path) -> io::Result<Option<Meta>> {
    let mut file = match std::fs::File::open(path(dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut head = Vec::new();
    loop {
        let have = head.len();
        head.resize(have + 4096, 0);
        let read = file.read(&mut head[have..])?;
        head.truncate(have + read);
        if let Some((meta, _)) = parse_head(&head)? {
            return Ok(Some(meta));
        }
        if read == 0 || head.len() > HEADER_BYTES + META_BYTES_MAX {
            return Err(damaged("it ends inside its header"));
        }
    }
}

/// openraft's snapshot data: the snapshot file a leader sends, read on the ring in pieces of at
/// most `IO_BYTES` as openraft asks for each chunk (`Config::snapshot_max_chunk_size`), so a
/// big snapshot never holds up the loop; or a snapshot received whole (`snapshot_receive`),
/// checked and written, that `install_snapshot` makes the state.
pub struct SnapshotFile {
    file: Option<Rc<File>>,
    len: u64,
    position: u64,
    reading: Option<PendingRead>,
    /// Test knob (`--damage-snapshot-sends`): reads left that get one bit flipped (reads
    /// that start the file are spared).
    damage: Option<Rc<Cell<u32>>>,
    pub path: PathBuf,
    /// A snapshot received from the leader, checked and written, not yet fsynced.
    pub received: Option<Received>,
}

type PendingRead = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

/// A received snapshot: its file (written, not yet fsynced), its meta, and the engine that
/// points into it as file `file_no`.
pub struct Received {
    pub path: PathBuf,
    pub file: File,
    pub meta: Meta,
    pub engine: Engine,
    pub file_no: u32,
}

impl SnapshotFile {
    /// The snapshot file at `path`, to send; `damage` is the test knob's counter.
    pub async fn open(path: &Path, damage: Option<Rc<Cell<u32>>>) -> io::Result<SnapshotFile> {
        let file = File::open(path).await?;
        // A stat, not a read: openraft asks for the end first, to know when it is done.
        let len = std::fs::metadata(path)?.len();
        Ok(SnapshotFile {
            file: Some(Rc::new(file)),
            len,
            position: 0,
            reading: None,
            damage: damage.filter(|left| left.get() > 0),
            path: path.to_path_buf(),
            received: None,
        })
    }

    /// A snapshot received in full, for `install_snapshot`.
    pub fn received(received: Received) -> SnapshotFile {
        SnapshotFile {
            path: received.path.clone(),
            received: Some(received),
            ..SnapshotFile::empty()
        }
    }

    /// Nothing yet: what openraft's `begin_receiving_snapshot` gets (kvsd does not receive
    /// through it; openraft's storage suite puts a sent snapshot in its place).
    pub fn empty() -> SnapshotFile {
        SnapshotFile {
            file: None,
            len: 0,
            position: 0,
            reading: None,
            damage: None,
            path: PathBuf::new(),
            received: None,
        }
    }

    /// Up to `len` bytes of the file from `at` (empty at its end), on the ring.
    pub async fn read_at(&self, at: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.file.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "no snapshot file to read")
        })?;
        let (read, data) = file.read_at(Vec::with_capacity(len), at).await;
        read.map(|_| data)
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(file) = this.file.clone() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a received snapshot is not read through openraft",
            )));
        };
        if buf.remaining() == 0 || this.position >= this.len {
            return Poll::Ready(Ok(()));
        }
        let reading = this.reading.get_or_insert_with(|| {
            let want = buf.remaining().min(IO_BYTES);
            let at = this.position;
            Box::pin(async move { file.read_at(Vec::with_capacity(want), at).await })
        });
        let (result, mut data) = std::task::ready!(reading.as_mut().poll(cx));
        this.reading = None;
        let read = result?;
        data.truncate(read.min(buf.remaining()));
        if let Some(left) = this.damage.as_ref().filter(|left| left.get() > 0) {
            // Past the first chunk, so that the member has taken a chunk of this snapshot
            // before it finds the damage, and the sender must start over.
            if !data.is_empty() && this.position > 0 {
                let middle = data.len() / 2;
                data[middle] ^= 0x40;
                left.set(left.get() - 1);
                tracing::warn!(
                    offset = this.position + middle as u64,
                    "--damage-snapshot-sends: flipped a bit of the snapshot being sent"
                );
            }
        }
        buf.put_slice(&data);
        this.position += data.len() as u64;
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    /// kvsd receives snapshots itself (`snapshot_receive`), never through openraft's writer.
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kvsd receives snapshots in raft::snapshot_receive, not through openraft's writer",
        )))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let target = match position {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start")
        })?;
        // A read in flight was for the old position; the ring finishes it, unseen.
        self.reading = None;
        self.position = target;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.position))
    }
}

/// fsync of a directory, on the ring.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let file = File::open(dir).await?;
    file.sync_all().await?;
    file.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(records: u64) -> (Meta, Vec<u8>) {
        let meta = Meta {
            last_log_id: Some(super::super::log_id(3, 9)),
            membership: StoredMembership::default(),
            records,
        };
        let mut bytes = encode_head(&meta);
        record::encode(&mut bytes, &Record::set(4, 3, b"a", b"one"));
        record::encode(&mut bytes, &Record::set(9, 3, b"b", b"two"));
        (meta, bytes)
    }

    fn load(bytes: &[u8], piece: usize) -> io::Result<(Meta, Engine)> {
        let mut loader = Loader::new(7);
        for chunk in bytes.chunks(piece) {
            loader.push(chunk)?;
        }
        loader.finish()
    }

    #[test]
    fn a_snapshot_round_trips_in_pieces_of_any_size() {
        let (meta, bytes) = sample(2);
        for piece in [1, 2, 7, 24, 100, bytes.len()] {
            let (loaded, engine) = load(&bytes, piece).unwrap();
            assert_eq!(loaded, meta);
            assert_eq!(engine.key_count(), 2);
            let at = engine.get(b"b").unwrap();
            assert_eq!(at.file, 7);
            assert_eq!(&bytes[at.value_offset as usize..][..3], b"two");
        }
    }

    /// Every single flipped bit, a torn end at every length, and a wrong count are refused.
    #[test]
    fn any_damage_is_refused() {
        let (_, bytes) = sample(2);
        for at in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut flipped = bytes.clone();
                flipped[at] ^= bit;
                assert!(load(&flipped, 5).is_err(), "a flip at byte {at} was taken");
            }
        }
        for len in 0..bytes.len() {
            assert!(load(&bytes[..len], 3).is_err(), "{len} bytes were taken");
        }
        let (_, wrong_count) = sample(3);
        assert!(load(&wrong_count, 64).is_err());
        let mut extra = bytes.clone();
        record::encode(&mut extra, &Record::del(10, 3, b"a"));
        assert!(load(&extra, 64).is_err(), "a DEL record was taken");
    }

    #[test]
    fn a_file_is_loaded_and_sent_as_written() {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (meta, bytes) = sample(2);
        std::fs::write(&path, &bytes).unwrap();
        crate::runtime::start(async {
            let (loaded, engine) = load_file(&path, 7).await.unwrap();
            assert_eq!(loaded, meta);
            assert_eq!(engine.key_count(), 2);
            let mut file = SnapshotFile::open(&path, None).await.unwrap();
            assert_eq!(
                file.seek(SeekFrom::End(0)).await.unwrap(),
                bytes.len() as u64
            );
            file.seek(SeekFrom::Start(5)).await.unwrap();
            let mut sent = Vec::new();
            file.read_to_end(&mut sent).await.unwrap();
            assert_eq!(sent, bytes[5..]);
            // The test knob damages the next read that does not start the file, once.
            let left = Rc::new(Cell::new(1));
            let mut file = SnapshotFile::open(&path, Some(left.clone())).await.unwrap();
            let mut sent = vec![0; 5];
            file.read_exact(&mut sent).await.unwrap();
            assert_eq!(left.get(), 1);
            file.read_to_end(&mut sent).await.unwrap();
            assert_ne!(sent, bytes);
            assert_eq!(left.get(), 0);
            assert!(load(&sent, 64).is_err());
        });
    }
}
