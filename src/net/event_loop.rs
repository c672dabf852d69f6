//! The event loop: one thread, one blocking `mio::Poll`, every socket. It turns
//! readiness into reads, writes and accepts on the [`Core`], and hands what
//! happened to the [`Handler`].

use super::addr::parse_bind;
use super::config::Config;
use super::conn::{ConnId, State, Transport};
use super::context::{Context, TimerId};
use super::core::{ACCEPT_RETRY, Core, Pending};
use super::error::describe;
use super::handler::Handler;
use super::pake::is_pake_frame;
use super::remote::Remote;
use super::tls::Tls;
use crate::protocol::Message;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use std::cmp::Reverse;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// Bytes read from one connection per turn before others get theirs.
const READ_BUDGET: usize = 1 << 20;
/// Connections accepted per turn.
const ACCEPT_BUDGET: usize = 256;
/// Commands taken from the channel per turn.
const COMMAND_BUDGET: usize = 4096;
/// Frames decoded before they are handed to the handler.
const DELIVER_BATCH: usize = 64;
/// Pending connections the kernel queues for the listener.
const LISTEN_BACKLOG: libc::c_int = 4096;

/// The longest a busy loop goes without calling `on_idle`.
const IDLE_AT_LEAST: Duration = Duration::from_millis(5);

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

impl<H: Handler> Node<H> {
    /// A node with no listener and no connections yet.
    pub fn new(config: Config, handler: H) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = sync_channel(1024);
        let interrupted = Arc::new(AtomicBool::new(false));
        Ok(Node {
            core: Core::new(poll, config, waker.clone()),
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
        let mut last_idle = Instant::now();
        loop {
            self.flush_dirty();
            self.dispatch_pending();
            if let Some(deadline) = self.core.stopping {
                let drained = self.core.conns.values().all(|c| c.out.is_empty());
                if drained || Instant::now() >= deadline {
                    break;
                }
            }
            let mut timeout = self.poll_timeout();
            // A loop kept busy (a peer streaming a file) still has its idle
            // moment every IDLE_AT_LEAST, so output (chat events) is not held
            // back until the stream ends.
            if timeout != Some(Duration::ZERO) || last_idle.elapsed() >= IDLE_AT_LEAST {
                last_idle = Instant::now();
                let mut ctx = Context {
                    core: &mut self.core,
                };
                self.handler.on_idle(&mut ctx);
                self.flush_dirty();
                // The handler may have made work (reads resumed).
                timeout = self.poll_timeout();
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
                        if self.core.is_sniffing(id) {
                            self.sniff(id);
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
        let mut next: Option<Instant> = c.timers.peek().map(|Reverse((t, _))| *t);
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
        let Some(transport) = conn.transport.as_ref() else {
            return;
        };
        let stream = transport.socket();
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
                let now = Instant::now();
                conn.info.since = now;
                conn.info.last_seen = now;
                conn.info.last_sent = now;
                if let Some((cfg, name)) = conn.dial_tls.take().map(|b| *b) {
                    // Connected at the TCP level; usable once the handshake is
                    // over (still within the dial's deadline).
                    let Some(Transport::Tcp(sock)) = conn.transport.take() else {
                        return;
                    };
                    match Tls::client(sock, cfg, name) {
                        Ok(t) => conn.transport = Some(Transport::Tls(Box::new(t))),
                        Err(e) => return self.core.fail_connect(id, describe(&e)),
                    }
                    conn.info.state = State::Handshaking;
                    // The ClientHello goes out now.
                    self.core.mark_dirty(id);
                } else {
                    conn.info.state = State::Open;
                    conn.deadline = None;
                    self.core.open += 1;
                    self.core
                        .pending
                        .push_back(Pending::Connected(conn.info.clone(), self.core.open));
                    if !conn.out.is_empty() {
                        self.core.mark_dirty(id);
                    }
                }
                // Data may already be waiting.
                self.read_conn(id);
            }
            Err(e) => self.core.connect_failed(id, describe(&e)),
        }
    }

    /// An accepted connection of a TLS listener sent its first bytes: a
    /// ClientHello starts the TLS server side; anything else is a plaintext
    /// peer, kept or refused by the listener's policy.
    fn sniff(&mut self, id: u64) {
        match self.core.sniff(id) {
            Some(true) => {
                // A plaintext peer is up now: its `connected` event goes
                // before any of its messages.
                self.dispatch_pending();
                self.read_conn(id);
            }
            Some(false) => {}
            None => self.dispatch_pending(),
        }
    }

    /// Reads what `id` has (up to the per-turn budget) and hands each frame to the
    /// handler, a small batch at a time, so decoded frames are used while they are
    /// still in the cache and memory stays flat however much arrived at once.
    fn read_conn(&mut self, id: u64) {
        let hold = self.core.conns.get(&id).is_some_and(|c| c.hold);
        if self.core.reads_paused || hold {
            if let Some(c) = self.core.conns.get_mut(&id)
                && !std::mem::replace(&mut c.held, true)
            {
                self.core.held_reads.push(id);
            }
            return;
        }
        let mut buf = std::mem::take(&mut self.core.read_buf);
        let mut msgs = std::mem::take(&mut self.scratch);
        let mut total = 0usize;
        let mut outcome: Option<String> = None;
        'reads: while let Some(conn) = self.core.conns.get_mut(&id) {
            if total >= READ_BUDGET {
                self.core.more_read.push_back(id);
                break;
            }
            let Some(transport) = conn.transport.as_mut() else {
                break;
            };
            let read = transport.read(&mut buf);
            if conn.info.state == State::Handshaking
                && !transport.is_handshaking()
                && conn.pake.is_none()
            {
                // The handshake just ended: the connection is up (or proves
                // --secret first), and its `connected` event goes before any
                // of its messages.
                self.core.tls_done(id);
                self.dispatch_pending();
            }
            let Some(conn) = self.core.conns.get_mut(&id) else {
                break;
            };
            let n = match read {
                Ok(0) => {
                    // Bytes of an unfinished frame are worth a word: often the peer
                    // does not speak the protocol (plain text from netcat).
                    let d = &conn.decoder;
                    outcome = Some(match d.buffered() {
                        _ if d.is_idle() => "peer closed".to_string(),
                        0 => "peer closed mid-frame".to_string(),
                        _ if let Some(hint) = d.text_hint() => {
                            format!("peer closed mid-frame: {hint}")
                        }
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
            if conn.pake.is_some() {
                // Frames of the --secret proof, and whatever follows it.
                match self.core.pake_input(id, &buf[..n]) {
                    Ok(None) => continue,
                    Ok(Some(mut after)) => {
                        self.dispatch_pending();
                        if !self.deliver(id, &mut after) {
                            break 'reads;
                        }
                        continue;
                    }
                    Err(reason) => {
                        outcome = Some(reason);
                        break;
                    }
                }
            }
            let mut pos = 0;
            while pos < n {
                let Some(conn) = self.core.conns.get_mut(&id) else {
                    break 'reads;
                };
                let fed = conn
                    .decoder
                    .feed_some(&buf[pos..n], &mut msgs, DELIVER_BATCH);
                if !msgs.is_empty() {
                    conn.first_frame_by = None;
                }
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
        if let Some(conn) = self.core.conns.get_mut(&id) {
            if total > 0 {
                conn.info.last_seen = Instant::now();
            }
            // Reading may have produced TLS output (handshake messages).
            if conn.transport.as_ref().is_some_and(|t| t.wants_write()) {
                self.core.mark_dirty(id);
            }
        }
        self.scratch = msgs;
        self.core.read_buf = buf;
        if let Some(reason) = outcome {
            self.core.drop_conn(id, reason);
        } else if total > 0 {
            self.core.account_partial(id);
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
                Some(c) if c.info.state == State::Open => {
                    // A --secret proof arriving at a side without a secret: the
                    // peer requires one. Checked on a TLS link's first frame only.
                    if c.info.msgs_in == 0
                        && c.info.tls.is_some()
                        && self.core.config.secret.is_none()
                        && is_pake_frame(&msg)
                    {
                        self.core.drop_conn(
                            id,
                            "the peer requires a shared secret (--secret), and this side has none"
                                .into(),
                        );
                        open = false;
                        continue;
                    }
                    c.info.msgs_in += 1;
                }
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
            // While a peer's queue is over the high-water mark, commands wait in
            // their bounded channel (and the pipe or prompt behind it waits too):
            // local input goes at the network's pace instead of overflowing queues.
            if self.core.commands_paused || self.core.stopping.is_some() || self.core.input_gated()
            {
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
        while let Some(Reverse((t, seq))) = self.core.timers.peek().copied() {
            if t > now {
                break;
            }
            self.core.timers.pop();
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_timer(&mut ctx, TimerId(seq));
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
                .is_some_and(|c| c.transport.is_none() && c.info.state == State::Connecting);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ConnInfo;

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
                ctx.set_timer(Duration::from_millis(20));
            }
            self.note(ctx, n);
        }
        fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
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
        assert!(node.core.conns.get(&id.0).unwrap().transport.is_none());
        let h = node.run().unwrap();
        assert_eq!(h.connected.map(|a| a.port()), Some(port), "{:?}", h.failed);
    }

    /// Queues 1 MiB on connect and waits on two marks at once.
    #[derive(Default)]
    struct TwoWaiters {
        drained: Vec<usize>,
        unsent_at_connect: bool,
    }

    impl Handler for TwoWaiters {
        type Command = ();
        fn on_connected(&mut self, ctx: &mut Context<'_>, conn: &ConnInfo, _alive: usize) {
            let header = crate::protocol::Header::new().with("TP", "bulk");
            ctx.send(conn.id, &header, &vec![7u8; 1 << 20]).unwrap();
            self.unsent_at_connect = ctx.info(conn.id).unwrap().unsent_since.is_some();
            ctx.notify_drained(conn.id, 0);
            ctx.notify_drained(conn.id, 512 << 10);
            ctx.notify_drained(conn.id, 0);
        }
        fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
            self.drained.push(ctx.queued(conn));
            if ctx.queued(conn) == 0 {
                assert!(ctx.info(conn).unwrap().unsent_since.is_none());
                ctx.stop();
            }
        }
    }

    #[test]
    fn every_drain_mark_gets_its_own_wake_up() {
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = peer.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = peer.accept().unwrap();
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut sink);
        });
        let mut node = Node::new(Config::default(), TwoWaiters::default()).unwrap();
        node.context().dial(&addr.to_string());
        let h = node.run().unwrap();
        reader.join().unwrap();
        assert!(
            h.unsent_at_connect,
            "queued output has an unsent-since time"
        );
        // One call for the 512 KiB mark and one for the 0 mark (asked twice, counted once),
        // possibly in the same flush.
        assert_eq!(h.drained.len(), 2, "{:?}", h.drained);
        assert_eq!(h.drained.last(), Some(&0));
    }

    /// Like the filer waiting for an unnamed peer: asks to hear when its queue
    /// is drained, and asks again from `on_drained` until the peer has spoken.
    #[derive(Default)]
    struct Asks {
        answer: Option<Message>,
    }

    impl Handler for Asks {
        type Command = ();
        fn on_connected(&mut self, ctx: &mut Context<'_>, conn: &ConnInfo, _alive: usize) {
            let hello = crate::protocol::Header::new().with("TP", "hello");
            let _ = ctx.send(conn.id, &hello, &[]);
            ctx.notify_drained(conn.id, 0);
        }
        fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
            if self.answer.is_none() {
                ctx.notify_drained(conn, 0);
            }
        }
        fn on_message(&mut self, ctx: &mut Context<'_>, _: ConnId, msg: Message) {
            self.answer = Some(msg);
            ctx.stop();
        }
    }

    /// The lost wake-up: a handler asking again from `on_drained` was called
    /// back at once, forever, and the loop never polled for the peer's answer.
    #[test]
    fn a_handler_asking_again_from_on_drained_does_not_keep_the_loop_from_reading() {
        use std::io::{Read, Write};
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = peer.local_addr().unwrap();
        // The peer answers the moment it has the node's first frame.
        std::thread::spawn(move || {
            let (mut s, _) = peer.accept().unwrap();
            let mut b = [0u8; 64];
            let _ = s.read(&mut b).unwrap();
            let answer = crate::protocol::Header::new().with("TP", "answer");
            let frame = crate::protocol::encode(&answer, b"hi").unwrap();
            s.write_all(&frame).unwrap();
            // Held open until the node is done with it.
            let _ = s.read(&mut b);
        });
        // No timers at all: nothing but the answer can end the run.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut node = Node::new(Config::default(), Asks::default()).unwrap();
            node.context().dial(&addr.to_string());
            let _ = tx.send(node.run().unwrap());
        });
        let h = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the answer was not read within 10s: the loop never polled");
        let msg = h.answer.expect("stopped without the answer");
        assert_eq!(msg.header.get("TP"), Some("answer"));
        assert_eq!(msg.body, b"hi");
    }
}
