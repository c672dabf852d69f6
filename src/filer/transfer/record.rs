//! The record of every transfer of this run: the facts `transfers` lists, the
//! events carry and the progress block shows (drawn by the [`super::Report`]).

use crate::net::ConnId;
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
    /// Offered: waiting for the receiver's answer (`accept tN` / `refuse tN`).
    Offered,
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
    /// True once it has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }
}

/// What just happened to a transfer, as reported to [`super::Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A peer offers a file, which waits for `accept` or `refuse`.
    Offered,
    /// It began moving bytes.
    Started,
    /// It moved more bytes (reported once per progress tick).
    Progress,
    /// It completed.
    Done,
    /// It failed or was cancelled.
    Failed,
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
    /// Sending: the name the receiver says it stored the file under.
    pub stored: Option<String>,
    /// When it began moving bytes.
    pub started: Option<Instant>,
    /// When it ended.
    pub ended: Option<Instant>,
    /// `bytes` at the last progress event.
    pub emitted: u64,
    /// Resumed: the bytes the receiver already held when it began.
    pub resumed_from: Option<u64>,
    /// A file of a folder batch (§5.7): the batch's record number. Such a
    /// record is reported through its batch only (`transfers N` lists it).
    pub parent: Option<u64>,
    /// A folder batch: `(files ended well, files in it)`.
    pub files: Option<(u64, u64)>,
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
            stored: None,
            started: None,
            ended: None,
            emitted: 0,
            resumed_from: None,
            parent: None,
            files: None,
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

    /// Rate in bytes per second over the last `RATE_WINDOW` (0 until known).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The peer: its name, else `#ID ADDR`.
    pub fn who(&self, peer_name: Option<&str>) -> String {
        match peer_name {
            Some(n) => n.to_string(),
            None => format!("#{} {}", self.conn.0, self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
