//! How message bodies are shown.

use base64::Engine;
use std::fmt::Write;

/// `--body-format`: how bodies appear in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BodyFormat {
    /// Text when printable UTF-8, else a short hex preview (JSON: `body`, or
    /// `body_base64` when not UTF-8).
    #[default]
    Auto,
    /// Always as text, invalid UTF-8 replaced (JSON: `body`).
    Text,
    /// Hex of the whole body (JSON: `body_hex`).
    Hex,
    /// Base64 of the whole body (JSON: `body_base64`).
    Base64,
    /// Length only.
    None,
}

/// Longest body preview on a human line.
const PREVIEW: usize = 200;

/// True when `s` can be shown on one line without escaping.
fn printable(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\t')
}

/// True when the only control characters are line breaks and tabs: such text is
/// shown escaped (`a\nb`); anything else gets a hex preview.
fn mostly_text(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// Appends the human preview of `body` (nothing for an empty body).
pub fn human_body(out: &mut String, body: &[u8], fmt: BodyFormat) {
    if body.is_empty() || fmt == BodyFormat::None {
        return;
    }
    out.push(' ');
    match fmt {
        BodyFormat::Auto => match std::str::from_utf8(body) {
            Ok(s) if printable(s) => push_clipped(out, s),
            Ok(s) if mostly_text(s) => push_clipped(out, &s.escape_debug().to_string()),
            _ => {
                push_hex(out, &body[..body.len().min(32)]);
                if body.len() > 32 {
                    out.push('…');
                }
            }
        },
        BodyFormat::Text => push_clipped(
            out,
            &String::from_utf8_lossy(body).escape_debug().to_string(),
        ),
        BodyFormat::Hex => push_hex(out, body),
        BodyFormat::Base64 => out.push_str(&base64::engine::general_purpose::STANDARD.encode(body)),
        BodyFormat::None => {}
    }
}

fn push_clipped(out: &mut String, s: &str) {
    if s.chars().count() <= PREVIEW {
        out.push_str(s);
    } else {
        out.extend(s.chars().take(PREVIEW));
        out.push('…');
    }
}

/// Appends lower-case hex of `b`.
pub fn push_hex(out: &mut String, b: &[u8]) {
    out.reserve(b.len() * 2);
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(b: &[u8], f: BodyFormat) -> String {
        let mut s = String::new();
        human_body(&mut s, b, f);
        s
    }

    #[test]
    fn previews() {
        assert_eq!(show(b"abc", BodyFormat::Auto), " abc");
        assert_eq!(show(b"\x00\xff", BodyFormat::Auto), " 00ff");
        assert_eq!(show(b"a\nb", BodyFormat::Auto), " a\\nb");
        assert_eq!(show(b"abc", BodyFormat::None), "");
        assert_eq!(show(b"abc", BodyFormat::Base64), " YWJj");
        assert_eq!(show(&[7; 40], BodyFormat::Auto).chars().count(), 1 + 64 + 1);
    }
}
