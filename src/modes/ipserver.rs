//! `sockmod ipserver`: collect `ID:NAME;Port:PORT` reports, multicast the roster.
//!
//! The roster frame is encoded once when the roster changes and shared by every
//! recipient (`Context::send_frame`), so a round costs one queue append per peer.

use super::session::{Core, Mode, PeerNames};
use crate::command::{Command, quoted};
use crate::filer::roster::{self, Entry, check_id};
use crate::net::{ConnId, ConnInfo, Context, TimerId};
use crate::protocol::{Header, Message, encode};
use crate::render::{Renderer, format_table, short_duration};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a connection last reported.
#[derive(Debug, Clone)]
struct Report {
    entry: Entry,
    /// The fingerprint of the key its TLS connection showed: a keyed report
    /// holds its name against any other key and any plaintext report.
    key: Option<String>,
    last: Instant,
    /// Not reported within `--alive`: out of the roster until it reports again.
    stale: bool,
}

/// The `ipserver` mode.
pub struct Ipserver {
    /// Each reporting connection's ID, as it last reported it (targets, and the
    /// name shown in its events).
    names: PeerNames,
    interval: Duration,
    alive: Duration,
    reports: BTreeMap<ConnId, Report>,
    /// The roster as last announced, by ID (online/offline events are its changes).
    shown: HashMap<String, Entry>,
    /// The encoded roster frame; `None` when the roster changed since it was built.
    frame: Option<Arc<[u8]>>,
    /// The encoded keys frame (`TP:Keys`, each keyed name's fingerprint) for
    /// the peers that connected with a key; rebuilt with `frame`.
    keys_frame: Option<Arc<[u8]>>,
    /// Recipients of the current round (reused between rounds).
    live: Vec<ConnId>,
    /// When the next round is due (rounds keep a fixed cadence, no drift).
    next_round: Instant,
    /// Roster rounds sent so far.
    rounds: u64,
    /// How long the last round took to build and queue the frame for everyone.
    last_round: Duration,
    /// How long the last round took until its frames were written to the sockets.
    last_round_flushed: Duration,
    round_started: Option<Instant>,
    /// The last notice given per connection, so a peer repeating a bad report
    /// every interval is mentioned once, not every time.
    noted: HashMap<ConnId, String>,
    /// The timer of the next roster round.
    round_timer: Option<TimerId>,
}

impl Ipserver {
    /// An ipserver multicasting every `interval` to peers that reported within `alive`.
    pub fn new(interval: Duration, alive: Duration) -> Self {
        Ipserver {
            names: PeerNames::default(),
            interval,
            alive,
            reports: BTreeMap::new(),
            shown: HashMap::new(),
            frame: None,
            keys_frame: None,
            live: Vec::new(),
            // Set when the node starts.
            next_round: Instant::now(),
            round_timer: None,
            rounds: 0,
            last_round: Duration::ZERO,
            last_round_flushed: Duration::ZERO,
            round_started: None,
            noted: HashMap::new(),
        }
    }

    /// A notice about `conn`, unless it is the same as the last one about it.
    fn note_once(&mut self, out: &mut Renderer, conn: ConnId, text: String) {
        if self.noted.get(&conn) != Some(&text) {
            out.notice(&text);
            self.noted.insert(conn, text);
        }
    }

    /// The connection whose report stands for `id` in the roster: the earliest
    /// live one that showed a key, else the earliest live one, so a second peer
    /// claiming a taken name cannot make it flap, a second key never takes it,
    /// and a plaintext squatter loses it when the keyed owner reports.
    fn holder(&self, id: &str) -> Option<(ConnId, &Entry)> {
        self.holder_report(id).map(|(c, r)| (c, &r.entry))
    }

    fn holder_report(&self, id: &str) -> Option<(ConnId, &Report)> {
        let mut live = self
            .reports
            .iter()
            .filter(|(_, r)| !r.stale && r.entry.id == id);
        let first = live.clone().next();
        live.find(|(_, r)| r.key.is_some())
            .or(first)
            .map(|(c, r)| (*c, r))
    }

    /// Brings the announced roster up to date for `id`, with an online or offline
    /// event when it changed.
    fn sync_id(&mut self, out: &mut Renderer, id: &str) {
        let now = self.holder(id).map(|(_, e)| e.clone());
        match (self.shown.get(id), now) {
            (Some(a), Some(b)) if *a == b => {}
            (_, Some(b)) => {
                out.peer_online(&b.id, &b.ip.to_string(), b.port);
                self.shown.insert(b.id.clone(), b);
                self.frame = None;
            }
            (Some(_), None) => {
                out.peer_offline(id);
                self.shown.remove(id);
                self.frame = None;
            }
            (None, None) => {}
        }
        // The holder (and its key) may have changed with the entry unchanged.
        self.keys_frame = None;
    }

    /// Checks a report; `Err` is why it is ignored.
    fn parse_report(msg: &Message, ip: std::net::IpAddr) -> Result<Entry, String> {
        let id = msg.header.get("ID").ok_or("no ID")?;
        check_id(id)?;
        let port = msg.header.get("Port").ok_or("no Port")?;
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("Port {} is not a port number", roster::shown(port))),
        };
        Ok(Entry {
            id: id.to_string(),
            ip,
            port,
        })
    }

    fn report(&mut self, out: &mut Renderer, ctx: &mut Context<'_>, conn: ConnId, msg: &Message) {
        let Some(info) = ctx.info(conn) else { return };
        let addr = info.addr;
        // A peer reached through an IPv6 socket shows as ::ffff:a.b.c.d; give
        // peers the plain IPv4 address they can dial.
        let entry = match Self::parse_report(msg, addr.ip().to_canonical()) {
            Ok(e) => e,
            Err(e) => {
                // The same bad report repeated every interval is said once and
                // kept; a stream of different bad frames is malformed input.
                let text = format!("ignored report from {conn} {addr}: {e}");
                if self.noted.get(&conn) != Some(&text) {
                    self.noted.insert(conn, text.clone());
                    ctx.malformed(conn, "report", text);
                }
                return;
            }
        };
        let now = Instant::now();
        let id = entry.id.clone();
        let old = self.reports.insert(
            conn,
            Report {
                entry,
                key: info.tls.as_ref().and_then(|t| t.peer_fingerprint.clone()),
                last: now,
                stale: false,
            },
        );
        if let Some((holder, e)) = self.holder(&id)
            && holder != conn
        {
            let text = format!(
                "report from {conn} {addr}: the name {id:?} is taken by {holder} {}:{}; \
                 left out of the roster while that one stays",
                e.ip, e.port
            );
            self.note_once(out, conn, text);
        } else {
            self.noted.remove(&conn);
        }
        let unchanged = old.as_ref().is_some_and(|r| {
            !r.stale && self.reports.get(&conn).is_some_and(|n| n.entry == r.entry)
        });
        if unchanged {
            return;
        }
        if let Some(r) = old
            && r.entry.id != id
        {
            self.sync_id(out, &r.entry.id);
        }
        self.sync_id(out, &id);
        self.names.insert(conn, id);
    }

    /// Marks peers silent for longer than `alive` as stale (out of the roster).
    fn expire(&mut self, out: &mut Renderer, now: Instant) {
        let expired: Vec<ConnId> = self
            .reports
            .iter()
            .filter(|(_, r)| !r.stale && now.duration_since(r.last) > self.alive)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            let Some(r) = self.reports.get_mut(&c) else {
                continue;
            };
            r.stale = true;
            let id = r.entry.id.clone();
            self.sync_id(out, &id);
        }
    }

    /// The roster frame, rebuilt only when the roster changed: one entry per ID
    /// (its holder's), in the order the peers connected.
    fn roster_frame(&mut self, out: &mut Renderer) -> Option<Arc<[u8]>> {
        if let Some(f) = &self.frame {
            return Some(f.clone());
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.shown.len());
        let entries = self
            .reports
            .values()
            .filter(|r| !r.stale && seen.insert(&r.entry.id))
            // The name's holder's entry (a keyed report displaces a plaintext
            // one), in the order the names first reported.
            .filter_map(|r| self.shown.get(&r.entry.id));
        let body = roster::format(entries);
        let header = Header::new().with("Broadcast", "");
        match encode(&header, body.as_bytes()) {
            Ok(f) => {
                let f: Arc<[u8]> = f.into();
                self.frame = Some(f.clone());
                Some(f)
            }
            Err(e) => {
                out.notice(&format!("cannot send the roster: {e}"));
                None
            }
        }
    }

    /// Sends the roster to every connection that reported within `alive`.
    fn roster_round(&mut self, out: &mut Renderer, ctx: &mut Context<'_>) {
        let start = Instant::now();
        self.expire(out, start);
        let mut live = std::mem::take(&mut self.live);
        live.clear();
        live.extend(
            self.reports
                .iter()
                .filter(|(_, r)| !r.stale)
                .map(|(c, _)| *c),
        );
        if !live.is_empty()
            && let Some(frame) = self.roster_frame(out)
        {
            let keys = self.keys_frame();
            for &id in &live {
                // A failure here (the peer is closing, or was dropped as a slow
                // consumer) is reported by its closed event.
                let _ = ctx.send_frame(id, &frame);
                // Peers that showed a key (sockmod filers) also learn the keys,
                // in a frame original peers never see.
                if let Some(k) = &keys
                    && self.reports.get(&id).is_some_and(|r| r.key.is_some())
                {
                    let _ = ctx.send_frame(id, k);
                }
            }
            self.rounds += 1;
            self.last_round = start.elapsed();
            self.round_started = Some(start);
        }
        self.live = live;
    }

    /// The keys frame: `TP:Keys` with a body of `NAME,FINGERPRINT` pairs joined
    /// by `;`, for each roster name whose holder showed a key (see
    /// docs/PROTOCOL.md §4.3).
    fn keys_frame(&mut self) -> Option<Arc<[u8]>> {
        if let Some(f) = &self.keys_frame {
            return Some(f.clone());
        }
        let mut body = String::new();
        for id in self.shown.keys() {
            if let Some((_, r)) = self.holder_report(id)
                && let Some(k) = &r.key
            {
                if !body.is_empty() {
                    body.push(';');
                }
                body.push_str(&format!("{id},{k}"));
            }
        }
        let header = Header::new().with("TP", "Keys");
        let f: Arc<[u8]> = encode(&header, body.as_bytes()).ok()?.into();
        self.keys_frame = Some(f.clone());
        Some(f)
    }

    fn peers_table(&self) -> String {
        let now = Instant::now();
        let mut t = if self.reports.is_empty() {
            "no peers have reported".to_string()
        } else {
            let mut rows = vec![[
                "id".to_string(),
                "address".into(),
                "conn".into(),
                "last report".into(),
            ]];
            for (c, r) in &self.reports {
                let mut last = format!("{} ago", short_duration(now.duration_since(r.last)));
                if r.stale {
                    last.push_str(" (stale)");
                }
                rows.push([
                    r.entry.id.clone(),
                    format!("{}:{}", r.entry.ip, r.entry.port),
                    c.to_string(),
                    last,
                ]);
            }
            format_table(&rows)
        };
        t.push_str(&format!(
            "\nroster rounds: {}, last took {} µs to queue, {} µs to write",
            self.rounds,
            self.last_round.as_micros(),
            self.last_round_flushed.as_micros()
        ));
        t
    }

    fn peers_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let peers: Vec<serde_json::Value> = self
            .reports
            .iter()
            .map(|(c, r)| {
                serde_json::json!({
                    "id": r.entry.id,
                    "ip": r.entry.ip.to_string(),
                    "port": r.entry.port,
                    "peer": c.0,
                    "last_report_ms": now.duration_since(r.last).as_millis() as u64,
                    "stale": r.stale,
                })
            })
            .collect();
        serde_json::json!({
            "event": "peers",
            "peers": peers,
            "rounds": self.rounds,
            "last_round_us": self.last_round.as_micros() as u64,
            "last_round_write_us": self.last_round_flushed.as_micros() as u64,
        })
    }
}

impl Mode for Ipserver {
    const NAME: &'static str = "ipserver";

    fn names(&self) -> Option<&PeerNames> {
        Some(&self.names)
    }

    fn names_mut(&mut self) -> Option<&mut PeerNames> {
        Some(&mut self.names)
    }

    fn no_peer_named(name: &str) -> String {
        format!("no connection from a peer named {}", quoted(name))
    }

    fn on_start(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        core.listening(ctx);
        self.next_round = Instant::now() + self.interval;
        self.round_timer = Some(ctx.set_timer(self.interval));
    }

    fn on_closed(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        reason: &str,
        alive: usize,
    ) {
        self.noted.remove(&info.id);
        if let Some(r) = self.reports.remove(&info.id) {
            // Leaves the roster at once; a peer waiting for the name takes it.
            self.sync_id(&mut core.out, &r.entry.id);
        }
        core.closed(ctx, self, info, reason, alive);
    }

    fn on_message(&mut self, core: &mut Core, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        if msg.header.is_check() {
            // A probe, or a filer's identity frame: nothing to show.
            return;
        }
        if msg.header.contains("ID") || msg.header.contains("Port") {
            self.report(&mut core.out, ctx, conn, &msg);
            return;
        }
        core.show_message(ctx, &*self, conn, &msg);
    }

    fn on_timer(&mut self, core: &mut Core, ctx: &mut Context<'_>, timer: TimerId) {
        if self.round_timer == Some(timer) {
            self.roster_round(&mut core.out, ctx);
            let now = Instant::now();
            self.next_round += self.interval;
            if self.next_round <= now {
                // Fell behind (a stalled machine): start the cadence afresh.
                self.next_round = now + self.interval;
            }
            self.round_timer = Some(ctx.set_timer(self.next_round - now));
        }
    }

    fn run(&mut self, core: &mut Core, ctx: &mut Context<'_>, cmd: Command) -> Result<(), String> {
        if cmd == Command::Peers {
            if core.out.is_json() {
                let v = self.peers_json();
                core.out.print_json(&v);
            } else {
                let t = self.peers_table();
                core.out.print(&t);
            }
            Ok(())
        } else {
            core.run_common(ctx, &*self, cmd)
        }
    }

    fn on_idle(&mut self, _core: &mut Core, _ctx: &mut Context<'_>) {
        // The loop writes queued frames before it idles: the round is on the wire
        // (or in the kernel's buffers) by now (the renderer is flushed next).
        if let Some(t) = self.round_started.take() {
            self.last_round_flushed = t.elapsed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn msg(pairs: &[(&str, &str)]) -> Message {
        let mut h = Header::new();
        for (k, v) in pairs {
            h.set(*k, *v);
        }
        Message::new(h, Vec::new())
    }

    #[test]
    fn reports_are_checked() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let ok = Ipserver::parse_report(&msg(&[("ID", "x"), ("Port", "40000")]), ip).unwrap();
        assert_eq!((ok.id.as_str(), ok.port), ("x", 40000));
        for (bad, why) in [
            (&[("Port", "1")][..], "no ID"),
            (&[("ID", "x")][..], "no Port"),
            (&[("ID", "x"), ("Port", "http")][..], "not a port"),
            (&[("ID", "x"), ("Port", "70000")][..], "not a port"),
            (&[("ID", "x"), ("Port", "0")][..], "not a port"),
            (&[("ID", "a,b"), ("Port", "1")][..], "contains"),
            (&[("ID", ""), ("Port", "1")][..], "empty"),
        ] {
            let e = Ipserver::parse_report(&msg(bad), ip).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
