//! `sockmod serve`: keep many clients, print what they send, talk back.

use super::session::Session;
use crate::command::Input;
use crate::net::{ConnId, ConnInfo, Context, Handler};
use crate::protocol::Message;

/// The `serve` handler.
pub struct Serve {
    /// Shared state.
    pub s: Session,
}

impl Handler for Serve {
    type Command = Input;

    fn on_start(&mut self, ctx: &mut Context<'_>) {
        if let Some(a) = ctx.local_addr() {
            self.s.out.listening(&a.to_string());
        }
    }

    fn on_connected(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, alive: usize) {
        self.s.on_connected(ctx, info, alive);
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str) {
        self.s.on_connect_failed(ctx, info, reason);
    }

    fn on_closed(&mut self, ctx: &mut Context<'_>, info: &ConnInfo, reason: &str, alive: usize) {
        self.s.on_closed(ctx, info, reason, alive);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, msg: Message) {
        self.s.show_message(ctx, conn, &msg);
    }

    fn on_command(&mut self, ctx: &mut Context<'_>, input: Input) {
        if let Some(cmd) = self.s.take_input(input) {
            let r = self.s.run_common(ctx, cmd);
            self.s.report(r);
        }
    }

    fn on_notice(&mut self, _ctx: &mut Context<'_>, notice: &str) {
        self.s.out.notice(notice);
    }

    fn on_idle(&mut self, _ctx: &mut Context<'_>) {
        self.s.out.flush();
    }
}
