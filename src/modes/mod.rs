//! The modes: each one a [`Handler`](crate::net::Handler) on the shared loop.

pub mod connect;
pub mod filer;
pub mod ipserver;
pub mod serve;
pub mod session;

pub use connect::Connect;
pub use filer::{Filer, FilerConfig};
pub use ipserver::Ipserver;
pub use serve::Serve;
pub use session::Session;
