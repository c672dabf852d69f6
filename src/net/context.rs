//! What handler callbacks use to act on the node: send, broadcast, multicast,
//! close, dial, timers, and read-only views of the connection table.

use super::addr::{TLS_SCHEME, has_port};
use super::config::Config;
use super::conn::{ConnId, ConnInfo, Dir, State};
use super::core::{Core, Pending};
use super::error::{SendError, SendResult, describe};
use super::tls::server_name;
use crate::protocol::{EncodeError, Header, encode_header_into, encode_into};
use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A timer set with [`Context::set_timer`], as handed back to
/// [`Handler::on_timer`](super::Handler::on_timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub(super) u64);

/// A broadcast frame up to this size is copied into each queue (cheaper than a
/// shared chunk for tiny frames); a larger one is shared, so a broadcast to many
/// connections costs one copy of the frame, not one per connection.
const SHARE_ABOVE: usize = 256;
/// How long `stop` waits for queues to drain.
const STOP_FLUSH: Duration = Duration::from_secs(2);
/// How long a graceful close waits for its queue to drain.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// What handler callbacks use to act on the node.
pub struct Context<'a> {
    pub(super) core: &'a mut Core,
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

    /// Gives dial `conn` (connect and TLS handshake) at most `within` from now,
    /// instead of the configured connect timeout: for a dial that has a fallback
    /// (a TLS attempt to a peer that may only speak plaintext).
    pub fn limit_dial(&mut self, conn: ConnId, within: Duration) {
        if let Some(c) = self.core.conns.get_mut(&conn.0)
            && matches!(c.info.state, State::Connecting | State::Handshaking)
        {
            c.deadline = Instant::now().checked_add(within);
            self.core.housekeeping_stale = true;
        }
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
    /// arrives as `on_connected` or `on_connect_failed` (within the connect timeout,
    /// a TLS handshake included); frames sent to the id meanwhile wait in its queue.
    ///
    /// `tls://HOST:PORT`, or any target when the node dials everything with TLS
    /// (`Config::tls_dial`), is wrapped in TLS and verified as configured (the
    /// system's roots by default).
    pub fn dial(&mut self, addr: &str) -> ConnId {
        let (tls, plain) = match addr.strip_prefix(TLS_SCHEME) {
            Some(rest) => (true, rest),
            None => (
                self.core.config.tls_dial.as_ref().is_some_and(|d| d.all),
                addr,
            ),
        };
        if !tls {
            return self.dial_with(plain, addr, None);
        }
        let cfg = match self.core.client_config() {
            Ok(c) => c,
            Err(e) => {
                let id = self.dial_with(plain, addr, None);
                self.core.fail_connect(id.0, e);
                return id;
            }
        };
        self.dial_tls(addr, cfg)
    }

    /// Dials `addr` (`HOST:PORT`, or `tls://HOST:PORT`) with TLS as `cfg` says
    /// (a filer dialling a peer whose key it knows).
    pub fn dial_tls(&mut self, addr: &str, cfg: Arc<rustls::ClientConfig>) -> ConnId {
        let plain = addr.strip_prefix(TLS_SCHEME).unwrap_or(addr);
        match server_name(plain) {
            Ok(name) => self.dial_with(plain, addr, Some((cfg, name))),
            Err(e) => {
                let id = self.dial_with(plain, addr, None);
                self.core.fail_connect(id.0, e);
                id
            }
        }
    }

    /// Starts a dial of `addr`, shown as `shown_target`, wrapped in TLS when asked.
    fn dial_with(
        &mut self,
        addr: &str,
        shown_target: &str,
        tls: Option<(
            Arc<rustls::ClientConfig>,
            rustls::pki_types::ServerName<'static>,
        )>,
    ) -> ConnId {
        let core = &mut *self.core;
        let literal = addr.parse::<SocketAddr>().ok();
        // Until a name is looked up, the address shown is the unspecified one.
        let placeholder = SocketAddr::from(([0, 0, 0, 0], 0));
        let id = core.new_id();
        let (dir, state) = (Dir::Out, State::Connecting);
        let shown = literal.unwrap_or(placeholder);
        core.insert_conn(id, None, shown, dir, state, Some(shown_target.to_string()));
        if let Some(c) = core.conns.get_mut(&id) {
            c.deadline = Instant::now().checked_add(core.config.connect_timeout);
            c.dial_tls = tls.map(Box::new);
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

    /// Calls `on_timer` with the returned id after `after` (never, if that is
    /// beyond what the clock can represent). Ids are unique in a node's life, so
    /// each owner (a mode, its transfers) keeps the ids it set and recognises
    /// its own: no shared numbering to keep apart.
    pub fn set_timer(&mut self, after: Duration) -> TimerId {
        self.core.timer_seq += 1;
        let seq = self.core.timer_seq;
        if let Some(at) = Instant::now().checked_add(after) {
            self.core.timers.push(Reverse((at, seq)));
        }
        TimerId(seq)
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

    /// While paused, nothing is read from any peer (their kernel buffers fill and
    /// TCP slows them down); timers, writes, accepts and commands go on. For a
    /// handler whose own output is backed up (a paused stdout): nothing is
    /// dropped and memory stays bounded.
    pub fn pause_reads(&mut self, paused: bool) {
        let core = &mut *self.core;
        if core.reads_paused == paused {
            return;
        }
        core.reads_paused = paused;
        if !paused {
            for id in std::mem::take(&mut core.held_reads) {
                if let Some(c) = core.conns.get_mut(&id) {
                    if c.hold {
                        // Still held on its own ([`Context::hold_reads`]).
                        core.held_reads.push(id);
                        continue;
                    }
                    c.held = false;
                    core.more_read.push_back(id);
                }
            }
        }
    }

    /// As [`Context::pause_reads`] for `conn` alone: while held, nothing is
    /// read from it (a consumer of its data, such as a disk writer, is
    /// behind); other connections go on.
    pub fn hold_reads(&mut self, conn: ConnId, hold: bool) {
        let core = &mut *self.core;
        let Some(c) = core.conns.get_mut(&conn.0) else {
            return;
        };
        if c.hold == hold {
            return;
        }
        c.hold = hold;
        if !hold && c.held && !core.reads_paused {
            c.held = false;
            core.held_reads.retain(|&id| id != conn.0);
            core.more_read.push_back(conn.0);
        }
    }

    /// Wakes the loop from another thread (a worker with news): it runs one
    /// more turn, with its `on_idle`.
    pub fn waker(&self) -> Arc<mio::Waker> {
        self.core.waker.clone()
    }

    /// True while reads are paused ([`Context::pause_reads`]).
    pub fn reads_paused(&self) -> bool {
        self.core.reads_paused
    }

    /// Calls `on_drained(conn)` once its queue holds at most `mark` bytes. Several
    /// marks may wait at once (one call each); asking again for a mark already
    /// waiting adds nothing.
    pub fn notify_drained(&mut self, conn: ConnId, mark: usize) {
        if let Some(c) = self.core.conns.get_mut(&conn.0) {
            if !c.drain_marks.contains(&mark) {
                c.drain_marks.push(mark);
            }
            // Already at the mark: the next turn's flush reports it, not this
            // dispatch. A handler that asks again from `on_drained` would
            // otherwise be called back forever without the loop ever polling
            // (nothing read, no timer fired): a peer's answer went unread for
            // 2 s until the filer's fallback gave up spinning.
            if c.out.len <= mark && c.info.state != State::Connecting {
                self.core.mark_dirty(conn.0);
            }
        }
    }

    /// Reports a notice about `conn` through the handler's `on_notice`,
    /// coalesced: repeats of the same `kind` within a second become one
    /// `… and N more like this from #7` line.
    pub fn notice_from(&mut self, conn: ConnId, kind: &'static str, text: impl Into<String>) {
        self.core.notice_from(conn.0, kind, text.into());
    }

    /// A frame from `conn` that the handler cannot use (a bad report, file
    /// frame, identity): a coalesced notice as [`Context::notice_from`], and the
    /// connection is closed when it sends more than a handful of them in a row.
    pub fn malformed(&mut self, conn: ConnId, kind: &'static str, text: impl Into<String>) {
        self.core.malformed(conn.0, kind, text.into());
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
