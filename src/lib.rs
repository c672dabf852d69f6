//! sockmod: painless TCP messaging over one small protocol.
//!
//! - [`protocol`]: the frame codec (no sockets).
//! - [`net`]: the event loop, the [`net::Handler`] trait and its [`net::Context`].
pub mod app;
pub mod cli;
pub mod command;
pub mod completions;
pub mod filer;
pub mod modes;
pub mod net;
pub mod protocol;
pub mod render;
pub mod repl;
