//! Host-name lookups off the loop thread.
//!
//! `getaddrinfo` blocks, sometimes for seconds: run on the loop it would stall every
//! connection (a filer retries its `--ipserver HOST:PORT` every few seconds). Each
//! lookup runs on a short-lived thread; its answer comes back through a shared list
//! and the loop's waker. Literal addresses never get here.

use mio::Waker;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A finished lookup: the connection id it was for, and the addresses found (at
/// least one), in the order to try them.
pub(crate) type Answer = (u64, io::Result<Vec<SocketAddr>>);

/// Runs lookups on helper threads and collects their answers for the loop.
pub(crate) struct Resolver {
    done: Arc<Mutex<Vec<Answer>>>,
    ready: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

/// Resolves `HOST:PORT` (or a bare `HOST`, meaning port 0) to every address it
/// has, in the system's order of preference.
pub(crate) fn lookup_all(addr: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(a) = addr.parse() {
        return Ok(vec![a]);
    }
    let with_port = if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:0")
    };
    let mut all: Vec<SocketAddr> = Vec::new();
    for a in with_port.to_socket_addrs()? {
        if !all.contains(&a) {
            all.push(a);
        }
    }
    if all.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address found"));
    }
    Ok(all)
}

/// Resolves `HOST:PORT` (or a bare `HOST`) to its first address.
pub(crate) fn lookup(addr: &str) -> io::Result<SocketAddr> {
    lookup_all(addr).map(|v| v[0])
}

impl Resolver {
    /// A resolver that wakes the loop through `waker` when an answer is in.
    pub(crate) fn new(waker: Arc<Waker>) -> Self {
        Resolver {
            done: Arc::default(),
            ready: Arc::default(),
            waker,
        }
    }

    /// Starts looking up `target` for connection `id`; `Err` if no thread could be made.
    pub(crate) fn start(&self, id: u64, target: &str) -> io::Result<()> {
        let target = target.to_string();
        let done = self.done.clone();
        let ready = self.ready.clone();
        let waker = self.waker.clone();
        std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let answer = lookup_all(&target);
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, answer));
                ready.store(true, Ordering::Release);
                let _ = waker.wake();
            })
            .map(|_| ())
    }

    /// The answers that came in since the last call (cheap when there are none).
    pub(crate) fn take(&self) -> Vec<Answer> {
        if !self.ready.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_bare_forms() {
        assert_eq!(
            lookup("127.0.0.1:80").unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(lookup("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert_eq!(lookup("127.0.0.1").unwrap().port(), 0);
        assert!(lookup("127.0.0.1:99999").is_err());
    }

    #[test]
    fn answers_arrive_through_the_waker() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let r = Resolver::new(waker);
        assert!(r.take().is_empty());
        r.start(7, "localhost:5").unwrap();
        let mut events = mio::Events::with_capacity(4);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = Vec::new();
        while got.is_empty() && std::time::Instant::now() < deadline {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(100)))
                .unwrap();
            got = r.take();
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 7);
        let addrs = got[0].1.as_ref().unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.port() == 5));
    }
}
