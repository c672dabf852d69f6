//! Targets of `send`, `multicast` and `close`: ids, addresses, names, or all.

use std::fmt;

/// One element of a target list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A connection id (`1` or `#1`).
    Id(u64),
    /// The `HOST:PORT` of a current connection.
    Addr(String),
    /// A filer peer's name.
    Name(String),
}

/// Who a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connection (`*`).
    All,
    /// A comma-separated list.
    List(Vec<Item>),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Id(i) => write!(f, "#{i}"),
            Item::Addr(a) | Item::Name(a) => f.write_str(a),
        }
    }
}

fn parse_item(s: &str) -> Result<Item, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty target".into());
    }
    if s == "*" {
        return Err("`*` (every connection) cannot be part of a list".into());
    }
    let digits = s.strip_prefix('#').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return digits
            .parse()
            .map(Item::Id)
            .map_err(|_| format!("bad connection id {}", super::quoted(s)));
    }
    if s.starts_with('#') {
        return Err(format!("bad connection id {}", super::quoted(s)));
    }
    if let Some((host, port)) = s.rsplit_once(':')
        && !host.is_empty()
        && port.parse::<u16>().is_ok()
    {
        return Ok(Item::Addr(s.to_string()));
    }
    if s.contains(':') {
        return Err(format!(
            "bad target {} (want an id, HOST:PORT, a name or *)",
            super::quoted(s)
        ));
    }
    Ok(Item::Name(s.to_string()))
}

impl Target {
    /// Parses `*`, `1`, `#1`, `1,3`, `HOST:PORT`, or names.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if s == "*" || s == "all" {
            return Ok(Target::All);
        }
        // IPv6 addresses contain ':' but never ','; split on ',' only.
        let items = s
            .split(',')
            .map(parse_item)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target::List(items))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::All => f.write_str("*"),
            Target::List(v) => {
                for (i, it) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{it}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse("*"), Ok(Target::All));
        assert_eq!(
            Target::parse("1,#3"),
            Ok(Target::List(vec![Item::Id(1), Item::Id(3)]))
        );
        assert_eq!(
            Target::parse("127.0.0.1:80"),
            Ok(Target::List(vec![Item::Addr("127.0.0.1:80".into())]))
        );
        assert_eq!(
            Target::parse("[::1]:80"),
            Ok(Target::List(vec![Item::Addr("[::1]:80".into())]))
        );
        assert_eq!(
            Target::parse("alice"),
            Ok(Target::List(vec![Item::Name("alice".into())]))
        );
        assert!(Target::parse("#x").is_err());
        assert!(Target::parse("1,,2").is_err());
        assert!(Target::parse("a:b").is_err());
        assert!(Target::parse("99999999999999999999999").is_err());
        // Found by fuzzing: `*` with spaces around it, or inside a list, used to
        // become a peer named "*".
        assert_eq!(Target::parse(" * "), Ok(Target::All));
        assert_eq!(Target::parse("all\t"), Ok(Target::All));
        assert!(
            Target::parse("*,1")
                .unwrap_err()
                .contains("cannot be part of a list")
        );
    }
}
