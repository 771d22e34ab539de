//! Redis's glob patterns (KEYS, SCAN MATCH; `util.c`, `stringmatchlen`): `*`, `?`, `[abc]`,
//! `[^abc]`, `[a-z]`, and `\x` for a literal x. Byte-wise and case-sensitive.

/// Whether `text` matches `pattern`. Iterative with one backtrack point per `*`, so no pattern
/// costs more than length(pattern) x length(text) steps (Redis's recursive version can take
/// exponential time on patterns of many stars).
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern after it and the text it has taken.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                _ => {
                    if let Some(next) = match_one(pattern, p, text[t]) {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Matches one byte of text against the pattern element at `p` (not `*`); the index after the
/// element if it matches.
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = i < pattern.len() && pattern[i] == b'^';
            if negate {
                i += 1;
            }
            let mut matched = false;
            loop {
                if i >= pattern.len() {
                    // An unclosed class: Redis takes what it read as the class.
                    i -= 1;
                    break;
                }
                match pattern[i] {
                    b']' => break,
                    b'\\' if i + 1 < pattern.len() => {
                        matched |= pattern[i + 1] == byte;
                        i += 2;
                    }
                    low if i + 2 < pattern.len() && pattern[i + 1] == b'-' => {
                        let high = pattern[i + 2];
                        let (low, high) = if low <= high {
                            (low, high)
                        } else {
                            (high, low)
                        };
                        matched |= (low..=high).contains(&byte);
                        i += 3;
                    }
                    other => {
                        matched |= other == byte;
                        i += 1;
                    }
                }
            }
            (matched != negate).then_some(i + 1)
        }
        literal => (literal == byte).then_some(p + 1),
    }
}

/// The bytes every match must start with: the pattern up to its first special character.
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_redis_documents() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h*llo", "hllo", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:age", false),
            ("*a*b", "xxaxxbxb", true),
            ("a*", "b", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                matches(pattern.as_bytes(), text.as_bytes()),
                *expected,
                "{pattern} ~ {text}"
            );
        }
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a\\*"), b"a");
    }

    #[test]
    fn many_stars_stay_cheap() {
        let pattern = "a*".repeat(50) + "b";
        assert!(!matches(pattern.as_bytes(), "a".repeat(200).as_bytes()));
    }
}
