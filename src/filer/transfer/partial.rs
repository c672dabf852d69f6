//! Resumable part files (docs/PROTOCOL.md §5.4b): a file offered with a resume
//! id (`R`) is received into `INBOX/.sockmod-partial/ID.part`, beside
//! `ID.meta`, which holds what is needed to verify the part file later:
//!
//! ```text
//! {"v":1,"total":TOTAL,"block":1048576,"name":"NAME"}
//! BLAKE3_HEX of block 0
//! BLAKE3_HEX of block 1
//! …
//! ```
//!
//! A block's hash is appended once its bytes are written to the part file.
//! When the same id is offered again, the blocks are read back from the start
//! and checked against their hashes; the part file is cut after the last good
//! one, and that length is what the receiver holds (`at`). Bytes altered on
//! disk meanwhile are found this way and sent again. Both files are created
//! owner-only (0600) in an owner-only folder, and an incomplete file never
//! leaves the hidden folder: it is moved into the inbox only once complete and
//! verified whole. Partial files untouched for `--keep-partial` are deleted
//! when the filer starts.

use crate::net::describe;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The hidden folder under the inbox.
pub const DIR: &str = ".sockmod-partial";

/// Bytes per verified block.
pub const BLOCK: u64 = 1 << 20;

/// The default `--keep-partial`: a week.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// True for a resume id this receiver takes: 16 to 64 lowercase hex digits
/// (it names files, so nothing else may pass).
pub fn valid_id(id: &str) -> bool {
    (16..=64).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn dir_of(inbox: &Path) -> PathBuf {
    inbox.join(DIR)
}

fn paths(inbox: &Path, id: &str) -> (PathBuf, PathBuf) {
    let d = dir_of(inbox);
    (d.join(format!("{id}.part")), d.join(format!("{id}.meta")))
}

fn owner_only() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    o
}

/// A part file kept for resuming, opened for writing at `at`.
pub struct Opened {
    /// The part file's path.
    pub part: PathBuf,
    /// The part file, positioned at `at`.
    pub file: File,
    /// Bytes already held and verified.
    pub at: u64,
    /// The whole-file hasher fed with those bytes.
    pub hasher: blake3::Hasher,
    /// The block hashes, open for appending.
    pub sums: Sums,
}

/// The block hashes of one part file, appended as blocks complete.
#[derive(Debug)]
pub struct Sums {
    meta: PathBuf,
    file: File,
    block: blake3::Hasher,
    fill: u64,
}

impl Sums {
    /// Feeds bytes just written to the part file; `flush` is called before
    /// a completed block's hash is recorded, so the hash never runs ahead of
    /// the bytes the kernel holds.
    pub fn update(
        &mut self,
        mut data: &[u8],
        mut flush: impl FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        while !data.is_empty() {
            let room = (BLOCK - self.fill) as usize;
            let n = room.min(data.len());
            self.block.update(&data[..n]);
            self.fill += n as u64;
            data = &data[n..];
            if self.fill == BLOCK {
                flush()?;
                let line = format!("{}\n", self.block.finalize().to_hex());
                self.file.write_all(line.as_bytes())?;
                self.block.reset();
                self.fill = 0;
            }
        }
        Ok(())
    }

    /// The meta file's path.
    pub fn meta(&self) -> &Path {
        &self.meta
    }
}

/// Opens the part file for resume id `id` of `name` (`total` bytes), creating
/// it, or verifying what an earlier run left: the part file is cut after its
/// last good block.
pub fn open(inbox: &Path, id: &str, name: &str, total: u64) -> Result<Opened, String> {
    let d = dir_of(inbox);
    let shown = |e: &io::Error| {
        format!(
            "cannot keep a part file in {}: {}",
            d.display(),
            describe(e)
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .map_err(|e| shown(&e))?;
    let (part, meta) = paths(inbox, id);
    let mut hasher = blake3::Hasher::new();
    let mut good: Vec<String> = Vec::new();
    let mut file = match held(&part, &meta, total) {
        Some((mut f, sums)) => {
            let mut buf = vec![0u8; BLOCK as usize];
            for (i, want) in sums.into_iter().enumerate() {
                let start = i as u64 * BLOCK;
                let len = BLOCK.min(total - start) as usize;
                if f.read_exact(&mut buf[..len]).is_err()
                    || blake3::hash(&buf[..len]).to_hex().as_str() != want
                {
                    break;
                }
                hasher.update(&buf[..len]);
                good.push(want);
            }
            f
        }
        None => {
            let _ = std::fs::remove_file(&part);
            owner_only()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&part)
                .map_err(|e| shown(&e))?
        }
    };
    let at = (good.len() as u64 * BLOCK).min(total);
    file.set_len(at).map_err(|e| shown(&e))?;
    file.seek(SeekFrom::Start(at)).map_err(|e| shown(&e))?;
    // The meta file is written anew (what was verified), then appended to.
    let head = serde_json::json!({"v": 1, "total": total, "block": BLOCK, "name": name});
    let mut text = format!("{head}\n");
    for h in &good {
        text.push_str(h);
        text.push('\n');
    }
    let tmp = d.join(format!("{id}.meta.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> io::Result<File> {
        let mut t = owner_only().write(true).create_new(true).open(&tmp)?;
        t.write_all(text.as_bytes())?;
        drop(t);
        std::fs::rename(&tmp, &meta)?;
        owner_only().append(true).open(&meta)
    };
    let sums_file = write().map_err(|e| shown(&e))?;
    Ok(Opened {
        part,
        file,
        at,
        hasher,
        sums: Sums {
            meta,
            file: sums_file,
            block: blake3::Hasher::new(),
            fill: 0,
        },
    })
}

/// The part file and block hashes an earlier run left for a file of `total`
/// bytes, if they are there and describe such a file.
fn held(part: &Path, meta: &Path, total: u64) -> Option<(File, Vec<String>)> {
    let text = std::fs::read_to_string(meta).ok()?;
    let mut lines = text.split_inclusive('\n');
    let head: serde_json::Value = serde_json::from_str(lines.next()?.trim()).ok()?;
    if head["v"] != 1
        || head["total"].as_u64() != Some(total)
        || head["block"].as_u64() != Some(BLOCK)
    {
        return None;
    }
    let sums: Vec<String> = lines
        .take_while(|l| l.len() == 65 && l.ends_with('\n'))
        .map(|l| l.trim_end().to_string())
        .collect();
    let f = owner_only().read(true).write(true).open(part).ok()?;
    Some((f, sums))
}

/// Removes the meta file `meta`, and the hidden folder holding it once empty.
pub fn remove_meta(meta: &Path) {
    let _ = std::fs::remove_file(meta);
    if let Some(d) = meta.parent() {
        let _ = std::fs::remove_dir(d);
    }
}

/// Deletes the partial files in `inbox` untouched for `keep`; returns how
/// many were deleted.
pub fn expire(inbox: &Path, keep: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir_of(inbox)) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut n = 0;
    for e in entries.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        let old = m
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= keep);
        if old && m.is_file() && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    let _ = std::fs::remove_dir(dir_of(inbox));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_the_last_good_block() {
        let inbox = std::env::temp_dir().join(format!("sockmod-partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&inbox);
        let id = "0123456789abcdef";
        let total = 3 * BLOCK + 10;
        let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        let mut o = open(&inbox, id, "x", total).unwrap();
        assert_eq!(o.at, 0);
        let cut = (2 * BLOCK + 5) as usize;
        o.file.write_all(&data[..cut]).unwrap();
        o.sums.update(&data[..cut], || Ok(())).unwrap();
        drop(o);
        let o = open(&inbox, id, "x", total).unwrap();
        assert_eq!(o.at, 2 * BLOCK);
        assert_eq!(
            o.hasher.finalize(),
            blake3::hash(&data[..2 * BLOCK as usize])
        );
        drop(o);
        // A byte altered in block 1: only block 0 is good.
        let part = dir_of(&inbox).join(format!("{id}.part"));
        let mut f = OpenOptions::new().write(true).open(&part).unwrap();
        f.seek(SeekFrom::Start(BLOCK + 7)).unwrap();
        f.write_all(b"!").unwrap();
        drop(f);
        let o = open(&inbox, id, "x", total).unwrap();
        assert_eq!(o.at, BLOCK);
        drop(o);
        // Another length: start again.
        let o = open(&inbox, id, "x", total + 1).unwrap();
        assert_eq!(o.at, 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&part).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!valid_id("../etc") && !valid_id("ABCDEF0123456789") && valid_id(id));
        assert_eq!(expire(&inbox, Duration::from_secs(3600)), 0);
        assert_eq!(expire(&inbox, Duration::ZERO), 2);
        std::fs::remove_dir_all(inbox).unwrap();
    }
}
