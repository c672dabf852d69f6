//! The decoder property shared by the `decoder` fuzz target and the regression
//! test `tests/fuzz_regressions.rs`: arbitrary bytes fed in arbitrary splits must
//! decode exactly as when fed at once (same frames, same error), the decoder
//! never holds more than one header plus one body, and every frame that decodes
//! survives an encode/decode round trip and encodes canonically.
//!
//! Input layout: byte 0 picks the body limit, byte 1 seeds the split points, the
//! rest is the byte stream.

use sockmod::protocol::{Decoder, Message, ProtocolError, encode};

/// Body limits worth exercising: none, tiny, around typical frames, the default.
const LIMITS: [usize; 6] = [0, 1, 7, 300, 65_536, 64 << 20];

fn decode_all(max_body: usize, input: &[u8]) -> (Vec<Message>, Option<ProtocolError>) {
    let mut out = Vec::new();
    let err = Decoder::new(max_body).feed(input, &mut out).err();
    (out, err)
}

fn decode_split(
    max_body: usize,
    input: &[u8],
    mut seed: u64,
) -> (Vec<Message>, Option<ProtocolError>) {
    let mut d = Decoder::new(max_body);
    let mut out = Vec::new();
    let mut rest = input;
    let one_byte = seed.is_multiple_of(4);
    while !rest.is_empty() {
        // xorshift for the split points
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = if one_byte {
            1
        } else {
            1 + (seed % 97) as usize
        }
        .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = d.feed(chunk, &mut out) {
            return (out, Some(e));
        }
        assert!(
            d.buffered() <= 2 + 65_535 + max_body,
            "decoder holds {} bytes (limit {max_body})",
            d.buffered()
        );
    }
    (out, None)
}

/// Panics when the property does not hold for `data`.
pub fn check(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let max_body = LIMITS[data[0] as usize % LIMITS.len()];
    let seed = (u64::from(data[1]).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ data.len() as u64) | 1;
    let input = &data[2..];

    let whole = decode_all(max_body, input);
    let split = decode_split(max_body, input, seed);
    assert_eq!(whole, split, "split decoding differs");

    for m in &whole.0 {
        assert!(m.body.len() <= max_body);
        assert!(!m.header.contains("CL"), "CL leaked into the header");
        let Ok(frame) = encode(&m.header, &m.body) else {
            // Escaping can push a header over 65,535 bytes: refused, fine.
            continue;
        };
        let (again, err) = decode_all(m.body.len(), &frame);
        assert_eq!(err, None, "re-encoded frame does not decode: {frame:?}");
        assert_eq!(again.len(), 1);
        assert_eq!(&again[0], m, "round trip changed the frame");
        let frame2 = encode(&again[0].header, &again[0].body).expect("encodes twice");
        assert_eq!(frame, frame2, "encoding is not canonical");
    }
}
