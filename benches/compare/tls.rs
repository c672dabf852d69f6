//! The TLS rows: bulk frames into `serve --tls` against socat `OPENSSL-LISTEN`,
//! a filer → filer file over TLS against the same with `--plaintext`, and full
//! handshakes per second against `openssl s_server`.
//!
//! One certificate (ECDSA P-256, made by `openssl req`) serves sockmod and the
//! references alike; sockmod's children get `XDG_STATE_HOME` in the bench's
//! own directory, so nothing is written to the user's state (filer keys, pins).

use super::{
    FilerProc, KillOnDrop, LineReader, Res, Serve, Watchdog, big_frame, connect_retry, free_port,
    have, listen_queue, listening_addr_in, sockmod_bin,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the TLS rows keep their certificate and sockmod's state directory.
pub fn work_dir() -> PathBuf {
    Path::new(super::MANIFEST_DIR).join("target/bench-tls")
}

/// The state directory given to sockmod's children (`XDG_STATE_HOME`).
pub fn state_dir() -> PathBuf {
    work_dir().join("state")
}

/// A certificate and key (PEM) for every TLS server of these rows.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes the certificate once per bench run (a fresh state directory too).
pub fn make_cert() -> Res<Cert> {
    have("openssl")?;
    let dir = work_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(state_dir()).map_err(|e| e.to_string())?;
    let c = Cert {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&c.key)
        .arg("-out")
        .arg(&c.cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !st.success() {
        return Err("openssl req failed".into());
    }
    Ok(c)
}

fn serve_tls(c: &Cert, extra: &[&str]) -> Res<Serve> {
    let cert = c.cert.to_string_lossy();
    let key = c.key.to_string_lossy();
    let mut args = vec!["--tls", "--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    Serve::start_env(&args, &[("XDG_STATE_HOME", state_dir().as_os_str())])
}

// --- bulk ------------------------------------------------------------------

/// A TLS client connection to `addr` (any certificate accepted: both servers
/// show the same one), handshake done, and the whole ciphertext of `n` 1 MiB
/// frames followed by close_notify.
///
/// Why the sender is not the bottleneck: rustls (sockmod's own TLS library,
/// no new dependency) encrypts every record before the clock starts, so while
/// the clock runs the sender does nothing but write(2) bytes that are ready, as
/// the plaintext bulk row's sender does. The figure is then what the receiver
/// can decrypt and take (TLS 1.3, AES-256-GCM with both servers), not what the
/// sender can encrypt. TLS 1.3 tickets the servers send are left unread.
fn tls_sender(addr: SocketAddr, n: usize) -> Res<(TcpStream, Vec<u8>, usize)> {
    let cfg = sockmod::net::client_config(sockmod::net::Trust::Anything, None)?;
    let name = sockmod::net::server_name("127.0.0.1:0")?;
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let mut s = connect_retry(addr)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut s)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    if super::debug() {
        eprintln!(
            "    TLS: {:?} {:?}",
            conn.protocol_version(),
            conn.negotiated_cipher_suite().map(|c| c.suite())
        );
    }
    let frame = big_frame();
    let mut out = Vec::with_capacity(n * (frame.len() + frame.len() / 1024 + 64) + 4096);
    for _ in 0..n {
        for chunk in frame.chunks(16 << 10) {
            let mut w = conn.writer();
            w.write_all(chunk).map_err(|e| e.to_string())?;
            while conn.wants_write() {
                conn.write_tls(&mut out).map_err(|e| e.to_string())?;
            }
        }
    }
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(&mut out).map_err(|e| e.to_string())?;
    }
    Ok((s, out, n * frame.len()))
}

/// 1 MiB frames over TLS into `serve --tls --json --body-format none`: bytes/s
/// of frames, until the last message line.
pub fn bulk_sockmod(c: &Cert, bytes: usize) -> Res<f64> {
    let mut srv = serve_tls(c, &["--body-format", "none"])?;
    let n = bytes >> 20;
    let (s, data, total) = tls_sender(srv.addr, n)?;
    // The `connected` line comes once the handshake is done.
    srv.out.skip_lines(1)?;
    let _watchdog = Watchdog::new(vec![srv.pid()], Duration::from_secs(120));
    let t0 = Instant::now();
    // Not `stream_in`: its one read would return on the session tickets the
    // server sent, and closing a socket with unread bytes resets it, which
    // throws away what serve has not read yet. This keeps the socket open
    // (reading whatever comes) until serve closes it.
    let mut s = s;
    std::thread::spawn(move || {
        if s.write_all(&data).is_err() {
            return;
        }
        let mut b = [0u8; 4096];
        while matches!(s.read(&mut b), Ok(k) if k > 0) {}
    });
    // One line per frame; a `closed` line before the last one is a failure.
    for k in 0..n {
        let l = srv.out.next_line()?;
        if !l.contains("\"event\":\"message\"") {
            return Err(format!("after {k} of {n} frames: {l}"));
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    Ok(total as f64 / dt)
}

/// The same ciphertext into `socat OPENSSL-LISTEN` writing to /dev/null.
pub fn bulk_socat(c: &Cert, bytes: usize) -> Res<f64> {
    have("socat")?;
    let port = free_port()?;
    let child = Command::new("socat")
        .args([
            "-u".to_string(),
            // socat's best: with its default 8 KiB buffer it reads each 16 KiB
            // TLS record in two calls and runs slower.
            "-b".to_string(),
            "131072".to_string(),
            format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,verify=0,cert={},key={}",
                c.cert.display(),
                c.key.display()
            ),
            "OPEN:/dev/null".to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run socat: {e}"))?;
    let mut p = KillOnDrop(child);
    wait_listening(port)?;
    let n = bytes >> 20;
    let (mut s, data, total) = tls_sender(SocketAddr::from(([127, 0, 0, 1], port)), n)?;
    let t0 = Instant::now();
    s.write_all(&data).map_err(|e| e.to_string())?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let st = p.0.wait().map_err(|e| e.to_string())?;
    let dt = t0.elapsed().as_secs_f64();
    if !st.success() {
        return Err(format!("socat failed: {st}"));
    }
    Ok(total as f64 / dt)
}

/// Waits until something listens on 127.0.0.1:`port`, without connecting.
fn wait_listening(port: u16) -> Res<()> {
    let until = Instant::now() + Duration::from_secs(10);
    while listen_queue(port).is_none() {
        if Instant::now() > until {
            return Err(format!("nothing listens on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

// --- file ------------------------------------------------------------------

/// `sockmod ipserver` on a free port, its output drained.
fn ipserver() -> Res<(KillOnDrop, String)> {
    let mut child = Command::new(sockmod_bin())
        .args([
            "ipserver",
            "--bind",
            "127.0.0.1:0",
            "--json",
            "--interval",
            "200ms",
        ])
        .env("XDG_STATE_HOME", state_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", sockmod_bin()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let p = KillOnDrop(child);
    let mut out = LineReader::new(stdout);
    let l = out.until("\"event\":\"listening\"")?;
    let addr =
        listening_addr_in(&l).ok_or_else(|| format!("unexpected line from ipserver: {l}"))?;
    drain(out);
    Ok((p, addr.to_string()))
}

/// Reads a child's output to its end on a thread, so it never blocks on it.
fn drain<R: std::io::Read + Send + 'static>(mut out: LineReader<R>) {
    std::thread::spawn(move || while out.skip_lines(1 << 20).is_ok() {});
}

/// A filer → filer file, as the file row sends it, but found through an
/// ipserver: `sendfile bob FILE` once bob is in alice's roster. Lone filers
/// (`connect ADDR`, as the file row does) talk plaintext: a dial of an address
/// that is not in the roster has no key to pin. By name, alice dials bob over
/// TLS pinned to the key the ipserver reported; with `--plaintext` on both, the
/// same steps run in plaintext. Checks which one it got. Seconds.
pub fn file_filers(src: &Path, dir: &Path, bytes: usize, plaintext: bool) -> Res<f64> {
    let inbox = dir.join("inbox-tls");
    let _ = std::fs::remove_dir_all(&inbox);
    let (ips, ips_addr) = ipserver()?;
    let mut extra = vec!["--report-interval", "200ms"];
    if plaintext {
        extra.push("--plaintext");
    }
    let state = state_dir();
    let mut bob = FilerProc::start_with("bob", &inbox, &ips_addr, &extra, Some(&state))?;
    let mut alice = FilerProc::start_with(
        "alice",
        &dir.join("inbox-alice"),
        &ips_addr,
        &extra,
        Some(&state),
    )?;
    let _watchdog = Watchdog::new(
        vec![bob.proc.0.id(), alice.proc.0.id(), ips.0.id()],
        Duration::from_secs(180),
    );
    // bob is in alice's roster.
    loop {
        let l = alice.out.next_line()?;
        if l.contains("\"event\":\"peer_online\"") && l.contains("\"id\":\"bob\"") {
            break;
        }
    }
    let t0 = Instant::now();
    alice.send(&format!("sendfile bob {}", src.display()))?;
    loop {
        let l = bob.out.next_line()?;
        if l.contains("\"event\":\"transfer\"") && l.contains("\"dir\":\"recv\"") {
            if l.contains("\"state\":\"done\"") {
                break;
            }
            if l.contains("\"state\":\"failed\"") {
                return Err(format!("transfer failed: {l}"));
            }
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    let l = alice.out.until("\"event\":\"connected\"")?;
    if l.contains("\"tls\":") == plaintext {
        return Err(format!(
            "expected a {} link: {l}",
            if plaintext { "plaintext" } else { "TLS" }
        ));
    }
    let got = std::fs::metadata(inbox.join(src.file_name().unwrap_or_default()))
        .map(|m| m.len() as usize)
        .map_err(|e| format!("received file: {e}"))?;
    if got != bytes {
        return Err(format!("received {got} bytes of {bytes}"));
    }
    let _ = std::fs::remove_dir_all(&inbox);
    Ok(dt)
}

// --- handshakes ------------------------------------------------------------

/// `openssl s_time -new` against 127.0.0.1:`port` for `secs`: full handshakes
/// (no resumption), one after the other, per second of the client's wall time.
fn s_time(port: u16, secs: u64) -> Res<f64> {
    let t0 = Instant::now();
    let o = Command::new("openssl")
        .args(["s_time", "-connect", &format!("127.0.0.1:{port}"), "-new"])
        .args(["-time", &secs.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let dt = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&o.stdout);
    // "2534 connections in 1.14s; 2222.81 connections/user sec, …": the count.
    let n: f64 = text
        .lines()
        .find(|l| l.contains(" connections in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("s_time gave no count: {}", text.trim()))?;
    if n == 0.0 {
        return Err("s_time completed no handshake".into());
    }
    Ok(n / dt)
}

/// Handshakes per second against `serve --tls --quiet` (its events drained).
pub fn handshakes_sockmod(c: &Cert, secs: u64) -> Res<f64> {
    have("openssl")?;
    let srv = serve_tls(c, &["--quiet"])?;
    let port = srv.addr.port();
    let Serve { proc, out, .. } = srv;
    drain(out);
    let r = s_time(port, secs);
    drop(proc);
    r
}

/// The same against `openssl s_server` with the same certificate.
pub fn handshakes_openssl(c: &Cert, secs: u64) -> Res<f64> {
    have("openssl")?;
    let port = free_port()?;
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-quiet",
        ])
        .arg("-cert")
        .arg(&c.cert)
        .arg("-key")
        .arg(&c.key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let _p = KillOnDrop(child);
    wait_listening(port)?;
    s_time(port, secs)
}
