//! A connection's outbound queue: frames waiting to be written, owned or
//! shared between connections (a broadcast is encoded once), written with
//! `writev` in bounded turns.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// A queued piece of output: owned, or shared between connections (broadcast).
#[derive(Debug)]
pub(crate) enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// Small frames are appended to the last owned chunk up to this size, so a burst
/// of small sends becomes one buffer and one write.
const COALESCE: usize = 64 << 10;

/// Chunks handed to one `writev`: shared broadcast frames are separate chunks, so
/// a queue of many of them still goes out in few system calls.
const MAX_IOV: usize = 64;

/// The outbound queue of one connection.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Bytes waiting in total.
    pub(crate) len: usize,
}

/// Result of writing a queue out.
pub(crate) enum Flush {
    /// Everything written.
    Done,
    /// The socket is full; wait for writability.
    Blocked,
    /// The per-turn budget ran out with data left.
    Budget,
}

impl OutQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes produced by `f` into an owned chunk (coalescing small ones).
    pub(crate) fn append_with<E>(
        &mut self,
        f: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let reuse = matches!(self.chunks.back(), Some(Chunk::Owned(v)) if v.len() < COALESCE);
        if !reuse {
            self.chunks.push_back(Chunk::Owned(Vec::new()));
        }
        let Some(Chunk::Owned(v)) = self.chunks.back_mut() else {
            unreachable!("back chunk is owned")
        };
        let before = v.len();
        let r = f(v);
        let added = v.len() - before;
        if r.is_err() || added == 0 {
            if v.is_empty() {
                self.chunks.pop_back();
            }
            r?;
        }
        self.len += added;
        Ok(added)
    }

    pub(crate) fn push_owned(&mut self, v: Vec<u8>) {
        if !v.is_empty() {
            self.len += v.len();
            self.chunks.push_back(Chunk::Owned(v));
        }
    }

    pub(crate) fn push_shared(&mut self, a: Arc<[u8]>) {
        if !a.is_empty() {
            self.len += a.len();
            self.chunks.push_back(Chunk::Shared(a));
        }
    }

    /// Writes until done, blocked, or `budget` bytes are written.
    pub(crate) fn write_to(
        &mut self,
        w: &mut impl Write,
        budget: usize,
        written: &mut u64,
    ) -> io::Result<Flush> {
        let mut done = 0usize;
        while !self.chunks.is_empty() {
            if done >= budget {
                return Ok(Flush::Budget);
            }
            let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, c) in self.chunks.iter().enumerate().take(MAX_IOV) {
                let s = c.as_slice();
                slices[n] = IoSlice::new(if i == 0 { &s[self.offset..] } else { s });
                n += 1;
            }
            let wrote = match w.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            done += wrote;
            *written += wrote as u64;
            self.consume(wrote);
        }
        Ok(Flush::Done)
    }

    /// The bytes to write next (the front chunk's unwritten part).
    pub(crate) fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c.as_slice()[self.offset..])
    }

    /// Drops `n` written bytes from the front.
    pub(crate) fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.as_slice().len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.chunks.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
        if self.chunks.is_empty() {
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `cap` bytes per call and `total` overall.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        total: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.got.len() >= self.total {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.cap).min(self.total - self.got.len());
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queue_preserves_order_across_partial_writes() {
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let bytes = i.to_le_bytes().repeat((i % 7 + 1) as usize);
            expect.extend_from_slice(&bytes);
            match i % 3 {
                0 => q.push_shared(bytes.into()),
                1 => q.push_owned(bytes),
                _ => {
                    q.append_with(|v| {
                        v.extend_from_slice(&bytes);
                        Ok::<_, ()>(())
                    })
                    .unwrap();
                }
            }
        }
        assert_eq!(q.len, expect.len());
        let mut w = Trickle {
            got: Vec::new(),
            cap: 5,
            total: 100,
        };
        let mut written = 0;
        assert!(matches!(
            q.write_to(&mut w, usize::MAX, &mut written),
            Ok(Flush::Blocked)
        ));
        w.total = usize::MAX;
        assert!(matches!(
            q.write_to(&mut w, 10, &mut written),
            Ok(Flush::Budget)
        ));
        assert!(matches!(
            q.write_to(&mut w, usize::MAX, &mut written),
            Ok(Flush::Done)
        ));
        assert_eq!(w.got, expect);
        assert_eq!(written as usize, expect.len());
        assert!(q.is_empty());
    }

    #[test]
    fn failed_append_leaves_queue_unchanged() {
        let mut q = OutQueue::default();
        assert!(q.append_with(|_| Err::<(), _>("no")).is_err());
        assert!(q.is_empty());
        assert!(q.chunks.is_empty());
    }
}
