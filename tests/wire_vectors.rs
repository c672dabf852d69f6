//! Wire-format conformance: every frame in `tests/data/wire.json` is decoded (whole,
//! one byte at a time and in every two-way split), every frame produced by the
//! original Python implementation is re-encoded byte for byte, and every invalid
//! frame is refused with a matching reason.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de};
use sockmod::protocol::{DEFAULT_MAX_BODY, Decoder, Header, Message, ProtocolError, encode};
use std::fmt;

const WIRE_JSON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wire.json");

/// Origin prefix of the vectors the encoder must reproduce byte for byte.
const PYTHON_ORIGIN: &str = "encoded by the original Python implementation";

/// A JSON object of strings, kept in the order the keys appear in the file.
///
/// serde_json is built without `preserve_order` here, so a map type would lose the
/// order; serde_json's `MapAccess` streams entries in text order, which a custom
/// visitor keeps (duplicates included, so they can be rejected explicitly).
#[derive(Debug)]
struct OrderedPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = OrderedPairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if pairs.iter().any(|(seen, _): &(String, String)| *seen == k) {
                        return Err(de::Error::custom(format!("duplicate header key {k:?}")));
                    }
                    pairs.push((k, v));
                }
                Ok(OrderedPairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFile {
    #[allow(dead_code)]
    about: String,
    valid: Vec<ValidVector>,
    invalid: Vec<InvalidVector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidVector {
    name: String,
    origin: String,
    frame_hex: String,
    header: OrderedPairs,
    body_hex: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidVector {
    name: String,
    frame_hex: String,
    error: String,
}

fn raw_text() -> String {
    std::fs::read_to_string(WIRE_JSON).unwrap_or_else(|e| panic!("reading {WIRE_JSON}: {e}"))
}

fn load() -> WireFile {
    serde_json::from_str(&raw_text()).unwrap_or_else(|e| panic!("parsing {WIRE_JSON}: {e}"))
}

/// Counts straight from the untyped JSON, independent of the typed structs above.
fn raw_counts() -> (usize, usize, usize) {
    let v: serde_json::Value = serde_json::from_str(&raw_text()).unwrap();
    let valid = v["valid"].as_array().expect("'valid' is an array");
    let invalid = v["invalid"].as_array().expect("'invalid' is an array");
    let python = valid
        .iter()
        .filter(|x| {
            x["origin"]
                .as_str()
                .expect("origin is a string")
                .starts_with(PYTHON_ORIGIN)
        })
        .count();
    (valid.len(), invalid.len(), python)
}

fn hex(s: &str) -> Vec<u8> {
    fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("bad hex digit {:?}", c as char),
        }
    }
    let b = s.as_bytes();
    assert!(b.len().is_multiple_of(2), "odd-length hex string {s:?}");
    b.chunks_exact(2)
        .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
        .collect()
}

fn pairs(h: &Header) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Feeds `chunks` in order, stopping at the first error.
fn feed_chunks<'a>(
    d: &mut Decoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Message>, Result<(), ProtocolError>) {
    let mut out = Vec::new();
    for c in chunks {
        if let Err(e) = d.feed(c, &mut out) {
            return (out, Err(e));
        }
    }
    (out, Ok(()))
}

/// Asserts `frame` decodes to exactly one message equal to `expect` in this split.
fn assert_decodes(
    name: &str,
    how: &str,
    chunks: Vec<&[u8]>,
    expect: &[(String, String)],
    body: &[u8],
) {
    let mut d = Decoder::default();
    let (out, res) = feed_chunks(&mut d, chunks);
    assert_eq!(res, Ok(()), "{name} ({how}): decode failed");
    assert_eq!(out.len(), 1, "{name} ({how}): expected exactly one message");
    assert_eq!(pairs(&out[0].header), expect, "{name} ({how}): header");
    assert_eq!(out[0].body, body, "{name} ({how}): body");
    assert!(d.is_idle(), "{name} ({how}): decoder not idle afterwards");
    assert_eq!(d.buffered(), 0, "{name} ({how}): bytes left buffered");
}

fn check_valid(v: &ValidVector) {
    let frame = hex(&v.frame_hex);
    let body = hex(&v.body_hex);
    let expect = &v.header.0;
    let name = v.name.as_str();
    assert!(
        expect.iter().all(|(k, _)| k != "CL"),
        "{name}: vector header must not contain CL"
    );

    assert_decodes(name, "whole", vec![&frame[..]], expect, &body);
    assert_decodes(
        name,
        "byte at a time",
        frame.chunks(1).collect(),
        expect,
        &body,
    );
    for cut in 0..=frame.len() {
        assert_decodes(
            name,
            &format!("split at {cut}"),
            vec![&frame[..cut], &frame[cut..]],
            expect,
            &body,
        );
    }

    // The frame twice back to back decodes to two equal messages.
    let twice = [&frame[..], &frame[..]].concat();
    let mut out = Vec::new();
    Decoder::default().feed(&twice, &mut out).unwrap();
    assert_eq!(out.len(), 2, "{name}: frame repeated twice");
    assert_eq!(out[0], out[1], "{name}: frame repeated twice");
}

fn header_of(v: &ValidVector) -> Header {
    let mut h = Header::new();
    for (k, val) in &v.header.0 {
        h.set(k.as_str(), val.as_str());
    }
    h
}

fn check_python_encoding(v: &ValidVector) {
    let frame = hex(&v.frame_hex);
    let body = hex(&v.body_hex);
    let header = header_of(v);
    let name = v.name.as_str();
    assert_eq!(
        pairs(&header),
        v.header.0,
        "{name}: header built in JSON order"
    );
    let got = encode(&header, &body).unwrap_or_else(|e| panic!("{name}: encode failed: {e}"));
    assert_eq!(
        got,
        frame,
        "{name}: encoded frame differs\n got: {}\nwant: {}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&frame)
    );

    // A user-supplied CL (anywhere in the header) is ignored: the real length wins.
    let mut with_cl = Header::new().with("CL", "12345");
    for (k, val) in header.iter() {
        with_cl.set(k, val);
    }
    with_cl.set("CL", "99");
    assert_eq!(
        encode(&with_cl, &body).unwrap(),
        frame,
        "{name}: a CL key in the header must be ignored"
    );
}

/// The message substring and the variant expected for each vector's `error`.
fn expected_error(error: &str) -> (&'static str, fn(&ProtocolError) -> bool) {
    match error {
        "header is not UTF-8" => ("not UTF-8", |e| matches!(e, ProtocolError::HeaderNotUtf8)),
        "no CL" => ("no CL", |e| matches!(e, ProtocolError::NoCl)),
        "CL is not a number" => ("CL is not a number", |e| {
            matches!(e, ProtocolError::ClNotNumber(_))
        }),
        "pair without ':'" => ("pair without ':'", |e| {
            matches!(e, ProtocolError::PairWithoutColon(_))
        }),
        "empty key" => ("empty key", |e| matches!(e, ProtocolError::EmptyKey)),
        "body larger than the limit (default limit)" => ("larger than the limit", |e| {
            matches!(
                e,
                ProtocolError::BodyTooLarge {
                    limit: DEFAULT_MAX_BODY,
                    ..
                }
            )
        }),
        other => panic!("no expected message for error {other:?}: add it to expected_error"),
    }
}

fn check_invalid(v: &InvalidVector) {
    let frame = hex(&v.frame_hex);
    let name = v.name.as_str();
    let (needle, is_variant) = expected_error(&v.error);

    let check = |how: &str, chunks: Vec<&[u8]>| {
        let mut d = Decoder::default();
        let (out, res) = feed_chunks(&mut d, chunks);
        let e = res.expect_err(&format!("{name} ({how}): decoding must fail"));
        assert!(
            out.is_empty(),
            "{name} ({how}): no message before the error"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(needle),
            "{name} ({how}): error {msg:?} does not mention {needle:?} (vector says {:?})",
            v.error
        );
        assert!(is_variant(&e), "{name} ({how}): unexpected variant {e:?}");
        // A failed decoder refuses everything after.
        assert!(
            d.feed(b"\x04\x00CL:0", &mut Vec::new()).is_err(),
            "{name} ({how}): decoder accepted input after an error"
        );
    };
    check("whole", vec![&frame[..]]);
    check("byte at a time", frame.chunks(1).collect());
    for cut in 0..=frame.len() {
        check(
            &format!("split at {cut}"),
            vec![&frame[..cut], &frame[cut..]],
        );
    }

    // Frames before the bad one are still delivered.
    let good = encode(&Header::new().with("info", "before"), b"ok").unwrap();
    let mut out = Vec::new();
    let res = Decoder::default().feed(&[&good[..], &frame[..]].concat(), &mut out);
    assert!(
        res.is_err(),
        "{name}: after a good frame, decoding must fail"
    );
    assert_eq!(out.len(), 1, "{name}: the good frame before it is kept");
    assert_eq!(out[0].header.get("info"), Some("before"));
    assert_eq!(out[0].body, b"ok");
}

fn check_all_valid(w: &WireFile) -> usize {
    let mut n = 0;
    for v in &w.valid {
        check_valid(v);
        n += 1;
    }
    n
}

fn check_all_python(w: &WireFile) -> usize {
    let mut n = 0;
    for v in w
        .valid
        .iter()
        .filter(|v| v.origin.starts_with(PYTHON_ORIGIN))
    {
        check_python_encoding(v);
        n += 1;
    }
    n
}

fn check_all_invalid(w: &WireFile) -> usize {
    let mut n = 0;
    for v in &w.invalid {
        check_invalid(v);
        n += 1;
    }
    n
}

#[test]
fn valid_vectors_decode() {
    let w = load();
    let (valid, _, _) = raw_counts();
    assert_eq!(check_all_valid(&w), valid);
}

#[test]
fn python_vectors_encode_byte_for_byte() {
    let w = load();
    let (_, _, python) = raw_counts();
    assert!(python > 0, "no vector from the Python implementation");
    assert_eq!(check_all_python(&w), python);
}

#[test]
fn invalid_vectors_are_refused() {
    let w = load();
    let (_, invalid, _) = raw_counts();
    assert_eq!(check_all_invalid(&w), invalid);
}

#[test]
fn every_vector_is_checked() {
    let w = load();
    let (valid, invalid, python) = raw_counts();
    // The counts seen by the raw text, the untyped JSON and the checkers agree.
    let text = raw_text();
    assert_eq!(
        text.matches("\"frame_hex\"").count(),
        valid + invalid,
        "every frame_hex in the file belongs to a valid or invalid vector"
    );
    assert_eq!(w.valid.len(), valid);
    assert_eq!(w.invalid.len(), invalid);
    let checked = check_all_valid(&w) + check_all_invalid(&w);
    assert_eq!(checked, valid + invalid);
    assert_eq!(check_all_python(&w), python);
    // Names are unique, so a failure message points at one vector.
    let mut names: Vec<&str> = w
        .valid
        .iter()
        .map(|v| v.name.as_str())
        .chain(w.invalid.iter().map(|v| v.name.as_str()))
        .collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate vector names");
}

#[test]
fn ordered_pairs_keep_json_order() {
    let p: OrderedPairs = serde_json::from_str(r#"{"z":"1","a":"2","m":""}"#).unwrap();
    assert_eq!(
        p.0,
        vec![
            ("z".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
            ("m".to_string(), String::new()),
        ]
    );
    assert!(serde_json::from_str::<OrderedPairs>(r#"{"a":"1","a":"2"}"#).is_err());
}

#[test]
fn hex_decoder() {
    assert_eq!(hex(""), b"");
    assert_eq!(hex("00ff7FaB"), [0x00, 0xff, 0x7f, 0xab]);
}
