//! Standard output written by a thread of its own, so the loop never blocks on it.
//!
//! [`StdioSink`](super::StdioSink) hands rendered bytes over in chunks; the writer
//! thread writes them to fd 1 in order. Two things flow back to the loop:
//!
//! - Backpressure: once more than [`HIGH_MARK`] bytes wait, [`Stdout::backed_up`]
//!   turns true and [`Paced`] (the handler wrapper) pauses reading from peers
//!   ([`Context::pause_reads`]); timers, heartbeats, writes and accepts go on.
//!   When the writer has brought the queue down to [`LOW_MARK`] it wakes the loop
//!   and reading resumes. Nothing is dropped and memory stays bounded.
//! - The reader going away: a write failing with `EPIPE` (Rust ignores SIGPIPE),
//!   or, while there is nothing to write, fd 1 polled every [`HANGUP_POLL`]
//!   reporting `POLLERR`/`POLLHUP` (a pipe's write end reports `POLLERR` once its
//!   read end is closed). Then further output is thrown away and the loop is
//!   interrupted, which stops it cleanly (exit status 0), without waiting for
//!   something to print.
//!
//! Stdout is one per process, and so is the writer: [`stdout`] starts it on first
//! use. Without a [`StdioSink`](super::StdioSink) (the REPL prints through its
//! own sink) there is no writer and nothing is ever paused.

use crate::net::{ConnId, ConnInfo, Context, Handler, Remote, TimerId};
use crate::protocol::Message;
use std::collections::VecDeque;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Queued bytes over which reading from peers pauses.
pub const HIGH_MARK: usize = 4 << 20;
/// Queued bytes at or under which reading resumes.
pub const LOW_MARK: usize = 1 << 20;
/// How many bytes the sink gathers before handing a chunk over.
pub const CHUNK: usize = 64 << 10;
/// How often an idle writer looks whether stdout's reader went away.
pub const HANGUP_POLL: Duration = Duration::from_millis(100);

/// Which descriptor a chunk goes to: stdout, or (for notices on a terminal,
/// kept in order with the events around them) stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    /// fd 1.
    Out,
    /// fd 2.
    Err,
}

type Callback = Box<dyn Fn() + Send>;

#[derive(Default)]
struct Queue {
    chunks: VecDeque<(Fd, Vec<u8>)>,
    /// Bytes in `chunks` plus the chunk being written.
    bytes: usize,
    /// Written chunks kept for reuse.
    spare: Vec<Vec<u8>>,
    /// No more chunks will come: write what is queued and end.
    closing: bool,
}

/// The process's stdout writer; see the module documentation.
pub struct Stdout {
    q: Mutex<Queue>,
    cond: Condvar,
    backed_up: AtomicBool,
    /// Output is thrown away: the reader went away, or stdout failed.
    discard: AtomicBool,
    /// The reader went away.
    gone: AtomicBool,
    on_drained: Mutex<Option<Callback>>,
    on_gone: Mutex<Option<Callback>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static STDOUT: OnceLock<Stdout> = OnceLock::new();

/// The stdout writer, started on first use.
pub fn stdout() -> &'static Stdout {
    let s = STDOUT.get_or_init(|| Stdout {
        q: Mutex::new(Queue::default()),
        cond: Condvar::new(),
        backed_up: AtomicBool::new(false),
        discard: AtomicBool::new(false),
        gone: AtomicBool::new(false),
        on_drained: Mutex::new(None),
        on_gone: Mutex::new(None),
        thread: Mutex::new(None),
    });
    let mut t = lock(&s.thread);
    if t.is_none() && !lock(&s.q).closing {
        match std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || s.run())
        {
            Ok(h) => *t = Some(h),
            // No thread: the chunks could never be written; drop them rather
            // than hold the loop back.
            Err(e) => {
                eprintln!("warning: cannot start the stdout writer: {e}");
                s.discard.store(true, Ordering::Release);
            }
        }
    }
    s
}

/// The stdout writer if one was started.
pub fn started() -> Option<&'static Stdout> {
    STDOUT.get()
}

/// Connects the stdout writer, if there is one, to the loop behind `remote`: a
/// drained queue wakes the loop (so [`Paced`] resumes reading), a reader gone
/// interrupts it (a clean stop, as on SIGINT).
pub fn attach<C: Send + 'static>(remote: &Remote<C>) {
    if let Some(s) = started() {
        let r = remote.clone();
        s.set_callbacks(Box::new(move || r.wake()), {
            let r = remote.clone();
            Box::new(move || r.interrupt())
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when `fd` reports an error or hang-up: for a pipe, its reader is gone.
fn hung_up(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd we own, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

fn write_fd(fd: Fd, bytes: &[u8]) -> std::io::Result<()> {
    let raw = match fd {
        Fd::Out => 1,
        Fd::Err => 2,
    };
    // SAFETY: fd 1 and 2 stay open for the process's life; ManuallyDrop never
    // closes them.
    let mut f = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(raw) });
    f.write_all(bytes)
}

impl Stdout {
    /// Hands `buf`'s bytes to the writer, leaving `buf` empty (a reused chunk).
    pub fn push(&self, fd: Fd, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        if self.is_discarding() {
            buf.clear();
            return;
        }
        let mut q = lock(&self.q);
        let fresh = q.spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(buf, fresh);
        q.bytes += chunk.len();
        q.chunks.push_back((fd, chunk));
        if q.bytes > HIGH_MARK {
            self.backed_up.store(true, Ordering::Release);
        }
        drop(q);
        self.cond.notify_one();
    }

    /// True while more than [`HIGH_MARK`] bytes wait (until [`LOW_MARK`]).
    pub fn backed_up(&self) -> bool {
        self.backed_up.load(Ordering::Acquire)
    }

    /// True once output is thrown away (reader gone or stdout failed).
    pub fn is_discarding(&self) -> bool {
        self.discard.load(Ordering::Acquire)
    }

    /// True once stdout's reader went away.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        lock(&self.q).bytes
    }

    /// Sets what to call when the queue drained to [`LOW_MARK`] after being
    /// backed up, and when the reader went away (at once if it already has).
    pub fn set_callbacks(&self, drained: Callback, gone: Callback) {
        *lock(&self.on_drained) = Some(drained);
        let mut g = lock(&self.on_gone);
        *g = Some(gone);
        if self.is_gone()
            && let Some(f) = g.as_ref()
        {
            f();
        }
    }

    /// Writes what is queued (unless the reader is gone) and ends the writer.
    pub fn finish(&self) {
        lock(&self.q).closing = true;
        self.cond.notify_all();
        let t = lock(&self.thread).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    fn reader_gone(&self) {
        self.discard.store(true, Ordering::Release);
        self.gone.store(true, Ordering::Release);
        if let Some(f) = lock(&self.on_gone).as_ref() {
            f();
        }
    }

    fn run(&self) {
        let mut q = lock(&self.q);
        loop {
            if let Some((fd, mut chunk)) = q.chunks.pop_front() {
                drop(q);
                let mut gone = false;
                if !self.is_discarding()
                    && let Err(e) = write_fd(fd, &chunk)
                    && fd == Fd::Out
                {
                    // The reader closed the pipe (or socket): stop. Other
                    // failures (a full disk, a closed fd 1) lose the output
                    // but the node keeps serving, as it always did.
                    gone = matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET));
                    self.discard.store(true, Ordering::Release);
                }
                q = lock(&self.q);
                q.bytes -= chunk.len();
                if q.spare.len() < 4 && chunk.capacity() <= 2 * CHUNK {
                    chunk.clear();
                    q.spare.push(chunk);
                }
                let drained = self.backed_up()
                    && (q.bytes <= LOW_MARK || self.is_discarding())
                    && self.backed_up.swap(false, Ordering::AcqRel);
                if drained || gone {
                    drop(q);
                    if gone {
                        self.reader_gone();
                    }
                    if drained && let Some(f) = lock(&self.on_drained).as_ref() {
                        f();
                    }
                    q = lock(&self.q);
                }
                continue;
            }
            if q.closing {
                return;
            }
            if self.is_discarding() {
                q = self.cond.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let (g, t) = self
                .cond
                .wait_timeout(q, HANGUP_POLL)
                .unwrap_or_else(|e| e.into_inner());
            q = g;
            if t.timed_out() && q.chunks.is_empty() && !q.closing {
                drop(q);
                if hung_up(1) {
                    self.reader_gone();
                }
                q = lock(&self.q);
            }
        }
    }
}

/// A handler whose reading from peers pauses while stdout is backed up
/// ([`Stdout::backed_up`]); everything else is the wrapped handler's.
pub struct Paced<H> {
    /// The wrapped handler.
    pub inner: H,
    paused: bool,
}

impl<H> Paced<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Paced {
            inner,
            paused: false,
        }
    }

    fn check(&mut self, ctx: &mut Context<'_>) {
        let backed_up = started().is_some_and(Stdout::backed_up);
        if backed_up != self.paused {
            self.paused = backed_up;
            ctx.pause_reads(backed_up);
        }
    }
}

impl<H> std::ops::Deref for Paced<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.inner
    }
}

impl<H> std::ops::DerefMut for Paced<H> {
    fn deref_mut(&mut self) -> &mut H {
        &mut self.inner
    }
}

impl<H: Handler> Handler for Paced<H> {
    type Command = H::Command;

    fn on_start(&mut self, ctx: &mut Context<'_>) {
        self.inner.on_start(ctx);
        self.check(ctx);
    }

    fn on_connected(&mut self, ctx: &mut Context<'_>, conn: &ConnInfo, alive: usize) {
        self.inner.on_connected(ctx, conn, alive);
        self.check(ctx);
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, conn: &ConnInfo, reason: &str) {
        self.inner.on_connect_failed(ctx, conn, reason);
        self.check(ctx);
    }

    fn on_closed(&mut self, ctx: &mut Context<'_>, conn: &ConnInfo, reason: &str, alive: usize) {
        self.inner.on_closed(ctx, conn, reason, alive);
        self.check(ctx);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        self.inner.on_message(ctx, conn, msg);
        self.check(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, token: TimerId) {
        self.inner.on_timer(ctx, token);
        self.check(ctx);
    }

    fn on_command(&mut self, ctx: &mut Context<'_>, cmd: Self::Command) {
        self.inner.on_command(ctx, cmd);
        self.check(ctx);
    }

    fn on_interrupt(&mut self, ctx: &mut Context<'_>) {
        self.inner.on_interrupt(ctx);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        self.inner.on_drained(ctx, conn);
        self.check(ctx);
    }

    fn on_notice(&mut self, ctx: &mut Context<'_>, notice: &str) {
        self.inner.on_notice(ctx, notice);
    }

    fn on_idle(&mut self, ctx: &mut Context<'_>) {
        self.inner.on_idle(ctx);
        self.check(ctx);
    }
}
