//! Plain text for people: rates, durations, aligned tables, and lines
//! clipped to a terminal's width. Shared by events, `list`, `peers` and
//! `transfers` (sizes and quoted names are in [`crate::human`]).

use crate::human::human_size;
use std::time::Duration;

/// A rate in bytes per second as `12.3 MiB/s` (`-` for no time at all).
pub fn human_rate(bytes: u64, d: Duration) -> String {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return "-".to_string();
    }
    format!("{}/s", human_size((bytes as f64 / s) as u64))
}

/// A duration for people: `850ms`, `4.2s`, `3m05s`, `1h02m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        minutes_or_hours(s)
    }
}

/// A duration in whole units, for table cells: `850ms`, `3s`, `2m5s`, `1h2m`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    }
}

/// A time left, rounded up to the second: `7s`, `1m06s`, `2h05m`; `-` when
/// unknown or over 100 hours.
pub fn eta(secs: f64) -> String {
    if !secs.is_finite() || secs > 359_999.0 {
        return "-".to_string();
    }
    let s = secs.max(0.0).ceil() as u64;
    if s < 60 {
        format!("{s}s")
    } else {
        minutes_or_hours(s)
    }
}

/// `3m05s` below an hour, else `1h02m`.
fn minutes_or_hours(s: u64) -> String {
    if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// Terminal columns of `c`: wide East Asian characters count 2, combining
/// marks 0 (`…` and `é` count 1, which a guess by code point got wrong).
pub(super) fn columns(c: char) -> usize {
    unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)
}

/// `s` clipped to `width` columns, with `…` when cut.
pub fn clip_columns(s: &str, width: usize) -> String {
    let total: usize = s.chars().map(columns).sum();
    if total <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = columns(c);
        if used + w + 1 > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Lays out rows in columns two spaces apart, each as wide as its widest cell
/// on a terminal (wide characters such as CJK count two columns), the last
/// column not padded, and no line ends in spaces.
pub fn format_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().map(columns).sum());
        }
    }
    let mut s = String::new();
    for (n, r) in rows.iter().enumerate() {
        if n > 0 {
            s.push('\n');
        }
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < N {
                let used: usize = c.chars().map(columns).sum();
                line.extend(std::iter::repeat_n(' ', widths[i] - used));
            }
        }
        s.push_str(line.trim_end());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = format_table(&[
            ["id".to_string(), "x".into()],
            ["#10".to_string(), "yy".into()],
        ]);
        assert_eq!(t, "id   x\n#10  yy");
    }

    #[test]
    fn durations() {
        assert_eq!(short_duration(Duration::from_millis(5)), "5ms");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m5s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h2m");
        assert_eq!(human_duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(eta(65.2), "1m06s");
        assert_eq!(eta(6.1), "7s");
        assert_eq!(eta(f64::INFINITY), "-");
    }

    #[test]
    fn clipping() {
        assert_eq!(clip_columns("abcdef", 4), "abc…");
        assert_eq!(clip_columns("abc", 4), "abc");
        assert_eq!(clip_columns("日本語", 4), "日…");
    }
}
