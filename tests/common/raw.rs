//! A kvs client assembled from `docs/protocol.md` alone: frames packed and unpacked by hand as
//! little-endian bytes over a plain `std::net::TcpStream`. It shares no code with
//! `kvs::protocol` on purpose, so that the scenario tests hold the server to the written
//! contract rather than to its own codec.
//!
//! Frame, both directions:
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 4    | `len` u32: bytes after this field       |
//! | 4      | 1    | `kind`: op code or status code          |
//! | 5      | 1    | `flags`                                 |
//! | 6      | 8    | `id` u64, echoed in the response        |
//! | 14     | rest | body                                    |

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const LEN_BYTES: usize = 4;
/// `len` counts kind + flags + id + body, so it is never below this.
pub const LEN_MIN: u32 = 10;
pub const HEADER_BYTES: usize = LEN_BYTES + LEN_MIN as usize;

// Request op codes.
pub const GET: u8 = 0x01;
pub const SET: u8 = 0x02;
pub const DEL: u8 = 0x03;
pub const KEYS: u8 = 0x04;
pub const PING: u8 = 0x05;
pub const STATS: u8 = 0x06;
/// AUTH: the body is the secret (`--auth-file`); OK with an empty body when it matches.
pub const AUTH: u8 = 0x07;

// Response status codes.
pub const OK: u8 = 0x00;
pub const NOT_FOUND: u8 = 0x01;
pub const NOT_LEADER: u8 = 0x02;
pub const ERROR: u8 = 0x03;

/// GET request flag: the body starts with `min_seq` u64.
pub const GET_MIN_SEQ: u8 = 0x01;
/// KEYS request flag: the body is `plen` u32, prefix, `start_after`.
pub const KEYS_START_AFTER: u8 = 0x01;
/// KEYS response flag: more keys follow, ask again from the last one.
pub const KEYS_MORE: u8 = 0x01;

/// A server that stops answering fails the test after this instead of hanging it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest reply this client accepts (the `max_frame` ceiling, 64 MiB + 128 KiB).
pub const REPLY_LEN_MAX: u32 = 64 * 1024 * 1024 + 128 * 1024;

/// One frame, packed.
pub fn frame(kind: u8, flags: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(LEN_MIN as usize + body.len()).expect("frame length fits a u32");
    let mut bytes = Vec::with_capacity(LEN_BYTES + len as usize);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&id.to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// SET body: `klen` u32, key, value.
pub fn set_body(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + key.len() + value.len());
    body.extend_from_slice(&(key.len() as u32).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(value);
    body
}

/// GET body with flag `GET_MIN_SEQ`: `min_seq` u64, key.
pub fn min_seq_body(min_seq: u64, key: &[u8]) -> Vec<u8> {
    let mut body = min_seq.to_le_bytes().to_vec();
    body.extend_from_slice(key);
    body
}

/// KEYS body with flag `KEYS_START_AFTER`: `plen` u32, prefix, `start_after`.
pub fn keys_after_body(prefix: &[u8], start_after: &[u8]) -> Vec<u8> {
    let mut body = (prefix.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(prefix);
    body.extend_from_slice(start_after);
    body
}

/// An id for the `n`th request that uses all eight bytes, so an id cut to fewer bytes shows.
pub fn spread_id(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u8,
    pub flags: u8,
    pub id: u64,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = if self.body.len() > 64 {
            format!(
                "{:?}.. ({} bytes)",
                String::from_utf8_lossy(&self.body[..64]),
                self.body.len()
            )
        } else {
            format!("{:?}", String::from_utf8_lossy(&self.body))
        };
        write!(
            f,
            "Reply {{ status: {:#04x}, flags: {:#04x}, id: {:#x}, body: {body} }}",
            self.status, self.flags, self.id
        )
    }
}

impl Reply {
    /// The `seq` of an OK to SET or DEL.
    #[track_caller]
    pub fn seq(&self) -> u64 {
        assert_eq!(self.status, OK, "expected OK with a seq, got {self:?}");
        assert_eq!(self.flags, 0, "{self:?}");
        let bytes: [u8; 8] = self.body[..]
            .try_into()
            .unwrap_or_else(|_| panic!("a seq is 8 bytes, got {self:?}"));
        u64::from_le_bytes(bytes)
    }

    /// Asserts this is an ERROR for request `id` with a message for a person.
    #[track_caller]
    pub fn assert_error(&self, id: u64) {
        assert_eq!(self.status, ERROR, "expected ERROR, got {self:?}");
        assert_eq!(self.id, id, "ERROR must carry the request's id: {self:?}");
        let message = std::str::from_utf8(&self.body)
            .unwrap_or_else(|_| panic!("an ERROR body is UTF-8: {self:?}"));
        assert!(!message.trim().is_empty(), "an ERROR says what was wrong");
    }

    #[track_caller]
    pub fn assert_not_found(&self, id: u64) {
        assert_eq!(self.status, NOT_FOUND, "expected NOT_FOUND, got {self:?}");
        assert_eq!(self.id, id, "{self:?}");
        assert!(
            self.body.is_empty(),
            "NOT_FOUND has an empty body: {self:?}"
        );
    }

    /// Asserts an OK whose body is `body`.
    #[track_caller]
    pub fn assert_ok(&self, id: u64, body: &[u8]) {
        assert_eq!(self.status, OK, "expected OK, got {self:?}");
        assert_eq!(self.id, id, "{self:?}");
        assert_eq!(self.flags, 0, "{self:?}");
        assert!(self.body == body, "body differs: {self:?}");
    }
}

/// Reads one frame. `Err` when the connection ends (EOF, reset) or times out.
pub fn read_reply(reader: &mut impl Read) -> io::Result<Reply> {
    let mut header = [0u8; HEADER_BYTES];
    reader.read_exact(&mut header[..LEN_BYTES])?;
    let len = u32::from_le_bytes(header[..LEN_BYTES].try_into().unwrap());
    assert!(
        (LEN_MIN..=REPLY_LEN_MAX).contains(&len),
        "the server sent a frame with len {len}"
    );
    reader.read_exact(&mut header[LEN_BYTES..])?;
    let mut body = vec![0u8; (len - LEN_MIN) as usize];
    reader.read_exact(&mut body)?;
    Ok(Reply {
        status: header[4],
        flags: header[5],
        id: u64::from_le_bytes(header[6..14].try_into().unwrap()),
        body,
    })
}

/// One client connection. Methods panic on I/O errors: the tests want a server that answers.
pub struct Conn {
    pub stream: TcpStream,
    next_id: u64,
}

impl Conn {
    pub fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, next_id: 1 }
    }

    /// A fresh id, never 0 and using all eight bytes.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        spread_id(self.next_id)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to kvsd");
    }

    pub fn reply(&mut self) -> Reply {
        read_reply(&mut self.stream).expect("read a reply from kvsd")
    }

    /// Sends one request and reads its reply, which must carry the same id.
    #[track_caller]
    pub fn call(&mut self, kind: u8, flags: u8, id: u64, body: &[u8]) -> Reply {
        self.send(&frame(kind, flags, id, body));
        let reply = self.reply();
        assert_eq!(
            reply.id, id,
            "the reply must echo the request id: {reply:?}"
        );
        reply
    }

    #[track_caller]
    pub fn get(&mut self, key: &[u8]) -> Reply {
        let id = self.id();
        self.call(GET, 0, id, key)
    }

    /// The value of `key`, `None` if NOT_FOUND; panics on anything else.
    #[track_caller]
    pub fn value(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let reply = self.get(key);
        match reply.status {
            OK => Some(reply.body),
            NOT_FOUND => {
                assert!(reply.body.is_empty(), "{reply:?}");
                None
            }
            _ => panic!("GET {:?}: {reply:?}", String::from_utf8_lossy(key)),
        }
    }

    /// SETs and returns the seq.
    #[track_caller]
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> u64 {
        let id = self.id();
        self.call(SET, 0, id, &set_body(key, value)).seq()
    }

    #[track_caller]
    pub fn del(&mut self, key: &[u8]) -> Reply {
        let id = self.id();
        self.call(DEL, 0, id, key)
    }

    #[track_caller]
    pub fn ping(&mut self, body: &[u8]) {
        let id = self.id();
        self.call(PING, 0, id, body).assert_ok(id, body);
    }

    #[track_caller]
    pub fn stats(&mut self) -> BTreeMap<String, String> {
        let id = self.id();
        let reply = self.call(STATS, 0, id, b"");
        assert_eq!(reply.status, OK, "{reply:?}");
        parse_stats(&reply.body)
    }

    /// Every key starting with `prefix`, following KEYS pages; also returns the page count.
    #[track_caller]
    pub fn keys(&mut self, prefix: &[u8], max_frame: u32) -> (Vec<Vec<u8>>, usize) {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut pages = 0;
        loop {
            let id = self.id();
            let reply = match keys.last() {
                None => self.call(KEYS, 0, id, prefix),
                Some(last) => self.call(KEYS, KEYS_START_AFTER, id, &keys_after_body(prefix, last)),
            };
            assert_eq!(reply.status, OK, "{reply:?}");
            assert_eq!(
                reply.flags & !KEYS_MORE,
                0,
                "unknown response flags: {reply:?}"
            );
            assert!(
                LEN_MIN as usize + reply.body.len() <= max_frame as usize,
                "a KEYS reply of {} body bytes exceeds max_frame {max_frame}",
                reply.body.len()
            );
            let page = parse_keys(&reply.body);
            pages += 1;
            let more = reply.flags & KEYS_MORE != 0;
            assert!(
                !more || !page.is_empty(),
                "a KEYS page flagged 'more' must carry a key to continue from"
            );
            keys.extend(page);
            if !more {
                return (keys, pages);
            }
            assert!(pages < 100_000, "KEYS paging does not end");
        }
    }

    /// Reads until the server closes the connection; panics if it sends anything more.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
        assert!(
            rest.is_empty(),
            "nothing may follow the ERROR before the close, got {} bytes",
            rest.len()
        );
    }
}

/// STATS body: `name:value\n` lines.
#[track_caller]
pub fn parse_stats(body: &[u8]) -> BTreeMap<String, String> {
    let text = std::str::from_utf8(body).expect("STATS is UTF-8");
    assert!(
        text.ends_with('\n'),
        "every STATS line ends with \\n: {text:?}"
    );
    text.lines()
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("STATS line without ':': {line:?}"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// KEYS body: `count` u32, then per key `klen` u32 and the key; nothing after.
#[track_caller]
pub fn parse_keys(body: &[u8]) -> Vec<Vec<u8>> {
    let u32_at = |at: usize| -> u32 {
        let bytes = body
            .get(at..at + 4)
            .unwrap_or_else(|| panic!("KEYS body ends inside a u32 at {at}"));
        u32::from_le_bytes(bytes.try_into().unwrap())
    };
    let count = u32_at(0) as usize;
    let mut at = 4;
    let mut keys = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let klen = u32_at(at) as usize;
        at += 4;
        let key = body
            .get(at..at + klen)
            .unwrap_or_else(|| panic!("KEYS body ends inside a key at {at}"));
        keys.push(key.to_vec());
        at += klen;
    }
    assert_eq!(at, body.len(), "bytes left after {count} KEYS entries");
    keys
}

/// A figure from /proc/<pid>/status in KiB, e.g. `VmRSS` or `VmPeak`.
pub fn proc_status_kib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}
