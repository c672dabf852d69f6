//! Budgets through the real binary on loopback: connections per address,
//! the handshake timeout, bytes of partly received frames over all
//! connections, malformed frames in a row, and the filer's `--max-body`.
//!
//! Figures are printed as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test budgets -- --nocapture --test-threads=1` to see them.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("figure: {name} = {value}");
}

fn closed_of(v: &Value, id: u64) -> bool {
    v["event"] == "closed" && v["peer"] == id
}

fn is_refusal(l: &Line) -> bool {
    l.text
        .starts_with("refused 127.0.0.1: too many connections from this address (max 20)")
}

/// `--max-conns-per-ip 20`: 20 connections from 127.0.0.1 stay, a burst of 5
/// more is closed at once with one notice, and 127.0.0.2 still gets in.
#[test]
fn connections_per_address_are_capped_with_one_notice_per_burst() {
    let (srv, addr) = serve(&["--max-conns-per-ip", "20"]);
    let mut kept: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let n = srv
        .out
        .wait_count(|l| is_event_line(l, "connected", &[]), 20, TIMEOUT);
    assert_eq!(n, 20, "{}", srv.context());

    let mut extra: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut slowest = Duration::ZERO;
    for (i, s) in extra.iter_mut().enumerate() {
        let t = time_to_close(s, TIMEOUT)
            .unwrap_or_else(|| panic!("extra connection {i} still open\n{}", srv.context()));
        slowest = slowest.max(t);
    }
    // 127.0.0.2 is another address: admitted.
    let other = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), addr)
        .unwrap_or_else(|e| panic!("connect {addr} from 127.0.0.2: {e}"));
    let other_addr = other.local_addr().unwrap().to_string();
    srv.expect_event("connected", &[("addr", Value::from(other_addr.clone()))]);
    assert_eq!(
        srv.err.wait_count(is_refusal, 1, TIMEOUT),
        1,
        "{}",
        srv.context()
    );
    // Give a second notice the chance to show (it must not).
    let notices = srv
        .err
        .wait_count(is_refusal, 2, Duration::from_millis(500));
    assert_eq!(notices, 1, "one notice per burst\n{}", srv.context());
    assert_eq!(
        srv.count_events("connected", &[]),
        21,
        "the refused ones never counted as connected\n{}",
        srv.context()
    );
    assert_eq!(srv.count_events("closed", &[]), 0, "{}", srv.context());
    for s in &mut kept {
        assert!(time_to_close(s, Duration::from_millis(20)).is_none());
    }
    let notice = srv.err.all().into_iter().find(is_refusal).unwrap().text;
    figure("per-ip 20: extra connections closed (of 5)", 5);
    figure("per-ip 20: slowest refusal", format!("{slowest:?}"));
    figure("per-ip 20: notices for the burst", notices);
    figure("per-ip 20: notice", notice);
    figure("per-ip 20: 127.0.0.2 admitted as", other_addr);
}

/// `--handshake-timeout 1s`: a silent connection is closed (`no frame within
/// 1s`), one that sent a frame stays and is served.
#[test]
fn handshake_timeout_closes_only_the_silent_connection() {
    let (mut srv, addr) = serve(&["--handshake-timeout", "1s"]);
    let t0 = Instant::now();
    let mut silent = Client::connect(addr);
    let silent_id = srv.expect_connected(&silent);
    let mut talker = Client::connect(addr);
    let talker_id = srv.expect_connected(&talker);
    talker.send_info("hello");
    srv.expect_event("message", &[("peer", Value::from(talker_id))]);

    let v = srv.expect_json("the silent one closed", |v| closed_of(v, silent_id));
    let took = t0.elapsed();
    assert_eq!(v["reason"], "no frame within 1s", "{v}");
    assert!(silent.wait_closed(TIMEOUT), "the silent socket ends too");
    figure(
        "handshake 1s: silent connection closed after",
        format!("{took:?}"),
    );
    assert!(
        took >= Duration::from_secs(1),
        "closed after {took:?}, before the timeout"
    );
    assert!(
        took < Duration::from_secs(3),
        "closed after {took:?}, more than 3 s for a 1 s timeout"
    );
    // 1.5 s more: the talker is kept and still served.
    talker.expect_silence(Duration::from_millis(1500));
    assert!(!talker.is_closed());
    assert!(
        srv.wait_json(|v| closed_of(v, talker_id), Duration::ZERO)
            .is_none(),
        "{}",
        srv.context()
    );
    srv.send_line(&format!("send {talker_id} still here"));
    assert_eq!(info(&talker.expect_frame()), "still here");
    figure(
        "handshake 1s: talker open and served after",
        format!("{:?}", t0.elapsed()),
    );
}

/// 40 peers each send 48 MiB of a declared 64 MiB body and stall: the
/// partial frames over `--max-pending-bodies` (256 MiB) close the largest, the
/// server's peak RSS stays bounded, and a good client is served afterwards.
#[test]
fn partial_bodies_over_the_budget_close_the_largest_and_memory_stays_bounded() {
    const PEERS: usize = 40;
    const SENT: usize = 48 << 20;
    let (mut srv, addr) = serve(&[]);
    let pid = srv.pid();
    let hwm0 = status_kib(pid, "VmHWM");
    let chunk = Arc::new(vec![b'p'; 1 << 20]);
    let t0 = Instant::now();
    let peers: Vec<_> = (0..PEERS)
        .map(|_| {
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                let mut sent = 0usize;
                if s.write_all(&raw_frame("CL:67108864;info:big", b"")).is_ok() {
                    while sent < SENT && s.write_all(&chunk).is_ok() {
                        sent += chunk.len();
                    }
                }
                // Kept open (stalled) by the test until the end.
                (s, sent)
            })
        })
        .collect();
    let mut streams = Vec::new();
    let mut full = 0;
    for p in peers {
        let (s, sent) = p.join().expect("peer thread");
        if sent >= SENT {
            full += 1;
        }
        streams.push(s);
    }
    let writing = t0.elapsed();
    let budget = |l: &Line| {
        l.json.as_ref().is_some_and(|v| {
            v["event"] == "closed"
                && v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("--max-pending-bodies"))
        })
    };
    // Once the server has read all (some of it may still sit in the kernel's
    // buffers when the writers finish), exactly 5 partial frames of 48 MiB fit
    // in 256 MiB: the 35 others are closed. (After the last close the survivors
    // only grow to 48 MiB each without going over, so at most 5 remain; the
    // close before it saw over 256 MiB among them plus one, so at least 5.)
    let closed = srv.out.wait_count(budget, PEERS - 5, TIMEOUT);
    // None more after that.
    let closed = closed.max(
        srv.out
            .wait_count(budget, PEERS - 4, Duration::from_millis(500)),
    );
    let sample = srv.out.all().into_iter().find(budget).map(|l| l.text);
    let hwm = status_kib(pid, "VmHWM");
    figure(
        "pending bodies: 40 peers x 48 MiB of 64 MiB, writing took",
        format!("{writing:?}"),
    );
    figure(
        "pending bodies: peers whose 48 MiB all went into the socket / closed for the budget",
        format!("{full} / {closed}"),
    );
    figure(
        "pending bodies: server peak RSS (VmHWM) before / after",
        format!("{hwm0} / {hwm} KiB ({:.1} MiB)", hwm as f64 / 1024.0),
    );
    figure(
        "pending bodies: a close",
        sample.clone().unwrap_or_default(),
    );
    assert!(
        closed >= 1,
        "nobody closed for the budget\n{}",
        srv.context()
    );
    assert_eq!(
        closed,
        PEERS - 5,
        "35 of 40 closed for the budget, 5 x 48 MiB kept\n{}",
        srv.context()
    );
    assert!(
        hwm < 400 << 10,
        "server peak RSS {hwm} KiB is over 400 MiB\n{}",
        srv.context()
    );
    // A good client is still served.
    let t1 = Instant::now();
    let mut good = Client::connect(addr);
    let good_id = srv.expect_connected(&good);
    good.send_info("good client");
    srv.expect_event("message", &[("peer", Value::from(good_id))]);
    srv.send_line(&format!("send {good_id} reply"));
    assert_eq!(info(&good.expect_frame()), "reply");
    figure(
        "pending bodies: good client round trip afterwards",
        format!("{:?}", t1.elapsed()),
    );
    assert!(srv.is_running());
    drop(streams);
}

/// A filer with an unreachable ipserver, `--json -q`, its inbox in a fresh
/// path; with its listening address.
fn lone_filer(id: &str) -> (Proc, SocketAddr) {
    let inbox = tmp_path(&format!("inbox-{id}"));
    let p = Proc::spawn_cmd(lone_filer_command(
        id,
        &inbox,
        &["--json", "-q", "--accept-files", "yes"],
    ));
    let a = p.listening_addr();
    (p, a)
}

/// 20,000 malformed file frames from one peer: a few stderr lines, the peer is
/// closed after 9 in a row, and another peer is unaffected.
#[test]
fn a_flood_of_malformed_frames_costs_a_few_lines_and_closes_that_peer() {
    const N: usize = 20_000;
    let (mut ann, addr) = lone_filer("ann");
    // bob names himself and stays.
    // A filer's listener also speaks TLS: a peer is reported once its first
    // bytes show it speaks plaintext frames, as an original peer does at once.
    let mut bob = Client::connect(addr);
    bob.send_raw(&raw_frame("CL:0;TP:Check;ID:bob;Port:1", b""));
    let bob_id = ann.expect_connected(&bob);
    assert_eq!(bob.expect_frame().header.get("ID"), Some("ann"));
    ann.expect_event("identified", &[("name", Value::from("bob"))]);
    let err_before = ann.err.all().len();

    let mut bad = Client::connect(addr);
    bad.send_raw(&raw_frame("CL:0;TP:Check", b""));
    let bad_id = ann.expect_connected(&bad);
    let one = raw_frame("CL:0;TP:file;N:x;L:notanumber;index:0", b"");
    let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * N).collect();
    let mut w = bad.stream.try_clone().unwrap();
    let t0 = Instant::now();
    // The server closes it mid-flood: the write fails, as expected.
    let writer = std::thread::spawn(move || w.write_all(&flood).is_ok());
    let v = ann.expect_json("the flooder closed", |v| closed_of(v, bad_id));
    let took = t0.elapsed();
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    assert!(bad.wait_closed(TIMEOUT), "the flooder's socket ends");
    let _ = writer.join();
    assert!(
        reason.starts_with("9 malformed frames in a row (last:"),
        "{reason}"
    );

    // bob is unaffected: he still sends and receives.
    bob.send_info("still here");
    ann.send_line(&format!("send {bob_id} hello bob"));
    assert_eq!(info(&bob.expect_frame()), "hello bob");
    // -q hides messages: `list` counts bob's identity and his message.
    let mut row = Value::Null;
    let counted = wait_until(TIMEOUT, || {
        ann.send_line("list");
        let v = ann.expect_json("list", |v| v["event"] == "list");
        row = v["conns"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["peer"] == bob_id).cloned())
            .unwrap_or(Value::Null);
        row["msgs_in"].as_u64() >= Some(2)
    });
    assert!(
        counted,
        "bob's message after the flood: {row}\n{}",
        ann.context()
    );
    assert_eq!(row["name"], "bob", "{row}");
    figure("malformed: bob's list row after the flood", &row);
    assert!(
        ann.wait_json(|v| closed_of(v, bob_id), Duration::ZERO)
            .is_none(),
        "{}",
        ann.context()
    );
    // The lines the flood cost, after the sum-up of the run is in.
    ann.err
        .wait(|l| l.text.contains("more like this from"), TIMEOUT)
        .unwrap_or_else(|| panic!("no sum-up line\n{}", ann.context()));
    let lines: Vec<String> = ann.err.texts().split_off(err_before);
    figure(
        "malformed: 20,000 bad frames, stderr lines",
        format!("{} ({:?})", lines.len(), lines),
    );
    figure("malformed: flooder closed after", format!("{took:?}"));
    figure("malformed: reason", &reason);
    assert!(
        lines.len() <= 24,
        "{} stderr lines for one flood\n{}",
        lines.len(),
        ann.context()
    );
    assert!(ann.is_running());
}

/// The filer's `--max-body` defaults to 4 MiB: a frame declaring 5 MiB closes
/// that connection with the body-too-large reason; 4 MiB is accepted.
#[test]
fn filer_max_body_defaults_to_4_mib() {
    let (ann, addr) = lone_filer("ann");
    let mut big = Client::connect(addr);
    big.send_raw(&raw_frame("CL:0;TP:Check", b""));
    let big_id = ann.expect_connected(&big);
    big.send_raw(&raw_frame("CL:5242880;info:big", b""));
    let v = ann.expect_json("the 5 MiB frame closed", |v| closed_of(v, big_id));
    let reason = v["reason"].as_str().unwrap_or_default();
    assert_eq!(
        reason, "protocol error: body of 5242880 bytes is larger than the limit (4194304 bytes)",
        "{v}"
    );
    assert!(big.wait_closed(TIMEOUT));
    figure("filer max-body: 5 MiB frame closed", reason);

    // Exactly 4 MiB passes.
    let mut ok = Client::connect(addr);
    ok.send_raw(&raw_frame("CL:0;TP:Check", b""));
    let ok_id = ann.expect_connected(&ok);
    ok.send_raw(&raw_frame("CL:4194304;info:four", &vec![b'f'; 4 << 20]));
    ok.send_raw(&raw_frame("CL:0;info:after", b""));
    // -q hides messages: `list` counts what the connection took.
    let mut ann = ann;
    let mut row = Value::Null;
    let took_both = wait_until(TIMEOUT, || {
        ann.send_line("list");
        let v = ann.expect_json("list", |v| v["event"] == "list");
        row = v["conns"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["peer"] == ok_id).cloned())
            .unwrap_or(Value::Null);
        row["msgs_in"].as_u64() >= Some(2)
    });
    assert!(
        took_both,
        "the 4 MiB frame and the next: {row}\n{}",
        ann.context()
    );
    assert!(
        ann.wait_json(|v| closed_of(v, ok_id), Duration::ZERO)
            .is_none(),
        "a 4 MiB body was refused\n{}",
        ann.context()
    );
    figure("filer max-body: 4 MiB frame taken, list row", row);
    drop(ok);
}
