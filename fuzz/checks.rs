//! The properties the fuzz targets check, in one file shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly) and `tests/fuzz_regression.rs`, which replays every kept
//! corpus and crash input through them on stable `cargo test`.
//!
//! Each check takes arbitrary bytes and panics when a property fails. Beyond "no panic":
//! - whatever decodes re-encodes to exactly the bytes it came from;
//! - declared lengths are honoured: a decoder takes exactly what a length says, waits when the
//!   bytes are not all there, and refuses impossible lengths;
//! - decoders never allocate more than their input justifies (`CountingAlloc` measures it);
//! - a log record with any one bit flipped, or cut anywhere, is refused (the CRC covers the
//!   length);
//! - recovery of a damaged segment keeps exactly the records before the damage, changes
//!   nothing when it refuses, and leaves a log that recovers again to the same records.
//!
//! Valid CRCs are a wall for a mutating fuzzer, so the record, replication and recovery checks
//! also build well-formed records from the input bytes and damage them in ways the input picks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kvs::limits::{FRAME_BYTES_MAX_DEFAULT, KEY_BYTES_MAX_DEFAULT, VALUE_BYTES_MAX_DEFAULT};
use kvs::protocol::frame::{self, FrameError, Header, BODY_OFFSET, LEN_MIN};
use kvs::protocol::request::{op, Request};
use kvs::protocol::response::Response;
use kvs::protocol::{RequestError, RequestLimits};
use kvs::replication::cursor::{self, Stop};
use kvs::replication::messages::{self, Hello, Welcome};
use kvs::wal::record::{self, DecodeError, Op, Record};
use kvs::wal::recovery::{self, RecoveryError};
use kvs::wal::segment::{self, SegmentHeader};
use kvs::wal::LogId;

// ---------------------------------------------------------------------------------------------
// Allocation bound

/// A global allocator that remembers, per thread, the largest single allocation asked for, so a
/// check can tell whether a decoder sized something from a length it did not verify.
pub struct CountingAlloc;

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(bytes: usize) {
    // `try_with`: the thread-local may be gone while a thread exits; then nothing is measured.
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(largest.get().max(bytes)));
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let outer = LARGEST_ALLOCATION.with(|largest| largest.replace(0));
    let result = f();
    let inner = LARGEST_ALLOCATION.with(|largest| largest.replace(outer.max(largest.get())));
    (result, inner)
}

/// What a decoder of `input_bytes` may allocate at once: a small constant, plus a few bytes of
/// bookkeeping per input byte (a KEYS body of n bytes holds at most n/4 keys, 32 bytes each).
pub fn allocation_allowed(input_bytes: usize) -> usize {
    4096 + 16 * input_bytes
}

/// Runs `decode` on an input of `input_bytes` and panics if it allocated more than that
/// justifies, or if no `CountingAlloc` is installed (the check would then prove nothing).
pub fn bounded<T>(what: &str, input_bytes: usize, decode: impl FnOnce() -> T) -> T {
    assert_counting_allocator();
    let (result, largest) = largest_allocation(decode);
    assert!(
        largest <= allocation_allowed(input_bytes),
        "{what} allocated {largest} bytes at once for {input_bytes} bytes of input"
    );
    result
}

/// Panics unless the running binary's global allocator is `CountingAlloc` (found out once).
pub fn assert_counting_allocator() {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        let (_, largest) = largest_allocation(|| std::hint::black_box(vec![0u8; 100_000]));
        largest >= 100_000
    });
    assert!(
        installed,
        "the global allocator is not checks::CountingAlloc: allocation bounds are not measured"
    );
}

// ---------------------------------------------------------------------------------------------
// Little helpers

/// Reads the fuzz input as a stream of fields; past the end every field is zero.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn u8(&mut self) -> u8 {
        let byte = self.data.first().copied().unwrap_or(0);
        self.data = self.data.get(1..).unwrap_or(&[]);
        byte
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.iter_mut().for_each(|byte| *byte = self.u8());
        u64::from_le_bytes(bytes)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn frame_bytes(header: Header, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    frame::encode(&mut buf, header, &[body]);
    buf
}

/// Panics unless `decode` refuses `bytes` with any single bit flipped (every bit if the input is
/// small, else an even spread of 512 of them). Public so the regression test can show it catches
/// a decoder that ignores damage.
pub fn assert_every_flip_refused<T>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) {
    let bits = bytes.len() * 8;
    let step = (bits / 512).max(1);
    let mut damaged = bytes.to_vec();
    for bit in (0..bits).step_by(step) {
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(
            decode(&damaged).is_err(),
            "a record with bit {bit} of {bits} flipped was accepted: {damaged:02x?}"
        );
        damaged[bit / 8] ^= 1 << (bit % 8);
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

/// The frame decoder over a byte stream: as the server's connection reader uses it.
pub fn frame(data: &[u8]) {
    for frame_bytes_max in [LEN_MIN, 64, FRAME_BYTES_MAX_DEFAULT] {
        let whole = frame_stream(data, frame_bytes_max, &[usize::MAX]);
        // Bytes that arrive in pieces (cut where the input says) decode to the same frames.
        let pieces: Vec<usize> = data.iter().take(8).map(|b| 1 + *b as usize % 23).collect();
        if !pieces.is_empty() {
            assert_eq!(
                frame_stream(data, frame_bytes_max, &pieces),
                whole,
                "frames depend on how the bytes arrived"
            );
        }
    }
}

/// Decodes every frame of `data` fed in pieces of the given sizes (cycled); returns the frames
/// and how the stream ended.
fn frame_stream(
    data: &[u8],
    frame_bytes_max: u32,
    pieces: &[usize],
) -> (Vec<frame::Frame>, Option<FrameError>) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut frames = Vec::new();
    for piece in pieces.iter().cycle() {
        let next = fed + (*piece).min(data.len() - fed);
        buf.extend_from_slice(&data[fed..next]);
        fed = next;
        loop {
            let held = &data[consumed..fed];
            assert_eq!(&buf[..], held);
            let checked = frame::check(&buf, frame_bytes_max);
            let decoded = bounded("frame::decode", held.len(), || {
                frame::decode(&mut buf, frame_bytes_max)
            });
            let declared = (held.len() >= 4).then(|| u32_at(held, 0));
            match (checked, decoded) {
                (Ok(Some(total)), Ok(Some(decoded))) => {
                    let len = declared.expect("a whole frame has a length");
                    assert!((LEN_MIN..=frame_bytes_max).contains(&len));
                    assert_eq!(total, 4 + len as usize, "the frame is what its length says");
                    assert!(total <= held.len());
                    assert_eq!(decoded.body.len(), total - BODY_OFFSET);
                    assert_eq!(&buf[..], &held[total..], "exactly one frame was taken");
                    let again = frame_bytes(decoded.header, &decoded.body);
                    assert_eq!(&again[..], &held[..total], "frame round trip");
                    if let Ok(response) = Response::decode(decoded.clone()) {
                        let mut again = BytesMut::new();
                        response.encode(&mut again);
                        assert_eq!(&again[..], &held[..total], "response round trip");
                        let keys = bounded("Response::keys", total, || response.keys());
                        check_keys_body(&response.body, keys);
                        let _ = response.seq();
                    } else {
                        assert!(decoded.header.kind > 0x03, "a known status was refused");
                    }
                    consumed += total;
                    frames.push(decoded);
                }
                (Ok(None), Ok(None)) => {
                    if let Some(len) = declared {
                        assert!((LEN_MIN..=frame_bytes_max).contains(&len));
                        assert!(held.len() < 4 + len as usize, "a whole frame was not taken");
                    }
                    break;
                }
                (Err(checked), Err(decoded)) => {
                    assert_eq!(checked, decoded);
                    let len = declared.expect("an error needs a length");
                    match decoded {
                        FrameError::TooShort { len: said } => assert!(said == len && len < LEN_MIN),
                        FrameError::TooLong { len: said, max } => {
                            assert!(said == len && len > max && max == frame_bytes_max)
                        }
                    }
                    assert_eq!(&buf[..], held, "a refused frame consumed bytes");
                    assert!(!decoded.to_string().is_empty());
                    return (frames, Some(decoded));
                }
                (checked, decoded) => panic!("check {checked:?} and decode {decoded:?} disagree"),
            }
        }
        if fed == data.len() {
            return (frames, None);
        }
    }
    unreachable!("pieces is not empty")
}

/// A KEYS body that parses re-encodes to itself; one that does not is malformed somewhere.
fn check_keys_body(body: &[u8], keys: Option<Vec<Bytes>>) {
    if let Some(keys) = keys {
        let mut again = BytesMut::new();
        again.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        for key in &keys {
            kvs::protocol::request::put_key_entry(&mut again, key);
        }
        assert_eq!(&again[..], body, "KEYS body round trip");
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The request parser on a frame made of the input: byte 0 picks small limits, byte 1 is the
/// op, byte 2 the flags, the rest the body. Each input is also judged under the default limits.
pub fn request(data: &[u8]) {
    let mut input = Input::new(data);
    let limit_byte = input.u8();
    let header = Header {
        kind: input.u8(),
        flags: input.u8(),
        id: 0x0102_0304_0506_0708,
    };
    let body = Bytes::copy_from_slice(input.bytes(usize::MAX));
    let small = RequestLimits {
        key_bytes_max: 1 + u32::from(limit_byte & 0x0f),
        value_bytes_max: 4 * u32::from(limit_byte >> 4),
    };
    let default = RequestLimits {
        key_bytes_max: KEY_BYTES_MAX_DEFAULT,
        value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
    };
    for limits in [small, default] {
        check_request(header, &body, limits);
    }
}

fn check_request(header: Header, body: &Bytes, limits: RequestLimits) {
    let decoded = frame::Frame {
        header,
        body: body.clone(),
    };
    let original = frame_bytes(header, body);
    let result = bounded("Request::decode", original.len(), || {
        Request::decode(&decoded, limits)
    });
    let known_flags = match header.kind {
        op::GET | op::KEYS => 0x01,
        op::SET | op::DEL | op::PING | op::STATS | op::AUTH | op::COMPACT => 0,
        _ => {
            assert_eq!(result, Err(RequestError::UnknownOp { op: header.kind }));
            return;
        }
    };
    if header.flags & !known_flags != 0 {
        assert!(
            matches!(result, Err(RequestError::UnknownFlags { flags, .. })
                if flags == header.flags & !known_flags),
            "unknown flags not refused: {result:?}"
        );
        return;
    }
    let request = match result {
        Ok(request) => request,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert_eq!(request.name(), name_of(header.kind));
    if let Request::Get { key, .. } | Request::Set { key, .. } | Request::Del { key } = &request {
        assert!(!key.is_empty() && key.len() <= limits.key_bytes_max as usize);
    }
    if let Request::Set { value, .. } = &request {
        assert!(value.len() <= limits.value_bytes_max as usize);
    }
    assert_eq!(request.is_write(), matches!(header.kind, op::SET | op::DEL));
    let mut again = BytesMut::new();
    request.encode(header.id, &mut again);
    assert_eq!(&again[..], &original[..], "request round trip: {request:?}");
}

fn name_of(kind: u8) -> &'static str {
    match kind {
        op::GET => "GET",
        op::SET => "SET",
        op::DEL => "DEL",
        op::KEYS => "KEYS",
        op::PING => "PING",
        op::STATS => "STATS",
        op::AUTH => "AUTH",
        op::COMPACT => "COMPACT",
        _ => unreachable!("only known ops are named"),
    }
}

// ---------------------------------------------------------------------------------------------
// Log records

/// The record decoder on the raw input, on the input with its CRC made right (so the checks after
/// the CRC are reached), and on a record built from the input.
pub fn record(data: &[u8]) {
    check_record_bytes(data);

    if data.len() >= record::SEQ_OFFSET {
        let mut fixed = data.to_vec();
        let len = u32_at(&fixed, record::LEN_OFFSET) as usize;
        let end = (record::SEQ_OFFSET + len).min(fixed.len());
        let crc = crc_of(&fixed[..end]);
        fixed[record::CRC_OFFSET..record::SEQ_OFFSET].copy_from_slice(&crc.to_le_bytes());
        let result = check_record_bytes(&fixed);
        assert_ne!(
            result,
            Some(DecodeError::BadChecksum),
            "a right CRC was refused"
        );
    }

    let mut input = Input::new(data);
    let seq = input_seq(&mut input);
    let built = build_record(&mut input, seq);
    let (header, decoded) = record::decode(&built.bytes).expect("a built record decodes");
    assert_eq!(decoded, built.record(), "record round trip");
    assert_eq!(header.total_bytes, built.bytes.len());
    assert_eq!(check_record_bytes(&built.bytes), None);
}

/// The CRC a record with these bytes (length field, then the rest) must carry.
fn crc_of(record_bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record_bytes[record::LEN_OFFSET..record::CRC_OFFSET]);
    hasher.update(&record_bytes[record::SEQ_OFFSET..]);
    hasher.finalize()
}

/// Checks one decode of `bytes`; returns the error, if any.
fn check_record_bytes(bytes: &[u8]) -> Option<DecodeError> {
    let result = bounded("record::decode", bytes.len(), || record::decode(bytes));
    let (header, decoded) = match result {
        Ok(decoded) => decoded,
        Err(error) => {
            check_record_error(bytes, error);
            return Some(error);
        }
    };
    let len = u32_at(bytes, record::LEN_OFFSET);
    assert!((record::LEN_MIN..=record::LEN_MAX).contains(&len));
    assert_eq!(header.total_bytes, record::SEQ_OFFSET + len as usize);
    assert_eq!(
        header.total_bytes,
        record::encoded_bytes(decoded.key.len(), decoded.value.len())
    );
    assert_eq!(header.key_len as usize, decoded.key.len());
    assert_eq!(header.value_len as usize, decoded.value.len());
    assert_eq!(decoded.op.has_key(), !decoded.key.is_empty());
    assert!(matches!(decoded.op, Op::Set | Op::Membership | Op::Txn) || decoded.value.is_empty());
    assert!(matches!(decoded.op, Op::Set | Op::ExpireAt) || decoded.expires_at_ms == 0);
    if decoded.op == Op::Txn {
        assert!(record::txn_ops(decoded.value).all(|op| op.is_ok()));
    }
    let whole = &bytes[..header.total_bytes];
    let mut again = Vec::new();
    record::encode(&mut again, &decoded);
    assert_eq!(&again[..], whole, "record round trip");
    assert_eq!(record::decode_header(whole), Ok(header));
    check_damage_refused(whole);
    None
}

fn check_record_error(bytes: &[u8], error: DecodeError) {
    match error {
        DecodeError::Incomplete { have, need } => {
            assert_eq!(have, bytes.len());
            assert!(have < need);
            if have >= record::SEQ_OFFSET {
                assert_eq!(need, record::SEQ_OFFSET + u32_at(bytes, 0) as usize);
            }
        }
        DecodeError::BadLength { len } => {
            assert_eq!(len, u32_at(bytes, 0));
            assert!(!(record::LEN_MIN..=record::LEN_MAX).contains(&len));
        }
        DecodeError::BadChecksum
        | DecodeError::BadOp { .. }
        | DecodeError::BadKeyLength { .. }
        | DecodeError::BadShape { .. }
        | DecodeError::BadTxnOp { .. } => {}
    }
}

/// A valid record with any bit flipped, or cut short anywhere, is refused.
fn check_damage_refused(whole: &[u8]) {
    assert_every_flip_refused(whole, |bytes| record::decode(bytes).map(|_| ()));
    let step = (whole.len() / 64).max(1);
    for cut in (0..whole.len()).step_by(step) {
        assert!(
            matches!(
                record::decode(&whole[..cut]),
                Err(DecodeError::Incomplete { .. })
            ),
            "a record cut to {cut} of {} bytes was not incomplete",
            whole.len()
        );
    }
}

/// A record built from input fields, with its encoding.
struct Built {
    seq: u64,
    op: Op,
    key: Vec<u8>,
    value: Vec<u8>,
    bytes: Vec<u8>,
}

impl Built {
    fn record(&self) -> Record<'_> {
        Record {
            seq: self.seq,
            term: 0,
            op: self.op,
            expires_at_ms: 0,
            key: &self.key,
            value: &self.value,
        }
    }
}

fn input_seq(input: &mut Input<'_>) -> u64 {
    // Mostly small seqs, sometimes any u64 (seq u64::MAX must not overflow anything).
    match input.u8() {
        0xff => input.u64(),
        small => 1 + u64::from(small),
    }
}

/// One record from the input: a shape byte (op, key and value sizes), then key and value bytes.
fn build_record(input: &mut Input<'_>, seq: u64) -> Built {
    let shape = input.u8();
    let op = if shape & 0x80 != 0 { Op::Del } else { Op::Set };
    let key_len = 1 + usize::from(shape & 0x07);
    let value_len = if op == Op::Del {
        0
    } else {
        usize::from((shape >> 3) & 0x0f) * 3
    };
    let mut key = input.bytes(key_len).to_vec();
    key.resize(key_len, b'k');
    let mut value = input.bytes(value_len).to_vec();
    value.resize(value_len, b'v');
    let mut built = Built {
        seq,
        op,
        key,
        value,
        bytes: Vec::new(),
    };
    let mut bytes = Vec::new();
    record::encode(&mut bytes, &built.record());
    built.bytes = bytes;
    built
}

// ---------------------------------------------------------------------------------------------
// Replication messages

/// The replication messages (HELLO, WELCOME, RECORDS, ACK): frames cut from the raw input, and
/// a RECORDS frame of records built from the input and damaged where it says.
pub fn replication(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = bounded("frame::decode", data.len(), || {
        frame::decode(&mut buf, kvs::limits::REPLICATION_FRAME_BYTES_MAX)
    }) {
        check_replication_frame(&frame, data.first().copied().unwrap_or(0));
    }

    let mut input = Input::new(data);
    // Seqs stay below u64::MAX - 1, the largest durable seq the check below uses.
    let first_seq = input_seq(&mut input).min(u64::MAX - 16);
    let count = usize::from(input.u8() % 8);
    let damage = input.u16();
    let mut body = Vec::new();
    let mut seq = first_seq;
    for _ in 0..count {
        body.extend_from_slice(&build_record(&mut input, seq).bytes);
        seq = seq.wrapping_add(1);
    }
    let damaged = damage & 0x8000 != 0 && !body.is_empty();
    if damaged {
        let bit = usize::from(damage & 0x7fff) % (body.len() * 8);
        body[bit / 8] ^= 1 << (bit % 8);
    }
    let mut framed = BytesMut::new();
    messages::encode_records(&mut framed, seq, &body);
    let frame = frame::decode(&mut framed, kvs::limits::REPLICATION_FRAME_BYTES_MAX)
        .expect("a built frame is readable")
        .expect("a built frame is whole");
    let (taken, taken_bytes) = check_records_body(&frame.body, first_seq);
    if !damaged {
        assert_eq!(
            (taken, taken_bytes),
            (count as u64, body.len()),
            "valid records refused"
        );
    } else {
        assert!(taken < count as u64, "a damaged record was taken");
    }
}

fn check_replication_frame(frame: &frame::Frame, seed: u8) {
    let body = &frame.body;
    let flags = frame.header.flags;
    // Where a frame's flags byte sits: after len (4) and kind (1).
    const FLAGS_AT: usize = 5;
    match frame.header.kind {
        messages::op::HELLO => {
            match bounded("Hello::decode", body.len(), || Hello::decode(flags, body)) {
                Ok(hello) => {
                    let mut again = BytesMut::new();
                    hello.encode(&mut again);
                    assert_eq!(&again[BODY_OFFSET..], &body[..], "HELLO round trip");
                    assert_eq!(again[FLAGS_AT], flags, "HELLO flags round trip");
                    // The admission rules take any HELLO without panicking.
                    let ours = LogId([seed; 16]);
                    let _ = messages::admit(ours, u64::from(seed), &hello);
                    let _ = messages::admit(hello.log_id, hello.last_seq, &hello);
                    let _ = messages::same_history(&hello, Some(u32::from(seed)));
                    let _ = messages::same_history(&hello, None);
                }
                Err(error) => {
                    assert!(
                        flags & !messages::flag::RESYNC != 0
                            || body.len() < 28
                            || std::str::from_utf8(&body[28..]).is_err()
                    );
                    assert!(!error.to_string().is_empty());
                }
            }
        }
        messages::op::WELCOME => match Welcome::decode(flags, body) {
            Ok(welcome) => {
                let mut again = BytesMut::new();
                welcome.encode(&mut again);
                assert_eq!(&again[BODY_OFFSET..], &body[..], "WELCOME round trip");
                assert_eq!(again[FLAGS_AT], flags, "WELCOME flags round trip");
            }
            Err(_) => {
                let size = if flags & messages::flag::SNAPSHOT != 0 {
                    32
                } else {
                    24
                };
                assert!(
                    flags & !messages::flag::SNAPSHOT != 0 || body.len() != size,
                    "a WELCOME of the right size was refused"
                );
            }
        },
        messages::op::ACK => match messages::decode_ack(body) {
            Ok(seq) => {
                let mut again = BytesMut::new();
                messages::encode_ack(&mut again, seq);
                assert_eq!(&again[BODY_OFFSET..], &body[..], "ACK round trip");
            }
            Err(_) => assert_ne!(body.len(), 8),
        },
        messages::op::RECORDS => {
            let first_seq = body
                .get(record::SEQ_OFFSET..record::TERM_OFFSET)
                .map_or(1, |seq| {
                    u64::from_le_bytes(seq.try_into().expect("8 bytes"))
                });
            check_records_body(body, first_seq);
        }
        _ => {}
    }
}

/// Walks a RECORDS body as a follower does (each record whole and valid, seqs consecutive from
/// `first_seq`) and checks that the leader's cursor would have sent exactly those records, and
/// no more than a durable seq allows. Returns the records taken and their bytes.
fn check_records_body(body: &[u8], first_seq: u64) -> (u64, usize) {
    let mut at = 0;
    let mut seq = first_seq;
    while at < body.len() {
        match record::decode(&body[at..]) {
            Ok((header, _)) if header.seq == seq && seq != u64::MAX => {
                at += header.total_bytes;
                seq += 1;
            }
            _ => break,
        }
    }
    let taken = seq - first_seq;
    let durable_seq = u64::MAX - 1;
    let (bytes, count, stop) = cursor::sendable(body, first_seq, durable_seq);
    assert_eq!((bytes, count), (at, taken), "cursor and follower disagree");
    if at == body.len() {
        assert!(
            matches!(stop, Stop::EndOfChunk | Stop::NotDurable),
            "{stop:?}"
        );
    } else {
        assert!(!matches!(stop, Stop::EndOfChunk), "{stop:?}");
    }
    if taken > 0 {
        // With fewer records durable, the cursor stops at the last durable one.
        let durable_seq = first_seq + taken / 2;
        let (_, count, stop) = cursor::sendable(body, first_seq, durable_seq);
        assert_eq!(count, taken / 2 + 1);
        assert!(
            taken / 2 + 1 == taken || stop == Stop::NotDurable,
            "{stop:?}"
        );
    }
    (taken, at)
}

// ---------------------------------------------------------------------------------------------
// Recovery of a segment file

/// Recovery (`wal::recovery::recover`) of a data dir holding one segment of records built from
/// the input, damaged where the input says (a bit flip, a cut, bytes overwritten or inserted),
/// maybe followed by a zero-filled tail as a preallocated segment has.
pub fn recovery(data: &[u8]) {
    let mut input = Input::new(data);
    let options = input.u8();
    let repair = options & 0x01 != 0;
    let zero_tail = options & 0x02 != 0;
    let damage_kind = (options >> 2) % 5;
    let damage_at = usize::from(input.u16());
    let first_seq = 1 + u64::from(input.u8());
    let count = usize::from(input.u8() % 12);
    let log_id = LogId([0x5a; 16]);
    let header = SegmentHeader {
        nonce: 7,
        ..SegmentHeader::new(log_id, 1, first_seq)
    };
    let mut pristine = header.encode().to_vec();
    let mut records = Vec::new(); // (start, end, key)
    for index in 0..count {
        let built = build_record(&mut input, first_seq + index as u64);
        let start = pristine.len();
        pristine.extend_from_slice(&built.bytes);
        records.push((start, pristine.len(), built.key));
    }
    if zero_tail {
        pristine.resize(pristine.len() + 256, 0);
    }
    let mut damaged = pristine.clone();
    let at = damage_at % (pristine.len() + 1);
    match damage_kind {
        0 => {}
        1 if at < damaged.len() => damaged[at] ^= 1 << (input.u8() % 8),
        2 => damaged.truncate(at),
        3 => {
            let patch = input.bytes(8);
            let end = (at + patch.len()).min(damaged.len());
            damaged[at..end].copy_from_slice(&patch[..end - at]);
        }
        4 => {
            let garbage_len = 1 + usize::from(input.u8() % 16);
            let garbage = input.bytes(garbage_len).to_vec();
            damaged.splice(at..at, garbage);
        }
        _ => {}
    }
    check_recovery(&pristine, &damaged, &records, first_seq, repair);
}

/// Where `damaged` first differs from `pristine` (its length if it is a prefix of it).
fn first_difference(pristine: &[u8], damaged: &[u8]) -> Option<usize> {
    let common = pristine.len().min(damaged.len());
    match (0..common).find(|at| pristine[*at] != damaged[*at]) {
        Some(at) => Some(at),
        None if damaged.len() < pristine.len() => Some(damaged.len()),
        // Bytes added at the end: damage only if they are not zeros (a zero tail is clean).
        None if damaged[common..].iter().any(|byte| *byte != 0) => Some(common),
        None => None,
    }
}

fn check_recovery(
    pristine: &[u8],
    damaged: &[u8],
    records: &[(usize, usize, Vec<u8>)],
    first_seq: u64,
    repair: bool,
) {
    let damage = first_difference(pristine, damaged);
    // The records wholly before the damage; recovery must keep exactly these.
    let good = records
        .iter()
        .take_while(|(_, end, _)| damage.is_none_or(|damage| *end <= damage))
        .count();
    let good_end = records[..good]
        .last()
        .map_or(segment::HEADER_BYTES, |(_, end, _)| *end);
    // A record after the damage that is still intact in the file (maybe moved by inserted
    // bytes) makes the damage corruption, not a torn tail.
    let intact_after = damage.is_some_and(|damage| {
        records[good..].iter().any(|(start, end, _)| {
            let bytes = &pristine[*start..*end];
            damaged.len() >= bytes.len()
                && (damage + 1..=damaged.len() - bytes.len())
                    .any(|at| &damaged[at..at + bytes.len()] == bytes)
        })
    });

    let dir = scratch_dir();
    let path = segment::path(dir.path(), 1);
    std::fs::write(&path, damaged).expect("write the segment");
    let mut seen = Vec::new();
    let result = recovery::recover(
        dir.path(),
        repair,
        0,
        &Default::default(),
        |header, key, _, _| {
            seen.push((header.seq, key.to_vec()));
        },
    );
    let after = std::fs::read(&path).expect("read the segment back");
    let described = || format!("damage at {damage:?}, {good} good of {}", records.len());

    if damage.is_some_and(|damage| damage < segment::HEADER_BYTES) {
        assert!(
            matches!(result, Err(RecoveryError::Corrupt { offset: 0, .. })),
            "a damaged header was not refused: {result:?}, {}",
            described()
        );
        assert_eq!(after, damaged, "refusing changed the file");
        return;
    }
    let expected: Vec<(u64, Vec<u8>)> = records[..good]
        .iter()
        .enumerate()
        .map(|(index, (_, _, key))| (first_seq + index as u64, key.clone()))
        .collect();
    match result {
        Ok(recovered) => {
            assert!(
                repair || !intact_after,
                "damage with an intact record after it was taken for a torn tail: {}",
                described()
            );
            assert_eq!(seen, expected, "recovered records: {}", described());
            assert_eq!(recovered.records, good as u64);
            assert_eq!(recovered.last_seq, first_seq + good as u64 - 1);
            assert_eq!(recovered.log_id, LogId([0x5a; 16]));
            let info = recovered.segments.last().expect("a segment");
            assert_eq!(
                info.bytes,
                good_end as u64,
                "where appends go: {}",
                described()
            );
            assert_eq!(info.file_bytes, after.len() as u64);
            assert_eq!(
                &after[..good_end],
                &pristine[..good_end],
                "good records changed"
            );
            assert!(
                after[good_end..].iter().all(|byte| *byte == 0),
                "damage left behind: {}",
                described()
            );
            // The repaired log recovers again to the same records, with nothing to cut.
            let mut again = Vec::new();
            let second = recovery::recover(
                dir.path(),
                false,
                0,
                &Default::default(),
                |header, key, _, _| {
                    again.push((header.seq, key.to_vec()));
                },
            )
            .expect("a recovered log recovers again");
            assert_eq!(again, expected);
            assert_eq!(second.truncated_bytes, 0);
        }
        Err(RecoveryError::Corrupt { offset, .. }) => {
            assert!(!repair, "--repair-truncate refused: {}", described());
            assert_eq!(
                offset,
                good_end as u64,
                "corruption offset: {}",
                described()
            );
            assert_eq!(after, damaged, "refusing changed the file");
            assert!(
                intact_after || valid_record_after(damaged, good_end),
                "refused with no valid record after the damage: {}",
                described()
            );
            assert_eq!(seen, expected, "records before the damage are visited");
        }
        Err(error) => panic!("recovery failed: {error}"),
    }
}

/// Whether any offset after `from` holds a record that decodes (whatever its seq).
fn valid_record_after(buf: &[u8], from: usize) -> bool {
    (from + 1..buf.len()).any(|at| record::decode_header(&buf[at..]).is_ok())
}

/// A temp dir, in memory where the machine has one (the recovery target makes one per input).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("kvs-fuzz-");
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("make a temp dir")
}
