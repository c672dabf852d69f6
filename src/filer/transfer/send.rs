//! The sending side of one file: reads it a chunk at a time (only when asked,
//! so memory stays bounded), hashes as it goes, and builds the chunk frames.

use super::wire::chunk_header;
use crate::net::describe;
use crate::protocol::Header;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

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

/// A file being sent.
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
    file: File,
    next_index: u64,
    hasher: blake3::Hasher,
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
        Ok(Outgoing {
            id,
            path,
            name,
            total: meta.len(),
            sent: 0,
            offered: false,
            cleared: false,
            resume: None,
            resumed_from: 0,
            entry: None,
            file,
            next_index: 0,
            hasher: blake3::Hasher::new(),
        })
    }

    /// The file's resume id ([`resume_id`]).
    pub fn resume_id(&self) -> io::Result<String> {
        resume_id(&self.file)
    }

    /// The receiver holds the first `at` bytes: sending goes on from there.
    /// The digest still covers the whole file, so those bytes are read and
    /// hashed here first (about 0.1 s per GiB on a desktop).
    pub fn resume_at(&mut self, at: u64) -> Result<(), String> {
        use std::io::{Read, Seek, SeekFrom};
        if at > self.total || self.sent > 0 {
            return Err(format!("bad answer: at:{at} (the file has {})", self.total));
        }
        let err = |e: io::Error| format!("cannot read {}: {}", self.path.display(), describe(&e));
        self.file.seek(SeekFrom::Start(0)).map_err(err)?;
        let mut left = at;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.file.read_exact(&mut buf[..n]).map_err(err)?;
            self.hasher.update(&buf[..n]);
            left -= n as u64;
        }
        self.sent = at;
        self.resumed_from = at;
        Ok(())
    }

    /// True once at least one chunk went out (the receiver knows the file).
    pub fn announced(&self) -> bool {
        self.offered || self.sent > 0 || self.next_index > 0
    }

    /// Reads the next chunk of at most `chunk` bytes.
    pub fn next_piece(&mut self, chunk: usize) -> Result<Piece, String> {
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
        self.hasher.update(&body);
        let first = self.next_index == 0;
        self.sent += got as u64;
        let last = self.sent == self.total;
        let mut header = if last {
            let digest = self.hasher.finalize().to_hex();
            chunk_header(&self.name, self.total, None, Some(digest.as_str()))
        } else {
            let h = chunk_header(&self.name, self.total, Some(self.next_index), None);
            self.next_index += 1;
            h
        };
        if first {
            // The first chunk: the transfer's number, for the receiver (§5.1).
            header.set("T", self.id.to_string());
            if let Some(e) = &self.entry {
                // Original peers ignore it and store the base name `N`.
                header.set("P", e.path.as_str());
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
