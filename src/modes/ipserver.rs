//! `sockmod ipserver`: collect `ID:NAME;Port:PORT` reports, multicast the roster.

use super::session::{Input, Session, format_table, short_duration};
use crate::command::Command;
use crate::filer::roster::{self, Entry, check_id};
use crate::net::{ConnId, ConnInfo, Context, Handler};
use crate::protocol::{Header, Message};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ROSTER_TIMER: u64 = 1;

/// What a connection last reported.
#[derive(Debug, Clone)]
struct Report {
    entry: Entry,
    last: Instant,
}

/// The `ipserver` handler.
pub struct Ipserver {
    /// Shared state.
    pub s: Session,
    interval: Duration,
    alive: Duration,
    reports: BTreeMap<ConnId, Report>,
    /// How long the last roster round took to encode and queue (for `peers`).
    pub last_round: Duration,
}

impl Ipserver {
    /// An ipserver multicasting every `interval` to peers that reported within `alive`.
    pub fn new(s: Session, interval: Duration, alive: Duration) -> Self {
        Ipserver {
            s,
            interval,
            alive,
            reports: BTreeMap::new(),
            last_round: Duration::ZERO,
        }
    }

    fn report(&mut self, ctx: &mut Context<'_>, conn: ConnId, msg: &Message) {
        let Some(info) = ctx.info(conn) else { return };
        let addr = info.addr;
        let id = msg.header.get("ID").unwrap_or_default();
        if let Err(e) = check_id(id) {
            self.s
                .out
                .notice(&format!("ignored report from {conn} {addr}: {e}"));
            return;
        }
        let port = match msg.header.get("Port").map(|p| p.parse::<u16>()) {
            Some(Ok(p)) => p,
            Some(Err(_)) => {
                self.s.out.notice(&format!(
                    "ignored report from {conn} {addr}: Port {:?} is not a port number",
                    msg.header.get("Port").unwrap_or_default()
                ));
                return;
            }
            None => {
                self.s
                    .out
                    .notice(&format!("ignored report from {conn} {addr}: no Port"));
                return;
            }
        };
        let entry = Entry {
            id: id.to_string(),
            ip: addr.ip(),
            port,
        };
        let now = Instant::now();
        let changed = match self.reports.get(&conn) {
            Some(r) => r.entry != entry || now.duration_since(r.last) > self.alive,
            None => true,
        };
        if changed {
            self.s
                .out
                .peer_online(&entry.id, &entry.ip.to_string(), entry.port);
        }
        self.s.names.insert(conn, entry.id.clone());
        self.reports.insert(conn, Report { entry, last: now });
    }

    /// Sends the roster to every connection that reported within `alive`.
    fn roster_round(&mut self, ctx: &mut Context<'_>) {
        let start = Instant::now();
        let live: Vec<(&ConnId, &Report)> = self
            .reports
            .iter()
            .filter(|(_, r)| start.duration_since(r.last) <= self.alive)
            .collect();
        if live.is_empty() {
            return;
        }
        let entries: Vec<Entry> = live.iter().map(|(_, r)| r.entry.clone()).collect();
        let ids: Vec<ConnId> = live.iter().map(|(c, _)| **c).collect();
        let body = roster::format(&entries);
        let header = Header::new().with("Broadcast", "");
        if let Err(e) = ctx.multicast(&ids, &header, body.as_bytes()) {
            self.s.out.notice(&format!("cannot send the roster: {e}"));
        }
        self.last_round = start.elapsed();
    }

    fn peers_table(&self) -> String {
        if self.reports.is_empty() {
            return "no peers have reported".into();
        }
        let now = Instant::now();
        let mut rows = vec![[
            "id".to_string(),
            "address".into(),
            "conn".into(),
            "last report".into(),
        ]];
        for (c, r) in &self.reports {
            rows.push([
                r.entry.id.clone(),
                format!("{}:{}", r.entry.ip, r.entry.port),
                c.to_string(),
                format!("{} ago", short_duration(now.duration_since(r.last))),
            ]);
        }
        let mut t = format_table(&rows);
        t.push_str(&format!(
            "\nlast roster round: {} µs",
            self.last_round.as_micros()
        ));
        t
    }
}

impl Handler for Ipserver {
    type Command = Input;

    fn on_start(&mut self, ctx: &mut Context<'_>) {
        if let Some(a) = ctx.local_addr() {
            self.s.out.listening(&a.to_string());
        }
        ctx.set_timer(self.interval, ROSTER_TIMER);
    }

    fn on_connected(&mut self, ctx: &mut Context<'_>, info: &ConnInfo) {
        self.s.on_connected(ctx, info);
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str) {
        self.s.on_connect_failed(ctx, info, reason);
    }

    fn on_closed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str, alive: usize) {
        if let Some(r) = self.reports.remove(&info.id) {
            self.s.out.peer_offline(&r.entry.id);
        }
        self.s.on_closed(ctx, info, reason, alive);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        if msg.header.contains("ID") || msg.header.contains("Port") {
            if !msg.header.is_check() {
                self.report(ctx, conn, &msg);
            }
            return;
        }
        self.s.show_message(ctx, conn, &msg);
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, token: u64) {
        if token == ROSTER_TIMER {
            self.roster_round(ctx);
            ctx.set_timer(self.interval, ROSTER_TIMER);
        }
    }

    fn on_command(&mut self, ctx: &mut Context<'_>, input: Input) {
        match input {
            Input::Line(l) => {
                let Some(cmd) = self.s.parse_line(&l) else {
                    return;
                };
                if cmd == Command::Peers {
                    let t = self.peers_table();
                    self.s.out.print(&t);
                } else {
                    let r = self.s.run_common(ctx, cmd);
                    self.s.report(r);
                }
            }
            Input::Eof => {}
            Input::Signal => ctx.stop(),
        }
    }

    fn on_notice(&mut self, _ctx: &mut Context<'_>, notice: &str) {
        self.s.out.notice(notice);
    }

    fn on_idle(&mut self, _ctx: &mut Context<'_>) {
        self.s.out.flush();
    }
}
