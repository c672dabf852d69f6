//! The modes: each one a [`Mode`] (what it does differently), run on the loop by
//! the one generic handler [`Session`] (what they all share).

pub mod connect;
pub mod filer;
pub mod ipserver;
pub mod serve;
pub mod session;

pub use connect::Connect;
pub use filer::{Filer, FilerConfig, FilerSecurity};
pub use ipserver::Ipserver;
pub use serve::Serve;
pub use session::{Core, Mode, PeerNames, Session};
