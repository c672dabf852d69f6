//! Flow control through the real binary on loopback: piped commands wait for
//! the network (the input gate at 3/4 of `--max-queue`), `--write-timeout`
//! drops a reader that stopped or trickles but never a steady one, and a piped
//! line that is not UTF-8 is refused, not sent.
//!
//! Figures are printed as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test flow_control -- --nocapture --test-threads=1` to see them.

mod common;

use common::*;
use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sockmod::protocol::Decoder;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("figure: {name} = {value}");
}

fn is_closed_of(v: &Value, id: u64) -> bool {
    v["event"] == "closed" && v["peer"] == id
}

/// What a steady reader thread saw.
#[derive(Default)]
struct ReadStats {
    /// Frames received (in order, checked against header `n`).
    got: AtomicU64,
    /// A frame came out of order or with a wrong body length.
    bad: AtomicBool,
    /// The server ended the connection.
    eof: AtomicBool,
}

/// Reads frames from `s` as fast as they come until `want` returns false for
/// the count so far or the connection ends; checks that header `n` counts
/// 0, 1, 2, … and each body is `body_len` bytes.
fn steady_reader(
    mut s: TcpStream,
    body_len: usize,
    stats: Arc<ReadStats>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut dec = Decoder::new(1 << 24);
        let mut buf = vec![0u8; 256 << 10];
        let mut msgs = Vec::new();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        while !stop.load(Ordering::SeqCst) {
            let n = match s.read(&mut buf) {
                Ok(0) => {
                    stats.eof.store(true, Ordering::SeqCst);
                    break;
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    stats.eof.store(true, Ordering::SeqCst);
                    break;
                }
            };
            dec.feed(&buf[..n], &mut msgs).expect("valid frames");
            for m in msgs.drain(..) {
                let want = stats.got.load(Ordering::SeqCst);
                if m.header.get("n") != Some(want.to_string().as_str()) || m.body.len() != body_len
                {
                    stats.bad.store(true, Ordering::SeqCst);
                }
                stats.got.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

/// 30,000 piped 1 KiB broadcasts to a steady reader and a client that never
/// reads: the commands wait while the sleeper's queue is over 3/4 of
/// `--max-queue` (so it is dropped by `--write-timeout`, not by the queue
/// limit), the reader gets every frame in order, and the server's peak RSS
/// stays far under what 30 MB of broadcasts would take unthrottled.
#[test]
fn piped_broadcasts_wait_for_the_network_and_the_sleeper_is_dropped() {
    const N: u64 = 30_000;
    const BODY: usize = 1000;
    let (srv, addr) = serve(&["--max-queue", "8MiB", "--write-timeout", "2s", "--quiet"]);
    let pid = srv.pid();
    let (out, err) = (srv.out.clone(), srv.err.clone());

    let sleeper = Client::connect(addr); // never reads
    let sleeper_id = srv.expect_connected(&sleeper);
    let reader = Client::connect(addr);
    let reader_id = srv.expect_connected(&reader);
    let stats = Arc::new(ReadStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rthread = steady_reader(
        reader.stream.try_clone().unwrap(),
        BODY,
        stats.clone(),
        stop.clone(),
    );

    // The writer blocks whenever the gate is closed: that is the point.
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut srv = srv;
        let body = "x".repeat(BODY);
        let mut chunk = String::new();
        for i in 0..N {
            chunk.push_str(&format!("broadcast -H n={i} -b {body}\n"));
            if (i + 1) % 500 == 0 {
                srv.write_stdin(chunk.as_bytes());
                chunk.clear();
            }
        }
        srv.write_stdin(chunk.as_bytes());
        srv
    });

    let done = wait_until(Duration::from_secs(60), || {
        stats.got.load(Ordering::SeqCst) >= N || stats.eof.load(Ordering::SeqCst)
    });
    let took = t0.elapsed();
    let srv = writer.join().expect("writer thread");
    stop.store(true, Ordering::SeqCst);
    rthread.join().unwrap();
    let got = stats.got.load(Ordering::SeqCst);
    assert!(
        done && got == N,
        "reader got {got} of {N} (eof {})\n{}",
        stats.eof.load(Ordering::SeqCst),
        srv.context()
    );
    assert!(
        !stats.bad.load(Ordering::SeqCst),
        "the reader got frames out of order or with a wrong body"
    );
    let v = srv.expect_json("the sleeper dropped", |v| is_closed_of(v, sleeper_id));
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    // Dropped for writing nothing for 2s while commands waited: had the gate let
    // commands through, its queue would have hit 8 MiB first
    // (`slow consumer: N bytes queued (limit …)`).
    assert!(
        reason.starts_with("slow consumer: nothing written for 2s"),
        "{reason}\n{}",
        srv.context()
    );
    assert_eq!(
        out.count(|l| l.json.as_ref().is_some_and(|v| is_closed_of(v, reader_id))),
        0,
        "the reader must stay\n{}",
        srv.context()
    );
    let hwm = status_kib(pid, "VmHWM");
    figure(
        "flow: 30,000 piped 1 KiB broadcasts, reader got all in order, took",
        format!("{took:?}"),
    );
    figure("flow: never-reading client closed", &reason);
    figure(
        "flow: server peak RSS (VmHWM)",
        format!(
            "{hwm} KiB ({:.1} MiB, --max-queue 8MiB)",
            hwm as f64 / 1024.0
        ),
    );
    assert!(
        hwm < 64 << 10,
        "server peak RSS {hwm} KiB is over 64 MiB\n{}",
        srv.context()
    );
    assert_eq!(
        err.count(|l| l.text.starts_with("error")),
        0,
        "{}",
        srv.context()
    );
    drop(sleeper);
}

/// A client with a tiny receive buffer that reads a few bytes a second is
/// dropped by `--write-timeout 2s`. The broadcast is 8 MiB: the write timeout
/// watches sockmod's own queue, and the kernel's send buffer on loopback grows
/// to 4 MiB (`tcp_wmem`), so a 1 MiB broadcast would sit wholly in the kernel
/// with nothing queued (measured: `notsent:1046758`, never dropped).
#[test]
fn a_trickle_reader_is_dropped_by_the_write_timeout() {
    let (mut srv, addr) = serve(&["--write-timeout", "2s", "--quiet"]);
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_recv_buffer_size(2048).unwrap();
    s.connect_timeout(&SockAddr::from(addr), TIMEOUT).unwrap();
    let rcvbuf = s.recv_buffer_size().unwrap();
    let trickle = Client::from_stream(s.into());
    let id = srv.expect_connected(&trickle);

    let stop = Arc::new(AtomicBool::new(false));
    let read_bytes = Arc::new(AtomicU64::new(0));
    let (st, rb) = (stop.clone(), read_bytes.clone());
    let mut ts = trickle.stream.try_clone().unwrap();
    // 4 bytes every 250 ms: 16 bytes a second.
    let tthread = std::thread::spawn(move || {
        let mut b = [0u8; 4];
        ts.set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        while !st.load(Ordering::SeqCst) {
            match ts.read(&mut b) {
                Ok(0) => break,
                Ok(n) => {
                    rb.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });

    // 128 x 64 KiB = 8 MiB.
    let body = "t".repeat(64 << 10);
    let t0 = Instant::now();
    let mut script = String::new();
    for i in 0..128 {
        script.push_str(&format!("bc -H n={i} -b {body}\n"));
    }
    srv.write_stdin(script.as_bytes());
    let v = srv.expect_json_within(
        "the trickle reader dropped",
        |v| is_closed_of(v, id),
        Duration::from_secs(15),
    );
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    tthread.join().unwrap();
    let reason = v["reason"].as_str().unwrap_or_default();
    figure(
        "trickle: receive buffer asked / granted",
        format!("2048 / {rcvbuf} bytes"),
    );
    figure(
        "trickle: dropped after (8 MiB broadcast, --write-timeout 2s)",
        format!(
            "{took:?}, having read {} bytes",
            read_bytes.load(Ordering::SeqCst)
        ),
    );
    figure("trickle: reason", reason);
    assert!(
        reason.starts_with("slow consumer: nothing written for 2s"),
        "{reason}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "dropped after {took:?}, before --write-timeout 2s could pass"
    );
    assert!(srv.is_running());
}

/// A reader that keeps up is never dropped by `--write-timeout 3s`, however
/// long the server keeps broadcasting (~5 s of continuous piped broadcasts).
#[test]
fn a_steady_reader_under_continuous_load_is_never_dropped() {
    const BODY: usize = 16 << 10;
    let (srv, addr) = serve(&["--write-timeout", "3s", "--quiet", "--max-queue", "8MiB"]);
    let out = srv.out.clone();
    let reader = Client::connect(addr);
    let id = srv.expect_connected(&reader);
    let stats = Arc::new(ReadStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rthread = steady_reader(
        reader.stream.try_clone().unwrap(),
        BODY,
        stats.clone(),
        stop.clone(),
    );
    let writer = std::thread::spawn(move || {
        let mut srv = srv;
        let body = "s".repeat(BODY);
        let t0 = Instant::now();
        let mut sent = 0u64;
        while t0.elapsed() < Duration::from_secs(5) {
            let mut chunk = String::new();
            for _ in 0..64 {
                chunk.push_str(&format!("bc -H n={sent} -b {body}\n"));
                sent += 1;
            }
            srv.write_stdin(chunk.as_bytes());
        }
        (srv, sent, t0.elapsed())
    });
    let (srv, sent, writing) = writer.join().expect("writer thread");
    let all = wait_until(Duration::from_secs(30), || {
        stats.got.load(Ordering::SeqCst) >= sent || stats.eof.load(Ordering::SeqCst)
    });
    stop.store(true, Ordering::SeqCst);
    rthread.join().unwrap();
    let got = stats.got.load(Ordering::SeqCst);
    figure(
        "steady: broadcasts piped / received (16 KiB each, --write-timeout 1s)",
        format!(
            "{sent} / {got} in {writing:?} ({:.1} MiB/s)",
            got as f64 * BODY as f64 / (1 << 20) as f64 / writing.as_secs_f64()
        ),
    );
    let closed = out
        .all()
        .iter()
        .filter_map(|l| l.json.clone())
        .find(|v| is_closed_of(v, id));
    assert!(
        closed.is_none(),
        "the steady reader was dropped: {closed:?}\n{}",
        srv.context()
    );
    assert!(
        all && got == sent,
        "reader got {got} of {sent}\n{}",
        srv.context()
    );
    assert!(!stats.bad.load(Ordering::SeqCst), "frames out of order");
}

/// A piped line that is not UTF-8 is refused with its line number, not sent
/// (the server sees only the valid lines), and `connect` exits 1.
#[test]
fn a_piped_line_that_is_not_utf8_is_not_sent_and_exit_is_1() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a: SocketAddr = l.local_addr().unwrap();
    let mut p = Proc::spawn(&["connect", &a.to_string()]);
    let mut server = accept_within(&l, TIMEOUT);
    p.write_stdin(b"send * first\nsend * bad \xff\xfe here\nsend * third\n");
    p.close_stdin();
    let status = p
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("connect did not exit at the end of input\n{}", p.context()));
    let got = server.read_frames(10, Duration::from_secs(1));
    let infos: Vec<&str> = got.iter().map(info).collect();
    assert_eq!(infos, ["first", "third"], "{}", p.context());
    assert!(server.wait_closed(TIMEOUT), "connect closes at its exit");
    let errs: Vec<String> = p
        .err
        .texts()
        .into_iter()
        .filter(|t| t.contains("not valid UTF-8"))
        .collect();
    assert_eq!(
        errs,
        ["error: input line 2 is not valid UTF-8; not sent"],
        "{}",
        p.context()
    );
    assert_eq!(status.code(), Some(1), "{}", p.context());
    figure("utf8: connect's stderr", &errs[0]);
    figure("utf8: exit status", status);
}
