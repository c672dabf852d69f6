//! End-to-end tests of filer file transfer (README: "File transfer") through the
//! real binary on 127.0.0.1: two filers connected directly, or a raw client
//! speaking the wire format (the original implementations' frames, and hostile
//! ones).

mod common;

use common::*;
use serde_json::Value;
use sockmod::filer::transfer::CHUNK_SIZE;
use sockmod::protocol::{Header, Message};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Waits for big transfers in a debug build on a loaded machine.
const LONG: Duration = Duration::from_secs(120);

/// A filer under test, with its own inbox in a fresh directory.
struct Peer {
    p: Proc,
    addr: SocketAddr,
    /// The directory holding the inbox (nothing else may appear in it).
    dir: PathBuf,
    inbox: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.p.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A filer with an unreachable ipserver and its inbox in a fresh directory.
fn filer_cmd(id: &str, extra: &[&str]) -> (Command, PathBuf, PathBuf) {
    let dir = tmp_path(&format!("filer-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let inbox = dir.join("inbox");
    // These tests are about moving files: take them without asking unless
    // told otherwise (consent has its own tests, tests/transfer_consent.rs).
    let mut args = extra.to_vec();
    if !args.contains(&"--accept-files") {
        args.extend(["--accept-files", "yes"]);
    }
    let cmd = lone_filer_command(id, &inbox, &args);
    (cmd, dir, inbox)
}

fn start(cmd: Command, dir: PathBuf, inbox: PathBuf) -> Peer {
    let p = Proc::spawn_cmd(cmd);
    let addr = p.listening_addr();
    Peer {
        p,
        addr,
        dir,
        inbox,
    }
}

/// `sockmod filer --id ID --json` on a free port, with an unreachable ipserver.
fn filer(id: &str, extra: &[&str]) -> Peer {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let (cmd, dir, inbox) = filer_cmd(id, &args);
    start(cmd, dir, inbox)
}

/// `from` dials `to` and both know each other by name.
fn link(from: &mut Peer, from_id: &str, to: &Peer, to_id: &str) {
    from.p.send_line(&format!("connect {}", to.addr));
    from.p
        .expect_event("identified", &[("name", Value::from(to_id))]);
    to.p.expect_event("identified", &[("name", Value::from(from_id))]);
}

/// `sendfile TO PATHS...` typed at `from`.
fn sendfile(from: &mut Peer, to: &str, paths: &[&Path]) {
    let mut line = format!("sendfile {to}");
    for p in paths {
        line.push_str(&format!(" '{}'", p.display()));
    }
    from.p.send_line(&line);
}

/// The `reason` of a failed transfer event.
fn reason(v: &Value) -> &str {
    v["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason in {v}"))
}

/// Filers alice and bob, alice connected to bob, each knowing the other's name.
fn alice_and_bob() -> (Peer, Peer) {
    let mut alice = filer("alice", &[]);
    let bob = filer("bob", &[]);
    link(&mut alice, "alice", &bob, "bob");
    (alice, bob)
}

fn is_transfer(v: &Value, dir: &str, state: &str) -> bool {
    v["event"] == "transfer" && v["dir"] == dir && v["state"] == state
}

/// Waits for a transfer event of `name` in `dir` reaching `state`.
fn expect_transfer(p: &Proc, dir: &str, state: &str, name: &str, timeout: Duration) -> Value {
    p.expect_json_within(
        &format!("transfer {dir} {name:?} {state}"),
        |v| is_transfer(v, dir, state) && v["name"] == name,
        timeout,
    )
}

fn digest(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A file of `size` bytes built from a 1 MiB random block, each MiB tagged with
/// its index so that reordered or repeated chunks change the digest.
/// Size of a file that cannot go out before a test stops its receiver: 4 GiB,
/// sparse (zeros read at once; only what a receiver takes is written).
const HUGE: u64 = 4 << 30;

/// A sparse file of `size` zero bytes.
fn sparse_file(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn big_file(path: &Path, size: usize, seed: u64) {
    use std::io::Write;
    let block = random_bytes(1 << 20, seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut left = size;
    let mut i = 0u64;
    while left > 0 {
        let n = left.min(block.len());
        let mut b = block[..n].to_vec();
        let tag = i.to_le_bytes();
        let t = tag.len().min(n);
        b[..t].copy_from_slice(&tag[..t]);
        f.write_all(&b).unwrap();
        left -= n;
        i += 1;
    }
    f.flush().unwrap();
}

fn chunk(name: &str, total: u64, index: i64, digest: Option<&str>) -> Header {
    let mut h = Header::new()
        .with("TP", "file")
        .with("N", name)
        .with("L", total.to_string())
        .with("index", index.to_string());
    if let Some(d) = digest {
        h.set("H", d);
    }
    h
}

/// The next frame with `TP:tp` a raw client receives (skipping identities).
fn expect_tp(c: &mut Client, tp: &str) -> Message {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        for m in c.read_frames(1, Duration::from_millis(200)) {
            if m.header.get("TP") == Some(tp) {
                return m;
            }
        }
    }
    panic!("no TP:{tp} frame within {TIMEOUT:?}");
}

/// Nothing in the inbox: a file cut short by a dropped connection or a quit
/// may only leave its resumable part file (and the hashes verifying it) in
/// the hidden `.sockmod-partial` folder.
fn assert_no_visible_files(inbox: &Path) {
    let e: Vec<String> = dir_entries(inbox)
        .into_iter()
        .filter(|n| n != ".sockmod-partial")
        .collect();
    assert!(e.is_empty(), "inbox should be empty, has {e:?}");
    for n in dir_entries(&inbox.join(".sockmod-partial")) {
        assert!(n.ends_with(".part") || n.ends_with(".meta"), "{n}");
    }
}

#[test]
fn files_of_every_shape_arrive_byte_identical() {
    let (mut alice, bob) = alice_and_bob();

    let src = alice.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("one.bin", vec![0x5a]),
        ("exact-chunk.bin", random_bytes(CHUNK_SIZE, 1)),
        ("multi.bin", random_bytes(3 * CHUNK_SIZE + 12_345, 2)),
        ("naïve résumé 日本語.txt", random_bytes(1000, 3)),
    ];
    let mut paths = Vec::new();
    for (name, bytes) in &files {
        let p = src.join(name);
        write_file(&p, bytes);
        paths.push(p);
    }
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    sendfile(&mut alice, "bob", &paths);

    for (name, bytes) in &files {
        let v = expect_transfer(&bob.p, "recv", "done", name, TIMEOUT);
        assert_eq!(v["total"], bytes.len() as u64, "{v}");
        let path = PathBuf::from(v["path"].as_str().expect("done has a path"));
        assert_eq!(path, bob.inbox.join(name), "{v}");
        assert_eq!(digest(&path), blake3::hash(bytes), "{name} differs");
        let s = expect_transfer(&alice.p, "send", "done", name, TIMEOUT);
        assert_eq!(s["peer_name"], "bob", "{s}");
    }
    let mut want: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(
        dir_entries(&bob.inbox),
        want,
        "only the files, no part files"
    );
    assert_eq!(dir_entries(&bob.dir), ["inbox"]);

    // `transfers` lists them with outcomes.
    alice.p.send_line("transfers");
    let v = alice
        .p
        .expect_json("transfers list", |v| v["event"] == "transfers");
    let list = v["transfers"].as_array().unwrap();
    assert_eq!(list.len(), files.len(), "{v}");
    assert!(
        list.iter()
            .all(|t| t["state"] == "done" && t["dir"] == "send"),
        "{v}"
    );
}

#[test]
fn files_go_to_several_peers_in_parallel_and_queue_per_peer() {
    let mut alice = filer("alice", &[]);
    let bob = filer("bob", &[]);
    let carol = filer("carol", &[]);
    link(&mut alice, "alice", &bob, "bob");
    link(&mut alice, "alice", &carol, "carol");
    let a = alice.dir.join("a.bin");
    let b = alice.dir.join("b.bin");
    write_file(&a, &random_bytes(2 << 20, 4));
    write_file(&b, &random_bytes(100_000, 5));
    sendfile(&mut alice, "bob,carol", &[&a, &b]);
    for peer in [&bob, &carol] {
        // One connection sends its files in order.
        let first = expect_transfer(&peer.p, "recv", "done", "a.bin", TIMEOUT);
        let second = expect_transfer(&peer.p, "recv", "done", "b.bin", TIMEOUT);
        assert!(first["transfer"].as_u64() < second["transfer"].as_u64());
        assert_eq!(digest(&peer.inbox.join("a.bin")), digest(&a));
        assert_eq!(digest(&peer.inbox.join("b.bin")), digest(&b));
    }
    for name in ["a.bin", "b.bin"] {
        for _ in 0..2 {
            expect_transfer(&alice.p, "send", "done", name, TIMEOUT);
        }
    }
    // Both peers' first files were under way at the same time: each started
    // before the other ended.
    let lines = alice.p.out.all();
    let pos = |dir_peer: &str, state: &str| {
        lines
            .iter()
            .position(|l| {
                l.json.as_ref().is_some_and(|v| {
                    is_transfer(v, "send", state)
                        && v["name"] == "a.bin"
                        && v["peer_name"] == dir_peer
                })
            })
            .unwrap_or_else(|| panic!("no {state} for {dir_peer}"))
    };
    assert!(pos("bob", "started") < pos("carol", "done"));
    assert!(pos("carol", "started") < pos("bob", "done"));
}

#[test]
fn hostile_names_never_leave_the_inbox() {
    let bob = filer("bob", &[]);
    let mut c = Client::connect(bob.addr);
    let pid = std::process::id();
    let abs = format!("/tmp/sockmod-abs-{pid}");
    let long = format!("{}.txt", "L".repeat(300));
    let names = [
        "../x".to_string(),
        format!("../../escape-{pid}"),
        abs.clone(),
        "a/b/c".into(),
        ".".into(),
        "..".into(),
        "".into(),
        "ctl\u{1}\u{1b}[31m\nred.txt".into(),
        long.clone(),
        ".hidden".into(),
        "..\\..\\win.txt".into(),
    ];
    let mut bodies = BTreeSet::new();
    for (i, n) in names.iter().enumerate() {
        let body = format!("body {i}").into_bytes();
        bodies.insert(body.clone());
        c.send(&chunk(n, body.len() as u64, -1, None), &body);
    }
    for _ in &names {
        bob.p
            .expect_json("a done transfer", |v| is_transfer(v, "recv", "done"));
    }
    assert_eq!(
        dir_entries(&bob.dir),
        ["inbox"],
        "nothing next to the inbox"
    );
    assert!(!Path::new(&abs).exists());
    assert!(!std::env::temp_dir().join(format!("escape-{pid}")).exists());
    let stored = dir_entries(&bob.inbox);
    assert_eq!(stored.len(), names.len(), "{stored:?}");
    let mut got = BTreeSet::new();
    for s in &stored {
        let p = bob.inbox.join(s);
        assert!(p.is_file(), "{s:?} is a plain file");
        assert!(!s.starts_with('.'), "{s:?} is not hidden");
        assert!(s.len() <= 255, "{s:?} fits the name limit");
        assert!(
            !s.chars().any(char::is_control),
            "{s:?} has no control characters"
        );
        got.insert(std::fs::read(&p).unwrap());
    }
    assert_eq!(got, bodies, "every file stored once, intact");
    for want in [
        "x",
        "c",
        "file",
        "file (1)",
        "file (2)",
        "hidden",
        "win.txt",
        "ctl__[31m_red.txt",
    ] {
        assert!(
            stored.iter().any(|s| s == want),
            "{want:?} not in {stored:?}"
        );
    }
    let l = stored.iter().find(|s| s.starts_with("LLL")).unwrap();
    assert!(l.ends_with(".txt") && l.len() == 255, "{l}");
}

#[test]
fn same_name_twice_gives_two_files_first_untouched() {
    let bob = filer("bob", &[]);
    let mut c = Client::connect(bob.addr);
    c.send(&chunk("dup.txt", 5, -1, None), b"first");
    expect_transfer(&bob.p, "recv", "done", "dup.txt", TIMEOUT);
    c.send(&chunk("dup.txt", 6, -1, None), b"second");
    let v = expect_transfer(&bob.p, "recv", "done", "dup.txt", TIMEOUT);
    assert_eq!(
        v["path"],
        bob.inbox.join("dup (1).txt").display().to_string()
    );
    assert_eq!(std::fs::read(bob.inbox.join("dup.txt")).unwrap(), b"first");
    assert_eq!(
        std::fs::read(bob.inbox.join("dup (1).txt")).unwrap(),
        b"second"
    );
}

#[test]
fn original_format_without_digest_is_accepted() {
    let bob = filer("bob", &[]);
    let mut c = Client::connect(bob.addr);
    let data = random_bytes(250, 6);
    c.send(&chunk("photo.jpg", 250, 0, None), &data[..100]);
    c.send(&chunk("photo.jpg", 250, 1, None), &data[100..200]);
    c.send(&chunk("photo.jpg", 250, -1, None), &data[200..]);
    let v = expect_transfer(&bob.p, "recv", "done", "photo.jpg", TIMEOUT);
    assert_eq!(v["bytes"], 250);
    assert_eq!(std::fs::read(bob.inbox.join("photo.jpg")).unwrap(), data);
    // sockmod confirms with its extension frame (original peers ignore it).
    let m = expect_tp(&mut c, "received");
    assert_eq!(m.header.get("N"), Some("photo.jpg"));
    assert_eq!(m.header.get("L"), Some("250"));
    // And with the right digest, too.
    let h = blake3::hash(b"abc").to_hex().to_string();
    c.send(&chunk("d.txt", 3, -1, Some(&h)), b"abc");
    expect_transfer(&bob.p, "recv", "done", "d.txt", TIMEOUT);
}

#[test]
fn wrong_digest_fails_and_leaves_nothing() {
    let bob = filer("bob", &[]);
    let mut c = Client::connect(bob.addr);
    let bad = blake3::hash(b"something else").to_hex().to_string();
    c.send(&chunk("evil.bin", 3, 0, None), b"ab");
    c.send(&chunk("evil.bin", 3, -1, Some(&bad)), b"c");
    let v = expect_transfer(&bob.p, "recv", "failed", "evil.bin", TIMEOUT);
    assert!(reason(&v).contains("digest mismatch"), "{v}");
    bob.p.expect_err_line("the failure on stderr", |l| {
        l.contains("transfer t1") && l.contains("digest mismatch")
    });
    assert_no_visible_files(&bob.inbox);
    let m = expect_tp(&mut c, "cancel");
    assert_eq!(m.header.get("N"), Some("evil.bin"));
    assert_eq!(m.header.get("dir"), Some("recv"));
    assert!(m.header.get("reason").unwrap().contains("digest mismatch"));
}

#[test]
fn sender_closing_mid_file_fails_and_leaves_nothing() {
    let bob = filer("bob", &[]);
    let mut c = Client::connect(bob.addr);
    c.send(&chunk("cut.bin", 1000, 0, None), &[7u8; 400]);
    expect_transfer(&bob.p, "recv", "started", "cut.bin", TIMEOUT);
    drop(c);
    let v = expect_transfer(&bob.p, "recv", "failed", "cut.bin", TIMEOUT);
    assert!(reason(&v).contains("connection closed mid-file"), "{v}");
    assert_eq!(v["bytes"], 400, "{v}");
    assert_no_visible_files(&bob.inbox);
}

#[test]
fn bad_chunk_sequences_fail_that_file_only() {
    let bob = filer("bob", &[]);
    let mut c = Client::connect(bob.addr);

    // Out of order: chunk 2 after chunk 0; the rest of that file is dropped.
    c.send(&chunk("order.bin", 30, 0, None), &[1; 10]);
    c.send(&chunk("order.bin", 30, 2, None), &[1; 10]);
    c.send(&chunk("order.bin", 30, -1, None), &[1; 10]);
    let v = expect_transfer(&bob.p, "recv", "failed", "order.bin", TIMEOUT);
    assert!(reason(&v).contains("out of order"), "{v}");
    assert_eq!(
        expect_tp(&mut c, "cancel").header.get("N"),
        Some("order.bin")
    );

    // More bytes than L.
    c.send(&chunk("more.bin", 3, -1, None), b"abcd");
    let v = expect_transfer(&bob.p, "recv", "failed", "more.bin", TIMEOUT);
    assert!(reason(&v).contains("more bytes than announced"), "{v}");

    // Fewer bytes than L.
    c.send(&chunk("fewer.bin", 10, 0, None), b"abc");
    c.send(&chunk("fewer.bin", 10, -1, None), b"de");
    let v = expect_transfer(&bob.p, "recv", "failed", "fewer.bin", TIMEOUT);
    assert!(reason(&v).contains("fewer bytes than announced"), "{v}");

    // A new file before the last ended: the first fails, the second arrives.
    c.send(&chunk("first.bin", 10, 0, None), b"abc");
    c.send(&chunk("second.bin", 2, -1, None), b"ok");
    let v = expect_transfer(&bob.p, "recv", "failed", "first.bin", TIMEOUT);
    assert!(reason(&v).contains("new file"), "{v}");
    expect_transfer(&bob.p, "recv", "done", "second.bin", TIMEOUT);

    // A malformed chunk header mid-file fails that file.
    c.send(&chunk("mal.bin", 10, 0, None), b"abc");
    c.send(
        &Header::new()
            .with("TP", "file")
            .with("N", "mal.bin")
            .with("L", "ten")
            .with("index", "1"),
        b"x",
    );
    let v = expect_transfer(&bob.p, "recv", "failed", "mal.bin", TIMEOUT);
    assert!(reason(&v).contains("L is not a length"), "{v}");

    // The connection goes on: a good file still arrives, and chat too.
    c.send(&chunk("good.bin", 4, 0, None), b"go");
    c.send(&chunk("good.bin", 4, -1, None), b"od");
    expect_transfer(&bob.p, "recv", "done", "good.bin", TIMEOUT);
    c.send_info("still here");
    bob.p.expect_json("chat", |v| {
        v["event"] == "message" && v["header"]["info"] == "still here"
    });
    assert_eq!(dir_entries(&bob.inbox), ["good.bin", "second.bin"]);
}

#[test]
fn sender_killed_mid_file_fails_and_leaves_nothing() {
    let (mut alice, bob) = alice_and_bob();
    let big = alice.dir.join("big.bin");
    sparse_file(&big, HUGE);
    // Once chunks flow (alice's first progress report), bob is stopped: alice
    // can only fill the socket buffers, and is mid-file when she is killed. The
    // file is far too big to end before.
    sendfile(&mut alice, "bob", &[&big]);
    expect_transfer(&bob.p, "recv", "started", "big.bin", TIMEOUT);
    expect_transfer(&alice.p, "send", "started", "big.bin", TIMEOUT);
    alice.p.expect_json("alice's first progress", |v| {
        is_transfer(v, "send", "progress") && v["bytes"].as_u64() > Some(0)
    });
    bob.p.signal(libc::SIGSTOP);
    alice.p.kill();
    bob.p.signal(libc::SIGCONT);
    let v = expect_transfer(&bob.p, "recv", "failed", "big.bin", TIMEOUT);
    assert!(reason(&v).contains("connection closed mid-file"), "{v}");
    assert!(v["bytes"].as_u64().unwrap() < HUGE, "{v}");
    assert_no_visible_files(&bob.inbox);
}

#[test]
fn source_shrinking_mid_file_fails_on_both_sides() {
    let (mut alice, bob) = alice_and_bob();
    let big = alice.dir.join("shrink.bin");
    big_file(&big, 64 << 20, 8);
    bob.p.signal(libc::SIGSTOP);
    sendfile(&mut alice, "bob", &[&big]);
    expect_transfer(&alice.p, "send", "started", "shrink.bin", TIMEOUT);
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    bob.p.signal(libc::SIGCONT);
    let v = expect_transfer(&alice.p, "send", "failed", "shrink.bin", TIMEOUT);
    assert!(reason(&v).contains("shrank"), "{v}");
    let v = expect_transfer(&bob.p, "recv", "failed", "shrink.bin", TIMEOUT);
    assert!(reason(&v).contains("sender: "), "{v}");
    assert!(reason(&v).contains("shrank"), "{v}");
    assert_no_visible_files(&bob.inbox);
}

#[test]
fn cancel_stops_a_transfer_on_both_sides() {
    let (mut alice, mut bob) = alice_and_bob();
    let big = alice.dir.join("big.bin");
    sparse_file(&big, HUGE);

    // The sender cancels while stuck mid-file (bob stopped once chunks flow).
    sendfile(&mut alice, "bob", &[&big]);
    expect_transfer(&bob.p, "recv", "started", "big.bin", TIMEOUT);
    let v = expect_transfer(&alice.p, "send", "started", "big.bin", TIMEOUT);
    alice.p.expect_json("alice's first progress", |p| {
        is_transfer(p, "send", "progress") && p["bytes"].as_u64() > Some(0)
    });
    bob.p.signal(libc::SIGSTOP);
    alice.p.send_line(&format!("cancel {}", v["transfer"]));
    let v = expect_transfer(&alice.p, "send", "failed", "big.bin", TIMEOUT);
    assert_eq!(v["reason"], "cancelled");
    bob.p.signal(libc::SIGCONT);
    let v = expect_transfer(&bob.p, "recv", "failed", "big.bin", TIMEOUT);
    assert_eq!(v["reason"], "sender: cancelled", "{v}");
    assert_no_visible_files(&bob.inbox);

    // The receiver cancels: a raw sender sends the first chunk and waits.
    let mut c = Client::connect(bob.addr);
    c.send(&chunk("slow.bin", 30, 0, None), &[3; 10]);
    let v = expect_transfer(&bob.p, "recv", "started", "slow.bin", TIMEOUT);
    bob.p.send_line(&format!("cancel {}", v["transfer"]));
    let v = expect_transfer(&bob.p, "recv", "failed", "slow.bin", TIMEOUT);
    assert_eq!(v["reason"], "cancelled");
    let m = expect_tp(&mut c, "cancel");
    assert_eq!(m.header.get("dir"), Some("recv"));
    assert_eq!(m.header.get("reason"), Some("cancelled"));
    // The rest of that file is dropped quietly; the next one arrives.
    c.send(&chunk("slow.bin", 30, 1, None), &[3; 10]);
    c.send(&chunk("slow.bin", 30, -1, None), &[3; 10]);
    c.send(&chunk("next.bin", 2, -1, None), b"ok");
    expect_transfer(&bob.p, "recv", "done", "next.bin", TIMEOUT);
    assert_eq!(dir_entries(&bob.inbox), ["next.bin"]);

    // The receiver cancels a sockmod sender: the sender reports it. Alice is
    // stopped mid-file (bob was stopped while she began), so bob's cancel
    // reaches her before the file can end.
    sendfile(&mut alice, "bob", &[&big]);
    let v = bob.p.expect_json("bob receiving the second big.bin", |v| {
        is_transfer(v, "recv", "started") && v["name"] == "big.bin" && v["transfer"] != 1
    });
    let sent = alice.p.expect_json("alice's second big.bin", |v| {
        is_transfer(v, "send", "started") && v["name"] == "big.bin" && v["transfer"] != 1
    });
    alice.p.expect_json("alice's first progress", |p| {
        is_transfer(p, "send", "progress")
            && p["transfer"] == sent["transfer"]
            && p["bytes"].as_u64() > Some(0)
    });
    bob.p.signal(libc::SIGSTOP);
    alice.p.signal(libc::SIGSTOP);
    bob.p.signal(libc::SIGCONT);
    bob.p.send_line(&format!("cancel {}", v["transfer"]));
    let v = expect_transfer(&bob.p, "recv", "failed", "big.bin", TIMEOUT);
    assert_eq!(v["reason"], "cancelled", "{v}");
    alice.p.signal(libc::SIGCONT);
    let v = expect_transfer(&alice.p, "send", "failed", "big.bin", TIMEOUT);
    assert_eq!(v["reason"], "receiver: cancelled", "{v}");
    assert!(v["bytes"].as_u64().unwrap() < HUGE, "{v}");
    assert_eq!(dir_entries(&bob.inbox), ["next.bin"]);

    // Cancelling what has ended, or what never was, is a one-line error.
    bob.p.send_line("cancel 1");
    bob.p.expect_err_line("cannot cancel a failed one", |l| {
        l == "error: cannot cancel transfer t1: it has already failed (sender: cancelled)"
    });
    bob.p.send_line("cancel 3");
    bob.p.expect_err_line("cannot cancel a finished one", |l| {
        l.starts_with("error: cannot cancel transfer t3: it has already finished (\"next.bin\" received from #")
    });
    bob.p.send_line("cancel 999");
    bob.p.expect_err_line("no such transfer", |l| {
        l == "error: cannot cancel transfer t999: no such transfer (the last one is t4; see `transfers`)"
    });
    alice.p.send_line("cancel 0");
    alice.p.expect_err_line("no such transfer", |l| {
        l == "error: cannot cancel transfer t0: no such transfer (the last one is t2; see `transfers`)"
    });

    // Both sides go on: a small file still gets through.
    let small = alice.dir.join("small.txt");
    write_file(&small, b"after the cancels");
    sendfile(&mut alice, "bob", &[&small]);
    expect_transfer(&alice.p, "send", "done", "small.txt", TIMEOUT);
    expect_transfer(&bob.p, "recv", "done", "small.txt", TIMEOUT);
    assert_eq!(dir_entries(&bob.inbox), ["next.bin", "small.txt"]);
}

#[test]
fn refusals_name_the_reason_on_both_sides() {
    let mut alice = filer("alice", &[]);
    let bob = filer("bob", &["--max-file-size", "100KiB"]);
    link(&mut alice, "alice", &bob, "bob");
    let big = alice.dir.join("big.bin");
    write_file(&big, &random_bytes(1 << 20, 10));
    let ok = alice.dir.join("ok.bin");
    write_file(&ok, &random_bytes(50_000, 11));
    sendfile(&mut alice, "bob", &[&big, &ok]);
    let v = expect_transfer(&bob.p, "recv", "failed", "big.bin", TIMEOUT);
    assert!(reason(&v).contains("--max-file-size"), "{v}");
    let v = expect_transfer(&alice.p, "send", "failed", "big.bin", TIMEOUT);
    let r = reason(&v);
    assert!(
        r.starts_with("receiver: refused") && r.contains("--max-file-size"),
        "{v}"
    );
    // The next file on the same connection still arrives.
    expect_transfer(&bob.p, "recv", "done", "ok.bin", TIMEOUT);
    expect_transfer(&alice.p, "send", "done", "ok.bin", TIMEOUT);
    assert_eq!(dir_entries(&bob.inbox), ["ok.bin"]);

    let carol = filer("carol", &["--accept-files", "no"]);
    let mut c = Client::connect(carol.addr);
    c.send(&chunk("x.txt", 1, -1, None), b"x");
    let v = expect_transfer(&carol.p, "recv", "failed", "x.txt", TIMEOUT);
    assert!(reason(&v).contains("--accept-files no"), "{v}");
    let m = expect_tp(&mut c, "cancel");
    assert!(
        m.header
            .get("reason")
            .unwrap()
            .contains("does not accept files")
    );
    assert!(!carol.inbox.exists() || dir_entries(&carol.inbox).is_empty());
}

#[test]
fn disk_write_errors_fail_the_transfer_on_both_sides() {
    use std::os::unix::process::CommandExt;
    let mut alice = filer("alice", &[]);
    let (mut cmd, dir, inbox) = filer_cmd("bob", &["--json"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Files may not grow past 1 MiB (a full disk, in effect); the write
            // fails with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let bob = start(cmd, dir, inbox);
    link(&mut alice, "alice", &bob, "bob");
    let big = alice.dir.join("big.bin");
    write_file(&big, &random_bytes(4 << 20, 12));
    let small = alice.dir.join("small.bin");
    write_file(&small, &random_bytes(1000, 13));
    sendfile(&mut alice, "bob", &[&big, &small]);
    let v = expect_transfer(&bob.p, "recv", "failed", "big.bin", TIMEOUT);
    assert!(reason(&v).contains("cannot write"), "{v}");
    let v = expect_transfer(&alice.p, "send", "failed", "big.bin", TIMEOUT);
    assert!(reason(&v).starts_with("receiver: cannot write"), "{v}");
    expect_transfer(&bob.p, "recv", "done", "small.bin", TIMEOUT);
    assert_eq!(dir_entries(&bob.inbox), ["small.bin"]);
}

#[test]
fn unreadable_sources_are_refused_before_sending() {
    let (mut alice, bob) = alice_and_bob();
    let ok = alice.dir.join("ok.txt");
    write_file(&ok, b"ok");
    // (A folder is sent as a folder: tests/transfer_dirs.rs.) A FIFO is not
    // a regular file.
    let fifo = alice.dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    sendfile(&mut alice, "bob", &[&ok, &fifo]);
    alice
        .p
        .expect_err_line("a FIFO is refused", |l| l.contains("not a regular file"));
    alice.p.send_line("sendfile bob /nonexistent/file");
    alice.p.expect_err_line("a missing file is refused", |l| {
        l.contains("/nonexistent/file") && l.contains("not found")
    });
    alice.p.send_line("sendfile nobody-here /etc/hostname");
    alice
        .p
        .expect_err_line("an unknown peer is refused", |l| l.contains("nobody-here"));
    // Nothing was sent: the next good file is the first transfer.
    sendfile(&mut alice, "bob", &[&ok]);
    let v = expect_transfer(&bob.p, "recv", "done", "ok.txt", TIMEOUT);
    assert_eq!(v["transfer"], 1);
}

#[test]
fn big_file_keeps_memory_bounded_and_chat_flows_during_it() {
    let (mut alice, bob) = alice_and_bob();
    let big = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}-256mib", std::process::id()))
        .join("big.bin");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    let size = 256 << 20;
    big_file(&big, size, 14);
    let t0 = Instant::now();
    sendfile(&mut alice, "bob", &[&big]);
    expect_transfer(&alice.p, "send", "started", "big.bin", TIMEOUT);
    alice.p.send_line("send bob during the transfer");
    let done = expect_transfer(&bob.p, "recv", "done", "big.bin", LONG);
    let took = t0.elapsed();
    expect_transfer(&alice.p, "send", "done", "big.bin", TIMEOUT);
    eprintln!("256 MiB filer to filer: {took:?}");

    // The chat message arrived before the file ended.
    let lines = bob.p.out.all();
    let chat = lines
        .iter()
        .position(|l| {
            l.json.as_ref().is_some_and(|v| {
                v["event"] == "message" && v["header"]["info"] == "during the transfer"
            })
        })
        .expect("chat message arrived");
    let end = lines
        .iter()
        .position(|l| l.json.as_ref() == Some(&done))
        .expect("done event");
    assert!(chat < end, "chat at line {chat}, file done at line {end}");
    let progress = bob.p.out.count(|l| {
        l.json
            .as_ref()
            .is_some_and(|v| is_transfer(v, "recv", "progress"))
    });
    let limit = (took.as_secs_f64() * 4.0).ceil() as usize + 2;
    assert!(progress <= limit, "{progress} progress events in {took:?}");

    for (who, pid) in [("alice", alice.p.pid()), ("bob", bob.p.pid())] {
        let kib = status_kib(pid, "VmHWM");
        eprintln!("{who} peak RSS: {} MiB", kib / 1024);
        assert!(kib < 64 * 1024, "{who} peak RSS {kib} KiB");
    }
    let path = PathBuf::from(done["path"].as_str().unwrap());
    assert_eq!(digest(&path), digest(&big));
    let _ = std::fs::remove_dir_all(big.parent().unwrap());
}

#[test]
fn human_output_shows_started_done_and_failed_lines_only() {
    let (cmd, dir, inbox) = filer_cmd("bob", &[]);
    let mut bob = start(cmd, dir, inbox);
    let mut c = Client::connect(bob.addr);
    c.send(&chunk("hello.txt", 5, -1, None), b"hello");
    bob.p.expect_line("done line", |l| {
        l.starts_with("~ transfer t1 done: received \"hello.txt\" (5 B) from #")
            && l.ends_with("/inbox/hello.txt")
    });
    c.send(&chunk("bad.txt", 5, -1, None), b"hell");
    bob.p.expect_line("failed line", |l| {
        l.starts_with("~ transfer t2 failed: \"bad.txt\" from #") && l.contains("fewer bytes")
    });
    bob.p.expect_err_line("failed on stderr", |l| {
        l.starts_with("error: transfer t2 (\"bad.txt\" from #") && l.contains("fewer bytes")
    });
    let started = bob
        .p
        .out
        .count(|l| l.text.starts_with("~ transfer") && l.text.contains("receiving"));
    assert_eq!(started, 2);
    bob.p.send_line("transfers");
    bob.p
        .expect_line("table header", |l| l.starts_with("#   dir"));
    assert!(
        !bob.p.out.texts().iter().any(|l| l.contains("ETA")),
        "no progress lines when piped"
    );
}

// ---------------------------------------------------------------------------
// Quitting with transfers running, and what the user sees of transfers
// ---------------------------------------------------------------------------

#[test]
fn quit_waits_for_the_files_being_sent_then_exits() {
    let (mut alice, bob) = alice_and_bob();
    let big = alice.dir.join("big.bin");
    big_file(&big, 16 << 20, 21);
    let small = alice.dir.join("small.bin");
    write_file(&small, &random_bytes(5000, 22));
    // Bob is stopped, so both files are still on their way when quit comes.
    bob.p.signal(libc::SIGSTOP);
    sendfile(&mut alice, "bob", &[&big, &small]);
    expect_transfer(&alice.p, "send", "started", "big.bin", TIMEOUT);
    alice.p.send_line("quit");
    alice.p.expect_err_line("the waiting notice", |l| {
        l == "waiting for 2 transfers to finish (quit again or Ctrl-C to stop now)"
    });
    // The end of piped input changes nothing.
    alice.p.close_stdin();
    bob.p.signal(libc::SIGCONT);
    expect_transfer(&alice.p, "send", "done", "big.bin", LONG);
    expect_transfer(&alice.p, "send", "done", "small.bin", TIMEOUT);
    assert_eq!(alice.p.expect_exit(TIMEOUT), 0, "{}", alice.p.context());
    for (name, src) in [("big.bin", &big), ("small.bin", &small)] {
        let v = expect_transfer(&bob.p, "recv", "done", name, TIMEOUT);
        let path = PathBuf::from(v["path"].as_str().unwrap());
        assert_eq!(digest(&path), digest(src), "{name}");
    }
    assert_eq!(
        bob.p
            .count_events("transfer", &[("state", Value::from("failed"))]),
        0,
        "{}",
        bob.p.context()
    );
}

#[test]
fn a_second_quit_stops_at_once_and_tells_the_receiver() {
    let (mut alice, bob) = alice_and_bob();
    let big = alice.dir.join("big.bin");
    big_file(&big, 64 << 20, 23);
    let small = alice.dir.join("small.bin");
    write_file(&small, b"never sent");
    bob.p.signal(libc::SIGSTOP);
    sendfile(&mut alice, "bob", &[&big, &small]);
    expect_transfer(&alice.p, "send", "started", "big.bin", TIMEOUT);
    alice.p.send_line("quit");
    alice
        .p
        .expect_err_line("the waiting notice", |l| l.starts_with("waiting for 2"));
    alice.p.send_line("quit");
    let v = expect_transfer(&alice.p, "send", "failed", "big.bin", TIMEOUT);
    assert_eq!(reason(&v), "stopped: quitting");
    let v = expect_transfer(&alice.p, "send", "failed", "small.bin", TIMEOUT);
    assert_eq!(reason(&v), "not sent: quitting");
    // Bob reads what was queued before the close: the cancel says why.
    bob.p.signal(libc::SIGCONT);
    let v = expect_transfer(&bob.p, "recv", "failed", "big.bin", TIMEOUT);
    assert_eq!(reason(&v), "sender quit", "{v}");
    // Files were not delivered: a piped session says so in its status.
    assert_eq!(alice.p.expect_exit(TIMEOUT), 1, "{}", alice.p.context());
    assert_no_visible_files(&bob.inbox);
    assert_eq!(
        bob.p
            .count_events("transfer", &[("name", Value::from("small.bin"))]),
        0
    );
}

#[test]
fn a_receiver_that_quits_tells_the_sender() {
    // Bob receives from a raw sender and is stopped by SIGTERM mid-file.
    let mut bob = filer("bob", &[]);
    bob.p.send_line("cancel 1");
    bob.p.expect_err_line("nothing to cancel", |l| {
        l == "error: cannot cancel transfer t1: there are no transfers yet"
    });
    let mut c = Client::connect(bob.addr);
    c.send(&chunk("slow.bin", 30, 0, None), &[3; 10]);
    expect_transfer(&bob.p, "recv", "started", "slow.bin", TIMEOUT);
    bob.p.sigterm();
    let m = expect_tp(&mut c, "cancel");
    assert_eq!(m.header.get("N"), Some("slow.bin"));
    assert_eq!(m.header.get("L"), Some("30"));
    assert_eq!(m.header.get("dir"), Some("recv"));
    assert_eq!(m.header.get("reason"), Some("receiver quit"));
    let v = expect_transfer(&bob.p, "recv", "failed", "slow.bin", TIMEOUT);
    assert_eq!(reason(&v), "stopped: quitting");
    assert_eq!(bob.p.expect_exit(TIMEOUT), 0, "{}", bob.p.context());
    assert_no_visible_files(&bob.inbox);

    // Alice sends to a raw receiver that quits: that file and the ones queued
    // after it fail with its reason, and the piped session exits 1.
    let mut alice = filer("alice", &[]);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    alice.p.send_line(&format!("connect {at}"));
    let mut r = accept_within(&l, TIMEOUT);
    let big = alice.dir.join("big.bin");
    // Too big to sit whole in the socket buffers: it is still going out.
    big_file(&big, 64 << 20, 24);
    let small = alice.dir.join("small.bin");
    write_file(&small, b"queued");
    sendfile(&mut alice, &at.to_string(), &[&big, &small]);
    let first = expect_tp(&mut r, "file");
    assert_eq!(first.header.get("N"), Some("big.bin"));
    r.send(
        &Header::new()
            .with("TP", "cancel")
            .with("N", "big.bin")
            .with("L", (64u64 << 20).to_string())
            .with("dir", "recv")
            .with("reason", "receiver quit"),
        b"",
    );
    let v = expect_transfer(&alice.p, "send", "failed", "big.bin", TIMEOUT);
    assert_eq!(reason(&v), "receiver quit");
    let v = expect_transfer(&alice.p, "send", "failed", "small.bin", TIMEOUT);
    assert_eq!(reason(&v), "not sent: receiver quit");
    alice.p.send_line("quit");
    assert_eq!(alice.p.expect_exit(TIMEOUT), 1, "{}", alice.p.context());
}

#[test]
fn received_paths_are_absolute_though_the_inbox_was_given_relative() {
    let dir = tmp_path("relative-inbox");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = filer_command(
        "bob",
        &refused_addr().to_string(),
        "5s",
        Path::new("./in box"),
        &["--json", "--accept-files", "yes"],
    );
    cmd.current_dir(&dir);
    let mut bob = Proc::spawn_cmd(cmd);
    let addr = bob.listening_addr();
    // The inbox is made (and checked writable) at start.
    assert!(wait_until(TIMEOUT, || dir.join("in box").is_dir()));
    let want = dir.canonicalize().unwrap().join("in box");
    let mut c = Client::connect(addr);
    for (i, file) in ["notes.txt", "notes (1).txt"].iter().enumerate() {
        c.send(&chunk("notes.txt", 5, -1, None), b"hello");
        let v = bob.expect_json(&format!("file {i} done"), |v| {
            is_transfer(v, "recv", "done") && v["transfer"] == i + 1
        });
        assert_eq!(v["path"], want.join(file).to_str().unwrap(), "{v}");
    }
    bob.send_line("transfers");
    let v = bob.expect_json("transfers", |v| v["event"] == "transfers");
    assert_eq!(
        v["transfers"][0]["path"],
        want.join("notes.txt").to_str().unwrap()
    );
    bob.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn transfers_table_gives_rate_and_time_their_own_columns() {
    let (cmd, dir, inbox) = filer_cmd("alice", &[]);
    let mut alice = start(cmd, dir, inbox);
    let bob = filer("bob", &[]);
    alice.p.send_line(&format!("connect {}", bob.addr));
    bob.p
        .expect_event("identified", &[("name", Value::from("alice"))]);
    alice.p.expect_line("bob named", |l| l.ends_with(" is bob"));
    let big = alice.dir.join("big.bin");
    big_file(&big, 8 << 20, 25);
    let small = alice.dir.join("small.bin");
    write_file(&small, b"small");
    bob.p.signal(libc::SIGSTOP);
    sendfile(&mut alice, "bob", &[&big, &small]);
    alice
        .p
        .expect_line("started", |l| l.starts_with("~ transfer t1 sending"));
    let cells = |l: &str| -> Vec<String> {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    alice.p.send_line("transfers");
    let head = alice
        .p
        .expect_line("the table head", |l| l.starts_with("#  "));
    assert_eq!(
        cells(&head),
        [
            "#", "dir", "peer", "name", "size", "done", "rate", "time", "state"
        ]
    );
    let queued = alice
        .p
        .expect_line("the queued row", |l| l.starts_with("t2 "));
    assert_eq!(cells(&queued)[5..], ["0%", "-", "-", "queued"], "{queued}");
    bob.p.signal(libc::SIGCONT);
    alice
        .p
        .expect_line("small done", |l| l.starts_with("~ transfer t2 done"));
    alice.p.send_line("transfers");
    let done = alice
        .p
        .wait_line(|l| l.starts_with("t2 ") && l.ends_with("done"), TIMEOUT);
    let done = done.unwrap_or_else(|| panic!("no done row\n{}", alice.p.context()));
    let c = cells(&done);
    assert_eq!(c.len(), 9, "{done}");
    assert!(c[6].ends_with("/s"), "rate {done}");
    assert!(c[7].ends_with('s'), "time {done}");
}

#[test]
fn accept_files_help_says_what_each_value_does() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockmod"))
        .args(["filer", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("- yes:   Accept incoming files into --inbox"),
        "{help}"
    );
    assert!(
        help.contains("- no:    Refuse every incoming file; the sender is told why"),
        "{help}"
    );
}

/// `peer_online ID` on filer `p` (any port).
fn expect_online_anywhere(p: &Proc, id: &str) -> Value {
    p.expect_json_within(
        &format!("peer_online {id}"),
        |v| v["event"] == "peer_online" && v["id"] == id,
        TIMEOUT,
    )
}

/// An original peer (Python/Qt Filer) in the roster never names itself and
/// never confirms a file: sending to it by name must finish once the bytes are
/// written, as it does when it is addressed by connection, and `quit` must not
/// wait for it forever.
#[test]
fn a_file_sent_by_name_to_an_original_peer_finishes() {
    let (_ips, ips_addr) = spawn_ipserver("127.0.0.1:0", "200ms", &[]);
    let (mut ann, _) = spawn_filer("ann", ips_addr, "200ms", &[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let x_port = listener.local_addr().unwrap().port();
    let mut x_link = Client::connect(ips_addr);
    x_link.send(
        &Header::new()
            .with("ID", "x")
            .with("Port", x_port.to_string()),
        b"",
    );
    expect_online_anywhere(&ann, "x");

    let src = tmp_path("audit-orig-src.bin");
    std::fs::write(&src, random_bytes(700_000, 7)).unwrap();
    ann.send_line(&format!("sendfile x '{}'", src.display()));
    let mut x = accept_within(&listener, TIMEOUT);
    // x reads everything (identity, three chunks) and says nothing back.
    let frames = x.expect_frames(4, TIMEOUT);
    assert_eq!(frames[3].header.get("index"), Some("-1"));
    let done = ann.expect_json_within(
        "transfer to x done or failed",
        |v| {
            v["event"] == "transfer"
                && v["dir"] == "send"
                && (v["state"] == "done" || v["state"] == "failed")
        },
        TIMEOUT,
    );
    assert_eq!(done["state"], "done", "{done}");
    ann.send_line("quit");
    assert_eq!(ann.expect_exit(TIMEOUT), 0, "{}", ann.context());
    let _ = std::fs::remove_file(&src);
    drop(x_link);
}

/// The `transfers` table keeps its columns aligned on a terminal when a name
/// has wide (CJK) characters: each cell is padded by display columns, not by
/// characters.
#[test]
fn transfers_table_aligns_wide_names() {
    use unicode_width::UnicodeWidthStr;
    let inbox = tmp_path("audit-wide-inbox");
    let mut ann = Proc::spawn_cmd(lone_filer_command(
        "ann",
        &inbox,
        &["--accept-files", "yes"],
    ));
    let addr = ann.listening_addr();
    let mut c = Client::connect(addr);
    for name in ["日本語のファイル.txt", "plain.txt"] {
        let h = Header::new()
            .with("TP", "file")
            .with("N", name)
            .with("L", "3")
            .with("index", "-1");
        c.send(&h, b"abc");
        ann.expect_line("done line", |l| l.contains("done") && l.contains(name));
    }
    ann.send_line("transfers");
    // The header row, then one row per file (each row starts with `#N`).
    let rows: Vec<String> = ["size", "日本語", "plain.txt"]
        .iter()
        .map(|k| {
            ann.expect_line("table row", |l| {
                (l.starts_with('#') || l.starts_with('t')) && l.contains(k)
            })
        })
        .collect();
    // Where the `size` column starts, in terminal columns.
    let at = |row: &str, cell: &str| {
        let i = row
            .find(cell)
            .unwrap_or_else(|| panic!("no {cell:?} in {row:?}"));
        row[..i].width()
    };
    let size_col = at(&rows[0], "size");
    assert_eq!(at(&rows[1], "3 B"), size_col, "{rows:#?}");
    assert_eq!(at(&rows[2], "3 B"), size_col, "{rows:#?}");
    let _ = std::fs::remove_dir_all(&inbox);
}
