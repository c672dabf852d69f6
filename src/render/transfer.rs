//! File transfers drawn (README, "File transfer"): JSON `transfer`
//! objects, human lines, the `transfers` table and the progress block shown on
//! a terminal. The facts come from [`crate::filer::transfer`], which reports
//! them through its [`Report`] trait, implemented here by the [`Renderer`].

use super::{
    Renderer, clip_columns, eta, format_table, human_duration, human_rate, terminal_width,
};
use crate::filer::transfer::{BatchSummary, Change, Listed, Phase, Record, Report};
use crate::human::{human_size, quoted_name};
use std::fmt::Write;
use std::time::{Duration, Instant};

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
    /// Sending, `done`: the name the receiver stored the file under.
    pub stored: Option<&'a str>,
    /// Time since it started.
    pub elapsed: Duration,
    /// Resumed: the bytes the receiver already held.
    pub resumed_from: Option<u64>,
}

impl TransferEvent<'_> {
    fn who(&self) -> String {
        match self.peer_name {
            Some(n) => format!("{n} (#{})", self.peer),
            None => format!("#{} {}", self.peer, self.addr),
        }
    }
}

/// The word for a record's phase (the `state` of `transfers`).
fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Queued => "queued",
        Phase::Offered => "offered",
        Phase::Active => "active",
        Phase::Confirming => "confirming",
        Phase::Done => "done",
        Phase::Failed => "failed",
    }
}

/// The `state` of a transfer event.
fn change_word(c: Change) -> &'static str {
    match c {
        Change::Offered => "offered",
        Change::Started => "started",
        Change::Progress => "progress",
        Change::Done => "done",
        Change::Failed => "failed",
    }
}

/// The event for record `r` on `change`.
fn event<'a>(
    r: &'a Record,
    change: Change,
    peer_name: Option<&'a str>,
    now: Instant,
) -> TransferEvent<'a> {
    TransferEvent {
        id: r.id,
        sending: r.sending,
        peer: r.conn.0,
        peer_name,
        addr: &r.addr,
        name: &r.name,
        bytes: r.bytes,
        total: r.total,
        state: change_word(change),
        reason: r.reason.as_deref(),
        path: if change == Change::Done && !r.sending {
            r.path.as_deref()
        } else {
            None
        },
        stored: if change == Change::Done && r.sending {
            r.stored.as_deref()
        } else {
            None
        },
        elapsed: r.elapsed(now),
        resumed_from: r.resumed_from,
    }
}

fn percent(r: &Record) -> u64 {
    if r.total == 0 {
        100
    } else {
        (r.bytes as u128 * 100 / r.total as u128) as u64
    }
}

/// The progress line at full width:
/// `t3 send "a.iso" to bob   45%  1.2 MiB/2.0 MiB  12.3 MiB/s  ETA 3s`.
#[cfg(test)]
fn progress_line(r: &Record, peer_name: Option<&str>) -> String {
    fit_progress(r, peer_name, usize::MAX)
}

/// The progress line made to fit `width` columns. What goes first, as the
/// terminal narrows: the peer, then the sizes (with the name shortened when
/// that is not enough), then the name down to a few characters; the
/// percentage, the rate and the ETA stay to the last.
fn fit_progress(r: &Record, peer_name: Option<&str>, width: usize) -> String {
    let id = format!("t{}", r.id);
    let dir = if r.sending { "send" } else { "recv" };
    let name = shown_name(r);
    let peer = format!(
        " {} {}",
        if r.sending { "to" } else { "from" },
        r.who(peer_name)
    );
    let (full, short) = if r.phase == Phase::Confirming {
        (
            "100%  waiting for the receiver to confirm".to_string(),
            "100%  confirming".to_string(),
        )
    } else {
        let rate = r.rate();
        let (shown_rate, eta) = if rate > 0.0 {
            let left = r.total.saturating_sub(r.bytes) as f64 / rate;
            (format!("{}/s", human_size(rate as u64)), eta(left))
        } else {
            ("-".to_string(), "-".to_string())
        };
        let sizes = format!("{}/{}", human_size(r.bytes), human_size(r.total));
        (
            format!("{:>3}%  {sizes}  {shown_rate}  ETA {eta}", percent(r)),
            format!("{}%  {shown_rate}  ETA {eta}", percent(r)),
        )
    };
    let cols = |s: &str| s.chars().map(super::text::columns).sum::<usize>();
    // Each try: peer or not, the tail, the least columns the name may take.
    let tries: [(&str, &str, usize); 5] = [
        (&peer, &full, usize::MAX),
        ("", &full, usize::MAX),
        ("", &full, 12),
        ("", &short, usize::MAX),
        ("", &short, 5),
    ];
    for (peer, tail, least) in tries {
        let fixed = cols(&id) + 1 + cols(dir) + 1 + cols(peer) + 2 + cols(tail);
        let room = width.saturating_sub(fixed);
        let name_cols = cols(&name);
        if name_cols <= room {
            return format!("{id} {dir} {name}{peer}  {tail}");
        }
        if least != usize::MAX && room >= least {
            let name = clip_columns(&name, room);
            return format!("{id} {dir} {name}{peer}  {tail}");
        }
    }
    // Narrower still: no direction, single spaces, and the name as short as
    // it gets.
    let short = short.replace("  ", " ");
    clip_columns(&format!("{id} {} {short}", clip_columns(&name, 4)), width)
}

/// The name as shown: a folder batch's with a slash and its files done and
/// in all (`"photos"/ 12/2003 files`).
fn shown_name(r: &Record) -> String {
    match r.files {
        Some((done, all)) => format!("{}/ {done}/{all} files", quoted_name(&r.name)),
        None => quoted_name(&r.name),
    }
}

/// A row of the `transfers` table: `rate` and `time` are `-` until the
/// transfer has moved bytes (queued, or failed before its turn).
fn row(r: &Record, peer_name: Option<&str>, now: Instant) -> [String; 9] {
    let (rate, time) = match (r.phase, r.started) {
        (Phase::Queued, _) | (_, None) => ("-".to_string(), "-".to_string()),
        (phase, Some(_)) => {
            let elapsed = r.elapsed(now);
            let rate = if phase == Phase::Active && r.rate() > 0.0 {
                format!("{}/s", human_size(r.rate() as u64))
            } else {
                human_rate(r.bytes, elapsed)
            };
            (rate, human_duration(elapsed))
        }
    };
    let outcome = match (r.phase, &r.reason, &r.path) {
        (Phase::Failed, Some(why), _) => format!("failed: {why}"),
        (Phase::Done, _, Some(p)) if !r.sending => format!("done -> {p}"),
        (p, _, _) => phase_word(p).to_string(),
    };
    let outcome = match r.resumed_from {
        Some(at) => format!("{outcome}, resumed at {}", human_size(at)),
        None => outcome,
    };
    [
        format!("t{}", r.id),
        if r.sending { "send" } else { "recv" }.into(),
        r.who(peer_name),
        shown_name(r),
        human_size(r.total),
        format!("{}%", percent(r)),
        rate,
        time,
        outcome,
    ]
}

/// The JSON object of `transfers --json`.
fn json(r: &Record, peer_name: Option<&str>, now: Instant) -> serde_json::Value {
    let mut v = serde_json::json!({
        "transfer": r.id,
        "dir": if r.sending { "send" } else { "recv" },
        "peer": r.conn.0,
        "addr": r.addr,
        "name": r.name,
        "bytes": r.bytes,
        "total": r.total,
        "state": phase_word(r.phase),
        "elapsed_ms": r.elapsed(now).as_millis() as u64,
    });
    let secs = r.elapsed(now).as_secs_f64();
    if secs > 0.0 {
        v["rate_bps"] = ((r.bytes as f64 / secs) as u64).into();
    }
    if let Some(n) = peer_name {
        v["peer_name"] = n.into();
    }
    if let Some(why) = &r.reason {
        v["reason"] = why.clone().into();
    }
    if let Some(p) = &r.path {
        v["path"] = p.clone().into();
    }
    if let Some(st) = &r.stored {
        v["stored"] = st.clone().into();
    }
    if let Some(at) = r.resumed_from {
        v["resumed_from"] = at.into();
    }
    if let Some((done, all)) = r.files {
        v["files_done"] = done.into();
        v["files"] = all.into();
    }
    if let Some(p) = r.parent {
        v["batch"] = p.into();
    }
    v
}

impl Report for Renderer {
    fn transfer(&mut self, r: &Record, change: Change, peer_name: Option<&str>, now: Instant) {
        if change == Change::Offered {
            self.offer(r, peer_name);
            return;
        }
        Renderer::transfer(self, &event(r, change, peer_name, now));
    }

    /// A table, or one JSON line with `--json`.
    fn transfers(&mut self, all: &[Listed<'_>], now: Instant) {
        if self.is_json() {
            let all: Vec<serde_json::Value> = all
                .iter()
                .map(|l| json(l.record, l.peer_name, now))
                .collect();
            self.print_json(&serde_json::json!({"event": "transfers", "transfers": all}));
            return;
        }
        if all.is_empty() {
            self.print("no transfers");
            return;
        }
        let mut rows = vec![[
            "#".to_string(),
            "dir".into(),
            "peer".into(),
            "name".into(),
            "size".into(),
            "done".into(),
            "rate".into(),
            "time".into(),
            "state".into(),
        ]];
        rows.extend(all.iter().map(|l| row(l.record, l.peer_name, now)));
        self.print(&format_table(&rows));
    }

    fn progress(&mut self, active: &[Listed<'_>]) {
        let width = status_width();
        let lines: Vec<String> = active
            .iter()
            .map(|l| fit_progress(l.record, l.peer_name, width))
            .collect();
        self.status(&lines);
    }

    fn notice(&mut self, text: &str) {
        Renderer::notice(self, text);
    }

    /// `~ batch: 3 of 4 files sent (12.0 MiB), 1 failed`, or a `batch` event.
    fn batch(&mut self, b: &BatchSummary) {
        if self.is_json() {
            self.json("batch")
                .num("files", b.files as u64)
                .num("sent", b.sent as u64)
                .num("failed", b.failed as u64)
                .num("bytes", b.bytes);
            self.emit_json();
        } else {
            self.human(|l| {
                let _ = write!(
                    l,
                    "~ batch: {} of {} files sent ({}), {} failed",
                    b.sent,
                    b.files,
                    human_size(b.bytes),
                    b.failed
                );
            });
        }
    }

    fn flush(&mut self) {
        Renderer::flush(self);
    }

    fn wants_progress_events(&self) -> bool {
        self.is_json()
    }

    fn shows_progress(&self) -> bool {
        self.shows_status()
    }
}

/// The columns a status line may take: one less than the terminal is wide (a
/// line filling the last column would move the cursor on some terminals),
/// asked afresh at each refresh, so a resized terminal gets lines of its new
/// width.
fn status_width() -> usize {
    terminal_width().unwrap_or(80).saturating_sub(1).max(20)
}

impl Renderer {
    /// A file offered to us: `? bob offers "trip.mov" (4.2 GiB) — accept t3 /
    /// refuse t3`, or an `offer` event.
    pub fn offer(&mut self, r: &Record, peer_name: Option<&str>) {
        if self.is_json() {
            let j = self.json("offer");
            j.num("transfer", r.id).num("peer", r.conn.0);
            if let Some(n) = peer_name {
                j.str("peer_name", n);
            }
            j.str("addr", &r.addr)
                .str("name", &r.name)
                .num("total", r.total)
                .num("files", r.files.map_or(1, |f| f.1));
            self.emit_json();
        } else {
            let who = r.who(peer_name);
            self.human(|l| {
                let _ = write!(
                    l,
                    "? {who} offers {} ({}) — accept t{} / refuse t{}",
                    shown_name(r),
                    human_size(r.total),
                    r.id,
                    r.id
                );
            });
        }
        self.flush();
    }

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
            if let Some(st) = ev.stored {
                j.str("stored", st);
            }
            if let Some(at) = ev.resumed_from {
                j.num("resumed_from", at);
            }
            j.num("elapsed_ms", ev.elapsed.as_millis() as u64);
            self.emit_json();
        } else if ev.state != "progress" {
            let who = ev.who();
            let size = human_size(ev.total);
            self.human(|l| {
                let _ = write!(l, "~ transfer t{} ", ev.id);
                match (ev.state, ev.sending) {
                    ("started", true) => {
                        let _ = write!(l, "sending {} ({size}) to {who}", quoted_name(ev.name));
                    }
                    ("started", false) => {
                        let _ = write!(l, "receiving {} ({size}) from {who}", quoted_name(ev.name));
                        if let Some(at) = ev.resumed_from {
                            let _ = write!(l, ", resumed at {}", human_size(at));
                        }
                    }
                    ("done", s) => {
                        let _ = write!(
                            l,
                            "done: {} {} ({size}) {} {who} in {}, {}",
                            if s { "sent" } else { "received" },
                            quoted_name(ev.name),
                            if s { "to" } else { "from" },
                            human_duration(ev.elapsed),
                            human_rate(ev.total - ev.resumed_from.unwrap_or(0), ev.elapsed)
                        );
                        if let Some(at) = ev.resumed_from {
                            let _ = write!(l, ", resumed at {}", human_size(at));
                        }
                        if let (false, Some(p)) = (s, ev.path) {
                            let _ = write!(l, " -> {p}");
                        }
                        if let (true, Some(st)) = (s, ev.stored) {
                            let _ = write!(l, ", stored as {}", quoted_name(st));
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
                "error: transfer t{} ({} {} {}) failed: {}",
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
        let width = status_width();
        let clipped: Vec<String> = lines.iter().map(|l| clip_columns(l, width)).collect();
        self.sink.status(&clipped);
    }

    /// The node is quitting: waiting for transfers first, or stopping now (see
    /// [`super::Sink::quitting`]).
    pub fn quitting(&mut self, waiting: bool) {
        self.sink.quitting(waiting);
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
    use crate::net::ConnId;

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
            stored: None,
            elapsed: Duration::from_millis(1500),
            resumed_from: None,
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
                "~ transfer t3 receiving \"a b.txt\" (2.0 KiB) from bob (#2)",
                "~ transfer t3 done: received \"a b.txt\" (2.0 KiB) from bob (#2) in 1.5s, 1.3 KiB/s -> inbox/a b.txt",
                "~ transfer t3 failed: \"a b.txt\" from bob (#2) after 1.0 KiB of 2.0 KiB: digest mismatch",
                "! error: transfer t3 (\"a b.txt\" from bob (#2)) failed: digest mismatch",
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
        assert!(l[1].starts_with("! error: transfer t3"));
    }

    #[test]
    fn lines() {
        let now = Instant::now();
        let mut r = Record::new(
            3,
            true,
            ConnId(2),
            "1.2.3.4:5".into(),
            "a.iso".into(),
            2 << 20,
        );
        r.phase = Phase::Active;
        r.started = Some(now - Duration::from_secs(1));
        r.bytes = 1 << 20;
        r.sample(now - Duration::from_secs(1));
        r.bytes = 2 << 19;
        r.sample(now);
        let l = progress_line(&r, Some("bob"));
        assert!(
            l.starts_with("t3 send \"a.iso\" to bob   50%  1.0 MiB/2.0 MiB"),
            "{l}"
        );
        assert!(l.contains("ETA"), "{l}");
        // Narrower: the peer goes, then the sizes and most of the name; the
        // percentage, the rate and the ETA stay.
        let mut m = Record::new(3, true, ConnId(2), "a".into(), "a.iso".into(), 2 << 20);
        m.phase = Phase::Active;
        m.started = Some(now - Duration::from_secs(2));
        m.sample(now - Duration::from_secs(2));
        m.bytes = 1 << 20;
        m.sample(now - Duration::from_secs(1));
        let w = |width| fit_progress(&m, Some("bob"), width);
        assert!(w(100).contains(" to bob "), "{}", w(100));
        assert_eq!(
            w(60),
            "t3 send \"a.iso\"   50%  1.0 MiB/2.0 MiB  1.0 MiB/s  ETA 1s"
        );
        assert_eq!(w(39), "t3 send \"a.iso\"  50%  1.0 MiB/s  ETA 1s");
        assert_eq!(w(37), "t3 send \"a.i…  50%  1.0 MiB/s  ETA 1s");
        assert_eq!(w(30), "t3 \"a.… 50% 1.0 MiB/s ETA 1s");
        for width in [20, 25, 30, 39, 50, 100] {
            let l = w(width);
            assert!(l.chars().count() <= width, "{width}: {l}");
        }
        assert!(w(25).contains("50%"), "{}", w(25));
        let cells = row(&r, None, now);
        assert_eq!(cells[2], "#2 1.2.3.4:5");
        assert_eq!(cells[5], "50%");
        assert_eq!(cells[6], "1.0 MiB/s");
        assert!(cells[7].ends_with('s'), "{cells:?}");
        r.phase = Phase::Failed;
        r.reason = Some("x".into());
        assert_eq!(row(&r, None, now)[8], "failed: x");
        // Queued, or failed before its turn: no rate and no time.
        let mut q = Record::new(4, true, ConnId(2), "a".into(), "b".into(), 10);
        assert_eq!(row(&q, None, now)[6..8], ["-", "-"]);
        q.phase = Phase::Failed;
        q.ended = Some(now);
        assert_eq!(row(&q, None, now)[6..8], ["-", "-"]);
        // A resumed transfer says where it resumed, in the table and in JSON.
        q.phase = Phase::Active;
        q.resumed_from = Some(3_328_599_654);
        assert_eq!(row(&q, None, now)[8], "active, resumed at 3.1 GiB");
        assert_eq!(json(&q, None, now)["resumed_from"], 3_328_599_654u64);
    }
}
