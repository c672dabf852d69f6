//! The callbacks a node's behaviour is made of.

use super::conn::{ConnId, ConnInfo};
use super::context::{Context, TimerId};
use crate::protocol::Message;

/// Behaviour of a node: override the callbacks you need.
///
/// This is the original module's design (subclass a Server or Client and override
/// its callbacks) in Rust form. Every callback runs on the loop thread and gets a
/// [`Context`] to send, broadcast, multicast, close, dial and set timers.
pub trait Handler {
    /// Commands other threads submit through a [`Remote`](super::Remote).
    type Command: Send + 'static;

    /// Once, before the first poll, after the listener (if any) is bound.
    fn on_start(&mut self, _ctx: &mut Context<'_>) {}

    /// An accepted or dialled connection is up; `alive` is how many are open,
    /// this one included.
    fn on_connected(&mut self, _ctx: &mut Context<'_>, _conn: &ConnInfo, _alive: usize) {}

    /// A dial failed (refused, unreachable, timed out, cannot resolve).
    fn on_connect_failed(&mut self, _ctx: &mut Context<'_>, _conn: &ConnInfo, _reason: &str) {}

    /// A connection ended; `alive` is how many remain open.
    fn on_closed(
        &mut self,
        _ctx: &mut Context<'_>,
        _conn: &ConnInfo,
        _reason: &str,
        _alive: usize,
    ) {
    }

    /// A frame arrived. Bare liveness probes (`TP:Check` alone) are not delivered;
    /// a `TP:Check` carrying more keys (the filer's identity frame) is.
    fn on_message(&mut self, _ctx: &mut Context<'_>, _conn: ConnId, _msg: Message) {}

    /// A timer set with [`Context::set_timer`] fired.
    fn on_timer(&mut self, _ctx: &mut Context<'_>, _timer: TimerId) {}

    /// A command arrived from another thread.
    fn on_command(&mut self, _ctx: &mut Context<'_>, _cmd: Self::Command) {}

    /// [`Remote::interrupt`](super::Remote::interrupt) was called (SIGINT or
    /// SIGTERM): stops the node cleanly unless overridden.
    fn on_interrupt(&mut self, ctx: &mut Context<'_>) {
        ctx.stop();
    }

    /// The outbound queue fell to the mark given to [`Context::notify_drained`].
    fn on_drained(&mut self, _ctx: &mut Context<'_>, _conn: ConnId) {}

    /// Something the user should know that is not an event of a connection
    /// (a refused accept, descriptor exhaustion, …).
    fn on_notice(&mut self, _ctx: &mut Context<'_>, notice: &str) {
        eprintln!("{notice}");
    }

    /// The loop is about to block in poll, or to return from
    /// [`Node::run`](super::Node::run): a good moment to flush output.
    fn on_idle(&mut self, _ctx: &mut Context<'_>) {}
}
