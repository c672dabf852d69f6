//! Sizes and file names in words, for error messages as well as rendered
//! lines: the transfer code states reasons with them (`refused: 3.0 GiB is
//! larger than --max-file-size (1.0 GiB)`) without depending on `render`.

/// `3 B`, `1.5 KiB`, `10.0 MiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `59.8 MiB of 95.4 MiB`: a part of a whole, both in [`human_size`]'s units;
/// when the two round alike, the exact difference is added (`95.4 MiB of
/// 95.4 MiB, 12 B short`), so the sizes never read as equal when they are not.
pub fn part_of(part: u64, whole: u64) -> String {
    let (p, w) = (human_size(part), human_size(whole));
    if p != w || part == whole {
        return format!("{p} of {w}");
    }
    match whole.checked_sub(part) {
        Some(short) => format!("{p} of {w}, {} short", human_size(short)),
        None => format!("{p} of {w}, {} over", human_size(part - whole)),
    }
}

/// True for characters that must never reach a human line as they are: control
/// characters, and the invisible and direction-changing ones (zero-width
/// spaces and joiners, the left-to-right and right-to-left marks, embeddings,
/// overrides and isolates, the byte-order mark) with which a peer could make
/// `photo\u{202E}gpj.exe` read `photoexe.jpg`, or two names look the same.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// A file name quoted for a human line, clipped to 100 characters: a peer may
/// announce a name of tens of kilobytes (the stored name is at most 255 bytes;
/// JSON events carry the name in full).
pub fn quoted_name(name: &str) -> String {
    const MAX: usize = 100;
    match name.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}…", &name[..i]),
        None => format!("{name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_bidirectional_characters_are_deceptive() {
        for c in [
            '\n', '\u{1b}', '\u{200B}', '\u{200F}', '\u{202E}', '\u{2066}', '\u{FEFF}',
        ] {
            assert!(is_deceptive(c), "{c:?}");
            // Debug formatting, which quoted names use, escapes every one.
            assert!(format!("{:?}", c.to_string()).contains('\\'), "{c:?}");
        }
        for c in ['a', 'é', '中', ' ', '\u{2010}', '\u{2070}'] {
            assert!(!is_deceptive(c), "{c:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(3), "3 B");
        assert_eq!(human_size(10 << 20), "10.0 MiB");
    }
}

#[cfg(test)]
mod part_tests {
    use super::*;

    #[test]
    fn parts_read_in_one_unit_style() {
        assert_eq!(part_of(62_652_416, 100_000_000), "59.8 MiB of 95.4 MiB");
        assert_eq!(part_of(3, 3), "3 B of 3 B");
        assert_eq!(
            part_of(100_000_000 - 12, 100_000_000),
            "95.4 MiB of 95.4 MiB, 12 B short"
        );
        assert_eq!(
            part_of(1_048_577, 1_048_576),
            "1.0 MiB of 1.0 MiB, 1 B over"
        );
    }
}
