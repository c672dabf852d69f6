//! A shared passphrase (`--secret`) proven on every link, without revealing it:
//! SPAKE2 (RustCrypto's `spake2`, symmetric mode) run over the TLS session as
//! two frames each way, bound to that session by its exporter value.
//!
//! Each side sends `TP:Pake` (its SPAKE2 message), derives the shared key, then
//! sends `TP:PakeOk` with a BLAKE3 MAC, under that key, of the session's
//! exporter value and its own role. A side that guessed the passphrase wrong
//! gets a different key, so its MAC fails: one guess per connection, nothing to
//! attack offline. A relay that terminates TLS on both sides sees two sessions
//! with two exporter values, so the MACs it forwards fail too.

use crate::protocol::{Decoder, Header, Message, encode};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use std::fmt;

/// The label of the TLS exporter value the proof is bound to.
pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-sockmod-secret";
/// The frames' `TP` values.
const PAKE: &str = "Pake";
const PAKE_OK: &str = "PakeOk";

/// A passphrase shared by a closed group of peers. Its bytes never appear in
/// `Debug` output, logs or errors.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its passphrase.
    pub fn new(passphrase: impl Into<Vec<u8>>) -> Secret {
        Secret(passphrase.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// True for a frame of the proof (a peer without `--secret` receiving one knows
/// the other side requires it).
pub(crate) fn is_pake_frame(msg: &Message) -> bool {
    matches!(msg.header.get("TP"), Some(PAKE) | Some(PAKE_OK))
}

/// One connection's proof in progress.
pub(crate) struct Pake {
    spake: Option<Spake2<Ed25519Group>>,
    /// The MAC key, once the peer's SPAKE2 message arrived.
    key: Option<[u8; 32]>,
    exporter: [u8; 32],
    /// We are the TLS client (we dialled).
    client: bool,
    /// The peer's MAC checked out.
    verified: bool,
    /// Frames of the proof are decoded here; after it, the connection's own
    /// decoder takes over what remains.
    pub(crate) decoder: Decoder,
}

impl Pake {
    /// Starts the proof: the state, and the first frame to send.
    pub(crate) fn start(
        secret: &Secret,
        exporter: [u8; 32],
        client: bool,
        max_body: usize,
    ) -> (Pake, Vec<u8>) {
        let (spake, msg) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(&secret.0),
            &Identity::new(b"sockmod --secret"),
        );
        let pake = Pake {
            spake: Some(spake),
            key: None,
            exporter,
            client,
            verified: false,
            decoder: Decoder::new(max_body),
        };
        (pake, frame(PAKE, &msg))
    }

    /// The MAC one side sends: over the exporter value and its role.
    fn mac(&self, key: &[u8; 32], client: bool) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(b"sockmod --secret proof");
        h.update(&self.exporter);
        h.update(if client { b"client" } else { b"server" });
        *h.finalize().as_bytes()
    }

    /// Takes one frame of the peer's: `Ok(Some(bytes))` to send back,
    /// `Ok(None)` when nothing is to be sent, `Err` when the peer failed the
    /// proof (the reason, for the closed line).
    pub(crate) fn on_frame(&mut self, msg: &Message) -> Result<Option<Vec<u8>>, String> {
        match msg.header.get("TP") {
            Some(PAKE) => {
                let spake = self
                    .spake
                    .take()
                    .ok_or("the peer sent its --secret proof twice")?;
                let k = spake
                    .finish(&msg.body)
                    .map_err(|_| "the peer's --secret proof is malformed".to_string())?;
                let key = *blake3::hash(&k).as_bytes();
                self.key = Some(key);
                let mine = self.mac(&key, self.client);
                Ok(Some(frame(PAKE_OK, &mine)))
            }
            Some(PAKE_OK) => {
                let key = self
                    .key
                    .ok_or("the peer confirmed its --secret proof before sending it")?;
                let want = blake3::Hash::from(self.mac(&key, !self.client));
                // blake3::Hash compares in constant time.
                let got = blake3::Hash::from_slice(&msg.body).ok();
                if got == Some(want) {
                    self.verified = true;
                    Ok(None)
                } else {
                    Err(
                        "wrong secret: the peer's --secret differs (or a relay is in between)"
                            .into(),
                    )
                }
            }
            _ => Err(
                "the peer has no --secret: it sent data instead of proving the shared secret"
                    .into(),
            ),
        }
    }

    /// True once the peer proved the secret (its MAC checked out).
    pub(crate) fn done(&self) -> bool {
        self.verified
    }
}

/// Encodes one proof frame.
fn frame(tp: &str, body: &[u8]) -> Vec<u8> {
    // A short header and a 32-byte body: encoding cannot fail.
    encode(&Header::new().with("TP", tp), body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Message {
        let mut out = Vec::new();
        Decoder::new(1 << 20).feed(bytes, &mut out).unwrap();
        out.remove(0)
    }

    /// Runs the proof between two sides; the outcome each side reaches.
    fn run(
        a: &Secret,
        b: &Secret,
        ea: [u8; 32],
        eb: [u8; 32],
    ) -> (Result<(), String>, Result<(), String>) {
        let (mut pa, fa) = Pake::start(a, ea, true, 1 << 20);
        let (mut pb, fb) = Pake::start(b, eb, false, 1 << 20);
        let oka = pa.on_frame(&decode(&fb)).unwrap().unwrap();
        let okb = pb.on_frame(&decode(&fa)).unwrap().unwrap();
        let ra = pa.on_frame(&decode(&okb)).map(|_| ());
        let rb = pb.on_frame(&decode(&oka)).map(|_| ());
        assert_eq!(ra.is_ok(), pa.done());
        (ra, rb)
    }

    #[test]
    fn the_same_secret_proves_and_a_different_one_fails_both_sides() {
        let s = Secret::new("correct horse");
        let (a, b) = run(&s, &s, [1; 32], [1; 32]);
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        let (a, b) = run(&s, &Secret::new("wrong horse"), [1; 32], [1; 32]);
        assert!(a.unwrap_err().contains("wrong secret"));
        assert!(b.unwrap_err().contains("wrong secret"));
    }

    #[test]
    fn a_relayed_session_fails() {
        // Same secret, but each side sees its own TLS session's exporter value.
        let s = Secret::new("correct horse");
        let (a, b) = run(&s, &s, [1; 32], [2; 32]);
        assert!(a.is_err() && b.is_err());
    }

    #[test]
    fn a_peer_without_the_secret_is_told_apart() {
        let (mut p, _) = Pake::start(&Secret::new("x"), [0; 32], true, 1 << 20);
        let identity = Message::new(Header::new().with("TP", "Check").with("ID", "bob"), vec![]);
        assert!(
            p.on_frame(&identity)
                .unwrap_err()
                .contains("has no --secret")
        );
        assert!(!is_pake_frame(&identity));
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
