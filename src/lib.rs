//! sockmod: painless TCP messaging over one small protocol.
//!
//! Layers, each knowing only those above it in this list (`tests/layers.rs`
//! checks it, and that no module imports itself back):
//!
//! - [`human`]: sizes and file names in words, for messages of any layer.
//! - [`protocol`]: the frame codec (no sockets).
//! - [`net`]: the event loop ([`net::Node`]), the connection table, the
//!   [`net::Handler`] trait and its [`net::Context`], transports (TCP, TLS) and
//!   the `--secret` proof.
//! - [`command`]: the command language of the REPL and piped stdin.
//! - [`trust`]: keys and pins on disk (the state directory).
//! - [`filer`]: the filer network's roster and file transfers (facts only;
//!   transfers report through [`filer::transfer::Report`]).
//! - [`render`]: events as human lines or JSON lines, file transfers included.
//! - [`repl`]: the interactive prompt and the reader of piped stdin.
//! - [`modes`]: `serve`, `connect`, `ipserver` and `filer`, each a
//!   [`modes::Mode`] run by the one generic handler [`modes::Session`].
//! - [`cli`], [`app`], [`completions`]: the command line, wiring a mode to the
//!   loop and its front end, and shell completion scripts.
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod command;
pub mod completions;
pub mod filer;
pub mod human;
pub mod modes;
pub mod net;
pub mod protocol;
pub mod render;
pub mod repl;
pub mod trust;
