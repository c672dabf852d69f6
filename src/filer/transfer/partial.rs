//! Resumable part files (docs/PROTOCOL.md §5.4b): a file offered with a resume
//! id (`R`) is received into `INBOX/.sockmod-partial/ID.part`, beside
//! `ID.meta`, which holds what is needed to verify the part file later:
//!
//! ```text
//! {"v":2,"total":TOTAL,"block":1048576,"name":"NAME"}
//! DIGEST_HEX of block 0
//! DIGEST_HEX of block 1
//! …
//! seal LEN MTIME_S MTIME_NS CTIME_S CTIME_NS INODE
//! ```
//!
//! A block's digest ([`super::digest`]: its BLAKE3 chaining value) is
//! appended once its bytes are written to the part file; the whole file's
//! BLAKE3 is computed from them at the end. When receiving stops cleanly (a
//! dropped connection, a quit), the part file is cut to its whole blocks and
//! the meta file sealed with the part file's length, modification and change
//! times and inode. When the same id is offered again, a sealed part file that still
//! matches its seal is taken as it is; any other (no seal: the receiver was
//! killed; or a mismatch: the file was touched) is read back from the start
//! and checked block by block, cut after the last good block, and that length
//! is what the receiver holds (`at`). Bytes altered on disk meanwhile are
//! found this way and sent again. A meta file of another version is not
//! trusted: the file starts over. Both files are created
//! owner-only (0600) in an owner-only folder, and an incomplete file never
//! leaves the hidden folder: it is moved into the inbox only once complete and
//! verified whole. Partial files untouched for `--keep-partial` are deleted
//! when the filer starts.

use super::digest::{self, BLOCK, BlockHasher, Digest, from_hex, hex};
use crate::net::describe;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The hidden folder under the inbox.
pub const DIR: &str = ".sockmod-partial";

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
    /// The block digests, open for appending.
    pub sums: Sums,
}

/// The block digests of one part file ([`super::digest`]), appended to its
/// meta file as blocks complete; they give the whole file's BLAKE3 at the
/// end without reading the part file again.
#[derive(Debug)]
pub struct Sums {
    meta: PathBuf,
    file: File,
    total: u64,
    /// Digests of the whole blocks held.
    done: Vec<Digest>,
    block: BlockHasher,
    fill: u64,
}

impl std::fmt::Debug for BlockHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockHasher")
    }
}

impl Sums {
    /// Feeds bytes just written to the part file; `flush` is called before
    /// a completed block's digest is recorded, so the record never runs
    /// ahead of the bytes the kernel holds.
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
                let d = self.block.finish();
                self.file.write_all(format!("{}\n", hex(&d)).as_bytes())?;
                self.done.push(d);
                self.block = BlockHasher::new(self.total, self.done.len() as u64);
                self.fill = 0;
            }
        }
        Ok(())
    }

    /// The whole file's BLAKE3, once every byte was fed; `None` before.
    pub fn root(&self) -> Option<blake3::Hash> {
        let held = self.done.len() as u64 * BLOCK + self.fill;
        if held != self.total {
            return None;
        }
        let mut all = self.done.clone();
        if self.fill > 0 || self.total == 0 {
            all.push(self.block.finish());
        }
        digest::root(self.total, &all)
    }

    /// Stops receiving for now: the part file is cut to its whole blocks and
    /// the meta file sealed with the part file's length, modification time
    /// and inode, so a later [`open`] finds it untouched without reading it.
    pub fn seal(&mut self, part: &File) -> io::Result<()> {
        part.set_len(self.done.len() as u64 * BLOCK)?;
        let m = part.metadata()?;
        self.file
            .write_all(format!("seal {}\n", stamp(&m)).as_bytes())
    }

    /// The meta file's path.
    pub fn meta(&self) -> &Path {
        &self.meta
    }
}

/// What a seal records of a part file: its length, modification and change
/// times and inode (the change time moves with any write, even one that puts
/// the modification time back).
fn stamp(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let (mt, mn, ct, cn) = (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
    format!("{} {mt} {mn} {ct} {cn} {}", m.len(), m.ino())
}

/// Opens the part file for resume id `id` of `name` (`total` bytes), creating
/// it, or taking what an earlier run left: trusted as it is when its meta
/// file is sealed and the part file untouched since ([`Sums::seal`]), else
/// read back and checked block by block, and cut after its last good block.
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
    let mut good: Vec<Digest> = Vec::new();
    let mut file = match held(&part, &meta, total) {
        Some((f, sums, true)) => {
            good = sums;
            f
        }
        Some((mut f, sums, false)) => {
            let mut buf = vec![0u8; BLOCK as usize];
            for (i, want) in sums.into_iter().enumerate() {
                let start = i as u64 * BLOCK;
                let len = BLOCK.min(total - start) as usize;
                if f.read_exact(&mut buf[..len]).is_err()
                    || digest::block_digest(total, i as u64, &buf[..len]) != want
                {
                    break;
                }
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
    // Whole blocks only (a file of exactly one block held whole is taken
    // again: its digest is its root, recorded like any other block's).
    good.truncate((total / BLOCK) as usize);
    let at = good.len() as u64 * BLOCK;
    file.set_len(at).map_err(|e| shown(&e))?;
    file.seek(SeekFrom::Start(at)).map_err(|e| shown(&e))?;
    // The meta file is written anew (what was verified, unsealed), then
    // appended to.
    let head = serde_json::json!({"v": 2, "total": total, "block": BLOCK, "name": name});
    let mut text = format!("{head}\n");
    for h in &good {
        text.push_str(&hex(h));
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
    let next = good.len() as u64;
    Ok(Opened {
        part,
        file,
        at,
        sums: Sums {
            meta,
            file: sums_file,
            total,
            done: good,
            block: BlockHasher::new(total, next),
            fill: 0,
        },
    })
}

/// True when an offer of resume id `id` (`total` bytes) would have to read
/// a part file back to check it: one is there with blocks, and its meta file
/// is not sealed with what the part file is now. (Reads the meta file only.)
pub fn needs_reading(inbox: &Path, id: &str, total: u64) -> bool {
    let (part, meta) = paths(inbox, id);
    held(&part, &meta, total).is_some_and(|(_, sums, untouched)| !untouched && !sums.is_empty())
}

/// The part file and block digests an earlier run left for a file of
/// `total` bytes, if they are there and describe such a file, and whether
/// the meta file's seal says the part file is untouched since.
fn held(part: &Path, meta: &Path, total: u64) -> Option<(File, Vec<Digest>, bool)> {
    let text = std::fs::read_to_string(meta).ok()?;
    let mut lines = text.split_inclusive('\n');
    let head: serde_json::Value = serde_json::from_str(lines.next()?.trim()).ok()?;
    if head["v"] != 2
        || head["total"].as_u64() != Some(total)
        || head["block"].as_u64() != Some(BLOCK)
    {
        return None;
    }
    let mut sums = Vec::new();
    let mut seal = None;
    for l in lines {
        if !l.ends_with('\n') {
            break;
        }
        if let Some(d) = from_hex(l.trim_end()).filter(|_| l.len() == 65) {
            sums.push(d);
            continue;
        }
        seal = l.strip_prefix("seal ").map(|s| s.trim_end().to_string());
        break;
    }
    let f = owner_only().read(true).write(true).open(part).ok()?;
    let untouched = seal.is_some_and(|s| {
        f.metadata()
            .is_ok_and(|m| s == stamp(&m) && m.len() == sums.len() as u64 * BLOCK)
    });
    Some((f, sums, untouched))
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
        // The rest fed: the digest is the file's.
        let mut o = o;
        o.sums
            .update(&data[2 * BLOCK as usize..], || Ok(()))
            .unwrap();
        assert_eq!(o.sums.root(), Some(blake3::hash(&data)));
        drop(o);
        // Sealed after a clean stop: taken without reading (bytes altered
        // without touching the seal's stamp are not looked at).
        let mut o = open(&inbox, id, "x", total).unwrap();
        assert_eq!(o.at, 2 * BLOCK);
        o.file.write_all(&data[cut..cut + 100]).unwrap();
        o.sums.seal(&o.file).unwrap();
        drop(o);
        let mut o = open(&inbox, id, "x", total).unwrap();
        assert_eq!(o.at, 2 * BLOCK);
        // Sealed again, then a byte altered with the modification time put
        // back: the change time gives it away, and the blocks are read.
        o.sums.seal(&o.file).unwrap();
        drop(o);
        // File times tick with the kernel's coarse clock (a few ms): the
        // change below must not share the seal's tick.
        std::thread::sleep(Duration::from_millis(30));
        let part = dir_of(&inbox).join(format!("{id}.part"));
        let mtime = std::fs::metadata(&part).unwrap().modified().unwrap();
        let mut f = OpenOptions::new().write(true).open(&part).unwrap();
        f.seek(SeekFrom::Start(BLOCK + 3)).unwrap();
        f.write_all(b"?").unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let o = open(&inbox, id, "x", total).unwrap();
        assert_eq!(o.at, BLOCK);
        drop(o);
        // The good block came back whole: resumes after block 0 again.
        let o = open(&inbox, id, "x", total).unwrap();
        assert_eq!(o.at, BLOCK);
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
