//! The shared event loop (SPEC §2, §5): one thread, one blocking `mio::Poll`, any
//! number of accepted and dialled connections, behaviour given by a [`Handler`].
//!
//! It knows nothing of the REPL, JSON, or any mode.

mod access;
mod conn;
mod error;
mod handler;
mod limits;
mod node;
mod remote;
mod resolver;

pub use access::{Access, Cidr};
pub use conn::{ConnId, ConnInfo, Dir, State};
pub use error::describe;
pub use handler::Handler;
pub use limits::raise_nofile_limit;
pub use node::{Config, Context, Node, SendError, SendResult, parse_bind};
pub use remote::Remote;
pub use resolver::has_port;
