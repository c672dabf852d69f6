//! The sockmod wire protocol (docs/PROTOCOL.md §1–2): frames of a key/value header and a body.
//!
//! This module knows nothing of sockets: it turns bytes into [`Message`]s and back.
//!
//! ```
//! use sockmod::protocol::{encode, Decoder, Header};
//! let frame = encode(&Header::new().with("info", "hello"), b"abc").unwrap();
//! assert_eq!(frame, b"\x0f\x00CL:3;info:helloabc");
//! let mut out = Vec::new();
//! Decoder::default().feed(&frame, &mut out).unwrap();
//! assert_eq!(out[0].header.get("info"), Some("hello"));
//! ```

mod decoder;
mod encoder;
mod escape;
mod header;

pub use decoder::{DEFAULT_MAX_BODY, Decoder, Message, ProtocolError, parse_header};
pub use encoder::{EncodeError, MAX_HEADER, encode, encode_header_into, encode_into};
pub use escape::{escape_into, unescape};
pub use header::Header;
