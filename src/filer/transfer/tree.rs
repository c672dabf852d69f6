//! Folders for `sendfile` (docs/PROTOCOL.md §5.7): the walk that lists a
//! folder's files and empty folders, without following symlinks.

use crate::net::describe;
use std::path::{Path, PathBuf};

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
