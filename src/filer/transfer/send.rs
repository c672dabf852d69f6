//! The sending side of one file: reads it a chunk at a time (only when asked,
//! so memory stays bounded), hashes as it goes, and builds the chunk frames.

use super::digest::{BLOCK, BlockHasher, Digest};
use super::wire::chunk_header;
use crate::net::describe;
use crate::protocol::Header;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Checks that `path` can be sent: it exists, is a regular file (after
/// symlinks), and opens for reading. Returns its size.
pub fn check_source(path: &Path) -> Result<u64, String> {
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot send {shown}: {}", describe(&e)))?;
    if meta.is_dir() {
        return Err(format!("cannot send {shown}: it is a directory"));
    }
    if !meta.is_file() {
        return Err(format!("cannot send {shown}: not a regular file"));
    }
    File::open(path).map_err(|e| format!("cannot send {shown}: {}", describe(&e)))?;
    Ok(meta.len())
}

/// The name a file is announced under: its base name.
pub fn wire_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "file".to_string())
}

/// A file being sent: the loop's side. Its bytes are read, hashed and made
/// into chunk frames by a reader thread ([`Outgoing::take_piece`]), a few
/// chunks ahead.
pub struct Outgoing {
    /// The transfer number.
    pub id: u64,
    /// Where it is read from.
    pub path: PathBuf,
    /// The announced name (`N`).
    pub name: String,
    /// The announced length (`L`): the size when sending began.
    pub total: u64,
    /// Bytes read and handed to the connection so far.
    pub sent: u64,
    /// An offer went out for it (the receiver knows of it).
    pub offered: bool,
    /// It may be sent: accepted, or no offer is needed.
    pub cleared: bool,
    /// The resume id offered (`R`), if any.
    pub resume: Option<String>,
    /// Bytes the receiver already held when sending began (its `at`).
    pub resumed_from: u64,
    /// A file of a folder batch: its keys (§5.7).
    pub entry: Option<super::wire::Entry>,
    /// Pieces taken so far.
    taken: u64,
    /// A chunk read ahead ([`super::prefetch`]), taken first.
    stashed: Option<Piece>,
    /// Where block digests of files sent with a resume id are kept.
    pub digests: Option<Digests>,
    /// The file's inode and change time, for the key of its digests.
    version: String,
    /// The file until its reader starts.
    source: Option<Source>,
    feed: Option<Feed>,
}

/// Pieces read ahead by the reader thread.
const READ_AHEAD: usize = 4;

/// The reader thread's side of a file: reads, hashes, builds the frames.
struct Source {
    file: File,
    path: PathBuf,
    id: u64,
    name: String,
    total: u64,
    rel: Option<String>,
    /// The receiver is a sockmod peer (it was offered the file): the first
    /// chunk carries the extension keys `T` and `P`. An original peer gets
    /// exactly the original chunk format.
    extended: bool,
    sent: u64,
    /// Bytes the receiver holds: read and hashed first, not sent.
    skip: u64,
    next_index: u64,
    hasher: blake3::Hasher,
    /// What the file was when sending began.
    was: Stamp,
    /// Offered with a resume id: hashed by blocks ([`super::digest`]), the
    /// blocks' digests kept in the process's [`Digests`] for a later resume.
    blocks: Option<Blocks>,
}

/// The block digests of a file being sent with a resume id.
struct Blocks {
    done: Vec<Digest>,
    block: BlockHasher,
    fill: u64,
    /// Where they are kept, and under which key.
    keep: Digests,
    key: String,
}

impl Blocks {
    fn update(&mut self, total: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let n = ((BLOCK - self.fill) as usize).min(data.len());
            self.block.update(&data[..n]);
            self.fill += n as u64;
            data = &data[n..];
            if self.fill == BLOCK {
                let d = self.block.finish();
                self.keep.record(&self.key, self.done.len(), d);
                self.done.push(d);
                self.block = BlockHasher::new(total, self.done.len() as u64);
                self.fill = 0;
            }
        }
    }

    fn root(&self, total: u64) -> Option<blake3::Hash> {
        let mut all = self.done.clone();
        if self.fill > 0 || total == 0 {
            all.push(self.block.finish());
        }
        super::digest::root(total, &all)
    }
}

/// Block digests of files sent with a resume id in this run, so a resumed
/// send need not read again what the receiver holds (the key also has the
/// file's inode and change time: any write since misses). At most
/// [`Digests::FILES`] files are kept, the oldest dropped first.
#[derive(Clone, Default)]
pub struct Digests(Arc<std::sync::Mutex<Kept>>);

/// The digests kept by key, and the keys oldest first.
type Kept = (HashMap<String, Vec<Digest>>, VecDeque<String>);

impl Digests {
    const FILES: usize = 64;

    fn record(&self, key: &str, index: usize, d: Digest) {
        let Ok(mut g) = self.0.lock() else {
            return;
        };
        let (map, order) = &mut *g;
        if !map.contains_key(key) {
            if order.len() >= Self::FILES
                && let Some(old) = order.pop_front()
            {
                map.remove(&old);
            }
            order.push_back(key.to_string());
        }
        let v = map.entry(key.to_string()).or_default();
        if v.len() == index {
            v.push(d);
        }
    }

    /// The first `n` block digests kept under `key`, if that many are.
    fn first(&self, key: &str, n: usize) -> Option<Vec<Digest>> {
        let g = self.0.lock().ok()?;
        g.0.get(key)
            .filter(|v| v.len() >= n)
            .map(|v| v[..n].to_vec())
    }
}

/// What identifies a file's version: its device and inode, size and
/// modification time. Any change while the file is sent fails the transfer
/// (`changed while being sent`) rather than deliver a mix of two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// The loop's end of a reader thread.
struct Feed {
    rx: std::sync::mpsc::Receiver<Result<Piece, String>>,
    /// The loop found nothing ready: the reader wakes it with the next piece.
    wanted: Arc<AtomicBool>,
}

/// What [`Outgoing::take_piece`] found.
#[allow(clippy::large_enum_variant)] // moved once per chunk: boxing costs more
pub enum Taken {
    /// The next piece, or why the file cannot be read.
    Ready(Result<Piece, String>),
    /// Not read yet: the waker given is called once it is.
    Later,
}

/// Bytes read from each end of a file for its resume id.
const SAMPLE: u64 = 1 << 20;

/// The resume id of an open file (docs/PROTOCOL.md §5.4b): the BLAKE3 of its
/// size, its modification time (ns) and its first and last MiB, in hex (32
/// digits). It stays the same across runs while the file is untouched, costs
/// two reads of 1 MiB whatever the size, and changes when the file is
/// rewritten (new mtime); a change it would miss is still caught by the
/// whole-file digest `H` at the end, which fails the transfer and drops the
/// receiver's part file.
pub fn resume_id(file: &File) -> io::Result<String> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let m = file.metadata()?;
    let size = m.len();
    let mut h = blake3::Hasher::new();
    h.update(b"sockmod resume id v1\0");
    h.update(&size.to_le_bytes());
    h.update(&m.mtime().to_le_bytes());
    h.update(&m.mtime_nsec().to_le_bytes());
    let mut buf = vec![0u8; SAMPLE.min(size) as usize];
    for start in [0, size - buf.len() as u64] {
        file.read_exact_at(&mut buf, start)?;
        h.update(&buf);
    }
    Ok(h.finalize().to_hex()[..32].to_string())
}

/// One chunk ready to queue.
pub struct Piece {
    /// Its header.
    pub header: Header,
    /// Its bytes.
    pub body: Vec<u8>,
    /// True for the last chunk (`index:-1`, with the digest).
    pub last: bool,
}

impl Outgoing {
    /// Opens `path` for sending.
    pub fn open(id: u64, path: PathBuf, name: String) -> Result<Self, String> {
        let shown = path.display().to_string();
        let file =
            File::open(&path).map_err(|e| format!("cannot read {shown}: {}", describe(&e)))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {shown}: {}", describe(&e)))?;
        if !meta.is_file() {
            return Err(format!("cannot read {shown}: not a regular file"));
        }
        let total = meta.len();
        Ok(Outgoing {
            id,
            path: path.clone(),
            name: name.clone(),
            total,
            sent: 0,
            offered: false,
            cleared: false,
            resume: None,
            resumed_from: 0,
            entry: None,
            taken: 0,
            stashed: None,
            digests: None,
            version: {
                use std::os::unix::fs::MetadataExt;
                format!(
                    "{} {} {}.{}",
                    meta.dev(),
                    meta.ino(),
                    meta.ctime(),
                    meta.ctime_nsec()
                )
            },
            source: Some(Source {
                file,
                path,
                id,
                name,
                total,
                rel: None,
                extended: false,
                sent: 0,
                skip: 0,
                next_index: 0,
                hasher: blake3::Hasher::new(),
                was: Stamp::of(&meta),
                blocks: None,
            }),
            feed: None,
        })
    }

    /// The file's resume id ([`resume_id`]).
    pub fn resume_id(&self) -> io::Result<String> {
        match &self.source {
            Some(s) => resume_id(&s.file),
            None => Err(io::Error::other("already being read")),
        }
    }

    /// Readies the source for reading: its path keys, and block hashing when
    /// it goes with a resume id.
    fn prepare(&mut self) {
        let rel = self.entry.as_ref().map(|e| e.path.as_str().to_string());
        let (offered, total) = (self.offered, self.total);
        let key = self
            .resume
            .as_ref()
            .map(|r| format!("{r} {}", self.version));
        let keep = self.digests.clone().unwrap_or_default();
        let Some(src) = self.source.as_mut() else {
            return;
        };
        src.rel = rel;
        src.extended = offered;
        if src.blocks.is_none()
            && let Some(key) = key
        {
            src.blocks = Some(Blocks {
                done: Vec::new(),
                block: BlockHasher::new(total, 0),
                fill: 0,
                keep,
                key,
            });
        }
    }

    /// The receiver holds the first `at` bytes: sending goes on from there.
    /// The digest still covers the whole file: the digests of those blocks
    /// are taken from this run's earlier send of the same file when kept
    /// ([`Digests`]), else the bytes are read and hashed first, by the reader
    /// (about 0.2 s per GiB).
    pub fn resume_at(&mut self, at: u64) -> Result<(), String> {
        let Some(src) = self.source.as_mut() else {
            return Err(format!("bad answer: at:{at} (already sending)"));
        };
        if at > self.total || self.sent > 0 {
            return Err(format!("bad answer: at:{at} (the file has {})", self.total));
        }
        src.skip = at;
        self.sent = at;
        self.resumed_from = at;
        Ok(())
    }

    /// Keeps `piece`, read ahead by [`Outgoing::next_piece`], as the next
    /// one [`Outgoing::take_piece`] gives.
    pub fn stash(&mut self, piece: Piece) {
        self.stashed = Some(piece);
    }

    /// True once at least one chunk went out (the receiver knows the file).
    pub fn announced(&self) -> bool {
        self.offered || self.sent > 0 || self.taken > 0
    }

    /// Reads the next chunk of at most `chunk` bytes, here (without a reader
    /// thread).
    pub fn next_piece(&mut self, chunk: usize) -> Result<Piece, String> {
        self.prepare();
        let Some(src) = self.source.as_mut() else {
            return Err("already being read".into());
        };
        let piece = src.next_piece(chunk)?;
        self.sent = src.sent;
        self.taken += 1;
        Ok(piece)
    }

    /// The next chunk (of at most `chunk` bytes) if the reader has it ready;
    /// the reader thread starts at the first call, and calls `wake` when a
    /// chunk is ready that was asked for too early ([`Taken::Later`]).
    pub fn take_piece(&mut self, chunk: usize, wake: &Arc<mio::Waker>) -> Taken {
        if let Some(p) = self.stashed.take() {
            // Read ahead: `sent` already counts it.
            return Taken::Ready(Ok(p));
        }
        if self.feed.is_none() {
            self.prepare();
            let Some(src) = self.source.take() else {
                return Taken::Ready(Err("the reader stopped".into()));
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
            let wanted = Arc::new(AtomicBool::new(false));
            let (w, waker) = (wanted.clone(), wake.clone());
            let started = std::thread::Builder::new()
                .name("sockmod-reader".into())
                .spawn(move || src.run(chunk, tx, &w, &waker));
            if let Err(e) = started {
                return Taken::Ready(Err(format!("cannot start a reader: {}", describe(&e))));
            }
            self.feed = Some(Feed { rx, wanted });
        }
        let Some(feed) = self.feed.as_ref() else {
            return Taken::Later;
        };
        use std::sync::mpsc::TryRecvError;
        let got = match feed.rx.try_recv() {
            Err(TryRecvError::Empty) => {
                feed.wanted.store(true, Ordering::Release);
                // Ready meanwhile: taken now (the reader's wake-up is spare).
                match feed.rx.try_recv() {
                    Err(TryRecvError::Empty) => return Taken::Later,
                    other => other,
                }
            }
            other => other,
        };
        match got {
            Ok(Ok(piece)) => {
                self.sent += piece.body.len() as u64;
                self.taken += 1;
                Taken::Ready(Ok(piece))
            }
            Ok(Err(e)) => Taken::Ready(Err(e)),
            Err(_) => Taken::Ready(Err("the reader stopped".into())),
        }
    }
}

impl Source {
    /// The reader thread: reads ahead into `tx` until the last chunk, an
    /// error, or the loop drops the file.
    fn run(
        mut self,
        chunk: usize,
        tx: std::sync::mpsc::SyncSender<Result<Piece, String>>,
        wanted: &AtomicBool,
        waker: &mio::Waker,
    ) {
        if self.skip > 0
            && !self.kept_prefix()
            && let Err(e) = self.hash_prefix()
        {
            let _ = tx.send(Err(e));
            if wanted.swap(false, Ordering::AcqRel) {
                let _ = waker.wake();
            }
            return;
        }
        loop {
            let piece = self.next_piece(chunk);
            let end = piece.as_ref().map_or(true, |p| p.last);
            if tx.send(piece).is_err() {
                return;
            }
            if wanted.swap(false, Ordering::AcqRel) {
                let _ = waker.wake();
            }
            if end {
                return;
            }
        }
    }

    /// Takes the digests of the blocks the receiver holds from an earlier
    /// send of this file in this run, when they were kept: true when so (the
    /// file is then positioned after them).
    fn kept_prefix(&mut self) -> bool {
        use std::io::{Seek, SeekFrom};
        let (skip, total) = (self.skip, self.total);
        let Some(b) = self.blocks.as_mut() else {
            return false;
        };
        if skip % BLOCK != 0 || !b.done.is_empty() || b.fill != 0 {
            return false;
        }
        let n = (skip / BLOCK) as usize;
        let Some(kept) = b.keep.first(&b.key, n) else {
            return false;
        };
        if self.file.seek(SeekFrom::Start(skip)).is_err() {
            return false;
        }
        b.done = kept;
        b.block = BlockHasher::new(total, n as u64);
        self.sent = skip;
        true
    }

    /// Reads and hashes the bytes the receiver already holds.
    fn hash_prefix(&mut self) -> Result<(), String> {
        use std::io::{Read, Seek, SeekFrom};
        let err = |e: io::Error| format!("cannot read {}: {}", self.path.display(), describe(&e));
        self.file.seek(SeekFrom::Start(0)).map_err(err)?;
        let mut left = self.skip;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.file.read_exact(&mut buf[..n]).map_err(err)?;
            match self.blocks.as_mut() {
                Some(b) => b.update(self.total, &buf[..n]),
                None => {
                    self.hasher.update(&buf[..n]);
                }
            }
            left -= n as u64;
        }
        self.sent = self.skip;
        Ok(())
    }

    /// `Err` when the file changed since sending began: its size or
    /// modification time (the open file, after each read), or, at the end,
    /// which file its path names (replaced by a new version).
    fn check_unchanged(&self, last: bool) -> Result<(), String> {
        let changed = || format!("{} changed while being sent", self.path.display());
        let now = self.file.metadata().map_err(|_| changed())?;
        if now.len() < self.total {
            return Err(format!(
                "{} shrank while being sent ({} long now)",
                self.path.display(),
                crate::human::part_of(now.len(), self.total)
            ));
        }
        let mut same = Stamp::of(&now) == self.was;
        if same && last {
            same = std::fs::metadata(&self.path).is_ok_and(|m| Stamp::of(&m) == self.was);
        }
        if same { Ok(()) } else { Err(changed()) }
    }

    /// Reads the next chunk of at most `chunk` bytes.
    fn next_piece(&mut self, chunk: usize) -> Result<Piece, String> {
        let want = (self.total - self.sent).min(chunk as u64) as usize;
        let mut body = Vec::with_capacity(want);
        let got = read_up_to(&mut self.file, &mut body, want)
            .map_err(|e| format!("cannot read {}: {}", self.path.display(), describe(&e)))?;
        if got < want {
            return Err(format!(
                "{} shrank while being sent ({} read)",
                self.path.display(),
                crate::human::part_of(self.sent + got as u64, self.total)
            ));
        }
        match self.blocks.as_mut() {
            Some(b) => b.update(self.total, &body),
            None => {
                self.hasher.update(&body);
            }
        }
        let first = self.next_index == 0;
        self.sent += got as u64;
        let last = self.sent == self.total;
        self.check_unchanged(last)?;
        let mut header = if last {
            let digest = match &self.blocks {
                Some(b) => b.root(self.total).unwrap_or_else(|| self.hasher.finalize()),
                None => self.hasher.finalize(),
            }
            .to_hex();
            chunk_header(&self.name, self.total, None, Some(digest.as_str()))
        } else {
            let h = chunk_header(&self.name, self.total, Some(self.next_index), None);
            self.next_index += 1;
            h
        };
        if first && self.extended {
            // The first chunk: the transfer's number, for the receiver (§5.1).
            header.set("T", self.id.to_string());
            if let Some(p) = &self.rel {
                // Original peers ignore it and store the base name `N`.
                header.set("P", p.as_str());
            }
        }
        if last {
            // An empty or one-chunk file is a single `index:-1` frame.
            self.next_index += 1;
        }
        Ok(Piece { header, body, last })
    }
}

/// Reads until `want` bytes are appended to `buf` or the file ends; returns the
/// count. One `read` per chunk in the usual case (`Read::read_to_end` would
/// start small and double, taking six calls for 256 KiB), straight into the
/// vector's spare capacity without zeroing it first.
fn read_up_to(f: &mut File, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(want);
    let mut got = 0;
    while got < want {
        let spare = buf.spare_capacity_mut();
        let n = (want - got).min(spare.len());
        // SAFETY: read(2) writes at most `n` bytes into the spare capacity,
        // which is valid for writes of that length; no reference to
        // uninitialised memory is created.
        let r = unsafe { libc::read(f.as_raw_fd(), spare.as_mut_ptr().cast(), n) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        // SAFETY: the kernel initialised these `r` bytes.
        unsafe { buf.set_len(buf.len() + r as usize) };
        got += r as usize;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Frame, parse};
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("sockmod-send-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn pieces(bytes: &[u8], chunk: usize) -> Vec<Piece> {
        let p = tmp(&format!("{}-{chunk}", bytes.len()), bytes);
        let mut o = Outgoing::open(1, p.clone(), "x.bin".into()).unwrap();
        o.offered = true;
        let mut v = Vec::new();
        loop {
            let piece = o.next_piece(chunk).unwrap();
            let last = piece.last;
            v.push(piece);
            if last {
                break;
            }
        }
        std::fs::remove_file(p).unwrap();
        v
    }

    #[test]
    fn an_original_peer_gets_the_original_chunk_keys_only() {
        let p = tmp("original-keys", b"0123456789");
        let mut o = Outgoing::open(1, p.clone(), "x.bin".into()).unwrap();
        let piece = o.next_piece(4).unwrap();
        std::fs::remove_file(p).unwrap();
        let keys: Vec<&str> = piece.header.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["TP", "N", "L", "index"]);
    }

    #[test]
    fn chunking_and_digest() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let v = pieces(&data, 300);
        assert_eq!(v.len(), 4);
        let idx: Vec<_> = v
            .iter()
            .map(|p| p.header.get("index").unwrap().to_string())
            .collect();
        assert_eq!(idx, ["0", "1", "2", "-1"]);
        assert_eq!(v[3].body.len(), 100);
        let all: Vec<u8> = v.iter().flat_map(|p| p.body.clone()).collect();
        assert_eq!(all, data);
        let want = blake3::hash(&data).to_hex().to_string();
        assert_eq!(v[3].header.get("H"), Some(want.as_str()));
        assert!(v[0].header.get("H").is_none());
        assert!(v[0].header.get("T").is_some() && v[1].header.get("T").is_none());
        let Some(Ok(Frame::Chunk(c))) = parse(&v[0].header) else {
            panic!()
        };
        assert_eq!((c.name, c.total, c.index), ("x.bin", 1000, Some(0)));
    }

    #[test]
    fn empty_and_exact_are_one_frame() {
        let v = pieces(b"", 300);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].header.get("index"), Some("-1"));
        assert_eq!(
            v[0].header.get("H"),
            Some(blake3::hash(b"").to_hex().as_str())
        );
        let v = pieces(&[5u8; 300], 300);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].body.len(), 300);
    }

    #[test]
    fn directories_and_missing_files_are_refused() {
        assert!(
            check_source(&std::env::temp_dir())
                .unwrap_err()
                .contains("directory")
        );
        assert!(
            check_source(Path::new("/nonexistent/x"))
                .unwrap_err()
                .contains("not found")
        );
    }

    #[test]
    fn shrinking_file_fails() {
        let p = tmp("shrink", &[1u8; 1000]);
        let mut o = Outgoing::open(1, p.clone(), "s".into()).unwrap();
        o.next_piece(300).unwrap();
        std::fs::write(&p, [1u8; 400]).unwrap();
        let e = o.next_piece(300).err().unwrap();
        assert!(e.contains("shrank"), "{e}");
        std::fs::remove_file(p).unwrap();
    }
}
