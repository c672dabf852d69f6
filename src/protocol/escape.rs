//! Percent-escaping of header keys and values (docs/PROTOCOL.md §1.2).
//!
//! Only `%`, `:`, `;` and leading/trailing whitespace are escaped, so any string
//! without them is written exactly as the original implementations wrote it.

use std::borrow::Cow;

/// True when `s` would be written unchanged by [`escape_into`].
#[inline]
fn is_plain(s: &str) -> bool {
    let b = s.as_bytes();
    if let (Some(first), Some(last)) = (b.first(), b.last())
        && (first.is_ascii_whitespace() || last.is_ascii_whitespace())
    {
        return false;
    }
    !b.iter().any(|&c| c == b'%' || c == b':' || c == b';')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `s` to `out`, percent-escaping what the wire format cannot carry.
pub fn escape_into(s: &str, out: &mut Vec<u8>) {
    if is_plain(s) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let b = s.as_bytes();
    let lead = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    let trail_start = if lead == b.len() {
        b.len()
    } else {
        b.len()
            - b.iter()
                .rev()
                .take_while(|c| c.is_ascii_whitespace())
                .count()
    };
    for (i, &c) in b.iter().enumerate() {
        let edge_space = i < lead || i >= trail_start;
        if c == b'%' || c == b':' || c == b';' || edge_space {
            out.extend_from_slice(&[b'%', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        } else {
            out.push(c);
        }
    }
}

#[inline]
fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes valid `%XX` sequences; a lone or malformed `%` stays as it is. If the
/// decoded bytes are not UTF-8 the text is returned undecoded.
pub fn unescape(s: &str) -> Cow<'_, str> {
    if !s.as_bytes().contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut v = Vec::new();
        escape_into(s, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn plain_strings_are_untouched() {
        assert_eq!(esc("hello world"), "hello world");
        assert_eq!(esc("你好"), "你好");
        assert_eq!(esc(""), "");
    }

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(esc("a:b;c%d"), "a%3Ab%3Bc%25d");
        assert_eq!(esc(" x "), "%20x%20");
        assert_eq!(esc("  "), "%20%20");
        assert_eq!(esc("\tx"), "%09x");
    }

    #[test]
    fn unescape_is_lenient() {
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz"), "%zz");
        assert_eq!(unescape("a%3Ab"), "a:b");
        assert_eq!(unescape("%ff"), "%ff");
        assert_eq!(unescape("%4"), "%4");
    }

    #[test]
    fn round_trip() {
        for s in ["a:b", " lead", "trail ", "%%", "x;y", "ü: ;%"] {
            assert_eq!(unescape(&esc(s)), s);
        }
    }
}
