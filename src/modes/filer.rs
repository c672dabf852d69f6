//! `sockmod filer --id NAME`: a LAN peer found through an ipserver.

use super::session::{Core, Mode, PeerNames};
use crate::command::{Command, Input, Item, Target, quoted};
use crate::filer::roster::{self, Entry, check_id};
use crate::filer::transfer::{Env, TransferConfig, Transfers};
use crate::net::{ConnId, ConnInfo, Context, Dir, State, TimerId};
use crate::protocol::{Header, Message};
use crate::render::{Renderer, format_table};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Settings of a filer.
#[derive(Debug, Clone)]
pub struct FilerConfig {
    /// This peer's name.
    pub id: String,
    /// The ipserver's `HOST:PORT`.
    pub ipserver: String,
    /// How often to report.
    pub report_interval: Duration,
    /// Inbox, size limit and acceptance of incoming files.
    pub transfer: TransferConfig,
}

/// Who the filer's peers are: what the transfer code needs besides the
/// renderer.
#[derive(Debug, Default)]
struct Peers {
    /// Peer names by connection (from their identity frames, or the roster name
    /// a connection was dialled by).
    names: PeerNames,
    /// Connections whose peer sent an identity frame (a sockmod filer).
    identified: HashSet<ConnId>,
}

impl Peers {
    /// What the transfer code is handed with each event: these and the renderer.
    fn env<'a>(&'a self, out: &'a mut Renderer) -> Env<'a> {
        Env {
            out,
            names: self.names.as_map(),
            identified: &self.identified,
        }
    }
}

/// The `filer` mode.
pub struct Filer {
    cfg: FilerConfig,
    /// Our listening port (what we report).
    port: u16,
    /// The link to the ipserver, while dialling or up (not a peer: left out of
    /// `*`).
    ipserver: Option<ConnId>,
    /// Said once per outage, so retries do not flood.
    outage_noticed: bool,
    /// The address book from the last good roster (minus ourselves).
    roster: BTreeMap<String, Entry>,
    /// The last roster complaint, so a garbled roster repeated every interval is
    /// mentioned once.
    roster_noted: Option<String>,
    /// Another peer the roster lists under our name (said once).
    name_clash: Option<Entry>,
    /// File transfers (`filer::transfer`).
    xfer: Transfers,
    /// Names of the connected peers, and which of them are filers.
    peers: Peers,
    /// `quit` was given while files were still going out: the filer stops once
    /// they have ended (see [`Filer::quit`]).
    quitting: bool,
    /// The timer of the next report to the ipserver.
    report_timer: Option<TimerId>,
    /// The timer of the next attempt to reach the ipserver, while it is away.
    retry_timer: Option<TimerId>,
}

impl Filer {
    /// A filer; give it its listening port with [`Filer::set_port`] once bound.
    /// An ipserver given without a port gets the ipserver's default, 5000.
    pub fn new(mut cfg: FilerConfig) -> Self {
        cfg.ipserver = crate::net::with_default_port(&cfg.ipserver, 5000);
        Filer {
            xfer: Transfers::new(cfg.transfer.clone()),
            peers: Peers::default(),
            cfg,
            port: 0,
            ipserver: None,
            outage_noticed: false,
            roster: BTreeMap::new(),
            roster_noted: None,
            name_clash: None,
            quitting: false,
            report_timer: None,
            retry_timer: None,
        }
    }

    /// Sets the listening port reported to the ipserver and peers.
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    fn identity(&self) -> Header {
        Header::new()
            .with("TP", "Check")
            .with("ID", self.cfg.id.clone())
            .with("Port", self.port.to_string())
    }

    /// True while the link to the ipserver is up.
    fn ipserver_up(&self, ctx: &Context<'_>) -> bool {
        self.ipserver
            .and_then(|id| ctx.info(id))
            .is_some_and(|i| i.state == State::Open)
    }

    fn report(&mut self, ctx: &mut Context<'_>) {
        if let Some(id) = self.ipserver
            && self.ipserver_up(ctx)
        {
            let h = Header::new()
                .with("ID", self.cfg.id.clone())
                .with("Port", self.port.to_string());
            let _ = ctx.send(id, &h, &[]);
        }
    }

    fn dial_ipserver(&mut self, ctx: &mut Context<'_>) {
        self.ipserver = Some(ctx.dial(&self.cfg.ipserver));
    }

    /// The link to the ipserver closed (`was_up`) or could not be made.
    fn ipserver_lost(
        &mut self,
        out: &mut Renderer,
        ctx: &mut Context<'_>,
        reason: &str,
        was_up: bool,
    ) {
        self.ipserver = None;
        if ctx.is_stopping() {
            // Our own shutdown, not an outage.
            return;
        }
        if was_up || !self.outage_noticed {
            self.outage_noticed = true;
            let retry = self.retry_delay();
            out.ipserver_lost(&self.cfg.ipserver, reason, was_up, retry);
        }
        self.retry_timer = Some(ctx.set_timer(self.retry_delay()));
    }

    fn retry_delay(&self) -> Duration {
        self.cfg
            .report_interval
            .clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    fn on_roster(&mut self, core: &mut Core, ctx: &Context<'_>, msg: &Message) {
        let entries = match roster::parse(&msg.body) {
            Ok(e) => e,
            Err(e) => {
                let text = format!("ignored roster from the ipserver: {e}");
                if self.roster_noted.as_ref() != Some(&text) {
                    core.out.notice(&text);
                    self.roster_noted = Some(text);
                }
                return;
            }
        };
        self.roster_noted = None;
        let mut next = BTreeMap::new();
        for e in entries {
            if e.id != self.cfg.id {
                next.insert(e.id.clone(), e);
            } else if e.port != self.port && self.name_clash.as_ref() != Some(&e) {
                core.out.notice(&format!(
                    "another peer at {}:{} also calls itself {:?} and holds the name at the \
                     ipserver; peers cannot find this one (choose another --id)",
                    e.ip, e.port, e.id
                ));
                self.name_clash = Some(e);
            }
        }
        for id in self.roster.keys() {
            if !next.contains_key(id) {
                core.out.peer_offline(id);
            }
        }
        for (id, e) in &next {
            if self.roster.get(id) != Some(e) {
                core.out.peer_online(id, &e.ip.to_string(), e.port);
            }
        }
        self.roster = next;
        core.refresh_completion(ctx, &*self);
    }

    /// The open (or opening) connection to the peer named `name`, if any.
    fn conn_named(&self, ctx: &Context<'_>, name: &str) -> Option<ConnId> {
        self.peers.names.conns_named(ctx, name).first().copied()
    }

    /// Dials a peer's listener and queues our identity frame first, so it goes
    /// out before anything sent while the dial is in progress.
    fn dial_peer(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        addr: &str,
        name: Option<&str>,
    ) -> ConnId {
        let id = ctx.dial(addr);
        if let Some(n) = name {
            self.peers.names.insert(id, n.to_string());
        }
        let _ = ctx.send(id, &self.identity(), &[]);
        core.refresh_completion(ctx, &*self);
        id
    }

    /// Dials a roster peer by name; the id is named at once so it is a target.
    /// A peer already connected is not dialled twice.
    fn dial_name(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        name: &str,
    ) -> Result<ConnId, String> {
        if let Some(id) = self.conn_named(ctx, name) {
            core.out
                .notice(&format!("already connected to {name} ({id})"));
            return Ok(id);
        }
        let e = self
            .roster
            .get(name)
            .ok_or_else(|| format!("no peer named {name:?} in the roster (see `peers`)"))?;
        let addr = std::net::SocketAddr::new(e.ip, e.port).to_string();
        Ok(self.dial_peer(core, ctx, &addr, Some(name)))
    }

    /// Named targets that are in the roster but not connected get dialled, so
    /// `send NAME TEXT` works without a `dial` first.
    fn dial_missing(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        t: &Target,
    ) -> Result<(), String> {
        if let Target::List(items) = t {
            for it in items {
                if let Item::Name(n) = it
                    && self.conn_named(ctx, n).is_none()
                {
                    if !self.roster.contains_key(n) {
                        return Err(format!(
                            "no peer named {n:?}: not connected and not in the roster (see `peers`)"
                        ));
                    }
                    self.dial_name(core, ctx, n)?;
                }
            }
        }
        Ok(())
    }

    fn peers_table(&self, ctx: &Context<'_>) -> String {
        if self.roster.is_empty() {
            return if self.ipserver_up(ctx) {
                "no other peers online".into()
            } else {
                format!(
                    "no peers known (ipserver {} not connected)",
                    self.cfg.ipserver
                )
            };
        }
        let mut rows = vec![["name".to_string(), "address".into(), "connection".into()]];
        for (name, e) in &self.roster {
            let conns: Vec<String> = self
                .peers
                .names
                .conns_named(ctx, name)
                .iter()
                .map(ConnId::to_string)
                .collect();
            rows.push([
                name.clone(),
                format!("{}:{}", e.ip, e.port),
                if conns.is_empty() {
                    "-".into()
                } else {
                    conns.join(",")
                },
            ]);
        }
        format_table(&rows)
    }

    fn peers_json(&self, ctx: &Context<'_>) -> serde_json::Value {
        let peers: Vec<serde_json::Value> = self
            .roster
            .iter()
            .map(|(name, e)| {
                let conns: Vec<u64> = self
                    .peers
                    .names
                    .conns_named(ctx, name)
                    .iter()
                    .map(|c| c.0)
                    .collect();
                serde_json::json!({
                    "id": name,
                    "ip": e.ip.to_string(),
                    "port": e.port,
                    "conns": conns,
                })
            })
            .collect();
        serde_json::json!({
            "event": "peers",
            "ipserver": if self.ipserver_up(ctx) { "connected" } else { "lost" },
            "peers": peers,
        })
    }

    /// A peer's identity frame named connection `conn`.
    fn on_identity(&mut self, core: &mut Core, ctx: &mut Context<'_>, conn: ConnId, name: &str) {
        if let Err(e) = check_id(name) {
            ctx.malformed(
                conn,
                "identity",
                format!("ignored identity from {conn}: {e}"),
            );
            return;
        }
        if self.peers.names.get(conn) != Some(name) {
            self.peers.names.insert(conn, name.to_string());
            core.out.identified(conn.0, name);
            core.refresh_completion(ctx, &*self);
        }
    }

    /// `quit`: with files of ours still queued, going out or waiting for the
    /// receiver's confirmation, waits for them to end first (saying so); a
    /// second `quit`, or a signal, stops at once.
    fn quit(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        let n = self.xfer.sends_pending();
        if n == 0 || self.quitting || ctx.is_stopping() {
            self.stop_now(core, ctx, true);
            return;
        }
        self.quitting = true;
        core.out.notice(&format!(
            "waiting for {n} transfer{} to finish ({} to stop now)",
            if n == 1 { "" } else { "s" },
            // The prompt has gone once `quit` is typed there; Ctrl-C remains.
            if core.piped() {
                "quit again or Ctrl-C"
            } else {
                "Ctrl-C"
            }
        ));
    }

    /// Stops the node now: transfers still running are stopped and their peers
    /// told why ([`Transfers::stop_all`]). A file that was not delivered makes a
    /// piped session exit 1, as a failed command does (`by_command`: a `quit`;
    /// otherwise a signal, whose exit status stays as it is in every mode).
    fn stop_now(&mut self, core: &mut Core, ctx: &mut Context<'_>, by_command: bool) {
        self.xfer.stop_all(ctx, &mut self.peers.env(&mut core.out));
        if self.xfer.any_send_failed() {
            core.failed = true;
        }
        if by_command {
            core.quit(ctx);
        } else {
            ctx.stop();
        }
    }

    /// After anything that may end a transfer: a waiting `quit` goes ahead once
    /// the last of our files has ended.
    fn check_quit(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        if self.quitting && !ctx.is_stopping() && self.xfer.sends_pending() == 0 {
            self.stop_now(core, ctx, true);
        }
    }
}

impl Mode for Filer {
    const NAME: &'static str = "filer";

    fn names(&self) -> Option<&PeerNames> {
        Some(&self.peers.names)
    }

    fn names_mut(&mut self) -> Option<&mut PeerNames> {
        Some(&mut self.peers.names)
    }

    fn no_peer_named(name: &str) -> String {
        format!(
            "no connection to a peer named {} (try `dial NAME`)",
            quoted(name)
        )
    }

    fn hidden(&self, id: ConnId) -> bool {
        self.ipserver == Some(id)
    }

    fn completion_words(&self) -> Vec<&str> {
        self.roster.keys().map(String::as_str).collect()
    }

    fn on_start(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        core.listening(ctx);
        self.dial_ipserver(ctx);
        self.report_timer = Some(ctx.set_timer(self.cfg.report_interval));
    }

    fn on_connected(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        alive: usize,
    ) {
        if Some(info.id) == self.ipserver {
            self.outage_noticed = false;
            core.out.ipserver_connected(&self.cfg.ipserver);
            self.report(ctx);
            return;
        }
        core.connected(ctx, &*self, info, alive);
        if info.dir == Dir::In {
            // Dialled connections queued theirs when the dial started.
            let _ = ctx.send(info.id, &self.identity(), &[]);
        }
        self.xfer
            .on_connected(ctx, &mut self.peers.env(&mut core.out), info.id);
        self.check_quit(core, ctx);
    }

    fn on_connect_failed(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        reason: &str,
    ) {
        if Some(info.id) == self.ipserver {
            self.ipserver_lost(&mut core.out, ctx, reason, false);
            return;
        }
        self.xfer
            .on_connect_failed(&mut self.peers.env(&mut core.out), info.id, reason);
        self.peers.names.remove(info.id);
        // Our identity frame, queued first on every dial, is not the user's message.
        let mut info = info.clone();
        info.msgs_out = info.msgs_out.saturating_sub(1);
        core.connect_failed(ctx, &*self, &info, reason);
        self.check_quit(core, ctx);
    }

    fn on_closed(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        reason: &str,
        alive: usize,
    ) {
        if Some(info.id) == self.ipserver {
            self.ipserver_lost(&mut core.out, ctx, reason, true);
            return;
        }
        self.xfer
            .on_closed(&mut self.peers.env(&mut core.out), info, reason);
        self.peers.identified.remove(&info.id);
        core.closed(ctx, self, info, reason, alive);
        self.check_quit(core, ctx);
    }

    fn on_message(&mut self, core: &mut Core, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        if Some(conn) == self.ipserver {
            if msg.header.contains("Broadcast") {
                self.on_roster(core, ctx, &msg);
            }
            return;
        }
        if msg.header.is_check() {
            if let Some(name) = msg.header.get("ID") {
                self.peers.identified.insert(conn);
                self.on_identity(core, ctx, conn, name);
            }
            return;
        }
        if self
            .xfer
            .on_message(ctx, &mut self.peers.env(&mut core.out), conn, &msg)
        {
            self.check_quit(core, ctx);
            return;
        }
        core.show_message(ctx, &*self, conn, &msg);
    }

    fn on_timer(&mut self, core: &mut Core, ctx: &mut Context<'_>, timer: TimerId) {
        if self.report_timer == Some(timer) {
            self.report(ctx);
            self.report_timer = Some(ctx.set_timer(self.cfg.report_interval));
        } else if self.retry_timer == Some(timer) {
            self.retry_timer = None;
            if self.ipserver.is_none() && !ctx.is_stopping() {
                self.dial_ipserver(ctx);
            }
        } else if self.xfer.owns_timer(timer) {
            self.xfer.on_timer(ctx, &mut self.peers.env(&mut core.out));
            self.check_quit(core, ctx);
        }
    }

    fn on_input(&mut self, core: &mut Core, ctx: &mut Context<'_>, input: Input) {
        if let Some(cmd) = core.take_input(input) {
            let r = self.run(core, ctx, cmd);
            core.report(r);
            self.check_quit(core, ctx);
        }
    }

    fn run(&mut self, core: &mut Core, ctx: &mut Context<'_>, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::Peers => {
                if core.out.is_json() {
                    let v = self.peers_json(ctx);
                    core.out.print_json(&v);
                } else {
                    let t = self.peers_table(ctx);
                    core.out.print(&t);
                }
                Ok(())
            }
            Command::Dial(name) => self.dial_name(core, ctx, &name).map(|_| ()),
            Command::Connect(addr) => {
                self.dial_peer(core, ctx, &addr, None);
                Ok(())
            }
            Command::Send(ref t, _) | Command::Multicast(ref t, _) | Command::Close(ref t) => {
                if !matches!(cmd, Command::Close(_)) {
                    self.dial_missing(core, ctx, t)?;
                }
                core.run_common(ctx, &*self, cmd)
            }
            Command::SendFile(t, paths) => {
                self.dial_missing(core, ctx, &t)?;
                let ids = core.resolve(ctx, &*self, &t)?;
                self.xfer
                    .send_files(ctx, &mut self.peers.env(&mut core.out), &ids, &paths)
            }
            Command::Transfers => {
                self.xfer.list(&mut self.peers.env(&mut core.out));
                Ok(())
            }
            Command::Cancel(n) => self.xfer.cancel(ctx, &mut self.peers.env(&mut core.out), n),
            Command::Quit => {
                self.quit(core, ctx);
                Ok(())
            }
            other => core.run_common(ctx, &*self, other),
        }
    }

    fn on_drained(&mut self, core: &mut Core, ctx: &mut Context<'_>, conn: ConnId) {
        self.xfer
            .on_drained(ctx, &mut self.peers.env(&mut core.out), conn);
        self.check_quit(core, ctx);
    }

    /// SIGINT or SIGTERM: stop at once, telling peers of running transfers.
    fn on_interrupt(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        self.stop_now(core, ctx, false);
    }
}
