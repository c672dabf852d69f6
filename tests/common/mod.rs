//! Shared harness for the end-to-end tests: runs the real `sockmod` binary with
//! piped stdio, collects its stdout and stderr lines on background threads, and
//! speaks the wire protocol from raw `std::net::TcpStream` clients.
//!
//! Every wait is bounded by a deadline and polls (condition variables or socket
//! read timeouts); nothing synchronises with a bare sleep. Child processes are
//! killed when their [`Proc`] is dropped, so a failing test leaks nothing.
//!
//! Use from a test file with `mod common;` and `use common::*;`. The benchmark
//! (`benches/compare/main.rs`) includes it too, for the same process handling.
#![allow(dead_code)]

use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sockmod::protocol::{Decoder, Header, Message, encode};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default bound on every wait: generous for a loaded 2-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sockmod");

// ---------------------------------------------------------------------------
// Output capture
// ---------------------------------------------------------------------------

/// One line of a child's output (without the newline).
#[derive(Debug, Clone)]
pub struct Line {
    /// The text (lossily decoded as UTF-8).
    pub text: String,
    /// The line parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

#[derive(Default)]
struct StreamState {
    lines: Vec<Line>,
    /// `taken[i]`: line `i` was already returned by a wait.
    taken: Vec<bool>,
    eof: bool,
}

/// The lines of one output stream of a child, filled by a reader thread.
///
/// Waits return the first line not yet returned by an earlier wait that matches
/// (and mark it returned), so waiting twice for the same kind of line finds two
/// different lines, and lines can be waited for in any order.
#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<StreamState>, Condvar)>,
}

impl Lines {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn_reader(&self, name: &str, r: impl Read + Send + 'static) -> JoinHandle<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut r = BufReader::with_capacity(1 << 16, r);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if buf.last() == Some(&b'\n') {
                                buf.pop();
                            }
                            let text = String::from_utf8_lossy(&buf).into_owned();
                            let json = if text.starts_with('{') {
                                serde_json::from_str(&text).ok()
                            } else {
                                None
                            };
                            let mut st = me.lock();
                            st.lines.push(Line { text, json });
                            st.taken.push(false);
                            drop(st);
                            me.inner.1.notify_all();
                        }
                    }
                }
                me.lock().eof = true;
                me.inner.1.notify_all();
            })
            .expect("spawn reader thread")
    }

    /// Calls `step` on the stream now and after every change until it answers
    /// `Some`, the stream has ended, or `timeout` passes; returns the answer.
    fn watch<T>(
        &self,
        timeout: Duration,
        mut step: impl FnMut(&mut StreamState) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(t) = step(&mut st) {
                return Some(t);
            }
            let now = Instant::now();
            if st.eof || now >= deadline {
                return None;
            }
            st = self
                .inner
                .1
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the first unreturned line matching `pred`; marks it returned.
    pub fn wait(&self, mut pred: impl FnMut(&Line) -> bool, timeout: Duration) -> Option<Line> {
        // Lines already scanned and rejected need no second look: the predicate
        // is applied once per line per wait.
        let mut scanned = 0;
        self.watch(timeout, |st| {
            for i in scanned..st.lines.len() {
                if !st.taken[i] && pred(&st.lines[i]) {
                    st.taken[i] = true;
                    return Some(st.lines[i].clone());
                }
            }
            scanned = st.lines.len();
            None
        })
    }

    /// Every line so far (returned or not).
    pub fn all(&self) -> Vec<Line> {
        self.lock().lines.clone()
    }

    /// The text of every line so far.
    pub fn texts(&self) -> Vec<String> {
        self.lock().lines.iter().map(|l| l.text.clone()).collect()
    }

    /// How many lines so far match `pred` (returned or not).
    pub fn count(&self, mut pred: impl FnMut(&Line) -> bool) -> usize {
        self.lock().lines.iter().filter(|l| pred(l)).count()
    }

    /// Waits until at least `n` lines so far match `pred`; returns the count reached.
    pub fn wait_count(
        &self,
        mut pred: impl FnMut(&Line) -> bool,
        n: usize,
        timeout: Duration,
    ) -> usize {
        let mut scanned = 0;
        let mut found = 0;
        self.watch(timeout, |st| {
            found += st.lines[scanned..].iter().filter(|l| pred(l)).count();
            scanned = st.lines.len();
            (found >= n).then_some(())
        });
        found
    }

    /// Waits until the stream is closed (the child exited or closed it).
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        self.watch(timeout, |st| st.eof.then_some(())).is_some()
    }

    /// The last `n` lines, for failure messages (long lines clipped).
    pub fn tail(&self, n: usize) -> String {
        let st = self.lock();
        let start = st.lines.len().saturating_sub(n);
        st.lines[start..]
            .iter()
            .map(|l| clip(&l.text, 300))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

// ---------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------

/// A running `sockmod` with piped stdin, stdout and stderr. Killed on drop.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines the child wrote to stdout.
    pub out: Lines,
    /// Lines the child wrote to stderr.
    pub err: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    args: Vec<String>,
}

impl Proc {
    /// Runs `sockmod ARGS...` (any mode).
    pub fn spawn(args: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Proc::spawn_cmd(cmd)
    }

    /// Runs a prepared command (e.g. with a working directory or environment);
    /// stdio is replaced by pipes.
    pub fn spawn_cmd(mut cmd: Command) -> Proc {
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Keys and pins go to a state directory of this process's own, unless
        // the test chose one (to restart a peer with the same key).
        if !cmd.get_envs().any(|(k, _)| k == "XDG_STATE_HOME") {
            cmd.env("XDG_STATE_HOME", tmp_path("state"));
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN} {args:?}: {e}"));
        let stdin = child.stdin.take();
        let out = Lines::default();
        let err = Lines::default();
        let readers = vec![
            out.spawn_reader("child-stdout", child.stdout.take().expect("stdout")),
            err.spawn_reader("child-stderr", child.stderr.take().expect("stderr")),
        ];
        Proc {
            child,
            stdin,
            out,
            err,
            readers,
            status: None,
            args,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What was captured so far, for failure messages.
    pub fn context(&self) -> String {
        format!(
            "sockmod {:?}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.args,
            self.out.tail(30),
            self.err.tail(30)
        )
    }

    /// Writes one command line (a newline is added) to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.write_stdin(&buf);
    }

    /// Writes raw bytes to the child's stdin.
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to the child's stdin: {e}\n{}", self.context()));
    }

    /// Closes the child's stdin (end of piped input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line matching `pred`.
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.out.wait(|l| pred(&l.text), timeout).map(|l| l.text)
    }

    /// Waits for a stderr line matching `pred`.
    pub fn wait_err_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.err.wait(|l| pred(&l.text), timeout).map(|l| l.text)
    }

    /// Waits for a stdout JSON line matching `pred`.
    pub fn wait_json(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        self.out
            .wait(|l| l.json.as_ref().is_some_and(&pred), timeout)
            .and_then(|l| l.json)
    }

    /// Like [`Proc::wait_line`] with [`TIMEOUT`]; panics (with the captured output)
    /// when no line comes.
    pub fn expect_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(pred, TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no stdout line {what} within {TIMEOUT:?}\n{}",
                self.context()
            )
        })
    }

    /// Like [`Proc::wait_err_line`] with [`TIMEOUT`]; panics when no line comes.
    pub fn expect_err_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_err_line(pred, TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no stderr line {what} within {TIMEOUT:?}\n{}",
                self.context()
            )
        })
    }

    /// Like [`Proc::wait_json`] with [`TIMEOUT`]; panics when no event comes.
    pub fn expect_json(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_json_within(what, pred, TIMEOUT)
    }

    /// Like [`Proc::wait_json`]; panics when no event comes within `timeout`.
    pub fn expect_json_within(
        &self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        self.wait_json(pred, timeout).unwrap_or_else(|| {
            panic!(
                "no JSON event {what} within {timeout:?}\n{}",
                self.context()
            )
        })
    }

    /// Waits for a JSON event named `event` whose fields include every pair of
    /// `fields` (e.g. `&[("peer", json!(2))]`).
    pub fn expect_event(&self, event: &str, fields: &[(&str, Value)]) -> Value {
        let what = format!("{event} {fields:?}");
        self.expect_json(&what, |v| {
            v["event"] == event && fields.iter().all(|(k, want)| &v[*k] == want)
        })
    }

    /// Waits for the server's `connected` event of a raw client (matched by the
    /// client's local address); returns the connection id the server gave it.
    pub fn expect_connected(&self, client: &Client) -> u64 {
        let addr = client.local_addr().to_string();
        let v = self.expect_event("connected", &[("addr", Value::from(addr))]);
        v["peer"]
            .as_u64()
            .unwrap_or_else(|| panic!("connected event without a peer id: {v}"))
    }

    /// Waits for the `listening on IP:PORT` notice on stderr (every listening mode
    /// prints it, with or without `--json`); returns the address.
    pub fn listening_addr(&self) -> SocketAddr {
        let l = self.expect_err_line("`listening on ADDR`", |l| l.starts_with("listening on "));
        // `listening on ADDR`, perhaps followed by ` (TLS, SHA-256 …)`.
        let a = l["listening on ".len()..]
            .split_whitespace()
            .next()
            .unwrap_or("");
        a.parse()
            .unwrap_or_else(|e| panic!("bad address in {l:?}: {e}"))
    }

    /// Sends a signal to the child.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGINT.
    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    /// The exit status if the child has exited (does not block).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// True while the child runs.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for the child to exit; then (bounded by the same
    /// deadline) for its stdout and stderr to be fully read.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                let left = deadline.saturating_duration_since(Instant::now());
                self.out.wait_eof(left.max(Duration::from_millis(500)));
                self.err.wait_eof(left.max(Duration::from_millis(500)));
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the child to exit; returns its exit code. Panics (with the
    /// captured output) on a timeout or a death by signal.
    pub fn expect_exit(&mut self, timeout: Duration) -> i32 {
        match self.wait_exit(timeout) {
            Some(s) => s
                .code()
                .unwrap_or_else(|| panic!("child died by a signal: {s:?}\n{}", self.context())),
            None => panic!("child still running after {timeout:?}\n{}", self.context()),
        }
    }

    /// Kills the child (SIGKILL) if it still runs and reaps it.
    pub fn kill(&mut self) {
        self.stdin = None;
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // The pipes close with the child, so the readers end promptly.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// Starts `sockmod serve --bind 127.0.0.1:0 --json EXTRA...` and returns it with
/// the bound address (read from the `listening` JSON event on stdout).
pub fn serve(extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--json"];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    let v = p.expect_json("listening", |v| v["event"] == "listening");
    let addr = v["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("listening event without addr: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad addr in {v}: {e}"));
    // The same notice goes to stderr; take it so stderr waits start after it.
    let _ = p.err.wait(|l| l.text.starts_with("listening on "), TIMEOUT);
    (p, addr)
}

/// Starts `sockmod ARGS...` for any listening mode and returns it with the bound
/// address (from the `listening on` notice on stderr).
pub fn spawn_listening(args: &[&str]) -> (Proc, SocketAddr) {
    let p = Proc::spawn(args);
    let a = p.listening_addr();
    (p, a)
}

// ---------------------------------------------------------------------------
// Raw protocol clients
// ---------------------------------------------------------------------------

/// A raw TCP client speaking the protocol through sockmod's own codec.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    dec: Decoder,
    queue: VecDeque<Message>,
    closed: bool,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (panics on failure).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Client::from_stream(stream)
    }

    /// This end's address (the `addr` the server reports for it).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local_addr")
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
        self.stream.flush().expect("flush");
    }

    /// Encodes and sends one frame.
    pub fn send(&mut self, header: &Header, body: &[u8]) {
        let frame = encode(header, body).expect("encode");
        self.send_raw(&frame);
    }

    /// Sends `info:TEXT` with no body.
    pub fn send_info(&mut self, text: &str) {
        self.send(&Header::new().with("info", text), b"");
    }

    /// One read with a deadline; decodes what arrives. False once nothing more can
    /// come (peer closed) or the deadline passed.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let wait = (deadline - now).clamp(Duration::from_millis(1), Duration::from_millis(100));
        self.stream
            .set_read_timeout(Some(wait))
            .expect("read timeout");
        match self.stream.read(&mut self.buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                let mut msgs = Vec::new();
                self.dec
                    .feed(&self.buf[..n], &mut msgs)
                    .unwrap_or_else(|e| panic!("client received an invalid frame: {e}"));
                self.queue.extend(msgs);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                self.closed = true;
                false
            }
            Err(e) => panic!("client read failed: {e}"),
        }
    }

    /// Reads until `n` frames are in hand or `timeout` passes; returns up to `n`.
    pub fn read_frames(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        while self.queue.len() < n && self.fill(deadline) {}
        let k = n.min(self.queue.len());
        self.queue.drain(..k).collect()
    }

    /// Reads exactly `n` frames within `timeout`, or panics.
    pub fn expect_frames(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        let got = self.read_frames(n, timeout);
        assert_eq!(
            got.len(),
            n,
            "client {} expected {n} frames within {timeout:?}, got {} (peer closed: {}): {:?}",
            self.local_addr(),
            got.len(),
            self.closed,
            got.iter().map(|m| &m.header).collect::<Vec<_>>()
        );
        got
    }

    /// Reads one frame within [`TIMEOUT`], or panics.
    pub fn expect_frame(&mut self) -> Message {
        self.expect_frames(1, TIMEOUT).remove(0)
    }

    /// Asserts that no frame arrives during `window`.
    pub fn expect_silence(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while self.queue.is_empty() && self.fill(deadline) {}
        assert!(
            self.queue.is_empty(),
            "client {} expected no frame, got {:?}",
            self.local_addr(),
            self.queue.iter().map(|m| &m.header).collect::<Vec<_>>()
        );
    }

    /// Reads (keeping any frames) until the server closes the connection; false if
    /// it is still open after `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.fill(deadline) {}
        self.closed
    }

    /// True once the server was seen closing the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Frames decoded but not yet returned.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// An address nothing listens on: a port bound and released again.
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("local_addr");
    drop(l);
    a
}

/// A fresh path under Cargo's per-target temporary directory.
pub fn tmp_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{n}-{name}", std::process::id()))
}

/// `n` deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns it.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `info` header value of a frame (empty if none).
pub fn info(m: &Message) -> &str {
    m.header.get("info").unwrap_or("")
}

// ---------------------------------------------------------------------------
// Added for the filer discovery tests: the server side of a raw connection
// ---------------------------------------------------------------------------

impl Client {
    /// Wraps an accepted stream, so a test can play a server (a fake ipserver, or a
    /// peer that speaks only the original protocol) with the same reads and waits.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Client {
            stream,
            // Large enough for any body a test sends.
            dec: Decoder::new(1 << 30),
            queue: VecDeque::new(),
            closed: false,
            buf: vec![0; 256 << 10],
        }
    }
}

/// Accepts the first plaintext connection on `l` within `timeout`, passing over
/// TLS attempts (a filer dialling a listener that plays an original ipserver).
pub fn accept_plaintext_within(l: &TcpListener, timeout: Duration) -> Client {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let c = accept_within(l, left.max(Duration::from_millis(1)));
        let mut first = [0u8; 2];
        c.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        let n = c.stream.peek(&mut first).unwrap_or(0);
        c.stream.set_read_timeout(None).expect("read timeout");
        if n == 2 && first == [0x16, 0x03] {
            // A sockmod filer tries TLS first; an original ipserver (which this
            // listener plays) never answers it, and the filer comes back in
            // plaintext.
            continue;
        }
        return c;
    }
}

/// Accepts one connection on `l` within `timeout`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> Client {
    l.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                return Client::from_stream(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Shared by the filer, discovery and filer_safety tests: filers and ipservers,
// counting events, and what /proc and the inbox hold
// ---------------------------------------------------------------------------

/// `sockmod filer --id ID --bind 127.0.0.1:0 --ipserver IPSERVER
/// --report-interval EVERY --inbox INBOX EXTRA...`, ready to spawn (or to adjust
/// first, e.g. with `pre_exec`).
pub fn filer_command(
    id: &str,
    ipserver: &str,
    every: &str,
    inbox: &std::path::Path,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["filer", "--id", id, "--bind", "127.0.0.1:0", "--ipserver"])
        .arg(ipserver)
        .args(["--report-interval", every, "--inbox"])
        .arg(inbox)
        .args(extra);
    cmd
}

/// [`filer_command`] for a filer on its own: its ipserver is unreachable (it
/// retries quietly) and it reports every 5s.
pub fn lone_filer_command(id: &str, inbox: &std::path::Path, extra: &[&str]) -> Command {
    filer_command(id, &refused_addr().to_string(), "5s", inbox, extra)
}

/// A `--json` filer named `id` reporting to `ipserver` every `every`, with its
/// inbox in a fresh temporary path; returns it with its listening address.
pub fn spawn_filer(
    id: &str,
    ipserver: SocketAddr,
    every: &str,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let inbox = tmp_path(&format!("inbox-{id}"));
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let p = Proc::spawn_cmd(filer_command(
        id,
        &ipserver.to_string(),
        every,
        &inbox,
        &args,
    ));
    let a = p.listening_addr();
    (p, a)
}

/// `sockmod ipserver --bind BIND --json --interval EVERY EXTRA...`, with its
/// listening address.
pub fn spawn_ipserver(bind: &str, every: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["ipserver", "--bind", bind, "--json", "--interval", every];
    args.extend_from_slice(extra);
    spawn_listening(&args)
}

/// True when `l` is a JSON event named `event` whose fields include every pair
/// of `fields` (the test of [`Proc::expect_event`]).
pub fn is_event_line(l: &Line, event: &str, fields: &[(&str, Value)]) -> bool {
    l.json
        .as_ref()
        .is_some_and(|v| v["event"] == event && fields.iter().all(|(k, want)| &v[*k] == want))
}

impl Proc {
    /// How many stdout events so far match `event` and `fields` (see
    /// [`Proc::expect_event`]), returned by a wait or not.
    pub fn count_events(&self, event: &str, fields: &[(&str, Value)]) -> usize {
        self.out.count(|l| is_event_line(l, event, fields))
    }
}

/// A frame built by hand from header text (any `CL` as written), like the Qt
/// peer writes it.
pub fn raw_frame(header: &str, body: &[u8]) -> Vec<u8> {
    let mut f = (header.len() as u16).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.extend_from_slice(body);
    f
}

/// Every entry of `dir` (hidden ones too), sorted; empty if it does not exist.
pub fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read fd dir")
        .count()
}

// ---------------------------------------------------------------------------
// Measuring processes (from /proc) and raw sockets
// ---------------------------------------------------------------------------

/// Prints a figure as a `figure: NAME = VALUE` line on stderr (see them with
/// `cargo test --test NAME -- --nocapture --test-threads=1`).
pub fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("figure: {name} = {value}");
}

/// CPU time (user + system) of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// The test process itself opens hundreds of sockets.
pub fn raise_own_limit() {
    sockmod::net::raise_nofile_limit();
}

/// Waits until `f()` has not changed for `quiet`; returns the settled value.
pub fn settle(timeout: Duration, quiet: Duration, mut f: impl FnMut() -> usize) -> usize {
    let deadline = Instant::now() + timeout;
    let mut last = f();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = f();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet || Instant::now() >= deadline {
            return last;
        }
    }
}

// ---------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------

/// Connects to `dst` from source address `src` (e.g. 127.0.0.2).
pub fn connect_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    s.connect_timeout(&SockAddr::from(dst), TIMEOUT)?;
    Ok(s.into())
}

/// Waits for the server to end a raw connection; returns how long it took, or
/// `None` if it is still open after `timeout` (data that arrives is discarded).
pub fn time_to_close(s: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < timeout {
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// True when nothing ended the connection within `window`.
pub fn stays_open(s: &mut TcpStream, window: Duration) -> bool {
    time_to_close(s, window).is_none()
}

pub fn frame(h: &Header, body: &[u8]) -> Vec<u8> {
    encode(h, body).expect("encode")
}

/// A frame's length prefix and header text, with any `CL` (no body).
pub fn raw_header(text: &str) -> Vec<u8> {
    raw_frame(text, b"")
}

/// A good client checks in: returns (time until the server showed its message,
/// time until it got the server's reply).
pub fn good_client_round_trip(srv: &mut Proc, addr: SocketAddr) -> (Duration, Duration) {
    let t0 = Instant::now();
    let mut c = Client::connect(addr);
    c.send_info("good client");
    let me = c.local_addr().to_string();
    let v = srv.expect_json("the good client's message", |v| {
        v["event"] == "message" && v["addr"] == me.as_str()
    });
    let served = t0.elapsed();
    let id = v["peer"].as_u64().expect("peer id");
    srv.send_line(&format!("send {id} reply"));
    assert_eq!(info(&c.expect_frame()), "reply");
    (served, t0.elapsed())
}

/// Whether speed bounds (deadlines, minimum rates) are checked. They hold on a
/// quiet machine but not always on a loaded 2-core CI, so the default
/// `cargo test` only prints the figures; check them with
/// `SOCKMOD_TIMING=1 cargo test --test NAME -- --test-threads=1`. Lower
/// bounds ("not before") and the timeouts that only stop a hang are always
/// checked.
pub fn timing_checked() -> bool {
    std::env::var_os("SOCKMOD_TIMING").is_some_and(|v| v != "0")
}

// ---------------------------------------------------------------------------
// Also used by the benchmark (benches/compare/main.rs includes this module)
// ---------------------------------------------------------------------------

/// A child process killed (and reaped) on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address of a JSON `listening` event line (`"addr":"IP:PORT"`), found
/// without parsing the JSON.
pub fn listening_addr_in(line: &str) -> Option<SocketAddr> {
    line.split("\"addr\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|a| a.parse().ok())
}

/// Reads a child's stdout in large chunks on the caller's thread; counts lines
/// cheaply or returns them (the benchmark's reader: no thread, no copies kept,
/// so a fast stream of events is measured, not the reading of it).
pub struct LineReader<R> {
    r: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<R: Read> LineReader<R> {
    pub fn new(r: R) -> Self {
        LineReader {
            r,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
        }
    }

    fn fill(&mut self) -> Result<(), String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        match self.r.read(&mut self.buf[self.end..]) {
            Ok(0) => Err("serve's stdout closed".into()),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(format!("reading serve's stdout: {e}")),
        }
    }

    /// The next whole line (without the newline).
    pub fn next_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(p) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + p]);
                let line = line.into_owned();
                self.start += p + 1;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    /// Skips `n` lines without looking at them.
    pub fn skip_lines(&mut self, mut n: usize) -> Result<(), String> {
        while n > 0 {
            let chunk = &self.buf[self.start..self.end];
            let mut consumed = chunk.len();
            for (i, &b) in chunk.iter().enumerate() {
                if b == b'\n' {
                    n -= 1;
                    if n == 0 {
                        consumed = i + 1;
                        break;
                    }
                }
            }
            self.start += consumed;
            if n > 0 {
                self.fill()?;
            }
        }
        Ok(())
    }

    /// Reads lines until one contains `needle`; returns it.
    pub fn until(&mut self, needle: &str) -> Result<String, String> {
        loop {
            let l = self.next_line()?;
            if l.contains(needle) {
                return Ok(l);
            }
        }
    }
}

// --- pseudo-terminals -----------------------------------------------------------

// The binary on a pty with its screen emulated (`use common::pty::{Pty, Term};`),
// under this file's `#![allow(dead_code)]` like the rest.
pub mod pty;
// A counting relay that cuts or stalls a link (`use common::relay::{Then, relay};`).
pub mod relay;

/// A new pseudo-terminal of `rows` × `cols`, as (master, slave). The master is
/// close-on-exec, so a child given the slave does not also hold the master.
pub fn open_pty(rows: u16, cols: u16) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are open descriptors nobody else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
    (master, slave)
}
