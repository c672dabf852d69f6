//! A reusable builder for one-line JSON objects, without per-event allocation.

use std::fmt::Display;
use std::io::Write;

/// One JSON object being written: `{"event":"…", …}`.
#[derive(Default)]
pub struct JsonLine {
    buf: Vec<u8>,
}

impl JsonLine {
    pub(crate) fn start(&mut self, event: &str) {
        self.buf.clear();
        self.buf.extend_from_slice(b"{\"event\":");
        write_str(&mut self.buf, event);
    }

    fn key(&mut self, k: &str) {
        self.buf.push(b',');
        write_str(&mut self.buf, k);
        self.buf.push(b':');
    }

    /// Adds a string field.
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        write_str(&mut self.buf, v);
        self
    }

    /// Adds a string field from anything displayable.
    pub fn display(&mut self, k: &str, v: &dyn Display) -> &mut Self {
        self.key(k);
        self.buf.push(b'"');
        let start = self.buf.len();
        let _ = write!(self.buf, "{v}");
        if self.buf[start..]
            .iter()
            .any(|&c| c == b'"' || c == b'\\' || c < 0x20)
        {
            let s = String::from_utf8_lossy(&self.buf[start..]).into_owned();
            self.buf.truncate(start - 1);
            write_str(&mut self.buf, &s);
        } else {
            self.buf.push(b'"');
        }
        self
    }

    /// Adds an unsigned number field.
    pub fn num(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self
    }

    /// Adds a field whose value is already JSON (e.g. a string literal from
    /// [`write_str`], kept to be reused).
    pub(crate) fn raw(&mut self, k: &str, json: &[u8]) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(json);
        self
    }

    /// Adds an object of string pairs.
    pub fn object<'a>(
        &mut self,
        k: &str,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> &mut Self {
        self.key(k);
        self.buf.push(b'{');
        for (i, (k, v)) in pairs.enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            write_str(&mut self.buf, k);
            self.buf.push(b':');
            write_str(&mut self.buf, v);
        }
        self.buf.push(b'}');
        self
    }

    pub(crate) fn finish(&mut self) {
        self.buf.push(b'}');
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Bytes that cannot appear raw inside a JSON string literal (and DEL, which we
/// escape too).
const fn escape_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t
}

static NEEDS_ESCAPE: [bool; 256] = escape_table();

/// Writes `s` as a JSON string literal.
pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let b = s.as_bytes();
    // Almost every string needs no escaping: copy it in one go.
    if !b.iter().any(|&c| NEEDS_ESCAPE[c as usize]) {
        buf.extend_from_slice(b);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            let _ = write!(buf, "\\u{c:04x}");
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&b[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path (nothing to escape) and the slow path agree with a JSON
    /// parser for every ASCII byte anywhere in a string.
    #[test]
    fn every_byte_anywhere_parses_back() {
        for c in 0u8..=127 {
            let ch = char::from(c);
            for s in [
                format!("{ch}"),
                format!("{ch}ab"),
                format!("ab{ch}"),
                format!("a{ch}b{ch}é"),
            ] {
                let mut buf = Vec::new();
                write_str(&mut buf, &s);
                let back: String = serde_json::from_slice(&buf).unwrap();
                assert_eq!(back, s);
            }
        }
    }

    #[test]
    fn escapes_parse_back() {
        let mut j = JsonLine::default();
        j.start("x");
        j.str("s", "a\"b\\c\n\u{1}\u{7f}é")
            .num("n", 5)
            .display("d", &"q\"");
        j.object("h", [("k", "v")].into_iter());
        j.finish();
        let v: serde_json::Value = serde_json::from_slice(j.as_bytes()).unwrap();
        assert_eq!(v["s"], "a\"b\\c\n\u{1}\u{7f}é");
        assert_eq!(v["d"], "q\"");
        assert_eq!(v["h"]["k"], "v");
    }
}
