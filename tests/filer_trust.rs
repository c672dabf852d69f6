//! End-to-end tests of the filer's identity and encryption (every filer has a
//! key; links between filers are TLS pinned to the peer's key; names are bound
//! to keys at the ipserver and at each filer), through the real binary on
//! loopback: a raw-socket relay that records what passes between two filers,
//! original (plaintext) peers, impostors, a plaintext squatter at the
//! ipserver, a changed key, and `--require-encryption`.
//!
//! The relay is put on the path a filer really dials by name: the peer behind
//! it listens on 127.0.0.2:R while the relay listens on 127.0.0.1:R, and the
//! ipserver lists the peer at the address its report came from (127.0.0.1)
//! with the port it reported (R), so `send NAME` / `sendfile NAME` go through
//! the relay, TLS pinned to the peer's key, with no test-only code path.

mod common;

use common::*;
use serde_json::{Value, json};
use sockmod::protocol::{Decoder, Header, Message};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Report and roster cadence: short, so the suite is fast.
const EVERY: &str = "300ms";
/// Waits for big transfers in a debug build on a loaded machine.
const LONG: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Filers with a state directory of the test's choosing
// ---------------------------------------------------------------------------

/// A filer under test: its process, listening address, key fingerprint (none
/// with `--plaintext`), state directory (key and pins) and inbox.
struct Filer {
    p: Proc,
    addr: SocketAddr,
    fp: Option<String>,
    state: PathBuf,
    inbox: PathBuf,
}

impl Filer {
    /// The fingerprint of its key (panics for a `--plaintext` filer).
    fn fp(&self) -> &str {
        self.fp.as_deref().expect("a keyed filer")
    }
}

/// A fresh state directory (a new key and no pins for whoever uses it).
fn new_state(name: &str) -> PathBuf {
    tmp_path(&format!("state-{name}"))
}

/// `sockmod filer --json` named `id`, reporting to `ips`, with keys and pins
/// under `state` (so a restart with the same `state` keeps its key), bound to
/// `bind` (`None`: 127.0.0.1:0 as every other filer test).
fn start_filer(
    id: &str,
    ips: SocketAddr,
    bind: Option<&str>,
    state: &Path,
    extra: &[&str],
) -> Filer {
    let inbox = tmp_path(&format!("inbox-{id}"));
    // Files are taken without asking: consent has tests of its own.
    let mut args = vec!["--json", "--accept-files", "yes"];
    args.extend_from_slice(extra);
    let mut cmd = match bind {
        None => filer_command(id, &ips.to_string(), EVERY, &inbox, &args),
        Some(b) => {
            // filer_command binds 127.0.0.1:0; this one listens elsewhere.
            let mut c = Command::new(BIN);
            c.args(["filer", "--id", id, "--bind", b, "--ipserver"])
                .arg(ips.to_string())
                .args(["--report-interval", EVERY, "--inbox"])
                .arg(&inbox)
                .args(&args);
            c
        }
    };
    cmd.env("XDG_STATE_HOME", state);
    let p = Proc::spawn_cmd(cmd);
    let addr = p.listening_addr();
    let v = p.expect_json("listening", |v| v["event"] == "listening");
    let fp = v["tls"]["fingerprint"].as_str().map(str::to_string);
    // The human notice names the same key.
    let notice = p
        .err
        .all()
        .into_iter()
        .find(|l| l.text.starts_with("listening on "))
        .expect("listening notice")
        .text;
    match &fp {
        Some(fp) => assert_eq!(
            notice,
            format!("listening on {addr} (TLS, SHA-256 {fp})"),
            "{}",
            p.context()
        ),
        None => assert_eq!(notice, format!("listening on {addr}"), "{}", p.context()),
    }
    Filer {
        p,
        addr,
        fp,
        state: state.to_path_buf(),
        inbox,
    }
}

/// A keyed filer with a fresh state directory on 127.0.0.1:0.
fn filer(id: &str, ips: SocketAddr, extra: &[&str]) -> Filer {
    start_filer(id, ips, None, &new_state(id), extra)
}

fn ipserver() -> (Proc, SocketAddr) {
    spawn_ipserver("127.0.0.1:0", EVERY, &[])
}

/// The pins of filer `owner` kept under `state`: (name, fingerprint) pairs.
fn pins(state: &Path, owner: &str) -> Vec<(String, String)> {
    let path = state
        .join("sockmod")
        .join("known_peers")
        .join(format!("{owner}.txt"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(fp, name)| (name.to_string(), fp.to_string()))
        .collect()
}

/// Waits until `f`'s pins file holds `name` pinned to `fp` (pins are saved
/// after they are taken, so once the file has it, the filer has it).
fn wait_pin(f: &Filer, owner: &str, name: &str, fp: &str) {
    let ok = wait_until(TIMEOUT, || {
        pins(&f.state, owner)
            .iter()
            .any(|(n, p)| n == name && p == fp)
    });
    assert!(
        ok,
        "{owner} never pinned {name} to {fp}; pins: {:?}\n{}",
        pins(&f.state, owner),
        f.p.context()
    );
}

/// Waits for `peer_online ID` at port `port` on `p`.
fn expect_online(p: &Proc, id: &str, port: u16) -> Value {
    p.expect_json(&format!("peer_online {id} port {port}"), |v| {
        v["event"] == "peer_online" && v["id"] == id && v["port"] == port
    })
}

/// Waits for a chat message whose `info` is `text`; returns the event.
fn expect_chat(p: &Proc, text: &str) -> Value {
    p.expect_json(&format!("message {text:?}"), |v| {
        v["event"] == "message" && v["header"]["info"] == text
    })
}

/// How many chat messages with `info` `text` `p` has shown.
fn chats(p: &Proc, text: &str) -> usize {
    p.out.count(|l| {
        l.json
            .as_ref()
            .is_some_and(|v| v["event"] == "message" && v["header"]["info"] == text)
    })
}

/// Waits for a file transfer event of `name` in `dir` reaching `state`.
fn expect_transfer(p: &Proc, dir: &str, state: &str, name: &str, timeout: Duration) -> Value {
    p.expect_json_within(
        &format!("transfer {dir} {name:?} {state}"),
        |v| v["event"] == "transfer" && v["dir"] == dir && v["state"] == state && v["name"] == name,
        timeout,
    )
}

/// Asserts the received file (from a `done` receive event) holds `want`.
fn assert_received(done: &Value, want: &[u8]) {
    let path = done["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no path in {done}"));
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert_eq!(got.len(), want.len(), "size of {path}");
    assert!(got == want, "{path} differs from what was sent");
}

/// Writes `bytes` to a fresh file named `name`; returns its path.
fn write_source(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = tmp_path("src");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The `connected` event of the connection `p` dialled to the peer `name`.
fn dialled(p: &Proc, name: &str) -> Value {
    p.expect_json(&format!("connected out to {name}"), |v| {
        v["event"] == "connected" && v["dir"] == "out" && v["name"] == name
    })
}

/// The `connected` event of connection `peer` on `p`.
fn connected_event(p: &Proc, peer: &Value) -> Value {
    p.out
        .all()
        .into_iter()
        .filter_map(|l| l.json)
        .find(|v| v["event"] == "connected" && &v["peer"] == peer)
        .unwrap_or_else(|| panic!("no connected event of peer {peer}\n{}", p.context()))
}

/// Waits until the ipserver has sent `n` more roster rounds.
fn wait_rounds(ips: &mut Proc, n: u64) {
    let mut rounds = || {
        ips.send_line("peers");
        ips.expect_json("ipserver peers", |v| v["event"] == "peers")["rounds"]
            .as_u64()
            .unwrap_or(0)
    };
    let start = rounds();
    let ok = wait_until(TIMEOUT, || rounds() >= start + n);
    assert!(ok, "the ipserver sent no {n} more roster rounds");
}

/// A report frame as the original implementations send it.
fn report(c: &mut Client, id: &str, port: u16) {
    c.send(
        &Header::new().with("ID", id).with("Port", port.to_string()),
        b"",
    );
}

/// A raw peer's identity frame, as the original peers write it.
fn identity_frame(id: &str, port: u16) -> Vec<u8> {
    raw_frame(&format!("CL:0;TP:Check;ID:{id};Port:{port}"), b"")
}

// ---------------------------------------------------------------------------
// The relay: a man in the middle that only copies and records
// ---------------------------------------------------------------------------

/// Everything one direction of the relay carried.
type Record = Arc<Mutex<Vec<u8>>>;

/// Listens on 127.0.0.1:0 and forwards every connection to 127.0.0.2 at the
/// same port, copying bytes both ways and recording them.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    /// Bytes from the dialler to the target.
    forth: Record,
    /// Bytes from the target back to the dialler.
    back: Record,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start() -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = l.local_addr().unwrap();
        let target: SocketAddr = format!("127.0.0.2:{}", addr.port()).parse().unwrap();
        let (forth, back): (Record, Record) = Default::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, b, n, s) = (forth.clone(), back.clone(), conns.clone(), stop.clone());
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((a, _)) => {
                        a.set_nonblocking(false).unwrap();
                        let Ok(t) = TcpStream::connect_timeout(&target, TIMEOUT) else {
                            continue;
                        };
                        n.fetch_add(1, Ordering::Relaxed);
                        pipe(a.try_clone().unwrap(), t.try_clone().unwrap(), f.clone());
                        pipe(t, a, b.clone());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Relay {
            addr,
            target,
            forth,
            back,
            conns,
            stop,
        }
    }

    fn forth(&self) -> Vec<u8> {
        self.forth.lock().unwrap().clone()
    }

    fn back(&self) -> Vec<u8> {
        self.back.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread, appending what passes to `rec`; passes
/// the end of the stream on.
fn pipe(mut from: TcpStream, mut to: TcpStream, rec: Record) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    rec.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Where the ASCII text `needle` first occurs in `hay` (an offset in `hay`'s
/// lossy UTF-8 text, which keeps every ASCII byte where it was relative to
/// its neighbours; the standard library's searcher is fast even in a debug
/// build, a byte loop here is not).
fn find(hay: &[u8], needle: &str) -> Option<usize> {
    assert!(needle.is_ascii());
    String::from_utf8_lossy(hay).find(needle)
}

/// Finds pieces of a random file in recorded bytes: its 32-byte blocks that
/// start at multiples of 32, indexed by their first 8 bytes. Every 64-byte
/// window of the file holds one such block whole, so a stream in which no
/// block occurs holds no 64-byte window of the file. Written as plain loops on
/// integers: the tests run unoptimised, and this scans 64 MiB.
struct Blocks<'a> {
    file: &'a [u8],
    /// A bit per top-26-bit prefix of a block key (most positions stop here).
    filter: Vec<u64>,
    /// Open addressing on the key's low bits: key, and block offset + 1.
    keys: Vec<u64>,
    offs: Vec<usize>,
}

const BLOCK: usize = 32;
const FILTER_BITS: u32 = 26;
const TABLE_BITS: u32 = 23;

impl<'a> Blocks<'a> {
    fn new(file: &'a [u8]) -> Blocks<'a> {
        let n = file.len() / BLOCK;
        assert!(n < (1 << TABLE_BITS) / 2, "file too big for the table");
        let mut b = Blocks {
            file,
            filter: vec![0; 1 << (FILTER_BITS - 6)],
            keys: vec![0; 1 << TABLE_BITS],
            offs: vec![0; 1 << TABLE_BITS],
        };
        let mask = (1usize << TABLE_BITS) - 1;
        let mut off = 0;
        while off + BLOCK <= file.len() {
            let mut k = 0u64;
            let mut j = 0;
            while j < 8 {
                k |= u64::from(file[off + j]) << (8 * j);
                j += 1;
            }
            let h = (k >> (64 - FILTER_BITS)) as usize;
            b.filter[h >> 6] |= 1 << (h & 63);
            let mut t = (k as usize) & mask;
            while b.offs[t] != 0 {
                t = (t + 1) & mask;
            }
            b.keys[t] = k;
            b.offs[t] = off + 1;
            off += BLOCK;
        }
        b
    }

    /// The first block found in `stream`: (stream offset, file offset).
    fn leaked(&self, stream: &[u8]) -> Option<(usize, usize)> {
        let mask = (1usize << TABLE_BITS) - 1;
        let mut k = 0u64;
        let mut i = 0;
        while i < stream.len() {
            // The 8 bytes ending at i, little-endian.
            k = (k >> 8) | (u64::from(stream[i]) << 56);
            i += 1;
            if i < 8 {
                continue;
            }
            let s = i - 8;
            if s + BLOCK > stream.len() {
                break;
            }
            let h = (k >> (64 - FILTER_BITS)) as usize;
            if self.filter[h >> 6] & (1 << (h & 63)) == 0 {
                continue;
            }
            let mut t = (k as usize) & mask;
            while self.offs[t] != 0 {
                let off = self.offs[t] - 1;
                if self.keys[t] == k && stream[s..s + BLOCK] == self.file[off..off + BLOCK] {
                    return Some((s, off));
                }
                t = (t + 1) & mask;
            }
        }
        None
    }
}

/// [`Blocks::leaked`] for one stream.
fn leaked_block(stream: &[u8], file: &[u8]) -> Option<(usize, usize)> {
    Blocks::new(file).leaked(stream)
}

// ---------------------------------------------------------------------------
// Raw peers
// ---------------------------------------------------------------------------

/// Reads every frame `c` gets within `window`; returns them.
fn drain(c: &mut Client, window: Duration) -> Vec<Message> {
    let deadline = Instant::now() + window;
    let mut all = Vec::new();
    while Instant::now() < deadline {
        all.extend(c.read_frames(1, Duration::from_millis(100)));
    }
    all
}

/// An original peer at the ipserver, on a thread: reports `ID:id;Port:port`
/// in plaintext every 200 ms (so it stays in the roster) and keeps every
/// roster it gets, as text entries `ID,IP,PORT`.
struct Reporter {
    rosters: Arc<Mutex<Vec<Vec<String>>>>,
    /// Frames other than rosters it got (an original peer gets no `TP:Keys`).
    others: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Reporter {
    fn start(ips: SocketAddr, id: &str, port: u16) -> Reporter {
        let rosters: Arc<Mutex<Vec<Vec<String>>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let others = Arc::new(AtomicUsize::new(0));
        let (r, s, o, id) = (
            rosters.clone(),
            stop.clone(),
            others.clone(),
            id.to_string(),
        );
        let mut c = Client::connect(ips);
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                report(&mut c, &id, port);
                for m in c.read_frames(8, Duration::from_millis(200)) {
                    if m.header.get("Broadcast").is_none() {
                        o.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let entries = String::from_utf8_lossy(&m.body)
                            .split(';')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect();
                        r.lock().unwrap().push(entries);
                    }
                }
                if c.is_closed() {
                    break;
                }
            }
        });
        Reporter {
            rosters,
            others,
            stop,
        }
    }

    /// Waits for a roster received after this call that satisfies `pred`;
    /// panics with the last one seen.
    fn wait_roster(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let from = self.rosters.lock().unwrap().len();
        let mut last = Vec::new();
        let ok = wait_until(TIMEOUT, || {
            let r = self.rosters.lock().unwrap();
            match r[from.min(r.len())..].iter().find(|e| pred(e)) {
                Some(e) => {
                    last = e.clone();
                    true
                }
                None => {
                    last = r.last().cloned().unwrap_or_default();
                    false
                }
            }
        });
        assert!(
            ok,
            "no roster {what} within {TIMEOUT:?}; the last one: {last:?}"
        );
        last
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A TLS client with a key of its own (not any filer's): a peer claiming a
/// name with the wrong key.
struct TlsPeer {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    fp: String,
}

impl TlsPeer {
    fn connect(addr: SocketAddr) -> TlsPeer {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let made = rcgen::generate_simple_self_signed(vec!["impostor".to_string()]).unwrap();
        let id = sockmod::net::Identity {
            chain: vec![made.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der())),
        };
        let fp = id.fingerprint();
        let cfg = sockmod::net::client_config(sockmod::net::Trust::Anything, Some(&id)).unwrap();
        let name = sockmod::net::server_name(&addr.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        TlsPeer {
            s: rustls::StreamOwned::new(conn, tcp),
            fp,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
        self.s.flush().unwrap();
    }

    /// Reads until the other side closes (true) or `timeout` passes (false);
    /// returns the frames that came.
    fn read_until_closed(&mut self, timeout: Duration) -> (bool, Vec<Message>) {
        let mut dec = Decoder::new(1 << 30);
        let mut msgs = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.s.read(&mut buf) {
                Ok(0) => return (true, msgs),
                Ok(n) => dec.feed(&buf[..n], &mut msgs).expect("valid frames"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (true, msgs),
            }
        }
        (false, msgs)
    }
}

// ---------------------------------------------------------------------------
// 1. Filer to filer is TLS: a relay on the path sees no chat and no file
// ---------------------------------------------------------------------------

#[test]
fn filers_chat_and_send_64_mib_over_tls_and_a_relay_sees_none_of_it() {
    let (_ips, ips_addr) = ipserver();
    let relay = Relay::start();
    let bob = start_filer(
        "bob",
        ips_addr,
        Some(&relay.target.to_string()),
        &new_state("bob"),
        &[],
    );
    assert_eq!(bob.addr, relay.target, "bob must listen behind the relay");
    let mut ann = filer("ann", ips_addr, &[]);
    let mut bob = bob;

    // The roster lists bob where the relay listens; the keys make each pin
    // the other (trust on first use) before they ever talk.
    let online = expect_online(&ann.p, "bob", relay.addr.port());
    assert_eq!(online["ip"], "127.0.0.1", "{online}");
    wait_pin(&ann, "ann", "bob", bob.fp());
    wait_pin(&bob, "bob", "ann", ann.fp());

    let to_bob = "ann-to-bob: the eagle lands at dawn";
    let to_ann = "bob-to-ann: the parcel is under the bench";
    ann.p.send_line(&format!("send bob {to_bob}"));
    let m = expect_chat(&bob.p, to_bob);
    bob.p.send_line(&format!("send ann {to_ann}"));
    expect_chat(&ann.p, to_ann);

    // Both ends say TLS 1.3, each with the other's key.
    let out = dialled(&ann.p, "bob");
    assert_eq!(out["addr"], relay.addr.to_string(), "{out}");
    assert_eq!(out["tls"]["version"], "TLS1.3", "{out}");
    assert_eq!(out["tls"]["peer_fingerprint"], bob.fp(), "{out}");
    let inn = connected_event(&bob.p, &m["peer"]);
    assert_eq!(inn["dir"], "in", "{inn}");
    assert_eq!(inn["tls"]["version"], "TLS1.3", "{inn}");
    assert_eq!(inn["tls"]["peer_fingerprint"], ann.fp(), "{inn}");
    figure("cipher", &out["tls"]["cipher"]);

    // 64 MiB of random bytes, by name, through the relay.
    let size = 64 << 20;
    let data = random_bytes(size, 64);
    let src = write_source("secret.bin", &data);
    let t0 = Instant::now();
    ann.p
        .send_line(&format!("sendfile bob '{}'", src.display()));
    let done = expect_transfer(&bob.p, "recv", "done", "secret.bin", LONG);
    let took = t0.elapsed();
    expect_transfer(&ann.p, "send", "done", "secret.bin", TIMEOUT);
    assert_received(&done, &data);
    figure(
        "64 MiB through the relay (s)",
        format!("{:.2}", took.as_secs_f64()),
    );
    figure(
        "rate (MiB/s)",
        format!("{:.1}", 64.0 / took.as_secs_f64().max(1e-9)),
    );

    // The one connection between them went through the relay.
    assert_eq!(relay.conns.load(Ordering::Relaxed), 1, "relay connections");
    assert_eq!(
        ann.p.count_events("connected", &[("name", json!("bob"))]),
        1,
        "{}",
        ann.p.context()
    );
    let (forth, back) = (relay.forth(), relay.back());
    figure("relay bytes ann->bob", forth.len());
    figure("relay bytes bob->ann", back.len());
    figure(
        "overhead ann->bob (%)",
        format!("{:.2}", (forth.len() as f64 / size as f64 - 1.0) * 100.0),
    );
    assert!(forth.len() > size, "the file went through the relay");
    // It starts with a TLS handshake record, not a frame.
    assert_eq!(
        &forth[..2],
        &[0x16, 0x03],
        "ann's first bytes: a ClientHello"
    );
    assert_eq!(
        &back[..2],
        &[0x16, 0x03],
        "bob's first bytes: a ServerHello"
    );

    let t1 = Instant::now();
    let blocks = Blocks::new(&data);
    for (dir, rec) in [("ann->bob", &forth), ("bob->ann", &back)] {
        if let Some((at, off)) = blocks.leaked(rec) {
            panic!("{dir}: file bytes at file offset {off} passed in the clear at {at}");
        }
        figure(
            &format!("scan {dir} for file bytes (s)"),
            format!("{:.2}", t1.elapsed().as_secs_f64()),
        );
        let text = String::from_utf8_lossy(rec);
        for needle in [
            to_bob,
            to_ann,
            "secret.bin",
            "TP:file",
            "TP:Check",
            "ID:ann",
            "ID:bob",
        ] {
            assert_eq!(
                text.find(needle),
                None,
                "{dir}: {needle:?} passed in the clear"
            );
        }
    }
    figure(
        "scan of the relay's record (s)",
        format!("{:.2}", t1.elapsed().as_secs_f64()),
    );
    ann.p.kill();
    bob.p.kill();
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_dir_all(&bob.inbox);
}

// ---------------------------------------------------------------------------
// 2. Original (plaintext) peers still work with keyed filers
// ---------------------------------------------------------------------------

#[test]
fn a_plaintext_peer_chats_and_swaps_files_with_a_keyed_filer() {
    let (_ips, ips_addr) = ipserver();
    let relay = Relay::start();
    let mut carol = start_filer(
        "carol",
        ips_addr,
        Some(&relay.target.to_string()),
        &new_state("carol"),
        &["--plaintext"],
    );
    assert_eq!(carol.fp, None, "--plaintext: no key");
    let mut ann = filer("ann", ips_addr, &[]);
    expect_online(&ann.p, "carol", relay.addr.port());
    expect_online(&carol.p, "ann", ann.addr.port());

    // Keyed to plaintext and back, on the one connection ann dials.
    ann.p.send_line("send carol hello carol from ann");
    let m = expect_chat(&carol.p, "hello carol from ann");
    carol.p.send_line("send ann hello ann from carol");
    expect_chat(&ann.p, "hello ann from carol");
    let out = dialled(&ann.p, "carol");
    assert!(out.get("tls").is_none(), "plaintext, no tls field: {out}");
    let inn = connected_event(&carol.p, &m["peer"]);
    assert!(inn.get("tls").is_none(), "{inn}");
    // carol is the roster's carol (no key, at its roster address): never
    // shown as a mere claim.
    assert_eq!(
        ann.p.count_events(
            "identified",
            &[("name", json!("carol")), ("verified", json!(false))]
        ),
        0,
        "{}",
        ann.p.context()
    );

    // Files both ways.
    let to_carol = random_bytes(1 << 20, 21);
    let src = write_source("for-carol.bin", &to_carol);
    ann.p
        .send_line(&format!("sendfile carol '{}'", src.display()));
    let done = expect_transfer(&carol.p, "recv", "done", "for-carol.bin", LONG);
    assert_received(&done, &to_carol);
    expect_transfer(&ann.p, "send", "done", "for-carol.bin", TIMEOUT);
    let to_ann = random_bytes(300_000, 22);
    let src2 = write_source("for-ann.bin", &to_ann);
    carol
        .p
        .send_line(&format!("sendfile ann '{}'", src2.display()));
    let done = expect_transfer(&ann.p, "recv", "done", "for-ann.bin", LONG);
    assert_received(&done, &to_ann);

    // The control of test 1: the same relay sees plaintext in the clear, so
    // its silence there means encryption, not a blind detector.
    let (forth, back) = (relay.forth(), relay.back());
    assert!(find(&forth, "hello carol from ann").is_some());
    assert!(find(&back, "hello ann from carol").is_some());
    let leak = leaked_block(&forth, &to_carol);
    assert!(leak.is_some(), "the detector finds plaintext file bytes");
    assert!(leaked_block(&back, &to_ann).is_some());
    figure("plaintext relay bytes ann->carol", forth.len());

    // An original peer as a raw socket, straight to ann's listener, speaking
    // first: chat both ways.
    let mut raw = Client::connect(ann.addr);
    raw.send_info("raw hello");
    let v = expect_chat(&ann.p, "raw hello");
    let c = connected_event(&ann.p, &v["peer"]);
    assert!(c.get("tls").is_none(), "{c}");
    ann.p.send_line(&format!("send {} raw reply", v["peer"]));
    let got = drain_until_info(&mut raw, "raw reply");
    assert!(got, "the raw peer got ann's reply");

    // A raw peer that waits to be spoken to is taken as plaintext after a
    // short silence: it gets ann's identity frame and can chat.
    let mut quiet = Client::connect(ann.addr);
    let t0 = Instant::now();
    let f = quiet.expect_frame();
    figure(
        "silent plaintext peer spoken to after (ms)",
        t0.elapsed().as_millis(),
    );
    assert_eq!(f.header.get("TP"), Some("Check"), "{:?}", f.header);
    assert_eq!(f.header.get("ID"), Some("ann"), "{:?}", f.header);
    quiet.send_info("quiet hello");
    expect_chat(&ann.p, "quiet hello");
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&src2);
}

/// Reads `c` until a frame with `info` `text` comes (true) or [`TIMEOUT`].
fn drain_until_info(c: &mut Client, text: &str) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        for m in c.read_frames(1, Duration::from_millis(100)) {
            if info(&m) == text {
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// 3. A claimed name is not a verified one
// ---------------------------------------------------------------------------

#[test]
fn an_impostor_claiming_bob_is_never_a_target() {
    let (_ips, ips_addr) = ipserver();
    let mut ann = filer("ann", ips_addr, &[]);
    let bob = filer("bob", ips_addr, &[]);
    expect_online(&ann.p, "bob", bob.addr.port());
    wait_pin(&ann, "ann", "bob", bob.fp());

    // A plaintext impostor (from bob's very roster IP, 127.0.0.1).
    let mut fake = Client::connect(ann.addr);
    fake.send_raw(&identity_frame("bob", 9));
    let v = ann.p.expect_json("bob? (plaintext)", |v| {
        v["event"] == "identified" && v["name"] == "bob" && v["verified"] == false
    });
    let why = v["why"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("not encrypted"), "{v}");
    let fake_peer = v["peer"].clone();
    figure("plaintext impostor why", &why);

    // A TLS impostor with a key of its own: refused, both keys named.
    let mut tls_fake = TlsPeer::connect(ann.addr);
    tls_fake.send(&identity_frame("bob", 9));
    let line = ann.p.expect_err_line("refusal of the TLS impostor", |l| {
        l.contains("bob presented a different key")
    });
    assert!(
        line.contains(&format!("pinned SHA-256 {}", bob.fp()))
            && line.contains(&format!("now SHA-256 {}", tls_fake.fp)),
        "{line}"
    );
    let (closed, _) = tls_fake.read_until_closed(TIMEOUT);
    assert!(closed, "the TLS impostor is closed\n{}", ann.p.context());

    // `peers` counts no connection for bob yet: the claim is not bob.
    ann.p.send_line("peers");
    let pv = ann.p.expect_json("peers", |v| v["event"] == "peers");
    let entry = pv["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "bob")
        .cloned()
        .expect("bob in peers");
    assert_eq!(entry["conns"], json!([]), "{pv}");

    // Chat and a file for bob go to the real bob (dialled by name, its key).
    ann.p.send_line("send bob for the real bob");
    expect_chat(&bob.p, "for the real bob");
    let data = random_bytes(500_000, 33);
    let src = write_source("for-bob.bin", &data);
    ann.p
        .send_line(&format!("sendfile bob '{}'", src.display()));
    let done = expect_transfer(&bob.p, "recv", "done", "for-bob.bin", LONG);
    assert_received(&done, &data);
    let out = dialled(&ann.p, "bob");
    assert_ne!(out["peer"], fake_peer);
    assert_eq!(out["tls"]["peer_fingerprint"], bob.fp(), "{out}");

    // The impostor got ann's identity frame and nothing else.
    let frames = drain(&mut fake, Duration::from_millis(500));
    let tps: Vec<String> = frames.iter().map(|m| format!("{:?}", m.header)).collect();
    assert!(
        frames
            .iter()
            .all(|m| m.header.get("TP") == Some("Check") && m.body.is_empty()),
        "the impostor got {tps:?}"
    );
    // And `send bob?`-style targeting of the claim does not exist: a second
    // message still goes to bob only.
    ann.p.send_line("send bob second");
    expect_chat(&bob.p, "second");
    assert!(drain(&mut fake, Duration::from_millis(300)).is_empty());
    let _ = std::fs::remove_file(&src);
}

// ---------------------------------------------------------------------------
// 4. A plaintext squatter loses the name to the keyed peer
// ---------------------------------------------------------------------------

#[test]
fn a_plaintext_squatter_is_displaced_by_the_real_bob() {
    let (mut ips, ips_addr) = ipserver();
    // The squatter: an original-style peer reporting `bob` in plaintext, at a
    // port it holds, every 200 ms (so it stays live throughout).
    let squat_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let squat_port = squat_listener.local_addr().unwrap().port();
    let squatter = Reporter::start(ips_addr, "bob", squat_port);
    expect_online(&ips, "bob", squat_port);
    let squat_entry = format!("bob,127.0.0.1,{squat_port}");
    squatter.wait_roster("with the squatter", |r| r.contains(&squat_entry));

    let bob = filer("bob", ips_addr, &[]);
    let bob_port = bob.addr.port();
    let bob_entry = format!("bob,127.0.0.1,{bob_port}");
    // The ipserver gives the name to the key, and tells the squatter's
    // reports apart.
    expect_online(&ips, "bob", bob_port);
    ips.expect_err_line("the squatter told the name is taken", |l| {
        l.contains("the name \"bob\" is taken by")
    });
    ips.send_line("peers");
    let pv = ips.expect_json("ipserver peers", |v| v["event"] == "peers");
    figure("ipserver reports", &pv["peers"]);

    // The roster frames (all that original peers read) agree: one bob, the
    // real one.
    let watcher = Reporter::start(ips_addr, "watcher", 1);
    let r = watcher.wait_roster("with watcher", |r| {
        r.iter().any(|e| e.starts_with("watcher,"))
    });
    figure("roster an original peer reads", format!("{r:?}"));
    let bobs: Vec<&String> = r.iter().filter(|e| e.starts_with("bob,")).collect();
    assert_eq!(
        bobs,
        vec![&bob_entry],
        "the roster frame must list bob at the real bob's port {bob_port}, not the \
         squatter's {squat_port}\n{}",
        ips.context()
    );
    // Original peers never see a TP:Keys frame.
    assert_eq!(watcher.others.load(Ordering::Relaxed), 0);
    assert_eq!(squatter.others.load(Ordering::Relaxed), 0);
    // ann (keyed) lists bob at the real port.
    let mut ann = filer("ann", ips_addr, &[]);
    wait_pin(&ann, "ann", "bob", bob.fp());
    expect_online(&ann.p, "bob", bob_port);
    ann.p.send_line("peers");
    let v = ann.p.expect_json("peers", |v| v["event"] == "peers");
    let listed: Vec<&Value> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == "bob")
        .collect();
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!(listed[0]["port"], bob_port, "ann's peers: {v}");

    // And `send bob` reaches the real bob, not the squatter's port.
    ann.p.send_line("send bob hi real bob");
    expect_chat(&bob.p, "hi real bob");
    squat_listener.set_nonblocking(true).unwrap();
    assert!(
        squat_listener.accept().is_err(),
        "nobody dialled the squatter"
    );

    drop(squatter);
}

// ---------------------------------------------------------------------------
// 5. A changed key for a pinned name is refused until trusted
// ---------------------------------------------------------------------------

#[test]
fn a_changed_key_is_refused_loudly_until_trusted() {
    let (mut ips, ips_addr) = ipserver();
    let mut ann = filer("ann", ips_addr, &[]);
    let bob_state = new_state("bob");
    let mut bob1 = start_filer("bob", ips_addr, None, &bob_state, &[]);
    let fp1 = bob1.fp().to_string();
    expect_online(&ann.p, "bob", bob1.addr.port());
    wait_pin(&ann, "ann", "bob", &fp1);

    // bob restarted with the same state: the same key, nothing said.
    bob1.p.kill();
    ann.p.expect_event("peer_offline", &[("id", json!("bob"))]);
    let bob2 = start_filer("bob", ips_addr, None, &bob_state, &[]);
    assert_eq!(bob2.fp(), fp1, "same state, same key");
    expect_online(&ann.p, "bob", bob2.addr.port());
    ann.p.send_line("send bob same key");
    expect_chat(&bob2.p, "same key");
    drop(bob2);
    ann.p.expect_event("peer_offline", &[("id", json!("bob"))]);

    // bob with a new state: a new key.
    let bob3 = start_filer("bob", ips_addr, None, &new_state("bob-new"), &[]);
    let fp2 = bob3.fp().to_string();
    assert_ne!(fp1, fp2);
    figure("old bob key", &fp1);
    figure("new bob key", &fp2);
    let loud = ann.p.expect_err_line("the changed-key warning", |l| {
        l.contains("presented a different key")
    });
    assert_eq!(
        loud,
        format!(
            "bob presented a different key: pinned SHA-256 {fp1}, now SHA-256 {fp2}; refused \
             (if bob really has a new key: `trust bob`, or `forget bob` to drop the pin)"
        )
    );
    expect_online(&ann.p, "bob", bob3.addr.port());

    // A dial to it fails: not the pinned key.
    ann.p.send_line("send bob x");
    let f = ann.p.expect_event("connect_failed", &[]);
    let reason = f["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "certificate not trusted: fingerprint {fp2} (not the pinned key)"
        )),
        "{f}"
    );
    // The warning is said once, however many rosters repeat the key.
    wait_rounds(&mut ips, 3);
    assert_eq!(
        ann.p
            .err
            .count(|l| l.text.contains("presented a different key")),
        1,
        "{}",
        ann.p.context()
    );
    assert_eq!(chats(&bob3.p, "x"), 0, "the new bob got nothing");
    assert!(
        pins(&ann.state, "ann").contains(&("bob".to_string(), fp1.clone())),
        "the old pin stays"
    );

    // `trust bob` takes the new key; then it works.
    ann.p.send_line("trust bob");
    ann.p.expect_err_line("trust notice", |l| {
        l == format!("pinned bob to SHA-256 {fp2}")
    });
    wait_pin(&ann, "ann", "bob", &fp2);
    ann.p.send_line("send bob y");
    expect_chat(&bob3.p, "y");
    let out = ann.p.expect_json("connected to the new bob", |v| {
        v["event"] == "connected" && v["name"] == "bob" && v["tls"]["peer_fingerprint"] == fp2
    });
    assert_eq!(out["tls"]["version"], "TLS1.3");
}

// ---------------------------------------------------------------------------
// 6. --require-encryption refuses plaintext peers
// ---------------------------------------------------------------------------

#[test]
fn require_encryption_refuses_plaintext_peers() {
    let (_ips, ips_addr) = ipserver();
    let mut ann = filer("ann", ips_addr, &["--require-encryption"]);
    let bob = filer("bob", ips_addr, &[]);
    let mut carol = start_filer(
        "carol",
        ips_addr,
        None,
        &new_state("carol"),
        &["--plaintext"],
    );
    expect_online(&ann.p, "carol", carol.addr.port());
    expect_online(&carol.p, "ann", ann.addr.port());

    // A raw plaintext client is closed: peer spoke plaintext.
    let mut raw = Client::connect(ann.addr);
    raw.send_info("let me in");
    assert!(raw.wait_closed(TIMEOUT), "the raw plaintext peer is closed");
    let me = raw.local_addr().to_string();
    let v = ann.p.expect_json("closed raw", |v| {
        v["event"] == "closed" && v["addr"] == me.as_str()
    });
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("peer spoke plaintext"),
        "{v}"
    );
    assert_eq!(chats(&ann.p, "let me in"), 0);

    // The --plaintext filer dialling ann is closed the same way.
    carol.p.send_line(&format!("connect {}", ann.addr));
    carol.p.send_line("send ann from carol");
    let c = carol.p.expect_json("carol's link to ann closed", |v| {
        v["event"] == "closed" || v["event"] == "connect_failed"
    });
    figure("carol sees", &c);
    let v = ann.p.expect_json("closed carol", |v| {
        v["event"] == "closed"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("peer spoke plaintext"))
    });
    figure("ann closes carol with", &v["reason"]);
    assert_eq!(chats(&ann.p, "from carol"), 0);

    // ann will not dial the keyless carol either.
    ann.p.send_line("send carol hi");
    let e = ann
        .p
        .expect_err_line("refusal to dial carol", |l| l.starts_with("error: "));
    assert!(
        e.contains("carol has no key") && e.contains("--require-encryption refuses plaintext"),
        "{e}"
    );
    assert_eq!(chats(&carol.p, "hi"), 0);

    // A keyed filer is welcome.
    wait_pin(&ann, "ann", "bob", bob.fp());
    ann.p.send_line("send bob encrypted hello");
    expect_chat(&bob.p, "encrypted hello");
    let out = dialled(&ann.p, "bob");
    assert_eq!(out["tls"]["version"], "TLS1.3", "{out}");
}

/// `--secret`: members of the group (the ipserver and two filers) talk; a filer
/// with another passphrase, and one with none, are refused on both sides with a
/// reason that says so; the passphrase itself is never printed.
#[test]
fn a_secret_closes_the_group() {
    const SECRET: &str = "correct horse battery staple";
    let (ips, ips_addr) = spawn_ipserver("127.0.0.1:0", EVERY, &["--secret", SECRET]);
    let mut ann = filer("ann", ips_addr, &["--secret", SECRET]);
    let bob = filer("bob", ips_addr, &["--secret", SECRET]);
    expect_online(&ann.p, "bob", bob.addr.port());
    expect_online(&bob.p, "ann", ann.addr.port());
    ann.p.send_line("send bob members only");
    let m = expect_chat(&bob.p, "members only");
    assert_eq!(m["from"], "ann", "{m}");
    let c = connected_event(&bob.p, &m["peer"]);
    assert_eq!(c["tls"]["version"], "TLS1.3", "{c}");

    // Another passphrase: the ipserver refuses it, and it hears why.
    let mut eve = filer("eve", ips_addr, &["--secret", "wrong horse"]);
    eve.p.expect_json("eve refused by the ipserver", |v| {
        v["event"] == "ipserver"
            && v["state"] == "lost"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("wrong secret"))
    });
    // Dialling a member directly is refused on both sides, too.
    eve.p.send_line(&format!("connect tls://{}", ann.addr));
    eve.p.expect_json("eve's dial of ann refused", |v| {
        (v["event"] == "connect_failed" || v["event"] == "closed")
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("wrong secret"))
    });
    ann.p.expect_json("ann refuses eve", |v| {
        v["event"] == "closed"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("wrong secret"))
    });

    // No passphrase at all: refused with the reason on both sides.
    let mal = filer("mal", ips_addr, &[]);
    mal.p.expect_json("mal told a secret is required", |v| {
        v["event"] == "ipserver"
            && v["state"] == "lost"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("requires a shared secret"))
    });
    ips.expect_json("the ipserver says mal has none", |v| {
        v["event"] == "closed"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the peer has no --secret"))
    });
    // Outsiders never made it into the roster.
    ann.p.send_line("peers");
    let v = ann.p.expect_json("ann's peers", |v| v["event"] == "peers");
    let ids: Vec<&str> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["bob"], "{v}");
    // The passphrase appears in no output.
    for p in [&ips, &ann.p, &bob.p, &eve.p, &mal.p] {
        let all = p.out.texts().join("\n") + &p.err.texts().join("\n");
        assert!(!all.contains("horse"), "the passphrase was printed:\n{all}");
    }
}

/// `--accept-files known`: a file from a roster peer whose key is pinned and
/// shown on the link is taken without asking; one from a peer that only
/// claims a name (a plaintext dial from outside the roster) is asked about,
/// and nothing of it is written before an answer.
#[test]
fn known_takes_files_from_pinned_peers_and_asks_the_rest() {
    let (_ips, ips_addr) = ipserver();
    let bob_state = new_state("bob-known");
    let bob_inbox = tmp_path("inbox-bob-known");
    let mut cmd = filer_command(
        "bob",
        &ips_addr.to_string(),
        EVERY,
        &bob_inbox,
        &["--json", "--accept-files", "known"],
    );
    cmd.env("XDG_STATE_HOME", &bob_state);
    let mut bob = Proc::spawn_cmd(cmd);
    let bob_addr = bob.listening_addr();
    let mut alice = filer("alice", ips_addr, &[]);
    let alice_fp = alice.fp.clone().expect("alice has a key");
    expect_online(&alice.p, "bob", bob_addr.port());
    expect_online(&bob, "alice", alice.addr.port());
    // bob pins alice's key from the roster.
    let ok = wait_until(TIMEOUT, || {
        pins(&bob_state, "bob")
            .iter()
            .any(|(n, p)| n == "alice" && *p == alice_fp)
    });
    assert!(ok, "bob never pinned alice\n{}", bob.context());

    let from_alice = random_bytes(200_000, 31);
    let src = write_source("known-from-alice.bin", &from_alice);
    alice
        .p
        .send_line(&format!("sendfile bob '{}'", src.display()));
    let done = expect_transfer(&bob, "recv", "done", "known-from-alice.bin", LONG);
    assert_received(&done, &from_alice);
    assert_eq!(bob.count_events("offer", &[]), 0, "{}", bob.context());

    // mallory: a lone filer dialling bob's address in plaintext, calling
    // itself alice: only a claim, so bob asks.
    let mallory_inbox = tmp_path("inbox-mallory-known");
    let mut cmd = lone_filer_command(
        "alice",
        &mallory_inbox,
        &["--json", "--accept-files", "yes"],
    );
    cmd.env("XDG_STATE_HOME", new_state("mallory-known"));
    let mut mallory = Proc::spawn_cmd(cmd);
    mallory.listening_addr();
    mallory.send_line(&format!("connect {bob_addr}"));
    mallory.expect_json("bob identified", |v| v["event"] == "identified");
    let src2 = write_source("known-from-mallory.bin", &random_bytes(50_000, 32));
    mallory.send_line(&format!("sendfile {bob_addr} '{}'", src2.display()));
    let offer = bob.expect_json("an offer from the claimed alice", |v| {
        v["event"] == "offer" && v["name"] == "known-from-mallory.bin"
    });
    let visible: Vec<String> = dir_entries(&bob_inbox)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        visible,
        ["known-from-alice.bin"],
        "nothing before an answer"
    );
    let t = offer["transfer"].as_u64().unwrap();
    bob.send_line(&format!("refuse t{t}"));
    let v = expect_transfer(&mallory, "send", "failed", "known-from-mallory.bin", LONG);
    assert!(
        v["reason"].as_str().unwrap_or_default().contains("refused"),
        "{v}"
    );
}
