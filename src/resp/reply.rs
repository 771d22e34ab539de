//! Replies to bytes, RESP2 and RESP3 (`docs/resp.md`). Where the two differ — a null, a map,
//! a set, a verbatim string, a double — the caller says which version the client speaks.

use bytes::{BufMut, BytesMut};

/// The protocol version a connection speaks: 2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Resp2,
    Resp3,
}

fn header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    put_decimal(out, n as u64);
    out.put_slice(b"\r\n");
}

/// `n` in decimal, without an allocation (every reply has a length or a count).
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// `+text`: text must hold no `\r` or `\n` (callers pass fixed words).
pub fn simple(out: &mut BytesMut, text: &str) {
    out.put_u8(b'+');
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

pub fn ok(out: &mut BytesMut) {
    out.put_slice(b"+OK\r\n");
}

/// `-text`: the text starts with its code (`ERR`, `WRONGTYPE`, ...). Newlines in it become
/// spaces, as Redis does, so a message can never break the framing.
pub fn error(out: &mut BytesMut, text: &str) {
    out.put_u8(b'-');
    for byte in text.bytes() {
        out.put_u8(match byte {
            b'\r' | b'\n' => b' ',
            byte => byte,
        });
    }
    out.put_slice(b"\r\n");
}

pub fn integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    if n < 0 {
        out.put_u8(b'-');
    }
    put_decimal(out, n.unsigned_abs());
    out.put_slice(b"\r\n");
}

pub fn bulk(out: &mut BytesMut, value: &[u8]) {
    header(out, b'$', value.len());
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// A missing value: `$-1` in RESP2, `_` in RESP3.
pub fn null(out: &mut BytesMut, version: Version) {
    out.put_slice(match version {
        Version::Resp2 => b"$-1\r\n",
        Version::Resp3 => b"_\r\n",
    });
}

/// A missing array (`*-1`), as WAIT-less commands that time out answer in RESP2.
pub fn null_array(out: &mut BytesMut, version: Version) {
    out.put_slice(match version {
        Version::Resp2 => b"*-1\r\n",
        Version::Resp3 => b"_\r\n",
    });
}

pub fn array(out: &mut BytesMut, len: usize) {
    header(out, b'*', len);
}

/// A map of `len` pairs: `%len` in RESP3, an array of 2 x `len` in RESP2.
pub fn map(out: &mut BytesMut, len: usize, version: Version) {
    match version {
        Version::Resp2 => header(out, b'*', len * 2),
        Version::Resp3 => header(out, b'%', len),
    }
}

/// A set: `~len` in RESP3, an array in RESP2.
pub fn set(out: &mut BytesMut, len: usize, version: Version) {
    match version {
        Version::Resp2 => header(out, b'*', len),
        Version::Resp3 => header(out, b'~', len),
    }
}

/// Text for a person (INFO, CLIENT INFO): a verbatim string `=len\r\ntxt:...` in RESP3, a
/// bulk string in RESP2.
pub fn verbatim(out: &mut BytesMut, text: &str, version: Version) {
    match version {
        Version::Resp2 => bulk(out, text.as_bytes()),
        Version::Resp3 => {
            header(out, b'=', text.len() + 4);
            out.put_slice(b"txt:");
            out.put_slice(text.as_bytes());
            out.put_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> String {
        let mut out = BytesMut::new();
        f(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn replies_in_both_versions() {
        assert_eq!(encoded(ok), "+OK\r\n");
        assert_eq!(encoded(|o| error(o, "ERR a\r\nb")), "-ERR a  b\r\n");
        assert_eq!(encoded(|o| integer(o, -3)), ":-3\r\n");
        assert_eq!(encoded(|o| integer(o, 0)), ":0\r\n");
        assert_eq!(
            encoded(|o| integer(o, i64::MIN)),
            format!(":{}\r\n", i64::MIN)
        );
        assert_eq!(
            encoded(|o| bulk(o, &[b'x'; 1234])).len(),
            1 + 4 + 2 + 1234 + 2
        );
        assert_eq!(encoded(|o| bulk(o, b"hi")), "$2\r\nhi\r\n");
        assert_eq!(encoded(|o| null(o, Version::Resp2)), "$-1\r\n");
        assert_eq!(encoded(|o| null(o, Version::Resp3)), "_\r\n");
        assert_eq!(encoded(|o| map(o, 2, Version::Resp2)), "*4\r\n");
        assert_eq!(encoded(|o| map(o, 2, Version::Resp3)), "%2\r\n");
        assert_eq!(
            encoded(|o| verbatim(o, "a:1", Version::Resp3)),
            "=7\r\ntxt:a:1\r\n"
        );
        assert_eq!(
            encoded(|o| verbatim(o, "a:1", Version::Resp2)),
            "$3\r\na:1\r\n"
        );
    }
}
