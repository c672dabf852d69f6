//! Property tests of the frame codec: encode/decode round trips with hostile
//! header text, arbitrary splits of the input, garbage input, and the body limit.

use proptest::prelude::*;
use proptest::sample::Index;
use sockmod::protocol::{
    DEFAULT_MAX_BODY, Decoder, EncodeError, Header, Message, ProtocolError, encode,
    encode_header_into, encode_into,
};

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Characters the wire format treats specially, whitespace `trim_ascii` strips
/// (and some it does not), hex digits that form `%XX` look-alikes, and non-ASCII.
const TRICKY: &[char] = &[
    ':', ';', '%', ' ', '\t', '\n', '\r', '\x0c', '\x0b', '\0', 'é', '你', '😀', '\u{a0}',
    '\u{3000}', '\u{feff}', 'C', 'L', '3', 'A', 'b', '2', '5', '0',
];

/// Multi-character pieces: escape look-alikes, partial escapes, and `CL` lookalikes.
const TOKENS: &[&str] = &[
    "%3A", "%3a", "%3B", "%25", "%20", "%09", "%2", "%", "%%", "%zz", "%C3%A9", "%FF", "CL",
    "%43L", "%43%4C", " CL", "CL ", "cl", "CL:", ":CL", "你好", "😀😀", "  ", "\t \t",
];

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::sample::select(TRICKY),
        2 => any::<char>(),
        1 => proptest::char::range('a', 'z'),
    ]
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => tricky_char().prop_map(String::from),
        1 => proptest::sample::select(TOKENS).prop_map(String::from),
    ]
}

fn tricky_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(piece(), len).prop_map(|v| v.concat())
}

/// Non-empty keys other than `CL` (which the encoder drops by design).
fn key() -> impl Strategy<Value = String> {
    tricky_string(1..8).prop_filter("CL is reserved", |k| !k.is_empty() && k != "CL")
}

fn value() -> impl Strategy<Value = String> {
    tricky_string(0..10)
}

/// Ordered header pairs with unique keys (first occurrence kept).
fn header_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((key(), value()), 0..8).prop_map(|v| {
        let mut out: Vec<(String, String)> = Vec::with_capacity(v.len());
        for (k, val) in v {
            if !out.iter().any(|(seen, _)| *seen == k) {
                out.push((k, val));
            }
        }
        out
    })
}

fn to_header(pairs: &[(String, String)]) -> Header {
    let mut h = Header::new();
    for (k, v) in pairs {
        h.set(k.as_str(), v.as_str());
    }
    h
}

fn pairs_of(h: &Header) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn body(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Split points for a buffer (resolved against its length later).
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    proptest::collection::vec(any::<Index>(), 0..12)
}

/// `data` cut at the given points (sorted, possibly producing empty chunks).
fn split<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut prev = 0;
    for a in at {
        chunks.push(&data[prev..a]);
        prev = a;
    }
    chunks.push(&data[prev..]);
    chunks
}

/// Feeds chunks in order, stopping at the first error.
fn feed_chunks(d: &mut Decoder, chunks: &[&[u8]]) -> (Vec<Message>, Result<(), ProtocolError>) {
    let mut out = Vec::new();
    for c in chunks {
        if let Err(e) = d.feed(c, &mut out) {
            return (out, Err(e));
        }
    }
    (out, Ok(()))
}

/// Encodes `pairs`/`body`, or `None` when the header cannot fit in a frame.
fn try_encode(pairs: &[(String, String)], body: &[u8]) -> Option<Vec<u8>> {
    match encode(&to_header(pairs), body) {
        Ok(f) => Some(f),
        Err(EncodeError::HeaderTooLong(_)) => None,
        Err(e) => panic!("unexpected encode error {e} for {pairs:?}"),
    }
}

/// Byte soup that often looks like a frame: a length prefix that is either right
/// or random, header bytes drawn from the wire format's alphabet (often after a
/// plausible start), then a body.
fn framelike() -> impl Strategy<Value = Vec<u8>> {
    let header_byte = prop_oneof![
        6 => proptest::sample::select(b"CL:;% \t0123456789aAfF-+".to_vec()),
        1 => any::<u8>(),
    ];
    let start: &[&[u8]] = &[b"", b"CL:", b"CL:3;", b"CL:0;a:b;", b" CL : 1 ;"];
    (
        any::<bool>(),
        any::<u16>(),
        proptest::sample::select(start),
        proptest::collection::vec(header_byte, 0..40),
        body(64),
    )
        .prop_map(|(right_len, len, start, rest, body)| {
            let header = [start, &rest[..]].concat();
            let len = if right_len { header.len() as u16 } else { len };
            let mut v = len.to_le_bytes().to_vec();
            v.extend_from_slice(&header);
            v.extend_from_slice(&body);
            v
        })
}

/// Valid frames with a few bytes overwritten and possibly truncated.
fn mutated_frames() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((header_pairs(), body(64)), 1..4),
        proptest::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        proptest::option::of(any::<Index>()),
    )
        .prop_map(|(frames, edits, truncate)| {
            let mut v = Vec::new();
            for (p, b) in &frames {
                if let Some(f) = try_encode(p, b) {
                    v.extend(f);
                }
            }
            if !v.is_empty() {
                for (i, b) in edits {
                    let at = i.index(v.len());
                    v[at] = b;
                }
            }
            if let Some(t) = truncate {
                v.truncate(t.index(v.len() + 1));
            }
            v
        })
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        body(300),
        proptest::collection::vec(framelike(), 1..4).prop_map(|v| v.concat()),
        mutated_frames(),
    ]
}

fn max_body() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1024usize), Just(DEFAULT_MAX_BODY), 0..64usize]
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// 256 cases per property (under a second in a debug build) unless `PROPTEST_CASES`
/// asks for more, e.g. `PROPTEST_CASES=20000 cargo test --release --test codec_props`.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    /// (a) Any header (unique non-`CL` keys, arbitrary values) and body survive
    /// encode → decode with the pairs in order, whole and in one random split.
    #[test]
    fn round_trip(pairs in header_pairs(), body in body(4096), cut in any::<Index>()) {
        let frame = try_encode(&pairs, &body);
        prop_assume!(frame.is_some(), "header too long for a frame");
        let frame = frame.unwrap();

        // encode_into appends the same bytes after existing content.
        let mut appended = b"prefix".to_vec();
        encode_into(&to_header(&pairs), &body, &mut appended).unwrap();
        prop_assert_eq!(&appended[6..], &frame[..]);

        let mut out = Vec::new();
        let mut d = Decoder::default();
        d.feed(&frame, &mut out).unwrap();
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(pairs_of(&out[0].header), pairs.clone());
        prop_assert_eq!(&out[0].body, &body);
        prop_assert!(d.is_idle());

        let at = cut.index(frame.len() + 1);
        let mut d = Decoder::default();
        let (split_out, res) = feed_chunks(&mut d, &[&frame[..at], &frame[at..]]);
        prop_assert_eq!(res, Ok(()));
        prop_assert_eq!(split_out, out);
        prop_assert!(d.is_idle());
    }

    /// (b) Several frames back to back, fed in random splits, decode to the same
    /// sequence of messages, leaving nothing buffered.
    #[test]
    fn concatenated_frames_in_random_splits(
        frames in proptest::collection::vec((header_pairs(), body(512)), 1..6),
        cuts in cuts(),
    ) {
        let mut all = Vec::new();
        let mut expect = Vec::new();
        for (p, b) in &frames {
            if let Some(f) = try_encode(p, b) {
                all.extend(f);
                expect.push((p.clone(), b.clone()));
            }
        }
        prop_assume!(!expect.is_empty());

        let mut d = Decoder::default();
        let (out, res) = feed_chunks(&mut d, &split(&all, &cuts));
        prop_assert_eq!(res, Ok(()));
        let got: Vec<_> = out.iter().map(|m| (pairs_of(&m.header), m.body.clone())).collect();
        prop_assert_eq!(got, expect);
        prop_assert!(d.is_idle());
        prop_assert_eq!(d.buffered(), 0);
    }

    /// (c) Arbitrary bytes never panic the decoder, and how the input is split
    /// never changes the outcome: the same messages, then the same error (if any).
    #[test]
    fn garbage_never_panics_and_split_is_irrelevant(
        data in garbage(),
        cuts in cuts(),
        max in max_body(),
    ) {
        let mut whole = Decoder::new(max);
        let (whole_out, whole_res) = feed_chunks(&mut whole, &[&data]);

        let mut d = Decoder::new(max);
        let (out, res) = feed_chunks(&mut d, &split(&data, &cuts));
        prop_assert_eq!(&out, &whole_out);
        prop_assert_eq!(&res, &whole_res);

        let mut bytewise = Decoder::new(max);
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        let (byte_out, byte_res) = feed_chunks(&mut bytewise, &chunks);
        prop_assert_eq!(&byte_out, &whole_out);
        prop_assert_eq!(&byte_res, &whole_res);

        for m in &out {
            prop_assert!(m.body.len() <= max, "body over the limit was accepted");
            prop_assert!(m.header.iter().all(|(k, _)| !k.is_empty() && k != "CL"));
        }
        prop_assert!(d.buffered() <= data.len());
        if let Err(e) = res {
            prop_assert!(e.to_string().starts_with("protocol error: "));
            // After an error, all further input is refused.
            prop_assert!(d.feed(b"\x04\x00CL:0", &mut Vec::new()).is_err());
            prop_assert!(d.feed(b"", &mut Vec::new()).is_err());
        }
    }

    /// (d) A frame declaring a body over the limit is refused as soon as its header
    /// is complete: nothing of the body is buffered, whatever the split.
    #[test]
    fn over_limit_refused_before_body(
        pairs in header_pairs(),
        max in 0..100_000usize,
        over in 1..1_000_000usize,
        huge in any::<bool>(),
        trailing in body(256),
        cuts in cuts(),
    ) {
        let cl = max + over;
        let mut frame = Vec::new();
        let header = to_header(&pairs);
        let declared: u64 = if huge {
            // A CL too large for any integer type: spelled out by hand.
            let digits = "9".repeat(30);
            let mut text = format!("CL:{digits}").into_bytes();
            let mut rest = Vec::new();
            prop_assume!(encode_header_into(&header, 0, &mut rest).is_ok());
            text.extend_from_slice(&rest[2 + 4..]); // drop prefix and "CL:0"
            prop_assume!(text.len() <= u16::MAX as usize);
            frame.extend_from_slice(&(text.len() as u16).to_le_bytes());
            frame.extend_from_slice(&text);
            u64::MAX
        } else {
            prop_assume!(encode_header_into(&header, cl, &mut frame).is_ok());
            cl as u64
        };
        let header_end = frame.len();
        frame.extend_from_slice(&trailing);

        let mut d = Decoder::new(max);
        let mut out = Vec::new();
        let mut fed = 0;
        let mut err = None;
        for c in split(&frame, &cuts) {
            let res = d.feed(c, &mut out);
            fed += c.len();
            prop_assert!(d.buffered() < header_end, "buffered {} of a {}-byte header", d.buffered(), header_end);
            match res {
                Ok(()) => prop_assert!(fed < header_end, "header complete but no error"),
                Err(e) => {
                    prop_assert!(fed >= header_end, "error before the header was complete");
                    err = Some(e);
                    break;
                }
            }
        }
        prop_assert!(out.is_empty());
        prop_assert_eq!(d.buffered(), 0);
        let e = err.expect("over-limit frame was not refused");
        prop_assert_eq!(&e, &ProtocolError::BodyTooLarge { len: declared, limit: max });
        prop_assert!(e.to_string().contains("limit"), "message: {}", e);
    }
}

/// (a) at the edge: a header exactly at the 65,535-byte limit round-trips, and
/// one byte more is refused by the encoder, with nothing written.
#[test]
fn largest_header_round_trips() {
    // "CL:0;" + "k:" is 7 bytes; a value of `;` escapes to three bytes.
    let value = format!(
        "{}{}",
        ";".repeat(10_000),
        "v".repeat(u16::MAX as usize - 7 - 30_000)
    );
    let h = Header::new().with("k", value.as_str());
    let frame = encode(&h, b"").unwrap();
    assert_eq!(&frame[..2], &[0xff, 0xff]);
    let mut out = Vec::new();
    Decoder::default().feed(&frame, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].header.get("k"), Some(value.as_str()));

    let h = Header::new().with("k", format!("{value}v"));
    let mut buf = b"keep".to_vec();
    assert!(matches!(
        encode_into(&h, b"x", &mut buf),
        Err(EncodeError::HeaderTooLong(_))
    ));
    assert_eq!(buf, b"keep");
}
