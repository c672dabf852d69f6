//! The record of every transfer of this run: what `transfers` lists, what the
//! events carry, and the progress lines of the status block.

use crate::net::ConnId;
use crate::render::{TransferEvent, eta, human_duration, human_rate, human_size, quoted_name};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The rate is the bytes moved over about this long (the newest samples).
///
/// A sender's bytes advance in steps (it reads chunks whenever its queue
/// drains, and the kernel takes them in bursts as the peer's window opens:
/// on a 650 KB/s link, 1-2 MiB every 2-3 s), so the rate is measured between
/// the moments the count changed, over several steps. With a smoothed per-tick
/// rate, that link showed anything from 50 KiB/s to 860 KiB/s and an ETA
/// jumping between 6 minutes and 1h40m from one refresh to the next.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A pause in progress longer than this (and than twice the longest gap
/// between steps in the window) counts as a slowdown: the rate then takes in
/// the time since the last step.
const STALL_MIN: Duration = Duration::from_secs(2);

/// Where a transfer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for earlier files on the same connection.
    Queued,
    /// Moving bytes.
    Active,
    /// Sent in full; waiting for the receiver's confirmation.
    Confirming,
    /// Complete (sent and confirmed, or received and verified).
    Done,
    /// Failed or cancelled; `reason` says why.
    Failed,
}

impl Phase {
    /// The word shown for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Active => "active",
            Phase::Confirming => "confirming",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    /// True once it has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }
}

/// One transfer.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its number.
    pub id: u64,
    /// Sending (true) or receiving.
    pub sending: bool,
    /// The connection.
    pub conn: ConnId,
    /// The connection's address.
    pub addr: String,
    /// The peer's name, as last known.
    pub peer_name: Option<String>,
    /// The file name as announced.
    pub name: String,
    /// The file's length.
    pub total: u64,
    /// Bytes moved so far.
    pub bytes: u64,
    /// Life stage.
    pub phase: Phase,
    /// Why it failed.
    pub reason: Option<String>,
    /// The source (sending) or where it was stored (received).
    pub path: Option<String>,
    /// When it began moving bytes.
    pub started: Option<Instant>,
    /// When it ended.
    pub ended: Option<Instant>,
    /// `bytes` at the last progress event.
    pub emitted: u64,
    /// Rate in bytes per second over [`RATE_WINDOW`] (for the ETA).
    rate: f64,
    /// `(when, bytes)` at each progress tick within the window, oldest first.
    samples: VecDeque<(Instant, u64)>,
}

impl Record {
    /// A new record.
    pub fn new(
        id: u64,
        sending: bool,
        conn: ConnId,
        addr: String,
        name: String,
        total: u64,
    ) -> Self {
        Record {
            id,
            sending,
            conn,
            addr,
            peer_name: None,
            name,
            total,
            bytes: 0,
            phase: Phase::Queued,
            reason: None,
            path: None,
            started: None,
            ended: None,
            emitted: 0,
            rate: 0.0,
            samples: VecDeque::new(),
        }
    }

    /// Time from start to end (or now).
    pub fn elapsed(&self, now: Instant) -> Duration {
        match self.started {
            Some(s) => self.ended.unwrap_or(now).saturating_duration_since(s),
            None => Duration::ZERO,
        }
    }

    /// Takes a progress sample (one per tick) and updates the rate: the bytes
    /// moved between the first and the last change of the count within
    /// [`RATE_WINDOW`], over the time between them (or until now, when progress
    /// has paused for longer than it usually does).
    pub fn sample(&mut self, now: Instant) {
        if self.samples.back().map(|s| s.1) != Some(self.bytes) {
            self.samples.push_back((now, self.bytes));
        }
        // Keep one change at least the window old, so the span covers it.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (Some(&(t0, b0)), Some(&(t1, b1))) = (self.samples.front(), self.samples.back()) else {
            return;
        };
        let longest_gap = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| b.0.saturating_duration_since(a.0))
            .max()
            .unwrap_or_default();
        let paused = now.saturating_duration_since(t1) > (longest_gap * 2).max(STALL_MIN);
        let end = if paused { now } else { t1 };
        let dt = end.saturating_duration_since(t0).as_secs_f64();
        if dt > 0.2 {
            self.rate = b1.saturating_sub(b0) as f64 / dt;
        }
    }

    /// The event for this record in `state`.
    pub fn event<'a>(
        &'a self,
        state: &'a str,
        peer_name: Option<&'a str>,
        now: Instant,
    ) -> TransferEvent<'a> {
        TransferEvent {
            id: self.id,
            sending: self.sending,
            peer: self.conn.0,
            peer_name,
            addr: &self.addr,
            name: &self.name,
            bytes: self.bytes,
            total: self.total,
            state,
            reason: self.reason.as_deref(),
            path: if state == "done" && !self.sending {
                self.path.as_deref()
            } else {
                None
            },
            elapsed: self.elapsed(now),
        }
    }

    /// The peer: its name, else `#ID ADDR`.
    pub fn who(&self, peer_name: Option<&str>) -> String {
        match peer_name {
            Some(n) => n.to_string(),
            None => format!("#{} {}", self.conn.0, self.addr),
        }
    }

    fn percent(&self) -> u64 {
        if self.total == 0 {
            100
        } else {
            (self.bytes as u128 * 100 / self.total as u128) as u64
        }
    }

    /// The progress line: `#3 send "a.iso" to bob  45%  1.2 MiB/2.0 MiB  12.3 MiB/s  ETA 3s`.
    pub fn progress_line(&self, peer_name: Option<&str>) -> String {
        let head = format!(
            "#{} {} {} {} {}",
            self.id,
            if self.sending { "send" } else { "recv" },
            quoted_name(&self.name),
            if self.sending { "to" } else { "from" },
            self.who(peer_name)
        );
        if self.phase == Phase::Confirming {
            return format!("{head}  100%  waiting for the receiver to confirm");
        }
        let rate = if self.rate > 0.0 {
            format!("{}/s", human_size(self.rate as u64))
        } else {
            "-".to_string()
        };
        let eta = if self.rate > 0.0 {
            let left = self.total.saturating_sub(self.bytes) as f64 / self.rate;
            format!("ETA {}", eta(left))
        } else {
            "ETA -".to_string()
        };
        format!(
            "{head}  {:>3}%  {}/{}  {rate}  {eta}",
            self.percent(),
            human_size(self.bytes),
            human_size(self.total)
        )
    }

    /// A row of the `transfers` table: `rate` and `time` are `-` until the
    /// transfer has moved bytes (queued, or failed before its turn).
    pub fn row(&self, peer_name: Option<&str>, now: Instant) -> [String; 9] {
        let (rate, time) = match (self.phase, self.started) {
            (Phase::Queued, _) | (_, None) => ("-".to_string(), "-".to_string()),
            (phase, Some(_)) => {
                let elapsed = self.elapsed(now);
                let rate = if phase == Phase::Active && self.rate > 0.0 {
                    format!("{}/s", human_size(self.rate as u64))
                } else {
                    human_rate(self.bytes, elapsed)
                };
                (rate, human_duration(elapsed))
            }
        };
        let outcome = match (self.phase, &self.reason, &self.path) {
            (Phase::Failed, Some(r), _) => format!("failed: {r}"),
            (Phase::Done, _, Some(p)) if !self.sending => format!("done -> {p}"),
            (p, _, _) => p.as_str().to_string(),
        };
        [
            format!("#{}", self.id),
            if self.sending { "send" } else { "recv" }.into(),
            self.who(peer_name),
            quoted_name(&self.name),
            human_size(self.total),
            format!("{}%", self.percent()),
            rate,
            time,
            outcome,
        ]
    }

    /// The JSON object of `transfers --json`.
    pub fn json(&self, peer_name: Option<&str>, now: Instant) -> serde_json::Value {
        let mut v = serde_json::json!({
            "transfer": self.id,
            "dir": if self.sending { "send" } else { "recv" },
            "peer": self.conn.0,
            "addr": self.addr,
            "name": self.name,
            "bytes": self.bytes,
            "total": self.total,
            "state": self.phase.as_str(),
            "elapsed_ms": self.elapsed(now).as_millis() as u64,
        });
        let secs = self.elapsed(now).as_secs_f64();
        if secs > 0.0 {
            v["rate_bps"] = ((self.bytes as f64 / secs) as u64).into();
        }
        if let Some(n) = peer_name {
            v["peer_name"] = n.into();
        }
        if let Some(r) = &self.reason {
            v["reason"] = r.clone().into();
        }
        if let Some(p) = &self.path {
            v["path"] = p.clone().into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let l = r.progress_line(Some("bob"));
        assert!(
            l.starts_with("#3 send \"a.iso\" to bob   50%  1.0 MiB/2.0 MiB"),
            "{l}"
        );
        assert!(l.contains("ETA"), "{l}");
        let row = r.row(None, now);
        assert_eq!(row[2], "#2 1.2.3.4:5");
        assert_eq!(row[5], "50%");
        assert_eq!(row[6], "1.0 MiB/s");
        assert!(row[7].ends_with('s'), "{row:?}");
        r.phase = Phase::Failed;
        r.reason = Some("x".into());
        assert_eq!(r.row(None, now)[8], "failed: x");
        // Queued, or failed before its turn: no rate and no time.
        let mut q = Record::new(4, true, ConnId(2), "a".into(), "b".into(), 10);
        assert_eq!(q.row(None, now)[6..8], ["-", "-"]);
        q.phase = Phase::Failed;
        q.ended = Some(now);
        assert_eq!(q.row(None, now)[6..8], ["-", "-"]);
    }

    /// A sender refilling its queue in 512 KiB steps every 0.8 s (650 KB/s)
    /// shows a steady rate, sampled every 250 ms as the progress tick does.
    #[test]
    fn rate_is_steady_when_bytes_move_in_steps() {
        let t0 = Instant::now();
        let mut r = Record::new(1, true, ConnId(2), "a".into(), "b".into(), 1 << 30);
        let truth = 512.0 * 1024.0 / 0.8;
        let mut seen = Vec::new();
        for tick in 0..80u64 {
            let t = t0 + Duration::from_millis(250 * tick);
            r.bytes = (t - t0).as_millis() as u64 / 800 * (512 << 10);
            r.sample(t);
            if tick >= 12 {
                seen.push(r.rate);
            }
        }
        for rate in seen {
            assert!(
                (rate / truth - 1.0).abs() < 0.25,
                "rate {rate:.0} B/s, truth {truth:.0} B/s"
            );
        }
        assert!(r.samples.len() <= 20, "{}", r.samples.len());
        // A stalled transfer's rate falls.
        let stall = r.bytes;
        for tick in 80..160u64 {
            r.bytes = stall;
            r.sample(t0 + Duration::from_millis(250 * tick));
        }
        assert!(r.rate < truth / 3.0, "{}", r.rate);

        // Uneven bursts, as measured on that link: 1 MiB after 2.5 s, 2 MiB
        // after 3 s more, and so on.
        let mut r = Record::new(2, true, ConnId(2), "a".into(), "b".into(), 1 << 30);
        let truth = 3.0 * 1048576.0 / 5.5;
        let step_at = |ms: u64| {
            let (cycles, rest) = (ms / 5500, ms % 5500);
            cycles * (3 << 20)
                + match rest {
                    0..2500 => 0,
                    _ => 1 << 20,
                }
        };
        for tick in 0..120u64 {
            let t = t0 + Duration::from_millis(250 * tick);
            r.bytes = step_at(250 * tick);
            r.sample(t);
            if tick >= 60 {
                assert!(
                    (r.rate / truth - 1.0).abs() < 0.3,
                    "tick {tick}: rate {:.0} B/s, truth {truth:.0} B/s",
                    r.rate
                );
            }
        }
    }
}
