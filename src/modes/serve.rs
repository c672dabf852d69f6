//! `sockmod serve`: keep many clients, print what they send, talk back.

use super::session::{Core, Mode};
use crate::net::Context;

/// The `serve` mode: the shared behaviour of [`Mode`] and nothing more, after
/// saying where it listens.
#[derive(Debug, Default)]
pub struct Serve;

impl Mode for Serve {
    const NAME: &'static str = "serve";

    fn on_start(&mut self, core: &mut Core, ctx: &mut Context<'_>) {
        core.listening(ctx);
    }
}
