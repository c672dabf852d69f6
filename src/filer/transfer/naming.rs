//! Inbox naming: turn a peer's file name into a safe base name, find a free name
//! that never overwrites, and move a finished part file into place atomically.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The longest file name (in bytes) most Linux file systems take.
pub const NAME_MAX: usize = 255;

/// What an unusable name (empty, `.`, `..`, only control characters) becomes.
pub const FALLBACK: &str = "file";

/// Extensions longer than this are treated as part of the stem when a name
/// must be shortened or numbered (`a.verylongsuffix…` is not an extension).
const MAX_EXT: usize = 16;

/// True for characters that must not appear in a stored name: C0 and C1
/// controls, DEL, and the invisible and bidirectional characters that can
/// disguise a name (`photo\u{202E}gpj.exe` shows as `photoexe.jpg`).
fn is_unsafe_char(c: char) -> bool {
    crate::human::is_deceptive(c)
}

/// Reduces a name received from a peer to a safe base name.
///
/// The result has no directory parts (`/` and `\` both separate: the last
/// component wins), is not `.` or `..`, contains no control characters (each
/// becomes `_`), does not start with `.` (a peer cannot make a file hidden by
/// accident), has no leading or trailing whitespace, is never empty, and fits
/// in [`NAME_MAX`] bytes with its extension kept.
pub fn safe_name(raw: &str) -> String {
    let base = raw
        .rsplit(['/', '\\'])
        .map(str::trim)
        .find(|c| !c.is_empty() && *c != "." && *c != "..")
        .unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| if is_unsafe_char(c) { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim_start();
    let name = if trimmed.is_empty() {
        FALLBACK
    } else {
        trimmed
    };
    fit(name, "", NAME_MAX)
}

/// Splits `name` into stem and extension (with its dot); a leading dot or an
/// over-long suffix is not an extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= MAX_EXT => name.split_at(i),
        _ => (name, ""),
    }
}

/// `name` with `suffix` inserted before its extension, shortened (at a character
/// boundary, stem first) so the result is at most `max` bytes.
pub fn fit(name: &str, suffix: &str, max: usize) -> String {
    let (stem, ext) = split_ext(name);
    let (stem, ext) = if suffix.len() + ext.len() >= max {
        (name, "")
    } else {
        (stem, ext)
    };
    let room = max.saturating_sub(suffix.len() + ext.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let stem = if cut < stem.len() {
        stem[..cut].trim_end()
    } else {
        stem
    };
    let stem = if stem.is_empty() { FALLBACK } else { stem };
    format!("{stem}{suffix}{ext}")
}

/// The `n`th candidate for a stored name: `name`, then `stem (1).ext`, …
pub fn candidate(name: &str, n: u32) -> String {
    if n == 0 {
        fit(name, "", NAME_MAX)
    } else {
        fit(name, &format!(" ({n})"), NAME_MAX)
    }
}

/// Creates a new, empty part file `.NAME.part` in `dir` (or `.NAME.N.part` when
/// that is taken), never opening an existing file or following a symlink.
pub fn create_part(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for n in 0..1000u32 {
        let suffix = if n == 0 {
            ".part".to_string()
        } else {
            format!(".{n}.part")
        };
        // Keep the whole name (with the leading dot) within NAME_MAX.
        let body = fit(name, "", NAME_MAX - 1 - suffix.len());
        let path = dir.join(format!(".{body}{suffix}"));
        match File::options().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free part file name")))
}

/// Moves `part` to the first free name for `name` in `dir` (`name`,
/// `stem (1).ext`, …) without ever replacing an existing file; returns the path.
pub fn place(part: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 0..10_000u32 {
        let dest = dir.join(candidate(name, n));
        match rename_noreplace(part, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!("no free name for {name:?}")))
}

/// The most components a relative path of a folder batch may have.
pub const MAX_DEPTH: usize = 64;

/// Checks a relative path of a folder batch (`P`, §5.7) and returns its
/// components (an empty folder's trailing `/` is dropped): every component
/// must be a name [`safe_name`] would keep as it is, apart from a leading
/// dot (no `..`, `.`, empty components, `\\`, control or invisible characters,
/// nor leading or trailing spaces), the path must not be absolute, and it has
/// at most [`MAX_DEPTH`] components.
pub fn check_rel_path(raw: &str) -> Result<Vec<&str>, String> {
    let bad = |why: &str| {
        Err(format!(
            "unsafe path {:?}: {why}",
            super::wire::clean_text(raw)
        ))
    };
    let p = raw.strip_suffix('/').unwrap_or(raw);
    if p.is_empty() {
        return bad("empty");
    }
    if p.starts_with('/') {
        return bad("absolute");
    }
    if p.contains('\\') {
        return bad("backslash");
    }
    let parts: Vec<&str> = p.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return bad("too deep");
    }
    for c in &parts {
        if c.is_empty() {
            return bad("empty component");
        }
        if *c == "." || *c == ".." {
            return bad("`.` or `..` component");
        }
        if c.chars().any(is_unsafe_char) {
            return bad("control or invisible character");
        }
        if c.trim() != *c || c.len() > NAME_MAX {
            return bad("not a usable name");
        }
    }
    Ok(parts)
}

/// Creates the folders `parts` under `root` (which exists), one at a time,
/// never following a symlink: an existing component must be a real folder.
pub fn make_dirs(root: &Path, parts: &[&str]) -> io::Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for c in parts {
        dir.push(c);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(&dir)?.file_type().is_dir() {
                    return Err(io::Error::other(format!(
                        "{} exists and is not a folder",
                        dir.display()
                    )));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// Moves folder `from` to the first free name for `name` in `dir` (`name`,
/// `name (1)`, …), never merging into an existing folder; returns the path.
pub fn place_dir(from: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 0..10_000u32 {
        let dest = dir.join(if n == 0 {
            name.to_string()
        } else {
            format!("{name} ({n})")
        });
        match rename_noreplace(from, &dest) {
            Ok(()) => return Ok(dest),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!("no free name for {name:?}")))
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let a = CString::new(from.as_os_str().as_bytes())?;
        let b = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // The file system or kernel cannot do it: fall back to a hard link.
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
            _ => return Err(e),
        }
    }
    // `link` fails if the destination exists, so it never replaces either.
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            check_rel_path("a/b c/d.txt").unwrap(),
            ["a", "b c", "d.txt"]
        );
        assert_eq!(check_rel_path("a/.hidden/").unwrap(), ["a", ".hidden"]);
        for bad in [
            "",
            "/",
            "../x",
            "a/../../x",
            "/abs",
            "a//b",
            ".",
            "a/./b",
            "C:\\x",
            "a\u{202E}b",
            "a/\u{200B}",
            " a",
            "a/b\n",
        ] {
            assert!(check_rel_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base_names_only() {
        assert_eq!(safe_name("photo.jpg"), "photo.jpg");
        assert_eq!(safe_name("../x"), "x");
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("/etc/x"), "x");
        assert_eq!(safe_name("a/b/c"), "c");
        assert_eq!(safe_name("a\\b\\c.txt"), "c.txt");
        assert_eq!(safe_name("dir/"), "dir");
        assert_eq!(safe_name("x/.."), "x");
    }

    #[test]
    fn unusable_names_fall_back() {
        for n in ["", ".", "..", "/", "../", "  ", "...", "/..", "\\"] {
            assert_eq!(safe_name(n), FALLBACK, "{n:?}");
        }
    }

    #[test]
    fn controls_and_hidden() {
        assert_eq!(safe_name("a\nb\tc\u{7f}d\u{85}e"), "a_b_c_d_e");
        assert_eq!(safe_name("\u{1b}[31mred"), "_[31mred");
        assert_eq!(safe_name("evil\u{202E}gpj.exe"), "evil_gpj.exe");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name("..hidden.txt"), "hidden.txt");
        assert_eq!(safe_name(" spaced .txt "), "spaced .txt");
        assert_eq!(safe_name("\n"), FALLBACK);
        assert_eq!(safe_name("\u{1}"), "_");
    }

    #[test]
    fn long_names_keep_extension() {
        let long = format!("{}.tar.gz", "é".repeat(200));
        let s = safe_name(&long);
        assert!(s.len() <= NAME_MAX, "{}", s.len());
        assert!(s.ends_with(".gz"));
        assert!(s.starts_with('é'));
        let c = candidate(&s, 12);
        assert!(c.len() <= NAME_MAX);
        assert!(c.ends_with(" (12).gz"), "{c}");
        let no_ext = "x".repeat(300);
        assert_eq!(safe_name(&no_ext).len(), NAME_MAX);
        // A "extension" longer than the limit is not kept whole.
        let odd = format!("a.{}", "y".repeat(400));
        assert_eq!(safe_name(&odd).len(), NAME_MAX);
    }

    #[test]
    fn numbering() {
        assert_eq!(candidate("a.txt", 0), "a.txt");
        assert_eq!(candidate("a.txt", 1), "a (1).txt");
        assert_eq!(candidate("archive.tar.gz", 2), "archive.tar (2).gz");
        assert_eq!(candidate("README", 3), "README (3)");
    }

    #[test]
    fn place_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("sockmod-naming-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), b"first").unwrap();
        let (p1, _) = create_part(&dir, "a.txt").unwrap();
        let (p2, _) = create_part(&dir, "a.txt").unwrap();
        assert_ne!(p1, p2);
        assert!(
            p1.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".a.txt")
        );
        std::fs::write(&p1, b"second").unwrap();
        let d1 = place(&p1, &dir, "a.txt").unwrap();
        assert_eq!(d1, dir.join("a (1).txt"));
        let d2 = place(&p2, &dir, "a.txt").unwrap();
        assert_eq!(d2, dir.join("a (2).txt"));
        assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"first");
        assert_eq!(std::fs::read(&d1).unwrap(), b"second");
        assert!(!p1.exists() && !p2.exists());
        let long = "z".repeat(255);
        let (p, _) = create_part(&dir, &long).unwrap();
        assert!(p.file_name().unwrap().len() <= NAME_MAX);
        let d = place(&p, &dir, &long).unwrap();
        assert_eq!(d.file_name().unwrap().len(), NAME_MAX);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
