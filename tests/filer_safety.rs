//! The filer and ipserver against broken peers, ipservers and settings,
//! through the real binary on loopback: huge garbled rosters and reports give
//! short notices, huge file names are clipped where shown, an inbox that is a
//! file is refused at start, and reconnects, retries and a sender killed
//! mid-file leave no descriptor, file or roster entry behind.
//!
//! Tests print their figures as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test filer_safety -- --nocapture --test-threads=1` to see them.

mod common;

use common::*;
use serde_json::Value;
use sockmod::protocol::Header;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A garbled roster entry of megabytes (from a broken or hostile ipserver) is
/// ignored with a notice of one short line, not one as long as the entry.
#[test]
fn a_huge_garbled_roster_entry_gives_a_short_notice() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let inbox = tmp_path("audit-roster-inbox");
    let ann = Proc::spawn_cmd(filer_command(
        "ann",
        &fake.local_addr().unwrap().to_string(),
        "5s",
        &inbox,
        &[],
    ));
    let mut ips = accept_plaintext_within(&fake, TIMEOUT);
    let mut body = "a".repeat(2 << 20).into_bytes();
    body.extend_from_slice(b",1.2.3.4,5");
    ips.send(&Header::new().with("Broadcast", ""), &body);
    let notice = ann.expect_err_line("roster notice", |l| l.contains("ignored roster"));
    assert!(
        notice.len() < 300,
        "{} bytes: {}…",
        notice.len(),
        &notice[..200]
    );
    assert!(notice.contains("roster entry \"aaa"), "{notice}");
    // A bad report to an ipserver is clipped the same way.
    let (ipsrv, ips_addr) = spawn_ipserver("127.0.0.1:0", "5s", &[]);
    let mut c = Client::connect(ips_addr);
    c.send(
        &Header::new()
            .with("ID", "x")
            .with("Port", "9".repeat(60_000)),
        b"",
    );
    let notice = ipsrv.expect_err_line("report notice", |l| l.contains("ignored report"));
    assert!(notice.len() < 300, "{} bytes", notice.len());
    let _ = std::fs::remove_dir_all(&inbox);
}

/// A peer announcing a file name of 20,000 characters gets a safe stored name
/// and short human lines: the name is clipped where it is shown (JSON events
/// keep it whole).
#[test]
fn a_huge_file_name_is_clipped_in_human_lines() {
    let inbox = tmp_path("audit-longname-inbox");
    let mut ann = Proc::spawn_cmd(lone_filer_command(
        "ann",
        &inbox,
        &["--accept-files", "yes"],
    ));
    let mut c = Client::connect(ann.listening_addr());
    let name = format!("{}.txt", "n".repeat(20_000));
    let h = Header::new()
        .with("TP", "file")
        .with("N", name.as_str())
        .with("L", "3")
        .with("index", "-1");
    c.send(&h, b"abc");
    let done = ann.expect_line("done line", |l| l.contains("done: received"));
    assert!(done.len() < 600, "{} bytes", done.len());
    ann.send_line("transfers");
    let row = ann.expect_line("table row", |l| l.starts_with("t1 "));
    assert!(row.len() < 900, "{} bytes", row.len());
    assert_eq!(dir_entries(&inbox).len(), 1);
    assert!(dir_entries(&inbox)[0].len() <= 255);
    let _ = std::fs::remove_dir_all(&inbox);
}

/// An `--inbox` that exists but is not a directory is refused at start (it was
/// reported only when the first file arrived).
#[test]
fn an_inbox_that_is_a_file_is_refused_at_start() {
    let file = tmp_path("inbox-is-a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut p = Proc::spawn_cmd(lone_filer_command("ann", &file, &[]));
    assert_eq!(p.expect_exit(TIMEOUT), 1, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(
        err.contains("cannot use inbox") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

/// Roster entries `(id, port)` of a `Broadcast` body, sorted.
fn roster_of(body: &[u8]) -> Vec<(String, u16)> {
    let mut v: Vec<(String, u16)> = String::from_utf8_lossy(body)
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|e| {
            let f: Vec<&str> = e.split(',').collect();
            assert_eq!(f.len(), 3, "bad roster entry {e:?}");
            assert_eq!(f[1], "127.0.0.1", "roster IP of {e:?}");
            (f[0].to_string(), f[2].parse().expect("port"))
        })
        .collect();
    v.sort();
    v
}

/// Reads roster frames until one equals `want`; returns how many were read.
fn wait_roster(c: &mut Client, want: &[(String, u16)], timeout: Duration) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    let mut n = 0;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        for m in c.read_frames(1, Duration::from_millis(200)) {
            if m.header.contains("Broadcast") {
                n += 1;
                last = roster_of(&m.body);
                if last == want {
                    return Ok(n);
                }
            }
        }
    }
    Err(format!("last roster {last:?}, want {want:?}"))
}

/// A filer reporting to `ipserver` every 100 ms; returns it with its port.
fn filer(id: &str, ipserver: SocketAddr) -> (Proc, u16) {
    let (p, a) = spawn_filer(id, ipserver, "100ms", &[]);
    (p, a.port())
}

/// An ipserver sending the roster every 100 ms, keeping silent peers for a minute.
fn ipserver() -> (Proc, SocketAddr) {
    spawn_ipserver("127.0.0.1:0", "100ms", &["--alive", "60s"])
}

/// A raw peer that reports as `watcher` (port 9), to read the roster with.
fn watcher(ipserver: SocketAddr) -> Client {
    let mut c = Client::connect(ipserver);
    c.send(&Header::new().with("ID", "watcher").with("Port", "9"), b"");
    c
}

fn ipserver_state_events(p: &Proc, state: &str) -> usize {
    p.count_events("ipserver", &[("state", Value::from(state))])
}

#[test]
fn fifty_filer_reconnects_to_the_ipserver_leave_no_stray_descriptors() {
    let (mut ips, ips_addr) = ipserver();
    let (alice, alice_port) = filer("alice", ips_addr);
    let (bob, bob_port) = filer("bob", ips_addr);
    // A raw peer that reports and watches the roster.
    let mut watcher = watcher(ips_addr);
    let want = vec![
        ("alice".to_string(), alice_port),
        ("bob".to_string(), bob_port),
        ("watcher".to_string(), 9),
    ];
    wait_roster(&mut watcher, &want, TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", ips.context()));
    // Bob is in alice's address book.
    alice.expect_event("peer_online", &[("id", Value::from("bob"))]);
    let fds = |p: &Proc| fd_count(p.pid());
    let (ips0, alice0, bob0) = (fds(&ips), fds(&alice), fds(&bob));
    let is_report =
        |who: &'static str| move |l: &Line| is_event_line(l, "peer_online", &[("id", who.into())]);

    let t0 = Instant::now();
    for round in 1..=50usize {
        // The ipserver drops both filers; each must notice, reconnect and report.
        ips.send_line("close alice,bob");
        for (who, f) in [("alice", &alice), ("bob", &bob)] {
            let n = f.out.wait_count(
                |l| is_event_line(l, "ipserver", &[("state", "connected".into())]),
                round + 1,
                TIMEOUT,
            );
            assert_eq!(
                n,
                round + 1,
                "{who} did not reconnect in round {round}\n{}",
                f.context()
            );
            let n = ips.out.wait_count(is_report(who), round + 1, TIMEOUT);
            assert_eq!(
                n,
                round + 1,
                "no report from {who} in round {round}\n{}",
                ips.context()
            );
        }
    }
    let took = t0.elapsed();
    assert_eq!(ipserver_state_events(&alice, "lost"), 50);
    assert_eq!(ipserver_state_events(&bob, "lost"), 50);
    // Exactly the three peers, once each, at their listening ports: read the
    // backlog of rosters for a while; the latest ones must be exact.
    let mut rosters = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        for m in watcher.read_frames(64, Duration::from_millis(100)) {
            if m.header.contains("Broadcast") {
                rosters.push(roster_of(&m.body));
            }
        }
    }
    assert!(rosters.len() >= 3, "{rosters:?}");
    for r in &rosters[rosters.len() - 3..] {
        assert_eq!(r, &want, "{}", ips.context());
    }
    // The filers' address books end with each other online.
    let last_about = |p: &Proc, who: &str| {
        p.out
            .all()
            .iter()
            .rev()
            .filter_map(|l| l.json.clone())
            .find(|v| {
                (v["event"] == "peer_online" || v["event"] == "peer_offline") && v["id"] == who
            })
    };
    assert!(
        wait_until(TIMEOUT, || last_about(&alice, "bob").is_some_and(
            |v| v["event"] == "peer_online" && v["port"] == bob_port
        )),
        "{}",
        alice.context()
    );
    assert!(wait_until(TIMEOUT, || last_about(&bob, "alice")
        .is_some_and(
            |v| v["event"] == "peer_online" && v["port"] == alice_port
        )));
    // No descriptor left behind by 50 reconnects, on either side (the counts
    // before may include a pins file being saved at that moment).
    assert!(
        wait_until(TIMEOUT, || fds(&ips) <= ips0
            && fds(&alice) <= alice0
            && fds(&bob) <= bob0),
        "descriptors ipserver {ips0}->{}, alice {alice0}->{}, bob {bob0}->{}",
        fds(&ips),
        fds(&alice),
        fds(&bob)
    );
    figure(
        "filer: 50 ipserver reconnects of 2 filers took",
        format!("{took:?}"),
    );
    figure(
        "filer: descriptors ipserver / alice / bob (before = after)",
        format!("{ips0} / {alice0} / {bob0}"),
    );
}

#[test]
fn filer_retrying_an_unreachable_ipserver_leaks_nothing_and_says_so_once() {
    let down = refused_addr();
    let (lonely, _) = filer("lonely", down);
    let pid = lonely.pid();
    lonely.expect_err_line("the unreachable notice", |l| {
        l.starts_with("ipserver ") && l.contains("unreachable")
    });
    let fds0 = fd_count(pid);
    let c0 = cpu_ticks(pid);
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let fds1 = fd_count(pid);
    let used = cpu_ticks(pid) - c0;
    let notices = lonely.err.count(|l| l.text.contains("unreachable"));
    figure(
        "filer: 2 s of retries every 100 ms to a dead ipserver: descriptors / CPU ticks / notices",
        format!("{fds0} -> {fds1} / {used} / {notices}"),
    );
    assert_eq!(fds0, fds1);
    assert_eq!(notices, 1);
    assert!(used < 20, "{used} ticks in 2 s");
}

#[test]
fn sender_killed_mid_file_leaves_no_descriptors_no_file_and_a_correct_roster() {
    let (ips, ips_addr) = ipserver();
    let (mut alice, alice_port) = filer("alice", ips_addr);
    let bob_inbox = tmp_path("inbox-bob-killed");
    let bob = Proc::spawn_cmd(filer_command(
        "bob",
        &ips_addr.to_string(),
        "100ms",
        &bob_inbox,
        &["--json", "--accept-files", "yes"],
    ));
    let bob_port = bob.listening_addr().port();
    let mut watcher = watcher(ips_addr);
    let all = vec![
        ("alice".to_string(), alice_port),
        ("bob".to_string(), bob_port),
        ("watcher".to_string(), 9),
    ];
    wait_roster(&mut watcher, &all, TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", ips.context()));
    bob.expect_event("peer_online", &[("id", Value::from("alice"))]);
    alice.expect_event("peer_online", &[("id", Value::from("bob"))]);
    let bob_fds0 = fd_count(bob.pid());

    // alice dials bob by name and starts a 64 MiB file; bob is stopped, so she
    // can only fill the socket buffers and is mid-file when she is killed.
    alice.send_line("dial bob");
    alice.expect_event("connected", &[("name", Value::from("bob"))]);
    bob.expect_event("identified", &[("name", Value::from("alice"))]);
    // A 4 GiB sparse file: far too big to end before bob is stopped.
    let src = tmp_path("killed-source.bin");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    alice.send_line(&format!("sendfile bob {}", src.display()));
    bob.expect_json("bob accepted", |v| {
        v["event"] == "transfer" && v["dir"] == "recv" && v["state"] == "started"
    });
    alice.expect_json("alice's send started", |v| {
        v["event"] == "transfer" && v["dir"] == "send" && v["state"] == "started"
    });
    // Once chunks flow (a progress report), bob is stopped: alice can only fill
    // the socket buffers, and is mid-file when she dies.
    alice.expect_json("alice's first progress", |v| {
        v["event"] == "transfer" && v["state"] == "progress" && v["bytes"].as_u64() > Some(0)
    });
    bob.signal(libc::SIGSTOP);
    alice.kill();
    bob.signal(libc::SIGCONT);

    let v = bob.expect_json("bob's receive failed", |v| {
        v["event"] == "transfer" && v["dir"] == "recv" && v["state"] == "failed"
    });
    let got = v["bytes"].as_u64().unwrap_or(0);
    assert!(got < 4 << 30, "{v}");
    figure(
        "killed sender: bob received before the failure",
        format!("{got} of {} bytes: {}", 4u64 << 30, v["reason"]),
    );
    // Nothing that looks like a complete file.
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        wait_until(TIMEOUT, || !dir_entries(&bob_inbox)
            .iter()
            .any(|e| !e.starts_with('.'))),
        "inbox {:?}",
        dir_entries(&bob_inbox)
    );
    assert!(!bob_inbox.join(&name).exists());
    // The roster loses alice at once; bob's address book follows.
    wait_roster(
        &mut watcher,
        &[("bob".to_string(), bob_port), ("watcher".to_string(), 9)],
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", ips.context()));
    bob.expect_event("peer_offline", &[("id", Value::from("alice"))]);
    // bob holds no descriptor for the dead connection or the part file (the
    // count before may include a pins file being saved at that moment).
    assert!(
        wait_until(TIMEOUT, || fd_count(bob.pid()) <= bob_fds0),
        "bob's descriptors: {bob_fds0} before, {} after; inbox {:?}",
        fd_count(bob.pid()),
        dir_entries(&bob_inbox)
    );
    figure(
        "killed sender: bob's descriptors before / after",
        format!("{bob_fds0} / {}", fd_count(bob.pid())),
    );
    let _ = std::fs::remove_file(&src);
}
