//! The ipserver roster body (`ID,IP,PORT;ID,IP,PORT;…`) and peer-name rules.

use std::net::IpAddr;

/// One roster entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The peer's name.
    pub id: String,
    /// Its address as the ipserver saw it.
    pub ip: IpAddr,
    /// Its listening port.
    pub port: u16,
}

/// Checks a peer name: non-empty, no `,` `;` `:`, no control, invisible or
/// direction-changing characters (a name must read as what it is), and no
/// leading or trailing whitespace (receivers trim header values and roster fields,
/// so `" ann"` would come back as `"ann"`).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("a peer name cannot be empty".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| matches!(c, ',' | ';' | ':') || crate::human::is_deceptive(*c))
    {
        return Err(format!(
            "peer name {} contains {:?}; names may not contain , ; : or control, invisible or direction-changing characters",
            shown(id),
            c
        ));
    }
    if id.trim() != id {
        return Err(format!(
            "peer name {} starts or ends with whitespace; names may not",
            shown(id)
        ));
    }
    if id.len() > 255 {
        return Err("a peer name is at most 255 bytes".into());
    }
    Ok(())
}

/// Peer-supplied text quoted for a one-line message, clipped to 60 characters:
/// a garbled roster entry or report can be megabytes long.
pub fn shown(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}… ({} bytes)", &s[..i], s.len()),
        None => format!("{s:?}"),
    }
}

/// Formats a roster body.
pub fn format<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (i, e) in entries.into_iter().enumerate() {
        if i > 0 {
            s.push(';');
        }
        let _ = write!(s, "{},{},{}", e.id, e.ip, e.port);
    }
    s
}

/// Parses a roster body; any malformed entry rejects the whole body, so a garbled
/// frame never evicts good entries.
pub fn parse(body: &[u8]) -> Result<Vec<Entry>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "roster is not UTF-8".to_string())?;
    let mut out = Vec::new();
    for item in text.split(';').filter(|s| !s.trim().is_empty()) {
        let mut parts = item.split(',');
        let (Some(id), Some(ip), Some(port), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("roster entry {} is not ID,IP,PORT", shown(item)));
        };
        let id = id.trim();
        check_id(id).map_err(|e| format!("roster entry {}: {e}", shown(item)))?;
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("roster entry {}: bad IP address", shown(item)))?;
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| format!("roster entry {}: bad port", shown(item)))?;
        out.push(Entry {
            id: id.to_string(),
            ip,
            port,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_original_body() {
        let body = b"Stan,192.168.1.5,63330;Ann,192.168.1.7,63331";
        let v = parse(body).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].id, "Ann");
        assert_eq!(format(&v).as_bytes(), body);
        assert_eq!(parse(b"").unwrap(), vec![]);
        assert_eq!(parse(b"x,::1,5").unwrap()[0].ip.to_string(), "::1");
    }

    #[test]
    fn lenient_like_the_header_decoder() {
        // Spaces around fields and a trailing `;`, as hand-written senders produce.
        let v = parse(b"Stan, 192.168.1.5 ,63330; Ann,::ffff:10.0.0.1,1;").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].id, "Stan");
        assert_eq!(v[1].ip.to_string(), "::ffff:10.0.0.1");
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            &b"a,b"[..],
            b"a,1.2.3.4,x",
            b"a,1.2.3.4,70000",
            b"\xff",
            b",1.2.3.4,1",
            b"a,1.2.3.4,1,2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("alice").is_ok());
        assert!(check_id("Ann Lee").is_ok());
        for bad in [
            "", " ", "a,b", "a;b", "a:b", "a\nb", "a\u{7}", " a", "a\t", "a\u{85}",
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
