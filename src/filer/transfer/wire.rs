//! The file frames on the wire (docs/PROTOCOL.md §5) and sockmod's two extension frames.
//!
//! - Chunk (original Qt Filer format): `TP:file;N:NAME;L:TOTAL;index:I`, the chunk
//!   as body; `index` counts 0, 1, 2, … and the last chunk has `index:-1` (a file
//!   of one chunk, or an empty file, is a single `index:-1` frame). sockmod adds
//!   `H:BLAKE3_HEX` (the digest of the whole file) to the last chunk.
//! - Cancel (sockmod): `TP:cancel;N:NAME;L:TOTAL;dir:send|recv;reason:TEXT`, no
//!   body. `dir` is the role of the side that gives up: `send` — "I stopped
//!   sending you NAME" (the receiver drops its part file); `recv` — "I stopped
//!   receiving NAME from you" (refused, failed, or cancelled: the sender stops
//!   reading and reports the transfer failed with `reason`). A filer that quits
//!   with transfers in flight sends one for each, with reason `sender quit` or
//!   `receiver quit`; a sender told `receiver quit` drops the files it had
//!   queued for that peer too.
//! - Received (sockmod): `TP:received;N:NAME;L:TOTAL;S:STORED`, no body: the
//!   receiver stored the file complete and verified, under the name `S`. A
//!   sockmod sender reports `done` on it when the peer identified itself as a
//!   sockmod filer; to a peer known to be original (it spoke without
//!   identifying itself), once the last byte is written to the socket.
//!
//! - Offer (sockmod): `TP:offer;N:NAME;L:TOTAL;T:N;R:ID`, no body: a sender asks a
//!   sockmod receiver (one that identified itself) before sending a file. `R`
//!   is the file's resume id (hex, stable across runs for the same file).
//! - Answer (sockmod): `TP:answer;N:NAME;L:TOTAL;T:N;ok:yes|no;reason:TEXT;at:BYTES`,
//!   no body: the receiver's answer to an offer; chunks follow only `ok:yes`.
//!   `at` (given only for an offer with `R`, when above 0): the receiver already
//!   holds and has verified the first BYTES of the file; the chunks start there
//!   (their `index` counts from 0 again) and `H` is still the whole file's.
//!
//! - The first chunk of a file also carries `T:N`, the sender's transfer
//!   number (sockmod): a sockmod receiver numbers the transfer alike when it
//!   can, so `t3` names it on both sides.
//!
//! Original peers do not know `TP:cancel`, `TP:received` and `T`, and ignore them.

use crate::protocol::Header;

/// The cancel reason of a sender that quits with the file still in flight.
pub const SENDER_QUIT: &str = "sender quit";
/// The cancel reason of a receiver that quits with the file still in flight.
pub const RECEIVER_QUIT: &str = "receiver quit";

/// The `TP` of a file chunk.
pub const TP_FILE: &str = "file";
/// The `TP` of the cancel extension.
pub const TP_CANCEL: &str = "cancel";
/// The `TP` of the received extension.
pub const TP_RECEIVED: &str = "received";
/// The `TP` of an offer.
pub const TP_OFFER: &str = "offer";
/// The `TP` of an answer to an offer.
pub const TP_ANSWER: &str = "answer";
/// The `TP` of an empty folder of a folder batch (sockmod, §5.7).
pub const TP_DIR: &str = "dir";

/// A parsed file chunk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The file name as sent (not yet made safe).
    pub name: &'a str,
    /// Total file length.
    pub total: u64,
    /// `Some(i)` for chunk `i`, `None` for the last chunk (`index:-1`).
    pub index: Option<u64>,
    /// The BLAKE3 hex digest, when the sender gave one.
    pub digest: Option<&'a str>,
    /// The sender's number for the transfer (`T`, on the first chunk), which
    /// the receiver takes as its own when it can, so both name it alike (`t3`).
    pub transfer: Option<u64>,
    /// Folder batches (§5.7): the file's path relative to the folder's
    /// parent (`P`); original peers ignore it and store the base name `N`.
    pub path: Option<&'a str>,
}

/// Which side gave up, in a cancel frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The sender stopped sending.
    Sender,
    /// The receiver stopped receiving.
    Receiver,
}

/// A parsed cancel or received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control<'a> {
    /// The file name as the sender sent it.
    pub name: &'a str,
    /// Total length, when given.
    pub total: Option<u64>,
    /// Cancel: who gave up. `None` for a received frame.
    pub role: Option<Role>,
    /// Cancel: why.
    pub reason: &'a str,
    /// Received: the name the receiver stored the file under (`S`), when given.
    pub stored: Option<&'a str>,
    /// Offer and answer: the sender's transfer number (`T`).
    pub transfer: Option<u64>,
    /// Answer: accepted (`ok:yes`) or not.
    pub ok: bool,
    /// Offer: the resume id (`R`).
    pub resume: Option<&'a str>,
    /// Answer: bytes the receiver already holds (`at`).
    pub at: Option<u64>,
    /// Folder batches (§5.7): the path relative to the folder's parent (`P`).
    pub path: Option<&'a str>,
    /// Folder batches: the batch id (`B`).
    pub batch: Option<&'a str>,
    /// Folder batches: files in the batch (`F`).
    pub files: Option<u64>,
    /// Folder batches: empty folders in the batch (`E`).
    pub dirs: Option<u64>,
    /// Answer: the receiver already holds the whole file (`have:yes`).
    pub have: bool,
    /// Folder batches: bytes in the batch (`BL`).
    pub batch_bytes: Option<u64>,
    /// Offer: the file's one chunk follows without waiting for the answer
    /// (`go:yes`, §5.7).
    pub go: bool,
}

/// A frame of the file protocol, borrowed from a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A chunk of a file.
    Chunk(Chunk<'a>),
    /// A cancel from the other side.
    Cancel(Control<'a>),
    /// A confirmation from the receiver.
    Received(Control<'a>),
    /// A sender asks before sending a file (`L` is required).
    Offer(Control<'a>),
    /// The receiver's answer to an offer.
    Answer(Control<'a>),
    /// An empty folder of a folder batch.
    Dir(Control<'a>),
}

/// Parses a header as a file-protocol frame: `None` when it is not one, and
/// `Some(Err(reason))` when it claims to be one but is malformed.
pub fn parse(h: &Header) -> Option<Result<Frame<'_>, String>> {
    let tp = h.get("TP")?;
    let name = h.get("N").unwrap_or("");
    let total = h.get("L").map(|l| {
        l.parse::<u64>()
            .map_err(|_| format!("bad file frame: L is not a length: {}", clip(l)))
    });
    match tp {
        TP_FILE => Some((|| {
            let total = total.ok_or_else(|| "bad file frame: no L".to_string())??;
            let index = h
                .get("index")
                .ok_or_else(|| "bad file frame: no index".to_string())?;
            let index =
                match index {
                    "-1" => None,
                    i => Some(i.parse::<u64>().map_err(|_| {
                        format!("bad file frame: index is not a number: {}", clip(i))
                    })?),
                };
            Ok(Frame::Chunk(Chunk {
                name,
                total,
                index,
                digest: h.get("H"),
                transfer: h.get("T").and_then(|t| t.parse().ok()).filter(|&t| t > 0),
                path: h.get("P").filter(|p| !p.is_empty()),
            }))
        })()),
        TP_CANCEL | TP_RECEIVED | TP_OFFER | TP_ANSWER | TP_DIR => {
            let total = match total {
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => return Some(Err(e)),
                None => None,
            };
            let ctl = Control {
                name,
                total,
                role: match h.get("dir") {
                    Some("send") => Some(Role::Sender),
                    Some("recv") => Some(Role::Receiver),
                    _ => None,
                },
                reason: h.get("reason").unwrap_or(""),
                stored: h.get("S"),
                transfer: h.get("T").and_then(|t| t.parse().ok()).filter(|&t| t > 0),
                ok: h.get("ok") == Some("yes"),
                resume: h.get("R").filter(|r| !r.is_empty()),
                at: h.get("at").and_then(|a| a.parse().ok()),
                path: h.get("P").filter(|p| !p.is_empty()),
                batch: h.get("B").filter(|b| !b.is_empty()),
                files: h.get("F").and_then(|f| f.parse().ok()),
                dirs: h.get("E").and_then(|f| f.parse().ok()),
                have: h.get("have") == Some("yes"),
                batch_bytes: h.get("BL").and_then(|f| f.parse().ok()),
                go: h.get("go") == Some("yes"),
            };
            Some(Ok(match tp {
                TP_CANCEL => Frame::Cancel(ctl),
                TP_RECEIVED => Frame::Received(ctl),
                TP_OFFER if ctl.total.is_none() => return Some(Err("bad offer: no L".into())),
                TP_OFFER => Frame::Offer(ctl),
                TP_DIR => Frame::Dir(ctl),
                _ => Frame::Answer(ctl),
            }))
        }
        _ => None,
    }
}

/// The header of a chunk: `index` `None` means the last one (`-1`), which
/// carries the digest.
pub fn chunk_header(name: &str, total: u64, index: Option<u64>, digest: Option<&str>) -> Header {
    let mut h = Header::with_capacity(5)
        .with("TP", TP_FILE)
        .with("N", name)
        .with("L", total.to_string());
    match index {
        Some(i) => h.set("index", i.to_string()),
        None => h.set("index", "-1"),
    }
    if let Some(d) = digest {
        h.set("H", d);
    }
    h
}

/// The header of a cancel frame.
pub fn cancel_header(name: &str, total: u64, role: Role, reason: &str) -> Header {
    Header::with_capacity(5)
        .with("TP", TP_CANCEL)
        .with("N", name)
        .with("L", total.to_string())
        .with(
            "dir",
            match role {
                Role::Sender => "send",
                Role::Receiver => "recv",
            },
        )
        .with("reason", reason)
}

/// The header of a received frame: `stored` is the name the file was stored
/// under in the receiver's inbox (`S`).
pub fn received_header(name: &str, total: u64, stored: &str) -> Header {
    Header::with_capacity(4)
        .with("TP", TP_RECEIVED)
        .with("N", name)
        .with("L", total.to_string())
        .with("S", stored)
}

/// The header of an offer of file `name` (`total` bytes), transfer `id`, with
/// resume id `resume`.
pub fn offer_header(name: &str, total: u64, id: u64, resume: Option<&str>) -> Header {
    let mut h = Header::with_capacity(5)
        .with("TP", TP_OFFER)
        .with("N", name)
        .with("L", total.to_string())
        .with("T", id.to_string());
    if let Some(r) = resume {
        h.set("R", r);
    }
    h
}

/// The header of an answer to an offer: `refused` is `None` to accept, else
/// the reason.
pub fn answer_header(name: &str, total: u64, id: Option<u64>, refused: Option<&str>) -> Header {
    answer_at(name, total, id, refused, 0)
}

/// [`answer_header`] that says the receiver holds the first `at` bytes (given
/// when above 0).
pub fn answer_at(
    name: &str,
    total: u64,
    id: Option<u64>,
    refused: Option<&str>,
    at: u64,
) -> Header {
    let mut h = Header::with_capacity(7)
        .with("TP", TP_ANSWER)
        .with("N", name)
        .with("L", total.to_string());
    if let Some(t) = id {
        h.set("T", t.to_string());
    }
    match refused {
        None => h.set("ok", "yes"),
        Some(r) => {
            h.set("ok", "no");
            h.set("reason", r);
        }
    }
    if at > 0 && refused.is_none() {
        h.set("at", at.to_string());
    }
    h
}

/// The folder-batch keys (§5.7) of an offer or of a folder entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the folder's parent (`P`), `/`-separated; an
    /// empty folder's ends with `/`.
    pub path: String,
    /// The batch id (`B`).
    pub batch: String,
    /// Files in the batch (`F`).
    pub files: u64,
    /// Empty folders in the batch (`E`).
    pub dirs: u64,
    /// Bytes in the batch (`BL`).
    pub bytes: u64,
}

impl Entry {
    /// Adds `P`, `B`, `F` and `E` to `h`.
    pub fn add_to(&self, h: &mut Header) {
        h.set("P", self.path.as_str());
        h.set("B", self.batch.as_str());
        h.set("F", self.files.to_string());
        h.set("E", self.dirs.to_string());
        h.set("BL", self.bytes.to_string());
    }
}

/// The header of an empty folder of a folder batch (`TP:dir`).
pub fn dir_header(name: &str, e: &Entry) -> Header {
    let mut h = Header::with_capacity(6)
        .with("TP", TP_DIR)
        .with("N", name)
        .with("L", "0");
    e.add_to(&mut h);
    h
}

/// Makes peer-supplied text safe to show on one line: control characters
/// become spaces, and it is clipped to 200 characters.
pub fn clean_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| {
            if crate::human::is_deceptive(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

fn clip(s: &str) -> String {
    let mut c = clean_text(s);
    if c.chars().count() > 40 {
        c = c.chars().take(40).collect::<String>() + "…";
    }
    format!("{c:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Decoder, encode};

    fn vector(name: &str) -> (Vec<u8>, Vec<u8>) {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wire.json"))
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let all = v["valid"].as_array().unwrap();
        let e = all.iter().find(|e| e["name"] == name).unwrap();
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        (
            hex(e["frame_hex"].as_str().unwrap()),
            hex(e["body_hex"].as_str().unwrap()),
        )
    }

    #[test]
    fn matches_the_original_frames() {
        let (frame, body) = vector("file_chunk_last");
        let h = chunk_header("photo.jpg", 10, None, None);
        assert_eq!(encode(&h, &body).unwrap(), frame);
        let (frame, body) = vector("file_chunk_first");
        let h = chunk_header("big.iso", 3_000_000, Some(0), None);
        assert_eq!(encode(&h, &body).unwrap(), frame);
        let mut out = Vec::new();
        Decoder::default().feed(&frame, &mut out).unwrap();
        assert_eq!(
            parse(&out[0].header),
            Some(Ok(Frame::Chunk(Chunk {
                name: "big.iso",
                total: 3_000_000,
                index: Some(0),
                digest: None,
                transfer: None,
                path: None
            })))
        );
    }

    #[test]
    fn extension_frames_round_trip() {
        let h = cancel_header("a;b:c.txt", 7, Role::Receiver, "disk full: no space");
        let f = encode(&h, b"").unwrap();
        let mut out = Vec::new();
        Decoder::default().feed(&f, &mut out).unwrap();
        let Some(Ok(Frame::Cancel(c))) = parse(&out[0].header) else {
            panic!()
        };
        assert_eq!(c.name, "a;b:c.txt");
        assert_eq!(c.total, Some(7));
        assert_eq!(c.role, Some(Role::Receiver));
        assert_eq!(c.reason, "disk full: no space");
        let h = received_header("x", 3, "x (2)");
        let Some(Ok(Frame::Received(c))) = parse(&h) else {
            panic!()
        };
        assert_eq!(c.stored, Some("x (2)"));
        let h = offer_header("a b", 9, 3, Some("00ff"));
        let Some(Ok(Frame::Offer(o))) = parse(&h) else {
            panic!()
        };
        assert_eq!((o.name, o.total, o.transfer), ("a b", Some(9), Some(3)));
        assert_eq!(o.resume, Some("00ff"));
        let h = answer_at("a b", 9, Some(3), None, 4);
        let Some(Ok(Frame::Answer(a))) = parse(&h) else {
            panic!()
        };
        assert_eq!((a.ok, a.at), (true, Some(4)));
        let h = answer_header("a b", 9, Some(3), Some("no thanks"));
        let Some(Ok(Frame::Answer(a))) = parse(&h) else {
            panic!()
        };
        assert!(!a.ok);
        assert_eq!(a.reason, "no thanks");
        let h = answer_header("a b", 9, Some(3), None);
        assert!(matches!(
            parse(&h),
            Some(Ok(Frame::Answer(Control { ok: true, .. })))
        ));
        assert_eq!(parse(&Header::new().with("info", "hi")), None);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let bad = |pairs: &[(&str, &str)]| {
            let mut h = Header::new().with("TP", "file");
            for (k, v) in pairs {
                h.set(*k, *v);
            }
            matches!(parse(&h), Some(Err(_)))
        };
        assert!(bad(&[("N", "a"), ("index", "0")]));
        assert!(bad(&[("N", "a"), ("L", "-3"), ("index", "0")]));
        assert!(bad(&[("N", "a"), ("L", "3")]));
        assert!(bad(&[("N", "a"), ("L", "3"), ("index", "-2")]));
        assert!(bad(&[("N", "a"), ("L", "3"), ("index", "x")]));
    }
}
