//! Events to human lines or JSON objects (docs/PROTOCOL.md §6 for the JSON shapes). Knows nothing of sockets.

mod body;
mod json;
mod sink;
pub mod stdout;
mod text;
mod transfer;

pub use crate::human::{human_size, quoted_name};
pub use body::{BodyFormat, human_body, push_hex};
pub use json::JsonLine;
pub use sink::{MemorySink, Sink, StatusBlock, StdioSink, terminal_rows, terminal_width};
pub use stdout::Paced;
pub use text::{clip_columns, eta, format_table, human_duration, human_rate, short_duration};
pub use transfer::TransferEvent;

use crate::human::is_deceptive;
use crate::net::{ConnInfo, Dir};
use crate::protocol::Message;
use base64::Engine;
use std::fmt::Write;

/// Human lines or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// For people.
    Human,
    /// One JSON object per line, for scripts.
    Json,
}

/// Renders events and notices to a [`Sink`].
pub struct Renderer {
    style: Style,
    body: BodyFormat,
    quiet: bool,
    sink: Box<dyn Sink>,
    line: String,
    json: JsonLine,
    /// The last message's peer id and its address as a JSON string literal: a
    /// connection's address never changes, and formatting it for every message
    /// would cost more than the rest of the line.
    addr_cache: (u64, Vec<u8>),
}

impl Renderer {
    /// A renderer writing to `sink`.
    pub fn new(style: Style, body: BodyFormat, quiet: bool, sink: Box<dyn Sink>) -> Self {
        Renderer {
            style,
            body,
            quiet,
            sink,
            line: String::new(),
            json: JsonLine::default(),
            addr_cache: (0, Vec::new()),
        }
    }

    /// True for `--json`.
    pub fn is_json(&self) -> bool {
        self.style == Style::Json
    }

    /// True for `--quiet`: message events are not shown.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Writes buffered output.
    pub fn flush(&mut self) {
        self.sink.flush();
    }

    /// A notice or error line on stderr.
    pub fn notice(&mut self, text: &str) {
        self.sink.notice(text);
    }

    /// Prints command output (tables, help) on stdout; with `--json`, where stdout
    /// holds only JSON lines, on stderr.
    pub fn print(&mut self, text: &str) {
        for l in text.lines() {
            if self.is_json() {
                self.sink.notice(l);
            } else {
                self.sink.event(l.as_bytes());
            }
        }
    }

    /// Prints command output for scripts (`list`, `peers`, `transfers` with
    /// `--json`) as one JSON line on stdout, `"event"` first as in every event
    /// line (so `grep '^{"event":"list"'` finds it).
    pub fn print_json(&mut self, v: &serde_json::Value) {
        match v
            .as_object()
            .and_then(|o| Some((o, o.get("event")?.as_str()?)))
        {
            Some((o, event)) => {
                let j = self.json(event);
                for (k, x) in o.iter().filter(|(k, _)| *k != "event") {
                    j.raw(k, x.to_string().as_bytes());
                }
                self.emit_json();
            }
            None => self.sink.event(v.to_string().as_bytes()),
        }
    }

    /// A finished JSON object from [`Renderer::json`] goes out as one line.
    pub fn emit_json(&mut self) {
        self.json.finish();
        self.sink.event(self.json.as_bytes());
    }

    /// Starts a JSON event object `{"event":NAME` to add fields to.
    pub fn json(&mut self, event: &str) -> &mut JsonLine {
        self.json.start(event);
        &mut self.json
    }

    fn human(&mut self, f: impl FnOnce(&mut String)) {
        self.line.clear();
        f(&mut self.line);
        self.sink.event(self.line.as_bytes());
    }

    /// The listener is bound.
    pub fn listening(&mut self, addr: &str, tls_fingerprint: Option<&str>) {
        match tls_fingerprint {
            Some(fp) => self
                .sink
                .notice(&format!("listening on {addr} (TLS, SHA-256 {fp})")),
            None => self.sink.notice(&format!("listening on {addr}")),
        }
        if self.is_json() {
            let j = self.json("listening");
            j.str("addr", addr);
            if let Some(fp) = tls_fingerprint {
                j.object("tls", [("fingerprint", fp)].into_iter());
            }
            self.emit_json();
        }
        self.sink.flush();
    }

    fn conn_fields(json: &mut JsonLine, info: &ConnInfo, addr: &str, name: Option<&str>) {
        json.num("peer", info.id.0)
            .str("addr", addr)
            .str("dir", info.dir.as_str());
        if let Some(n) = name {
            json.str("name", n);
        }
        if let Some(t) = &info.tls {
            let mut pairs = vec![("version", t.version), ("cipher", t.cipher.as_str())];
            if let Some(fp) = &t.peer_fingerprint {
                pairs.push(("peer_fingerprint", fp.as_str()));
            }
            json.object("tls", pairs.into_iter());
        }
    }

    /// A connection is up.
    pub fn connected(&mut self, info: &ConnInfo, name: Option<&str>, alive: usize) {
        let addr = info.addr.to_string();
        if self.is_json() {
            let j = self.json("connected");
            Self::conn_fields(j, info, &addr, name);
            j.num("alive", alive as u64);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "+ {} {} {addr}", info.id, info.dir.as_str());
                if let Some(n) = name {
                    let _ = write!(l, " ({n})");
                }
                if let Some(t) = &info.tls {
                    let _ = write!(l, " [{}]", t.version);
                }
                let _ = write!(l, " ({alive} alive)");
            });
        }
    }

    /// A dial failed.
    pub fn connect_failed(&mut self, info: &ConnInfo, addr: &str, reason: &str) {
        if self.is_json() {
            let j = self.json("connect_failed");
            Self::conn_fields(j, info, addr, None);
            j.str("reason", reason);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "! {} {addr} connect failed: {reason}", info.id);
            });
        }
    }

    /// A connection ended.
    pub fn closed(&mut self, info: &ConnInfo, name: Option<&str>, reason: &str, alive: usize) {
        let addr = info.addr.to_string();
        if self.is_json() {
            let j = self.json("closed");
            Self::conn_fields(j, info, &addr, name);
            j.str("reason", reason).num("alive", alive as u64);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "- {} {addr}", info.id);
                if let Some(n) = name {
                    let _ = write!(l, " ({n})");
                }
                let _ = write!(l, " closed: {reason} ({alive} alive)");
            });
        }
    }

    /// A frame arrived. Nothing is formatted when `--quiet`.
    ///
    /// `addr` must be the address of connection `id` (ids are never reused in a
    /// run, so it is formatted once per run of messages from the same peer).
    pub fn message(
        &mut self,
        id: u64,
        addr: &dyn std::fmt::Display,
        dir: Dir,
        from: Option<&str>,
        msg: &Message,
    ) {
        if self.quiet {
            return;
        }
        if self.is_json() {
            let body_format = self.body;
            if self.addr_cache.0 != id || self.addr_cache.1.is_empty() {
                self.line.clear();
                let _ = write!(self.line, "{addr}");
                self.addr_cache.0 = id;
                self.addr_cache.1.clear();
                json::write_str(&mut self.addr_cache.1, &self.line);
            }
            let j = &mut self.json;
            j.start("message");
            j.num("peer", id)
                .raw("addr", &self.addr_cache.1)
                .str("dir", dir.as_str());
            if let Some(f) = from {
                j.str("from", f);
            }
            j.object("header", msg.header.iter());
            j.num("body_len", msg.body.len() as u64);
            json_body(j, &msg.body, body_format);
            self.emit_json();
        } else {
            let body_format = self.body;
            self.human(|l| {
                let _ = write!(l, "< #{id} {addr}");
                if let Some(f) = from {
                    let _ = write!(l, " ({f})");
                }
                for (k, v) in msg.header.iter() {
                    l.push(' ');
                    push_header_text(l, k, true);
                    l.push('=');
                    push_header_text(l, v, false);
                }
                if !msg.body.is_empty() {
                    let _ = write!(l, " [{}]", human_size(msg.body.len() as u64));
                }
                human_body(l, &msg.body, body_format);
            });
        }
    }
}

/// Appends a header key or value to a human line: as it is when that reads
/// back unambiguously, else quoted with Rust escapes. A peer's control
/// characters (line breaks, terminal escape sequences) are always escaped, so
/// a header can neither forge event lines nor drive the terminal.
fn push_header_text(l: &mut String, s: &str, key: bool) {
    if reads_plain(s, key) {
        l.push_str(s);
    } else {
        let _ = write!(l, "{s:?}");
    }
}

/// True when a header key or value can stand unquoted: not empty, no
/// whitespace, control character or `"` (nor `=` in a key). The usual header,
/// printable ASCII, is checked byte by byte without decoding characters.
fn reads_plain(s: &str, key: bool) -> bool {
    if s.is_ascii() {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && !(key && b == b'='))
    } else {
        !s.chars()
            .any(|c| c.is_whitespace() || is_deceptive(c) || c == '"' || (key && c == '='))
    }
}

/// Filer-network events (docs/PROTOCOL.md §6.6–6.8).
impl Renderer {
    /// A peer appeared in the roster.
    pub fn peer_online(&mut self, id: &str, ip: &str, port: u16) {
        if self.is_json() {
            self.json("peer_online")
                .str("id", id)
                .str("ip", ip)
                .num("port", port.into());
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "* {id} online at {ip}:{port}");
            });
        }
    }

    /// A peer left the roster.
    pub fn peer_offline(&mut self, id: &str) {
        if self.is_json() {
            self.json("peer_offline").str("id", id);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "* {id} offline");
            });
        }
    }

    /// The link to the ipserver at `addr` is up: `* ipserver ADDR connected`.
    pub fn ipserver_connected(&mut self, addr: &str) {
        if self.is_json() {
            self.json("ipserver")
                .str("state", "connected")
                .str("addr", addr);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "* ipserver {addr} connected");
            });
        }
    }

    /// The ipserver at `addr` went away (`was_connected`) or could not be
    /// reached; the filer retries every `retry`. One human line:
    /// `* ipserver ADDR lost: REASON; retrying every 2s` (`unreachable` when it
    /// never answered). JSON: `state` `lost` with `was_connected` and
    /// `retry_ms`, and the human line as a notice on stderr.
    pub fn ipserver_lost(
        &mut self,
        addr: &str,
        reason: &str,
        was_connected: bool,
        retry: std::time::Duration,
    ) {
        let text = format!(
            "ipserver {addr} {}: {reason}; retrying every {}",
            if was_connected { "lost" } else { "unreachable" },
            humantime::format_duration(retry)
        );
        if self.is_json() {
            self.json("ipserver")
                .str("state", "lost")
                .str("addr", addr)
                .str("reason", reason)
                .raw(
                    "was_connected",
                    if was_connected { b"true" } else { b"false" },
                )
                .num("retry_ms", retry.as_millis() as u64);
            self.emit_json();
            self.sink.notice(&text);
        } else {
            self.human(|l| {
                let _ = write!(l, "* {text}");
            });
        }
    }

    /// A connection told us its peer name.
    pub fn identified(&mut self, peer: u64, name: &str) {
        if self.is_json() {
            self.json("identified").num("peer", peer).str("name", name);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "= #{peer} is {name}");
            });
        }
    }

    /// A connection claimed a peer name that its key (or address) does not
    /// back: shown as `NAME?`, never a target.
    pub fn unverified(&mut self, peer: u64, name: &str, why: &str) {
        if self.is_json() {
            self.json("identified")
                .num("peer", peer)
                .str("name", name)
                .raw("verified", b"false")
                .str("why", why);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(l, "= #{peer} says it is {name}? ({why})");
            });
        }
    }
}

fn json_body(j: &mut JsonLine, body: &[u8], fmt: BodyFormat) {
    let b64 = || base64::engine::general_purpose::STANDARD.encode(body);
    match fmt {
        BodyFormat::None => {}
        BodyFormat::Auto => match std::str::from_utf8(body) {
            Ok(s) => {
                j.str("body", s);
            }
            Err(_) => {
                j.str("body_base64", &b64());
            }
        },
        BodyFormat::Text => {
            j.str("body", &String::from_utf8_lossy(body));
        }
        BodyFormat::Hex => {
            let mut s = String::new();
            push_hex(&mut s, body);
            j.str("body_hex", &s);
        }
        BodyFormat::Base64 => {
            j.str("body_base64", &b64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{ConnId, State};
    use crate::protocol::Header;

    fn info() -> ConnInfo {
        let addr = "127.0.0.1:51234".parse().unwrap();
        ConnInfo::new(ConnId(3), Dir::In, addr, State::Open, None)
    }

    /// The lines `f` renders in `style`.
    pub(super) fn render(style: Style, f: impl FnOnce(&mut Renderer)) -> Vec<String> {
        let sink = MemorySink::default();
        let lines = sink.lines.clone();
        let mut r = Renderer::new(style, BodyFormat::Auto, false, Box::new(sink));
        f(&mut r);
        lines.lock().unwrap().clone()
    }

    #[test]
    fn human_forms_match_the_spec() {
        let i = info();
        let msg = Message::new(Header::new().with("info", "hello"), b"abc".to_vec());
        let lines = render(Style::Human, |r| {
            r.connected(&i, None, 3);
            r.closed(&i, None, "peer closed", 2);
            r.message(1, &"127.0.0.1:63335", Dir::Out, None, &msg);
        });
        assert_eq!(
            lines,
            vec![
                "+ #3 in 127.0.0.1:51234 (3 alive)",
                "- #3 127.0.0.1:51234 closed: peer closed (2 alive)",
                "< #1 127.0.0.1:63335 info=hello [3 B] abc",
            ]
        );
    }

    #[test]
    fn header_control_characters_are_escaped_in_human_lines() {
        let h = Header::new()
            .with("x\n+ #9 in 6.6.6.6:1 (1 alive)", "v")
            .with("k", "\u{1b}[2J")
            .with("a=b", "c");
        let msg = Message::new(h, Vec::new());
        let lines = render(Style::Human, |r| {
            r.message(1, &"127.0.0.1:63335", Dir::In, None, &msg)
        });
        assert_eq!(
            lines,
            vec![
                r#"< #1 127.0.0.1:63335 "x\n+ #9 in 6.6.6.6:1 (1 alive)"=v k="\u{1b}[2J" "a=b"=c"#
            ]
        );
    }

    #[test]
    fn printed_json_puts_the_event_first() {
        let v = serde_json::json!({"event": "peers", "a": 1, "peers": [{"id": "x"}]});
        let lines = render(Style::Json, |r| {
            r.print_json(&v);
            r.print_json(&serde_json::json!([1]));
        });
        assert_eq!(
            lines,
            [r#"{"event":"peers","a":1,"peers":[{"id":"x"}]}"#, "[1]"]
        );
    }

    #[test]
    fn plain_header_text_agrees_for_every_ascii_character() {
        let slow = |s: &str, key: bool| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || (key && c == '='))
        };
        for b in 0u8..=0x7f {
            let s = format!("a{}b", b as char);
            for key in [true, false] {
                assert_eq!(reads_plain(&s, key), slow(&s, key), "{s:?} key={key}");
            }
        }
        assert!(!reads_plain("", false));
        assert!(reads_plain("日本", true));
        assert!(!reads_plain("日\u{85}本", false));
        assert!(!reads_plain("日\u{3000}本", false));
    }

    #[test]
    fn ipserver_outages_are_one_line() {
        let d = std::time::Duration::from_secs(2);
        let lines = render(Style::Human, |r| {
            r.ipserver_lost("127.0.0.1:5000", "connection refused", false, d);
            r.ipserver_connected("127.0.0.1:5000");
            r.ipserver_lost("127.0.0.1:5000", "peer closed", true, d);
        });
        assert_eq!(
            lines,
            [
                "* ipserver 127.0.0.1:5000 unreachable: connection refused; retrying every 2s",
                "* ipserver 127.0.0.1:5000 connected",
                "* ipserver 127.0.0.1:5000 lost: peer closed; retrying every 2s",
            ]
        );
        let lines = render(Style::Json, |r| {
            r.ipserver_lost("127.0.0.1:5000", "connection refused", false, d)
        });
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["event"], "ipserver");
        assert_eq!(v["state"], "lost");
        assert_eq!(v["was_connected"], false);
        assert_eq!(v["retry_ms"], 2000);
        assert_eq!(v["reason"], "connection refused");
        assert_eq!(
            lines[1],
            "! ipserver 127.0.0.1:5000 unreachable: connection refused; retrying every 2s"
        );
    }

    #[test]
    fn json_message_fields() {
        let msg = Message::new(Header::new().with("k", "v\"x"), vec![0xff, 0]);
        let lines = render(Style::Json, |r| {
            r.message(2, &"1.2.3.4:5", Dir::In, Some("ann"), &msg)
        });
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["event"], "message");
        assert_eq!(v["peer"], 2);
        assert_eq!(v["from"], "ann");
        assert_eq!(v["header"]["k"], "v\"x");
        assert_eq!(v["body_len"], 2);
        assert_eq!(v["body_base64"], "/wA=");
    }

    /// The address is cached per peer id: interleaved peers keep their own.
    #[test]
    fn json_addresses_follow_the_peer() {
        let msg = Message::new(Header::new().with("k", "v"), b"x".to_vec());
        let a: std::net::SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: std::net::SocketAddr = "[::1]:2".parse().unwrap();
        let lines = render(Style::Json, |r| {
            for (id, addr) in [(1, a), (1, a), (2, b), (1, a), (2, b), (2, b)] {
                r.message(id, &addr, Dir::In, None, &msg);
            }
        });
        assert_eq!(lines.len(), 6);
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            let want = if v["peer"] == 1 { a } else { b };
            assert_eq!(v["addr"], want.to_string(), "{l}");
        }
    }
}
