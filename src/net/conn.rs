//! One connection's state: its transport, decoder, outbound queue and statistics.

use super::queue::{Flush, OutQueue};
use super::tls::{Tls, TlsInfo};
use crate::protocol::Decoder;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A connection's id: `#1`, `#2`, … in order of appearance, never reused in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Hashes connection ids with one multiplication instead of SipHash: ids are
/// small sequential numbers chosen by the loop, never by a peer, so there is
/// nothing to defend against, and every frame costs a lookup or two.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads sequential ids over the high bits (which the
        // table's control bytes use) and keeps them distinct in the low bits.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by connection id.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Accepted by our listener.
    In,
    /// Dialled by us.
    Out,
}

impl Dir {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::In => "in",
            Dir::Out => "out",
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A dial in progress.
    Connecting,
    /// Connected at the TCP level, but the transport is not usable yet (a TLS
    /// handshake in progress): output waits in the queue and no event is reported.
    Handshaking,
    /// Up.
    Open,
    /// Closing once its queue is flushed.
    Closing,
}

impl State {
    /// `connecting`, `open` or `closing`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Handshaking => "handshaking",
            State::Open => "open",
            State::Closing => "closing",
        }
    }
}

/// What the loop knows about a connection, readable by handlers.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The id.
    pub id: ConnId,
    /// Accepted or dialled.
    pub dir: Dir,
    /// The peer's address.
    pub addr: SocketAddr,
    /// Life stage.
    pub state: State,
    /// When it appeared.
    pub since: Instant,
    /// When bytes last arrived (or when it appeared).
    pub last_seen: Instant,
    /// When bytes were last written to the socket (queued ones do not count).
    pub last_sent: Instant,
    /// While output waits in the queue: since when nothing of it was written
    /// (set when the queue stops being empty, moved on by every write that takes
    /// some of it); `None` while the queue is empty. Unlike `last_sent`, it says how
    /// long the peer has kept us waiting, which is what a write deadline measures.
    pub unsent_since: Option<Instant>,
    /// Frames received (liveness probes excluded).
    pub msgs_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Frames queued for sending.
    pub msgs_out: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// For a dialled connection, the target as given to `dial` (`HOST:PORT`): what
    /// to show when the dial fails before an address is known.
    pub target: Option<String>,
    /// For a TLS connection past its handshake: what it agreed on (boxed: most
    /// connections have none, and every connection keeps this record).
    pub tls: Option<Box<TlsInfo>>,
}

impl ConnInfo {
    /// A connection appearing now, with nothing sent or received yet.
    pub fn new(
        id: ConnId,
        dir: Dir,
        addr: SocketAddr,
        state: State,
        target: Option<String>,
    ) -> Self {
        let now = Instant::now();
        ConnInfo {
            id,
            dir,
            addr,
            state,
            since: now,
            last_seen: now,
            last_sent: now,
            unsent_since: None,
            msgs_in: 0,
            bytes_in: 0,
            msgs_out: 0,
            bytes_out: 0,
            target,
            tls: None,
        }
    }
}

/// How a connection's bytes travel. The loop reads and writes through it, never
/// through the raw socket, so a transport that transforms the bytes (TLS) is one
/// more variant here, not a change to the loop.
pub(crate) enum Transport {
    /// Plain TCP: the socket's bytes are the frames.
    Tcp(TcpStream),
    /// TLS over the socket: frames are the decrypted bytes.
    Tls(Box<Tls>),
    /// Accepted by a TLS listener, first bytes not seen yet: a ClientHello makes
    /// it `Tls`; anything else is a plaintext peer (kept or refused by the
    /// listener's policy).
    Sniffing(TcpStream),
}

impl Transport {
    /// The TCP socket underneath.
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) | Transport::Sniffing(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }

    /// Reads decrypted (for TCP: raw) bytes into `buf`; `Ok(0)` is the peer's
    /// end; `WouldBlock` when nothing is ready (a TLS handshake, a sniff).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
            Transport::Sniffing(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes out what `queue` holds, until done, blocked, or `budget` bytes
    /// (TLS: also the handshake's own messages).
    pub(crate) fn write_from(
        &mut self,
        queue: &mut OutQueue,
        budget: usize,
        written: &mut u64,
        app_ready: bool,
    ) -> io::Result<Flush> {
        match self {
            Transport::Tcp(s) => queue.write_to(s, budget, written),
            Transport::Tls(t) => t.write_from(queue, budget, written, app_ready),
            Transport::Sniffing(_) => Ok(Flush::Blocked),
        }
    }

    /// A TLS handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Tls(t) => t.is_handshaking(),
            Transport::Sniffing(_) => true,
            Transport::Tcp(_) => false,
        }
    }

    /// Output of the transport's own (a handshake message) waits to be written.
    pub(crate) fn wants_write(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.wants_write())
    }

    /// What TLS agreed on, for a TLS connection past its handshake.
    pub(crate) fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            Transport::Tls(t) if !t.is_handshaking() => Some(t.info()),
            _ => None,
        }
    }

    /// Says goodbye at the transport's level (TLS close_notify), best effort.
    pub(crate) fn close(&mut self) {
        if let Transport::Tls(t) = self {
            t.close_notify();
        }
    }
}

/// Registration with the poll goes to the socket underneath.
impl mio::event::Source for Transport {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Transport::Tcp(s) | Transport::Sniffing(s) => s.register(r, t, i),
            Transport::Tls(tls) => tls.sock.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Transport::Tcp(s) | Transport::Sniffing(s) => s.reregister(r, t, i),
            Transport::Tls(tls) => tls.sock.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Transport::Tcp(s) | Transport::Sniffing(s) => s.deregister(r),
            Transport::Tls(tls) => tls.sock.deregister(r),
        }
    }
}

/// A live connection owned by the loop.
pub(crate) struct Conn {
    /// How bytes travel; `None` while a dial's host name is being looked up.
    pub(crate) transport: Option<Transport>,
    pub(crate) info: ConnInfo,
    pub(crate) decoder: Decoder,
    pub(crate) out: OutQueue,
    /// Close once the queue is flushed, with this reason.
    pub(crate) close_reason: Option<String>,
    /// In the loop's list of connections to write this turn.
    pub(crate) dirty: bool,
    /// Deadline for a dial or a flush-then-close.
    pub(crate) deadline: Option<Instant>,
    /// Marks waited on with `notify_drained`: each one reached gets its own
    /// `on_drained` call, so several holders (a transfer pump, a quit waiting for
    /// output) never take each other's wake-up.
    pub(crate) drain_marks: SmallVec<[usize; 2]>,
    /// A dial's other addresses (a name with several), last to try first: when a
    /// connect fails, the next one is tried before the dial is reported failed.
    pub(crate) fallbacks: Vec<SocketAddr>,
    /// Its queue went over the input high-water mark and has not yet fallen
    /// under the low one: local input waits (see `Core::input_gated`).
    pub(crate) above_high: bool,
    /// An accepted connection must complete its first frame by then
    /// (`--handshake-timeout`); `None` once it has, or with no limit.
    pub(crate) first_frame_by: Option<Instant>,
    /// Bytes of an unfinished frame this connection holds, as last added to
    /// `Core::pending_bodies`.
    pub(crate) partial: usize,
    /// In `Core::held_reads`, waiting for reads to resume.
    pub(crate) held: bool,
    /// Its reads are held by [`Context::hold_reads`](super::Context::hold_reads).
    pub(crate) hold: bool,
    /// The `--secret` proof in progress (after the TLS handshake, before the
    /// connection is reported up).
    pub(crate) pake: Option<Box<super::pake::Pake>>,
    /// A dial to wrap in TLS once its TCP connect completes.
    pub(crate) dial_tls: Option<Box<DialTls>>,
    /// Malformed frames in a row (`Context::malformed`), and the `msgs_in`
    /// count at the last one: a frame delivered in between breaks the row.
    pub(crate) malformed: (u32, u64),
    /// The notices about this connection being coalesced now.
    pub(crate) run: Option<Box<NoticeRun>>,
}

/// What a TLS dial presents and checks once its TCP connect completes.
pub(crate) type DialTls = (
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// Notices of one kind about one connection within a second: the first is
/// shown, the rest counted and summed up in one line when the second is over.
#[derive(Debug)]
pub(crate) struct NoticeRun {
    pub(crate) kind: &'static str,
    pub(crate) started: Instant,
    pub(crate) more: u32,
}
