//! What every mode shares, written once: the [`Mode`] trait for what differs
//! between modes, the shared state [`Core`] (renderer, failure flag, exit
//! status, completion list), and [`Session`], the one [`Handler`] that runs a
//! mode on the loop. The shared commands are those of README "Command language".

use crate::command::{
    BodySource, Command, CompletionTargets, Input, Item, Outgoing, Target, help_text, quoted,
};
use crate::net::{ConnId, ConnInfo, Context, Handler, SendError, State, TimerId};
use crate::protocol::Message;
use crate::render::{Renderer, format_table, human_size, short_duration};
use std::collections::HashMap;
use std::time::Instant;

/// What differs between modes. Every callback gets the shared [`Core`] apart
/// from the mode, so a mode's own state and the renderer borrow separately.
///
/// The defaults are what `serve` does: render events, run the shared commands.
pub trait Mode {
    /// `serve`, `connect`, `ipserver` or `filer`: selects the help and names the
    /// mode in errors.
    const NAME: &'static str;

    /// Peer names by connection, in modes whose peers have names.
    fn names(&self) -> Option<&PeerNames> {
        None
    }

    /// [`Mode::names`], to change.
    fn names_mut(&mut self) -> Option<&mut PeerNames> {
        None
    }

    /// The error for a name target that names no connection.
    fn no_peer_named(name: &str) -> String {
        format!(
            "bad target {} (want an id like 1 or #1, a list 1,3, HOST:PORT or *)",
            quoted(name)
        )
    }

    /// True for a connection that is not a peer (the filer's ipserver link): left
    /// out of `*`.
    fn hidden(&self, _id: ConnId) -> bool {
        false
    }

    /// Names offered for completion besides the connections and their names
    /// (the filer's roster).
    fn completion_words(&self) -> Vec<&str> {
        Vec::new()
    }

    /// Once, before the first poll.
    fn on_start(&mut self, _core: &mut Core, _ctx: &mut Context<'_>) {}

    /// A connection is up.
    fn on_connected(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        alive: usize,
    ) {
        core.connected(ctx, &*self, info, alive);
    }

    /// A dial failed.
    fn on_connect_failed(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        reason: &str,
    ) {
        core.connect_failed(ctx, &*self, info, reason);
    }

    /// A connection ended.
    fn on_closed(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        reason: &str,
        alive: usize,
    ) {
        core.closed(ctx, self, info, reason, alive);
    }

    /// A frame arrived.
    fn on_message(&mut self, core: &mut Core, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        core.show_message(ctx, &*self, conn, &msg);
    }

    /// A timer the mode set fired.
    fn on_timer(&mut self, _core: &mut Core, _ctx: &mut Context<'_>, _timer: TimerId) {}

    /// A line (or the end) of input arrived: runs the command it holds.
    fn on_input(&mut self, core: &mut Core, ctx: &mut Context<'_>, input: Input) {
        if let Some(cmd) = core.take_input(input) {
            let r = self.run(core, ctx, cmd);
            core.report(r);
        }
    }

    /// Runs a command; `Err` is the one-line error to show.
    fn run(&mut self, core: &mut Core, ctx: &mut Context<'_>, cmd: Command) -> Result<(), String> {
        core.run_common(ctx, &*self, cmd)
    }

    /// An outbound queue fell to the mark the mode asked for.
    fn on_drained(&mut self, _core: &mut Core, _ctx: &mut Context<'_>, _conn: ConnId) {}

    /// SIGINT or SIGTERM: stops the node.
    fn on_interrupt(&mut self, _core: &mut Core, ctx: &mut Context<'_>) {
        ctx.stop();
    }

    /// The loop is about to block; the renderer is flushed right after.
    fn on_idle(&mut self, _core: &mut Core, _ctx: &mut Context<'_>) {}
}

/// Peer names by connection: what a filer's identity frame or dial named it,
/// or what an ipserver report called it. A name claimed but not verified (a
/// filer peer whose key or address does not match the roster) is only shown,
/// as `bob?`, and is never a target.
#[derive(Debug, Default)]
pub struct PeerNames(HashMap<ConnId, String>, HashMap<ConnId, String>);

impl PeerNames {
    /// The name of a connection as shown, if known (`bob?` for an unverified claim).
    pub fn get(&self, id: ConnId) -> Option<&str> {
        self.0
            .get(&id)
            .or_else(|| self.1.get(&id))
            .map(String::as_str)
    }

    /// The verified name of a connection.
    pub fn verified(&self, id: ConnId) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }

    /// Names a connection.
    pub fn insert(&mut self, id: ConnId, name: String) {
        self.1.remove(&id);
        self.0.insert(id, name);
    }

    /// Records a name a connection claims but that could not be verified: shown
    /// as `NAME?`, never a target.
    pub fn claim(&mut self, id: ConnId, name: &str) {
        self.0.remove(&id);
        self.1.insert(id, format!("{name}?"));
    }

    /// Forgets a connection's name, returning it.
    pub fn remove(&mut self, id: ConnId) -> Option<String> {
        self.1.remove(&id);
        self.0.remove(&id)
    }

    /// Every name given (some perhaps alike).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    /// The names as a map (what the transfer code reads).
    pub fn as_map(&self) -> &HashMap<ConnId, String> {
        &self.0
    }

    /// The live connections to the peer named `name`, in id order.
    pub fn conns_named(&self, ctx: &Context<'_>, name: &str) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .0
            .iter()
            .filter(|(id, n)| *n == name && ctx.info(**id).is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// State every mode shares.
pub struct Core {
    /// Where events go.
    pub out: Renderer,
    /// A command failed (piped mode then exits 1).
    pub failed: bool,
    /// Exit status once stopped.
    pub exit_code: i32,
    /// Shared with the REPL's completer; `None` when reading piped input.
    completion: Option<CompletionTargets>,
    /// What `-f -` sends: stdin, read before the loop started (commands from
    /// `-c`), or why there is none.
    pub stdin_body: Result<Vec<u8>, String>,
    /// Input lines taken so far (the line number of piped input, or the index
    /// of a `-c` command, 1-based).
    lines_in: u64,
    /// The input line being run and the command it names, for the `error`
    /// event of `--json`.
    current: Option<(u64, Option<&'static str>)>,
}

/// Why `-f -` has nothing to send when commands are not given with `-c`.
pub const STDIN_IS_COMMANDS: &str =
    "-f -: stdin holds the commands; give them with -c to send stdin as a body";

impl Core {
    /// Shared state: at a prompt when `completion` is given (the list the
    /// prompt completes from), else reading piped input.
    pub fn new(out: Renderer, completion: Option<CompletionTargets>) -> Self {
        Core {
            out,
            failed: false,
            exit_code: 0,
            completion,
            stdin_body: Err(STDIN_IS_COMMANDS.to_string()),
            lines_in: 0,
            current: None,
        }
    }

    /// True when commands come from a pipe rather than a person at a prompt.
    pub fn piped(&self) -> bool {
        self.completion.is_none()
    }

    /// Reports a failed command: one line on stderr; piped mode will exit 1.
    /// With `--json`, also an `error` event on stdout naming the command and
    /// its input line.
    pub fn error(&mut self, msg: &str) {
        self.failed = true;
        self.out.notice(&format!("error: {msg}"));
        if let (true, Some((line, command))) = (self.out.is_json(), self.current) {
            let j = self.out.json("error");
            match command {
                Some(c) => j.str("command", c),
                None => j.raw("command", b"null"),
            };
            j.num("line", line);
            j.str("message", msg);
            self.out.emit_json();
        }
    }

    /// Stops the node; exit 1 if a piped command failed.
    pub fn quit(&mut self, ctx: &mut Context<'_>) {
        if self.piped() && self.failed {
            self.exit_code = 1;
        }
        self.out.quitting(false);
        ctx.stop();
    }

    /// Renders the listening event, for a mode with a listener.
    pub fn listening(&mut self, ctx: &Context<'_>) {
        if let Some(a) = ctx.local_addr() {
            let tls = ctx.config().tls.as_ref().map(|t| t.fingerprint.as_str());
            self.out.listening(&a.to_string(), tls);
        }
    }

    /// Updates the completion list: the live connections, the mode's peer names
    /// and its [`Mode::completion_words`].
    pub fn refresh_completion<M: Mode + ?Sized>(&mut self, ctx: &Context<'_>, mode: &M) {
        if let Some(c) = &self.completion {
            let mut v: Vec<String> = ctx.ids().iter().map(|i| i.to_string()).collect();
            // The HOST:PORT of each connection, and the target it was dialled
            // as (`send 127.0.0.1:9000 …`).
            for i in ctx.conns() {
                let addr = (i.addr.port() != 0).then(|| i.addr.to_string());
                for a in addr.into_iter().chain(ctx.target(i.id).map(str::to_string)) {
                    if !v.contains(&a) {
                        v.push(a);
                    }
                }
            }
            let names = mode.names().into_iter().flat_map(PeerNames::values);
            for n in names.chain(mode.completion_words()) {
                if !v.iter().any(|x| x == n) {
                    v.push(n.to_string());
                }
            }
            if let Ok(mut g) = c.lock() {
                *g = v;
            }
        }
    }

    /// Renders a message event (nothing for `TP:Check` frames, which are probes
    /// and identities, never messages).
    pub fn show_message<M: Mode + ?Sized>(
        &mut self,
        ctx: &Context<'_>,
        mode: &M,
        conn: ConnId,
        msg: &Message,
    ) {
        if self.out.is_quiet() || msg.header.is_check() {
            return;
        }
        if let Some(i) = ctx.info(conn) {
            let from = mode.names().and_then(|n| n.get(conn));
            self.out.message(conn.0, &i.addr, i.dir, from, msg);
        }
    }

    /// Renders a connected event.
    pub fn connected<M: Mode + ?Sized>(
        &mut self,
        ctx: &Context<'_>,
        mode: &M,
        info: &ConnInfo,
        alive: usize,
    ) {
        let name = mode.names().and_then(|n| n.get(info.id));
        self.out.connected(info, name, alive);
        self.refresh_completion(ctx, mode);
    }

    /// Renders a closed event and forgets the connection's name.
    pub fn closed<M: Mode + ?Sized>(
        &mut self,
        ctx: &Context<'_>,
        mode: &mut M,
        info: &ConnInfo,
        reason: &str,
        alive: usize,
    ) {
        let name = mode.names_mut().and_then(|n| n.remove(info.id));
        self.out.closed(info, name.as_deref(), reason, alive);
        self.refresh_completion(ctx, &*mode);
    }

    /// Renders a failed dial (event on stdout, error on stderr), saying how many
    /// messages sent to it while it was being dialled were dropped.
    pub fn connect_failed<M: Mode + ?Sized>(
        &mut self,
        ctx: &Context<'_>,
        mode: &M,
        info: &ConnInfo,
        reason: &str,
    ) {
        let target = info.target.clone().unwrap_or_else(|| info.addr.to_string());
        let reason = match info.msgs_out {
            0 => reason.to_string(),
            1 => format!("{reason}; the message sent to it was dropped"),
            n => format!("{reason}; the {n} messages sent to it were dropped"),
        };
        let reason = reason.as_str();
        if info.msgs_out > 0 {
            // Messages were lost: a piped session exits 1, as for a failed command.
            self.failed = true;
        }
        self.out.connect_failed(info, &target, reason);
        // A dial cut short by our own shutdown is not an error.
        if !ctx.is_stopping() {
            self.out
                .notice(&format!("error: cannot connect to {target}: {reason}"));
        }
        self.refresh_completion(ctx, mode);
    }

    /// Resolves a target to connection ids; an unknown one is an error.
    pub fn resolve<M: Mode + ?Sized>(
        &self,
        ctx: &Context<'_>,
        mode: &M,
        target: &Target,
    ) -> Result<Vec<ConnId>, String> {
        match target {
            Target::All => {
                let mut ids = ctx.ids();
                ids.retain(|i| !mode.hidden(*i));
                if ids.is_empty() {
                    Err("no connections".into())
                } else {
                    Ok(ids)
                }
            }
            Target::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    let id = Self::resolve_item(ctx, mode, it)?;
                    if !out.contains(&id) {
                        out.push(id);
                    }
                }
                Ok(out)
            }
        }
    }

    /// The connection one element of a target list names.
    fn resolve_item<M: Mode + ?Sized>(
        ctx: &Context<'_>,
        mode: &M,
        it: &Item,
    ) -> Result<ConnId, String> {
        let found = match it {
            Item::Id(n) => ctx.info(ConnId(*n)).map(|i| i.id),
            Item::Addr(a) => {
                let ids: Vec<ConnId> = ctx
                    .conns()
                    .iter()
                    .filter(|i| i.addr.to_string() == *a || ctx.target(i.id) == Some(a))
                    .map(|i| i.id)
                    .collect();
                if let [_, _, ..] = ids.as_slice() {
                    let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                    return Err(format!(
                        "{} names {} connections ({}); give one id, or list them: {}",
                        quoted(a),
                        ids.len(),
                        names.join(", "),
                        ids.iter()
                            .map(|i| i.0.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                }
                ids.first().copied()
            }
            Item::Name(n) => mode
                .names()
                .and_then(|names| names.conns_named(ctx, n).first().copied()),
        };
        found.ok_or_else(|| match it {
            Item::Id(n) => format!("no connection #{n}"),
            Item::Addr(a) => format!("no connection to {}", quoted(a)),
            Item::Name(n) => M::no_peer_named(n),
        })
    }

    /// Reads a message's body.
    pub fn load_body(&self, ctx: &Context<'_>, src: &BodySource) -> Result<Vec<u8>, String> {
        match src {
            BodySource::None => Ok(Vec::new()),
            BodySource::Text(t) => Ok(t.clone().into_bytes()),
            BodySource::Stdin => self.stdin_body.clone(),
            BodySource::File(path) => {
                let max = ctx.config().max_queue;
                let lossy = path.to_string_lossy();
                let p = crate::command::clipped(&lossy);
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("cannot read {}: {}", p, crate::net::describe(&e)))?;
                // A device or FIFO (/dev/zero, /dev/stdin) would block the loop or
                // never end.
                if !meta.is_file() {
                    return Err(format!("cannot send {}: not a regular file", p));
                }
                if meta.len() > max as u64 {
                    return Err(format!(
                        "cannot send {}: {} is larger than --max-queue ({})",
                        p,
                        human_size(meta.len()),
                        human_size(max as u64)
                    ));
                }
                let read_err =
                    |e: std::io::Error| format!("cannot read {}: {}", p, crate::net::describe(&e));
                // Bounded even if the file grows, or reports no size (/proc).
                let mut body = Vec::with_capacity(meta.len() as usize);
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(
                        std::fs::File::open(path).map_err(read_err)?,
                        max as u64 + 1,
                    ),
                    &mut body,
                )
                .map_err(read_err)?;
                if body.len() > max {
                    return Err(format!(
                        "cannot send {}: it grew larger than --max-queue ({})",
                        p,
                        human_size(max as u64)
                    ));
                }
                Ok(body)
            }
        }
    }

    fn send_to(
        &mut self,
        ctx: &mut Context<'_>,
        ids: &[ConnId],
        msg: &Outgoing,
    ) -> Result<(), String> {
        let body = self.load_body(ctx, &msg.body)?;
        let results = if let [one] = ids {
            vec![(*one, ctx.send(*one, &msg.header, &body))]
        } else {
            ctx.multicast(ids, &msg.header, &body)
                .map_err(|e| e.to_string())?
        };
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|(_, r)| r.err())
            .map(|e| match e {
                SendError::Encode(e) => format!("nothing sent: {e}"),
                e => e.to_string(),
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Runs a command every mode shares; `Err` is the one-line error to show.
    pub fn run_common<M: Mode + ?Sized>(
        &mut self,
        ctx: &mut Context<'_>,
        mode: &M,
        cmd: Command,
    ) -> Result<(), String> {
        match cmd {
            Command::Help(topic) => {
                let text = help_text(M::NAME, topic.as_deref())?;
                self.out.print(&text);
            }
            Command::List => {
                if self.out.is_json() {
                    self.list_json(ctx, mode);
                } else {
                    let table = Self::list_table(ctx, mode);
                    self.out.print(&table);
                }
            }
            Command::Connect(addr) => {
                ctx.dial(&addr);
                self.refresh_completion(ctx, mode);
            }
            Command::Send(t, msg) | Command::Multicast(t, msg) => {
                let ids = self.resolve(ctx, mode, &t)?;
                self.send_to(ctx, &ids, &msg)?;
            }
            Command::Broadcast(msg) => {
                let ids = self.resolve(ctx, mode, &Target::All)?;
                self.send_to(ctx, &ids, &msg)?;
            }
            Command::Close(t) => {
                for id in self.resolve(ctx, mode, &t)? {
                    ctx.close(id, "closed by user");
                }
            }
            Command::Quit => self.quit(ctx),
            other => {
                return Err(format!(
                    "{} is not available in {} mode",
                    other.name(),
                    M::NAME
                ));
            }
        }
        Ok(())
    }

    /// `list` with `--json`: one `{"event":"list","conns":[…]}` line.
    fn list_json<M: Mode + ?Sized>(&mut self, ctx: &Context<'_>, mode: &M) {
        let names = mode.names();
        let now = Instant::now();
        let conns: Vec<serde_json::Value> = ctx
            .conns()
            .iter()
            .map(|i| {
                let mut v = serde_json::json!({
                    "peer": i.id.0,
                    "dir": i.dir.as_str(),
                    "addr": i.addr.to_string(),
                    "state": i.state.as_str(),
                    "age_ms": now.duration_since(i.since).as_millis() as u64,
                    "seen_ms": now.duration_since(i.last_seen).as_millis() as u64,
                    "msgs_in": i.msgs_in,
                    "msgs_out": i.msgs_out,
                    "bytes_in": i.bytes_in,
                    "bytes_out": i.bytes_out,
                });
                if let Some(n) = names.and_then(|names| names.get(i.id)) {
                    v["name"] = n.into();
                }
                if let Some(t) = &i.tls {
                    v["tls"] = serde_json::json!({
                        "version": t.version,
                        "cipher": t.cipher,
                        "peer_fingerprint": t.peer_fingerprint,
                    });
                }
                v
            })
            .collect();
        self.out
            .print_json(&serde_json::json!({"event": "list", "conns": conns}));
    }

    /// The `list` table.
    fn list_table<M: Mode + ?Sized>(ctx: &Context<'_>, mode: &M) -> String {
        let names = mode.names();
        let conns = ctx.conns();
        if conns.is_empty() {
            return "no connections".to_string();
        }
        let now = Instant::now();
        let mut rows = vec![[
            "id".to_string(),
            "dir".into(),
            "address".into(),
            "state".into(),
            "age".into(),
            "seen".into(),
            "msgs in/out".into(),
            "bytes in/out".into(),
        ]];
        for i in conns {
            let mut addr = i.addr.to_string();
            if let Some(n) = names.and_then(|names| names.get(i.id)) {
                addr = format!("{addr} ({n})");
            }
            let seen = if i.state == State::Connecting {
                "-".to_string()
            } else {
                format!("{} ago", short_duration(now.duration_since(i.last_seen)))
            };
            let state = match &i.tls {
                Some(t) => format!("{} {}", i.state.as_str(), t.version),
                None => i.state.as_str().to_string(),
            };
            rows.push([
                i.id.to_string(),
                i.dir.as_str().into(),
                addr,
                state,
                short_duration(now.duration_since(i.since)),
                seen,
                format!("{}/{}", i.msgs_in, i.msgs_out),
                format!("{}/{}", human_size(i.bytes_in), human_size(i.bytes_out)),
            ]);
        }
        format_table(&rows)
    }
}

impl Core {
    /// Parses a line, reporting a bad one; `None` when there is nothing to run.
    pub fn parse_line(&mut self, line: &str) -> Option<Command> {
        self.out.input_line();
        if let Some(cur) = &mut self.current {
            cur.1 = crate::command::command_name(line);
        }
        match crate::command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                self.error(&e);
                None
            }
        }
    }

    /// Reports the error of a command that failed.
    pub fn report(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.error(&e);
        }
        self.current = None;
    }

    /// The command an input asks to run: a line is parsed (a bad one reported,
    /// as is a line that could not be read); end of input gives none (servers
    /// keep running after it; `connect` looks at it first).
    pub fn take_input(&mut self, input: Input) -> Option<Command> {
        if !matches!(input, Input::Eof) {
            self.lines_in += 1;
            self.current = Some((self.lines_in, None));
        }
        let cmd = match input {
            Input::Line(l) => self.parse_line(&l),
            Input::Bad(reason) => {
                self.error(&reason);
                None
            }
            Input::Eof => None,
        };
        if cmd.is_none() {
            self.current = None;
        }
        cmd
    }
}

/// The one [`Handler`] of every mode: the events go to the mode `M` with the
/// shared [`Core`]; notices and the flush before each poll are handled here.
pub struct Session<M> {
    /// State every mode shares.
    pub core: Core,
    /// What this mode adds.
    pub mode: M,
}

impl<M: Mode> Session<M> {
    /// Runs `mode` with the shared state `core`.
    pub fn new(core: Core, mode: M) -> Self {
        Session { core, mode }
    }
}

impl<M: Mode> Handler for Session<M> {
    type Command = Input;

    fn on_start(&mut self, ctx: &mut Context<'_>) {
        self.mode.on_start(&mut self.core, ctx);
    }

    fn on_connected(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, alive: usize) {
        self.mode.on_connected(&mut self.core, ctx, info, alive);
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str) {
        self.mode
            .on_connect_failed(&mut self.core, ctx, info, reason);
    }

    fn on_closed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str, alive: usize) {
        self.mode
            .on_closed(&mut self.core, ctx, info, reason, alive);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        self.mode.on_message(&mut self.core, ctx, conn, msg);
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: TimerId) {
        self.mode.on_timer(&mut self.core, ctx, timer);
    }

    fn on_command(&mut self, ctx: &mut Context<'_>, input: Input) {
        self.mode.on_input(&mut self.core, ctx, input);
    }

    fn on_interrupt(&mut self, ctx: &mut Context<'_>) {
        self.mode.on_interrupt(&mut self.core, ctx);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        self.mode.on_drained(&mut self.core, ctx, conn);
    }

    fn on_notice(&mut self, _ctx: &mut Context<'_>, notice: &str) {
        self.core.out.notice(notice);
    }

    fn on_idle(&mut self, ctx: &mut Context<'_>) {
        self.mode.on_idle(&mut self.core, ctx);
        self.core.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filer::transfer::TransferConfig;
    use crate::modes::{Connect, Filer, FilerConfig, Ipserver, Serve};
    use crate::net::{Config, Node};
    use crate::render::{BodyFormat, MemorySink, Style};
    use std::time::Duration;

    fn core() -> Core {
        let out = Renderer::new(
            Style::Human,
            BodyFormat::default(),
            false,
            Box::new(MemorySink::default()),
        );
        Core::new(out, None)
    }

    /// A node to take a [`Context`] from (its own handler is not used).
    fn node() -> Node<Session<Serve>> {
        Node::new(Config::default(), Session::new(core(), Serve)).unwrap()
    }

    fn unknown_name<M: Mode>(mode: &M) -> String {
        let mut node = node();
        let target = Target::List(vec![Item::Name("bob".into())]);
        core().resolve(&node.context(), mode, &target).unwrap_err()
    }

    #[test]
    fn a_name_that_names_no_connection_is_told_in_the_modes_words() {
        let filer = Filer::new(FilerConfig {
            id: "me".into(),
            ipserver: "127.0.0.1:5000".into(),
            report_interval: Duration::from_secs(1),
            transfer: TransferConfig {
                inbox: std::env::temp_dir(),
                max_file_size: None,
                accept: crate::filer::transfer::Policy::No,
                chunk_size: 4096,
                ..TransferConfig::default()
            },
            security: None,
        })
        .unwrap();
        let ipserver = Ipserver::new(Duration::from_secs(1), Duration::from_secs(3));
        for e in [
            unknown_name(&Serve),
            unknown_name(&Connect::new(vec![], false)),
        ] {
            assert!(e.starts_with("bad target \"bob\" (want an id"), "{e}");
        }
        assert_eq!(
            unknown_name(&ipserver),
            "no connection from a peer named \"bob\""
        );
        assert_eq!(
            unknown_name(&filer),
            "no connection to a peer named \"bob\" (try `dial NAME`)"
        );
    }

    /// Leaves one connection out of `*`, as the filer does its ipserver link.
    struct Hides(ConnId);

    impl Mode for Hides {
        const NAME: &'static str = "test";
        fn hidden(&self, id: ConnId) -> bool {
            id == self.0
        }
    }

    #[test]
    fn all_leaves_out_the_connections_the_mode_hides() {
        let mut node = node();
        let mut ctx = node.context();
        let a = ctx.dial("127.0.0.1:9");
        let b = ctx.dial("127.0.0.1:9");
        let core = core();
        assert_eq!(core.resolve(&ctx, &Hides(a), &Target::All), Ok(vec![b]));
        assert_eq!(core.resolve(&ctx, &Serve, &Target::All), Ok(vec![a, b]));
        // An id still names a hidden connection.
        let first = Target::List(vec![Item::Id(a.0)]);
        assert_eq!(core.resolve(&ctx, &Hides(a), &first), Ok(vec![a]));
    }
}
