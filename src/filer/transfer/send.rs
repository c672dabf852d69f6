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
    file: File,
    next_index: u64,
    hasher: blake3::Hasher,
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
            file,
            next_index: 0,
            hasher: blake3::Hasher::new(),
        })
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
        if self.sent == got as u64 {
            // The first chunk: the transfer's number, for the receiver (§5.1).
            header.set("T", self.id.to_string());
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
