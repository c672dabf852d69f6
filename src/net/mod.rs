//! The shared event loop: one thread, one blocking `mio::Poll`, any number of
//! accepted and dialled connections, behaviour given by a [`Handler`].
//!
//! It knows nothing of the REPL, JSON, or any mode. One idea per file:
//! `event_loop` drives the poll; `core` holds the connection table and what
//! is done to it; [`Context`] is the handler's view; `conn` is one connection
//! (its transport, queue and statistics); `addr` checks the address forms users
//! type; `config` and `error` hold the options and the errors.

mod access;
mod addr;
mod config;
mod conn;
mod context;
mod core;
mod error;
mod event_loop;
mod handler;
mod limits;
mod pake;
mod queue;
mod remote;
mod resolver;
mod tls;

pub use access::{Access, Cidr};
pub use addr::{
    TLS_SCHEME, has_port, parse_bind, parse_bind_addr, parse_host_port, with_default_port,
};
pub use config::{Config, TlsDial, TlsListen};
pub use conn::{ConnId, ConnInfo, Dir, State};
pub use context::{Context, TimerId};
pub use error::{SendError, SendResult, describe};
pub use event_loop::Node;
pub use handler::Handler;
pub use limits::raise_nofile_limit;
pub use pake::Secret;
pub use remote::Remote;
pub use tls::{
    ClientAuth, Identity, TlsInfo, Trust, client_config, fingerprint, parse_fingerprint,
    server_config, server_name, system_roots,
};
