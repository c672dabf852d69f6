//! A node's limits and timers: the options every mode shares (README, "Options").

use super::access::Access;
use crate::protocol::DEFAULT_MAX_BODY;
use std::time::Duration;

/// Limits and timers of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest body accepted from a peer.
    pub max_body: usize,
    /// Largest outbound queue before a peer is dropped as a slow consumer.
    pub max_queue: usize,
    /// Most connections at once; more are accepted and closed at once.
    pub max_conns: usize,
    /// Send `TP:Check` on connections that sent nothing for this long.
    pub heartbeat: Option<Duration>,
    /// Close connections silent for this long.
    pub idle_timeout: Option<Duration>,
    /// Give up on a dial after this long.
    pub connect_timeout: Duration,
    /// Who may connect (`--allow`, `--deny`), checked at accept.
    pub access: Access,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body: DEFAULT_MAX_BODY,
            max_queue: 64 << 20,
            max_conns: 10_000,
            heartbeat: None,
            idle_timeout: None,
            connect_timeout: Duration::from_secs(10),
            access: Access::default(),
        }
    }
}
