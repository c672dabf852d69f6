//! `sockmod connect ADDR...`: a client with many connections.

use super::session::{Core, Mode};
use crate::command::Input;
use crate::net::{ConnId, ConnInfo, Context, State};
use std::collections::{HashSet, VecDeque};

/// Input lines held at most while the initial dials are in progress.
const HOLD: usize = 1024;

/// The `connect` mode.
pub struct Connect {
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
    pub fn new(addrs: Vec<String>, stay: bool) -> Self {
        Connect {
            addrs,
            stay,
            initial: HashSet::new(),
            initial_ok: 0,
            held: VecDeque::new(),
            eof: false,
        }
    }

    fn dial_finished(&mut self, core: &mut Core, ctx: &mut Context<'_>, id: ConnId, ok: bool) {
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
                    core.out.notice("error: every connection failed");
                    core.exit_code = 1;
                }
                ctx.stop();
                return;
            }
            // Held lines run in order, up to a `quit` among them.
            while !ctx.is_stopping() {
                let Some(i) = self.held.pop_front() else {
                    break;
                };
                self.handle(core, ctx, i);
            }
        }
    }

    fn handle(&mut self, core: &mut Core, ctx: &mut Context<'_>, input: Input) {
        if !self.initial.is_empty() {
            self.held.push_back(input);
            if self.held.len() >= HOLD {
                ctx.pause_commands(true);
            }
            return;
        }
        match input {
            Input::Line(_) | Input::Bad(_) => {
                if let Some(cmd) = core.take_input(input) {
                    let r = core.run_common(ctx, &*self, cmd);
                    core.report(r);
                }
            }
            Input::Eof => {
                self.eof = true;
                self.check_done(core, ctx);
            }
        }
    }

    /// At end of input: exit once every dial a command started has finished and
    /// every queue is flushed (or, with `--stay`, once every connection is gone).
    fn check_done(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        if !self.eof || ctx.is_stopping() {
            return;
        }
        let ids = ctx.ids();
        if self.stay {
            if ids.is_empty() {
                core.quit(ctx);
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
            core.quit(ctx);
        } else {
            for id in busy {
                if ctx.queued(id) > 0 {
                    ctx.notify_drained(id, 0);
                }
            }
        }
    }
}

impl Mode for Connect {
    const NAME: &'static str = "connect";

    fn on_start(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        for a in self.addrs.clone() {
            let id = ctx.dial(&a);
            self.initial.insert(id);
        }
        core.refresh_completion(ctx, &*self);
    }

    fn on_connected(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        alive: usize,
    ) {
        core.connected(ctx, &*self, info, alive);
        self.dial_finished(core, ctx, info.id, true);
        self.check_done(core, ctx);
    }

    fn on_connect_failed(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        reason: &str,
    ) {
        core.connect_failed(ctx, &*self, info, reason);
        self.dial_finished(core, ctx, info.id, false);
        self.check_done(core, ctx);
    }

    fn on_closed(
        &mut self,
        core: &mut Core,
        ctx: &mut Context<'_>,
        info: &ConnInfo,
        reason: &str,
        alive: usize,
    ) {
        core.closed(ctx, self, info, reason, alive);
        self.check_done(core, ctx);
    }

    fn on_input(&mut self, core: &mut Core, ctx: &mut Context<'_>, input: Input) {
        self.handle(core, ctx, input);
    }

    fn on_drained(&mut self, core: &mut Core, ctx: &mut Context<'_>, _conn: ConnId) {
        self.check_done(core, ctx);
    }
}
