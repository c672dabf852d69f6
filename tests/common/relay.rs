//! A TCP relay between a peer and a filer, for tests that cut or stall a link
//! mid-way and count the bytes that went through.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How a relay treats its connection once some bytes went through.
#[derive(Clone, Copy)]
pub enum Then {
    /// Cuts both sockets.
    Cut,
    /// Stops forwarding to the target, keeping both sockets open.
    Pause,
    /// Stops forwarding to the target until the flag is set, then goes on.
    Hold(&'static std::sync::atomic::AtomicBool),
}

/// A TCP relay for one connection to `target`: counts the bytes going to the
/// target and, given `limit`, cuts or pauses once that many went through.
pub struct Relay {
    /// Where to dial to go through it.
    pub addr: SocketAddr,
    /// Bytes that went to the target.
    pub forwarded: Arc<AtomicU64>,
}

pub fn relay(target: SocketAddr, limit: Option<(u64, Then)>) -> Relay {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let forwarded = Arc::new(AtomicU64::new(0));
    let fwd = forwarded.clone();
    std::thread::spawn(move || {
        let Ok((client, _)) = l.accept() else { return };
        let server = TcpStream::connect(target).unwrap();
        let socks = Arc::new(Mutex::new(vec![
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
        ]));
        let pipe = |mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>| {
            let socks = socks.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if let Some(c) = &count {
                        let total = c.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                        match limit {
                            Some((at, Then::Cut)) if total >= at => break,
                            Some((at, Then::Pause)) if total >= at => return,
                            Some((at, Then::Hold(go))) if total >= at => {
                                while !go.load(Ordering::Acquire) {
                                    std::thread::sleep(std::time::Duration::from_millis(1));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                for s in socks.lock().unwrap().iter() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            })
        };
        pipe(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            Some(fwd),
        );
        pipe(server, client, None);
    });
    Relay { addr, forwarded }
}
