//! A node's limits and timers: the options every mode shares (README, "Options").

use super::access::Access;
use super::pake::Secret;
use crate::protocol::DEFAULT_MAX_BODY;
use std::sync::Arc;
use std::time::Duration;

/// Limits and timers of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest body accepted from a peer.
    pub max_body: usize,
    /// Largest outbound queue before a peer is dropped as a slow consumer. Local
    /// input (commands) pauses while any queue is over three quarters of it, and
    /// resumes once every queue is back under half.
    pub max_queue: usize,
    /// Drop a peer whose queued output has waited this long with nothing of it
    /// written (a reader that stopped, or one that trickles).
    pub write_timeout: Option<Duration>,
    /// Most connections at once; more are accepted and closed at once.
    pub max_conns: usize,
    /// Send `TP:Check` on connections we wrote nothing to for this long.
    pub heartbeat: Option<Duration>,
    /// Close connections silent for this long.
    pub idle_timeout: Option<Duration>,
    /// Give up on a dial after this long.
    pub connect_timeout: Duration,
    /// Who may connect (`--allow`, `--deny`), checked at accept.
    pub access: Access,
    /// Most accepted connections at once from one address.
    pub max_conns_per_ip: Option<usize>,
    /// An accepted connection must complete one whole frame within this long.
    pub handshake_timeout: Option<Duration>,
    /// Bytes of partly received frames, summed over every connection; over it,
    /// the connection holding the largest is closed.
    pub max_pending_bodies: usize,
    /// TLS on accepted connections, when listening with it.
    pub tls: Option<TlsListen>,
    /// How TLS dials are verified, and whether every dial uses TLS. Without it,
    /// `tls://` targets are checked against the system's roots.
    pub tls_dial: Option<TlsDial>,
    /// A passphrase every TLS connection must prove (`--secret`) before it is
    /// reported up; a peer without it, or with another, is refused.
    pub secret: Option<Secret>,
}

/// A dialler's TLS policy.
#[derive(Debug, Clone)]
pub struct TlsDial {
    /// The client side's configuration (trust, client certificate).
    pub config: Arc<rustls::ClientConfig>,
    /// Every dial uses TLS (`connect --tls`), not only `tls://` targets.
    pub all: bool,
    /// Certificates are not verified (`--tls-insecure`): each TLS connection
    /// gets a warning.
    pub insecure: bool,
}

/// A listener's TLS policy.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// The server side's configuration (identity, client certificates).
    pub config: Arc<rustls::ServerConfig>,
    /// Also admit peers that speak plaintext on the same port (told apart by
    /// their first bytes): original peers of the filer network. Without it they
    /// are closed with `peer spoke plaintext`.
    pub plaintext_too: bool,
    /// The SHA-256 fingerprint of the certificate it presents.
    pub fingerprint: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body: DEFAULT_MAX_BODY,
            max_queue: 64 << 20,
            write_timeout: Some(Duration::from_secs(10)),
            max_conns: 10_000,
            heartbeat: None,
            idle_timeout: None,
            connect_timeout: Duration::from_secs(10),
            access: Access::default(),
            max_conns_per_ip: None,
            handshake_timeout: None,
            max_pending_bodies: 256 << 20,
            tls: None,
            tls_dial: None,
            secret: None,
        }
    }
}
