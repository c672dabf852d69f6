//! The piped-broadcast row (flow control): `broadcast` lines piped into
//! `serve --quiet --max-queue 8MiB` as fast as a script can write them, to many
//! readers that decode every frame and check that none is missing, against
//! `ncat --broker` relaying the same frames from one sending client.
//!
//! Piped commands wait while any outbound queue is over 3/4 of `--max-queue`,
//! so no reader may be dropped as a slow consumer and nothing may be lost: the
//! row counts what each reader did not get (by the `n` counter in the header).

use super::{KillOnDrop, Serve};
use super::{Res, connect_retry, have, wait_accepted};
use sockmod::protocol::{Header, encode};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The body of every broadcast: 1000 bytes of text.
pub const BODY: usize = 1000;

/// What one run measured.
pub struct Outcome {
    /// From the first byte written until the last reader had everything.
    pub wall: f64,
    /// Messages delivered, over all readers.
    pub delivered: u64,
    /// Bytes delivered, over all readers.
    pub bytes: u64,
    /// Messages some reader never got (missing `n` values, counted per reader).
    pub lost: u64,
}

/// What one reader saw.
#[derive(Default)]
struct Seen {
    got: u64,
    bytes: u64,
    lost: u64,
    end: Option<Instant>,
}

/// One reader: a blocking socket on its own thread, decoding frames (2-byte LE
/// header length, `key:value;…` header with `CL`, body) without copying bodies.
/// A frame without `n` is the warm-up: it marks the reader ready. It stops after
/// message `n == count - 1`, at the end of the stream, or at `deadline`.
fn reader(
    mut s: TcpStream,
    count: u64,
    ready: Arc<AtomicUsize>,
    deadline: Instant,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = vec![0u8; 256 << 10];
        let (mut start, mut end) = (0usize, 0usize);
        let mut skip = 0usize; // body bytes still to pass over
        let mut next = 0u64; // the `n` expected next
        'read: loop {
            // Take every whole header (and pass over bodies) in buf[start..end].
            loop {
                if skip > 0 {
                    let k = skip.min(end - start);
                    start += k;
                    skip -= k;
                    if skip > 0 {
                        break;
                    }
                    if next >= count {
                        seen.end = Some(Instant::now());
                        break 'read;
                    }
                }
                if end - start < 2 {
                    break;
                }
                let hl = u16::from_le_bytes([buf[start], buf[start + 1]]) as usize;
                if end - start < 2 + hl {
                    break;
                }
                let header = &buf[start + 2..start + 2 + hl];
                let (mut cl, mut n) = (0usize, None);
                for field in header.split(|&b| b == b';') {
                    if let Some(v) = field.strip_prefix(b"CL:") {
                        cl = std::str::from_utf8(v)
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                    } else if let Some(v) = field.strip_prefix(b"n:") {
                        n = std::str::from_utf8(v)
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok());
                    }
                }
                start += 2 + hl;
                skip = cl;
                match n {
                    None => {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(n) => {
                        seen.got += 1;
                        seen.bytes += (2 + hl + cl) as u64;
                        if n > next {
                            seen.lost += n - next;
                        }
                        next = next.max(n + 1);
                    }
                }
                if skip == 0 && next >= count {
                    seen.end = Some(Instant::now());
                    break 'read;
                }
            }
            if start == end {
                (start, end) = (0, 0);
            } else if end == buf.len() {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            match s.read(&mut buf[end..]) {
                Ok(0) => break,
                Ok(k) => end += k,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() > deadline {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        seen.lost += count.saturating_sub(next);
        seen
    })
}

/// `clients` readers on `addr`, each on its own thread; `step(true)` is called
/// once they are all connected and must get one frame without `n` to every
/// reader. Then `step(false)` starts the stream; returns once every reader is done.
fn run(
    addr: SocketAddr,
    clients: usize,
    count: u64,
    step: &mut dyn FnMut(bool) -> Res<()>,
    timeout: Duration,
) -> Res<Outcome> {
    let mut socks = Vec::with_capacity(clients);
    for i in 0..clients {
        let s = connect_retry(addr)?;
        super::linger0(&s);
        socks.push(s);
        if i % 8 == 7 {
            // ncat listens with a backlog of 10.
            wait_accepted(addr.port())?;
        }
    }
    wait_accepted(addr.port())?;
    let ready = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + timeout;
    let threads: Vec<_> = socks
        .into_iter()
        .map(|s| reader(s, count, ready.clone(), deadline))
        .collect();
    step(true)?;
    let until = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::SeqCst) < clients {
        if Instant::now() > until {
            return Err(format!(
                "only {} of {clients} readers got the warm-up frame",
                ready.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    step(false)?;
    let mut out = Outcome {
        wall: 0.0,
        delivered: 0,
        bytes: 0,
        lost: 0,
    };
    let mut last = t0;
    for t in threads {
        let seen = t.join().map_err(|_| "a reader panicked")?;
        out.delivered += seen.got;
        out.bytes += seen.bytes;
        out.lost += seen.lost;
        last = last.max(seen.end.unwrap_or_else(Instant::now));
    }
    out.wall = (last - t0).as_secs_f64();
    Ok(out)
}

/// `broadcast -H n=I -b TEXT` piped into `serve --quiet --max-queue 8MiB`.
pub fn sockmod(clients: usize, count: usize) -> Res<Outcome> {
    let mut srv = Serve::start(&["--quiet", "--max-queue", "8MiB"])?;
    let body = "x".repeat(BODY);
    let mut script = String::with_capacity(count * (BODY + 24));
    for i in 0..count {
        script.push_str("bc -H n=");
        script.push_str(&i.to_string());
        script.push_str(" -b ");
        script.push_str(&body);
        script.push('\n');
    }
    let mut stdin = Some(srv.stdin.take().ok_or("no stdin")?);
    let addr = srv.addr;
    let mut writer = None;
    let res = {
        let out = &mut srv.out;
        let stdin_ref = &mut stdin;
        let writer_ref = &mut writer;
        run(
            addr,
            clients,
            count as u64,
            &mut |warm_up| {
                if warm_up {
                    // Every reader is in (one `connected` line each) before the warm-up.
                    out.skip_lines(clients)?;
                    let w = stdin_ref.as_mut().ok_or("no stdin")?;
                    return w
                        .write_all(b"bc -H w=1 -b x\n")
                        .map_err(|e| format!("serve stdin: {e}"));
                }
                // The whole script at once, from a thread: serve reads it as it can.
                let mut w = stdin_ref.take().ok_or("no stdin")?;
                let script = std::mem::take(&mut script);
                *writer_ref = Some(std::thread::spawn(move || {
                    let _ = w.write_all(script.as_bytes());
                    w
                }));
                Ok(())
            },
            Duration::from_secs(300),
        )
    };
    if let Some(w) = writer {
        // The writer is done once serve has read everything (or has gone).
        drop(w.join());
    }
    res
}

/// The same frames, pre-encoded, written by one client of `ncat --broker`.
pub fn ncat(clients: usize, count: usize) -> Res<Outcome> {
    have("ncat")?;
    let port = super::free_port()?;
    let child = Command::new("ncat")
        .args([
            "--broker",
            "--listen",
            "--max-conns",
            &(clients + 10).to_string(),
            "127.0.0.1",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run ncat: {e}"))?;
    let _p = KillOnDrop(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let body = vec![b'x'; BODY];
    let mut frames = Vec::with_capacity(count * (BODY + 24));
    for i in 0..count {
        let f =
            encode(&Header::new().with("n", i.to_string()), &body).map_err(|e| e.to_string())?;
        frames.extend_from_slice(&f);
    }
    let warm = encode(&Header::new().with("w", "1"), b"x").map_err(|e| e.to_string())?;
    let mut tx: Option<TcpStream> = None;
    let mut writer = None;
    let res = {
        let tx_ref = &mut tx;
        let writer_ref = &mut writer;
        run(
            addr,
            clients,
            count as u64,
            &mut |warm_up| {
                if warm_up {
                    // The sender connects last, so it is not one of the readers.
                    let mut s = connect_retry(addr)?;
                    wait_accepted(port)?;
                    s.write_all(&warm).map_err(|e| e.to_string())?;
                    *tx_ref = Some(s);
                    return Ok(());
                }
                let mut s = tx_ref.take().ok_or("no sender")?;
                let frames = std::mem::take(&mut frames);
                *writer_ref = Some(std::thread::spawn(move || {
                    let _ = s.write_all(&frames);
                    s
                }));
                Ok(())
            },
            Duration::from_secs(300),
        )
    };
    if let Some(w) = writer {
        drop(w.join());
    }
    res
}
