//! `sockmod filer --id NAME`: a LAN peer found through an ipserver.

use super::session::{Core, Mode, PeerNames};
use crate::command::{Command, Input, Item, Target, quoted};
use crate::filer::roster::{self, Entry, check_id};
use crate::filer::transfer::{Env, TransferConfig, Transfers};
use crate::net::{
    ConnId, ConnInfo, Context, Dir, Identity, State, TimerId, Trust, client_config,
    parse_fingerprint,
};
use crate::protocol::{Header, Message};
use crate::render::{Renderer, format_table};
use crate::trust::KnownPeers;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long a TLS handshake with the ipserver may take before it is taken for
/// an original (plaintext) ipserver.
const IPSERVER_TLS_WAIT: Duration = Duration::from_secs(5);

/// Settings of a filer.
#[derive(Debug)]
pub struct FilerConfig {
    /// This peer's name.
    pub id: String,
    /// The ipserver's `HOST:PORT`.
    pub ipserver: String,
    /// How often to report.
    pub report_interval: Duration,
    /// Inbox, size limit and acceptance of incoming files.
    pub transfer: TransferConfig,
    /// This filer's key and its pins of other peers' keys; `None` runs it as an
    /// original peer would (plaintext, names taken on their word).
    pub security: Option<FilerSecurity>,
}

/// What makes a filer's links private and its peers' names trustworthy.
#[derive(Debug)]
pub struct FilerSecurity {
    /// Its key pair: the certificate its TLS listener and dials present.
    pub identity: Identity,
    /// The keys first seen for each peer name (trust on first use).
    pub pins: KnownPeers,
    /// Refuse peers that cannot speak TLS (original peers).
    pub require_encryption: bool,
}

/// A filer's security, running: its configuration plus what it learnt.
struct Security {
    identity: Identity,
    pins: KnownPeers,
    require_encryption: bool,
    /// Dials of the ipserver: encrypted, presenting our key, but not checking
    /// the other side's (the ipserver is not authenticated; see README,
    /// "Security"). Addresses outside the roster are dialled in plaintext, as
    /// an original peer may be there.
    any_server: Arc<rustls::ClientConfig>,
    /// Dials of a peer whose key we know, by fingerprint.
    pinned: HashMap<String, Arc<rustls::ClientConfig>>,
    /// Each roster name's key as the ipserver reported it (`TP:Keys`).
    keys: BTreeMap<String, String>,
    /// Changed keys already complained about (name, new fingerprint).
    warned: HashSet<(String, String)>,
    /// Names first pinned during this run (shown as `new` by `peers`).
    new_pins: HashSet<String>,
    /// The ipserver did not complete a TLS handshake: it is an original one,
    /// reported to in plaintext.
    ipserver_plain: bool,
}

impl Security {
    fn new(s: FilerSecurity) -> Result<Security, String> {
        let any_server = client_config(Trust::Anything, Some(&s.identity))?;
        Ok(Security {
            identity: s.identity,
            pins: s.pins,
            require_encryption: s.require_encryption,
            any_server,
            pinned: HashMap::new(),
            keys: BTreeMap::new(),
            warned: HashSet::new(),
            new_pins: HashSet::new(),
            ipserver_plain: false,
        })
    }

    /// The key `name` must show: its pin, else what the ipserver reported.
    fn expected(&self, name: &str) -> Option<&str> {
        self.pins
            .get(name)
            .or(self.keys.get(name).map(String::as_str))
    }

    /// A client configuration that accepts exactly the key `fingerprint`.
    fn pinned_config(&mut self, fingerprint: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(c) = self.pinned.get(fingerprint) {
            return Ok(c.clone());
        }
        let raw = parse_fingerprint(fingerprint)?;
        let c = client_config(Trust::Pins(vec![raw]), Some(&self.identity))?;
        self.pinned.insert(fingerprint.to_string(), c.clone());
        Ok(c)
    }
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
    /// Connections dialled by the roster name of a peer a sockmod ipserver
    /// lists without a key: original peers, which never confirm files.
    originals: HashSet<ConnId>,
    /// Connections whose verified name has a pinned key that the connection
    /// showed (refreshed before each frame goes to the transfer code).
    pinned: HashSet<ConnId>,
}

impl Peers {
    /// What the transfer code is handed with each event: these and the renderer.
    fn env<'a>(&'a self, out: &'a mut Renderer) -> Env<'a> {
        Env {
            out,
            names: self.names.as_map(),
            identified: &self.identified,
            originals: &self.originals,
            pinned: &self.pinned,
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
    /// Keys, pins and TLS; `None` without a key (plaintext, as originals).
    sec: Option<Security>,
}

impl Filer {
    /// A filer; give it its listening port with [`Filer::set_port`] once bound.
    /// An ipserver given without a port gets the ipserver's default, 5000.
    pub fn new(mut cfg: FilerConfig) -> Result<Self, String> {
        cfg.ipserver = crate::net::with_default_port(&cfg.ipserver, 5000);
        let sec = match cfg.security.take() {
            Some(s) => Some(Security::new(s)?),
            None => None,
        };
        Ok(Filer {
            sec,
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
        })
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

    /// Dials the ipserver: over TLS presenting our key (so our name is held
    /// by it), unless it showed it is an original ipserver.
    fn dial_ipserver(&mut self, ctx: &mut Context<'_>) {
        let id = match &self.sec {
            Some(s) if !s.ipserver_plain => {
                let id = ctx.dial_tls(&self.cfg.ipserver, s.any_server.clone());
                // A sockmod ipserver answers a ClientHello at once; an original
                // one never does, and gets our reports in plaintext instead.
                ctx.limit_dial(id, IPSERVER_TLS_WAIT);
                id
            }
            _ => ctx.dial(&self.cfg.ipserver),
        };
        self.ipserver = Some(id);
    }

    /// The ipserver's `TP:Keys` frame: each roster name's key. The first key
    /// seen for a name is pinned; a different one later is refused, loudly.
    fn on_keys(&mut self, core: &mut Core, msg: &Message) {
        let Some(sec) = &mut self.sec else {
            return;
        };
        let mut keys = BTreeMap::new();
        for pair in String::from_utf8_lossy(&msg.body).split(';') {
            let Some((name, fp)) = pair.split_once(',') else {
                continue;
            };
            if check_id(name).is_err() || parse_fingerprint(fp).is_err() || name == self.cfg.id {
                continue;
            }
            keys.insert(name.to_string(), fp.to_string());
        }
        for (name, fp) in &keys {
            match sec.pins.get(name) {
                None => {
                    sec.pins.pin(name, fp);
                    sec.new_pins.insert(name.clone());
                }
                Some(pinned) if pinned == fp => {}
                Some(pinned) => {
                    if sec.warned.insert((name.clone(), fp.clone())) {
                        core.out.notice(&key_changed(name, pinned, fp));
                    }
                }
            }
        }
        sec.keys = keys;
    }

    /// Decides whether connection `conn` really is the peer `name` it claims to
    /// be. A name the pins or the roster know is held to them: the key must be
    /// the pinned or reported one, and a peer without a key (an original one)
    /// must be one the roster lists without a key, at its address. A name known
    /// to neither is taken on its word for now, and judged again when the
    /// roster changes. `Err` is a key that contradicts a pin: refused.
    fn verify_claim(
        &mut self,
        ctx: &Context<'_>,
        conn: ConnId,
        name: &str,
    ) -> Result<bool, String> {
        let Some(info) = ctx.info(conn) else {
            return Ok(false);
        };
        let keys_expected = self.keys_expected();
        let Some(sec) = &mut self.sec else {
            // Without keys, names are taken on their word, as originals do.
            return Ok(true);
        };
        let shown = info
            .tls
            .as_ref()
            .and_then(|t| t.peer_fingerprint.as_deref());
        let at_roster_addr = self
            .roster
            .get(name)
            .is_some_and(|e| e.ip == info.addr.ip());
        if let Some(pinned) = sec.pins.get(name) {
            return match shown {
                Some(fp) if fp == pinned => Ok(true),
                Some(fp) => Err(key_changed(name, pinned, fp)),
                // The name has a key: a plaintext connection cannot be it.
                None => Ok(false),
            };
        }
        if let Some(reported) = sec.keys.get(name) {
            let ok = shown == Some(reported.as_str());
            if ok {
                let fp = reported.clone();
                sec.pins.pin(name, &fp);
                sec.new_pins.insert(name.to_string());
            }
            return Ok(ok);
        }
        if self.roster.contains_key(name) {
            // Listed without a key. From a sockmod ipserver, that is an original
            // peer: plaintext, at the listed address. From an original
            // ipserver (no keys at all), anyone at the listed address; a key
            // shown there is pinned.
            return Ok(match shown {
                None => at_roster_addr,
                Some(fp) if !keys_expected && at_roster_addr => {
                    sec.pins.pin(name, fp);
                    sec.new_pins.insert(name.to_string());
                    true
                }
                Some(_) => false,
            });
        }
        Ok(true)
    }

    /// Judges every named connection again after the roster or the keys changed:
    /// a name the roster now contradicts is demoted to a claim (`bob?`), a
    /// claim it now backs is promoted.
    fn recheck_names(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        if self.sec.is_none() {
            return;
        }
        let mut named: Vec<(ConnId, String)> = ctx
            .ids()
            .into_iter()
            .filter(|c| Some(*c) != self.ipserver)
            // A dial still connecting is judged by its TLS handshake (pinned).
            .filter(|c| ctx.info(*c).is_some_and(|i| i.state == State::Open))
            .filter_map(|c| {
                let shown = self.peers.names.get(c)?;
                Some((c, shown.strip_suffix('?').unwrap_or(shown).to_string()))
            })
            .collect();
        named.sort();
        for (conn, name) in named {
            let was = self.peers.names.verified(conn).is_some();
            match self.verify_claim(ctx, conn, &name) {
                Ok(true) if !was => {
                    self.peers.names.insert(conn, name.clone());
                    core.out.identified(conn.0, &name);
                }
                Ok(false) if was => {
                    self.peers.names.claim(conn, &name);
                    core.out
                        .unverified(conn.0, &name, "the roster now names another peer for it");
                }
                Err(why) => {
                    core.out.notice(&format!("refused {conn}: {why}"));
                    ctx.close(conn, format!("{name}'s key does not match its pin"));
                }
                _ => {}
            }
        }
    }

    /// True when the ipserver sends keys with its roster: we reach it over TLS
    /// (a sockmod ipserver).
    fn keys_expected(&self) -> bool {
        self.sec.as_ref().is_some_and(|s| !s.ipserver_plain)
    }

    /// `trust NAME`: pins the key the ipserver now reports for `name` (after a
    /// peer really changed its key).
    fn trust(&mut self, core: &mut Core, name: &str) -> Result<(), String> {
        let sec = self
            .sec
            .as_mut()
            .ok_or("this filer has no key (pins need one)")?;
        let fp = sec
            .keys
            .get(name)
            .cloned()
            .ok_or_else(|| format!("the ipserver reports no key for {}", quoted(name)))?;
        sec.pins.pin(name, &fp);
        sec.warned.retain(|(n, _)| n != name);
        core.out.notice(&format!("pinned {name} to SHA-256 {fp}"));
        Ok(())
    }

    /// `forget NAME`: drops the pin of `name`; its next key is trusted on first use.
    fn forget(&mut self, core: &mut Core, name: &str) -> Result<(), String> {
        let sec = self
            .sec
            .as_mut()
            .ok_or("this filer has no key (pins need one)")?;
        if !sec.pins.forget(name) {
            return Err(format!("no pin for {}", quoted(name)));
        }
        sec.warned.retain(|(n, _)| n != name);
        core.out.notice(&format!("forgot the pin of {name}"));
        Ok(())
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

    /// Sends again the files a dropped connection cut short, to each of their
    /// peers that the roster lists, by name (docs/PROTOCOL.md §5.4b): called on
    /// each report tick and roster. Lone filers (no roster) send again by hand.
    fn retry_sends(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        if ctx.is_stopping() {
            return;
        }
        let roster = &self.roster;
        let due = self.xfer.due_retries(|n| roster.contains_key(n));
        for name in due {
            let conn = match self.conn_named(ctx, &name) {
                Some(c) => c,
                None => match self.dial_name(core, ctx, &name) {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            self.xfer
                .retry_to(ctx, &mut self.peers.env(&mut core.out), &name, conn);
        }
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
    ) -> Result<ConnId, String> {
        // The key to expect: the named peer's, or that of the roster peer at
        // this address.
        let at_addr = || {
            self.roster
                .iter()
                .find(|(_, e)| std::net::SocketAddr::new(e.ip, e.port).to_string() == addr)
                .map(|(n, _)| n.clone())
        };
        let who = name.map(str::to_string).or_else(at_addr);
        let id = match &mut self.sec {
            Some(sec) => match who
                .as_deref()
                .and_then(|n| sec.expected(n))
                .map(str::to_string)
            {
                Some(fp) => {
                    let cfg = sec.pinned_config(&fp)?;
                    ctx.dial_tls(addr, cfg)
                }
                // `connect tls://ADDR`: a sockmod filer outside the roster;
                // encrypted, its key judged when it names itself.
                None if addr.starts_with(crate::net::TLS_SCHEME) => {
                    ctx.dial_tls(addr, sec.any_server.clone())
                }
                None if sec.require_encryption => {
                    return Err(format!(
                        "{} has no key (an original peer, or unknown): --require-encryption refuses plaintext",
                        who.as_deref().unwrap_or(addr)
                    ));
                }
                None => ctx.dial(addr),
            },
            None => ctx.dial(addr),
        };
        if let Some(n) = name {
            self.peers.names.insert(id, n.to_string());
        }
        let _ = ctx.send(id, &self.identity(), &[]);
        core.refresh_completion(ctx, &*self);
        Ok(id)
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
        let keyless = self.keys_expected()
            && self
                .sec
                .as_ref()
                .is_some_and(|s| !s.keys.contains_key(name));
        let id = self.dial_peer(core, ctx, &addr, Some(name))?;
        if keyless {
            self.peers.originals.insert(id);
        }
        Ok(id)
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

    /// A roster peer's key as the ipserver reports it, and how far it is
    /// trusted: `pinned` (the pin matches), `new` (pinned during this run, on
    /// first sight), `changed` (the pin differs: refused), `unencrypted` (no key:
    /// an original peer), `-` (this filer has no key itself).
    fn key_state(&self, name: &str) -> (Option<&str>, &'static str) {
        let Some(sec) = &self.sec else {
            return (None, "-");
        };
        let reported = sec.keys.get(name).map(String::as_str);
        let state = match (reported, sec.pins.get(name)) {
            (None, _) => "unencrypted",
            (Some(r), Some(p)) if r == p && sec.new_pins.contains(name) => "new",
            (Some(r), Some(p)) if r == p => "pinned",
            (Some(_), Some(_)) => "changed",
            (Some(_), None) => "new",
        };
        (reported, state)
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
        let mut rows = vec![[
            "name".to_string(),
            "address".into(),
            "connection".into(),
            "key".into(),
            "trust".into(),
        ]];
        for (name, e) in &self.roster {
            let conns: Vec<String> = self
                .peers
                .names
                .conns_named(ctx, name)
                .iter()
                .map(ConnId::to_string)
                .collect();
            let (key, trust) = self.key_state(name);
            rows.push([
                name.clone(),
                format!("{}:{}", e.ip, e.port),
                if conns.is_empty() {
                    "-".into()
                } else {
                    conns.join(",")
                },
                key.map_or_else(|| "-".to_string(), short_fingerprint),
                trust.into(),
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
                let (key, trust) = self.key_state(name);
                serde_json::json!({
                    "id": name,
                    "ip": e.ip.to_string(),
                    "port": e.port,
                    "conns": conns,
                    "fingerprint": key,
                    "trust": trust,
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
        match self.verify_claim(ctx, conn, name) {
            Err(why) => {
                core.out.notice(&format!("refused {conn}: {why}"));
                ctx.close(conn, format!("{name}'s key does not match its pin"));
            }
            Ok(true) => {
                if self.peers.names.verified(conn) != Some(name) {
                    self.peers.names.insert(conn, name.to_string());
                    core.out.identified(conn.0, name);
                    core.refresh_completion(ctx, &*self);
                }
            }
            Ok(false) => {
                self.peers.names.claim(conn, name);
                let why = match ctx.info(conn).and_then(|i| i.tls.as_ref()) {
                    Some(_) => "its key is not the one the ipserver reports for that name",
                    None => "not encrypted, while that name has a key or another address",
                };
                core.out.unverified(conn.0, name, why);
                core.refresh_completion(ctx, &*self);
            }
        }
    }

    /// True when `conn`'s peer is verified under a name whose pinned key the
    /// connection showed (`--accept-files known`).
    fn is_pinned_peer(&self, ctx: &Context<'_>, conn: ConnId) -> bool {
        let (Some(sec), Some(name)) = (&self.sec, self.peers.names.verified(conn)) else {
            return false;
        };
        let shown = ctx
            .info(conn)
            .and_then(|i| i.tls.as_ref())
            .and_then(|t| t.peer_fingerprint.clone());
        sec.pins
            .get(name)
            .is_some_and(|p| shown.as_deref() == Some(p))
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
            // At the prompt, which stays: `transfers` and `cancel` still run.
            if core.piped() {
                "quit again or Ctrl-C"
            } else {
                "Ctrl-C again or quit"
            }
        ));
        core.out.quitting(true);
    }

    /// Stops the node now: transfers still running are stopped and their peers
    /// told why ([`Transfers::stop_all`]). A file that was not delivered makes a
    /// piped session exit 1, as a failed command does (`by_command`: a `quit`;
    /// otherwise a signal, whose exit status stays as it is in every mode).
    fn stop_now(&mut self, core: &mut Core, ctx: &mut Context<'_>, by_command: bool) {
        core.out.quitting(false);
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
        if let Some(problem) = self.xfer.inbox_problem() {
            core.out.notice(&format!("warning: {problem}"));
        }
        self.xfer.expire_partials();
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
            // Reached, but no TLS handshake: an original ipserver. Report to it
            // in plaintext from now on.
            if let Some(sec) = &mut self.sec
                && info.state == State::Handshaking
                && !sec.ipserver_plain
                && !sec.require_encryption
                && !ctx.is_stopping()
            {
                sec.ipserver_plain = true;
                core.out.notice(&format!(
                    "the ipserver at {} does not speak TLS ({reason}); reporting to it in plaintext",
                    self.cfg.ipserver
                ));
                self.ipserver = None;
                self.dial_ipserver(ctx);
                return;
            }
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
        self.peers.originals.remove(&info.id);
        self.peers.pinned.remove(&info.id);
        core.closed(ctx, self, info, reason, alive);
        self.check_quit(core, ctx);
    }

    fn on_message(&mut self, core: &mut Core, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        if Some(conn) == self.ipserver {
            if msg.header.contains("Broadcast") {
                self.on_roster(core, ctx, &msg);
                // The keys of the new roster follow in their own frame.
                if !self.keys_expected() {
                    self.recheck_names(core, ctx);
                    self.retry_sends(core, ctx);
                }
            } else if msg.header.get("TP") == Some("Keys") {
                self.on_keys(core, &msg);
                self.recheck_names(core, ctx);
                self.retry_sends(core, ctx);
            }
            return;
        }
        if msg.header.is_check() {
            if let Some(name) = msg.header.get("ID") {
                self.peers.identified.insert(conn);
                self.on_identity(core, ctx, conn, name);
                self.xfer
                    .on_identified(ctx, &mut self.peers.env(&mut core.out), conn);
            }
            return;
        }
        if self.is_pinned_peer(ctx, conn) {
            self.peers.pinned.insert(conn);
        } else {
            self.peers.pinned.remove(&conn);
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
            self.retry_sends(core, ctx);
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
            Command::Connect(addr) => self.dial_peer(core, ctx, &addr, None).map(|_| ()),
            Command::Trust(name) => self.trust(core, &name),
            Command::Forget(name) => self.forget(core, &name),
            Command::Send(ref t, _) | Command::Multicast(ref t, _) | Command::Close(ref t) => {
                if !matches!(cmd, Command::Close(_)) {
                    self.dial_missing(core, ctx, t)?;
                }
                core.run_common(ctx, &*self, cmd)
            }
            Command::SendFile(t, paths) => {
                // Checked before anything happens: a bad path dials no one.
                let (files, skipped) = Transfers::check_files(&paths)?;
                self.dial_missing(core, ctx, &t)?;
                for n in &skipped {
                    core.out.notice(n);
                }
                let ids = core.resolve(ctx, &*self, &t)?;
                self.xfer
                    .send_files(ctx, &mut self.peers.env(&mut core.out), &ids, &files)
            }
            Command::Transfers(n) => {
                self.xfer.list(&mut self.peers.env(&mut core.out), n);
                Ok(())
            }
            Command::Cancel(n) => self.xfer.cancel(ctx, &mut self.peers.env(&mut core.out), n),
            Command::Accept(n) => self.xfer.accept(ctx, &mut self.peers.env(&mut core.out), n),
            Command::Refuse(n) => self.xfer.refuse(ctx, &mut self.peers.env(&mut core.out), n),
            Command::Quit => {
                self.quit(core, ctx);
                Ok(())
            }
            other => core.run_common(ctx, &*self, other),
        }
    }

    fn on_idle(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        self.xfer.poll_disk(ctx, &mut self.peers.env(&mut core.out));
        self.check_quit(core, ctx);
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

/// The loud line for a key that contradicts a pin: both fingerprints, and how
/// to accept the new one or drop the pin.
fn key_changed(name: &str, pinned: &str, now: &str) -> String {
    format!(
        "{name} presented a different key: pinned SHA-256 {pinned}, now SHA-256 {now}; \
         refused (if {name} really has a new key: `trust {name}`, or `forget {name}` to drop the pin)"
    )
}

/// The first four bytes of a fingerprint (`AB:CD:EF:12`), as `peers` shows it.
fn short_fingerprint(fp: &str) -> String {
    fp.get(..11).unwrap_or(fp).to_string()
}
