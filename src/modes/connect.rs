//! `sockmod connect ADDR...`: a client with many connections.

use super::session::Session;
use crate::command::Input;
use crate::net::{ConnId, ConnInfo, Context, Handler, State};
use crate::protocol::Message;
use std::collections::{HashSet, VecDeque};

/// Input lines held at most while the initial dials are in progress.
const HOLD: usize = 1024;

/// The `connect` handler.
pub struct Connect {
    /// Shared state.
    pub s: Session,
    /// Addresses to dial at start.
    pub addrs: Vec<String>,
    /// After end of input, keep running until every connection closes.
    pub stay: bool,
    /// Initial dials not yet finished.
    initial: HashSet<ConnId>,
    initial_ok: usize,
    /// Input held until the initial dials finish (at most [`HOLD`] lines; then
    /// the loop stops taking input, so the reader waits).
    held: VecDeque<Input>,
    eof: bool,
}

impl Connect {
    /// A client that dials `addrs` at start.
    pub fn new(s: Session, addrs: Vec<String>, stay: bool) -> Self {
        Connect {
            s,
            addrs,
            stay,
            initial: HashSet::new(),
            initial_ok: 0,
            held: VecDeque::new(),
            eof: false,
        }
    }

    fn dial_finished(&mut self, ctx: &mut Context<'_>, id: ConnId, ok: bool) {
        if !self.initial.remove(&id) {
            return;
        }
        if ok {
            self.initial_ok += 1;
        }
        if self.initial.is_empty() {
            ctx.pause_commands(false);
            if self.initial_ok == 0 {
                // Our own shutdown (a signal) fails pending dials too: not an error.
                if !ctx.is_stopping() {
                    self.s.out.notice("error: every connection failed");
                    self.s.exit_code = 1;
                }
                ctx.stop();
                return;
            }
            // Held lines run in order, up to a `quit` among them.
            while !ctx.is_stopping() {
                let Some(i) = self.held.pop_front() else {
                    break;
                };
                self.handle(ctx, i);
            }
        }
    }

    fn handle(&mut self, ctx: &mut Context<'_>, input: Input) {
        if !self.initial.is_empty() {
            self.held.push_back(input);
            if self.held.len() >= HOLD {
                ctx.pause_commands(true);
            }
            return;
        }
        match input {
            Input::Line(_) | Input::Bad(_) => {
                if let Some(cmd) = self.s.take_input(input) {
                    let r = self.s.run_common(ctx, cmd);
                    self.s.report(r);
                }
            }
            Input::Eof => {
                self.eof = true;
                self.check_done(ctx);
            }
        }
    }

    /// At end of input: exit once every dial a command started has finished and
    /// every queue is flushed (or, with `--stay`, once every connection is gone).
    fn check_done(&mut self, ctx: &mut Context<'_>) {
        if !self.eof || ctx.is_stopping() {
            return;
        }
        let ids = ctx.ids();
        if self.stay {
            if ids.is_empty() {
                self.s.quit(ctx);
            }
            return;
        }
        let dialling = |ctx: &Context<'_>, i: ConnId| {
            ctx.info(i).is_some_and(|c| c.state == State::Connecting)
        };
        // A dial still in progress ends in on_connected or on_connect_failed,
        // which look again.
        let busy: Vec<ConnId> = ids
            .into_iter()
            .filter(|&i| ctx.queued(i) > 0 || dialling(ctx, i))
            .collect();
        if busy.is_empty() {
            self.s.quit(ctx);
        } else {
            for id in busy {
                if ctx.queued(id) > 0 {
                    ctx.notify_drained(id, 0);
                }
            }
        }
    }
}

impl Handler for Connect {
    type Command = Input;

    fn on_start(&mut self, ctx: &mut Context<'_>) {
        for a in self.addrs.clone() {
            let id = ctx.dial(&a);
            self.initial.insert(id);
        }
        self.s.refresh_completion(ctx);
    }

    fn on_connected(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, alive: usize) {
        self.s.on_connected(ctx, info, alive);
        self.dial_finished(ctx, info.id, true);
        self.check_done(ctx);
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str) {
        self.s.on_connect_failed(ctx, info, reason);
        self.dial_finished(ctx, info.id, false);
        self.check_done(ctx);
    }

    fn on_closed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str, alive: usize) {
        self.s.on_closed(ctx, info, reason, alive);
        self.check_done(ctx);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        self.s.show_message(ctx, conn, &msg);
    }

    fn on_command(&mut self, ctx: &mut Context<'_>, input: Input) {
        self.handle(ctx, input);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, _conn: ConnId) {
        self.check_done(ctx);
    }

    fn on_notice(&mut self, _ctx: &mut Context<'_>, notice: &str) {
        self.s.out.notice(notice);
    }

    fn on_idle(&mut self, _ctx: &mut Context<'_>) {
        self.s.out.flush();
    }
}
