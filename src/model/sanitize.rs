//! Making odd but real JSON readable without changing what is forwarded.
//!
//! Some upstreams (those whose strings are UTF-16 inside) split a character
//! across two events and so send a lone surrogate escape (`"\ud83d"`), and a
//! body may hold bytes that are not UTF-8. serde_json refuses both when it
//! decodes a string. The caller still gets the upstream's own bytes; only
//! the copy the sidecar reads is repaired, with U+FFFD in place of what
//! cannot be a character.

use std::borrow::Cow;

/// `text` with every lone surrogate escape replaced by `\ufffd` (the same
/// length, so byte offsets stay valid); `None` when there was none.
pub fn without_lone_surrogates(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut fixes = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            at += 1;
            continue;
        }
        if bytes.get(at + 1) != Some(&b'u') {
            // Any other escape is two bytes: `\\` must not start a `\u`.
            at += 2;
            continue;
        }
        let Some(unit) = hex_unit(bytes, at + 2) else {
            at += 2;
            continue;
        };
        match unit {
            0xD800..=0xDBFF => {
                let low = (bytes.get(at + 6..at + 8) == Some(b"\\u"))
                    .then(|| hex_unit(bytes, at + 8))
                    .flatten();
                if low.is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) {
                    at += 12;
                } else {
                    fixes.push(at);
                    at += 6;
                }
            }
            0xDC00..=0xDFFF => {
                fixes.push(at);
                at += 6;
            }
            _ => at += 6,
        }
    }
    if fixes.is_empty() {
        return None;
    }
    let mut fixed = text.as_bytes().to_vec();
    for at in fixes {
        fixed[at..at + 6].copy_from_slice(b"\\ufffd");
    }
    // Only ASCII was replaced with ASCII: still UTF-8.
    String::from_utf8(fixed).ok()
}

fn hex_unit(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// `bytes` as text a JSON parser accepts: invalid UTF-8 and lone
/// surrogate escapes replaced by U+FFFD.
pub fn readable(bytes: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(bytes);
    match without_lone_surrogates(&text) {
        Some(fixed) => Cow::Owned(fixed),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_replaced_and_pairs_kept() {
        let text = r#"{"a":"smile \ud83d","b":"\ude00 x","c":"\ud83d\ude00","d":"\\ud800"}"#;
        let fixed = without_lone_surrogates(text).unwrap();
        assert_eq!(fixed.len(), text.len());
        let value: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(value["a"], "smile \u{fffd}");
        assert_eq!(value["b"], "\u{fffd} x");
        assert_eq!(value["c"], "😀");
        assert_eq!(value["d"], "\\ud800");
        assert_eq!(without_lone_surrogates(r#"{"a":"\u00e9"}"#), None);
    }

    #[test]
    fn invalid_utf8_becomes_readable() {
        let value: serde_json::Value =
            serde_json::from_str(&readable(b"{\"a\":\"\xff\"}")).unwrap();
        assert_eq!(value["a"], "\u{fffd}");
    }
}
