//! Resume (docs/PROTOCOL.md §5.3) through the real binary: a transfer cut
//! mid-way by a dropped connection, by a receiver killed with SIGKILL and
//! restarted on the same inbox, and by a part file altered on disk while its
//! receiver was down, each completes after `sendfile` again, sending only
//! what the receiver does not hold (and verified), and arrives identical.

mod common;

use common::relay::{Then, relay};
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

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

/// A `--json` lone filer taking every file, with its inbox and state in `dir`
/// (a fresh directory unless given: a restart passes the same one).
fn filer(id: &str, dir: Option<PathBuf>) -> Peer {
    let dir = dir.unwrap_or_else(|| tmp_path(&format!("resume-{id}")));
    std::fs::create_dir_all(&dir).unwrap();
    let inbox = dir.join("inbox");
    let state = dir.join("state");
    let mut cmd = lone_filer_command(id, &inbox, &["--json", "--accept-files", "yes"]);
    cmd.env("XDG_STATE_HOME", state);
    let p = Proc::spawn_cmd(cmd);
    let addr = p.listening_addr();
    Peer {
        p,
        addr,
        dir,
        inbox,
    }
}

/// A file of `size` bytes: a random MiB repeated, each MiB tagged with its
/// index.
fn big_file(path: &Path, size: usize, seed: u64) {
    let block = random_bytes(1 << 20, seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut left = size;
    let mut i = 0u64;
    while left > 0 {
        let n = left.min(block.len());
        let mut b = block[..n].to_vec();
        let t = 8.min(n);
        b[..t].copy_from_slice(&i.to_le_bytes()[..t]);
        f.write_all(&b).unwrap();
        left -= n;
        i += 1;
    }
    f.flush().unwrap();
}

fn digest(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_hex().to_string()
}

fn ended(p: &Proc, dir: &str, name: &str) -> Value {
    p.expect_json_within(
        &format!("{dir} {name} ends"),
        |v| {
            v["event"] == "transfer"
                && v["dir"] == dir
                && v["name"] == name
                && (v["state"] == "done" || v["state"] == "failed")
        },
        LONG,
    )
}

/// `alice` dials `addr` (bob, or a relay to him) and sends `file` there.
fn send_via(alice: &mut Peer, addr: SocketAddr, file: &Path) {
    alice.p.send_line(&format!("connect {addr}"));
    alice.p.expect_json("bob identified", |v| {
        v["event"] == "identified" && v["name"] == "bob"
    });
    alice
        .p
        .send_line(&format!("sendfile {addr} '{}'", file.display()));
}

fn partial_files(inbox: &Path) -> Vec<String> {
    dir_entries(&inbox.join(".sockmod-partial"))
}

/// The length of the part file in `inbox` (0 while there is none).
fn part_len(inbox: &Path) -> u64 {
    partial_files(inbox)
        .iter()
        .find(|n| n.ends_with(".part"))
        .and_then(|n| std::fs::metadata(inbox.join(".sockmod-partial").join(n)).ok())
        .map_or(0, |m| m.len())
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let size: u64 = 512 << 20;
    let bob = filer("bob", None);
    let mut alice = filer("alice", None);
    let src = alice.dir.join("big.bin");
    big_file(&src, size as usize, 41);

    // The connection is cut once 60% of the file went through the relay.
    let r1 = relay(bob.addr, Some((size * 6 / 10, Then::Cut)));
    send_via(&mut alice, r1.addr, &src);
    let v = ended(&alice.p, "send", "big.bin");
    assert_eq!(v["state"], "failed", "{v}");
    let v = ended(&bob.p, "recv", "big.bin");
    assert_eq!(v["state"], "failed", "{v}");
    let held = v["bytes"].as_u64().unwrap();
    // Nothing incomplete looks complete: only the hidden folder holds it.
    let visible: Vec<String> = dir_entries(&bob.inbox)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(visible.is_empty(), "{visible:?}");
    let kept = partial_files(&bob.inbox);
    assert_eq!(kept.len(), 2, "{kept:?}");

    let r2 = relay(bob.addr, None);
    send_via(&mut alice, r2.addr, &src);
    let sent = ended(&alice.p, "send", "big.bin");
    assert_eq!(sent["state"], "done", "{sent}");
    let got = ended(&bob.p, "recv", "big.bin");
    assert_eq!(got["state"], "done", "{got}");
    let from = got["resumed_from"].as_u64().expect("resumed_from");
    assert_eq!(sent["resumed_from"].as_u64(), Some(from), "{sent}");
    assert!(from > size / 2 && from <= held, "{from} of {held}");
    let again = r2.forwarded.load(Ordering::Relaxed);
    assert!(again < size / 2, "{again} bytes sent again");
    let path = PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(digest(&path), digest(&src));
    assert!(partial_files(&bob.inbox).is_empty());
    // `transfers` says where it resumed.
    alice.p.send_line("transfers");
    let v = alice
        .p
        .expect_json("transfers", |v| v["event"] == "transfers");
    let last = v["transfers"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["resumed_from"].as_u64(), Some(from), "{v}");
    figure(
        "first try, bytes through the relay",
        r1.forwarded.load(Ordering::Relaxed),
    );
    figure("resumed_from", from);
    figure(
        "bytes through the relay on resuming (of the file's)",
        format!("{again} of {size} ({}%)", again * 100 / size),
    );
}

/// Sends `src` from alice to bob through a relay that stops forwarding at
/// half of it, and SIGKILLs bob once his part file holds what came; returns
/// bob's directory (inbox and key) to restart him with.
fn kill_receiver_mid_way(alice: &mut Peer, bob: Peer, src: &Path, size: u64) -> PathBuf {
    let r = relay(bob.addr, Some((size / 2, Then::Pause)));
    send_via(alice, r.addr, src);
    let part_len = || part_len(&bob.inbox);
    assert!(
        wait_until(LONG, || part_len() >= size * 2 / 5),
        "part file: {}",
        part_len()
    );
    std::thread::sleep(Duration::from_millis(200));
    bob.p.signal(libc::SIGKILL);
    let v = ended(&alice.p, "send", "big.bin");
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(partial_files(&bob.inbox).len(), 2);
    let dir = bob.dir.clone();
    // Keep the directory: the restart uses it.
    let mut bob = std::mem::ManuallyDrop::new(bob);
    bob.p.kill();
    dir
}

#[test]
fn a_receiver_killed_and_restarted_resumes_on_sendfile_again() {
    let size: u64 = 512 << 20;
    let bob = filer("bob", None);
    let mut alice = filer("alice", None);
    let src = alice.dir.join("big.bin");
    big_file(&src, size as usize, 42);
    let dir = kill_receiver_mid_way(&mut alice, bob, &src, size);

    let bob = filer("bob", Some(dir));
    send_via(&mut alice, bob.addr, &src);
    let got = ended(&bob.p, "recv", "big.bin");
    assert_eq!(got["state"], "done", "{got}");
    let from = got["resumed_from"].as_u64().expect("resumed_from");
    assert!(from >= size / 4, "{from}");
    let sent = ended(&alice.p, "send", "big.bin");
    assert_eq!(sent["state"], "done", "{sent}");
    assert_eq!(sent["resumed_from"].as_u64(), Some(from));
    let path = PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(digest(&path), digest(&src));
    figure("after SIGKILL, resumed_from", format!("{from} of {size}"));
}

#[test]
fn a_part_file_altered_while_down_is_sent_again_where_damaged() {
    let size: u64 = 64 << 20;
    let bob = filer("bob", None);
    let mut alice = filer("alice", None);
    let src = alice.dir.join("big.bin");
    big_file(&src, size as usize, 43);
    let inbox = bob.inbox.clone();
    let dir = kill_receiver_mid_way(&mut alice, bob, &src, size);

    // Bytes altered inside the sixth MiB of the part file.
    let part = partial_files(&inbox)
        .into_iter()
        .find(|n| n.ends_with(".part"))
        .unwrap();
    let part = inbox.join(".sockmod-partial").join(part);
    let len = std::fs::metadata(&part).unwrap().len();
    assert!(len > 6 << 20, "{len}");
    let mut f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start((5 << 20) + 1000)).unwrap();
    f.write_all(&[0x55; 100]).unwrap();
    drop(f);

    let bob = filer("bob", Some(dir));
    send_via(&mut alice, bob.addr, &src);
    let got = ended(&bob.p, "recv", "big.bin");
    assert_eq!(got["state"], "done", "{got}");
    assert_eq!(got["resumed_from"].as_u64(), Some(5 << 20), "{got}");
    let sent = ended(&alice.p, "send", "big.bin");
    assert_eq!(sent["state"], "done", "{sent}");
    let path = PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(digest(&path), digest(&src));
    figure(
        "damage at 5 MiB + 1000 of a part file of",
        format!("{len} bytes: resumed_from {}", 5 << 20),
    );
}

/// The sender killed mid-file and started again: `sendfile` again resumes
/// from what the receiver kept (the sender hashes that part of its file
/// again: nothing of its earlier run is left), and the file arrives whole.
#[test]
fn a_sender_restarted_resumes_on_sendfile_again() {
    let size: u64 = 512 << 20;
    let bob = filer("bob", None);
    let mut alice = filer("alice", None);
    let src = alice.dir.join("big.bin");
    big_file(&src, size as usize, 45);
    // The link is held at 60%; once bob's part file has it, alice is killed.
    let go: &'static std::sync::atomic::AtomicBool =
        Box::leak(Box::new(std::sync::atomic::AtomicBool::new(false)));
    let r = relay(bob.addr, Some((size * 6 / 10, Then::Hold(go))));
    send_via(&mut alice, r.addr, &src);
    let part_len = || part_len(&bob.inbox);
    assert!(
        wait_until(LONG, || part_len() >= size / 2),
        "part file: {}",
        part_len()
    );
    let dir = alice.dir.clone();
    let mut old = std::mem::ManuallyDrop::new(alice);
    old.p.signal(libc::SIGKILL);
    go.store(true, Ordering::Release);
    let v = ended(&bob.p, "recv", "big.bin");
    assert_eq!(v["state"], "failed", "{v}");
    old.p.kill();

    let mut alice = filer("alice", Some(dir));
    let r2 = relay(bob.addr, None);
    send_via(&mut alice, r2.addr, &src);
    let got = ended(&bob.p, "recv", "big.bin");
    assert_eq!(got["state"], "done", "{got}");
    let from = got["resumed_from"].as_u64().expect("resumed_from");
    assert!(from >= size / 2, "{from}");
    let sent = ended(&alice.p, "send", "big.bin");
    assert_eq!(sent["state"], "done", "{sent}");
    assert_eq!(sent["resumed_from"].as_u64(), Some(from), "{sent}");
    let again = r2.forwarded.load(Ordering::Relaxed);
    assert!(again < size / 2, "{again} bytes sent again");
    let path = PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(digest(&path), digest(&src));
    figure(
        "sender restarted: resumed_from, bytes sent again",
        format!("{from}, {again} of {size}"),
    );
}

/// Roster peers: the sender resumes by itself once the receiver, killed
/// mid-file with SIGKILL, is back (same inbox and key, a new port).
#[test]
fn a_roster_peer_back_after_a_crash_gets_the_rest_automatically() {
    let size: u64 = 256 << 20;
    let (_ips, ips_addr) = spawn_ipserver("127.0.0.1:0", "200ms", &[]);
    let dir = tmp_path("resume-auto-bob");
    std::fs::create_dir_all(&dir).unwrap();
    let bob_cmd = || {
        let mut c = filer_command(
            "bob",
            &ips_addr.to_string(),
            "200ms",
            &dir.join("inbox"),
            &["--json", "--accept-files", "yes"],
        );
        c.env("XDG_STATE_HOME", dir.join("state"));
        c
    };
    let mut bob = Proc::spawn_cmd(bob_cmd());
    bob.listening_addr();
    let (mut alice, _) = spawn_filer("alice", ips_addr, "200ms", &[]);
    alice.expect_json("bob online", |v| {
        v["event"] == "peer_online" && v["id"] == "bob"
    });
    let src = dir.join("big.bin");
    big_file(&src, size as usize, 44);
    alice.send_line(&format!("sendfile bob '{}'", src.display()));
    bob.expect_json_within(
        "bob's first progress",
        |v| v["event"] == "transfer" && v["state"] == "progress" && v["bytes"].as_u64() > Some(0),
        LONG,
    );
    bob.signal(libc::SIGSTOP);
    bob.signal(libc::SIGKILL);
    let v = ended(&alice, "send", "big.bin");
    assert_eq!(v["state"], "failed", "{v}");
    bob.kill();

    let bob = Proc::spawn_cmd(bob_cmd());
    let got = ended(&bob, "recv", "big.bin");
    assert_eq!(got["state"], "done", "{got}");
    let from = got["resumed_from"].as_u64().expect("resumed_from");
    let sent = alice.expect_json_within(
        "the resumed send done",
        |v| v["event"] == "transfer" && v["dir"] == "send" && v["state"] == "done",
        LONG,
    );
    assert_eq!(sent["resumed_from"].as_u64(), Some(from), "{sent}");
    let path = PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(digest(&path), digest(&src));
    figure(
        "roster peer back after SIGKILL, resumed automatically from",
        format!("{from} of {size}"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
