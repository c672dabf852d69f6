//! The receiving side of one file: checks each chunk (order, length), writes it
//! to a hidden `.NAME.part` file in the inbox, hashes as it goes, and on the last
//! chunk verifies length and digest and moves the file to a free, safe name.
//! A part file is removed on every failure (and when dropped unfinished), so
//! nothing incomplete ever looks complete.

use super::naming::{create_part, place, safe_name};
use crate::human::human_size;
use crate::net::describe;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Small chunks (from original peers) are gathered into writes of this size;
/// larger ones go straight to the file (and the hasher), a piece of this size
/// per write.
const WRITE_BUF: usize = 32 << 10;

/// What a chunk did to the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Stored; more chunks are expected.
    More,
    /// The file is complete and verified, stored at this path.
    Done(PathBuf),
    /// The transfer failed; the part file is gone. `ended` is true when the
    /// sender has finished this file (nothing more of it will come).
    Failed {
        /// Why, in one line.
        reason: String,
        /// The chunk was the last one.
        ended: bool,
    },
}

/// A file being received.
#[derive(Debug)]
pub struct Incoming {
    /// The transfer number.
    pub id: u64,
    /// The name as the sender announced it (`N`).
    pub name: String,
    /// The announced length (`L`).
    pub total: u64,
    /// Bytes stored so far.
    pub received: u64,
    /// When it was created or last took a chunk (for `--transfer-timeout`).
    pub touched: std::time::Instant,
    stored: String,
    dir: PathBuf,
    part: PathBuf,
    file: Option<BufWriter<File>>,
    next_index: u64,
    hasher: blake3::Hasher,
    finished: bool,
    /// Kept for resuming (offered with a resume id): the block hashes.
    sums: Option<super::partial::Sums>,
    /// Bytes held from an earlier connection when this one began.
    pub resumed_from: u64,
    /// The resume id it was offered with.
    pub rid: Option<String>,
}

/// Bytes free for an unprivileged user on the file system holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a zeroed struct we own from a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
}

/// Why files cannot be stored in `inbox` (created if missing), if they
/// cannot: the directory cannot be made, or no file can be created in it.
pub fn inbox_problem(inbox: &Path) -> Option<String> {
    if let Err(e) = make_inbox(inbox) {
        return Some(e);
    }
    match create_part(inbox, ".sockmod-probe") {
        Ok((part, file)) => {
            drop(file);
            let _ = std::fs::remove_file(part);
            None
        }
        Err(e) => Some(not_writable(inbox, &e)),
    }
}

fn make_inbox(inbox: &Path) -> Result<(), String> {
    std::fs::create_dir_all(inbox).map_err(|e| {
        format!(
            "the inbox {} cannot be created: {}",
            inbox.display(),
            describe(&e)
        )
    })
}

fn not_writable(inbox: &Path, e: &std::io::Error) -> String {
    format!(
        "the inbox {} is not writable: {}",
        inbox.display(),
        describe(e)
    )
}

/// Free bytes in `inbox` (the disk holding it) and the disk's size, when known.
pub fn disk_space(inbox: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let mut dir = inbox;
    // The inbox may not exist yet: ask about the nearest existing parent.
    while !dir.exists() {
        dir = dir.parent()?;
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a zeroed struct we own from a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        let f = s.f_frsize as u64;
        Some((
            (s.f_bavail as u64).saturating_mul(f),
            (s.f_blocks as u64).saturating_mul(f),
        ))
    }
}

impl Incoming {
    /// Starts receiving `name` (`total` bytes) into `inbox`, creating the inbox
    /// if missing and a fresh part file in it. A refusal names its true cause:
    /// an inbox that cannot be created or written says so whatever the size;
    /// only then is the free space looked at.
    pub fn create(id: u64, name: &str, total: u64, inbox: &Path) -> Result<Self, String> {
        make_inbox(inbox)?;
        let stored = safe_name(name);
        let (part, file) = create_part(inbox, &stored).map_err(|e| not_writable(inbox, &e))?;
        if let Some(free) = free_space(inbox)
            && free < total
        {
            drop(file);
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "not enough space in {} ({} needed, {} free)",
                inbox.display(),
                human_size(total),
                human_size(free)
            ));
        }
        Ok(Incoming {
            id,
            name: name.to_string(),
            total,
            received: 0,
            touched: std::time::Instant::now(),
            stored,
            dir: inbox.to_path_buf(),
            part,
            file: Some(BufWriter::with_capacity(WRITE_BUF, file)),
            next_index: 0,
            hasher: blake3::Hasher::new(),
            finished: false,
            sums: None,
            resumed_from: 0,
            rid: None,
        })
    }

    /// Starts or resumes receiving `name` (`total` bytes) offered with resume
    /// id `rid`, into `INBOX/.sockmod-partial/` ([`super::partial`]):
    /// `resumed_from` tells how much was already held and verified.
    pub fn create_resumable(
        id: u64,
        name: &str,
        total: u64,
        inbox: &Path,
        rid: &str,
    ) -> Result<Self, String> {
        make_inbox(inbox)?;
        let o = super::partial::open(inbox, rid, name, total)?;
        if let Some(free) = free_space(inbox)
            && free < total - o.at
        {
            return Err(format!(
                "not enough space in {} ({} needed, {} free)",
                inbox.display(),
                human_size(total - o.at),
                human_size(free)
            ));
        }
        Ok(Incoming {
            id,
            name: name.to_string(),
            total,
            received: o.at,
            touched: std::time::Instant::now(),
            stored: safe_name(name),
            dir: inbox.to_path_buf(),
            part: o.part,
            file: Some(BufWriter::with_capacity(WRITE_BUF, o.file)),
            next_index: 0,
            hasher: o.hasher,
            finished: false,
            sums: Some(o.sums),
            resumed_from: o.at,
            rid: Some(rid.to_string()),
        })
    }

    /// Stores the file, once complete, as `stored` in `dir` (a folder of a
    /// folder batch's staging folder) rather than in the inbox.
    pub fn retarget(&mut self, dir: PathBuf, stored: String) {
        self.dir = dir;
        self.stored = stored;
    }

    /// Stops receiving but keeps a resumable part file (with what was written
    /// so far) for a later offer of the same file; any other part file is
    /// removed as by [`Incoming::discard`].
    pub fn suspend(&mut self) {
        if self.sums.is_none() {
            return self.discard();
        }
        if !self.finished {
            self.finished = true;
            if let Some(mut w) = self.file.take() {
                let _ = w.flush();
            }
        }
    }

    fn fail(&mut self, reason: String, ended: bool) -> Step {
        self.discard();
        Step::Failed { reason, ended }
    }

    /// True before the first chunk (an accepted offer waiting for its data).
    pub fn fresh(&self) -> bool {
        self.next_index == 0
    }

    /// Closes and removes the part file (idempotent).
    pub fn discard(&mut self) {
        if !self.finished {
            self.finished = true;
            self.file = None;
            let _ = std::fs::remove_file(&self.part);
            if let Some(s) = self.sums.take() {
                super::partial::remove_meta(s.meta());
            }
        }
    }

    /// Takes chunk `index` (`None`: the last one) with `digest` (given on the
    /// last chunk by sockmod senders).
    pub fn accept(&mut self, index: Option<u64>, digest: Option<&str>, body: &[u8]) -> Step {
        self.touched = std::time::Instant::now();
        if self.finished {
            return Step::Failed {
                reason: "transfer already ended".into(),
                ended: index.is_none(),
            };
        }
        if let Some(i) = index
            && i != self.next_index
        {
            let reason = format!(
                "chunk index {i} out of order (expected {})",
                self.next_index
            );
            return self.fail(reason, false);
        }
        let ended = index.is_none();
        let after = self.received.saturating_add(body.len() as u64);
        if after > self.total {
            let reason = format!(
                "more bytes than announced ({} received)",
                crate::human::part_of(after, self.total)
            );
            return self.fail(reason, ended);
        }
        let Some(file) = self.file.as_mut() else {
            return self.fail("part file is closed".into(), ended);
        };
        // Written and hashed a piece at a time while the piece is still in cache:
        // the kernel's copy into the page cache is markedly slower for big
        // write(2) calls (dd of 1 GiB: 1.8 s of system time with 1 MiB writes,
        // 0.46 s with 32 KiB; the bench's file row went from 0.38 GiB/s with
        // whole 256 KiB chunks to 0.93-1.21 GiB/s).
        for piece in body.chunks(WRITE_BUF) {
            if let Err(e) = file.write_all(piece) {
                let reason = format!("cannot write {}: {}", self.part.display(), describe(&e));
                return self.fail(reason, ended);
            }
            self.hasher.update(piece);
        }
        if let Some(sums) = self.sums.as_mut()
            && let Err(e) = sums.update(body, || file.flush())
        {
            let reason = format!("cannot keep the part file: {}", describe(&e));
            return self.fail(reason, ended);
        }
        self.received = after;
        self.next_index += 1;
        if !ended {
            return Step::More;
        }
        if self.received != self.total {
            let reason = format!(
                "fewer bytes than announced ({} received)",
                crate::human::part_of(self.received, self.total)
            );
            return self.fail(reason, true);
        }
        let flushed = match self.file.take() {
            Some(w) => w.into_inner().map_err(|e| describe(e.error())).map(drop),
            None => Ok(()),
        };
        if let Err(e) = flushed {
            let reason = format!("cannot write {}: {e}", self.part.display());
            return self.fail(reason, true);
        }
        if let Some(want) = digest {
            let got = self.hasher.finalize().to_hex();
            if !want.trim().eq_ignore_ascii_case(got.as_str()) {
                let reason = format!(
                    "digest mismatch (BLAKE3 of the data is {}…, H was {})",
                    &got.as_str()[..16],
                    super::wire::clean_text(&want.chars().take(20).collect::<String>())
                );
                return self.fail(reason, true);
            }
        }
        match place(&self.part, &self.dir, &self.stored) {
            Ok(path) => {
                self.finished = true;
                if let Some(s) = self.sums.take() {
                    super::partial::remove_meta(s.meta());
                }
                Step::Done(path)
            }
            Err(e) => {
                let reason = format!("cannot store {:?}: {}", self.stored, describe(&e));
                self.fail(reason, true)
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sockmod-recv-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn complete_file_is_verified_and_placed() {
        let d = inbox("ok");
        let mut r = Incoming::create(1, "../a.txt", 6, &d).unwrap();
        assert!(names(&d)[0].starts_with(".a.txt"));
        assert_eq!(r.accept(Some(0), None, b"abc"), Step::More);
        let h = blake3::hash(b"abcdef").to_hex().to_uppercase();
        let Step::Done(p) = r.accept(None, Some(&h), b"def") else {
            panic!()
        };
        assert_eq!(p, d.join("a.txt"));
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdef");
        drop(r);
        assert_eq!(names(&d), ["a.txt"]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn every_failure_removes_the_part() {
        let d = inbox("fail");
        type Case = Box<dyn Fn(&mut Incoming) -> Step>;
        let cases: Vec<(Case, &str)> = vec![
            (
                Box::new(|r| r.accept(Some(1), None, b"abc")),
                "out of order",
            ),
            (
                Box::new(|r| r.accept(Some(0), None, b"abcdefg")),
                "more bytes",
            ),
            (Box::new(|r| r.accept(None, None, b"abc")), "fewer bytes"),
            (
                Box::new(|r| r.accept(None, Some("00"), b"abcdef")),
                "digest mismatch",
            ),
        ];
        for (f, want) in cases {
            let mut r = Incoming::create(1, "x", 6, &d).unwrap();
            match f(&mut r) {
                Step::Failed { reason, .. } => assert!(reason.contains(want), "{reason}"),
                s => panic!("{s:?}"),
            }
            assert!(names(&d).is_empty(), "{want}: {:?}", names(&d));
        }
        // Dropped unfinished (connection lost): no part left either.
        let mut r = Incoming::create(1, "x", 6, &d).unwrap();
        assert_eq!(r.accept(Some(0), None, b"abc"), Step::More);
        drop(r);
        assert!(names(&d).is_empty());
        // Without H (original peers) the length alone decides.
        let mut r = Incoming::create(1, "", 0, &d).unwrap();
        assert!(matches!(r.accept(None, None, b""), Step::Done(_)));
        assert_eq!(names(&d), ["file"]);
        std::fs::remove_dir_all(d).unwrap();
    }
}
