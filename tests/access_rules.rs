//! Who may connect: `--allow` and `--deny` on IPv4, IPv6 and dual-stack
//! listeners of every listening mode, through the real binary on loopback
//! (127.0.0.1–3 and ::1).
//!
//! Tests print their figures as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test access_rules -- --nocapture --test-threads=1` to see them.
//! Process figures come from /proc: VmRSS and VmHWM (peak RSS) from
//! /proc/PID/status, descriptors from /proc/PID/fd, CPU time (utime + stime)
//! from /proc/PID/stat. Speed bounds are checked only with `SOCKMOD_TIMING=1`
//! (see `common::timing_checked`).

mod common;

use common::*;
use sockmod::protocol::Header;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

fn is_event(l: &Line, event: &str) -> bool {
    is_event_line(l, event, &[])
}

const LO1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LO2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LO3: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Connects from `src`; asserts the server admits it (a `connected` event and an
/// answer) — returns the time to be served.
fn expect_admitted(srv: &mut Proc, src: IpAddr, dst: SocketAddr) -> Duration {
    let t0 = Instant::now();
    let mut s = connect_from(src, dst).expect("connect");
    s.write_all(&frame(&Header::new().with("info", "let me in"), b""))
        .unwrap();
    let me = s.local_addr().unwrap().to_string();
    let v = srv.expect_json("the admitted peer's message", |v| {
        v["event"] == "message" && v["addr"] == me.as_str()
    });
    let took = t0.elapsed();
    assert!(stays_open(&mut s, Duration::from_millis(50)));
    srv.send_line(&format!("close {}", v["peer"]));
    took
}

/// Connects from `src`; asserts the server closes it at once with a notice
/// naming the peer and `rule`. Returns the time to close.
fn expect_refused(srv: &Proc, src: IpAddr, dst: SocketAddr, rule: &str) -> Duration {
    let mut s = connect_from(src, dst).expect("connect");
    let me = s.local_addr().unwrap();
    let took = time_to_close(&mut s, TIMEOUT)
        .unwrap_or_else(|| panic!("{me} was not closed\n{}", srv.context()));
    let notice = srv.expect_err_line("the refusal notice", |l| {
        l.starts_with("refused ") && l.contains(&me.port().to_string())
    });
    assert!(
        notice.ends_with(rule),
        "{notice:?} should end with {rule:?}"
    );
    let me_s = me.to_string();
    let mapped = format!("[::ffff:{}]:{}", me.ip(), me.port());
    assert!(
        notice.contains(&me_s) || notice.contains(&mapped),
        "{notice:?} should name {me}"
    );
    assert_eq!(
        srv.out.count(|l| is_event(l, "connected")
            && l.json
                .as_ref()
                .is_some_and(|v| { v["addr"] == me_s.as_str() || v["addr"] == mapped.as_str() })),
        0,
        "a refused peer must not be reported connected"
    );
    took
}

#[test]
fn deny_and_allow_refuse_the_right_ipv4_peers() {
    let (mut srv, addr) = serve(&["--deny", "127.0.0.2"]);
    let t = expect_refused(&srv, LO2, addr, "denied by --deny 127.0.0.2");
    figure("access: denied IPv4 peer closed after", format!("{t:?}"));
    expect_admitted(&mut srv, LO1, addr);
    expect_admitted(&mut srv, LO3, addr);
    drop(srv);

    let (mut srv, addr) = serve(&["--allow", "127.0.0.1"]);
    expect_refused(&srv, LO2, addr, "not in --allow 127.0.0.1");
    expect_admitted(&mut srv, LO1, addr);
    drop(srv);

    // Deny wins over allow.
    let (mut srv, addr) = serve(&["--allow", "127.0.0.0/8", "--deny", "127.0.0.2/32"]);
    expect_refused(&srv, LO2, addr, "denied by --deny 127.0.0.2");
    expect_admitted(&mut srv, LO1, addr);
    expect_admitted(&mut srv, LO3, addr);
    drop(srv);

    // Several rules; a network.
    let (mut srv, addr) = serve(&[
        "--allow",
        "127.0.0.1",
        "--allow",
        "127.0.0.3",
        "--deny",
        "10.0.0.0/8",
    ]);
    expect_refused(&srv, LO2, addr, "not in --allow 127.0.0.1,127.0.0.3");
    expect_admitted(&mut srv, LO3, addr);
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn deny_and_allow_on_ipv6_loopback_and_dual_stack() {
    if !ipv6_loopback() {
        eprintln!("skipped: this machine has no IPv6 loopback (::1)");
        return;
    }
    let (srv, addr) = spawn_listening(&["serve", "--bind", "[::1]:0", "--json", "--deny", "::1"]);
    let t = expect_refused(&srv, LO6, addr, "denied by --deny ::1");
    figure("access: denied IPv6 peer closed after", format!("{t:?}"));
    drop(srv);
    let (mut srv, addr) =
        spawn_listening(&["serve", "--bind", "[::1]:0", "--json", "--allow", "::1/128"]);
    expect_admitted(&mut srv, LO6, addr);
    drop(srv);
    let (srv, addr) = spawn_listening(&[
        "serve",
        "--bind",
        "[::1]:0",
        "--json",
        "--allow",
        "127.0.0.0/8",
    ]);
    expect_refused(&srv, LO6, addr, "not in --allow 127.0.0.0/8");
    drop(srv);

    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; IPv4 rules apply.
    let (mut srv, addr) =
        spawn_listening(&["serve", "--bind", "[::]:0", "--json", "--deny", "127.0.0.2"]);
    let v4 = SocketAddr::new(LO1, addr.port());
    let v6 = SocketAddr::new(LO6, addr.port());
    expect_refused(&srv, LO2, v4, "denied by --deny 127.0.0.2");
    expect_admitted(&mut srv, LO1, v4);
    expect_admitted(&mut srv, LO6, v6);
}

#[test]
fn access_rules_work_on_ipserver_and_filer_and_are_refused_by_connect() {
    let (srv, addr) =
        spawn_listening(&["ipserver", "--bind", "127.0.0.1:0", "--allow", "127.0.0.2"]);
    expect_refused(&srv, LO1, addr, "not in --allow 127.0.0.2");
    drop(srv);

    let inbox = tmp_path("access-inbox");
    let ipserver = refused_addr().to_string();
    let (srv, addr) = spawn_listening(&[
        "filer",
        "--id",
        "guard",
        "--bind",
        "127.0.0.1:0",
        "--ipserver",
        &ipserver,
        "--inbox",
        inbox.to_str().unwrap(),
        "--deny",
        "127.0.0.0/8",
    ]);
    expect_refused(&srv, LO1, addr, "denied by --deny 127.0.0.0/8");
    drop(srv);

    // `connect` has no listener: the options are a usage error there.
    let mut p = Proc::spawn(&["connect", "127.0.0.1:1", "--deny", "127.0.0.2"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2);
    // A bad rule is a usage error naming it.
    let mut p = Proc::spawn(&["serve", "--bind", "127.0.0.1:0", "--deny", "10.0.0.0/33"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2);
    assert!(
        p.err
            .texts()
            .iter()
            .any(|l| l.contains("prefix length 33 is over 32")),
        "{}",
        p.context()
    );
}
