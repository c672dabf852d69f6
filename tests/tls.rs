//! End-to-end TLS: the real binary against OpenSSL's own tools (`openssl
//! s_client`/`s_server`, `ncat --ssl`, `socat OPENSSL`), both as a TLS listener
//! (`serve --tls`) and as a TLS dialler (`connect --tls`).
//!
//! The external tools must be installed (`.ci/run` installs them); a missing
//! tool fails the test with a message saying so. Certificates are made in each
//! test with `openssl req`/`openssl x509`. Every `sockmod` started here gets a
//! fresh `XDG_STATE_HOME`, so a generated identity never lands in the real
//! state directory. External tools bind port 0 and their port is read from
//! `/proc` (they do not all print it).

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------

/// Fails (never skips) when `name` is not installed.
fn require_tool(name: &str) {
    let probe = match name {
        "openssl" => "version",
        "socat" => "-V",
        _ => "--version",
    };
    match Command::new(name)
        .arg(probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{name}` is not installed, and the TLS tests need it: \
             apt-get install -y ncat socat openssl (.ci/run does this)"
        ),
        Err(e) => panic!("cannot run `{name} {probe}`: {e}"),
    }
}

/// Raw bytes of one output stream of a tool, filled by a reader thread.
#[derive(Clone, Default)]
struct Bytes {
    inner: Arc<(Mutex<Captured>, Condvar)>,
}

/// What a stream brought so far, and whether it has ended.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    ended: bool,
}

impl Bytes {
    fn spawn_reader(&self, mut r: impl Read + Send + 'static) -> JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        me.inner
                            .0
                            .lock()
                            .unwrap()
                            .bytes
                            .extend_from_slice(&buf[..n]);
                        me.inner.1.notify_all();
                    }
                }
            }
            me.inner.0.lock().unwrap().ended = true;
            me.inner.1.notify_all();
        })
    }

    /// Waits until `cond(bytes so far, ended)` holds; false after `timeout`.
    fn wait(&self, timeout: Duration, cond: impl Fn(&[u8], bool) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.0.lock().unwrap();
        loop {
            if cond(&st.bytes, st.ended) {
                return true;
            }
            let now = Instant::now();
            if st.ended || now >= deadline {
                return false;
            }
            st = self.inner.1.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    fn wait_for(&self, needle: &[u8], timeout: Duration) -> bool {
        self.wait(timeout, |b, _| contains(b, needle))
    }

    fn get(&self) -> Vec<u8> {
        self.inner.0.lock().unwrap().bytes.clone()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// An external tool with piped stdio; its stdin stays open until
/// [`Tool::close_stdin`] (`s_server` and friends stop printing what they receive
/// once it closes). Killed on drop.
struct Tool {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Bytes,
    err: Bytes,
    readers: Vec<JoinHandle<()>>,
}

impl Tool {
    fn spawn(program: &str, args: &[&str]) -> Tool {
        require_tool(program);
        let what = format!("{program} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let out = Bytes::default();
        let err = Bytes::default();
        let readers = vec![
            out.spawn_reader(child.stdout.take().expect("stdout")),
            err.spawn_reader(child.stderr.take().expect("stderr")),
        ];
        Tool {
            what,
            stdin: child.stdin.take(),
            child,
            out,
            err,
            readers,
        }
    }

    fn context(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            String::from_utf8_lossy(&self.out.get()),
            String::from_utf8_lossy(&self.err.get())
        )
    }

    fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to {}: {e}", self.what));
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until `needle` shows on the tool's stdout, or panics.
    fn expect_out(&self, what: &str, needle: &[u8]) {
        assert!(
            self.out.wait_for(needle, TIMEOUT),
            "{what}: {needle:?} not on stdout within {TIMEOUT:?}\n{}",
            self.context()
        );
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                let left = deadline.saturating_duration_since(Instant::now());
                self.out.wait(left, |_, eof| eof);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The TCP port the tool listens on (read from /proc once it listens).
    fn listening_port(&mut self) -> u16 {
        let pid = self.child.id();
        let mut port = None;
        let up = wait_until(TIMEOUT, || {
            port = listen_port_of(pid);
            port.is_some() || self.child.try_wait().ok().flatten().is_some()
        });
        port.unwrap_or_else(|| {
            panic!(
                "{} did not listen within {TIMEOUT:?} (gave up: {up})\n{}",
                self.what,
                self.context()
            )
        })
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The port of an IPv4 TCP socket in LISTEN state held by process `pid`.
fn listen_port_of(pid: u32) -> Option<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    tcp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
            u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()
        } else {
            None
        }
    })
}

/// Runs `openssl ARGS` (with `input` on stdin) to completion; returns stdout.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    require_tool("openssl");
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run openssl {args:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("openssl output");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The `AB:CD:…` of `openssl x509 -fingerprint -sha256` output.
fn parse_openssl_fingerprint(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    text.trim()
        .split_once('=')
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .1
        .to_string()
}

/// SHA-256 fingerprint of a PEM certificate file, as openssl prints it.
fn fingerprint_of(cert: &Path) -> String {
    parse_openssl_fingerprint(&openssl(
        &["x509", "-in", s(cert), "-noout", "-fingerprint", "-sha256"],
        b"",
    ))
}

/// SHA-256 fingerprint of the first PEM certificate in `text`.
fn fingerprint_of_pem(text: &[u8]) -> String {
    parse_openssl_fingerprint(&openssl(
        &["x509", "-noout", "-fingerprint", "-sha256"],
        text,
    ))
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A fresh empty directory.
fn fresh_dir(name: &str) -> PathBuf {
    let d = tmp_path(name);
    std::fs::create_dir_all(&d).expect("create temporary directory");
    d
}

/// A self-signed server certificate for 127.0.0.1/localhost: (cert, key).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    args.extend([
        "-keyout",
        s(&key),
        "-out",
        s(&cert),
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ]);
    openssl(&args, b"");
    (cert, key)
}

/// A CA with a server certificate (for 127.0.0.1/localhost) and a client
/// certificate it signed.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    args.extend([
        "-keyout",
        s(&ca_key),
        "-out",
        s(&ca),
        "-days",
        "2",
        "-subj",
        "/CN=sockmod test CA",
    ]);
    openssl(&args, b"");
    let issue = |name: &str, cn: &str, serial: &str, ext: &str| {
        let (cert, key, csr, extfile) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.csr")),
            dir.join(format!("{name}.ext")),
        );
        std::fs::write(&extfile, ext).expect("write extensions");
        let mut args = vec!["req"];
        args.extend(EC);
        args.extend(["-keyout", s(&key), "-out", s(&csr), "-subj", cn]);
        openssl(&args, b"");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                s(&csr),
                "-CA",
                s(&ca),
                "-CAkey",
                s(&ca_key),
                "-set_serial",
                serial,
                "-days",
                "2",
                "-extfile",
                s(&extfile),
                "-out",
                s(&cert),
            ],
            b"",
        );
        (cert, key)
    };
    let server = issue(
        "server",
        "/CN=localhost",
        "2",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    );
    let client = issue(
        "client",
        "/CN=sockmod test client",
        "3",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    Pki { ca, server, client }
}

// ---------------------------------------------------------------------------
// sockmod
// ---------------------------------------------------------------------------

/// `sockmod ARGS...` with `XDG_STATE_HOME=state`.
fn sockmod(state: &Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("XDG_STATE_HOME", state);
    Proc::spawn_cmd(cmd)
}

/// `serve --tls --bind 127.0.0.1:0 --json EXTRA...`: the process, its address
/// and the fingerprint it announced (checked to be the same on stdout and
/// stderr).
fn serve_tls(state: &Path, extra: &[&str]) -> (Proc, SocketAddr, String) {
    let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--json", "--tls"];
    args.extend_from_slice(extra);
    let p = sockmod(state, &args);
    let v = p.expect_event("listening", &[]);
    let addr: SocketAddr = v["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("listening event without an address: {v}"));
    let fp = v["tls"]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("listening event without tls.fingerprint: {v}"))
        .to_string();
    assert_eq!(
        fp.len(),
        95,
        "fingerprint {fp:?} is not AB:CD:… of 32 bytes"
    );
    let line = p.expect_err_line("`listening on`", |l| l.starts_with("listening on "));
    assert_eq!(line, format!("listening on {addr} (TLS, SHA-256 {fp})"));
    (p, addr, fp)
}

/// The server's JSON event `event` for the connection from `addr`.
fn expect_event_from(p: &Proc, event: &str, addr: &str) -> Value {
    p.expect_json(&format!("{event} from {addr}"), |v| {
        v["event"] == event && v["addr"] == addr
    })
}

/// The server shows a message whose header says `info:INFO`; returns the event.
fn expect_message(p: &Proc, info: &str) -> Value {
    p.expect_json(&format!("message info={info}"), |v| {
        v["event"] == "message" && v["header"]["info"] == info
    })
}

/// The wire bytes of `send * TEXT` (no body).
fn info_frame(text: &str) -> Vec<u8> {
    raw_frame(&format!("CL:0;info:{text}"), b"")
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Must-show item 1: `serve --tls` generates an identity in the state directory; openssl sees
/// exactly the certificate whose fingerprint `listening` announced; a frame
/// piped through `openssl s_client` is shown; a second run keeps the identity.
#[test]
fn generated_identity_is_what_openssl_sees_and_stays() {
    let state = fresh_dir("state");
    let (srv, addr, fp) = serve_tls(&state, &[]);
    let keys = state.join("sockmod/keys");
    let crt = keys.join("serve.crt");
    assert!(
        crt.is_file() && keys.join("serve.key").is_file(),
        "no generated identity in {}: {:?}",
        keys.display(),
        dir_entries(&keys)
    );
    assert_eq!(fingerprint_of(&crt), fp, "the generated serve.crt");

    // The certificate openssl is shown in the handshake.
    let target = addr.to_string();
    let mut show = Tool::spawn("openssl", &["s_client", "-connect", &target, "-showcerts"]);
    show.close_stdin();
    assert!(
        show.wait_exit(TIMEOUT).is_some(),
        "s_client -showcerts did not finish\n{}",
        show.context()
    );
    let seen = fingerprint_of_pem(&show.out.get());
    figure("fingerprint seen by s_client", &seen);
    assert_eq!(seen, fp, "the certificate s_client saw");

    // A frame through s_client.
    let t0 = Instant::now();
    let mut c = Tool::spawn("openssl", &["s_client", "-connect", &target, "-quiet"]);
    c.write(&raw_frame("CL:0;info:via s_client", b""));
    let m = expect_message(&srv, "via s_client");
    figure(
        "s_client start to message shown",
        format!("{:?}", t0.elapsed()),
    );
    let from = m["addr"].as_str().expect("addr").to_string();
    let conn = srv.expect_json("connected of the s_client", |v| {
        v["event"] == "connected" && v["addr"] == from.as_str()
    });
    assert_eq!(conn["tls"]["version"], "TLS1.3", "{conn}");
    assert!(
        conn["tls"]["cipher"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{conn}"
    );
    assert!(
        conn["tls"].get("peer_fingerprint").is_none(),
        "s_client showed no certificate: {conn}"
    );
    assert_eq!(m["body_len"], 0);
    drop(c);
    drop(srv);

    // The same state directory: the same identity.
    let before = std::fs::read(&crt).expect("read serve.crt");
    let (_srv2, _addr2, fp2) = serve_tls(&state, &[]);
    assert_eq!(fp2, fp, "the second run's fingerprint");
    assert_eq!(std::fs::read(&crt).expect("read serve.crt"), before);
}

/// Must-show item 2: `ncat --ssl` and `socat OPENSSL:` as clients of `serve --tls`.
#[test]
fn ncat_and_socat_clients_reach_serve_tls() {
    let state = fresh_dir("state");
    let (srv, addr, _fp) = serve_tls(&state, &[]);
    let port = addr.port().to_string();

    let mut nc = Tool::spawn("ncat", &["--ssl", "127.0.0.1", &port]);
    nc.write(&raw_frame("CL:0;info:via ncat", b""));
    let m = expect_message(&srv, "via ncat");
    let conn = expect_event_from(&srv, "connected", m["addr"].as_str().expect("addr"));
    assert_eq!(conn["tls"]["version"], "TLS1.3", "{conn}");

    let so_target = format!("OPENSSL:127.0.0.1:{port},verify=0");
    let mut so = Tool::spawn("socat", &["-", &so_target]);
    so.write(&raw_frame("CL:5;info:via socat", b"hello"));
    let m = expect_message(&srv, "via socat");
    assert_eq!(m["body_len"], 5, "{m}");
    assert_eq!(m["body"], "hello", "{m}");
    let conn = expect_event_from(&srv, "connected", m["addr"].as_str().expect("addr"));
    assert_eq!(conn["tls"]["version"], "TLS1.3", "{conn}");
    drop((nc, so));
}

/// Must-show item 3: `connect --tls --tls-pin` against `openssl s_server`: a wrong pin fails
/// the dial (exit 1, nothing reaches the server); the right pin delivers.
#[test]
fn connect_with_pin_to_openssl_s_server() {
    let dir = fresh_dir("certs");
    let state = fresh_dir("state");
    let (cert, key) = self_signed(&dir, "server");
    let fp = fingerprint_of(&cert);
    let s_server = |cert: &Path, key: &Path| {
        let mut t = Tool::spawn(
            "openssl",
            &[
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-cert",
                s(cert),
                "-key",
                s(key),
                "-naccept",
                "1",
                "-quiet",
            ],
        );
        let port = t.listening_port();
        (t, format!("127.0.0.1:{port}"))
    };

    // A wrong pin: the last byte of the fingerprint changed.
    let wrong = format!(
        "{}{}",
        &fp[..93],
        if &fp[93..] == "00" { "01" } else { "00" }
    );
    let (mut srv, target) = s_server(&cert, &key);
    let mut c = sockmod(&state, &["connect", "--tls", "--tls-pin", &wrong, &target]);
    c.send_line("send * hello");
    c.close_stdin();
    let line = c.expect_line("connect failed", |l| l.starts_with("! #1 "));
    assert_eq!(
        line,
        format!(
            "! #1 {target} connect failed: certificate not trusted: fingerprint {fp} (not the pinned key)"
        )
    );
    assert_eq!(c.expect_exit(TIMEOUT), 1, "{}", c.context());
    // s_server -naccept 1 ends with the refused connection; all it printed is in.
    assert!(
        srv.wait_exit(TIMEOUT).is_some(),
        "s_server still runs\n{}",
        srv.context()
    );
    assert!(
        !contains(&srv.out.get(), b"hello"),
        "the server got data over a refused handshake\n{}",
        srv.context()
    );

    // The right pin (lower case, no colons: both accepted).
    let pin = fp.replace(':', "").to_lowercase();
    let (srv, target) = s_server(&cert, &key);
    let t0 = Instant::now();
    let mut c = sockmod(
        &state,
        &["connect", "--json", "--tls", "--tls-pin", &pin, &target],
    );
    let v = c.expect_event("connected", &[]);
    figure(
        "connect start to TLS connected (s_server)",
        format!("{:?}", t0.elapsed()),
    );
    assert_eq!(v["tls"]["version"], "TLS1.3", "{v}");
    assert_eq!(v["tls"]["peer_fingerprint"], fp.as_str(), "{v}");
    c.send_line("send * hello");
    c.close_stdin();
    assert_eq!(c.expect_exit(TIMEOUT), 0, "{}", c.context());
    srv.expect_out("the frame at s_server", &info_frame("hello"));
}

/// Must-show item 4: `connect --tls --tls-ca` against `ncat --ssl -l` and (`tls://` form)
/// against `socat OPENSSL-LISTEN`, both with a certificate the CA issued.
#[test]
fn connect_with_ca_to_ncat_and_socat_listeners() {
    let dir = fresh_dir("certs");
    let state = fresh_dir("state");
    let p = pki(&dir);
    let (cert, key) = (s(&p.server.0), s(&p.server.1));
    let server_fp = fingerprint_of(&p.server.0);

    let mut nc = Tool::spawn(
        "ncat",
        &[
            "--ssl",
            "-l",
            "--ssl-cert",
            cert,
            "--ssl-key",
            key,
            "127.0.0.1",
            "0",
        ],
    );
    let target = format!("127.0.0.1:{}", nc.listening_port());
    let mut c = sockmod(
        &state,
        &["connect", "--json", "--tls", "--tls-ca", s(&p.ca), &target],
    );
    let v = c.expect_event("connected", &[]);
    assert_eq!(v["tls"]["version"], "TLS1.3", "{v}");
    assert_eq!(v["tls"]["peer_fingerprint"], server_fp.as_str(), "{v}");
    c.send_line("send * to ncat");
    c.close_stdin();
    assert_eq!(c.expect_exit(TIMEOUT), 0, "{}", c.context());
    nc.expect_out("the frame at ncat", &info_frame("to ncat"));

    let listen = format!("OPENSSL-LISTEN:0,bind=127.0.0.1,cert={cert},key={key},verify=0");
    let mut so = Tool::spawn("socat", &[&listen, "-"]);
    let target = format!("tls://127.0.0.1:{}", so.listening_port());
    let mut c = sockmod(
        &state,
        &["connect", "--json", "--tls-ca", s(&p.ca), &target],
    );
    let v = c.expect_event("connected", &[]);
    assert_eq!(v["tls"]["version"], "TLS1.3", "{v}");
    assert_eq!(v["tls"]["peer_fingerprint"], server_fp.as_str(), "{v}");
    c.send_line("send * to socat");
    c.close_stdin();
    assert_eq!(c.expect_exit(TIMEOUT), 0, "{}", c.context());
    so.expect_out("the frame at socat", &info_frame("to socat"));
}

/// Must-show item 5: mTLS: with `--tls-client-ca` a dialler without a client certificate is
/// refused and its message never shown; one with a certificate the CA issued
/// is admitted.
#[test]
fn client_certificates_are_required_with_tls_client_ca() {
    let dir = fresh_dir("certs");
    let state = fresh_dir("state");
    let p = pki(&dir);
    let (srv, addr, fp) = serve_tls(
        &state,
        &[
            "--tls-cert",
            s(&p.server.0),
            "--tls-key",
            s(&p.server.1),
            "--tls-client-ca",
            s(&p.ca),
        ],
    );
    assert_eq!(fp, fingerprint_of(&p.server.0), "the listener's given cert");
    assert!(
        !state.join("sockmod/keys/serve.crt").exists(),
        "an identity was generated although --tls-cert was given"
    );
    let target = addr.to_string();

    // No client certificate. Under TLS 1.3 the client finishes its side of the
    // handshake before the server has checked it, so the dialler may first say
    // `connected`; the refusal then closes it.
    let mut bare = sockmod(
        &state,
        &["connect", "--json", "--tls", "--tls-ca", s(&p.ca), &target],
    );
    bare.send_line("send * without a certificate");
    let end = bare.expect_json("closed or connect_failed", |v| {
        v["event"] == "closed" || v["event"] == "connect_failed"
    });
    figure("no-certificate dialler's end", &end);
    let refused = srv.expect_json("closed (no client certificate)", |v| {
        v["event"] == "closed"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("certificate"))
    });
    figure("server's reason", &refused["reason"]);
    bare.close_stdin();
    let code = bare.expect_exit(TIMEOUT);
    figure("no-certificate dialler's exit status", code);

    // With a client certificate the CA issued.
    let mut good = sockmod(
        &state,
        &[
            "connect",
            "--json",
            "--tls",
            "--tls-ca",
            s(&p.ca),
            "--tls-cert",
            s(&p.client.0),
            "--tls-key",
            s(&p.client.1),
            &target,
        ],
    );
    let v = good.expect_event("connected", &[]);
    assert_eq!(v["tls"]["peer_fingerprint"], fp.as_str(), "{v}");
    good.send_line("send * with a certificate");
    good.close_stdin();
    assert_eq!(good.expect_exit(TIMEOUT), 0, "{}", good.context());
    let m = expect_message(&srv, "with a certificate");
    let conn = expect_event_from(&srv, "connected", m["addr"].as_str().expect("addr"));
    assert_eq!(conn["tls"]["version"], "TLS1.3", "{conn}");
    assert_eq!(
        conn["tls"]["peer_fingerprint"],
        fingerprint_of(&p.client.0).as_str(),
        "the server names the client's certificate: {conn}"
    );
    // The refused dialler's message came first, if at all: it never showed.
    assert_eq!(
        srv.count_events("message", &[]),
        1,
        "only the certified client's message may show\n{}",
        srv.context()
    );
}

/// Must-show item 6: A TLS listener closes a plaintext client with `peer spoke plaintext`,
/// and with `--handshake-timeout 1s` a silent connection, or one that stops
/// after the first bytes of a ClientHello, with `handshake timed out`.
#[test]
fn plaintext_and_silent_clients_are_closed() {
    let state = fresh_dir("state");
    let (srv, addr, _fp) = serve_tls(&state, &["--handshake-timeout", "1s"]);

    let mut plain = Client::connect(addr);
    plain.send_raw(&raw_frame("CL:0;info:plaintext", b""));
    let me = plain.local_addr().to_string();
    let v = expect_event_from(&srv, "closed", &me);
    assert_eq!(
        v["reason"], "peer spoke plaintext (this listener requires TLS)",
        "{v}"
    );
    assert!(
        plain.wait_closed(TIMEOUT),
        "the plaintext client is still open"
    );

    for (what, first) in [
        ("silent", &b""[..]),
        ("half a ClientHello", &b"\x16\x03"[..]),
    ] {
        let t0 = Instant::now();
        let mut sock = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        sock.write_all(first).expect("write");
        let me = sock.local_addr().expect("local_addr").to_string();
        let took = time_to_close(&mut sock, TIMEOUT)
            .unwrap_or_else(|| panic!("{what}: still open after {TIMEOUT:?}"));
        figure(
            &format!("{what} connection closed after"),
            format!("{took:?}"),
        );
        let v = expect_event_from(&srv, "closed", &me);
        assert_eq!(v["reason"], "handshake timed out", "{what}: {v}");
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{what}: closed after {:?}, before the 1s handshake timeout",
            t0.elapsed()
        );
    }
    assert_eq!(srv.count_events("message", &[]), 0, "{}", srv.context());
    assert_eq!(
        srv.count_events("connected", &[]),
        0,
        "no connection got past its handshake\n{}",
        srv.context()
    );
}

/// Must-show item 7: `--tls-insecure` warns on every connection, naming it; the JSON
/// `connected` event carries the TLS object; `list` shows `open TLS1.3`.
#[test]
fn insecure_dials_warn_and_show_tls_in_events_and_list() {
    let state = fresh_dir("state");
    let (srv, addr, fp) = serve_tls(&state, &[]);
    let warning = |id: u32| {
        format!(
            "warning: #{id} {addr}: TLS certificate not verified (--tls-insecure): \
             anyone on the path can read and change this connection"
        )
    };

    // JSON.
    let t0 = Instant::now();
    let mut j = sockmod(
        &state,
        &[
            "connect",
            "--json",
            "--tls-insecure",
            &format!("tls://{addr}"),
        ],
    );
    let v = j.expect_event("connected", &[]);
    figure(
        "connect start to TLS connected (serve --tls)",
        format!("{:?}", t0.elapsed()),
    );
    assert_eq!(v["tls"]["version"], "TLS1.3", "{v}");
    assert!(
        v["tls"]["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS13_")),
        "{v}"
    );
    assert_eq!(v["tls"]["peer_fingerprint"], fp.as_str(), "{v}");
    let w = warning(1);
    j.expect_err_line("the --tls-insecure warning", |l| l == w);
    j.close_stdin();
    assert_eq!(j.expect_exit(TIMEOUT), 0, "{}", j.context());

    // Human, with a second dial from the prompt: each gets its warning.
    let mut h = sockmod(
        &state,
        &["connect", "--tls", "--tls-insecure", &addr.to_string()],
    );
    let plus = format!("+ #1 out {addr} [TLS1.3]");
    h.expect_line("the human connected line", |l| l.starts_with(&plus));
    let w1 = warning(1);
    h.expect_err_line("the first warning", |l| l == w1);
    h.send_line(&format!("connect {addr}"));
    let plus2 = format!("+ #2 out {addr} [TLS1.3]");
    h.expect_line("the second connected line", |l| l.starts_with(&plus2));
    let w2 = warning(2);
    h.expect_err_line("the second warning", |l| l == w2);
    h.send_line("list");
    for id in ["#1", "#2"] {
        h.expect_line(&format!("{id} in `list` as open TLS1.3"), |l| {
            l.starts_with(&format!("{id} ")) && l.contains("open TLS1.3")
        });
    }
    h.close_stdin();
    assert_eq!(h.expect_exit(TIMEOUT), 0, "{}", h.context());
    assert_eq!(
        h.err.count(|l| l.text.starts_with("warning:")),
        2,
        "one warning per connection\n{}",
        h.context()
    );
    // The server saw the three TLS connections come up.
    let up = srv
        .out
        .wait_count(|l| is_event_line(l, "connected", &[]), 3, TIMEOUT);
    assert_eq!(up, 3, "{}", srv.context());
}
