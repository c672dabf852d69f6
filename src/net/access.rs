//! Address rules checked when a connection is accepted (`--allow`, `--deny`).
//!
//! A rule is an address (`10.0.0.7`, `::1`) or a network in CIDR form
//! (`10.0.0.0/8`, `fd00::/8`). Deny wins: a peer matching any `--deny` rule is
//! refused. When `--allow` rules are given, only peers matching one of them are
//! admitted. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.7`, what a dual-stack
//! listener reports for an IPv4 peer) are treated as the IPv4 address they carry,
//! in rules and peers alike, so `--deny 10.0.0.7` works whatever the listener.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// One network: an address with a prefix length (`/32` or `/128` for one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Turns an IPv4-mapped IPv6 address into the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A peer address with an IPv4-mapped IPv6 address (what a dual-stack listener
/// reports for an IPv4 peer) turned into the plain IPv4 address, so events, the
/// roster and rules all see `10.0.0.7:5000`, not `[::ffff:10.0.0.7]:5000`.
pub(crate) fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(addr.ip()), addr.port())
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl Cidr {
    /// True when `ip` is inside this network (IPv4-mapped peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `ADDR`, `ADDR/LEN`, optionally with the address in brackets
    /// (`[::1]`, `[fd00::]/8`). Host bits beyond the prefix are cleared.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (addr_text, len_text) = match t.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (t, None),
        };
        let addr_text = addr_text
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_text);
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("{s:?} is not an address or network (try 10.0.0.7, 10.0.0.0/8, ::1, fd00::/8)")
        })?;
        let (addr, prefix) = match len_text {
            None => (canonical(addr), None),
            Some(l) => {
                let p: u8 = l
                    .parse()
                    .map_err(|_| format!("{s:?}: {l:?} is not a prefix length"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if p > max {
                    return Err(format!(
                        "{s:?}: prefix length {p} is over {max} for an {} network",
                        if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                    ));
                }
                // An IPv4-mapped network (::ffff:a.b.c.d/96 or longer) is the
                // IPv4 network it carries.
                match addr {
                    IpAddr::V6(v6) if p >= 96 && v6.to_ipv4_mapped().is_some() => {
                        (canonical(addr), Some(p - 96))
                    }
                    _ => (addr, Some(p)),
                }
            }
        };
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.prefix == host {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// The accept-time rules of a listening node. Empty rules admit everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// When not empty, only peers matching one of these are admitted.
    pub allow: Vec<Cidr>,
    /// Peers matching any of these are refused (deny wins over allow).
    pub deny: Vec<Cidr>,
}

impl Access {
    /// Rules from `--allow` and `--deny` values.
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>) -> Self {
        Access { allow, deny }
    }

    /// True when there are no rules (everyone is admitted).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// `Ok` if `ip` may connect, else the reason naming the rule that refused it.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        if let Some(rule) = self.deny.iter().find(|r| r.contains(ip)) {
            return Err(format!("denied by --deny {rule}"));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.contains(ip)) {
            let list: Vec<String> = self.allow.iter().map(Cidr::to_string).collect();
            return Err(format!("not in --allow {}", list.join(",")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(c("127.0.0.1").to_string(), "127.0.0.1");
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("::1").to_string(), "::1");
        assert_eq!(c("[::1]").to_string(), "::1");
        assert_eq!(c("fd00::1/8").to_string(), "fd00::/8");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("::/0").to_string(), "::/0");
        // IPv4-mapped rules become IPv4 rules.
        assert_eq!(c("::ffff:10.0.0.7").to_string(), "10.0.0.7");
        assert_eq!(c("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        for bad in [
            "",
            "x",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/a",
            "1.2.3",
            "host:80",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn matching() {
        assert!(c("127.0.0.0/8").contains(ip("127.0.0.2")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(c("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(c("::ffff:127.0.0.1").contains(ip("127.0.0.1")));
        assert!(c("::1").contains(ip("::1")));
        assert!(!c("::1").contains(ip("127.0.0.1")));
        // Families stay apart: ::/0 is every IPv6 peer, not IPv4 ones.
        assert!(c("::/0").contains(ip("fe80::1")));
        assert!(!c("::/0").contains(ip("10.0.0.1")));
        assert!(!c("::/0").contains(ip("::ffff:10.0.0.1")));
        assert!(c("0.0.0.0/0").contains(ip("::ffff:10.0.0.1")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")));
        assert!(c("fd00::/8").contains(ip("fdff::5")));
        assert!(!c("fd00::/8").contains(ip("fe00::5")));
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let open = Access::default();
        assert!(open.is_open());
        assert!(open.check(ip("1.2.3.4")).is_ok());

        let a = Access::new(vec![c("127.0.0.0/8")], vec![c("127.0.0.2")]);
        assert!(a.check(ip("127.0.0.1")).is_ok());
        assert_eq!(
            a.check(ip("127.0.0.2")).unwrap_err(),
            "denied by --deny 127.0.0.2"
        );
        assert_eq!(
            a.check(ip("::1")).unwrap_err(),
            "not in --allow 127.0.0.0/8"
        );
        let d = Access::new(vec![], vec![c("::1"), c("10.0.0.0/8")]);
        assert!(d.check(ip("127.0.0.1")).is_ok());
        assert!(d.check(ip("::1")).is_err());
        assert!(d.check(ip("::ffff:10.9.9.9")).is_err());
    }
}
