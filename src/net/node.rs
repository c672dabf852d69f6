//! The event loop: one thread, one blocking `mio::Poll`, every socket.

use super::access::{Access, canonical_addr};
use super::conn::{Conn, ConnId, ConnInfo, Dir, Flush, IdMap, OutQueue, State};
use super::error::describe;
use super::handler::Handler;
use super::remote::Remote;
use super::resolver::{Resolver, has_port, lookup};
use crate::protocol::{
    DEFAULT_MAX_BODY, Decoder, EncodeError, Header, Message, encode_header_into, encode_into,
};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// Bytes read from one connection per turn before others get theirs.
const READ_BUDGET: usize = 1 << 20;
/// Bytes written to one connection per turn.
const WRITE_BUDGET: usize = 4 << 20;
/// Connections accepted per turn.
const ACCEPT_BUDGET: usize = 256;
/// Commands taken from the channel per turn.
const COMMAND_BUDGET: usize = 4096;
/// A broadcast frame up to this size is copied into each queue (cheaper than a
/// shared chunk for tiny frames); a larger one is shared, so a broadcast to many
/// connections costs one copy of the frame, not one per connection.
const SHARE_ABOVE: usize = 256;
/// Frames decoded before they are handed to the handler.
const DELIVER_BATCH: usize = 64;
/// Size of the shared read buffer.
const READ_BUF: usize = 256 << 10;
/// How long `stop` waits for queues to drain.
const STOP_FLUSH: Duration = Duration::from_secs(2);
/// How long a graceful close waits for its queue to drain.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// Pending connections the kernel queues for the listener.
const LISTEN_BACKLOG: libc::c_int = 4096;
/// While accepting is impossible (no descriptors), retry this often.
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// Limits and timers of a node (SPEC §2 shared options).
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest body accepted from a peer.
    pub max_body: usize,
    /// Largest outbound queue before a peer is dropped as a slow consumer.
    pub max_queue: usize,
    /// Most connections at once; more are accepted and closed at once.
    pub max_conns: usize,
    /// Send `TP:Check` on connections that sent nothing for this long.
    pub heartbeat: Option<Duration>,
    /// Close connections silent for this long.
    pub idle_timeout: Option<Duration>,
    /// Give up on a dial after this long.
    pub connect_timeout: Duration,
    /// Who may connect (`--allow`, `--deny`), checked at accept.
    pub access: Access,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body: DEFAULT_MAX_BODY,
            max_queue: 64 << 20,
            max_conns: 10_000,
            heartbeat: None,
            idle_timeout: None,
            connect_timeout: Duration::from_secs(10),
            access: Access::default(),
        }
    }
}

/// Why a send did not queue anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No such connection (never existed, or closed).
    NoSuchConn(ConnId),
    /// The connection is closing.
    Closing(ConnId),
    /// The frame cannot be encoded.
    Encode(EncodeError),
    /// The queue passed `--max-queue`: the connection was dropped.
    SlowConsumer(ConnId),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoSuchConn(id) => write!(f, "no connection {id}"),
            SendError::Closing(id) => write!(f, "connection {id} is closing"),
            SendError::Encode(e) => write!(f, "cannot encode frame: {e}"),
            SendError::SlowConsumer(id) => write!(f, "{id} dropped as a slow consumer"),
        }
    }
}

impl std::error::Error for SendError {}

/// One connection's outcome of a multicast.
pub type SendResult = (ConnId, Result<(), SendError>);

/// Events waiting to reach the handler. Counts of open connections are taken when
/// the event happens, so a burst of accepts reads `1, 2, 3 alive`, not `3, 3, 3`.
enum Pending {
    Connected(ConnInfo, usize),
    ConnectFailed(ConnInfo, String),
    Closed(ConnInfo, String, usize),
    Drained(ConnId),
    Notice(String),
}

/// Everything the loop owns except the handler.
struct Core {
    poll: Poll,
    config: Config,
    listener: Option<TcpListener>,
    local_addr: Option<SocketAddr>,
    conns: IdMap<Conn>,
    next_id: u64,
    open: usize,
    timers: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    timer_seq: u64,
    pending: VecDeque<Pending>,
    /// Connections that may have more to read (read budget ran out).
    more_read: VecDeque<u64>,
    /// Connections with queued output to write this turn (each at most once: a
    /// connection in it has its `dirty` flag set).
    dirty: Vec<u64>,
    listener_ready: bool,
    accept_paused_until: Option<Instant>,
    /// Accepting failed (no descriptors) and the backlog has not drained since:
    /// the notice is shown once per stall, not at every retry.
    accept_failing: bool,
    next_housekeeping: Option<Instant>,
    /// `next_housekeeping` must be recomputed (a deadline or a limit changed);
    /// otherwise the idle loop would scan every connection on every turn.
    housekeeping_stale: bool,
    stopping: Option<Instant>,
    /// Commands wait in the channel ([`Context::pause_commands`]).
    commands_paused: bool,
    /// Wakes the loop from its own callbacks (see [`Context::pause_commands`]).
    waker: Arc<Waker>,
    read_buf: Vec<u8>,
    /// Host-name lookups of dials in progress.
    resolver: Resolver,
}

/// What handler callbacks use to act on the node.
pub struct Context<'a> {
    core: &'a mut Core,
}

/// A node: the event loop plus the handler that gives it behaviour.
///
/// ```no_run
/// use sockmod::net::{Context, Handler, Node, Config, ConnId};
/// use sockmod::protocol::Message;
/// struct Echo;
/// impl Handler for Echo {
///     type Command = ();
///     fn on_message(&mut self, ctx: &mut Context<'_>, from: ConnId, msg: Message) {
///         let _ = ctx.send(from, &msg.header, &msg.body);
///     }
/// }
/// let mut node = Node::new(Config::default(), Echo).unwrap();
/// node.listen("127.0.0.1:0").unwrap();
/// node.run().unwrap();
/// ```
pub struct Node<H: Handler> {
    core: Core,
    handler: H,
    rx: Receiver<H::Command>,
    remote: Remote<H::Command>,
    scratch: Vec<Message>,
}

/// Errors `accept` reports for one pending connection (reset or unreachable
/// before it was taken, see accept(2)); anything else (no descriptors, no
/// memory) pauses accepting instead.
fn accept_error_is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENONET
                | libc::EOPNOTSUPP
                | libc::EPERM
        )
    )
}

/// Parses `HOST:PORT` or a bare `PORT` (meaning `0.0.0.0:PORT`).
pub fn parse_bind(addr: &str) -> io::Result<SocketAddr> {
    if let Ok(port) = addr.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    lookup(addr)
}

impl<H: Handler> Node<H> {
    /// A node with no listener and no connections yet.
    pub fn new(config: Config, handler: H) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = sync_channel(1024);
        let interrupted = Arc::new(AtomicBool::new(false));
        Ok(Node {
            core: Core {
                poll,
                config,
                listener: None,
                local_addr: None,
                conns: IdMap::default(),
                next_id: 1,
                open: 0,
                timers: BinaryHeap::new(),
                timer_seq: 0,
                pending: VecDeque::new(),
                more_read: VecDeque::new(),
                dirty: Vec::new(),
                listener_ready: false,
                accept_paused_until: None,
                accept_failing: false,
                next_housekeeping: None,
                housekeeping_stale: true,
                stopping: None,
                commands_paused: false,
                waker: waker.clone(),
                read_buf: vec![0; READ_BUF],
                resolver: Resolver::new(waker.clone()),
            },
            handler,
            rx,
            remote: Remote {
                tx,
                waker,
                interrupted,
            },
            scratch: Vec::new(),
        })
    }

    /// Binds the listener (`HOST:PORT` or `PORT`; port 0 picks a free one) and
    /// returns the real address.
    pub fn listen(&mut self, addr: &str) -> io::Result<SocketAddr> {
        let sa = parse_bind(addr)?;
        self.listen_on(sa)
    }

    /// Binds the listener on a resolved address.
    pub fn listen_on(&mut self, sa: SocketAddr) -> io::Result<SocketAddr> {
        let mut l = TcpListener::bind(sa)?;
        // mio listens with a backlog of 128: a burst of clients (a few hundred
        // reconnecting at once) overflows it and waits out SYN retransmits (1 s,
        // then 3 s). Listening again raises it (capped by the kernel's somaxconn).
        // Best effort: on failure the backlog stays at 128.
        // SAFETY: listen(2) on a socket we own; no memory is passed.
        unsafe {
            libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), LISTEN_BACKLOG);
        }
        self.core
            .poll
            .registry()
            .register(&mut l, LISTENER, Interest::READABLE)?;
        let local = l.local_addr()?;
        self.core.listener = Some(l);
        self.core.local_addr = Some(local);
        Ok(local)
    }

    /// A handle to send commands from other threads.
    pub fn remote(&self) -> Remote<H::Command> {
        self.remote.clone()
    }

    /// The handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    /// A context outside callbacks, e.g. to dial before `run`.
    pub fn context(&mut self) -> Context<'_> {
        Context {
            core: &mut self.core,
        }
    }

    /// Runs until a callback calls [`Context::stop`], then flushes (bounded by a
    /// short timeout), closes everything and returns the handler.
    pub fn run(mut self) -> io::Result<H> {
        let mut events = Events::with_capacity(1024);
        {
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_start(&mut ctx);
        }
        self.dispatch_pending();
        loop {
            self.flush_dirty();
            self.dispatch_pending();
            if let Some(deadline) = self.core.stopping {
                let drained = self.core.conns.values().all(|c| c.out.is_empty());
                if drained || Instant::now() >= deadline {
                    break;
                }
            }
            let timeout = self.poll_timeout();
            if timeout != Some(Duration::ZERO) {
                let mut ctx = Context {
                    core: &mut self.core,
                };
                self.handler.on_idle(&mut ctx);
                self.flush_dirty();
            }
            match self.core.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.core.listener_ready = true,
                    WAKER => {}
                    Token(t) => {
                        let id = t as u64;
                        let state = match self.core.conns.get(&id) {
                            Some(c) => c.info.state,
                            None => continue,
                        };
                        if state == State::Connecting {
                            self.finish_connect(id);
                            continue;
                        }
                        if ev.is_writable() {
                            self.core.mark_dirty(id);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read_conn(id);
                        }
                    }
                }
                self.dispatch_pending();
            }
            self.accept_all();
            self.finish_lookups();
            if self.remote.interrupted.swap(false, Ordering::Acquire) {
                let mut ctx = Context {
                    core: &mut self.core,
                };
                self.handler.on_interrupt(&mut ctx);
                self.dispatch_pending();
            }
            self.drain_commands();
            self.continue_reads();
            self.fire_timers();
            self.dispatch_pending();
        }
        // In id order, so the closed events read like the connected ones.
        let mut ids: Vec<u64> = self.core.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.core.drop_conn(id, "shutting down".to_string());
        }
        self.dispatch_pending();
        let mut ctx = Context {
            core: &mut self.core,
        };
        self.handler.on_idle(&mut ctx);
        Ok(self.handler)
    }

    fn poll_timeout(&mut self) -> Option<Duration> {
        let c = &mut self.core;
        if !c.more_read.is_empty() || !c.dirty.is_empty() || !c.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        if c.listener_ready && c.accept_paused_until.is_none() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next: Option<Instant> = c.timers.peek().map(|Reverse((t, _, _))| *t);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(c.accept_paused_until);
        consider(c.stopping.map(|s| s.min(now + Duration::from_millis(50))));
        if c.housekeeping_stale {
            c.housekeeping_stale = false;
            c.next_housekeeping = c.housekeeping_interval().and_then(|d| now.checked_add(d));
        }
        consider(c.next_housekeeping);
        next.map(|t| t.saturating_duration_since(now))
    }

    fn dispatch_pending(&mut self) {
        while let Some(p) = self.core.pending.pop_front() {
            let mut ctx = Context {
                core: &mut self.core,
            };
            match p {
                Pending::Connected(info, alive) => {
                    self.handler.on_connected(&mut ctx, &info, alive)
                }
                Pending::ConnectFailed(info, reason) => {
                    self.handler.on_connect_failed(&mut ctx, &info, &reason)
                }
                Pending::Closed(info, reason, alive) => {
                    self.handler.on_closed(&mut ctx, &info, &reason, alive)
                }
                Pending::Drained(id) => self.handler.on_drained(&mut ctx, id),
                Pending::Notice(n) => self.handler.on_notice(&mut ctx, &n),
            }
        }
    }

    fn finish_connect(&mut self, id: u64) {
        let Some(conn) = self.core.conns.get_mut(&id) else {
            return;
        };
        let Some(stream) = conn.stream.as_ref() else {
            return;
        };
        let err = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => None,
        };
        let result = match err {
            Some(e) => Err(e),
            None => match stream.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                let _ = stream.set_nodelay(true);
                conn.info.state = State::Open;
                let now = Instant::now();
                conn.info.since = now;
                conn.info.last_seen = now;
                conn.info.last_sent = now;
                conn.deadline = None;
                self.core.open += 1;
                self.core
                    .pending
                    .push_back(Pending::Connected(conn.info.clone(), self.core.open));
                if !conn.out.is_empty() {
                    self.core.mark_dirty(id);
                }
                // Data may already be waiting.
                self.read_conn(id);
            }
            Err(e) => self.core.connect_failed(id, describe(&e)),
        }
    }

    /// Reads what `id` has (up to the per-turn budget) and hands each frame to the
    /// handler, a small batch at a time, so decoded frames are used while they are
    /// still in the cache and memory stays flat however much arrived at once.
    fn read_conn(&mut self, id: u64) {
        let mut buf = std::mem::take(&mut self.core.read_buf);
        let mut msgs = std::mem::take(&mut self.scratch);
        let mut total = 0usize;
        let mut outcome: Option<String> = None;
        'reads: while let Some(conn) = self.core.conns.get_mut(&id) {
            if total >= READ_BUDGET {
                self.core.more_read.push_back(id);
                break;
            }
            let Some(stream) = conn.stream.as_mut() else {
                break;
            };
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    // Bytes of an unfinished frame are worth a word: often the peer
                    // does not speak the protocol (plain text from netcat).
                    let d = &conn.decoder;
                    outcome = Some(match d.buffered() {
                        _ if d.is_idle() => "peer closed".to_string(),
                        0 => "peer closed mid-frame".to_string(),
                        n => format!(
                            "peer closed mid-frame ({n} bytes of an unfinished frame discarded)"
                        ),
                    });
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    outcome = Some(describe(&e));
                    break;
                }
            };
            total += n;
            conn.info.bytes_in += n as u64;
            let mut pos = 0;
            while pos < n {
                let Some(conn) = self.core.conns.get_mut(&id) else {
                    break 'reads;
                };
                let fed = conn
                    .decoder
                    .feed_some(&buf[pos..n], &mut msgs, DELIVER_BATCH);
                let alive = self.deliver(id, &mut msgs);
                match fed {
                    Ok(k) => pos += k,
                    Err(e) => {
                        outcome = Some(e.to_string());
                        break 'reads;
                    }
                }
                if !alive {
                    break 'reads;
                }
            }
        }
        if total > 0
            && let Some(conn) = self.core.conns.get_mut(&id)
        {
            conn.info.last_seen = Instant::now();
        }
        self.scratch = msgs;
        self.core.read_buf = buf;
        if let Some(reason) = outcome {
            self.core.drop_conn(id, reason);
        }
    }

    /// Hands decoded frames to the handler; false once the connection is gone.
    /// Frames that arrive after it stopped being open are not delivered.
    fn deliver(&mut self, id: u64, msgs: &mut Vec<Message>) -> bool {
        let conn_id = ConnId(id);
        let mut open = true;
        for msg in msgs.drain(..) {
            // A bare `TP:Check` is a liveness probe: activity, not a message.
            if !open || (msg.header.len() == 1 && msg.header.is_check()) {
                continue;
            }
            match self.core.conns.get_mut(&id) {
                Some(c) if c.info.state == State::Open => c.info.msgs_in += 1,
                _ => {
                    open = false;
                    continue;
                }
            }
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_message(&mut ctx, conn_id, msg);
        }
        self.core.conns.contains_key(&id)
    }

    fn continue_reads(&mut self) {
        let n = self.core.more_read.len();
        for _ in 0..n {
            if let Some(id) = self.core.more_read.pop_front() {
                self.read_conn(id);
            }
        }
    }

    fn accept_all(&mut self) {
        let now = Instant::now();
        if let Some(t) = self.core.accept_paused_until {
            if now < t {
                return;
            }
            self.core.accept_paused_until = None;
        }
        if !self.core.listener_ready {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.core.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => self.core.admit(stream, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.core.accept_recovered();
                    self.core.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // That one connection failed before we took it: take the next.
                Err(e) if accept_error_is_per_connection(&e) => {}
                Err(e) => {
                    self.core.accept_paused_until = Some(now + ACCEPT_RETRY);
                    self.core.housekeeping_stale = true;
                    if !std::mem::replace(&mut self.core.accept_failing, true) {
                        self.core.pending.push_back(Pending::Notice(format!(
                            "cannot accept on {}: {}; retrying",
                            self.core
                                .local_addr
                                .map_or_else(String::new, |a| a.to_string()),
                            describe(&e)
                        )));
                    }
                    return;
                }
            }
        }
    }

    fn drain_commands(&mut self) {
        for _ in 0..COMMAND_BUDGET {
            // Once stopping (`quit`, a signal), later commands are not run: a
            // piped `quit` ends the script there, as in a shell.
            if self.core.commands_paused || self.core.stopping.is_some() {
                return;
            }
            match self.rx.try_recv() {
                Ok(cmd) => {
                    let mut ctx = Context {
                        core: &mut self.core,
                    };
                    self.handler.on_command(&mut ctx, cmd);
                    self.dispatch_pending();
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
            }
        }
        // Budget used up: come back next turn without waiting.
        let _ = self.remote.waker.wake();
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.core.next_housekeeping.is_some_and(|t| t <= now) {
            self.core.next_housekeeping = None;
            self.core.housekeeping_stale = true;
            self.core.housekeeping(now);
        }
        while let Some(Reverse((t, _, token))) = self.core.timers.peek().copied() {
            if t > now {
                break;
            }
            self.core.timers.pop();
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_timer(&mut ctx, token);
            self.dispatch_pending();
        }
    }

    /// Dials whose host-name lookup finished: connect, or report the failure. A dial
    /// that timed out or was closed meanwhile is gone, and its answer is dropped.
    fn finish_lookups(&mut self) {
        for (id, answer) in self.core.resolver.take() {
            let waiting = self
                .core
                .conns
                .get(&id)
                .is_some_and(|c| c.stream.is_none() && c.info.state == State::Connecting);
            if !waiting {
                continue;
            }
            match answer {
                Ok(mut addrs) => {
                    // Tried from the end: the system's first choice goes first.
                    addrs.reverse();
                    let Some(first) = addrs.pop() else {
                        self.core
                            .fail_connect(id, "cannot resolve: no address found".into());
                        continue;
                    };
                    if let Some(c) = self.core.conns.get_mut(&id) {
                        c.fallbacks = addrs;
                    }
                    self.core.start_connect(id, first);
                }
                Err(e) => self
                    .core
                    .fail_connect(id, format!("cannot resolve: {}", describe(&e))),
            }
        }
        self.dispatch_pending();
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.core.dirty);
        for &id in &dirty {
            if let Some(c) = self.core.conns.get_mut(&id) {
                c.dirty = false;
            }
        }
        for &id in &dirty {
            self.core.flush(id);
        }
        // Keep the allocation for the next turn.
        dirty.clear();
        if self.core.dirty.is_empty() {
            self.core.dirty = dirty;
        }
    }
}

impl Core {
    fn housekeeping_interval(&self) -> Option<Duration> {
        let mut d: Option<Duration> = None;
        let mut consider = |x: Duration| d = Some(d.map_or(x, |y| y.min(x)));
        if let Some(h) = self.config.heartbeat {
            consider(h / 4);
        }
        if let Some(i) = self.config.idle_timeout {
            consider(i / 4);
        }
        if self.conns.values().any(|c| c.deadline.is_some()) {
            consider(Duration::from_millis(100));
        }
        if self.accept_paused_until.is_some() {
            consider(ACCEPT_RETRY);
        }
        d.map(|d| d.max(Duration::from_millis(5)))
    }

    fn housekeeping(&mut self, now: Instant) {
        let mut expired: Vec<(u64, String)> = Vec::new();
        let mut ping: Vec<u64> = Vec::new();
        for (id, c) in &self.conns {
            if let Some(dl) = c.deadline
                && now >= dl
            {
                let why = match c.info.state {
                    State::Connecting => "timed out".to_string(),
                    _ => c.close_reason.clone().unwrap_or_default(),
                };
                expired.push((*id, why));
                continue;
            }
            if c.info.state != State::Open {
                continue;
            }
            if let Some(idle) = self.config.idle_timeout
                && now.duration_since(c.info.last_seen) >= idle
            {
                expired.push((
                    *id,
                    format!(
                        "idle timeout (silent for {})",
                        humantime::format_duration(idle)
                    ),
                ));
                continue;
            }
            if let Some(hb) = self.config.heartbeat
                && now.duration_since(c.info.last_sent) >= hb
                && c.out.is_empty()
            {
                ping.push(*id);
            }
        }
        for (id, why) in expired {
            match self.conns.get(&id).map(|c| c.info.state) {
                Some(State::Connecting) => self.fail_connect(id, why),
                Some(_) => self.drop_conn(id, why),
                None => {}
            }
        }
        let check = Header::new().with("TP", "Check");
        for id in ping {
            if let Some(c) = self.conns.get_mut(&id) {
                let _ = c.out.append_with(|v| encode_into(&check, &[], v));
                c.info.last_sent = now;
                self.mark_dirty(id);
            }
        }
    }

    /// The backlog is drained after a stall (descriptors ran out): say so once.
    /// Not at each accept in between, so a server held at its limit by a steady
    /// stream of clients prints two lines, not two per client.
    fn accept_recovered(&mut self) {
        if std::mem::take(&mut self.accept_failing) {
            self.pending.push_back(Pending::Notice(format!(
                "accepting again on {}",
                self.local_addr.map_or_else(String::new, |a| a.to_string())
            )));
        }
    }

    fn admit(&mut self, stream: TcpStream, addr: SocketAddr) {
        if self.stopping.is_some() {
            return;
        }
        let addr = canonical_addr(addr);
        if let Err(rule) = self.config.access.check(addr.ip()) {
            self.pending
                .push_back(Pending::Notice(format!("refused {addr}: {rule}")));
            return;
        }
        if self.open >= self.config.max_conns {
            self.pending.push_back(Pending::Notice(format!(
                "refused {addr}: too many connections (max {})",
                self.config.max_conns
            )));
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        let id = self.new_id();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(id as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.pending.push_back(Pending::Notice(format!(
                "cannot register connection from {addr}: {}",
                describe(&e)
            )));
            return;
        }
        self.insert_conn(id, Some(stream), addr, Dir::In, State::Open, None);
        self.open += 1;
        if let Some(c) = self.conns.get(&id) {
            self.pending
                .push_back(Pending::Connected(c.info.clone(), self.open));
        }
    }

    /// The next connection id (never reused in a run).
    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds connection `id`; its stream, if any, is already registered.
    fn insert_conn(
        &mut self,
        id: u64,
        stream: Option<TcpStream>,
        addr: SocketAddr,
        dir: Dir,
        state: State,
        target: Option<String>,
    ) {
        self.conns.insert(
            id,
            Conn {
                stream,
                info: ConnInfo::new(ConnId(id), dir, addr, state, target),
                decoder: Decoder::new(self.config.max_body),
                out: OutQueue::default(),
                close_reason: None,
                dirty: false,
                deadline: None,
                drain_mark: None,
                fallbacks: Vec::new(),
            },
        );
    }

    /// Opens the socket of dial `id` to `sa` and registers it; the connect then
    /// completes (or fails) when the socket turns writable.
    fn start_connect(&mut self, id: u64, sa: SocketAddr) {
        // A socket that cannot even be made (no descriptors left) is not a
        // resolution failure: say which step failed.
        let mut stream = match TcpStream::connect(sa) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(id, describe(&e)),
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(id as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail_connect(id, format!("cannot register socket: {}", describe(&e)));
        }
        match self.conns.get_mut(&id) {
            Some(c) => {
                c.info.addr = sa;
                c.stream = Some(stream);
            }
            None => {
                let _ = self.poll.registry().deregister(&mut stream);
            }
        }
    }

    /// A connect attempt of dial `id` failed: try its next address if it has one,
    /// else report the dial failed with `reason`.
    fn connect_failed(&mut self, id: u64, reason: String) {
        let next = self.conns.get_mut(&id).and_then(|c| {
            let next = c.fallbacks.pop()?;
            if let Some(mut old) = c.stream.take() {
                let _ = self.poll.registry().deregister(&mut old);
            }
            Some(next)
        });
        match next {
            Some(sa) => self.start_connect(id, sa),
            None => self.fail_connect(id, reason),
        }
    }

    fn fail_connect(&mut self, id: u64, reason: String) {
        if let Some(mut c) = self.conns.remove(&id) {
            if let Some(s) = c.stream.as_mut() {
                let _ = self.poll.registry().deregister(s);
            }
            self.pending
                .push_back(Pending::ConnectFailed(c.info, reason));
        }
    }

    /// Removes a connection now and reports it closed.
    fn drop_conn(&mut self, id: u64, reason: String) {
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(s) = c.stream.as_mut() {
            let _ = self.poll.registry().deregister(s);
        }
        if c.info.state == State::Connecting {
            self.pending
                .push_back(Pending::ConnectFailed(c.info, reason));
            return;
        }
        self.open = self.open.saturating_sub(1);
        // A descriptor came free: a paused accept may succeed now.
        if self.accept_paused_until.is_some() {
            self.accept_paused_until = Some(Instant::now());
        }
        self.pending
            .push_back(Pending::Closed(c.info, reason, self.open));
    }

    fn flush(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.info.state == State::Connecting {
            return;
        }
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let before = c.out.len;
        match c.out.write_to(stream, WRITE_BUDGET, &mut c.info.bytes_out) {
            Ok(Flush::Done) => {
                if let Some(reason) = c.close_reason.take() {
                    self.drop_conn(id, reason);
                    return;
                }
            }
            Ok(Flush::Blocked) => {}
            Ok(Flush::Budget) => {
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(id);
                }
            }
            Err(e) => {
                self.drop_conn(id, describe(&e));
                return;
            }
        }
        if c.out.len < before {
            c.info.last_sent = Instant::now();
        }
        if let Some(mark) = c.drain_mark
            && c.out.len <= mark
        {
            c.drain_mark = None;
            self.pending.push_back(Pending::Drained(ConnId(id)));
        }
    }

    fn enqueue(
        &mut self,
        id: ConnId,
        size: usize,
        put: impl FnOnce(&mut OutQueue) -> Result<(), EncodeError>,
    ) -> Result<(), SendError> {
        let max = self.config.max_queue;
        let mut c = self.conns.get_mut(&id.0).ok_or(SendError::NoSuchConn(id))?;
        if c.close_reason.is_some() {
            return Err(SendError::Closing(id));
        }
        if c.out.len + size > max && c.out.len > 0 && c.info.state == State::Open {
            // The limit counts what the peer has not taken: give it the chance
            // to take what is queued before judging it slow.
            self.flush(id.0);
            c = self.conns.get_mut(&id.0).ok_or(SendError::NoSuchConn(id))?;
        }
        if c.out.len + size > max && c.out.len > 0 {
            let reason = format!(
                "slow consumer: {} bytes queued (limit {max})",
                c.out.len + size
            );
            self.drop_conn(id.0, reason);
            return Err(SendError::SlowConsumer(id));
        }
        put(&mut c.out).map_err(SendError::Encode)?;
        c.info.msgs_out += 1;
        if c.info.state != State::Connecting && !c.dirty {
            c.dirty = true;
            self.dirty.push(id.0);
        }
        Ok(())
    }

    /// Queues `id` for writing this turn, once.
    fn mark_dirty(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id);
        }
    }
}

impl Context<'_> {
    /// Encodes and queues one frame for `to`.
    pub fn send(&mut self, to: ConnId, header: &Header, body: &[u8]) -> Result<(), SendError> {
        self.core.enqueue(to, body.len() + 64, |q| {
            q.append_with(|v| encode_into(header, body, v)).map(|_| ())
        })
    }

    /// Queues one frame whose (large) body is moved in without copying.
    pub fn send_owned(
        &mut self,
        to: ConnId,
        header: &Header,
        body: Vec<u8>,
    ) -> Result<(), SendError> {
        self.core.enqueue(to, body.len() + 64, |q| {
            q.append_with(|v| encode_header_into(header, body.len(), v))?;
            q.push_owned(body);
            Ok(())
        })
    }

    /// Queues an already encoded frame, shared without copying (broadcasts).
    pub fn send_frame(&mut self, to: ConnId, frame: &Arc<[u8]>) -> Result<(), SendError> {
        self.core.enqueue(to, frame.len(), |q| {
            if frame.len() <= SHARE_ABOVE {
                q.append_with(|v| {
                    v.extend_from_slice(frame);
                    Ok(())
                })?;
            } else {
                q.push_shared(frame.clone());
            }
            Ok(())
        })
    }

    /// Sends one frame to each of `to`, encoding it once; returns the results in order.
    pub fn multicast(
        &mut self,
        to: &[ConnId],
        header: &Header,
        body: &[u8],
    ) -> Result<Vec<SendResult>, EncodeError> {
        let mut frame = Vec::with_capacity(body.len() + 64);
        encode_into(header, body, &mut frame)?;
        let frame: Arc<[u8]> = frame.into();
        Ok(to
            .iter()
            .map(|&id| (id, self.send_frame(id, &frame)))
            .collect())
    }

    /// Sends one frame to every open or connecting connection; returns how many took it.
    pub fn broadcast(&mut self, header: &Header, body: &[u8]) -> Result<usize, EncodeError> {
        let ids = self.ids();
        let results = self.multicast(&ids, header, body)?;
        Ok(results.iter().filter(|(_, r)| r.is_ok()).count())
    }

    /// Closes `conn` once its queue is flushed (bounded by a short timeout).
    pub fn close(&mut self, conn: ConnId, reason: impl Into<String>) {
        let reason = reason.into();
        let Some(c) = self.core.conns.get_mut(&conn.0) else {
            return;
        };
        if c.out.is_empty() || c.info.state == State::Connecting {
            self.core.drop_conn(conn.0, reason);
        } else {
            c.info.state = State::Closing;
            c.close_reason = Some(reason);
            c.deadline = Some(Instant::now() + CLOSE_FLUSH);
            self.core.housekeeping_stale = true;
        }
    }

    /// Dials `addr` (`HOST:PORT`) without blocking the loop: a host name is looked
    /// up on a helper thread, and the connect itself is non-blocking. The outcome
    /// arrives as `on_connected` or `on_connect_failed` (within the connect timeout);
    /// frames sent to the id meanwhile wait in its queue.
    pub fn dial(&mut self, addr: &str) -> ConnId {
        let core = &mut *self.core;
        let literal = addr.parse::<SocketAddr>().ok();
        // Until a name is looked up, the address shown is the unspecified one.
        let placeholder = SocketAddr::from(([0, 0, 0, 0], 0));
        let id = core.new_id();
        let (dir, state) = (Dir::Out, State::Connecting);
        let shown = literal.unwrap_or(placeholder);
        core.insert_conn(id, None, shown, dir, state, Some(addr.to_string()));
        if let Some(c) = core.conns.get_mut(&id) {
            c.deadline = Instant::now().checked_add(core.config.connect_timeout);
        }
        core.housekeeping_stale = true;
        match literal {
            Some(sa) => core.start_connect(id, sa),
            None if !has_port(addr) => {
                core.fail_connect(id, "no port given (want HOST:PORT)".into());
            }
            None => {
                if let Err(e) = core.resolver.start(id, addr) {
                    core.fail_connect(id, format!("cannot resolve: {}", describe(&e)));
                }
            }
        }
        ConnId(id)
    }

    /// Calls `on_timer(token)` after `after` (never, if that is beyond what the
    /// clock can represent).
    pub fn set_timer(&mut self, after: Duration, token: u64) {
        let Some(at) = Instant::now().checked_add(after) else {
            return;
        };
        self.core.timer_seq += 1;
        let seq = self.core.timer_seq;
        self.core.timers.push(Reverse((at, seq, token)));
    }

    /// While paused, commands from other threads wait in their bounded channel
    /// (so their producers wait too) instead of reaching `on_command`; a handler
    /// that must hold commands back pauses rather than buffering without bound.
    /// Interrupts still arrive.
    pub fn pause_commands(&mut self, paused: bool) {
        self.core.commands_paused = paused;
        if !paused {
            // Commands may be waiting: take them this turn.
            let _ = self.core.waker.wake();
        }
    }

    /// Calls `on_drained(conn)` once its queue holds at most `mark` bytes.
    pub fn notify_drained(&mut self, conn: ConnId, mark: usize) {
        if let Some(c) = self.core.conns.get_mut(&conn.0) {
            if c.out.len <= mark && c.info.state != State::Connecting {
                self.core.pending.push_back(Pending::Drained(conn));
            } else {
                c.drain_mark = Some(mark);
            }
        }
    }

    /// Reports a notice through the handler's `on_notice`.
    pub fn notice(&mut self, text: impl Into<String>) {
        self.core.pending.push_back(Pending::Notice(text.into()));
    }

    /// Stops the node: flushes queues (bounded by a short timeout), closes all.
    /// Commands still waiting in the channel are not delivered.
    pub fn stop(&mut self) {
        if self.core.stopping.is_none() {
            self.core.stopping = Some(Instant::now() + STOP_FLUSH);
        }
    }

    /// True once [`Context::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.core.stopping.is_some()
    }

    /// A connection's details.
    pub fn info(&self, conn: ConnId) -> Option<&ConnInfo> {
        self.core.conns.get(&conn.0).map(|c| &c.info)
    }

    /// The dial target of an outgoing connection, as given to [`Context::dial`].
    pub fn target(&self, conn: ConnId) -> Option<&str> {
        self.core
            .conns
            .get(&conn.0)
            .and_then(|c| c.info.target.as_deref())
    }

    /// Every connection (any state), in id order.
    pub fn conns(&self) -> Vec<&ConnInfo> {
        let mut v: Vec<&ConnInfo> = self.core.conns.values().map(|c| &c.info).collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Ids of every connection that can take frames, in id order.
    pub fn ids(&self) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self
            .core
            .conns
            .values()
            .filter(|c| c.close_reason.is_none())
            .map(|c| c.info.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Number of open connections.
    pub fn alive(&self) -> usize {
        self.core.open
    }

    /// Bytes waiting in `conn`'s outbound queue.
    pub fn queued(&self, conn: ConnId) -> usize {
        self.core.conns.get(&conn.0).map_or(0, |c| c.out.len)
    }

    /// The listener's address, if listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.core.local_addr
    }

    /// The node's limits.
    pub fn config(&self) -> &Config {
        &self.core.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records dial outcomes and stops at the first one.
    #[derive(Default)]
    struct Outcome {
        connected: Option<SocketAddr>,
        failed: Option<String>,
    }

    impl Handler for Outcome {
        type Command = ();
        fn on_connected(&mut self, ctx: &mut Context<'_>, conn: &ConnInfo, _alive: usize) {
            self.connected = Some(conn.addr);
            ctx.stop();
        }
        fn on_connect_failed(&mut self, ctx: &mut Context<'_>, _: &ConnInfo, reason: &str) {
            self.failed = Some(reason.to_string());
            ctx.stop();
        }
    }

    fn refused() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn a_refused_address_falls_back_to_the_next_one() {
        let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let good_addr = good.local_addr().unwrap();
        let mut node = Node::new(Config::default(), Outcome::default()).unwrap();
        let bad = refused();
        let id = node.context().dial(&bad.to_string());
        // As if the name had resolved to [bad, good].
        node.core.conns.get_mut(&id.0).unwrap().fallbacks = vec![good_addr];
        let h = node.run().unwrap();
        assert_eq!(h.connected, Some(good_addr), "failed: {:?}", h.failed);
    }

    #[test]
    fn the_last_address_failing_fails_the_dial() {
        let mut node = Node::new(Config::default(), Outcome::default()).unwrap();
        node.context().dial(&refused().to_string());
        let h = node.run().unwrap();
        assert_eq!(h.failed.as_deref(), Some("connection refused"));
    }

    #[test]
    fn a_dial_without_a_port_fails_at_once() {
        let mut node = Node::new(Config::default(), Outcome::default()).unwrap();
        node.context().dial("localhost");
        let h = node.run().unwrap();
        assert_eq!(h.failed.as_deref(), Some("no port given (want HOST:PORT)"));
    }

    /// Records what reached it: commands by number, `-1` for the timer.
    #[derive(Default)]
    struct Seen(Vec<i64>);

    impl Seen {
        fn note(&mut self, ctx: &mut Context<'_>, n: i64) {
            self.0.push(n);
            if self.0.len() == 4 {
                ctx.stop();
            }
        }
    }

    impl Handler for Seen {
        type Command = i64;
        fn on_command(&mut self, ctx: &mut Context<'_>, n: i64) {
            if n == 0 {
                ctx.pause_commands(true);
                ctx.set_timer(Duration::from_millis(20), 1);
            }
            self.note(ctx, n);
        }
        fn on_timer(&mut self, ctx: &mut Context<'_>, _: u64) {
            ctx.pause_commands(false);
            self.note(ctx, -1);
        }
    }

    #[test]
    fn paused_commands_wait_in_the_channel() {
        let node = Node::new(Config::default(), Seen::default()).unwrap();
        let remote = node.remote();
        for n in 0..3 {
            remote.send(n).unwrap();
        }
        assert_eq!(node.run().unwrap().0, [0, -1, 1, 2]);
    }

    #[test]
    fn an_interrupt_goes_before_waiting_commands_and_they_are_not_run() {
        let node = Node::new(Config::default(), Seen::default()).unwrap();
        let remote = node.remote();
        for n in 1..10 {
            remote.send(n).unwrap();
        }
        remote.interrupt();
        assert_eq!(node.run().unwrap().0, [] as [i64; 0]);
    }

    #[test]
    fn a_name_is_looked_up_off_the_loop_and_connected() {
        let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = good.local_addr().unwrap().port();
        let mut node = Node::new(Config::default(), Outcome::default()).unwrap();
        let id = node.context().dial(&format!("localhost:{port}"));
        // Nothing is known until the lookup answers: the dial waits, socketless.
        assert!(node.core.conns.get(&id.0).unwrap().stream.is_none());
        let h = node.run().unwrap();
        assert_eq!(h.connected.map(|a| a.port()), Some(port), "{:?}", h.failed);
    }
}
