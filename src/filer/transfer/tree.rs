//! Folders for `sendfile` (docs/PROTOCOL.md §5.7): the walk that lists a
//! folder's files and empty folders, without following symlinks, and the
//! start-up clean-up of the receiver's staging folders.

use crate::net::describe;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The receiver's staging folder under the inbox: one folder per batch.
pub const STAGING: &str = ".sockmod-staging";

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular files: their path and their path relative to the folder's
    /// parent (`photos/a/b.txt`), with their size.
    pub files: Vec<(PathBuf, String, u64)>,
    /// Empty folders, relative to the folder's parent, ending with `/`.
    pub dirs: Vec<String>,
    /// One line for each thing skipped (symlinks, special files).
    pub skipped: Vec<String>,
}

/// Lists `root` (a folder) recursively, in name order. Symlinks (to files or
/// folders) and special files are skipped with one notice each; an
/// unreadable folder is an error.
pub fn walk(root: &Path) -> Result<Walk, String> {
    let top = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .or_else(|| {
            std::fs::canonicalize(root)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "folder".to_string());
    let mut w = Walk::default();
    visit(root, &top, &mut w)?;
    Ok(w)
}

fn visit(dir: &Path, rel: &str, w: &mut Walk) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot send {}: {}", dir.display(), describe(&e));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    entries.sort_by_key(|e| e.file_name());
    let before = w.files.len() + w.dirs.len();
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let child = format!("{rel}/{name}");
        let meta = std::fs::symlink_metadata(&path).map_err(err)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            w.skipped
                .push(format!("skipped {}: a symlink", path.display()));
        } else if ft.is_dir() {
            visit(&path, &child, w)?;
        } else if ft.is_file() {
            w.files.push((path, child, meta.len()));
        } else {
            w.skipped
                .push(format!("skipped {}: not a regular file", path.display()));
        }
    }
    if w.files.len() + w.dirs.len() == before {
        w.dirs.push(format!("{rel}/"));
    }
    Ok(())
}

/// A batch id for sending `root` (stable across runs, so a folder sent again
/// finds what the receiver already holds): 32 hex digits.
pub fn batch_id(root: &Path) -> String {
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut h = blake3::Hasher::new();
    h.update(b"sockmod batch id v1\0");
    h.update(abs.as_os_str().as_encoded_bytes());
    h.finalize().to_hex()[..32].to_string()
}

/// True when something in `path` (itself, or anything under it, symlinks not
/// followed) was modified less than `keep` before `now`.
fn touched_within(path: &Path, now: SystemTime, keep: Duration) -> bool {
    let Ok(m) = path.symlink_metadata() else {
        return false;
    };
    let young = m
        .modified()
        .ok()
        .is_some_and(|t| now.duration_since(t).map_or(true, |age| age < keep));
    if young {
        return true;
    }
    m.is_dir()
        && std::fs::read_dir(path).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| touched_within(&e.path(), now, keep))
        })
}

/// Deletes the batch folders in `INBOX/.sockmod-staging` (folders left by a
/// folder cut short) in which nothing was modified for `keep`, as the part
/// files of [`super::partial::expire`]; returns how many were deleted. The
/// staging folder itself goes once empty.
pub fn expire_staging(inbox: &Path, keep: Duration) -> usize {
    let staging = inbox.join(STAGING);
    let Ok(entries) = std::fs::read_dir(&staging) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        let is_dir = path.symlink_metadata().is_ok_and(|m| m.is_dir());
        // remove_dir_all does not follow symlinks inside it.
        if is_dir && !touched_within(&path, now, keep) && std::fs::remove_dir_all(&path).is_ok() {
            n += 1;
        }
    }
    let _ = std::fs::remove_dir(&staging);
    n
}

/// Removes what a batch's staging folder `staging` holds that is not in
/// `keep` (paths relative to it, `/`-separated): the part files and unverified
/// files of a receiver cut short, so they never end up in the folder. Folders
/// are kept; nothing is followed. Returns how many were removed.
pub fn prune_unlisted(staging: &Path, keep: &std::collections::HashSet<String>) -> usize {
    fn go(dir: &Path, rel: &str, keep: &std::collections::HashSet<String>) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => n += go(&e.path(), &child, keep),
                Ok(_) if !keep.contains(&child) => {
                    n += usize::from(std::fs::remove_file(e.path()).is_ok());
                }
                _ => {}
            }
        }
        n
    }
    go(staging, "", keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_listed_is_pruned() {
        let s = std::env::temp_dir().join(format!("sockmod-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&s);
        std::fs::create_dir_all(s.join("top/a")).unwrap();
        for f in ["top/a/x", "top/a/.x.part", "top/y", ".done", ".y.part"] {
            std::fs::write(s.join(f), b"1").unwrap();
        }
        let keep = ["top/a/x", ".done"].map(String::from).into_iter().collect();
        assert_eq!(prune_unlisted(&s, &keep), 3);
        assert!(s.join("top/a/x").exists() && s.join(".done").exists());
        assert!(!s.join("top/y").exists() && !s.join("top/a/.x.part").exists());
        let _ = std::fs::remove_dir_all(&s);
    }

    #[test]
    fn staging_folders_untouched_for_keep_are_removed() {
        let inbox = std::env::temp_dir().join(format!("sockmod-staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&inbox);
        let batch = inbox.join(STAGING).join("0123abcd");
        std::fs::create_dir_all(batch.join("photos/a")).unwrap();
        std::fs::write(batch.join("photos/a/x.txt"), b"x").unwrap();
        std::fs::write(batch.join(".sockmod-done"), b"").unwrap();
        // A symlink out of it: removed, its target kept.
        let outside = inbox.join("outside.txt");
        std::fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, batch.join("photos/link")).unwrap();
        assert_eq!(expire_staging(&inbox, Duration::from_secs(3600)), 0);
        assert!(batch.join("photos/a/x.txt").exists());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(expire_staging(&inbox, Duration::from_millis(10)), 1);
        assert!(!inbox.join(STAGING).exists());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert_eq!(expire_staging(&inbox, Duration::ZERO), 0);
        std::fs::remove_dir_all(inbox).unwrap();
    }
}
