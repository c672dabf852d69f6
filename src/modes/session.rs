//! What every mode shares: the renderer, target resolution, and the commands of
//! SPEC §3 that work the same in all of them.

use crate::command::{
    BodySource, Command, CompletionTargets, Input, Item, Outgoing, Target, help_text, quoted,
};
use crate::net::{ConnId, ConnInfo, Context, SendError, State};
use crate::render::{Renderer, format_table, human_size, short_duration};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// State and behaviour common to all modes.
pub struct Session {
    /// `serve`, `connect`, `ipserver` or `filer` (for help and errors).
    pub mode: &'static str,
    /// Where events go.
    pub out: Renderer,
    /// A command failed (piped mode then exits 1).
    pub failed: bool,
    /// Exit status once stopped.
    pub exit_code: i32,
    /// Peer names by connection (filer).
    pub names: HashMap<ConnId, String>,
    /// Shared with the REPL's completer; `None` when reading piped input.
    completion: Option<CompletionTargets>,
    /// Names offered for completion besides the connections (the filer's roster).
    pub completion_extra: Vec<String>,
    /// Connections that are not peers (the filer's ipserver link): left out of `*`.
    pub hidden: HashSet<ConnId>,
}

impl Session {
    /// A session for `mode`: at a prompt when `completion` is given (the list
    /// the prompt completes from), else reading piped input.
    pub fn new(mode: &'static str, out: Renderer, completion: Option<CompletionTargets>) -> Self {
        Session {
            mode,
            out,
            failed: false,
            exit_code: 0,
            names: HashMap::new(),
            completion,
            completion_extra: Vec::new(),
            hidden: HashSet::new(),
        }
    }

    /// True when commands come from a pipe rather than a person at a prompt.
    pub fn piped(&self) -> bool {
        self.completion.is_none()
    }

    /// Reports a failed command: one line on stderr; piped mode will exit 1.
    pub fn error(&mut self, msg: &str) {
        self.failed = true;
        self.out.notice(&format!("error: {msg}"));
    }

    /// Stops the node; exit 1 if a piped command failed.
    pub fn quit(&mut self, ctx: &mut Context<'_>) {
        if self.piped() && self.failed {
            self.exit_code = 1;
        }
        ctx.stop();
    }

    /// Updates the completion list: the live connections, the peer names, and
    /// [`Session::completion_extra`].
    pub fn refresh_completion(&mut self, ctx: &Context<'_>) {
        if let Some(c) = &self.completion {
            let mut v: Vec<String> = ctx.ids().iter().map(|i| i.to_string()).collect();
            for n in self.names.values().chain(&self.completion_extra) {
                if !v.contains(n) {
                    v.push(n.clone());
                }
            }
            if let Ok(mut g) = c.lock() {
                *g = v;
            }
        }
    }

    /// The peer name of a connection, if known.
    pub fn name(&self, id: ConnId) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// The live connections to the peer named `name`, in id order.
    pub fn conns_named(&self, ctx: &Context<'_>, name: &str) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .names
            .iter()
            .filter(|(id, n)| *n == name && ctx.info(**id).is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Renders a message event (nothing for `TP:Check` frames, which are probes
    /// and identities, never messages).
    pub fn show_message(
        &mut self,
        ctx: &Context<'_>,
        conn: ConnId,
        msg: &crate::protocol::Message,
    ) {
        if self.out.is_quiet() || msg.header.is_check() {
            return;
        }
        if let Some(i) = ctx.info(conn) {
            let from = self.names.get(&conn).map(String::as_str);
            self.out.message(conn.0, &i.addr, i.dir, from, msg);
        }
    }

    /// Renders a connected event.
    pub fn on_connected(&mut self, ctx: &Context<'_>, info: &ConnInfo, alive: usize) {
        let name = self.names.get(&info.id).cloned();
        self.out.connected(info, name.as_deref(), alive);
        self.refresh_completion(ctx);
    }

    /// Renders a closed event and forgets the connection's name.
    pub fn on_closed(&mut self, ctx: &Context<'_>, info: &ConnInfo, reason: &str, alive: usize) {
        let name = self.names.remove(&info.id);
        self.out.closed(info, name.as_deref(), reason, alive);
        self.refresh_completion(ctx);
    }

    /// Renders a failed dial (event on stdout, error on stderr), saying how many
    /// messages sent to it while it was being dialled were dropped.
    pub fn on_connect_failed(&mut self, ctx: &Context<'_>, info: &ConnInfo, reason: &str) {
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
        self.refresh_completion(ctx);
    }

    /// Resolves a target to connection ids; an unknown one is an error.
    pub fn resolve(&self, ctx: &Context<'_>, target: &Target) -> Result<Vec<ConnId>, String> {
        match target {
            Target::All => {
                let mut ids = ctx.ids();
                ids.retain(|i| !self.hidden.contains(i));
                if ids.is_empty() {
                    Err("no connections".into())
                } else {
                    Ok(ids)
                }
            }
            Target::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    let id = self.resolve_item(ctx, it)?;
                    if !out.contains(&id) {
                        out.push(id);
                    }
                }
                Ok(out)
            }
        }
    }

    /// The connection one element of a target list names.
    fn resolve_item(&self, ctx: &Context<'_>, it: &Item) -> Result<ConnId, String> {
        let found = match it {
            Item::Id(n) => ctx.info(ConnId(*n)).map(|i| i.id),
            Item::Addr(a) => ctx
                .conns()
                .iter()
                .find(|i| i.addr.to_string() == *a || ctx.target(i.id) == Some(a))
                .map(|i| i.id),
            Item::Name(n) => self.conns_named(ctx, n).first().copied(),
        };
        found.ok_or_else(|| match it {
            Item::Id(n) => format!("no connection #{n}"),
            Item::Addr(a) => format!("no connection to {}", quoted(a)),
            Item::Name(n) => match self.mode {
                "filer" => format!(
                    "no connection to a peer named {} (try `dial NAME`)",
                    quoted(n)
                ),
                "ipserver" => format!("no connection from a peer named {}", quoted(n)),
                _ => format!(
                    "bad target {} (want an id like 1 or #1, a list 1,3, HOST:PORT or *)",
                    quoted(n)
                ),
            },
        })
    }

    /// Reads a message's body.
    pub fn load_body(&self, ctx: &Context<'_>, src: &BodySource) -> Result<Vec<u8>, String> {
        match src {
            BodySource::None => Ok(Vec::new()),
            BodySource::Text(t) => Ok(t.clone().into_bytes()),
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
    pub fn run_common(&mut self, ctx: &mut Context<'_>, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::Help(topic) => {
                let text = help_text(self.mode, topic.as_deref())?;
                self.out.print(&text);
            }
            Command::List => {
                if self.out.is_json() {
                    self.list_json(ctx);
                } else {
                    let table = self.list_table(ctx);
                    self.out.print(&table);
                }
            }
            Command::Connect(addr) => {
                ctx.dial(&addr);
                self.refresh_completion(ctx);
            }
            Command::Send(t, msg) | Command::Multicast(t, msg) => {
                let ids = self.resolve(ctx, &t)?;
                self.send_to(ctx, &ids, &msg)?;
            }
            Command::Broadcast(msg) => {
                let ids = self.resolve(ctx, &Target::All)?;
                self.send_to(ctx, &ids, &msg)?;
            }
            Command::Close(t) => {
                for id in self.resolve(ctx, &t)? {
                    ctx.close(id, "closed by user");
                }
            }
            Command::Quit => self.quit(ctx),
            other => {
                return Err(format!(
                    "{} is not available in {} mode",
                    other.name(),
                    self.mode
                ));
            }
        }
        Ok(())
    }

    /// `list` with `--json`: one `{"event":"list","conns":[…]}` line.
    fn list_json(&mut self, ctx: &Context<'_>) {
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
                if let Some(n) = self.names.get(&i.id) {
                    v["name"] = n.clone().into();
                }
                v
            })
            .collect();
        self.out
            .print_json(&serde_json::json!({"event": "list", "conns": conns}));
    }

    /// The `list` table.
    fn list_table(&self, ctx: &Context<'_>) -> String {
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
            if let Some(n) = self.names.get(&i.id) {
                addr = format!("{addr} ({n})");
            }
            let seen = if i.state == State::Connecting {
                "-".to_string()
            } else {
                format!("{} ago", short_duration(now.duration_since(i.last_seen)))
            };
            rows.push([
                i.id.to_string(),
                i.dir.as_str().into(),
                addr,
                i.state.as_str().into(),
                short_duration(now.duration_since(i.since)),
                seen,
                format!("{}/{}", i.msgs_in, i.msgs_out),
                format!("{}/{}", human_size(i.bytes_in), human_size(i.bytes_out)),
            ]);
        }
        format_table(&rows)
    }
}

impl Session {
    /// Parses a line, reporting a bad one; `None` when there is nothing to run.
    pub fn parse_line(&mut self, line: &str) -> Option<Command> {
        self.out.input_line();
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
    }

    /// The command an input asks to run: a line is parsed (a bad one reported,
    /// as is a line that could not be read); end of input gives none (servers
    /// keep running after it; `connect` looks at it first).
    pub fn take_input(&mut self, input: Input) -> Option<Command> {
        match input {
            Input::Line(l) => self.parse_line(&l),
            Input::Bad(reason) => {
                self.error(&reason);
                None
            }
            Input::Eof => None,
        }
    }
}
