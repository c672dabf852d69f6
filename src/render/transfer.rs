//! File transfer events (SPEC §4): JSON `transfer` objects, human lines, and
//! the progress block shown on a terminal.

use super::{Renderer, clip_columns, human_duration, human_rate, terminal_width};
use crate::human::{human_size, quoted_name};
use std::fmt::Write;
use std::time::Duration;

/// One transfer event: `started`, `progress`, `done` or `failed`.
#[derive(Debug, Clone)]
pub struct TransferEvent<'a> {
    /// The transfer number (`cancel N`).
    pub id: u64,
    /// True when sending, false when receiving.
    pub sending: bool,
    /// The connection id.
    pub peer: u64,
    /// The peer's name, once it identified itself.
    pub peer_name: Option<&'a str>,
    /// The peer's address.
    pub addr: &'a str,
    /// The file name as announced on the wire.
    pub name: &'a str,
    /// Bytes moved so far.
    pub bytes: u64,
    /// The file's length.
    pub total: u64,
    /// `started`, `progress`, `done` or `failed`.
    pub state: &'a str,
    /// Why it failed.
    pub reason: Option<&'a str>,
    /// Where a received file was stored (`done`), or the source of a sent one.
    pub path: Option<&'a str>,
    /// Time since it started.
    pub elapsed: Duration,
}

impl TransferEvent<'_> {
    fn who(&self) -> String {
        match self.peer_name {
            Some(n) => format!("{n} (#{})", self.peer),
            None => format!("#{} {}", self.peer, self.addr),
        }
    }
}

impl Renderer {
    /// A transfer event. JSON: every state. Human: `started`, `done` and
    /// `failed` as lines (progress is the status block's job); a failure is
    /// also an error line on stderr unless stdout and stderr share a terminal.
    pub fn transfer(&mut self, ev: &TransferEvent<'_>) {
        if self.is_json() {
            let j = self.json("transfer");
            j.num("transfer", ev.id)
                .str("dir", if ev.sending { "send" } else { "recv" })
                .num("peer", ev.peer);
            if let Some(n) = ev.peer_name {
                j.str("peer_name", n);
            }
            j.str("addr", ev.addr)
                .str("name", ev.name)
                .num("bytes", ev.bytes)
                .num("total", ev.total)
                .str("state", ev.state);
            if let Some(r) = ev.reason {
                j.str("reason", r);
            }
            if let Some(p) = ev.path {
                j.str("path", p);
            }
            j.num("elapsed_ms", ev.elapsed.as_millis() as u64);
            self.emit_json();
        } else if ev.state != "progress" {
            let who = ev.who();
            let size = human_size(ev.total);
            self.human(|l| {
                let _ = write!(l, "~ transfer {} ", ev.id);
                match (ev.state, ev.sending) {
                    ("started", true) => {
                        let _ = write!(l, "sending {} ({size}) to {who}", quoted_name(ev.name));
                    }
                    ("started", false) => {
                        let _ = write!(l, "receiving {} ({size}) from {who}", quoted_name(ev.name));
                    }
                    ("done", s) => {
                        let _ = write!(
                            l,
                            "done: {} {} ({size}) {} {who} in {}, {}",
                            if s { "sent" } else { "received" },
                            quoted_name(ev.name),
                            if s { "to" } else { "from" },
                            human_duration(ev.elapsed),
                            human_rate(ev.total, ev.elapsed)
                        );
                        if let (false, Some(p)) = (s, ev.path) {
                            let _ = write!(l, " -> {p}");
                        }
                    }
                    (state, s) => {
                        let _ = write!(
                            l,
                            "{state}: {} {} {who} after {} of {size}: {}",
                            quoted_name(ev.name),
                            if s { "to" } else { "from" },
                            human_size(ev.bytes),
                            ev.reason.unwrap_or("unknown reason")
                        );
                    }
                }
            });
        }
        if ev.state == "failed" && (self.is_json() || !self.sink.is_terminal()) {
            self.sink.notice(&format!(
                "error: transfer {} ({} {} {}) failed: {}",
                ev.id,
                quoted_name(ev.name),
                if ev.sending { "to" } else { "from" },
                ev.who(),
                ev.reason.unwrap_or("unknown reason")
            ));
        }
    }

    /// True when progress is shown as a status block (human output on a terminal).
    pub fn shows_status(&self) -> bool {
        !self.is_json() && self.sink.is_terminal()
    }

    /// Replaces the progress block (one line per active transfer, clipped to
    /// the terminal's width); empty clears it.
    pub fn status(&mut self, lines: &[String]) {
        if !self.shows_status() {
            return;
        }
        let width = terminal_width().unwrap_or(80).saturating_sub(1).max(20);
        let clipped: Vec<String> = lines.iter().map(|l| clip_columns(l, width)).collect();
        self.sink.status(&clipped);
    }

    /// The user entered a command line (see [`super::Sink::input_line`]).
    pub fn input_line(&mut self) {
        self.sink.input_line();
    }
}

#[cfg(test)]
mod tests {
    use super::super::Style;
    use super::super::tests::render;
    use super::*;

    fn ev<'a>(state: &'a str, reason: Option<&'a str>) -> TransferEvent<'a> {
        TransferEvent {
            id: 3,
            sending: false,
            peer: 2,
            peer_name: Some("bob"),
            addr: "127.0.0.1:5",
            name: "a b.txt",
            bytes: 1024,
            total: 2048,
            state,
            reason,
            path: Some("inbox/a b.txt"),
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn human_lines() {
        let l = render(Style::Human, |r| {
            r.transfer(&ev("started", None));
            r.transfer(&ev("progress", None));
            r.transfer(&ev("done", None));
            r.transfer(&ev("failed", Some("digest mismatch")));
        });
        assert_eq!(
            l,
            [
                "~ transfer 3 receiving \"a b.txt\" (2.0 KiB) from bob (#2)",
                "~ transfer 3 done: received \"a b.txt\" (2.0 KiB) from bob (#2) in 1.5s, 1.3 KiB/s -> inbox/a b.txt",
                "~ transfer 3 failed: \"a b.txt\" from bob (#2) after 1.0 KiB of 2.0 KiB: digest mismatch",
                "! error: transfer 3 (\"a b.txt\" from bob (#2)) failed: digest mismatch",
            ]
        );
    }

    #[test]
    fn json_fields() {
        let l = render(Style::Json, |r| r.transfer(&ev("failed", Some("x"))));
        let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(v["event"], "transfer");
        assert_eq!(v["transfer"], 3);
        assert_eq!(v["dir"], "recv");
        assert_eq!(v["peer"], 2);
        assert_eq!(v["peer_name"], "bob");
        assert_eq!(v["name"], "a b.txt");
        assert_eq!(v["bytes"], 1024);
        assert_eq!(v["total"], 2048);
        assert_eq!(v["state"], "failed");
        assert_eq!(v["reason"], "x");
        assert!(l[1].starts_with("! error: transfer 3"));
    }
}
