//! Incremental frame decoding from arbitrary byte slices.

use super::escape::unescape;
use super::header::Header;
use std::collections::HashMap;
use std::fmt;

/// Default `--max-body`: 64 MiB.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Header without `CL`.
    pub header: Header,
    /// Body bytes (`CL` of them).
    pub body: Vec<u8>,
}

impl Message {
    /// A message with the given header and body.
    pub fn new(header: Header, body: impl Into<Vec<u8>>) -> Self {
        Message {
            header,
            body: body.into(),
        }
    }
}

/// A protocol error: the peer that sent it is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The header bytes are not valid UTF-8.
    HeaderNotUtf8,
    /// The header has no `CL` key.
    NoCl,
    /// `CL` is not a non-negative decimal integer.
    ClNotNumber(String),
    /// A non-empty pair has no `:`.
    PairWithoutColon(String),
    /// A pair has an empty key.
    EmptyKey,
    /// The declared body is larger than the limit.
    BodyTooLarge {
        /// Declared body length (saturated at `u64::MAX`).
        len: u64,
        /// The limit in force.
        limit: usize,
    },
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_debug).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::HeaderNotUtf8 => f.write_str("protocol error: header is not UTF-8"),
            ProtocolError::NoCl => f.write_str("protocol error: header has no CL"),
            ProtocolError::ClNotNumber(v) => {
                write!(f, "protocol error: CL is not a number: \"{}\"", clip(v))
            }
            ProtocolError::PairWithoutColon(p) => {
                write!(f, "protocol error: pair without ':': \"{}\"", clip(p))
            }
            ProtocolError::EmptyKey => f.write_str("protocol error: header has an empty key"),
            // Saturated: the declared number is at or beyond what 64 bits count.
            ProtocolError::BodyTooLarge {
                len: u64::MAX,
                limit,
            } => write!(
                f,
                "protocol error: CL is too large to count (the limit is {limit} bytes)"
            ),
            ProtocolError::BodyTooLarge { len, limit } => write!(
                f,
                "protocol error: body of {len} bytes is larger than the limit ({limit} bytes)"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parses header text (without the length prefix) into a [`Header`] and the `CL`.
///
/// Lenient as docs/PROTOCOL.md §2.1 describes: empty pairs skipped, split at the first `:`,
/// whitespace trimmed, `%XX` decoded, last duplicate wins.
pub fn parse_header(raw: &[u8], max_body: usize) -> Result<(Header, usize), ProtocolError> {
    let text = std::str::from_utf8(raw).map_err(|_| ProtocolError::HeaderNotUtf8)?;
    let bytes = text.as_bytes();
    let mut header = Header::new();
    // Many pairs: index the keys, or resolving duplicates is quadratic (a 64 KiB
    // header of 11,000 distinct keys took 0.14 s to parse, stalling the loop). The
    // index is built only once a header passes 32 pairs, so small ones cost nothing.
    let mut index: Option<HashMap<String, usize>> = None;
    let mut cl: Option<&str> = None;
    let mut start = 0;
    // Byte searches: `;` and `:` are ASCII, so every cut is a char boundary.
    while start <= bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b';')
            .map_or(bytes.len(), |p| start + p);
        let pair = &text[start..end];
        start = end + 1;
        if pair.trim_ascii().is_empty() {
            continue;
        }
        let Some(colon) = pair.bytes().position(|b| b == b':') else {
            return Err(ProtocolError::PairWithoutColon(pair.to_string()));
        };
        let k = pair[..colon].trim_ascii();
        let v = pair[colon + 1..].trim_ascii();
        if k.is_empty() {
            return Err(ProtocolError::EmptyKey);
        }
        // `CL` may be percent-escaped; its value is checked as a number below.
        let k = unescape(k);
        if k == "CL" {
            cl = Some(v);
            continue;
        }
        let v = unescape(v);
        if index.is_none() && header.len() >= INDEX_ABOVE {
            index = Some(
                header
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.to_string(), i))
                    .collect(),
            );
        }
        match &mut index {
            None => header.set(&*k, &*v),
            Some(ix) => header.set_indexed(ix, &k, &v),
        }
    }
    let cl = cl.ok_or(ProtocolError::NoCl)?;
    let len = parse_cl(cl)?;
    if len > max_body as u64 {
        return Err(ProtocolError::BodyTooLarge {
            len,
            limit: max_body,
        });
    }
    Ok((header, len as usize))
}

/// Pairs a header may have before the parser indexes its keys.
const INDEX_ABOVE: usize = 32;

/// `CL`'s value as a number (saturated at `u64::MAX`): plain digits, percent-escaped
/// or not.
fn parse_cl(cl: &str) -> Result<u64, ProtocolError> {
    if !cl.is_empty() && cl.len() <= 19 && cl.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(cl.bytes().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
    }
    let cl_text = unescape(cl);
    if cl_text.is_empty() || !cl_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtocolError::ClNotNumber(cl_text.into_owned()));
    }
    Ok(cl_text.parse::<u64>().unwrap_or(u64::MAX))
}

/// Incremental decoder: feed it bytes as they arrive, in any split.
///
/// It keeps only an incomplete frame's bytes between calls, so an idle connection
/// costs no buffer. A declared `CL` over the limit is refused as soon as the header
/// is complete, before any of the body is buffered.
#[derive(Debug)]
pub struct Decoder {
    max_body: usize,
    /// Bytes of an incomplete length prefix or header.
    pending: Vec<u8>,
    /// A frame whose header is parsed and whose body is still arriving.
    /// Boxed: only a frame mid-body needs it, and every idle connection keeps a
    /// decoder, so the decoder itself stays a few words.
    partial: Option<Box<(Header, usize, Vec<u8>)>>,
    /// The protocol error that ended this stream: all later input gets it again.
    failed: Option<ProtocolError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_BODY)
    }
}

/// How much of a body is reserved up front; the rest grows as bytes arrive, so a
/// peer that declares a large `CL` and stalls does not pin the whole amount.
const BODY_PREALLOC: usize = 1 << 20;

impl Decoder {
    /// A decoder refusing bodies larger than `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Decoder {
            max_body,
            pending: Vec::new(),
            partial: None,
            failed: None,
        }
    }

    /// True when no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.partial.is_none()
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.partial.as_ref().map_or(0, |p| p.2.len())
    }

    /// When the bytes of the unfinished frame read as a line of text (UTF-8
    /// without control characters but tabs and line ends, and a newline), the
    /// words that say so, quoting their start: the peer most likely does not
    /// speak the protocol (netcat, a browser). A real frame starts with two
    /// length bytes, which for any header under 8 KiB hold a control character.
    pub fn text_hint(&self) -> Option<String> {
        const SHOW: usize = 32;
        if self.partial.is_some() || !self.pending.contains(&b'\n') {
            return None;
        }
        let text = match std::str::from_utf8(&self.pending) {
            Ok(t) => t,
            // Cut inside a character at the end: the rest is still text.
            Err(e) if e.error_len().is_none() => {
                std::str::from_utf8(&self.pending[..e.valid_up_to()]).ok()?
            }
            Err(_) => return None,
        };
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
        {
            return None;
        }
        let mut quoted: String = text
            .chars()
            .take(SHOW)
            .flat_map(char::escape_debug)
            .collect();
        if text.chars().count() > SHOW {
            quoted.push('…');
        }
        Some(format!(
            "\"{quoted}\" looks like plain text, not sockmod framing (a 2-byte header length first)"
        ))
    }

    /// Feeds `input`, pushing every completed frame onto `out` in order.
    ///
    /// On a protocol error the frames completed before it are still in `out`, and
    /// the decoder refuses all further input.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Message>) -> Result<(), ProtocolError> {
        self.feed_some(input, out, usize::MAX).map(|_| ())
    }

    /// Like [`Decoder::feed`], but stops once `limit` frames were pushed; returns
    /// how many bytes of `input` it took (all of them unless it stopped early).
    ///
    /// Feeding the rest later gives the same frames, so a reader can hand frames on
    /// in small batches while they are still in the cache.
    pub fn feed_some(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<Message>,
        limit: usize,
    ) -> Result<usize, ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let total = input.len();
        let mut pushed = 0usize;
        while !input.is_empty() && pushed < limit {
            if let Some(p) = &mut self.partial {
                let (_, need, body) = &mut **p;
                let take = (*need - body.len()).min(input.len());
                body.extend_from_slice(&input[..take]);
                input = &input[take..];
                if body.len() == *need
                    && let Some(p) = self.partial.take()
                {
                    let (header, _, body) = *p;
                    out.push(Message { header, body });
                    pushed += 1;
                }
                continue;
            }
            if self.pending.is_empty() {
                // Fast path: parse complete frames straight from the input.
                match frame_len(input) {
                    Some(hlen) if input.len() >= 2 + hlen => {
                        let (header, cl) = self.parse(&input[2..2 + hlen])?;
                        let rest = &input[2 + hlen..];
                        if rest.len() >= cl {
                            out.push(Message {
                                header,
                                body: rest[..cl].to_vec(),
                            });
                            pushed += 1;
                            input = &rest[cl..];
                        } else {
                            self.start_body(header, cl, rest);
                            input = &[];
                        }
                    }
                    _ => {
                        self.pending.extend_from_slice(input);
                        input = &[];
                    }
                }
                continue;
            }
            // Slow path: complete the buffered prefix/header first.
            let need = match frame_len(&self.pending) {
                Some(hlen) => 2 + hlen,
                None => 2,
            };
            let take = need.saturating_sub(self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if let Some(hlen) = frame_len(&self.pending)
                && self.pending.len() == 2 + hlen
            {
                let pending = std::mem::take(&mut self.pending);
                let (header, cl) = self.parse(&pending[2..])?;
                self.pending = pending;
                self.pending.clear();
                if cl == 0 {
                    out.push(Message {
                        header,
                        body: Vec::new(),
                    });
                    pushed += 1;
                } else {
                    self.start_body(header, cl, &[]);
                }
            }
        }
        if self.pending.capacity() > 1 << 17 && self.pending.is_empty() {
            self.pending = Vec::new();
        }
        Ok(total - input.len())
    }

    fn parse(&mut self, raw: &[u8]) -> Result<(Header, usize), ProtocolError> {
        parse_header(raw, self.max_body).inspect_err(|e| {
            self.failed = Some(e.clone());
            self.pending = Vec::new();
        })
    }

    fn start_body(&mut self, header: Header, cl: usize, have: &[u8]) {
        let mut body = Vec::with_capacity(cl.min(BODY_PREALLOC).max(have.len()));
        body.extend_from_slice(have);
        self.partial = Some(Box::new((header, cl, body)));
    }
}

#[inline]
fn frame_len(b: &[u8]) -> Option<usize> {
    if b.len() < 2 {
        None
    } else {
        Some(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;

    fn frames() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..5 {
            let h = Header::new().with("info", format!("m{i}"));
            v.extend(encode(&h, &vec![i as u8; i * 7]).unwrap());
        }
        v
    }

    #[test]
    fn many_pairs_resolve_duplicates_like_set() {
        // Over 32 pairs the parser indexes keys; the result must equal what
        // `Header::set` builds: first position, last value.
        let mut text = String::from("CL:0");
        let mut expect = Header::new();
        for i in 0..200 {
            let (k, v) = (format!("k{}", i % 37), format!("v{i}"));
            text.push_str(&format!(";{k}:{v}"));
            expect.set(k, v);
        }
        let (h, cl) = parse_header(text.as_bytes(), 0).unwrap();
        assert_eq!(cl, 0);
        assert_eq!(h, expect);
        assert_eq!(h.len(), 37);
    }

    #[test]
    fn every_split_decodes() {
        let all = frames();
        let mut expect = Vec::new();
        Decoder::default().feed(&all, &mut expect).unwrap();
        assert_eq!(expect.len(), 5);
        for cut in 0..=all.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            d.feed(&all[..cut], &mut got).unwrap();
            d.feed(&all[cut..], &mut got).unwrap();
            assert_eq!(got, expect, "cut at {cut}");
            assert!(d.is_idle());
        }
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &all {
            d.feed(std::slice::from_ref(b), &mut got).unwrap();
        }
        assert_eq!(got, expect);
    }

    /// Feeding in small batches from any split gives the same frames as one feed.
    #[test]
    fn batches_from_every_split_decode_the_same() {
        let all = frames();
        let mut expect = Vec::new();
        Decoder::default().feed(&all, &mut expect).unwrap();
        for limit in [1, 2, 3] {
            for cut in 0..=all.len() {
                let mut d = Decoder::default();
                let mut got = Vec::new();
                for part in [&all[..cut], &all[cut..]] {
                    let mut pos = 0;
                    while pos < part.len() {
                        let before = got.len();
                        pos += d.feed_some(&part[pos..], &mut got, limit).unwrap();
                        assert!(got.len() - before <= limit);
                    }
                }
                assert_eq!(got, expect, "limit {limit}, cut at {cut}");
                assert!(d.is_idle());
            }
        }
    }

    #[test]
    fn over_limit_refused_before_body() {
        let mut d = Decoder::new(10);
        let mut out = Vec::new();
        let e = d.feed(b"\x05\x00CL:11", &mut out).unwrap_err();
        assert!(matches!(e, ProtocolError::BodyTooLarge { len: 11, .. }));
        assert_eq!(d.buffered(), 0);
        assert!(d.feed(b"x", &mut out).is_err());
    }

    #[test]
    fn a_cl_beyond_64_bits_is_not_shown_as_a_number_it_is_not() {
        let e = parse_header(b"CL:99999999999999999999999", 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol error: CL is too large to count (the limit is 10 bytes)"
        );
        let e = parse_header(b"CL:11", 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol error: body of 11 bytes is larger than the limit (10 bytes)"
        );
    }

    #[test]
    fn frames_before_error_are_kept() {
        let mut all = encode(&Header::new().with("a", "b"), b"").unwrap();
        all.extend_from_slice(b"\x02\x00xx");
        let mut out = Vec::new();
        assert!(Decoder::default().feed(&all, &mut out).is_err());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn lenient_parsing() {
        let (h, cl) = parse_header(b" CL : 3 ; a : b ;; a:c; k%3A:v%3B", 100).unwrap();
        assert_eq!(cl, 3);
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "c"), ("k:", "v;")]);
        assert!(matches!(
            parse_header(b"CL:+1", 100),
            Err(ProtocolError::ClNotNumber(_))
        ));
    }

    #[test]
    fn unfinished_text_is_recognised_as_plain_text() {
        let hint = |input: &[u8]| {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            let _ = d.feed(input, &mut out);
            d.text_hint()
        };
        assert_eq!(
            hint(b"hi\n").as_deref(),
            Some(
                "\"hi\\n\" looks like plain text, not sockmod framing (a 2-byte header length first)"
            )
        );
        assert!(
            hint("GET / HTTP/1.1\r\nHost: x\r\n".as_bytes())
                .unwrap()
                .contains("GET / HTTP/1.1\\r\\nHost: x")
        );
        assert!(hint(&[b'x'; 100]).is_none(), "no newline");
        assert!(hint(b"h\x01i\n").is_none(), "a control character");
        // A real frame's start: the length bytes are not text.
        assert!(hint(&[0, 10, b'C', b'L', b':', b'\n']).is_none());
        let long = format!("{}\n", "y".repeat(50));
        assert!(hint(long.as_bytes()).unwrap().contains("…\" looks like"));
    }
}
