//! The modes: each one a [`Handler`](crate::net::Handler) on the shared loop.

pub mod connect;
pub mod serve;
pub mod session;

pub use connect::Connect;
pub use serve::Serve;
pub use session::{CompletionTargets, Input, Session};
