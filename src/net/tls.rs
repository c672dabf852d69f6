//! TLS on the event loop: one rustls state machine per connection, fed from and
//! drained to its non-blocking socket, as in rustls's own `tlsserver-mio` and
//! `tlsclient-mio` examples. Also the pieces a mode needs to set TLS up: server
//! and client configurations, certificate pins, and fingerprints.
//!
//! Plaintext queued for a connection waits in its `OutQueue` until the handshake
//! is over, then goes through rustls in pieces bounded by rustls's own buffer
//! limit (64 KiB of TLS output), so memory stays what `--max-queue` allows.

use super::queue::{Flush, OutQueue};
use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// What a finished handshake agreed on, for events and `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLS1.3` or `TLS1.2`.
    pub version: &'static str,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// SHA-256 fingerprint of the peer's certificate, when it showed one.
    pub peer_fingerprint: Option<String>,
}

/// The crypto provider every configuration uses (ring; no OpenSSL linking).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trusted roots (rustls-native-certs: /etc/ssl/certs and the
/// like); certificates that fail to load are skipped.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    roots
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…` (what
/// `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut s = String::with_capacity(95);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Parses a SHA-256 fingerprint: 64 hex digits, colons (or spaces) optional,
/// either case.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a SHA-256 fingerprint (64 hex digits, colons optional)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Compares two byte strings in time that depends only on their length.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The handshake-signature half of a certificate verifier, the same for the
/// server and the client side: the peer must hold the key of the certificate it
/// showed, checked with the provider's algorithms (`self.algorithms`).
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// How a dialler decides to trust the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates issued by these roots (`--tls-ca`, or the system's).
    Roots(Arc<RootCertStore>),
    /// Exactly a certificate with one of these SHA-256 fingerprints
    /// (`--tls-pin`, or a filer peer's key from the roster or the pins file).
    Pins(Vec<[u8; 32]>),
    /// Anything (`--tls-insecure`): encrypted, but not authenticated.
    Anything,
}

/// Checks the server's certificate as [`Trust`] says; handshake signatures are
/// always checked, so the peer holds the key of the certificate it showed.
#[derive(Debug)]
struct Verifier {
    trust: Trust,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let untrusted = |why: &str| {
            rustls::Error::General(format!(
                "certificate not trusted: fingerprint {}{why}",
                fingerprint(end_entity)
            ))
        };
        match &self.trust {
            Trust::Anything => Ok(ServerCertVerified::assertion()),
            Trust::Pins(pins) => {
                let got = Sha256::digest(end_entity.as_ref());
                // Every pin compared, each in constant time.
                let ok = pins.iter().fold(false, |acc, p| acc | same(p, &got));
                if ok {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(untrusted(" (not the pinned key)"))
                }
            }
            Trust::Roots(_) => match &self.webpki {
                Some(v) => v
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                    .map_err(|e| untrusted(&format!(" ({})", tls_reason(&e)))),
                None => Err(untrusted("")),
            },
        }
    }

    signature_checks!();
}

/// A certificate chain and its private key: what a listener, or a dialler asked
/// for a client certificate, presents.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// The leaf certificate's fingerprint.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|c| fingerprint(c))
            .unwrap_or_default()
    }
}

/// What a listener asks of its clients' certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Nothing: no client certificate is asked for.
    None,
    /// One issued by these roots, required (`--tls-client-ca`).
    Roots(Arc<RootCertStore>),
    /// Any key, if the client has one (a filer's peers and ipserver): not
    /// trusted by itself, but its fingerprint tells who holds which name.
    AnyKey,
}

/// Accepts any client certificate (optional), checking only that the client
/// holds its key: the fingerprint is judged above, against pins and the roster.
#[derive(Debug)]
struct AnyClientKey {
    algorithms: WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    signature_checks!();
}

/// A listener's TLS: its identity, and what it asks of client certificates.
pub fn server_config(id: &Identity, clients: ClientAuth) -> Result<Arc<ServerConfig>, String> {
    let p = provider();
    let algorithms = p.signature_verification_algorithms;
    let builder = ServerConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_reason(&e))?;
    let builder = match clients {
        ClientAuth::Roots(roots) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("cannot use the client CA: {e}"))?;
            builder.with_client_cert_verifier(v)
        }
        ClientAuth::AnyKey => {
            builder.with_client_cert_verifier(Arc::new(AnyClientKey { algorithms }))
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| format!("cannot use the certificate and key: {}", tls_reason(&e)))?;
    cfg.alpn_protocols.clear();
    Ok(Arc::new(cfg))
}

/// A dialler's TLS: how it trusts servers, and the client certificate it
/// presents when asked (`--tls-cert`/`--tls-key` on a dialler).
pub fn client_config(trust: Trust, id: Option<&Identity>) -> Result<Arc<ClientConfig>, String> {
    let p = provider();
    let webpki = match &trust {
        Trust::Roots(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), p.clone())
                .build()
                .map_err(|e| format!("cannot use the CA: {e}"))?,
        ),
        _ => None,
    };
    let verifier = Arc::new(Verifier {
        trust,
        webpki,
        algorithms: p.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_reason(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cfg = match id {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| format!("cannot use the client certificate: {}", tls_reason(&e)))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The server name a dial to `HOST:PORT` presents and checks (an IP address
/// for a literal address).
pub fn server_name(target: &str) -> Result<ServerName<'static>, String> {
    let host = match target.rsplit_once(':') {
        Some((h, _)) => h,
        None => target,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| format!("{host:?} is not a host name"))
}

/// A short reason for a TLS error, for `closed` and `connect failed` lines.
pub fn tls_reason(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::General(s) => s.clone(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "peer spoke plaintext or broken TLS".to_string()
        }
        E::NoCertificatesPresented => "the peer presented no certificate".to_string(),
        E::AlertReceived(a) => format!("the peer refused the handshake ({a:?})"),
        E::InvalidCertificate(c) => format!("certificate not trusted ({c:?})"),
        other => format!("TLS error: {other}"),
    }
}

/// True when the first bytes a peer sent start a TLS handshake record (a
/// ClientHello: content type 22, protocol major version 3), which no sockmod
/// frame does in practice (its first two bytes are a little-endian header
/// length; 0x16 0x03 would be a 790-byte header starting with 0x01..=0x04).
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.len() >= 3 && first[0] == 0x16 && first[1] == 0x03 && (0x01..=0x04).contains(&first[2])
}

/// One connection's TLS session over its socket.
pub(crate) struct Tls {
    pub(crate) sock: TcpStream,
    conn: Connection,
    /// The peer closed its side of the TCP connection.
    eof: bool,
}

impl Tls {
    /// The server side of a connection we accepted.
    pub(crate) fn server(sock: TcpStream, cfg: Arc<ServerConfig>) -> io::Result<Tls> {
        let conn = ServerConnection::new(cfg).map_err(|e| io::Error::other(tls_reason(&e)))?;
        Ok(Tls {
            sock,
            conn: conn.into(),
            eof: false,
        })
    }

    /// The client side of a connection we dialled.
    pub(crate) fn client(
        sock: TcpStream,
        cfg: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Tls> {
        let conn =
            ClientConnection::new(cfg, name).map_err(|e| io::Error::other(tls_reason(&e)))?;
        Ok(Tls {
            sock,
            conn: conn.into(),
            eof: false,
        })
    }

    /// Still handshaking: no application data moves yet.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// TLS output (a handshake message, an alert) is waiting to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// What the handshake agreed on.
    pub(crate) fn info(&self) -> TlsInfo {
        let version = match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2",
            _ => "TLS",
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()
            .map(|s| {
                let s = s.suite();
                s.as_str().map_or_else(|| format!("{s:?}"), str::to_string)
            })
            .unwrap_or_default();
        let peer_fingerprint = self
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| fingerprint(c));
        TlsInfo {
            version,
            cipher,
            peer_fingerprint,
        }
    }

    /// Keying material bound to this session (RFC 5705), for binding a higher
    /// protocol (a passphrase proof) to it: a relay between two sessions gets
    /// two different values.
    pub(crate) fn exporter(&self, label: &[u8]) -> Option<[u8; 32]> {
        self.conn
            .export_keying_material([0u8; 32], label, None)
            .ok()
    }

    /// Reads decrypted bytes: `Ok(0)` at the peer's end, `WouldBlock` when none
    /// are ready yet (during the handshake, always).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: to us, the peer closed.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the peer why (an alert), best effort, then fail.
                let _ = self.conn.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, tls_reason(&e)));
            }
        }
    }

    /// Moves queued plaintext through rustls (once the handshake is over) and
    /// writes TLS output, until done, blocked, or `budget` plaintext bytes.
    pub(crate) fn write_from(
        &mut self,
        queue: &mut OutQueue,
        budget: usize,
        written: &mut u64,
        app_ready: bool,
    ) -> io::Result<Flush> {
        let mut done = 0usize;
        loop {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut self.sock) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.conn.is_handshaking() || !app_ready {
                // Plaintext waits for the handshake (and a --secret proof);
                // reading will move them on.
                return Ok(Flush::Blocked);
            }
            let Some(front) = queue.front() else {
                return Ok(Flush::Done);
            };
            if done >= budget {
                return Ok(Flush::Budget);
            }
            // Bounded by rustls's buffer limit: what it takes now, it encrypts.
            let n = self.conn.writer().write(front)?;
            if n == 0 && !self.conn.wants_write() {
                return Ok(Flush::Blocked);
            }
            queue.consume(n);
            done += n;
            *written += n as u64;
        }
    }

    /// Queues bytes of the connection's own (a `--secret` proof frame) ahead
    /// of anything the queue holds; written by the next flush.
    pub(crate) fn send_own(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(bytes)
    }

    /// Sends close_notify, best effort, before the socket is closed.
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.write_tls(&mut self.sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse_back() {
        let fp = fingerprint(b"hello");
        assert_eq!(fp.len(), 95);
        assert!(fp.starts_with("2C:F2:4D:BA"), "{fp}");
        let raw = parse_fingerprint(&fp).unwrap();
        assert_eq!(
            parse_fingerprint(&fp.replace(':', "").to_lowercase()).unwrap(),
            raw
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn constant_time_comparison_agrees_with_equality() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    #[test]
    fn a_client_hello_is_told_from_a_frame() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02]));
        // The filer's identity frame has a 22-byte header: 0x16 0x00.
        assert!(!looks_like_tls(b"\x16\x00TP:Check;ID:bob;Port:9"));
        assert!(!looks_like_tls(b"\x08\x00TP:Check"));
        assert!(!looks_like_tls(&[0x16, 0x03]));
    }

    #[test]
    fn server_names_from_targets() {
        assert!(matches!(
            server_name("127.0.0.1:9000").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:9000").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("example.com:443").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
