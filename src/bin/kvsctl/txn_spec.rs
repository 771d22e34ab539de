//! `kvsctl txn`'s input: compares, an empty line, the writes if they all hold, an empty line,
//! the writes if not (as etcdctl txn reads them). Words are split as a POSIX shell splits them.

use bytes::Bytes;
use kvs::protocol::ext::{Compare, CompareOp, Expiry, Operand, Txn, TxnWrite};

use crate::output::parse_duration_ms;

pub fn parse(text: &[u8]) -> Result<Txn, String> {
    let mut txn = Txn::default();
    let mut section = 0;
    for (number, line) in text.split(|byte| *byte == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let at = |message: String| format!("txn line {}: {message}", number + 1);
        let words = shlex::bytes::split(line)
            .ok_or_else(|| at("unbalanced quotes or a trailing backslash".to_string()))?;
        if words.is_empty() {
            // A blank line ends a section; a comment line does not.
            if line.trim_ascii().is_empty() {
                section += 1;
            }
            continue;
        }
        match section {
            0 => txn.compares.push(compare(&words).map_err(at)?),
            1 => txn.success.push(write(&words).map_err(at)?),
            2 => txn.failure.push(write(&words).map_err(at)?),
            _ => {
                return Err(at(
                    "a txn has three sections: compares, success writes, failure writes"
                        .to_string(),
                ))
            }
        }
    }
    Ok(txn)
}

fn text(word: &[u8]) -> String {
    String::from_utf8_lossy(word).into_owned()
}

fn compare(words: &[Vec<u8>]) -> Result<Compare, String> {
    let key = |at: usize| {
        words
            .get(at)
            .map(|key| Bytes::copy_from_slice(key))
            .ok_or_else(|| "a compare names a key".to_string())
    };
    let op = |word: Option<&Vec<u8>>| match word.map(|w| w.as_slice()) {
        Some(b"=") | Some(b"==") => Ok(CompareOp::Eq),
        Some(b"!=") => Ok(CompareOp::Ne),
        Some(b"<") => Ok(CompareOp::Lt),
        Some(b">") => Ok(CompareOp::Gt),
        other => Err(format!(
            "'{}' is not a comparison: use = != < >",
            other.map(text).unwrap_or_default()
        )),
    };
    let kind = text(&words[0]).to_lowercase();
    let compare = match kind.as_str() {
        "seq" if words.len() == 4 => Compare {
            key: key(1)?,
            op: op(words.get(2))?,
            operand: Operand::Seq(
                text(&words[3])
                    .parse()
                    .map_err(|_| format!("'{}' is not a seq", text(&words[3])))?,
            ),
        },
        "value" if words.len() == 4 => Compare {
            key: key(1)?,
            op: op(words.get(2))?,
            operand: Operand::Value(Bytes::copy_from_slice(&words[3])),
        },
        "exists" | "missing" if words.len() == 2 => Compare {
            key: key(1)?,
            op: CompareOp::Eq,
            operand: Operand::Exists(kind == "exists"),
        },
        _ => {
            return Err(
                "a compare is: seq KEY OP N | value KEY OP VALUE | exists KEY | missing KEY"
                    .to_string(),
            )
        }
    };
    Ok(compare)
}

fn write(words: &[Vec<u8>]) -> Result<TxnWrite, String> {
    let kind = text(&words[0]).to_lowercase();
    let key = || Bytes::copy_from_slice(&words[1]);
    let duration = |word: &[u8]| parse_duration_ms(&text(word)).map(Expiry::InMs);
    let write = match (kind.as_str(), words.len()) {
        ("set" | "put", 3) => TxnWrite::Set {
            key: key(),
            value: Bytes::copy_from_slice(&words[2]),
            expiry: None,
        },
        ("set" | "put", 5) if words[3] == b"--ttl" => TxnWrite::Set {
            key: key(),
            value: Bytes::copy_from_slice(&words[2]),
            expiry: Some(duration(&words[4])?),
        },
        ("del", 2) => TxnWrite::Del { key: key() },
        ("expire", 3) => TxnWrite::Expire {
            key: key(),
            expiry: Some(duration(&words[2])?),
        },
        ("persist", 2) => TxnWrite::Expire {
            key: key(),
            expiry: None,
        },
        _ => {
            return Err(
                "a write is: set KEY VALUE [--ttl DURATION] | del KEY | expire KEY DURATION | persist KEY"
                    .to_string(),
            )
        }
    };
    Ok(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_sections_as_etcdctl_reads_them() {
        let txn = parse(
            b"seq lock = 0\nvalue cfg != \"a b\"\n\nset lock me --ttl 30s\ndel old\n\nset tries 1\n",
        )
        .unwrap();
        assert_eq!(txn.compares.len(), 2);
        assert_eq!(txn.compares[1].operand, Operand::Value(Bytes::from("a b")));
        assert_eq!(
            txn.success[0],
            TxnWrite::Set {
                key: Bytes::from("lock"),
                value: Bytes::from("me"),
                expiry: Some(Expiry::InMs(30_000))
            }
        );
        assert_eq!(txn.failure.len(), 1);
        // No compares: the success writes always run.
        let txn = parse(b"\nset a 1\n").unwrap();
        assert!(txn.compares.is_empty());
        assert_eq!(txn.success.len(), 1);
        assert!(parse(b"seq k ~ 1\n").unwrap_err().contains("line 1"));
        assert!(parse(b"exists k\n\nfrob k\n")
            .unwrap_err()
            .contains("line 3"));
        assert!(parse(b"\n\n\n\nset a 1\n").is_err());
    }
}
