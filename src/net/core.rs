//! The loop's state: the connection table and every operation on it (admit,
//! dial, queue, flush, drop), timers, pending events and housekeeping. Handlers
//! reach it through `Context`; the loop in
//! `event_loop` drives it. It knows nothing of the handler.

use super::access::canonical_addr;
use super::config::Config;
use super::conn::{Conn, ConnId, ConnInfo, Dir, IdMap, NoticeRun, State, Transport};
use super::error::{SendError, describe};
use super::pake::{EXPORTER_LABEL, Pake};
use super::queue::{Flush, OutQueue};
use super::resolver::Resolver;
use super::tls::{Tls, Trust, client_config, looks_like_tls, system_roots};
use crate::protocol::{Decoder, EncodeError, Header, Message, encode_into};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token, Waker};
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes written to one connection per turn.
const WRITE_BUDGET: usize = 4 << 20;
/// Size of the shared read buffer.
const READ_BUF: usize = 256 << 10;
/// How long a listener that takes TLS and plaintext waits for a silent peer's
/// first bytes before taking it for a plaintext peer that waits to be spoken to.
const SNIFF_WAIT: Duration = Duration::from_millis(300);
/// Notices of one kind from one connection within this window are one line.
const NOTICE_WINDOW: Duration = Duration::from_secs(1);
/// Malformed frames in a row that a connection may send before it is closed.
const MALFORMED_IN_ROW: u32 = 8;

/// The line that sums up a run of coalesced notices.
fn more_like_this(n: u32, id: u64) -> String {
    format!("… and {n} more like this from #{id}")
}

/// While accepting is impossible (no descriptors), retry this often.
pub(super) const ACCEPT_RETRY: Duration = Duration::from_millis(250);

/// Events waiting to reach the handler. Counts of open connections are taken when
/// the event happens, so a burst of accepts reads `1, 2, 3 alive`, not `3, 3, 3`.
pub(super) enum Pending {
    Connected(ConnInfo, usize),
    ConnectFailed(ConnInfo, String),
    Closed(ConnInfo, String, usize),
    Drained(ConnId),
    Notice(String),
}

/// Everything the loop owns except the handler.
pub(super) struct Core {
    pub(super) poll: Poll,
    pub(super) config: Config,
    pub(super) listener: Option<TcpListener>,
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) conns: IdMap<Conn>,
    pub(super) next_id: u64,
    pub(super) open: usize,
    pub(super) timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pub(super) timer_seq: u64,
    pub(super) pending: VecDeque<Pending>,
    /// Connections that may have more to read (read budget ran out).
    pub(super) more_read: VecDeque<u64>,
    /// Connections with queued output to write this turn (each at most once: a
    /// connection in it has its `dirty` flag set).
    pub(super) dirty: Vec<u64>,
    pub(super) listener_ready: bool,
    pub(super) accept_paused_until: Option<Instant>,
    /// Accepting failed (no descriptors) and the backlog has not drained since:
    /// the notice is shown once per stall, not at every retry.
    pub(super) accept_failing: bool,
    pub(super) next_housekeeping: Option<Instant>,
    /// `next_housekeeping` must be recomputed (a deadline or a limit changed);
    /// otherwise the idle loop would scan every connection on every turn.
    pub(super) housekeeping_stale: bool,
    pub(super) stopping: Option<Instant>,
    /// Commands wait in the channel (`Context::pause_commands`).
    pub(super) commands_paused: bool,
    /// Wakes the loop from its own callbacks.
    pub(super) waker: Arc<Waker>,
    pub(super) read_buf: Vec<u8>,
    /// Host-name lookups of dials in progress.
    pub(super) resolver: Resolver,
    /// Connections whose queue is over the input high-water mark: while any is,
    /// commands wait in their channel, so a script waits for the network.
    pub(super) over_high: usize,
    /// Accepted connections open or in a handshake, by peer address.
    pub(super) per_ip: HashMap<IpAddr, u32>,
    /// When a connection from an address was last refused for `--max-conns-per-ip`:
    /// one notice per burst, not one per refusal.
    pub(super) refused_at: HashMap<IpAddr, Instant>,
    /// Bytes of unfinished frames over every connection (`--max-pending-bodies`).
    pub(super) pending_bodies: usize,
    /// Reading from peers waits (`Context::pause_reads`):
    /// the handler's own output is backed up.
    pub(super) reads_paused: bool,
    /// Connections that became readable while reads were paused, read on resume
    /// (readiness is edge-triggered: it is not reported again).
    pub(super) held_reads: Vec<u64>,
    /// Connections with coalesced notices to sum up (`NoticeRun::more` > 0).
    pub(super) runs_open: usize,
    /// Accepted connections still in their handshake (not yet in `open`).
    pub(super) handshaking_in: usize,
    /// The client configuration of `tls://` dials without `Config::tls_dial`,
    /// made on first use (reading the system's roots takes a while).
    pub(super) default_client: Option<Arc<rustls::ClientConfig>>,
}

impl Core {
    /// The loop's state before anything is bound or dialled.
    pub(super) fn new(poll: Poll, config: Config, waker: Arc<Waker>) -> Self {
        Core {
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
            resolver: Resolver::new(waker),
            over_high: 0,
            per_ip: HashMap::new(),
            refused_at: HashMap::new(),
            pending_bodies: 0,
            reads_paused: false,
            held_reads: Vec::new(),
            runs_open: 0,
            handshaking_in: 0,
            default_client: None,
        }
    }

    pub(super) fn housekeeping_interval(&self) -> Option<Duration> {
        let mut d: Option<Duration> = None;
        let mut consider = |x: Duration| d = Some(d.map_or(x, |y| y.min(x)));
        if let Some(h) = self.config.heartbeat {
            consider(h / 4);
        }
        if let Some(i) = self.config.idle_timeout {
            consider(i / 4);
        }
        if let Some(w) = self.config.write_timeout {
            consider(w / 4);
        }
        if let Some(h) = self.config.handshake_timeout {
            consider(h / 4);
        }
        if self.runs_open > 0 {
            consider(NOTICE_WINDOW / 4);
        }
        if self.conns.values().any(|c| c.deadline.is_some()) {
            consider(Duration::from_millis(100));
        }
        if self.accept_paused_until.is_some() {
            consider(ACCEPT_RETRY);
        }
        d.map(|d| d.max(Duration::from_millis(5)))
    }

    pub(super) fn housekeeping(&mut self, now: Instant) {
        if self.runs_open > 0 {
            let over: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.run
                        .as_ref()
                        .is_some_and(|r| now.duration_since(r.started) >= NOTICE_WINDOW)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in over {
                self.end_run(id);
            }
        }
        let mut expired: Vec<(u64, String)> = Vec::new();
        let mut ping: Vec<u64> = Vec::new();
        let mut plain: Vec<u64> = Vec::new();
        for (id, c) in &self.conns {
            if let Some(dl) = c.deadline
                && now >= dl
            {
                // A TLS client speaks first; silence means a plaintext peer
                // that waits to be spoken to.
                if matches!(c.transport, Some(Transport::Sniffing(_))) {
                    plain.push(*id);
                    continue;
                }
                let why = match c.info.state {
                    State::Connecting => "timed out".to_string(),
                    State::Handshaking => "handshake timed out".to_string(),
                    _ => c.close_reason.clone().unwrap_or_default(),
                };
                expired.push((*id, why));
                continue;
            }
            if let Some(by) = c.first_frame_by
                && now >= by
                && !self.reads_paused
            {
                let limit = self.config.handshake_timeout.unwrap_or_default();
                let why = match c.info.state {
                    State::Handshaking => "handshake timed out".to_string(),
                    _ => format!("no frame within {}", humantime::format_duration(limit)),
                };
                expired.push((*id, why));
                continue;
            }
            if c.info.state != State::Open {
                continue;
            }
            if let (Some(limit), Some(since)) = (self.config.write_timeout, c.info.unsent_since)
                && now.duration_since(since) >= limit
            {
                let why = format!(
                    "slow consumer: nothing written for {} ({} bytes queued)",
                    humantime::format_duration(limit),
                    c.out.len
                );
                expired.push((*id, why));
                continue;
            }
            // While our reads are paused, a peer's silence is ours, not its own.
            if let Some(idle) = self.config.idle_timeout
                && !self.reads_paused
                && !c.hold
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
        for id in plain {
            self.take_as_plaintext(id);
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
                // Only queued: `last_sent` moves when the probe is written.
                let _ = c.out.append_with(|v| encode_into(&check, &[], v));
                c.info.unsent_since.get_or_insert(now);
                self.mark_dirty(id);
            }
        }
    }

    /// The backlog is drained after a stall (descriptors ran out): say so once.
    /// Not at each accept in between, so a server held at its limit by a steady
    /// stream of clients prints two lines, not two per client.
    pub(super) fn accept_recovered(&mut self) {
        if std::mem::take(&mut self.accept_failing) {
            self.pending.push_back(Pending::Notice(format!(
                "accepting again on {}",
                self.local_addr.map_or_else(String::new, |a| a.to_string())
            )));
        }
    }

    pub(super) fn admit(&mut self, stream: TcpStream, addr: SocketAddr) {
        if self.stopping.is_some() {
            return;
        }
        let addr = canonical_addr(addr);
        if let Err(rule) = self.config.access.check(addr.ip()) {
            self.pending
                .push_back(Pending::Notice(format!("refused {addr}: {rule}")));
            return;
        }
        if let Some(max) = self.config.max_conns_per_ip
            && self
                .per_ip
                .get(&addr.ip())
                .is_some_and(|n| *n as usize >= max)
        {
            self.refuse_per_ip(addr, max);
            return;
        }
        if self.open + self.handshaking_in >= self.config.max_conns {
            self.pending.push_back(Pending::Notice(format!(
                "refused {addr}: too many connections (max {})",
                self.config.max_conns
            )));
            return;
        }
        let _ = stream.set_nodelay(true);
        let tls = self.config.tls.is_some();
        let mut transport = if tls {
            Transport::Sniffing(stream)
        } else {
            Transport::Tcp(stream)
        };
        let id = self.new_id();
        if let Err(e) = self.poll.registry().register(
            &mut transport,
            Token(id as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.pending.push_back(Pending::Notice(format!(
                "cannot register connection from {addr}: {}",
                describe(&e)
            )));
            return;
        }
        let state = if tls { State::Handshaking } else { State::Open };
        self.insert_conn(id, Some(transport), addr, Dir::In, state, None);
        if self.config.tls.as_ref().is_some_and(|t| t.plaintext_too)
            && let Some(c) = self.conns.get_mut(&id)
        {
            c.deadline = Instant::now().checked_add(SNIFF_WAIT);
            self.housekeeping_stale = true;
        }
        *self.per_ip.entry(addr.ip()).or_default() += 1;
        if let Some(limit) = self.config.handshake_timeout
            && let Some(c) = self.conns.get_mut(&id)
        {
            c.first_frame_by = Instant::now().checked_add(limit);
            self.housekeeping_stale = true;
        }
        if tls {
            // Reported once its first bytes say what it speaks.
            self.handshaking_in += 1;
            return;
        }
        self.open += 1;
        if let Some(c) = self.conns.get(&id) {
            self.pending
                .push_back(Pending::Connected(c.info.clone(), self.open));
        }
    }

    /// The client configuration for TLS dials.
    pub(super) fn client_config(&mut self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(d) = &self.config.tls_dial {
            return Ok(d.config.clone());
        }
        if let Some(c) = &self.default_client {
            return Ok(c.clone());
        }
        let cfg = client_config(Trust::Roots(Arc::new(system_roots())), None)?;
        self.default_client = Some(cfg.clone());
        Ok(cfg)
    }

    /// True for an accepted connection whose first bytes are not seen yet.
    pub(super) fn is_sniffing(&self, id: u64) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| matches!(c.transport, Some(Transport::Sniffing(_))))
    }

    /// Looks at the first bytes of a sniffing connection: `Some(true)` once it
    /// is TLS or an admitted plaintext peer (read it now), `Some(false)` while
    /// too few bytes came to tell, `None` when it was closed.
    pub(super) fn sniff(&mut self, id: u64) -> Option<bool> {
        let c = self.conns.get_mut(&id)?;
        let Some(Transport::Sniffing(sock)) = &c.transport else {
            return Some(true);
        };
        let mut first = [0u8; 3];
        let n = match sock.peek(&mut first) {
            Ok(0) => {
                self.drop_conn(id, "peer closed".into());
                return None;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(false),
            Err(e) => {
                self.drop_conn(id, describe(&e));
                return None;
            }
        };
        let first = &first[..n];
        let could_be_tls = first[0] == 0x16 && first.get(1).is_none_or(|b| *b == 0x03);
        if n < 3 && could_be_tls {
            return Some(false);
        }
        let listen = self.config.tls.clone()?;
        let c = self.conns.get_mut(&id)?;
        let Some(Transport::Sniffing(sock)) = c.transport.take() else {
            return None;
        };
        if looks_like_tls(first) {
            // The handshake is bounded by --handshake-timeout from here.
            c.deadline = None;
            match Tls::server(sock, listen.config) {
                Ok(t) => c.transport = Some(Transport::Tls(Box::new(t))),
                Err(e) => {
                    self.drop_conn(id, describe(&e));
                    return None;
                }
            }
        } else if listen.plaintext_too {
            c.transport = Some(Transport::Tcp(sock));
            c.deadline = None;
            self.promote(id);
        } else {
            c.transport = Some(Transport::Tcp(sock));
            self.drop_conn(
                id,
                "peer spoke plaintext (this listener requires TLS)".into(),
            );
            return None;
        }
        Some(true)
    }

    /// The TLS handshake of `id` is over: with `--secret`, the proof starts
    /// (the connection stays in its handshake until it succeeds); without, the
    /// connection is up.
    pub(super) fn tls_done(&mut self, id: u64) {
        let Some(secret) = self.config.secret.clone() else {
            return self.promote(id);
        };
        let max_body = self.config.max_body;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.pake.is_some() {
            return;
        }
        let Some(Transport::Tls(t)) = c.transport.as_mut() else {
            return self.promote(id);
        };
        let Some(exporter) = t.exporter(EXPORTER_LABEL) else {
            return self.drop_conn(id, "cannot bind the --secret proof to TLS".into());
        };
        let (pake, first) = Pake::start(&secret, exporter, c.info.dir == Dir::Out, max_body);
        if let Err(e) = t.send_own(&first) {
            return self.drop_conn(id, describe(&e));
        }
        c.pake = Some(Box::new(pake));
        self.mark_dirty(id);
    }

    /// Decrypted bytes of a connection proving `--secret`: `Ok(Some(frames))`
    /// once the proof succeeded (the connection is up; these frames came after
    /// it), `Ok(None)` while it goes on, `Err` why the peer failed it.
    pub(super) fn pake_input(
        &mut self,
        id: u64,
        bytes: &[u8],
    ) -> Result<Option<Vec<Message>>, String> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(None);
        };
        let Some(pake) = c.pake.as_mut() else {
            return Ok(None);
        };
        let mut msgs = Vec::new();
        pake.decoder
            .feed(bytes, &mut msgs)
            .map_err(|e| e.to_string())?;
        let (mut used, mut sent) = (0, false);
        while used < msgs.len() && !pake.done() {
            if let Some(reply) = pake.on_frame(&msgs[used])? {
                if let Some(Transport::Tls(t)) = c.transport.as_mut() {
                    t.send_own(&reply).map_err(|e| describe(&e))?;
                }
                sent = true;
            }
            used += 1;
        }
        let done = pake.done();
        let rest = msgs.split_off(used);
        if sent {
            self.mark_dirty(id);
        }
        if !done {
            return Ok(None);
        }
        if let Some(c) = self.conns.get_mut(&id)
            && let Some(p) = c.pake.take()
        {
            c.decoder = p.decoder;
        }
        self.promote(id);
        Ok(Some(rest))
    }

    /// A sniffing connection that stayed silent: a plaintext peer waiting for us
    /// to speak first (a TLS client never waits).
    fn take_as_plaintext(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(Transport::Sniffing(sock)) = c.transport.take() {
            c.transport = Some(Transport::Tcp(sock));
        }
        c.deadline = None;
        self.promote(id);
        self.mark_dirty(id);
    }

    /// A connection past its handshake (or told plaintext) is up: counted open
    /// and reported connected, with what TLS agreed on.
    pub(super) fn promote(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.info.state != State::Handshaking {
            return;
        }
        c.info.state = State::Open;
        c.info.tls = c
            .transport
            .as_ref()
            .and_then(Transport::tls_info)
            .map(Box::new);
        let insecure = self.config.tls_dial.as_ref().is_some_and(|d| d.insecure);
        if c.info.dir == Dir::Out && c.info.tls.is_some() && insecure {
            self.pending.push_back(Pending::Notice(format!(
                "warning: {} {}: TLS certificate not verified (--tls-insecure): anyone on the path can read and change this connection",
                c.info.id, c.info.addr
            )));
        }
        if c.info.dir == Dir::In {
            self.handshaking_in -= 1;
        }
        c.deadline = None;
        self.open += 1;
        self.pending
            .push_back(Pending::Connected(c.info.clone(), self.open));
        if !c.out.is_empty() {
            self.mark_dirty(id);
        }
    }

    /// The next connection id (never reused in a run).
    pub(super) fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds connection `id`; its transport, if any, is already registered.
    pub(super) fn insert_conn(
        &mut self,
        id: u64,
        transport: Option<Transport>,
        addr: SocketAddr,
        dir: Dir,
        state: State,
        target: Option<String>,
    ) {
        self.conns.insert(
            id,
            Conn {
                transport,
                info: ConnInfo::new(ConnId(id), dir, addr, state, target),
                decoder: Decoder::new(self.config.max_body),
                out: OutQueue::default(),
                close_reason: None,
                dirty: false,
                deadline: None,
                drain_marks: SmallVec::new(),
                fallbacks: Vec::new(),
                above_high: false,
                first_frame_by: None,
                partial: 0,
                held: false,
                hold: false,
                dial_tls: None,
                pake: None,
                malformed: (0, 0),
                run: None,
            },
        );
    }

    /// Opens the socket of dial `id` to `sa` and registers it; the connect then
    /// completes (or fails) when the socket turns writable.
    pub(super) fn start_connect(&mut self, id: u64, sa: SocketAddr) {
        // A socket that cannot even be made (no descriptors left) is not a
        // resolution failure: say which step failed.
        let mut transport = match TcpStream::connect(sa) {
            Ok(s) => Transport::Tcp(s),
            Err(e) => return self.connect_failed(id, describe(&e)),
        };
        if let Err(e) = self.poll.registry().register(
            &mut transport,
            Token(id as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail_connect(id, format!("cannot register socket: {}", describe(&e)));
        }
        match self.conns.get_mut(&id) {
            Some(c) => {
                c.info.addr = sa;
                c.transport = Some(transport);
            }
            None => {
                let _ = self.poll.registry().deregister(&mut transport);
            }
        }
    }

    /// A connect attempt of dial `id` failed: try its next address if it has one,
    /// else report the dial failed with `reason`.
    pub(super) fn connect_failed(&mut self, id: u64, reason: String) {
        let next = self.conns.get_mut(&id).and_then(|c| {
            let next = c.fallbacks.pop()?;
            if let Some(mut old) = c.transport.take() {
                let _ = self.poll.registry().deregister(&mut old);
            }
            Some(next)
        });
        match next {
            Some(sa) => self.start_connect(id, sa),
            None => self.fail_connect(id, reason),
        }
    }

    pub(super) fn fail_connect(&mut self, id: u64, reason: String) {
        if let Some(mut c) = self.conns.remove(&id) {
            if let Some(s) = c.transport.as_mut() {
                let _ = self.poll.registry().deregister(s);
            }
            self.forget(&c);
            self.pending
                .push_back(Pending::ConnectFailed(c.info, reason));
        }
    }

    /// Removes a connection now and reports it closed.
    pub(super) fn drop_conn(&mut self, id: u64, reason: String) {
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(s) = c.transport.as_mut() {
            // TLS: what is buffered (a --secret proof's last frame, so the peer
            // learns why) goes out with close_notify.
            s.close();
            let _ = self.poll.registry().deregister(s);
        }
        self.forget(&c);
        if let Some(r) = c.run.take()
            && r.more > 0
        {
            self.pending
                .push_back(Pending::Notice(more_like_this(r.more, id)));
        }
        // Never reported up (a dial, or a transport still in its handshake):
        // a dial failed; an accepted peer is closed; nothing was counted open.
        match (c.info.state, c.info.dir) {
            (State::Connecting, _) | (State::Handshaking, Dir::Out) => {
                self.pending
                    .push_back(Pending::ConnectFailed(c.info, reason));
                return;
            }
            (State::Handshaking, Dir::In) => {
                self.handshaking_in -= 1;
                self.pending
                    .push_back(Pending::Closed(c.info, reason, self.open));
                return;
            }
            _ => {}
        }
        self.open = self.open.saturating_sub(1);
        // A descriptor came free: a paused accept may succeed now.
        if self.accept_paused_until.is_some() {
            self.accept_paused_until = Some(Instant::now());
        }
        self.pending
            .push_back(Pending::Closed(c.info, reason, self.open));
    }

    pub(super) fn flush(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.info.state == State::Connecting {
            return;
        }
        let Some(transport) = c.transport.as_mut() else {
            return;
        };
        let before = c.out.len;
        let app_ready = c.info.state != State::Handshaking;
        match transport.write_from(&mut c.out, WRITE_BUDGET, &mut c.info.bytes_out, app_ready) {
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
        let mut gate_lowered = false;
        if c.out.len < before {
            let now = Instant::now();
            c.info.last_sent = now;
            c.info.unsent_since = (!c.out.is_empty()).then_some(now);
            if c.above_high && c.out.len <= self.config.max_queue / 2 {
                c.above_high = false;
                gate_lowered = true;
            }
        }
        if !c.drain_marks.is_empty() {
            let (len, waiting) = (c.out.len, c.drain_marks.len());
            c.drain_marks.retain(|mark| *mark < len);
            for _ in c.drain_marks.len()..waiting {
                self.pending.push_back(Pending::Drained(ConnId(id)));
            }
        }
        if gate_lowered {
            self.lower_gate();
        }
    }

    pub(super) fn enqueue(
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
        if !c.out.is_empty() && c.info.unsent_since.is_none() {
            c.info.unsent_since = Some(Instant::now());
        }
        if !c.above_high && c.out.len > max / 4 * 3 {
            c.above_high = true;
            self.over_high += 1;
        }
        c.info.msgs_out += 1;
        if c.info.state != State::Connecting && !c.dirty {
            c.dirty = true;
            self.dirty.push(id.0);
        }
        Ok(())
    }

    /// Queues `id` for writing this turn, once.
    pub(super) fn mark_dirty(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// True while local input must wait for the network: some connection's
    /// queue went over three quarters of `--max-queue` and has not drained to half.
    pub(super) fn input_gated(&self) -> bool {
        self.over_high > 0
    }

    /// One connection left the gate; the last one out lets commands flow again
    /// (they may be waiting in the channel, so wake the loop to take them).
    fn lower_gate(&mut self) {
        self.over_high -= 1;
        if self.over_high == 0 {
            let _ = self.waker.wake();
        }
    }

    /// A notice about connection `id`, coalesced: the first of a kind is shown;
    /// more of the same kind within a second are counted and summed up in one
    /// line (`… and 41 more like this from #7`) when the second is over or the
    /// connection closes. So a peer flooding bad frames costs a few lines.
    pub(super) fn notice_from(&mut self, id: u64, kind: &'static str, text: String) {
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(&id) else {
            self.pending.push_back(Pending::Notice(text));
            return;
        };
        if let Some(r) = &mut c.run
            && r.kind == kind
            && now.duration_since(r.started) < NOTICE_WINDOW
        {
            r.more += 1;
            if r.more == 1 {
                self.runs_open += 1;
                self.housekeeping_stale = true;
            }
            return;
        }
        self.end_run(id);
        if let Some(c) = self.conns.get_mut(&id) {
            c.run = Some(Box::new(NoticeRun {
                kind,
                started: now,
                more: 0,
            }));
        }
        self.pending.push_back(Pending::Notice(text));
    }

    /// Ends connection `id`'s run of coalesced notices, summing it up.
    fn end_run(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(r) = c.run.take()
            && r.more > 0
        {
            self.runs_open -= 1;
            self.pending
                .push_back(Pending::Notice(more_like_this(r.more, id)));
        }
    }

    /// A malformed frame from `id`, with a notice (coalesced); more than
    /// [`MALFORMED_IN_ROW`] in a row (no good frame between) close it.
    pub(super) fn malformed(&mut self, id: u64, kind: &'static str, text: String) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let (row, at) = c.malformed;
        let row = if at + 1 == c.info.msgs_in { row + 1 } else { 1 };
        c.malformed = (row, c.info.msgs_in);
        self.notice_from(id, kind, text);
        if row > MALFORMED_IN_ROW {
            self.drop_conn(
                id,
                format!("{row} malformed frames in a row (last: {kind})"),
            );
        }
    }

    /// Releases what a removed connection held in the loop's shared accounts.
    fn forget(&mut self, c: &Conn) {
        if c.run.as_ref().is_some_and(|r| r.more > 0) {
            self.runs_open -= 1;
        }
        if c.above_high {
            self.lower_gate();
        }
        self.pending_bodies -= c.partial;
        if c.info.dir == Dir::In
            && let Some(n) = self.per_ip.get_mut(&c.info.addr.ip())
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&c.info.addr.ip());
            }
        }
    }

    /// Refuses connection N+1 from one address: one notice per burst (the first
    /// refusal after a second without any), so a flood from one host is one line.
    fn refuse_per_ip(&mut self, addr: SocketAddr, max: usize) {
        let now = Instant::now();
        if self.refused_at.len() >= 4096 {
            self.refused_at
                .retain(|_, t| now.duration_since(*t) < Duration::from_secs(1));
        }
        let quiet = self
            .refused_at
            .insert(addr.ip(), now)
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
        if !quiet {
            self.pending.push_back(Pending::Notice(format!(
                "refused {}: too many connections from this address (max {max}); \
                 more from it are closed quietly for now",
                addr.ip()
            )));
        }
    }

    /// Accounts for the unfinished-frame bytes `id` holds now; over
    /// `--max-pending-bodies`, closes the connection holding the most.
    pub(super) fn account_partial(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let now = c.decoder.buffered();
        self.pending_bodies = self.pending_bodies - c.partial + now;
        c.partial = now;
        while self.pending_bodies > self.config.max_pending_bodies {
            let Some((&big, c)) = self.conns.iter().max_by_key(|(_, c)| c.partial) else {
                break;
            };
            let why = format!(
                "partial frames over --max-pending-bodies ({} bytes held by all, {} by this one; limit {})",
                self.pending_bodies, c.partial, self.config.max_pending_bodies
            );
            self.drop_conn(big, why);
        }
    }
}
