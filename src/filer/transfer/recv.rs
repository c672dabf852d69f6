//! The receiving side of one file: checks each chunk (order, length), writes it
//! to a hidden `.NAME.part` file in the inbox, hashes as it goes, and on the last
//! chunk verifies length and digest and moves the file to a free, safe name.
//! A part file is removed on every failure (and when dropped unfinished), so
//! nothing incomplete ever looks complete. The writing, hashing and
//! verifying happen on a writer thread per file (a small file of a folder that
//! comes in one chunk goes to one shared small-file writer instead); the loop
//! keeps the checks and counts, and learns the outcome through [`Notify`].

use super::naming::{create_part, place, safe_name};
use crate::human::human_size;
use crate::net::describe;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// The last chunk went to the writer: the outcome comes later, through
    /// [`Notify`] (as `Done` or `Failed` with `ended`).
    Finishing,
    /// The transfer failed; the part file is gone. `ended` is true when the
    /// sender has finished this file (nothing more of it will come).
    Failed {
        /// Why, in one line.
        reason: String,
        /// The chunk was the last one.
        ended: bool,
    },
}

/// Where the writers of received files report to the loop: files finished
/// (verified and stored, or failed), and a wake-up when a writer that was
/// behind has caught up.
#[derive(Default)]
pub struct Notify {
    /// Files the writers finished: (transfer number, where it is stored or why
    /// it failed).
    pub done: Mutex<Vec<(u64, Result<PathBuf, String>)>>,
    waker: OnceLock<Arc<mio::Waker>>,
    /// The small-file writer's queue, once started.
    small: Mutex<Option<Sender<SmallJob>>>,
}

/// A small file that came in one chunk, for the shared small-file writer.
pub struct SmallJob {
    id: u64,
    file: File,
    part: PathBuf,
    body: Vec<u8>,
    digest: Option<String>,
    dir: PathBuf,
    stored: String,
}

impl SmallJob {
    /// Writes, verifies and stores the file; the part file goes on failure.
    fn run(self) -> Result<PathBuf, String> {
        let SmallJob {
            mut file,
            part,
            body,
            digest,
            dir,
            stored,
            ..
        } = self;
        let r = (|| {
            file.write_all(&body)
                .map_err(|e| format!("cannot write {}: {}", part.display(), describe(&e)))?;
            drop(file);
            if let Some(want) = digest {
                check_digest(&want, &blake3::hash(&body))?;
            }
            place(&part, &dir, &stored)
                .map_err(|e| format!("cannot store {stored:?}: {}", describe(&e)))
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        r
    }
}

/// `Err` unless `want` (the sender's `H`) is the hex of `got`.
fn check_digest(want: &str, got: &blake3::Hash) -> Result<(), String> {
    let got = got.to_hex();
    if want.trim().eq_ignore_ascii_case(got.as_str()) {
        return Ok(());
    }
    Err(format!(
        "digest mismatch (BLAKE3 of the data is {}…, H was {})",
        &got.as_str()[..16],
        super::wire::clean_text(&want.chars().take(20).collect::<String>())
    ))
}

impl Notify {
    /// Hands `job` to the small-file writer (one thread, started at the first
    /// job): many small files do not each start a thread. `Err` gives the job
    /// back when the thread cannot be started.
    fn write_small(self: &Arc<Self>, job: SmallJob) -> Result<(), Box<SmallJob>> {
        let Ok(mut slot) = self.small.lock() else {
            return Err(Box::new(job));
        };
        if slot.is_none() {
            let (tx, rx) = channel::<SmallJob>();
            let me = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("sockmod-small-writer".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let id = job.id;
                        let result = job.run();
                        let Some(n) = me.upgrade() else {
                            return;
                        };
                        if let Ok(mut d) = n.done.lock() {
                            d.push((id, result));
                        }
                        n.wake();
                    }
                });
            if started.is_err() {
                return Err(Box::new(job));
            }
            *slot = Some(tx);
        }
        match slot.as_ref() {
            Some(tx) => tx.send(job).map_err(|e| Box::new(e.0)),
            None => Err(Box::new(job)),
        }
    }

    /// Sets what wakes the loop (once; later calls change nothing).
    pub fn set_waker(&self, w: Arc<mio::Waker>) {
        let _ = self.waker.set(w);
    }

    fn wake(&self) {
        if let Some(w) = self.waker.get() {
            let _ = w.wake();
        }
    }
}

/// What the loop hands a file's writer.
enum Job {
    Write(Vec<u8>),
    Finish {
        digest: Option<String>,
        dir: PathBuf,
        stored: String,
    },
}

/// Shared between the loop and one writer.
#[derive(Default)]
struct Shared {
    /// Why writing failed, once it did.
    failed: Mutex<Option<String>>,
    /// Bytes handed over and not yet written.
    backlog: AtomicUsize,
    /// The loop holds the connection's reads until the backlog falls to
    /// [`LOW_WATER`]: the writer wakes it then.
    stalled: AtomicBool,
    /// The file was given up: the rest is not written.
    cancel: AtomicBool,
}

/// The loop stops reading a connection once this many bytes wait for its
/// file's writer (8 chunks of 256 KiB)…
pub const HIGH_WATER: usize = 2 << 20;
/// …and reads again once they fall to this.
pub const LOW_WATER: usize = 1 << 20;

/// The writer thread of one file: writes, hashes (the whole file and, for a
/// resumable one, each MiB), and on the last chunk flushes, verifies and
/// stores it, then reports to `notify`.
struct Writer {
    id: u64,
    file: Option<BufWriter<File>>,
    hasher: blake3::Hasher,
    sums: Option<super::partial::Sums>,
    part: PathBuf,
    shared: Arc<Shared>,
    notify: Arc<Notify>,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            match job {
                Job::Write(body) => {
                    let len = body.len();
                    if !self.shared.cancel.load(Ordering::Acquire)
                        && self.shared.failed.lock().is_ok_and(|f| f.is_none())
                        && let Err(reason) = self.write(&body)
                        && let Ok(mut f) = self.shared.failed.lock()
                    {
                        *f = Some(reason);
                    }
                    drop(body);
                    let left = self.shared.backlog.fetch_sub(len, Ordering::AcqRel) - len;
                    if left <= LOW_WATER && self.shared.stalled.swap(false, Ordering::AcqRel) {
                        self.notify.wake();
                    }
                }
                Job::Finish {
                    digest,
                    dir,
                    stored,
                } => {
                    let result = self.finish(digest.as_deref(), &dir, &stored);
                    if let Ok(mut d) = self.notify.done.lock() {
                        d.push((self.id, result));
                    }
                    self.notify.wake();
                    return;
                }
            }
        }
        // Closed without a last chunk: suspended (what came is kept) or given
        // up (the loop removed the part file).
        if let Some(mut w) = self.file.take() {
            let _ = w.flush();
            // Suspended (not given up): sealed for a later offer to trust.
            if !self.shared.cancel.load(Ordering::Acquire)
                && let Some(s) = self.sums.as_mut()
            {
                let _ = s.seal(w.get_ref());
            }
        }
    }

    fn write(&mut self, body: &[u8]) -> Result<(), String> {
        let Some(file) = self.file.as_mut() else {
            return Err("part file is closed".into());
        };
        // Written and hashed a piece at a time while the piece is still in cache:
        // the kernel's copy into the page cache is markedly slower for big
        // write(2) calls (dd of 1 GiB: 1.8 s of system time with 1 MiB writes,
        // 0.46 s with 32 KiB; the bench's file row went from 0.38 GiB/s with
        // whole 256 KiB chunks to 0.93-1.21 GiB/s).
        for piece in body.chunks(WRITE_BUF) {
            if let Err(e) = file.write_all(piece) {
                return Err(format!(
                    "cannot write {}: {}",
                    self.part.display(),
                    describe(&e)
                ));
            }
            if self.sums.is_none() {
                self.hasher.update(piece);
            }
        }
        // A resumable file is hashed by blocks (its whole digest comes from
        // theirs, [`super::digest`]).
        if let Some(sums) = self.sums.as_mut()
            && let Err(e) = sums.update(body, || file.flush())
        {
            return Err(format!("cannot keep the part file: {}", describe(&e)));
        }
        Ok(())
    }

    fn finish(
        &mut self,
        digest: Option<&str>,
        dir: &Path,
        stored: &str,
    ) -> Result<PathBuf, String> {
        let r = self.verify_and_place(digest, dir, stored);
        if r.is_err() {
            self.file = None;
            let _ = std::fs::remove_file(&self.part);
        }
        // The meta file is removed by the loop ([`Incoming::finished_by_writer`]),
        // which also creates them: its folder is not removed under a new one.
        self.sums = None;
        r
    }

    fn verify_and_place(
        &mut self,
        digest: Option<&str>,
        dir: &Path,
        stored: &str,
    ) -> Result<PathBuf, String> {
        if let Some(reason) = self.shared.failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(reason);
        }
        let flushed = match self.file.take() {
            Some(w) => w.into_inner().map_err(|e| describe(e.error())).map(drop),
            None => Ok(()),
        };
        if let Err(e) = flushed {
            return Err(format!("cannot write {}: {e}", self.part.display()));
        }
        if let Some(want) = digest {
            let got = match &self.sums {
                Some(s) => s
                    .root()
                    .ok_or("the part file's block digests are incomplete")?,
                None => self.hasher.finalize(),
            };
            check_digest(want, &got)?;
        }
        place(&self.part, dir, stored)
            .map_err(|e| format!("cannot store {stored:?}: {}", describe(&e)))
    }
}

/// A file being received: the loop's side (checks and counts); the bytes go
/// to its writer thread.
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
    tx: Option<Sender<Job>>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_index: u64,
    finished: bool,
    /// Kept for resuming (offered with a resume id): its meta file.
    meta: Option<PathBuf>,
    /// Bytes held from an earlier connection when this one began.
    pub resumed_from: u64,
    /// The resume id it was offered with.
    pub rid: Option<String>,
    /// A small file of a folder ([`Incoming::create_in`]): its part file,
    /// until its first chunk says which writer takes it.
    deferred: Option<(File, Arc<Notify>)>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notify")
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

/// A writer's handles: its jobs, what it shares with the loop, its thread.
type Spawned = (Sender<Job>, Arc<Shared>, std::thread::JoinHandle<()>);

/// Starts the writer of part file `part`.
fn spawn_writer(
    id: u64,
    file: File,
    hasher: blake3::Hasher,
    sums: Option<super::partial::Sums>,
    part: &Path,
    notify: &Arc<Notify>,
) -> Result<Spawned, String> {
    let shared = Arc::new(Shared::default());
    let (tx, rx) = channel();
    let w = Writer {
        id,
        file: Some(BufWriter::with_capacity(WRITE_BUF, file)),
        hasher,
        sums,
        part: part.to_path_buf(),
        shared: shared.clone(),
        notify: notify.clone(),
    };
    let t = std::thread::Builder::new()
        .name("sockmod-writer".into())
        .spawn(move || w.run(rx))
        .map_err(|e| format!("cannot start a writer: {}", describe(&e)))?;
    Ok((tx, shared, t))
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
    /// A file not started: no writer, nothing received, stored as `stored`
    /// in `dir` through `part`.
    fn base(id: u64, name: &str, total: u64, stored: String, dir: &Path, part: PathBuf) -> Self {
        Incoming {
            id,
            name: name.to_string(),
            total,
            received: 0,
            touched: std::time::Instant::now(),
            stored,
            dir: dir.to_path_buf(),
            part,
            tx: None,
            shared: Arc::default(),
            thread: None,
            next_index: 0,
            finished: false,
            meta: None,
            resumed_from: 0,
            rid: None,
            deferred: None,
        }
    }

    /// Starts receiving `name` (`total` bytes) into `inbox`, creating the inbox
    /// if missing and a fresh part file in it. A refusal names its true cause:
    /// an inbox that cannot be created or written says so whatever the size;
    /// only then is the free space looked at.
    pub fn create(
        id: u64,
        name: &str,
        total: u64,
        inbox: &Path,
        notify: &Arc<Notify>,
    ) -> Result<Self, String> {
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
        let (tx, shared, thread) =
            match spawn_writer(id, file, blake3::Hasher::new(), None, &part, notify) {
                Ok(w) => w,
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            };
        let mut inc = Incoming::base(id, name, total, stored, inbox, part);
        (inc.tx, inc.shared, inc.thread) = (Some(tx), shared, Some(thread));
        Ok(inc)
    }

    /// Starts receiving `name` (`total` bytes, a small file of a folder batch)
    /// with its part file in `part_dir`, to be stored as `stored` in `dir`
    /// (both under the batch's staging folder, already made). The free space
    /// was looked at for the batch ([`super::Transfers`]' admission).
    pub fn create_in(
        id: u64,
        name: &str,
        total: u64,
        part_dir: &Path,
        dir: &Path,
        stored: &str,
        notify: &Arc<Notify>,
    ) -> Result<Self, String> {
        let (part, file) = create_part(part_dir, stored).map_err(|e| not_writable(part_dir, &e))?;
        // No writer yet: a file that comes in one chunk goes to the shared
        // small-file writer; any other gets its own at its first chunk.
        let mut inc = Incoming::base(id, name, total, stored.to_string(), dir, part);
        inc.deferred = Some((file, notify.clone()));
        Ok(inc)
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
        notify: &Arc<Notify>,
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
        let meta = o.sums.meta().to_path_buf();
        let (tx, shared, thread) = spawn_writer(
            id,
            o.file,
            blake3::Hasher::new(),
            Some(o.sums),
            &o.part,
            notify,
        )?;
        let mut inc = Incoming::base(id, name, total, safe_name(name), inbox, o.part);
        (inc.tx, inc.shared, inc.thread) = (Some(tx), shared, Some(thread));
        (inc.received, inc.resumed_from) = (o.at, o.at);
        (inc.meta, inc.rid) = (Some(meta), Some(rid.to_string()));
        Ok(inc)
    }

    /// Stores the file, once complete, as `stored` in `dir` (a folder of a
    /// folder batch's staging folder) rather than in the inbox.
    pub fn retarget(&mut self, dir: PathBuf, stored: String) {
        self.dir = dir;
        self.stored = stored;
    }

    /// Stops receiving but keeps a resumable part file (with what was written
    /// so far) for a later offer of the same file; any other part file is
    /// removed as by [`Incoming::discard`]. Waits for the writer to store what
    /// it was handed (at most [`HIGH_WATER`] and a read's worth), so a later
    /// offer finds the part file whole.
    pub fn suspend(&mut self) {
        if self.meta.is_none() {
            return self.discard();
        }
        if !self.finished {
            self.finished = true;
            self.tx = None;
            if let Some(t) = self.thread.take() {
                let _ = t.join();
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

    /// Bytes handed to the writer and not yet written.
    pub fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Acquire)
    }

    /// The backlog reached [`HIGH_WATER`]: returns true when the loop should
    /// hold the connection's reads (the writer wakes it once the backlog is
    /// down to [`LOW_WATER`]).
    pub fn stall(&self) -> bool {
        if self.finished || self.backlog() < HIGH_WATER {
            return false;
        }
        self.shared.stalled.store(true, Ordering::Release);
        self.backlog() > LOW_WATER
    }

    /// Closes and removes the part file (idempotent).
    pub fn discard(&mut self) {
        if !self.finished {
            self.finished = true;
            self.shared.cancel.store(true, Ordering::Release);
            self.tx = None;
            self.thread = None;
            let _ = std::fs::remove_file(&self.part);
            if let Some(m) = self.meta.take() {
                super::partial::remove_meta(&m);
            }
        }
    }

    /// Takes chunk `index` (`None`: the last one) with `digest` (given on the
    /// last chunk by sockmod senders). The bytes go to the writer; the last
    /// chunk gives [`Step::Finishing`], and the outcome comes through the
    /// [`Notify`] the file was created with.
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
        if let Some(reason) = self.shared.failed.lock().ok().and_then(|mut f| f.take()) {
            return self.fail(reason, ended);
        }
        if let Some((file, notify)) = self.deferred.take() {
            if ended && self.received == 0 && after == self.total {
                // The whole file in one chunk: the shared small-file writer.
                let job = SmallJob {
                    id: self.id,
                    file,
                    part: self.part.clone(),
                    body: body.to_vec(),
                    digest: digest.map(str::to_string),
                    dir: self.dir.clone(),
                    stored: self.stored.clone(),
                };
                match notify.write_small(job) {
                    Ok(()) => {
                        self.received = after;
                        self.next_index += 1;
                        self.finished = true;
                        return Step::Finishing;
                    }
                    Err(job) => self.deferred = Some((job.file, notify)),
                }
            } else {
                self.deferred = Some((file, notify));
            }
            // Its own writer, as any other file.
            if let Some((file, notify)) = self.deferred.take() {
                match spawn_writer(
                    self.id,
                    file,
                    blake3::Hasher::new(),
                    None,
                    &self.part,
                    &notify,
                ) {
                    Ok((tx, shared, thread)) => {
                        self.tx = Some(tx);
                        self.shared = shared;
                        self.thread = Some(thread);
                    }
                    Err(e) => return self.fail(e, ended),
                }
            }
        }
        let Some(tx) = self.tx.as_ref() else {
            return self.fail("part file is closed".into(), ended);
        };
        if !body.is_empty() {
            self.shared.backlog.fetch_add(body.len(), Ordering::AcqRel);
            if tx.send(Job::Write(body.to_vec())).is_err() {
                return self.fail("the writer stopped".into(), ended);
            }
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
        let job = Job::Finish {
            digest: digest.map(str::to_string),
            dir: self.dir.clone(),
            stored: self.stored.clone(),
        };
        if tx.send(job).is_err() {
            return self.fail("the writer stopped".into(), true);
        }
        // From here the writer owns the part file (and removes it on failure).
        self.finished = true;
        self.tx = None;
        Step::Finishing
    }

    /// Waits for the writer to end (after the last chunk: the file stored or
    /// failed).
    pub fn wait_writer(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The writer reported the outcome of the last chunk: the meta file of a
    /// resumable part file is no longer needed (the file is stored, or failed
    /// and its part file removed).
    pub fn finished_by_writer(&mut self) {
        if let Some(m) = self.meta.take() {
            super::partial::remove_meta(&m);
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

    /// The outcome of a step, waiting for the writer when it is finishing.
    fn outcome(n: &Notify, step: Step) -> Step {
        if step != Step::Finishing {
            return step;
        }
        loop {
            if let Some((_, r)) = n.done.lock().unwrap().pop() {
                return match r {
                    Ok(p) => Step::Done(p),
                    Err(reason) => Step::Failed {
                        reason,
                        ended: true,
                    },
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
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
        let n = Arc::new(Notify::default());
        let mut r = Incoming::create(1, "../a.txt", 6, &d, &n).unwrap();
        assert!(names(&d)[0].starts_with(".a.txt"));
        assert_eq!(r.accept(Some(0), None, b"abc"), Step::More);
        let h = blake3::hash(b"abcdef").to_hex().to_uppercase();
        let Step::Done(p) = outcome(&n, r.accept(None, Some(&h), b"def")) else {
            panic!()
        };
        assert_eq!(p, d.join("a.txt"));
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdef");
        drop(r);
        assert_eq!(names(&d), ["a.txt"]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn small_files_go_to_the_shared_writer_or_their_own() {
        let d = inbox("small");
        std::fs::create_dir_all(&d).unwrap();
        let n = Arc::new(Notify::default());
        // One chunk, right digest: stored by the shared writer.
        let mut r = Incoming::create_in(1, "a.txt", 3, &d, &d, "a.txt", &n).unwrap();
        let h = blake3::hash(b"abc").to_hex().to_string();
        let Step::Done(p) = outcome(&n, r.accept(None, Some(&h), b"abc")) else {
            panic!()
        };
        assert_eq!(std::fs::read(p).unwrap(), b"abc");
        // One chunk, wrong digest: fails, and the part file goes.
        let mut r = Incoming::create_in(2, "b.txt", 3, &d, &d, "b.txt", &n).unwrap();
        let bad = blake3::hash(b"xyz").to_hex().to_string();
        let Step::Failed { reason, .. } = outcome(&n, r.accept(None, Some(&bad), b"abc")) else {
            panic!()
        };
        assert!(reason.contains("digest mismatch"), "{reason}");
        // Two chunks: a writer of its own.
        let mut r = Incoming::create_in(3, "c.txt", 6, &d, &d, "c.txt", &n).unwrap();
        assert_eq!(r.accept(Some(0), None, b"abc"), Step::More);
        let h = blake3::hash(b"abcdef").to_hex().to_string();
        let Step::Done(p) = outcome(&n, r.accept(None, Some(&h), b"def")) else {
            panic!()
        };
        assert_eq!(std::fs::read(p).unwrap(), b"abcdef");
        // Dropped before its chunk: nothing stays.
        drop(Incoming::create_in(4, "d.txt", 3, &d, &d, "d.txt", &n).unwrap());
        assert_eq!(names(&d), ["a.txt", "c.txt"]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn every_failure_removes_the_part() {
        let d = inbox("fail");
        let n = Arc::new(Notify::default());
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
            let mut r = Incoming::create(1, "x", 6, &d, &n).unwrap();
            match outcome(&n, f(&mut r)) {
                Step::Failed { reason, .. } => assert!(reason.contains(want), "{reason}"),
                s => panic!("{s:?}"),
            }
            assert!(names(&d).is_empty(), "{want}: {:?}", names(&d));
        }
        // Dropped unfinished (connection lost): no part left either.
        let mut r = Incoming::create(1, "x", 6, &d, &n).unwrap();
        assert_eq!(r.accept(Some(0), None, b"abc"), Step::More);
        drop(r);
        assert!(names(&d).is_empty());
        // Without H (original peers) the length alone decides.
        let mut r = Incoming::create(1, "", 0, &d, &n).unwrap();
        assert!(matches!(
            outcome(&n, r.accept(None, None, b"")),
            Step::Done(_)
        ));
        assert_eq!(names(&d), ["file"]);
        std::fs::remove_dir_all(d).unwrap();
    }
}
