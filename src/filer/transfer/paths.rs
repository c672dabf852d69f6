//! `sendfile`'s paths expanded as a shell would: `~` and `~/…` to the home
//! directory, `*` and `?` in any component matched against the directory's
//! entries (names starting with `.` only by a pattern starting with `.`),
//! sorted. A pattern that matches nothing is an error, as in a shell with
//! `failglob`; a path that exists as written is taken as it is (a file whose
//! name holds a `*`).

use std::path::{Component, Path, PathBuf};

/// Expands every argument; `Err` names the first pattern that matches nothing.
pub fn expand(args: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        let p = tilde(a);
        let text = p.to_string_lossy();
        if !text.contains(['*', '?']) || p.symlink_metadata().is_ok() {
            out.push(p);
            continue;
        }
        let found = glob(&p);
        if found.is_empty() {
            return Err(format!(
                "cannot send {}: no file matches this pattern",
                a.display()
            ));
        }
        out.extend(found);
    }
    Ok(out)
}

/// `~` and `~/REST` with `$HOME`; anything else unchanged.
fn tilde(p: &Path) -> PathBuf {
    let text = p.to_string_lossy();
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    if text == "~" {
        return home().unwrap_or_else(|| p.to_path_buf());
    }
    if let Some(rest) = text.strip_prefix("~/")
        && let Some(h) = home()
    {
        return h.join(rest);
    }
    p.to_path_buf()
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Every existing path matching `p`, sorted.
fn glob(p: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    let comps: Vec<Component<'_>> = p.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let part = c.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if !matches!(c, Component::Normal(_)) || !is_pattern(&part) {
                let q = base.join(c.as_os_str());
                if last || q.is_dir() {
                    next.push(q);
                }
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| (!n.starts_with('.') || part.starts_with('.')) && wild(&part, n))
                .collect();
            names.sort();
            for n in names {
                let q = base.join(&n);
                if last || q.is_dir() {
                    next.push(q);
                }
            }
        }
        found = next;
    }
    found.retain(|q| q.symlink_metadata().is_ok());
    found
}

/// `*` (any run) and `?` (one character) against a whole name.
fn wild(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wild("*.bin", "a.bin"));
        assert!(wild("a?c", "abc"));
        assert!(!wild("a?c", "abbc"));
        assert!(wild("*", ""));
        assert!(wild("a*b*c", "aXbYbZc"));
        assert!(!wild("*.bin", "a.binx"));
    }

    #[test]
    fn expands_like_a_shell() {
        let d = std::env::temp_dir().join(format!("sockmod-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for n in ["b.bin", "a.bin", ".h.bin", "c.txt", "sub/d.bin"] {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let got = expand(&[d.join("*.bin")]).unwrap();
        assert_eq!(got, [d.join("a.bin"), d.join("b.bin")]);
        let got = expand(&[d.join("s?b/*.bin")]).unwrap();
        assert_eq!(got, [d.join("sub/d.bin")]);
        let e = expand(&[d.join("*.zip")]).unwrap_err();
        assert!(e.contains("no file matches"), "{e}");
        if let Some(h) = std::env::var_os("HOME") {
            assert_eq!(
                expand(&["~/x".into()]).unwrap(),
                [PathBuf::from(h).join("x")]
            );
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}
