//! Side-by-side benchmark: the real release `sockmod` binary over loopback, against
//! the tools a user would otherwise pick (`socat`, `iperf3`, `ncat`), measured in
//! the same run on the same machine, plus micro-benchmarks of the codec.
//!
//! Run: `cargo bench` (a few minutes on 2 cores), or `cargo bench -- --quick`
//! (or `SOCKMOD_BENCH_QUICK=1`) for a smoke run of seconds. Extra words select
//! rows by name: `cargo bench -- fan-out rtt` (ingest, bulk, fan-out, piped,
//! idle, rtt, start, file, folder, resume, tls-bulk, tls-file, handshakes, codec).
//!
//! The file row drives two `sockmod filer`s (`sendfile` from one to the other, as
//! `scripts/bench_file.sh` does with more options) against socat disk to disk.
//! The folder row sends a folder of 10,000 files of 4 KiB filer → filer against
//! `tar c | socat` → `socat | tar x`; the resume row times `sendfile` again of the
//! file row's file cut at 90% against a full transfer of it
//! (benches/compare/folder.rs).
//!
//! The piped row (flow control, benches/compare/flow.rs) pipes `broadcast` lines
//! into `serve` for readers that check every frame arrived; the TLS rows
//! (benches/compare/tls.rs) measure bulk frames, a filer file and handshakes
//! over TLS against socat OPENSSL, sockmod's own plaintext and openssl s_server.
//!
//! References come from the distribution: `apt-get install -y socat iperf3 ncat openssl`.
//! A row whose reference is missing says so and is marked skipped.
//!
//! `SOCKMOD_BIN=PATH` measures another sockmod binary (e.g. an older build) and
//! `SOCKMOD_ECHO=PATH` another echo example, to compare builds in one sitting.
//!
//! Figures are medians of several runs. ratio = sockmod ÷ reference in the row's
//! unit (higher is better for rates, lower for times and sizes).

// The process harness of the end-to-end tests: the binary cargo built (bench
// profile = release settings), children killed on drop, the bound address read
// from the `listening` event, lines read with timeouts, /proc figures.
#[path = "../../tests/common/mod.rs"]
mod common;
mod flow;
mod folder;
mod tls;

use common::{
    BIN, KillOnDrop, LineReader, cpu_ticks, listening_addr_in, raise_own_limit, status_kib,
    ticks_per_second,
};
use sockmod::protocol::{Decoder, Header, Message, encode, encode_into};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The frame the ingest rows stream: `CL:0;info:x`.
const SMALL_FRAME: &[u8] = b"\x0b\x00CL:0;info:x";
const INSTALL_HINT: &str = "apt-get install -y socat iperf3 ncat openssl";

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

struct Settings {
    quick: bool,
    runs: usize,
    only: Vec<String>,
    ingest_frames: usize,
    bulk_bytes: usize,
    fan_clients: usize,
    fan_broadcasts: usize,
    idle_conns: usize,
    rtt_samples: usize,
    startup_runs: usize,
    file_bytes: usize,
    folder_files: usize,
    pipe_clients: usize,
    pipe_broadcasts: usize,
    handshake_secs: u64,
}

impl Settings {
    fn from_args() -> Self {
        let mut quick = std::env::var_os("SOCKMOD_BENCH_QUICK").is_some_and(|v| v != "0");
        let mut only = Vec::new();
        for a in std::env::args().skip(1) {
            match a.as_str() {
                "--quick" => quick = true,
                // cargo bench passes --bench to harness=false targets.
                a if a.starts_with("--") => {}
                a => only.push(a.to_string()),
            }
        }
        if quick {
            Settings {
                quick,
                runs: 1,
                only,
                ingest_frames: 100_000,
                bulk_bytes: 64 << 20,
                fan_clients: 50,
                fan_broadcasts: 200,
                idle_conns: 1_000,
                rtt_samples: 2_000,
                startup_runs: 5,
                file_bytes: 64 << 20,
                folder_files: 1_000,
                pipe_clients: 100,
                pipe_broadcasts: 5_000,
                handshake_secs: 2,
            }
        } else {
            Settings {
                quick,
                runs: 5,
                only,
                ingest_frames: 2_000_000,
                bulk_bytes: 1 << 30,
                fan_clients: 200,
                fan_broadcasts: 2_000,
                idle_conns: 10_000,
                rtt_samples: 20_000,
                startup_runs: 21,
                file_bytes: 1 << 30,
                folder_files: 10_000,
                pipe_clients: 100,
                pipe_broadcasts: 100_000,
                handshake_secs: 5,
            }
        }
    }

    fn wants(&self, key: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| key.contains(o.as_str()))
    }
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

struct Row {
    figure: String,
    sockmod: String,
    reference: String,
    ratio: String,
    target: String,
}

/// A measured figure: value in the row's unit, how to print it.
#[derive(Clone, Copy)]
struct Fig {
    v: f64,
    unit: Unit,
}

#[derive(Clone, Copy)]
enum Unit {
    MsgPerSec,
    BytesPerSec,
    Micros,
    Millis,
    BytesPerConn,
    NanosPerFrame,
    Mebibytes,
    Seconds,
    Count,
    HandshakesPerSec,
}

fn show(f: Fig) -> String {
    match f.unit {
        Unit::MsgPerSec => {
            if f.v >= 1e6 {
                format!("{:.2}M msg/s", f.v / 1e6)
            } else {
                format!("{:.0}k msg/s", f.v / 1e3)
            }
        }
        Unit::BytesPerSec => format!("{:.2} GiB/s", f.v / (1u64 << 30) as f64),
        Unit::Micros => format!("{:.1} µs", f.v),
        Unit::Millis => format!("{:.2} ms", f.v),
        Unit::BytesPerConn => format!("{:.0} B/conn", f.v),
        Unit::NanosPerFrame => format!("{:.0} ns/frame", f.v),
        Unit::Mebibytes => format!("{:.1} MiB", f.v / 1048576.0),
        Unit::Seconds => format!("{:.2} s", f.v),
        Unit::Count => format!("{:.0}", f.v),
        Unit::HandshakesPerSec => format!("{:.0} hs/s", f.v),
    }
}

/// A target: its text, and whether (ours, reference) meets it.
type Target<'a> = Option<(&'a str, &'a dyn Fn(f64, Option<f64>) -> bool)>;

fn at_least(x: f64) -> impl Fn(f64, Option<f64>) -> bool {
    move |o, _| o >= x
}

fn at_most(x: f64) -> impl Fn(f64, Option<f64>) -> bool {
    move |o, _| o <= x
}

fn row(figure: &str, ours: Res<Fig>, reference: Option<(&str, Res<Fig>)>, target: Target) -> Row {
    let sockmod = match &ours {
        Ok(f) => show(*f),
        Err(e) => format!("skipped: {e}"),
    };
    let (reference_text, ratio) = match &reference {
        None => ("—".to_string(), "—".to_string()),
        Some((name, Ok(r))) => {
            let ratio = match &ours {
                Ok(o) if r.v > 0.0 => format!("{:.2}×", o.v / r.v),
                _ => "—".to_string(),
            };
            (format!("{name}: {}", show(*r)), ratio)
        }
        Some((name, Err(e))) => (format!("{name}: skipped: {e}"), "—".to_string()),
    };
    let reference_value = match &reference {
        Some((_, Ok(r))) => Some(r.v),
        _ => None,
    };
    let target = match (target, &ours) {
        (None, _) => "—".to_string(),
        (Some((text, _)), Err(_)) => text.to_string(),
        (Some((text, met)), Ok(o)) => {
            format!(
                "{text} {}",
                if met(o.v, reference_value) {
                    "✓"
                } else {
                    "✗"
                }
            )
        }
    };
    Row {
        figure: figure.to_string(),
        sockmod,
        reference: reference_text,
        ratio,
        target,
    }
}

fn print_table(rows: &[Row]) {
    let head = [
        "figure",
        "sockmod",
        "reference (same run)",
        "ratio",
        "target",
    ];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.as_str(),
                r.sockmod.as_str(),
                r.reference.as_str(),
                r.ratio.as_str(),
                r.target.as_str(),
            ]
        })
        .collect();
    let mut w = head.map(|h| h.chars().count());
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let line = |c: [&str; 5]| {
        let mut s = String::from("|");
        for (i, x) in c.iter().enumerate() {
            s.push(' ');
            s.push_str(x);
            s.extend(std::iter::repeat_n(' ', w[i] - x.chars().count()));
            s.push_str(" |");
        }
        s
    };
    println!("{}", line(head));
    let mut sep = String::from("|");
    for x in w {
        sep.push_str(&"-".repeat(x + 2));
        sep.push('|');
    }
    println!("{sep}");
    for c in cells {
        println!("{}", line(c));
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` `runs` times and returns the median; the first error stops it.
fn med(runs: usize, unit: Unit, mut f: impl FnMut() -> Res<f64>) -> Res<Fig> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(f()?);
    }
    Ok(Fig { v: median(v), unit })
}

/// Runs each measurement `runs` times, taking turns, so a burst of load from
/// elsewhere on the machine hits all of them alike; returns each one's median.
/// A measurement that fails is not run again; the others carry on.
fn med_turns<const N: usize>(
    runs: usize,
    unit: Unit,
    mut fs: [&mut dyn FnMut() -> Res<f64>; N],
) -> [Res<Fig>; N] {
    let mut vals: [Res<Vec<f64>>; N] = std::array::from_fn(|_| Ok(Vec::new()));
    for _ in 0..runs {
        for (f, v) in fs.iter_mut().zip(vals.iter_mut()) {
            if let Ok(list) = v {
                match f() {
                    Ok(x) => list.push(x),
                    Err(e) => *v = Err(e),
                }
            }
        }
    }
    vals.map(|v| {
        v.map(|list| Fig {
            v: median(list),
            unit,
        })
    })
}

fn have(tool: &str) -> Res<()> {
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(tool);
            f.is_file()
        })
    });
    if found {
        Ok(())
    } else {
        Err(format!("{tool} not installed ({INSTALL_HINT})"))
    }
}

/// Closing this socket sends RST: no TIME_WAIT left behind by thousands of clients.
fn linger0(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid fd and a pointer to a local struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A port that was free a moment ago (for tools that cannot report port 0).
fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Connects, retrying while the server starts listening.
fn connect_retry(addr: SocketAddr) -> Res<TcpStream> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < until && e.kind() == ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(format!("cannot connect to {addr}: {e}")),
        }
    }
}

/// The listener on 127.0.0.1:`port`: `Some(accept queue length)` once it listens.
fn listen_queue(port: u16) -> Option<u64> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    tcp.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 4 && f[1] == local && f[3] == "0A" {
            let rx = f[4].split(':').nth(1)?;
            u64::from_str_radix(rx, 16).ok()
        } else {
            None
        }
    })
}

/// Waits until the server on `port` has accepted every queued connection.
fn wait_accepted(port: u16) -> Res<()> {
    let until = Instant::now() + Duration::from_secs(10);
    while listen_queue(port) != Some(0) {
        if Instant::now() > until {
            return Err(format!("the server on port {port} does not accept"));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// CPU seconds (user + system, all threads) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    cpu_ticks(pid) as f64 / ticks_per_second() as f64
}

fn debug() -> bool {
    std::env::var_os("SOCKMOD_BENCH_DEBUG").is_some()
}

fn rss_bytes(pid: u32) -> Res<u64> {
    Ok(status_kib(pid, "VmRSS") * 1024)
}

// ---------------------------------------------------------------------------
// sockmod serve
// ---------------------------------------------------------------------------

/// `sockmod serve --json …` with its stdout read here.
struct Serve {
    proc: KillOnDrop,
    addr: SocketAddr,
    stdin: Option<ChildStdin>,
    out: LineReader<ChildStdout>,
}

impl Serve {
    fn start(extra: &[&str]) -> Res<Serve> {
        Serve::start_env(extra, &[])
    }

    /// `start` with extra environment variables.
    fn start_env(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Res<Serve> {
        let mut cmd = Command::new(sockmod_bin());
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--json"])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", sockmod_bin()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let proc = KillOnDrop(child);
        let mut out = LineReader::new(stdout);
        let first = out.next_line()?;
        let addr = listening_addr_in(&first)
            .ok_or_else(|| format!("unexpected first line from serve: {first}"))?;
        Ok(Serve {
            proc,
            addr,
            stdin,
            out,
        })
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }
}

/// A client that streams `data` in one go on its own thread.
fn stream_in(mut s: TcpStream, data: std::sync::Arc<Vec<u8>>, times: usize, close: bool) {
    std::thread::spawn(move || {
        for _ in 0..times {
            if s.write_all(&data).is_err() {
                return;
            }
        }
        if close {
            let _ = s.shutdown(Shutdown::Write);
        }
        // Keep the socket open until the server is done with it.
        let mut b = [0u8; 64];
        let _ = s.read(&mut b);
    });
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// 2M small frames into `serve --json --body-format none`, until the last event line.
fn ingest_json(n: usize) -> Res<f64> {
    let mut srv = Serve::start(&["--body-format", "none"])?;
    let data = std::sync::Arc::new(SMALL_FRAME.repeat(n));
    let s = TcpStream::connect(srv.addr).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    stream_in(s, data, 1, false);
    srv.out.skip_lines(1 + n)?; // connected, then one line per message
    let dt = t0.elapsed().as_secs_f64();
    Ok(n as f64 / dt)
}

/// The same into `serve --quiet`: the end is the `closed` event, which the loop
/// emits only after it has taken every frame before the end of the stream.
fn ingest_quiet(n: usize) -> Res<f64> {
    let mut srv = Serve::start(&["--quiet"])?;
    let data = std::sync::Arc::new(SMALL_FRAME.repeat(n));
    let s = TcpStream::connect(srv.addr).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    stream_in(s, data, 1, true);
    let l = srv.out.until("\"event\":\"closed\"")?;
    let dt = t0.elapsed().as_secs_f64();
    if !l.contains("peer closed") {
        return Err(format!("unexpected close: {l}"));
    }
    Ok(n as f64 / dt)
}

/// The same bytes into `socat` writing to /dev/null: what a byte pipe does with them.
fn socat_sink(data: std::sync::Arc<Vec<u8>>, times: usize) -> Res<f64> {
    have("socat")?;
    let port = free_port()?;
    let child = Command::new("socat")
        .args([
            "-u",
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"),
            "OPEN:/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run socat: {e}"))?;
    let mut p = KillOnDrop(child);
    let mut s = connect_retry(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let t0 = Instant::now();
    for _ in 0..times {
        s.write_all(&data).map_err(|e| e.to_string())?;
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let st = p.0.wait().map_err(|e| e.to_string())?;
    let dt = t0.elapsed().as_secs_f64();
    if !st.success() {
        return Err(format!("socat failed: {st}"));
    }
    Ok(dt)
}

fn big_frame() -> Vec<u8> {
    encode(&Header::new().with("info", "x"), &vec![0x5a; 1 << 20]).unwrap_or_default()
}

/// 1 GiB as 1 MiB frames into `serve --json --body-format none`: bytes/s.
fn bulk_sockmod(bytes: usize) -> Res<f64> {
    let mut srv = Serve::start(&["--body-format", "none"])?;
    let frame = std::sync::Arc::new(big_frame());
    let n = bytes >> 20;
    let s = TcpStream::connect(srv.addr).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    stream_in(s, frame.clone(), n, false);
    srv.out.skip_lines(1 + n)?;
    let dt = t0.elapsed().as_secs_f64();
    Ok((n * frame.len()) as f64 / dt)
}

fn bulk_socat(bytes: usize) -> Res<f64> {
    let frame = std::sync::Arc::new(big_frame());
    let n = bytes >> 20;
    let dt = socat_sink(frame.clone(), n)?;
    Ok((n * frame.len()) as f64 / dt)
}

/// iperf3's own receiver figure for the same number of bytes.
fn bulk_iperf3(bytes: usize) -> Res<f64> {
    have("iperf3")?;
    let port = free_port()?.to_string();
    let child = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run iperf3: {e}"))?;
    let _server = KillOnDrop(child);
    // The server prints nothing useful unbuffered: retry the client until it listens.
    let until = Instant::now() + Duration::from_secs(10);
    // iperf3 -J exits 0 even when it cannot connect: look at its "error".
    let v: serde_json::Value = loop {
        let o = Command::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &port,
                "-J",
                "-n",
                &bytes.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run iperf3: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).map_err(|e| format!("iperf3 output: {e}"))?;
        let refused = v["error"]
            .as_str()
            .is_some_and(|e| e.contains("Connection refused"));
        if !refused || Instant::now() > until {
            break v;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 8.0)
        .ok_or_else(|| format!("iperf3 gave no figure: {}", v["error"]))
}

// --- fan-out ---------------------------------------------------------------

/// `clients` receivers read on one mio thread; `wait(bytes)` returns once every
/// receiver has taken that many bytes in total.
struct Receivers {
    got: std::sync::Arc<Vec<std::sync::atomic::AtomicU64>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receivers {
    fn connect(addr: SocketAddr, clients: usize) -> Res<Receivers> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let mut socks = Vec::with_capacity(clients);
        for i in 0..clients {
            let s = connect_retry(addr)?;
            linger0(&s);
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            socks.push(mio::net::TcpStream::from_std(s));
            if i % 8 == 7 {
                // ncat listens with a backlog of 10: overflowing it costs SYN retries.
                wait_accepted(addr.port())?;
            }
        }
        let got: std::sync::Arc<Vec<AtomicU64>> =
            std::sync::Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let Ok(mut poll) = mio::Poll::new() else {
                return;
            };
            for (i, s) in socks.iter_mut().enumerate() {
                let _ = poll
                    .registry()
                    .register(s, mio::Token(i), mio::Interest::READABLE);
            }
            let mut events = mio::Events::with_capacity(1024);
            let mut buf = vec![0u8; 1 << 20];
            while !st.load(Ordering::Relaxed) {
                if poll
                    .poll(&mut events, Some(Duration::from_millis(20)))
                    .is_err()
                {
                    return;
                }
                for ev in events.iter() {
                    let i = ev.token().0;
                    // MSG_TRUNC: the kernel counts and discards TCP data without
                    // copying it out, so the receivers cost little and the row
                    // measures the server rather than this process.
                    let fd = socks[i].as_raw_fd();
                    loop {
                        // SAFETY: recv into a buffer we own, with its length.
                        let n = unsafe {
                            libc::recv(
                                fd,
                                buf.as_mut_ptr().cast(),
                                buf.len(),
                                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                            )
                        };
                        if n <= 0 {
                            break;
                        }
                        g[i].fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Receivers {
            got,
            stop,
            thread: Some(thread),
        })
    }

    fn wait(&self, bytes: u64, timeout: Duration) -> Res<()> {
        use std::sync::atomic::Ordering;
        let until = Instant::now() + timeout;
        loop {
            if self.got.iter().all(|g| g.load(Ordering::Relaxed) >= bytes) {
                return Ok(());
            }
            if Instant::now() > until {
                let short = self
                    .got
                    .iter()
                    .filter(|g| g.load(Ordering::Relaxed) < bytes)
                    .count();
                return Err(format!("{short} receivers short of {bytes} bytes"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const FAN_BODY: usize = 1024;

/// `broadcast` of a 1 KiB body typed into serve's stdin: deliveries per second.
fn fanout_sockmod(clients: usize, casts: usize) -> Res<f64> {
    let mut srv = Serve::start(&["--quiet"])?;
    let rx = Receivers::connect(srv.addr, clients)?;
    let frame_len = encode(&Header::new(), &[b'x'; FAN_BODY])
        .map_err(|e| e.to_string())?
        .len() as u64;
    let line = format!("bc -b {}\n", "x".repeat(FAN_BODY));
    let mut stdin = srv.stdin.take().ok_or("no stdin")?;
    // Wait until every receiver is in: one broadcast reaches them all.
    let _ = srv.out.skip_lines(clients);
    stdin
        .write_all(line.as_bytes())
        .map_err(|e| e.to_string())?;
    rx.wait(frame_len, Duration::from_secs(30))?;
    let all = line.repeat(casts);
    let c0 = cpu_secs(srv.pid());
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(all.as_bytes());
        stdin
    });
    rx.wait(frame_len * (casts as u64 + 1), Duration::from_secs(120))?;
    let dt = t0.elapsed().as_secs_f64();
    if debug() {
        eprintln!(
            "    sockmod: {dt:.3} s, cpu {:.3} s",
            cpu_secs(srv.pid()) - c0
        );
    }
    drop(writer.join());
    Ok((clients * casts) as f64 / dt)
}

/// `ncat --broker` relaying the same frames from one sender to the receivers.
fn fanout_ncat(clients: usize, casts: usize) -> Res<f64> {
    have("ncat")?;
    let port = free_port()?;
    let child = Command::new("ncat")
        .args([
            "--broker",
            "--listen",
            "--max-conns",
            &(clients + 10).to_string(),
            "127.0.0.1",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run ncat: {e}"))?;
    let p = KillOnDrop(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let rx = Receivers::connect(addr, clients)?;
    let mut tx = connect_retry(addr)?;
    let frame = encode(&Header::new(), &[b'x'; FAN_BODY]).map_err(|e| e.to_string())?;
    let frame_len = frame.len() as u64;
    tx.write_all(&frame).map_err(|e| e.to_string())?;
    rx.wait(frame_len, Duration::from_secs(30))?;
    let all = frame.repeat(casts);
    let c0 = cpu_secs(p.0.id());
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let _ = tx.write_all(&all);
        tx
    });
    rx.wait(frame_len * (casts as u64 + 1), Duration::from_secs(120))?;
    let dt = t0.elapsed().as_secs_f64();
    if debug() {
        eprintln!("    ncat: {dt:.3} s, cpu {:.3} s", cpu_secs(p.0.id()) - c0);
    }
    drop(writer.join());
    Ok((clients * casts) as f64 / dt)
}

// --- idle connections ------------------------------------------------------

/// RSS growth of `serve` per held connection.
fn idle_conns(n: usize) -> Res<f64> {
    let mut srv = Serve::start(&["--quiet", "--max-conns", &(n + 100).to_string()])?;
    // Let the process settle before the baseline.
    std::thread::sleep(Duration::from_millis(100));
    let before = rss_bytes(srv.pid())?;
    let mut held = Vec::with_capacity(n);
    const BATCH: usize = 100;
    while held.len() < n {
        let k = BATCH.min(n - held.len());
        for _ in 0..k {
            let s = TcpStream::connect(srv.addr).map_err(|e| format!("connect: {e}"))?;
            linger0(&s);
            held.push(s);
        }
        srv.out.skip_lines(k)?; // one `connected` line each
    }
    let after = rss_bytes(srv.pid())?;
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

// --- round trip ------------------------------------------------------------

fn build_echo() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("SOCKMOD_ECHO") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--example", "echo"])
        .current_dir(MANIFEST_DIR)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("cargo build --release --example echo failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("target"));
    let p = target.join("release/examples/echo");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} not found", p.display()))
    }
}

/// Round trips of one small frame: sorted samples in µs.
fn rtt_samples(addr: SocketAddr, samples: usize) -> Res<Vec<f64>> {
    let mut s = connect_retry(addr)?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    linger0(&s);
    let frame = SMALL_FRAME;
    let mut back = [0u8; 64];
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let t0 = Instant::now();
        s.write_all(frame).map_err(|e| e.to_string())?;
        s.read_exact(&mut back[..frame.len()])
            .map_err(|e| e.to_string())?;
        let dt = t0.elapsed();
        if back[..frame.len()] != *frame {
            return Err("echo returned different bytes".into());
        }
        if i >= samples / 10 {
            out.push(dt.as_secs_f64() * 1e6);
        }
    }
    out.sort_by(|a, b| a.total_cmp(b));
    Ok(out)
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn rtt_sockmod(echo: &Path, samples: usize) -> Res<Vec<f64>> {
    let mut child = Command::new(echo)
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run echo: {e}"))?;
    let err = child.stderr.take().ok_or("no stderr")?;
    let _p = KillOnDrop(child);
    let mut l = String::new();
    BufReader::new(err)
        .read_line(&mut l)
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = l
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected line from echo: {l}"))?;
    rtt_samples(addr, samples)
}

/// `socat` echoing through a pipe: the same request/response over loopback.
fn rtt_socat(samples: usize) -> Res<Vec<f64>> {
    have("socat")?;
    let port = free_port()?;
    let child = Command::new("socat")
        .args([
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,nodelay"),
            "PIPE",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run socat: {e}"))?;
    let _p = KillOnDrop(child);
    rtt_samples(SocketAddr::from(([127, 0, 0, 1], port)), samples)
}

// --- start-up --------------------------------------------------------------

fn startup(prog: &str, arg: &str, runs: usize) -> Res<Fig> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let st = Command::new(prog)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {prog}: {e}"))?;
        v.push(t0.elapsed().as_secs_f64() * 1e3);
        if !st.success() {
            return Err(format!("{prog} {arg} failed"));
        }
    }
    Ok(Fig {
        v: median(v),
        unit: Unit::Millis,
    })
}

// --- file ------------------------------------------------------------------

/// A `sockmod filer` for the file row, reading commands from our pipe.
struct FilerProc {
    proc: KillOnDrop,
    stdin: ChildStdin,
    out: LineReader<ChildStdout>,
    port: u16,
}

impl FilerProc {
    fn start(id: &str, inbox: &Path) -> Res<FilerProc> {
        // Nothing listens on port 1: the filer retries quietly in the background.
        FilerProc::start_with(id, inbox, "127.0.0.1:1", &["--report-interval", "1h"], None)
    }

    /// A filer reporting to `ipserver`, with `extra` options, and `state` as its
    /// `XDG_STATE_HOME` when given.
    fn start_with(
        id: &str,
        inbox: &Path,
        ipserver: &str,
        extra: &[&str],
        state: Option<&Path>,
    ) -> Res<FilerProc> {
        let mut cmd = Command::new(sockmod_bin());
        // Keys and pins of the bench's filers stay out of the user's state.
        let scratch = Path::new(MANIFEST_DIR).join("target/bench-state");
        cmd.env("XDG_STATE_HOME", state.unwrap_or(&scratch));
        let mut child = cmd
            .args(["filer", "--id", id, "--bind", "127.0.0.1:0"])
            .args(["--ipserver", ipserver, "--json"])
            // Files are taken without asking (`ask` is the default).
            .args(["--accept-files", "yes"])
            .args(extra)
            .arg("--inbox")
            .arg(inbox)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", sockmod_bin()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let proc = KillOnDrop(child);
        let mut out = LineReader::new(stdout);
        let l = out.until("\"event\":\"listening\"")?;
        let port = listening_addr_in(&l)
            .map(|a| a.port())
            .ok_or_else(|| format!("unexpected line from filer: {l}"))?;
        Ok(FilerProc {
            proc,
            stdin,
            out,
            port,
        })
    }

    fn send(&mut self, line: &str) -> Res<()> {
        writeln!(self.stdin, "{line}").map_err(|e| format!("filer stdin: {e}"))
    }
}

/// Kills our child processes `pids` if the run is still going after `after`, so a
/// stuck run fails (their output ends) instead of hanging the bench.
struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    fn new(pids: Vec<u32>, after: Duration) -> Watchdog {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + after;
            while Instant::now() < until {
                if d.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !d.load(Ordering::Relaxed) {
                for pid in pids {
                    // SAFETY: kill(2) on our own child, still unreaped (its Proc
                    // outlives this watchdog), so the id cannot have been reused.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                }
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Peak RSS of a live process.
fn peak_rss(pid: u32) -> u64 {
    status_kib(pid, "VmHWM") * 1024
}

/// sockmod's filer → filer transfer of `src` into a fresh inbox (as
/// scripts/bench_file.sh does it): seconds from `sendfile` to the receiver's
/// `done` (size and BLAKE3 digest verified by the receiver), and the larger peak
/// RSS of the two sides.
fn file_sockmod(src: &Path, dir: &Path, bytes: usize) -> Res<(f64, u64)> {
    let inbox = dir.join("inbox");
    let _ = std::fs::remove_dir_all(&inbox);
    let mut bob = FilerProc::start("bob", &inbox)?;
    let mut alice = FilerProc::start("alice", &dir.join("inbox-alice"))?;
    // Declared after the filers: dropped (stopped) before they are reaped.
    let _watchdog = Watchdog::new(
        vec![bob.proc.0.id(), alice.proc.0.id()],
        Duration::from_secs(120),
    );
    alice.send(&format!("connect 127.0.0.1:{}", bob.port))?;
    alice.out.until("\"event\":\"identified\"")?;
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
    let rss = peak_rss(alice.proc.0.id()).max(peak_rss(bob.proc.0.id()));
    let got = std::fs::metadata(inbox.join(src.file_name().unwrap_or_default()))
        .map(|m| m.len() as usize)
        .map_err(|e| format!("received file: {e}"))?;
    if got != bytes {
        return Err(format!("received {got} bytes of {bytes}"));
    }
    let _ = std::fs::remove_dir_all(&inbox);
    Ok((dt, rss))
}

/// socat disk to disk: a listener writing a file, a sender reading one.
fn file_socat(src: &Path, dir: &Path) -> Res<f64> {
    have("socat")?;
    let port = free_port()?;
    let dst = dir.join("socat.out");
    let _ = std::fs::remove_file(&dst);
    let recv = Command::new("socat")
        .args([
            "-u".to_string(),
            format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"),
            format!("CREATE:{}", dst.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run socat: {e}"))?;
    let mut recv = KillOnDrop(recv);
    // Wait until it listens, without taking its one connection.
    let until = Instant::now() + Duration::from_secs(10);
    while listen_queue(port).is_none() {
        if Instant::now() > until {
            return Err("socat did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    let st = Command::new("socat")
        .args([
            "-u".to_string(),
            format!("OPEN:{}", src.display()),
            format!("TCP:127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run socat: {e}"))?;
    let rst = recv.0.wait().map_err(|e| e.to_string())?;
    let dt = t0.elapsed().as_secs_f64();
    if !st.success() || !rst.success() {
        return Err("socat transfer failed".into());
    }
    let _ = std::fs::remove_file(&dst);
    Ok(dt)
}

/// The file rows' directory and their source file of `bytes` pseudo-random
/// bytes (made once, kept while its size fits).
fn file_source(bytes: usize) -> (PathBuf, PathBuf, Res<()>) {
    let dir = Path::new(MANIFEST_DIR).join("target/bench-files");
    let src = dir.join("source.bin");
    let prepare = || -> Res<()> {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if std::fs::metadata(&src).is_ok_and(|m| m.len() as usize == bytes) {
            return Ok(());
        }
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(&src).map_err(|e| e.to_string())?);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..bytes >> 20 {
            for c in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).map_err(|e| e.to_string())?;
        }
        f.flush().map_err(|e| e.to_string())
    };
    let ready = prepare();
    (dir, src, ready)
}

fn file_rows(set: &Settings) -> Vec<Row> {
    let (dir, src, ready) = file_source(set.file_bytes);
    let runs = set.runs.min(3);
    let peak = std::cell::Cell::new(0u64);
    let [ours, reference] = match ready {
        Err(e) => [Err(e.clone()), Err(e)],
        Ok(()) => med_turns(
            runs,
            Unit::BytesPerSec,
            [
                &mut || {
                    file_sockmod(&src, &dir, set.file_bytes).map(|(s, rss)| {
                        peak.set(peak.get().max(rss));
                        set.file_bytes as f64 / s
                    })
                },
                &mut || file_socat(&src, &dir).map(|s| set.file_bytes as f64 / s),
            ],
        ),
    };
    let rss = ours.as_ref().map_err(Clone::clone).map(|_| Fig {
        v: peak.get() as f64,
        unit: Unit::Mebibytes,
    });
    vec![
        row(
            &format!("file: {} filer → filer", size_name(set.file_bytes)),
            ours,
            Some(("socat disk→disk", reference)),
            Some(("≤ 1.1× socat's time", &|o, r| {
                r.is_some_and(|r| o >= r / 1.1)
            })),
        ),
        row(
            "file: peak RSS, larger side",
            rss,
            None,
            Some(("≤ 32 MiB each side", &at_most(32.0 * 1048576.0))),
        ),
    ]
}

// --- folder and resume (benches/compare/folder.rs) ---------------------------

fn folder_rows(set: &Settings) -> Vec<Row> {
    let n = set.folder_files;
    let dir = Path::new(MANIFEST_DIR).join("target/bench-files");
    let (src, ready) = folder::source(n);
    let [ours, reference] = match ready {
        Err(e) => [Err(e.clone()), Err(e)],
        Ok(()) => med_turns(
            set.runs.min(3),
            Unit::Seconds,
            [&mut || folder::folder_sockmod(&src, &dir, n), &mut || {
                folder::folder_tar(&src, &dir, n)
            }],
        ),
    };
    vec![row(
        &format!(
            "folder: {} files of {} KiB filer → filer",
            count_name(n),
            folder::FILE_BYTES >> 10
        ),
        ours,
        Some(("tar c → socat → socat → tar x", reference)),
        Some(("≤ 1.5× tar+socat's time", &|o, r| {
            r.is_some_and(|r| o <= 1.5 * r)
        })),
    )]
}

fn resume_rows(set: &Settings) -> Vec<Row> {
    let (dir, src, ready) = file_source(set.file_bytes);
    let bytes = set.file_bytes;
    let [ours, full] = match ready {
        Err(e) => [Err(e.clone()), Err(e)],
        Ok(()) => med_turns(
            set.runs.min(3),
            Unit::Seconds,
            [
                &mut || folder::resume_sockmod(&src, &dir, bytes),
                &mut || file_sockmod(&src, &dir, bytes).map(|(s, _)| s),
            ],
        ),
    };
    vec![row(
        &format!("resume: {} cut at 90%, sendfile again", size_name(bytes)),
        ours,
        Some(("full transfer filer → filer", full)),
        Some(("≤ 20% of a full transfer's time", &|o, r| {
            r.is_some_and(|r| o <= 0.2 * r)
        })),
    )]
}

// --- piped broadcast (flow control) -----------------------------------------

fn piped_rows(set: &Settings) -> Vec<Row> {
    let (c, k) = (set.pipe_clients, set.pipe_broadcasts);
    let runs = set.runs.min(3);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    // Taking turns; a failed run ends that side's runs.
    let mut ours_err = None;
    let mut theirs_err = None;
    for _ in 0..runs {
        if ours_err.is_none() {
            match flow::sockmod(c, k) {
                Ok(o) => ours.push(o),
                Err(e) => ours_err = Some(e),
            }
        }
        if theirs_err.is_none() {
            match flow::ncat(c, k) {
                Ok(o) => theirs.push(o),
                Err(e) => theirs_err = Some(e),
            }
        }
    }
    if debug() {
        for (who, v) in [("sockmod", &ours), ("ncat", &theirs)] {
            for o in v {
                eprintln!(
                    "    {who}: {:.3} s, {} delivered, {} bytes, {} lost",
                    o.wall, o.delivered, o.bytes, o.lost
                );
            }
        }
    }
    let fig = |v: &[flow::Outcome],
               err: &Option<String>,
               unit: Unit,
               f: &dyn Fn(&flow::Outcome) -> f64| {
        match err {
            Some(e) if v.is_empty() => Err(e.clone()),
            _ if v.is_empty() => Err("no run".to_string()),
            _ => Ok(Fig {
                v: median(v.iter().map(f).collect()),
                unit,
            }),
        }
    };
    let name = format!(
        "piped broadcast {} × {} B to {c} readers",
        count_name(k),
        flow::BODY
    );
    let rate = |o: &flow::Outcome| o.delivered as f64 / o.wall;
    let bytes = |o: &flow::Outcome| o.bytes as f64 / o.wall;
    let wall = |o: &flow::Outcome| o.wall;
    // Every run's losses, summed: one lossy run is a failure.
    let lost = |v: &[flow::Outcome], err: &Option<String>| -> Res<Fig> {
        match err {
            Some(e) => Err(e.clone()),
            None => Ok(Fig {
                v: v.iter().map(|o| o.lost as f64).sum(),
                unit: Unit::Count,
            }),
        }
    };
    vec![
        row(
            &format!("{name} (deliveries)"),
            fig(&ours, &ours_err, Unit::MsgPerSec, &rate),
            Some((
                "ncat --broker",
                fig(&theirs, &theirs_err, Unit::MsgPerSec, &rate),
            )),
            Some(("≥ 0.8× ncat", &|o, r| r.is_none_or(|r| o >= 0.8 * r))),
        ),
        row(
            &format!("{name} (delivered bytes)"),
            fig(&ours, &ours_err, Unit::BytesPerSec, &bytes),
            Some((
                "ncat --broker",
                fig(&theirs, &theirs_err, Unit::BytesPerSec, &bytes),
            )),
            None,
        ),
        row(
            &format!("{name} (wall time)"),
            fig(&ours, &ours_err, Unit::Seconds, &wall),
            Some((
                "ncat --broker",
                fig(&theirs, &theirs_err, Unit::Seconds, &wall),
            )),
            None,
        ),
        row(
            &format!("{name} (messages lost, all runs)"),
            lost(&ours, &ours_err),
            Some(("ncat --broker", lost(&theirs, &theirs_err))),
            Some(("= 0", &at_most(0.0))),
        ),
    ]
}

// --- TLS -------------------------------------------------------------------

fn tls_bulk_rows(set: &Settings, cert: &Res<tls::Cert>) -> Vec<Row> {
    let b = set.bulk_bytes;
    let [ours, socat, plain] = match cert {
        Err(e) => [Err(e.clone()), Err(e.clone()), Err(e.clone())],
        Ok(c) => med_turns(
            set.runs,
            Unit::BytesPerSec,
            [
                &mut || tls::bulk_sockmod(c, b),
                &mut || tls::bulk_socat(c, b),
                &mut || bulk_sockmod(b),
            ],
        ),
    };
    let name = format!("bulk TLS {} as 1 MiB frames, --json", size_name(b));
    vec![
        row(
            &name,
            ours.clone(),
            Some(("socat OPENSSL-LISTEN → /dev/null", socat)),
            Some(("≥ 1.0× socat", &|o, r| r.is_some_and(|r| o >= r))),
        ),
        row(
            &format!("{name} (vs own plaintext)"),
            ours,
            Some(("sockmod plaintext bulk", plain)),
            Some(("≥ 0.5× plaintext", &|o, r| {
                r.is_some_and(|r| o >= 0.5 * r)
            })),
        ),
    ]
}

fn tls_file_rows(set: &Settings) -> Vec<Row> {
    let (dir, src, ready) = file_source(set.file_bytes);
    let bytes = set.file_bytes;
    let [ours, plain] = match ready {
        Err(e) => [Err(e.clone()), Err(e)],
        Ok(()) => med_turns(
            set.runs.min(3),
            Unit::BytesPerSec,
            [
                &mut || tls::file_filers(&src, &dir, bytes, false).map(|s| bytes as f64 / s),
                &mut || tls::file_filers(&src, &dir, bytes, true).map(|s| bytes as f64 / s),
            ],
        ),
    };
    vec![row(
        &format!(
            "file TLS: {} filer → filer by roster name",
            size_name(bytes)
        ),
        ours,
        Some(("same, both --plaintext", plain)),
        Some(("≥ 0.8× plaintext", &|o, r| {
            r.is_some_and(|r| o >= 0.8 * r)
        })),
    )]
}

fn handshake_rows(set: &Settings, cert: &Res<tls::Cert>) -> Vec<Row> {
    let secs = set.handshake_secs;
    let [ours, theirs] = match cert {
        Err(e) => [Err(e.clone()), Err(e.clone())],
        Ok(c) => med_turns(
            set.runs.min(3),
            Unit::HandshakesPerSec,
            [&mut || tls::handshakes_sockmod(c, secs), &mut || {
                tls::handshakes_openssl(c, secs)
            }],
        ),
    };
    vec![row(
        "TLS handshakes/s, full (openssl s_time -new), P-256 cert",
        ours,
        Some(("openssl s_server", theirs)),
        Some(("ahead of s_server", &|o, r| r.is_none_or(|r| o > r))),
    )]
}

// --- codec micro-benchmarks -------------------------------------------------

fn codec_rows(set: &Settings) -> Vec<Row> {
    let n = if set.quick { 200_000 } else { 2_000_000 };
    let small = Header::new().with("info", "x");
    let kib = vec![0x61u8; 1024];
    let mut rows = Vec::new();
    for (name, body) in [("CL:0;info:x", &[][..]), ("info:x + 1 KiB body", &kib[..])] {
        let enc = med(set.runs, Unit::NanosPerFrame, || {
            let mut out = Vec::with_capacity(64 << 10);
            let t0 = Instant::now();
            for _ in 0..n {
                out.clear();
                encode_into(std::hint::black_box(&small), body, &mut out)
                    .map_err(|e| e.to_string())?;
                std::hint::black_box(&out);
            }
            Ok(t0.elapsed().as_nanos() as f64 / n as f64)
        });
        rows.push(row(&format!("codec encode, {name}"), enc, None, None));
        let frame = encode(&small, body).map_err(|e| e.to_string());
        let dec = frame.and_then(|frame| {
            let batch = 1000;
            let input = frame.repeat(batch);
            med(set.runs, Unit::NanosPerFrame, || {
                let mut d = Decoder::default();
                let mut out: Vec<Message> = Vec::with_capacity(batch);
                let t0 = Instant::now();
                for _ in 0..n / batch {
                    // 64 KiB reads, as from a socket.
                    for chunk in input.chunks(64 << 10) {
                        d.feed(std::hint::black_box(chunk), &mut out)
                            .map_err(|e| e.to_string())?;
                    }
                    if out.len() != batch {
                        return Err("decoder lost frames".into());
                    }
                    out.clear();
                }
                Ok(t0.elapsed().as_nanos() as f64 / n as f64)
            })
        });
        rows.push(row(&format!("codec decode, {name}"), dec, None, None));
    }
    rows
}

fn size_name(b: usize) -> String {
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

fn count_name(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The sockmod binary measured: `SOCKMOD_BIN`, else the one cargo built.
fn sockmod_bin() -> String {
    std::env::var("SOCKMOD_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Times TCP entered memory pressure (system-wide): loopback then drops and
/// retransmits, and rates collapse for reasons that are not the program's.
fn tcp_memory_pressures() -> u64 {
    let s = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = s.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let names = names.split_whitespace();
        let values = values.split_whitespace();
        for (n, v) in names.zip(values) {
            if n == "TCPMemoryPressures" {
                return v.parse().unwrap_or(0);
            }
        }
    }
    0
}

fn main() {
    raise_own_limit();
    let pressures = tcp_memory_pressures();
    let set = Settings::from_args();
    let runs = set.runs;
    let mut rows: Vec<Row> = Vec::new();
    eprintln!(
        "sockmod benchmark ({}, medians of {} runs); binary {}",
        if set.quick { "quick" } else { "full" },
        runs,
        sockmod_bin()
    );
    let mut section = Instant::now();
    let mut done = |name: &str| {
        eprintln!("  {name}: {:.1} s", section.elapsed().as_secs_f64());
        section = Instant::now();
    };

    if set.wants("ingest") {
        let n = set.ingest_frames;
        eprintln!("· ingest …");
        let data = std::sync::Arc::new(SMALL_FRAME.repeat(n));
        let [ours, reference] = med_turns(
            runs,
            Unit::MsgPerSec,
            [&mut || ingest_json(n), &mut || {
                socat_sink(data.clone(), 1).map(|dt| n as f64 / dt)
            }],
        );
        rows.push(row(
            &format!("ingest {} frames CL:0;info:x, --json", count_name(n)),
            ours,
            Some(("socat same bytes → /dev/null", reference)),
            Some(("≥ 2M msg/s", &at_least(2e6))),
        ));
        let [ours, reference] = med_turns(
            runs,
            Unit::MsgPerSec,
            [&mut || ingest_quiet(n), &mut || {
                socat_sink(data.clone(), 1).map(|dt| n as f64 / dt)
            }],
        );
        rows.push(row(
            &format!("ingest {} frames, --quiet", count_name(n)),
            ours,
            Some(("socat same bytes → /dev/null", reference)),
            Some(("≥ 3M msg/s", &at_least(3e6))),
        ));
        done("ingest");
    }

    if set.wants("bulk") {
        eprintln!("· bulk …");
        let b = set.bulk_bytes;
        let [ours, socat, iperf] = med_turns(
            runs,
            Unit::BytesPerSec,
            [&mut || bulk_sockmod(b), &mut || bulk_socat(b), &mut || {
                bulk_iperf3(b)
            }],
        );
        let name = format!("bulk {} as 1 MiB frames, --json", size_name(b));
        rows.push(row(
            &name,
            ours.clone(),
            Some(("socat → /dev/null", socat)),
            Some(("≥ 0.8× socat", &|o, r| r.is_some_and(|r| o >= 0.8 * r))),
        ));
        rows.push(row(
            &format!("bulk {} (vs iperf3)", size_name(b)),
            ours,
            Some(("iperf3", iperf)),
            None,
        ));
        done("bulk");
    }

    if set.wants("fan-out") {
        eprintln!("· fan-out …");
        let (c, k) = (set.fan_clients, set.fan_broadcasts);
        let [ours, ncat] = med_turns(
            runs,
            Unit::MsgPerSec,
            [&mut || fanout_sockmod(c, k), &mut || fanout_ncat(c, k)],
        );
        rows.push(row(
            &format!(
                "fan-out {} × 1 KiB broadcasts to {c} clients (deliveries)",
                count_name(k)
            ),
            ours,
            Some(("ncat --broker", ncat)),
            Some(("≥ 1M/s and ahead of ncat", &|o, r| {
                o >= 1e6 && r.is_none_or(|r| o > r)
            })),
        ));
        done("fan-out");
    }

    if set.wants("piped") {
        eprintln!("· piped broadcast …");
        rows.extend(piped_rows(&set));
        done("piped");
    }

    if set.wants("idle") {
        eprintln!("· idle connections …");
        let n = set.idle_conns;
        let ours = med(runs.min(3), Unit::BytesPerConn, || idle_conns(n));
        rows.push(row(
            &format!("idle: serve RSS growth holding {} conns", count_name(n)),
            ours,
            None,
            Some(("≤ 4096 B/conn", &at_most(4096.0))),
        ));
        done("idle");
    }

    if set.wants("rtt") {
        eprintln!("· round trip …");
        let n = set.rtt_samples;
        let r3 = runs.min(3);
        // Taking turns, as for the other rows.
        let echo = build_echo();
        let mut ours: Res<Vec<Vec<f64>>> = echo.as_ref().map(|_| Vec::new()).map_err(Clone::clone);
        let mut theirs: Res<Vec<Vec<f64>>> = Ok(Vec::new());
        for _ in 0..r3 {
            if let (Ok(list), Ok(e)) = (&mut ours, &echo) {
                match rtt_sockmod(e, n) {
                    Ok(v) => list.push(v),
                    Err(err) => ours = Err(err),
                }
            }
            if let Ok(list) = &mut theirs {
                match rtt_socat(n) {
                    Ok(v) => list.push(v),
                    Err(err) => theirs = Err(err),
                }
            }
        }
        for (p, name, target) in [(0.5, "p50", true), (0.99, "p99", false)] {
            let limit = at_most(50.0);
            let target: Target = if target {
                Some(("≤ 50 µs", &limit))
            } else {
                None
            };
            let f = |r: &Res<Vec<Vec<f64>>>| -> Res<Fig> {
                r.as_ref().map_err(Clone::clone).map(|runs| Fig {
                    v: median(runs.iter().map(|s| pct(s, p)).collect()),
                    unit: Unit::Micros,
                })
            };
            rows.push(row(
                &format!("round trip {name}, examples/echo.rs"),
                f(&ours),
                Some(("socat PIPE echo", f(&theirs))),
                target,
            ));
        }
        done("rtt");
    }

    if set.wants("start") {
        eprintln!("· start-up …");
        let n = set.startup_runs;
        let ours = startup(&sockmod_bin(), "--version", n);
        let theirs = have("socat").and_then(|_| startup("socat", "-V", n));
        rows.push(row(
            "start-up: sockmod --version",
            ours,
            Some(("socat -V", theirs)),
            Some(("≤ 5 ms", &at_most(5.0))),
        ));
        done("start");
    }

    if set.wants("file") {
        eprintln!("· file …");
        rows.extend(file_rows(&set));
        done("file");
    }

    if set.wants("folder") {
        eprintln!("· folder …");
        rows.extend(folder_rows(&set));
        done("folder");
    }

    if set.wants("resume") {
        eprintln!("· resume …");
        rows.extend(resume_rows(&set));
        done("resume");
    }

    let cert = if set.wants("tls-bulk") || set.wants("handshakes") {
        tls::make_cert()
    } else {
        Err("not made".to_string())
    };

    if set.wants("tls-bulk") {
        eprintln!("· bulk TLS …");
        rows.extend(tls_bulk_rows(&set, &cert));
        done("tls-bulk");
    }

    if set.wants("tls-file") {
        eprintln!("· file TLS …");
        if let Err(e) = std::fs::create_dir_all(tls::state_dir()) {
            eprintln!("  cannot make {}: {e}", tls::state_dir().display());
        }
        rows.extend(tls_file_rows(&set));
        done("tls-file");
    }

    if set.wants("handshakes") {
        eprintln!("· TLS handshakes …");
        rows.extend(handshake_rows(&set, &cert));
        done("handshakes");
    }

    if set.wants("codec") {
        eprintln!("· codec …");
        rows.extend(codec_rows(&set));
        done("codec");
    }

    println!();
    print_table(&rows);
    println!(
        "\nratio = sockmod ÷ reference (rates: higher is better; times: lower is better). \
         Medians of {runs} runs taking turns with the reference. References: {INSTALL_HINT}"
    );
    let more = tcp_memory_pressures().saturating_sub(pressures);
    if more > 0 {
        println!(
            "\nwarning: the kernel's TCP memory was under pressure {more} time(s) during this run \
             (other programs' sockets): network figures may be low; run again on a quiet machine"
        );
    }
}
