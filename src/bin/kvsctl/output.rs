//! How kvsctl prints: lined-up figures, escaped bytes, durations, and `--json` objects (one per
//! line, for scripts).

use std::fmt;
use std::io::{self, Write};

use kvs::client::stats_lines;

/// One JSON object, built field by field. Bytes that are UTF-8 become a string; others are
/// given as `<name>_hex`, so no byte is ever lost or guessed.
#[derive(Default)]
pub struct Json {
    fields: Vec<String>,
}

impl Json {
    pub fn new() -> Json {
        Json::default()
    }

    fn field(mut self, name: &str, value: String) -> Json {
        self.fields.push(format!("{}:{value}", quote(name)));
        self
    }

    pub fn u64(self, name: &str, value: u64) -> Json {
        self.field(name, value.to_string())
    }

    pub fn i64(self, name: &str, value: i64) -> Json {
        self.field(name, value.to_string())
    }

    pub fn bool(self, name: &str, value: bool) -> Json {
        self.field(name, value.to_string())
    }

    pub fn null(self, name: &str) -> Json {
        self.field(name, "null".to_string())
    }

    pub fn str(self, name: &str, value: &str) -> Json {
        self.field(name, quote(value))
    }

    pub fn bytes(self, name: &str, value: &[u8]) -> Json {
        match std::str::from_utf8(value) {
            Ok(text) => self.str(name, text),
            Err(_) => {
                let hex: String = value.iter().map(|byte| format!("{byte:02x}")).collect();
                self.str(&format!("{name}_hex"), &hex)
            }
        }
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.fields.join(","))
    }
}

/// A JSON string literal.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Bytes for one line of text: printable ASCII as is, the rest escaped (`\n`, `\xff`).
pub fn escaped(bytes: &[u8]) -> Vec<u8> {
    bytes.escape_ascii().to_string().into_bytes()
}

pub fn ok_seq(out: &mut dyn Write, json: bool, seq: u64) -> io::Result<()> {
    if json {
        writeln!(out, "{}", Json::new().bool("ok", true).u64("seq", seq))
    } else {
        writeln!(out, "OK (seq {seq})")
    }
}

/// STATS' `name:value` lines as `name  value`, the values lined up; with `json`, one object.
pub fn stats(out: &mut dyn Write, json: bool, stats: &str) -> io::Result<()> {
    if json {
        let mut object = Json::new();
        for (name, value) in stats_lines(stats) {
            object = match value.parse::<u64>() {
                Ok(number) => object.u64(name, number),
                Err(_) => object.str(name, value),
            };
        }
        return writeln!(out, "{object}");
    }
    out.write_all(format_stats(stats).as_bytes())
}

pub fn format_stats(stats: &str) -> String {
    let width = stats_lines(stats)
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    let mut formatted = String::with_capacity(stats.len() * 2);
    for line in stats.lines() {
        match line.split_once(':') {
            Some((name, value)) => {
                formatted.push_str(&format!("{name:<width$}  {value}\n"));
            }
            None if line.trim().is_empty() => {}
            None => {
                formatted.push_str(line);
                formatted.push('\n');
            }
        }
    }
    formatted
}

/// "500ms", "30s", "10m", "2h", "1d", or a bare number of seconds, in ms.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: use e.g. 500ms, 30s, 10m, 2h, 1d"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "'{unit}' is not a unit of time: use ms, s, m, h or d"
            ))
        }
    };
    let ms = number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("'{text}' is too long a duration"))?;
    if ms == 0 {
        return Err("a duration must be more than 0".to_string());
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30"), Ok(30_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("5 weeks").is_err());
        assert!(parse_duration_ms("-5s").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn json_keeps_every_byte() {
        let object = Json::new()
            .bytes("key", b"a\"b\n")
            .bytes("value", &[0xff, 0x00])
            .u64("seq", 3)
            .null("ttl");
        assert_eq!(
            object.to_string(),
            r#"{"key":"a\"b\n","value_hex":"ff00","seq":3,"ttl":null}"#
        );
    }

    #[test]
    fn stats_are_lined_up() {
        let stats = "version:0.1.0\nrole:leader\nconnections_total:3\n\nodd line\n";
        assert_eq!(
            format_stats(stats),
            "version            0.1.0\n\
             role               leader\n\
             connections_total  3\n\
             odd line\n"
        );
        assert_eq!(format_stats(""), "");
    }
}
