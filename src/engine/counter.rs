//! Redis's integer rules for INCR/INCRBY/DECR/DECRBY: the value must be the decimal form of a
//! 64-bit signed integer, exactly as Redis's `string2ll` reads it (no sign but a leading '-',
//! no leading zeros, no spaces, at most 20 characters), and the sum must not overflow. The
//! error texts are Redis's, without its "ERR " prefix (the RESP port adds it).

pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";
pub const OVERFLOW: &str = "increment or decrement would overflow";

/// The integer `bytes` holds, by Redis's rules.
pub fn parse(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        // -9223372036854775808 is the one magnitude past i64::MAX that fits.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// `current` (None: the key does not exist, 0) plus `delta`, or Redis's error text.
pub fn add(current: Option<&[u8]>, delta: i64) -> Result<i64, &'static str> {
    let current = match current {
        Some(bytes) => parse(bytes).ok_or(NOT_AN_INTEGER)?,
        None => 0,
    };
    current.checked_add(delta).ok_or(OVERFLOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse(b"0"), Some(0));
        assert_eq!(parse(b"42"), Some(42));
        assert_eq!(parse(b"-7"), Some(-7));
        assert_eq!(parse(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1.5",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
            b"abc",
            b"0x10",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn sums_and_their_errors() {
        assert_eq!(add(None, 5), Ok(5));
        assert_eq!(add(Some(b"10"), -15), Ok(-5));
        assert_eq!(add(Some(b"x"), 1), Err(NOT_AN_INTEGER));
        assert_eq!(add(Some(b"9223372036854775807"), 1), Err(OVERFLOW));
        assert_eq!(add(Some(b"-9223372036854775808"), -1), Err(OVERFLOW));
    }
}
