//! Errors of the loop: human descriptions of socket errors, and why a send failed.

use super::conn::ConnId;
use crate::protocol::EncodeError;
use std::fmt;
use std::io;

/// Describes an I/O error as a short lower-case reason, e.g. `connection refused`.
pub fn describe(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let fixed = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by peer",
        K::ConnectionAborted => "connection aborted",
        K::BrokenPipe => "broken pipe",
        K::TimedOut => "timed out",
        K::AddrInUse => "address in use",
        K::AddrNotAvailable => "address not available",
        K::PermissionDenied => "permission denied",
        K::NotFound => "not found",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    // getaddrinfo's errors: the reason is what follows the prefix.
    let text = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(text);
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => "unknown error".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short() {
        assert_eq!(
            describe(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            "connection refused"
        );
        assert_eq!(
            describe(&io::Error::from_raw_os_error(24)),
            "too many open files"
        );
        let lookup =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(describe(&lookup), "name or service not known");
    }
}

/// Why a send did not queue anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No such connection (never existed, or closed).
    NoSuchConn(ConnId),
    /// The connection is closing.
    Closing(ConnId),
    /// The frame cannot be encoded.
    Encode(EncodeError),
    /// The queue passed `--max-queue`: the connection was dropped.
    SlowConsumer(ConnId),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoSuchConn(id) => write!(f, "no connection {id}"),
            SendError::Closing(id) => write!(f, "connection {id} is closing"),
            SendError::Encode(e) => write!(f, "cannot encode frame: {e}"),
            SendError::SlowConsumer(id) => write!(f, "{id} dropped as a slow consumer"),
        }
    }
}

impl std::error::Error for SendError {}

/// One connection's outcome of a multicast.
pub type SendResult = (ConnId, Result<(), SendError>);
