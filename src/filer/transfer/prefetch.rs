//! Files to offer, opened off the loop: one worker thread opens each file
//! offered to a sockmod peer and takes its resume id (two 1 MiB reads), so
//! the loop never waits for that; a small file of a folder also has its
//! single chunk read, ahead of its turn, so a folder of many small files does
//! not wait for a reader thread per file. The loop asks for at most
//! [`WINDOW`] small files ahead per connection (each at most [`SMALL`]
//! bytes) and for any other file only when its turn comes, so what is held
//! (memory and descriptors) stays bounded.

use super::send::{Outgoing, Piece};
use super::wire::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

/// Files at most this long are read ahead.
pub const SMALL: u64 = 64 << 10;

/// Files read ahead per connection, at most.
pub const WINDOW: usize = 64;

/// A file opened ahead (resume id taken, offered form), with its only chunk
/// when it was asked for, or why it could not be read.
pub type Ready = Result<(Outgoing, Option<Piece>), String>;

struct Job {
    id: u64,
    path: PathBuf,
    name: String,
    entry: Option<Entry>,
    /// Read its one chunk too (of at most this many bytes).
    chunk: Option<usize>,
}

/// The loop's side of the worker.
#[derive(Default)]
pub struct Prefetch {
    tx: Option<Sender<Job>>,
    ready: Arc<Mutex<HashMap<u64, Ready>>>,
    /// The loop found a file not ready yet: the worker wakes it.
    wanted: Arc<AtomicBool>,
    /// Transfers asked for and not taken yet.
    asked: std::collections::HashSet<u64>,
}

impl Prefetch {
    /// True when transfer `id` was asked for and not taken yet.
    pub fn asked(&self, id: u64) -> bool {
        self.asked.contains(&id)
    }

    /// How many files are asked for and not taken.
    pub fn pending(&self) -> usize {
        self.asked.len()
    }

    /// Asks for transfer `id` (file `path`, sent as `name`) to be opened, and
    /// its one chunk read when `chunk` is given; false when the worker cannot
    /// be started (the file is then opened on the loop).
    pub fn ask(
        &mut self,
        id: u64,
        path: PathBuf,
        name: String,
        entry: Option<Entry>,
        chunk: Option<usize>,
        waker: &Arc<mio::Waker>,
    ) -> bool {
        if self.tx.is_none() {
            let (tx, rx) = channel::<Job>();
            let (ready, wanted, waker) = (self.ready.clone(), self.wanted.clone(), waker.clone());
            let started = std::thread::Builder::new()
                .name("sockmod-prefetch".into())
                .spawn(move || {
                    while let Ok(j) = rx.recv() {
                        let got = Outgoing::open(j.id, j.path, j.name).and_then(|mut o| {
                            o.entry = j.entry;
                            o.offered = true;
                            o.resume = o.resume_id().ok();
                            let piece = match j.chunk {
                                Some(c) => Some(o.next_piece(c)?),
                                None => None,
                            };
                            Ok((o, piece))
                        });
                        if let Ok(mut r) = ready.lock() {
                            r.insert(j.id, got);
                        }
                        if wanted.swap(false, Ordering::AcqRel) {
                            let _ = waker.wake();
                        }
                    }
                });
            if started.is_err() {
                return false;
            }
            self.tx = Some(tx);
        }
        let job = Job {
            id,
            path,
            name,
            entry,
            chunk,
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent {
            self.asked.insert(id);
        }
        sent
    }

    /// Transfer `id` if it was read; `None` while it is not (the worker
    /// wakes the loop once it is).
    pub fn take(&mut self, id: u64) -> Option<Ready> {
        let mut got = self.ready.lock().ok()?.remove(&id);
        if got.is_none() {
            self.wanted.store(true, Ordering::Release);
            // Ready meanwhile: taken now (the worker's wake-up is spare).
            got = self.ready.lock().ok()?.remove(&id);
        }
        if got.is_some() {
            self.asked.remove(&id);
        }
        got
    }

    /// Drops what was read ahead for transfers no longer waiting to be sent.
    pub fn forget(&mut self, keep: impl Fn(u64) -> bool) {
        self.asked.retain(|&id| keep(id));
        if let Ok(mut r) = self.ready.lock() {
            r.retain(|id, _| keep(*id));
        }
    }
}
