//! Frame encoding: `u16` little-endian header length, header text, body.

use super::escape::escape_into;
use super::header::Header;
use std::fmt;

/// Largest header a frame can carry (its length is a `u16`).
pub const MAX_HEADER: usize = u16::MAX as usize;

/// Why a frame could not be encoded. Nothing is written when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoded header would be longer than 65,535 bytes.
    HeaderTooLong(usize),
    /// A key is empty, which no decoder accepts.
    EmptyKey,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::HeaderTooLong(n) => {
                write!(
                    f,
                    "header of {n} bytes does not fit in a frame (max {MAX_HEADER})"
                )
            }
            EncodeError::EmptyKey => f.write_str("header has an empty key"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Appends the length prefix and header of a frame whose body is `body_len` bytes.
///
/// `CL` comes first, then the header's keys in order; a `CL` key in `header` is
/// ignored. Useful to queue a large body without copying it.
pub fn encode_header_into(
    header: &Header,
    body_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, b'C', b'L', b':']);
    let mut digits = itoa_buf();
    out.extend_from_slice(fmt_usize(body_len, &mut digits));
    for (k, v) in header.iter() {
        if k == "CL" {
            continue;
        }
        if k.is_empty() {
            out.truncate(start);
            return Err(EncodeError::EmptyKey);
        }
        out.push(b';');
        escape_into(k, out);
        out.push(b':');
        escape_into(v, out);
    }
    let len = out.len() - start - 2;
    if len > MAX_HEADER {
        out.truncate(start);
        return Err(EncodeError::HeaderTooLong(len));
    }
    out[start..start + 2].copy_from_slice(&(len as u16).to_le_bytes());
    Ok(())
}

/// Appends a whole frame (header and body) to `out`.
pub fn encode_into(header: &Header, body: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.reserve(body.len() + 32);
    encode_header_into(header, body.len(), out)?;
    out.extend_from_slice(body);
    Ok(())
}

/// Encodes a whole frame into a new buffer.
pub fn encode(header: &Header, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(body.len() + 32);
    encode_into(header, body, &mut out)?;
    Ok(out)
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// Formats `n` in decimal without allocating.
fn fmt_usize(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_original() {
        let h = Header::new().with("info", "hello");
        assert_eq!(encode(&h, b"abc").unwrap(), b"\x0f\x00CL:3;info:helloabc");
        assert_eq!(encode(&Header::new(), b"").unwrap(), b"\x04\x00CL:0");
    }

    #[test]
    fn user_cl_is_ignored() {
        let h = Header::new().with("CL", "99").with("info", "x");
        assert_eq!(encode(&h, b"yz").unwrap(), b"\x0b\x00CL:2;info:xyz");
    }

    #[test]
    fn too_long_header_writes_nothing() {
        let h = Header::new().with("k", "v".repeat(70_000));
        let mut out = b"keep".to_vec();
        assert!(matches!(
            encode_into(&h, b"", &mut out),
            Err(EncodeError::HeaderTooLong(_))
        ));
        assert_eq!(out, b"keep");
    }

    #[test]
    fn largest_header_fits() {
        // "CL:0;k:" is 7 bytes.
        let h = Header::new().with("k", "v".repeat(MAX_HEADER - 7));
        let f = encode(&h, b"").unwrap();
        assert_eq!(&f[..2], &[0xff, 0xff]);
        let h = Header::new().with("k", "v".repeat(MAX_HEADER - 6));
        assert!(encode(&h, b"").is_err());
    }

    #[test]
    fn empty_key_is_refused() {
        assert_eq!(
            encode(&Header::new().with("", "x"), b""),
            Err(EncodeError::EmptyKey)
        );
    }

    #[test]
    fn digits() {
        let mut b = itoa_buf();
        assert_eq!(fmt_usize(0, &mut b), b"0");
        assert_eq!(
            fmt_usize(usize::MAX, &mut b),
            usize::MAX.to_string().as_bytes()
        );
    }
}
