//! The options of Redis's string and expiry commands, read as Redis 7.0 reads them
//! (`t_string.c`: parseExtendedStringArgumentsOrReply, getExpireMillisecondsOrReply;
//! `expire.c`: parseExtendedExpireArgumentsOrReply, expireGenericCommand), so that what Redis
//! refuses is refused here with the same text, and in the same order. Pure: the connection
//! applies what they say to the engine (`server::connection::state::resp::keyspace`).

use bytes::Bytes;

use crate::engine::counter;
use crate::engine::ExpireCondition;

pub const SYNTAX: &str = "ERR syntax error";
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Which command's options: SET takes NX, XX, GET and KEEPTTL; GETEX takes PERSIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringCommand {
    Set,
    GetEx,
}

/// How an expiry is given: seconds or milliseconds, from now or since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireKind {
    Ex,
    Px,
    ExAt,
    PxAt,
}

impl ExpireKind {
    fn seconds(self) -> bool {
        matches!(self, ExpireKind::Ex | ExpireKind::ExAt)
    }

    fn relative(self) -> bool {
        matches!(self, ExpireKind::Ex | ExpireKind::Px)
    }
}

/// SET's and GETEX's options, as given; the expiry's number is read later (`expire_at_ms`),
/// as Redis reads it only once every option parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringOptions {
    pub nx: bool,
    pub xx: bool,
    pub get: bool,
    pub keep_ttl: bool,
    pub persist: bool,
    pub expire: Option<(ExpireKind, Bytes)>,
}

/// Reads the options after the key (GETEX) or the value (SET). A repeated option is allowed
/// (the last expiry wins), as in Redis; two that exclude each other are a syntax error.
pub fn string_options(
    args: &[Bytes],
    command: StringCommand,
) -> Result<StringOptions, &'static str> {
    let first = match command {
        StringCommand::Set => 3,
        StringCommand::GetEx => 2,
    };
    let set = command == StringCommand::Set;
    let mut options = StringOptions::default();
    let mut i = first;
    while i < args.len() {
        let option = args[i].to_ascii_uppercase();
        let next = args.get(i + 1);
        // An expiry of this kind may follow no other kind of expiry, KEEPTTL or PERSIST.
        let expiry_allowed = |kind: ExpireKind, options: &StringOptions| {
            !options.keep_ttl
                && !options.persist
                && options.expire.as_ref().is_none_or(|(k, _)| *k == kind)
                && next.is_some()
        };
        let kind = match &option[..] {
            b"EX" => Some(ExpireKind::Ex),
            b"PX" => Some(ExpireKind::Px),
            b"EXAT" => Some(ExpireKind::ExAt),
            b"PXAT" => Some(ExpireKind::PxAt),
            _ => None,
        };
        match (&option[..], kind) {
            (b"NX", _) if set && !options.xx => options.nx = true,
            (b"XX", _) if set && !options.nx => options.xx = true,
            (b"GET", _) if set => options.get = true,
            (b"KEEPTTL", _) if set && options.expire.is_none() => options.keep_ttl = true,
            (b"PERSIST", _) if !set && options.expire.is_none() => options.persist = true,
            (_, Some(kind)) if expiry_allowed(kind, &options) => {
                options.expire = Some((kind, next.expect("checked").clone()));
                i += 1;
            }
            _ => return Err(SYNTAX),
        }
        i += 1;
    }
    Ok(options)
}

/// The unix time in ms an expiry names, seen from `now_ms`, or Redis's error: the number must
/// be an integer above 0, and the time must fit a signed 64-bit count of ms. `command` names
/// the command in the error, lower case.
pub fn expire_at_ms(
    kind: ExpireKind,
    number: &[u8],
    now_ms: u64,
    command: &str,
) -> Result<u64, String> {
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    let number = counter::parse(number).ok_or_else(|| NOT_AN_INTEGER.to_string())?;
    if number <= 0 || (kind.seconds() && number > i64::MAX / 1000) {
        return Err(invalid());
    }
    let mut ms = if kind.seconds() {
        number * 1000
    } else {
        number
    };
    if kind.relative() {
        ms = ms.checked_add(now_ms as i64).ok_or_else(invalid)?;
    }
    Ok(ms as u64)
}

/// EXPIRE's and its kin's NX, XX, GT and LT (after the key and the time).
pub fn expire_condition(args: &[Bytes]) -> Result<ExpireCondition, String> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in args.get(3..).unwrap_or_default() {
        match &option.to_ascii_uppercase()[..] {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                let option = String::from_utf8_lossy(option);
                return Err(format!("ERR Unsupported option {option}"));
            }
        }
    }
    ExpireCondition::from_flags(nx, xx, gt, lt).map_err(|error| format!("ERR {error}"))
}

/// The unix time in ms of EXPIRE's (and its kin's) `number`, which may be negative or past
/// (a time not after now deletes the key). An overflow is Redis's "invalid expire time" error.
pub fn expire_command_at_ms(
    number: &[u8],
    seconds: bool,
    absolute: bool,
    now_ms: u64,
    command: &str,
) -> Result<i64, String> {
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    let number = counter::parse(number).ok_or_else(|| NOT_AN_INTEGER.to_string())?;
    let ms = match seconds {
        true => number.checked_mul(1000).ok_or_else(invalid)?,
        false => number,
    };
    let base = if absolute { 0 } else { now_ms as i64 };
    ms.checked_add(base).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    fn set(words: &[&str]) -> Result<StringOptions, &'static str> {
        let mut all = vec!["SET", "k", "v"];
        all.extend_from_slice(words);
        string_options(&args(&all), StringCommand::Set)
    }

    #[test]
    fn set_options_are_read_as_redis_reads_them() {
        assert_eq!(set(&[]), Ok(StringOptions::default()));
        let options = set(&["nx", "GET", "ex", "10", "EX", "20"]).unwrap();
        assert!(options.nx && options.get && !options.xx);
        assert_eq!(
            options.expire,
            Some((ExpireKind::Ex, Bytes::from_static(b"20")))
        );
        assert!(set(&["NX", "NX"]).unwrap().nx);
        assert!(set(&["KEEPTTL", "KEEPTTL"]).unwrap().keep_ttl);
        for bad in [
            &["NX", "XX"][..],
            &["XX", "NX"],
            &["EX", "1", "PX", "1"],
            &["KEEPTTL", "EX", "1"],
            &["EX", "1", "KEEPTTL"],
            &["EX"],
            &["PERSIST"],
            &["BOGUS"],
        ] {
            assert_eq!(set(bad), Err(SYNTAX), "{bad:?}");
        }
        // The number is not read while parsing: a bad one with a syntax error after it is
        // a syntax error.
        assert_eq!(set(&["EX", "x", "FOO"]), Err(SYNTAX));
        let getex = |words: &[&str]| {
            let mut all = vec!["GETEX", "k"];
            all.extend_from_slice(words);
            string_options(&args(&all), StringCommand::GetEx)
        };
        assert!(getex(&["PERSIST"]).unwrap().persist);
        assert_eq!(getex(&["PERSIST", "EX", "1"]), Err(SYNTAX));
        assert_eq!(getex(&["NX"]), Err(SYNTAX));
        assert_eq!(getex(&["KEEPTTL"]), Err(SYNTAX));
    }

    #[test]
    fn expiry_times_and_their_errors() {
        let at = |kind, n: &str| expire_at_ms(kind, n.as_bytes(), 1_000, "set");
        assert_eq!(at(ExpireKind::Ex, "2"), Ok(3_000));
        assert_eq!(at(ExpireKind::Px, "2"), Ok(1_002));
        assert_eq!(at(ExpireKind::ExAt, "2"), Ok(2_000));
        assert_eq!(at(ExpireKind::PxAt, "2"), Ok(2));
        assert_eq!(at(ExpireKind::Ex, "x"), Err(NOT_AN_INTEGER.to_string()));
        let invalid = Err("ERR invalid expire time in 'set' command".to_string());
        assert_eq!(at(ExpireKind::Ex, "0"), invalid);
        assert_eq!(at(ExpireKind::PxAt, "-1"), invalid);
        assert_eq!(at(ExpireKind::Ex, "9223372036854776"), invalid);
        assert_eq!(at(ExpireKind::Px, "9223372036854775807"), invalid);
        assert_eq!(
            at(ExpireKind::PxAt, "9223372036854775807"),
            Ok(i64::MAX as u64)
        );
    }

    #[test]
    fn expire_options_and_times() {
        let condition = |words: &[&str]| {
            let mut all = vec!["EXPIRE", "k", "10"];
            all.extend_from_slice(words);
            expire_condition(&args(&all))
        };
        assert_eq!(condition(&[]), Ok(ExpireCondition::Always));
        assert_eq!(condition(&["nx"]), Ok(ExpireCondition::NoExpiry));
        assert_eq!(
            condition(&["XX", "LT"]),
            Ok(ExpireCondition::EarlierWithExpiry)
        );
        assert_eq!(condition(&["XX", "GT"]), Ok(ExpireCondition::Later));
        assert!(condition(&["NX", "GT"]).unwrap_err().contains("NX and XX"));
        assert!(condition(&["GT", "LT"]).unwrap_err().contains("GT and LT"));
        assert_eq!(
            condition(&["FOO"]),
            Err("ERR Unsupported option FOO".to_string())
        );
        let at = |n: &str, seconds, absolute| {
            expire_command_at_ms(n.as_bytes(), seconds, absolute, 5_000, "expire")
        };
        assert_eq!(at("1", true, false), Ok(6_000));
        assert_eq!(at("0", true, false), Ok(5_000));
        assert_eq!(at("-5", false, false), Ok(4_995));
        assert_eq!(at("-4", true, true), Ok(-4_000));
        assert_eq!(at("6", true, true), Ok(6_000));
        assert!(at("9223372036854775807", true, false).is_err());
        assert!(at("9223372036854775807", false, false).is_err());
    }
}
