//! Addresses as users write them: `HOST:PORT` dial targets, `HOST:PORT` or `PORT`
//! listening addresses, and a host given a default port. The one place these
//! forms are checked, so the command line, the command language and the modes
//! agree on what they accept and how a mistake is worded.

use super::resolver::lookup;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// True when `addr` has the form `HOST:PORT` a dial needs (`lan-box:80`,
/// `10.0.0.5:80`, `[::1]:80`), as opposed to a bare host (`lan-box`, `::1`).
/// Whether the port is a valid number is the lookup's to say.
pub fn has_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && (host.starts_with('[') || !host.contains(':'))
    })
}

/// The port of `HOST:PORT`, if it has that form and the port is a number that fits.
fn port_of(s: &str) -> Option<u16> {
    if !has_port(s) {
        return None;
    }
    s.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// The prefix of a dial target to reach over TLS: `tls://HOST:PORT`.
pub const TLS_SCHEME: &str = "tls://";

/// Checks a dial target: `HOST:PORT`, or `tls://HOST:PORT` for TLS.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    let hp = s.strip_prefix(TLS_SCHEME).unwrap_or(s);
    match port_of(hp) {
        Some(_) => Ok(s.to_string()),
        None if has_port(s) => Err(format!("{s:?}: the port must be a number from 0 to 65535")),
        None => Err(format!("{s:?} is not HOST:PORT")),
    }
}

/// Checks a listening address: `HOST:PORT` or a bare `PORT`.
pub fn parse_bind_addr(s: &str) -> Result<String, String> {
    if s.parse::<u16>().is_ok() || port_of(s).is_some() {
        Ok(s.to_string())
    } else if has_port(s) || s.bytes().all(|b| b.is_ascii_digit()) {
        Err(format!("{s:?}: the port must be a number from 0 to 65535"))
    } else {
        Err(format!(
            "{s:?} is not HOST:PORT or PORT (e.g. 0.0.0.0:63335, [::]:63335, 9000)"
        ))
    }
}

/// Resolves a listening address: `HOST:PORT`, or a bare `PORT` meaning `0.0.0.0:PORT`.
pub fn parse_bind(addr: &str) -> io::Result<SocketAddr> {
    if let Ok(port) = addr.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    lookup(addr)
}

/// `addr` with `port` added when it names only a host (`10.0.0.5`, `::1`, `lan-box`).
pub fn with_default_port(addr: &str, port: u16) -> String {
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return SocketAddr::new(ip, port).to_string();
    }
    if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_targets_need_a_port() {
        for ok in ["127.0.0.1:80", "[::1]:80", "lan-box:80", "host:70000"] {
            assert!(has_port(ok), "{ok}");
        }
        for bad in ["127.0.0.1", "lan-box", "::1", "fe80::1", "host:", ":80"] {
            assert!(!has_port(bad), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        for ok in ["9000", "0", "0.0.0.0:63335", "[::]:0", "localhost:80"] {
            assert_eq!(parse_bind_addr(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "99999",
            "127.0.0.1:99999",
            "foo",
            "127.0.0.1",
            "::1",
            "host:",
        ] {
            assert!(parse_bind_addr(bad).is_err(), "{bad}");
        }
        assert!(parse_host_port("h:1").is_ok());
        assert_eq!(parse_host_port("tls://h:1").as_deref(), Ok("tls://h:1"));
        assert!(parse_host_port("tls://h").is_err());
        assert!(
            parse_host_port("h:70000")
                .unwrap_err()
                .contains("0 to 65535")
        );
        assert!(parse_host_port("h").unwrap_err().contains("HOST:PORT"));
    }

    #[test]
    fn a_bare_port_listens_everywhere() {
        assert_eq!(parse_bind("9000").unwrap(), "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            parse_bind("127.0.0.1:80").unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
    }

    #[test]
    fn ipserver_address_gets_the_default_port() {
        assert_eq!(with_default_port("10.0.0.5", 5000), "10.0.0.5:5000");
        assert_eq!(with_default_port("::1", 5000), "[::1]:5000");
        assert_eq!(with_default_port("lan-box", 5000), "lan-box:5000");
        assert_eq!(with_default_port("lan-box:6000", 5000), "lan-box:6000");
        assert_eq!(with_default_port("[::1]:6000", 5000), "[::1]:6000");
    }
}
