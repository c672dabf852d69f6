//! Transfers v2 through the real binary: delivery truth (a refusal always
//! wins, never a false `done`), consent (`--accept-files ask`, offers,
//! `accept`/`refuse`, `--offer-timeout`, files without an offer) and disk
//! safety (`--min-free` over concurrent offers).

mod common;

use common::*;
use serde_json::Value;
use sockmod::protocol::Header;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Peer {
    p: Proc,
    addr: SocketAddr,
    dir: PathBuf,
    inbox: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.p.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `--json` lone filer with its inbox in a fresh directory (or `inbox`).
fn filer(id: &str, extra: &[&str], inbox: Option<PathBuf>) -> Peer {
    let dir = tmp_path(&format!("consent-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let inbox = inbox.unwrap_or_else(|| dir.join("inbox"));
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let p = Proc::spawn_cmd(lone_filer_command(id, &inbox, &args));
    let addr = p.listening_addr();
    Peer {
        p,
        addr,
        dir,
        inbox,
    }
}

fn is_transfer(v: &Value, dir: &str, state: &str) -> bool {
    v["event"] == "transfer" && v["dir"] == dir && v["state"] == state
}

fn expect_transfer(p: &Proc, dir: &str, state: &str, name: &str) -> Value {
    p.expect_json(&format!("transfer {dir} {name:?} {state}"), |v| {
        is_transfer(v, dir, state) && v["name"] == name
    })
}

/// `alice` dials `bob` and both know each other.
fn link(alice: &mut Peer, bob: &Peer) {
    alice.p.send_line(&format!("connect {}", bob.addr));
    alice
        .p
        .expect_event("identified", &[("name", Value::from("bob"))]);
    bob.p
        .expect_event("identified", &[("name", Value::from("alice"))]);
}

fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, random_bytes(len, len as u64)).unwrap();
    p
}

#[test]
fn a_refusal_always_wins_on_fresh_links_and_names_the_read_only_inbox() {
    // An inbox under a regular file cannot be created, even by root.
    let base = tmp_path("consent-ro");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("file"), b"not a directory").unwrap();
    let bob = filer(
        "bob",
        &["--accept-files", "yes"],
        Some(base.join("file").join("inbox")),
    );
    bob.p.expect_err_line("the inbox warning at start", |l| {
        l.contains("warning: the inbox") && l.contains("cannot be created")
    });
    let mut alice = filer("alice", &[], None);
    let small = file(&alice.dir, "small.txt", 10);
    let large = file(&alice.dir, "large.bin", 3 << 20);
    for round in 0..20 {
        let src = if round % 2 == 0 { &small } else { &large };
        let name = src.file_name().unwrap().to_str().unwrap();
        // A fresh link each time, the file sent at once.
        alice.p.send_line(&format!("connect {}", bob.addr));
        alice
            .p
            .send_line(&format!("sendfile {} '{}'", bob.addr, src.display()));
        let v = alice.p.expect_json(&format!("round {round} ends"), |v| {
            v["event"] == "transfer"
                && v["dir"] == "send"
                && v["name"] == name
                && (v["state"] == "failed" || v["state"] == "done")
        });
        assert_eq!(v["state"], "failed", "round {round}: {v}");
        let why = v["reason"].as_str().unwrap();
        assert!(
            why.contains("inbox") && why.contains("cannot be created"),
            "{v}"
        );
        assert!(!why.contains("space"), "{v}");
        alice.p.send_line(&format!("close {}", bob.addr));
        alice.p.expect_json("closed", |v| v["event"] == "closed");
    }
    let dones = alice.p.out.count(|l| {
        l.json
            .as_ref()
            .is_some_and(|v| is_transfer(v, "send", "done"))
    });
    assert_eq!(dones, 0, "never done for a refused file");
    figure("fresh links refused, never done", "20/20");
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn ask_shows_offers_and_writes_nothing_before_accept() {
    let mut bob = filer("bob", &["--offer-timeout", "2s"], None);
    let mut alice = filer("alice", &[], None);
    link(&mut alice, &bob);
    let a = file(&alice.dir, "trip.mov", 300_000);

    // Accepted: nothing written before `accept`, then the file and its name.
    alice
        .p
        .send_line(&format!("sendfile bob '{}'", a.display()));
    let offer = bob.p.expect_json("an offer", |v| v["event"] == "offer");
    assert_eq!(offer["name"], "trip.mov", "{offer}");
    assert_eq!(offer["total"], 300_000, "{offer}");
    assert_eq!(offer["files"], 1, "{offer}");
    assert_eq!(offer["peer_name"], "alice", "{offer}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(dir_entries(&bob.inbox).is_empty(), "written before accept");
    bob.p.send_line(&format!("accept t{}", offer["transfer"]));
    expect_transfer(&bob.p, "recv", "done", "trip.mov");
    let v = expect_transfer(&alice.p, "send", "done", "trip.mov");
    assert_eq!(v["stored"], "trip.mov", "{v}");
    assert_eq!(dir_entries(&bob.inbox), ["trip.mov"]);

    // Refused: the sender is told.
    alice
        .p
        .send_line(&format!("sendfile bob '{}'", a.display()));
    let offer = bob
        .p
        .expect_json("a second offer", |v| v["event"] == "offer");
    bob.p.send_line(&format!("refuse {}", offer["transfer"]));
    let v = expect_transfer(&alice.p, "send", "failed", "trip.mov");
    assert_eq!(v["reason"], "receiver: refused", "{v}");

    // Unanswered: refused after --offer-timeout, and the sender told.
    alice
        .p
        .send_line(&format!("sendfile bob '{}'", a.display()));
    bob.p
        .expect_json("a third offer", |v| v["event"] == "offer");
    let v = expect_transfer(&alice.p, "send", "failed", "trip.mov");
    assert!(
        v["reason"].as_str().unwrap().contains("--offer-timeout"),
        "{v}"
    );
    assert_eq!(
        dir_entries(&bob.inbox),
        ["trip.mov"],
        "only the accepted one"
    );

    // A second file gets a new stored name, which the sender learns.
    alice
        .p
        .send_line(&format!("sendfile bob '{}'", a.display()));
    bob.p
        .expect_json("a fourth offer", |v| v["event"] == "offer");
    bob.p.send_line("accept *");
    let v = expect_transfer(&alice.p, "send", "done", "trip.mov");
    assert_eq!(v["stored"], "trip (1).mov", "{v}");
}

#[test]
fn a_raw_peer_that_skips_the_offer_gets_nothing_written_under_ask() {
    let bob = filer("bob", &[], None);
    let mut c = Client::connect(bob.addr);
    let chunk = |index: i64| {
        Header::new()
            .with("TP", "file")
            .with("N", "push.bin")
            .with("L", "30")
            .with("index", index.to_string())
    };
    c.send(&chunk(0), &[1; 10]);
    c.send(&chunk(1), &[1; 10]);
    c.send(&chunk(-1), &[1; 10]);
    let v = expect_transfer(&bob.p, "recv", "failed", "push.bin");
    assert!(
        v["reason"].as_str().unwrap().contains("without an offer"),
        "{v}"
    );
    assert!(dir_entries(&bob.inbox).is_empty());
    // An offer, then chunks before the answer: refused, nothing written.
    let offer = Header::new()
        .with("TP", "offer")
        .with("N", "eager.bin")
        .with("L", "20")
        .with("T", "7");
    c.send(&offer, b"");
    bob.p.expect_json("the offer", |v| v["event"] == "offer");
    let h = Header::new()
        .with("TP", "file")
        .with("N", "eager.bin")
        .with("L", "20")
        .with("index", "-1");
    c.send(&h, &[2; 20]);
    let v = expect_transfer(&bob.p, "recv", "failed", "eager.bin");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("before it was accepted"),
        "{v}"
    );
    assert!(dir_entries(&bob.inbox).is_empty());
}

/// An incoming file that stalls fails after `--transfer-timeout`, and its
/// part file and descriptor are released; the sender is told.
#[test]
fn a_stalled_transfer_times_out_and_releases_its_part_file() {
    let bob = filer(
        "bob",
        &["--accept-files", "yes", "--transfer-timeout", "3s"],
        None,
    );
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", bob.p.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // An original-style peer (no offer): one chunk of 1 MB, then silence.
    let mut c = Client::connect(bob.addr);
    c.send_info("hello");
    bob.p.expect_json("hello", |v| v["event"] == "message");
    let before = fds();
    let h = Header::new()
        .with("TP", "file")
        .with("N", "stall.bin")
        .with("L", "1000000")
        .with("index", "0");
    c.send(&h, &[7; 1000]);
    expect_transfer(&bob.p, "recv", "started", "stall.bin");
    let part = || {
        dir_entries(&bob.inbox)
            .into_iter()
            .any(|n| n.ends_with(".part"))
    };
    assert!(wait_until(TIMEOUT, part), "a part file while it runs");
    let v = expect_transfer(&bob.p, "recv", "failed", "stall.bin");
    let why = v["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("stalled") && why.contains("--transfer-timeout"),
        "{v}"
    );
    assert!(!part(), "{:?}", dir_entries(&bob.inbox));
    assert!(
        wait_until(TIMEOUT, || fds() <= before),
        "descriptors: {} after, {before} before",
        fds()
    );
    // The sender is told.
    let frames = c.read_frames(2, TIMEOUT);
    let cancel = frames.iter().find(|m| m.header.get("TP") == Some("cancel"));
    assert!(cancel.is_some(), "{frames:?}");
    assert!(
        cancel
            .and_then(|m| m.header.get("reason"))
            .is_some_and(|r| r.contains("stalled")),
        "{frames:?}"
    );
}

/// Free bytes on the disk holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills a zeroed struct we own from a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

#[test]
fn min_free_takes_only_the_offers_that_fit_together() {
    const SIZE: u64 = 10 << 20;
    let dir = tmp_path("consent-minfree");
    std::fs::create_dir_all(&dir).unwrap();
    // Room for one 10 MiB file above --min-free, not for two.
    let min_free = free_bytes(&dir).saturating_sub(15 << 20);
    let mut bob = filer(
        "bob",
        &["--min-free", &min_free.to_string()],
        Some(dir.join("inbox")),
    );
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(bob.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let h = Header::new()
            .with("TP", "offer")
            .with("N", format!("f{i}.bin"))
            .with("L", SIZE.to_string())
            .with("T", (i + 1).to_string());
        c.send(&h, b"");
    }
    for _ in 0..3 {
        bob.p
            .expect_json("an offer that fits alone", |v| v["event"] == "offer");
    }
    bob.p.send_line("accept *");
    let (mut yes, mut no) = (0, 0);
    for c in &mut clients {
        let m = loop {
            let m = c.expect_frame();
            if m.header.get("TP") == Some("answer") {
                break m;
            }
        };
        match m.header.get("ok") {
            Some("yes") => yes += 1,
            _ => {
                no += 1;
                let why = m.header.get("reason").unwrap_or_default();
                assert!(why.contains("--min-free"), "{why}");
            }
        }
    }
    assert!(yes <= 1, "{yes} of 3 accepted where one fits");
    assert_eq!(yes + no, 3);
    figure("min-free: offers accepted of 3 (one fits)", yes);
    drop(bob);
    let _ = std::fs::remove_dir_all(dir);
}
