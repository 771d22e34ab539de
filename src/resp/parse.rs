//! Bytes to commands: RESP arrays of bulk strings (what every client library sends) and inline
//! commands (a line of words, what a person types into telnet), as Redis reads them
//! (`networking.c`, `processMultibulkBuffer` and `processInlineBuffer`).
//!
//! The parser is pure and never allocates from a length it has not bounded: an array count is
//! checked against `array_len_max` and a bulk length against `bulk_bytes_max` before anything
//! is reserved, and a command is taken only once all of it is in the buffer, which may hold at
//! most `command_bytes_max` of it. A protocol error is answered with Redis's text, and the
//! connection is closed after the reply, as Redis does.

use std::ops::Range;

use smallvec::SmallVec;

/// Where a command's arguments are: inline for the short commands that make up most traffic.
pub type Args = SmallVec<[Range<usize>; 4]>;

/// The longest line (an inline command, or an array or bulk header) Redis reads before it
/// calls the client broken (`PROTO_INLINE_MAX_SIZE`).
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// What one command may be; the connection sets them from `limits` and `--max-frame-bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    pub array_len_max: usize,
    pub bulk_bytes_max: usize,
    /// Every byte of one command, headers included.
    pub command_bytes_max: usize,
}

/// A command whose bytes are all in the buffer: where its arguments are, and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub args: Args,
    pub consumed: usize,
}

/// The client broke the protocol: Redis's reply text (after `-ERR `); the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn error<T>(text: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(text.into()))
}

/// The next command in `buf`: `Ok(None)` if it is not all there yet. A command of no
/// arguments (an empty line, `*0`) is `Some` with no args: Redis skips it without a reply.
pub fn parse(buf: &[u8], limits: ParseLimits) -> Result<Option<Parsed>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// The line starting at `at` without its `\r\n`; `None` while the `\r\n` has not come.
fn line(buf: &[u8], at: usize) -> Option<Range<usize>> {
    let cr = buf[at..].iter().position(|&b| b == b'\r')? + at;
    // Redis looks for the '\r' and then takes the byte after it for the '\n' unchecked.
    (cr + 1 < buf.len()).then_some(at..cr)
}

/// Redis's `string2ll`: an optional '-', digits, no leading zeros, no '+', fits in i64.
pub fn integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 20 || (digits[0] == b'0' && text.len() > 1) {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

fn parse_array(buf: &[u8], limits: ParseLimits) -> Result<Option<Parsed>, ProtocolError> {
    let Some(header) = line(buf, 0) else {
        if buf.len() > INLINE_BYTES_MAX {
            return error("too big mbulk count string");
        }
        return Ok(None);
    };
    let count = match integer(&buf[1..header.end]) {
        Some(count) if count <= i64::from(i32::MAX) => count,
        _ => return error("invalid multibulk length"),
    };
    let mut at = header.end + 2;
    if count <= 0 {
        return Ok(Some(Parsed {
            args: Args::new(),
            consumed: at,
        }));
    }
    // kvs bounds what Redis leaves to memory: the count, then the bytes of the whole command.
    if count as u64 > limits.array_len_max as u64 {
        return error("invalid multibulk length");
    }
    let count = count as usize;
    let mut args = Args::with_capacity(count.min(1024));
    while args.len() < count {
        if at >= buf.len() {
            return Ok(None);
        }
        let Some(header) = line(buf, at) else {
            if buf.len() - at > INLINE_BYTES_MAX {
                return error("too big bulk count string");
            }
            return Ok(None);
        };
        if buf[at] != b'$' {
            return error(format!("expected '$', got '{}'", buf[at] as char));
        }
        let len = match integer(&buf[at + 1..header.end]) {
            Some(len) if len >= 0 && len as u64 <= limits.bulk_bytes_max as u64 => len as usize,
            _ => return error("invalid bulk length"),
        };
        let start = header.end + 2;
        let end = start + len;
        if end + 2 > limits.command_bytes_max {
            return error(format!(
                "the command is over this server's limit of {} bytes",
                limits.command_bytes_max
            ));
        }
        if end + 2 > buf.len() {
            return Ok(None);
        }
        args.push(start..end);
        // Redis skips the two bytes after a bulk string without looking at them.
        at = end + 2;
    }
    Ok(Some(Parsed { args, consumed: at }))
}

fn parse_inline(buf: &[u8], limits: ParseLimits) -> Result<Option<Parsed>, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_BYTES_MAX.min(limits.command_bytes_max) {
            return error("too big inline request");
        }
        return Ok(None);
    };
    let end = match newline > 0 && buf[newline - 1] == b'\r' {
        true => newline - 1,
        false => newline,
    };
    let args = split_args(&buf[..end])
        .ok_or_else(|| ProtocolError("unbalanced quotes in request".to_string()))?;
    if args.len() > limits.array_len_max {
        return error("invalid multibulk length");
    }
    Ok(Some(Parsed {
        args,
        consumed: newline + 1,
    }))
}

/// Splits an inline command into words. Quoted words (`"..."`, `'...'`) are taken whole but
/// kvs does not undo escapes inside them as Redis's `sdssplitargs` does: a quoted argument
/// with a backslash is refused as unbalanced rather than read differently.
fn split_args(line: &[u8]) -> Option<Args> {
    let mut args = Args::new();
    let mut at = 0;
    loop {
        while at < line.len() && line[at].is_ascii_whitespace() {
            at += 1;
        }
        if at == line.len() {
            return Some(args);
        }
        match line[at] {
            quote @ (b'"' | b'\'') => {
                let start = at + 1;
                let close = line[start..].iter().position(|&b| b == quote)? + start;
                if line[start..close].contains(&b'\\') {
                    return None;
                }
                // A closing quote must be followed by a space or the end (Redis's rule).
                if close + 1 < line.len() && !line[close + 1].is_ascii_whitespace() {
                    return None;
                }
                args.push(start..close);
                at = close + 1;
            }
            _ => {
                let start = at;
                while at < line.len() && !line[at].is_ascii_whitespace() {
                    at += 1;
                }
                args.push(start..at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        array_len_max: 16,
        bulk_bytes_max: 64,
        command_bytes_max: 256,
    };

    type Words = Option<(Vec<Vec<u8>>, usize)>;

    fn words(input: &[u8]) -> Result<Words, ProtocolError> {
        Ok(parse(input, LIMITS)?.map(|parsed| {
            let args = parsed
                .args
                .iter()
                .map(|r| input[r.clone()].to_vec())
                .collect();
            (args, parsed.consumed)
        }))
    }

    fn err(input: &[u8]) -> String {
        words(input).unwrap_err().to_string()
    }

    #[test]
    fn arrays_of_bulk_strings_and_inline_lines() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1";
        let (args, consumed) = words(input).unwrap().unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(consumed, input.len() - 2);
        let (args, consumed) = words(b"set  k 'a b'\r\nPING").unwrap().unwrap();
        assert_eq!(args, vec![b"set".to_vec(), b"k".to_vec(), b"a b".to_vec()]);
        assert_eq!(consumed, 14);
        assert_eq!(words(b"\r\n").unwrap().unwrap(), (vec![], 2));
        assert_eq!(words(b"*0\r\n").unwrap().unwrap(), (vec![], 4));
        assert_eq!(words(b"*-1\r\n").unwrap().unwrap(), (vec![], 5));
        // Binary-safe: a bulk string may hold \r\n.
        let (args, _) = words(b"*1\r\n$4\r\na\r\nb\r\n").unwrap().unwrap();
        assert_eq!(args, vec![b"a\r\nb".to_vec()]);
    }

    #[test]
    fn every_prefix_of_a_command_waits_for_more() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        for end in 0..input.len() {
            assert_eq!(words(&input[..end]).unwrap(), None, "{end}");
        }
        assert!(words(input).unwrap().is_some());
        for end in 0..5 {
            assert_eq!(words(&b"PING\n"[..end]).unwrap(), None);
        }
    }

    #[test]
    fn protocol_errors_read_as_redis_writes_them() {
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*17\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            err(b"*99999999999\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(b"*1\r\n+OK\r\n"),
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(err(b"*1\r\n$-1\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$65\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$+1\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            err(b"GET \"k\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        let mut big = b"*16\r\n".to_vec();
        for _ in 0..5 {
            big.extend(b"$60\r\n");
            big.extend([b'x'; 60]);
            big.extend(b"\r\n");
        }
        assert!(err(&big).contains("over this server's limit"));
        let mut long = vec![b'*'];
        long.extend(std::iter::repeat_n(b'1', INLINE_BYTES_MAX + 1));
        assert_eq!(err(&long), "Protocol error: too big mbulk count string");
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(integer(b"0"), Some(0));
        assert_eq!(integer(b"-12"), Some(-12));
        for bad in [&b""[..], b"-", b"01", b"+1", b"1 ", b"99999999999999999999"] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(&input, LIMITS);
        }

        #[test]
        fn encoded_commands_parse_back(
            args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20), 1..8)
        ) {
            let mut input = format!("*{}\r\n", args.len()).into_bytes();
            for arg in &args {
                input.extend(format!("${}\r\n", arg.len()).bytes());
                input.extend(arg);
                input.extend(b"\r\n");
            }
            let (parsed, consumed) = words(&input).unwrap().unwrap();
            proptest::prop_assert_eq!(parsed, args);
            proptest::prop_assert_eq!(consumed, input.len());
        }
    }
}
