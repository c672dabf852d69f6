//! Folders (docs/PROTOCOL.md §5.7) through the real binary: a tree arrives
//! identical and appears in the inbox only once complete, hostile relative
//! paths from a raw peer create nothing outside the inbox, a folder is one
//! line in `transfers` that `cancel` stops as a whole, and a folder cut
//! mid-way and sent again sends only what is missing; its staging folder,
//! left untouched for `--keep-partial`, is removed at start.

mod common;

use common::relay::{Then, relay};
use common::*;
use serde_json::Value;
use sockmod::protocol::Header;
use std::collections::BTreeMap;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

fn filer(id: &str, tag: &str) -> Peer {
    let dir = tmp_path(&format!("dirs-{tag}-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let inbox = dir.join("inbox");
    let mut cmd = lone_filer_command(id, &inbox, &["--json", "--accept-files", "yes"]);
    cmd.env("XDG_STATE_HOME", dir.join("state"));
    let p = Proc::spawn_cmd(cmd);
    let addr = p.listening_addr();
    Peer {
        p,
        addr,
        dir,
        inbox,
    }
}

/// Every file (BLAKE3 of its bytes) and every folder under `root`, by
/// relative path; symlinks are listed as such.
fn digest_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn go(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = format!("{rel}{name}");
            let ft = std::fs::symlink_metadata(e.path()).unwrap().file_type();
            if ft.is_symlink() {
                out.insert(r, "symlink".into());
            } else if ft.is_dir() {
                out.insert(format!("{r}/"), "dir".into());
                go(&e.path(), &format!("{r}/"), out);
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                out.insert(r, blake3::hash(&bytes).to_hex().to_string());
            }
        }
    }
    go(root, "", &mut out);
    out
}

fn visible(dir: &Path) -> Vec<String> {
    dir_entries(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn ended(p: &Proc, dir: &str, name: &str) -> Value {
    p.expect_json_within(
        &format!("{dir} {name} ended"),
        |v| {
            v["event"] == "transfer"
                && v["dir"] == dir
                && v["name"] == name
                && (v["state"] == "done" || v["state"] == "failed")
        },
        LONG,
    )
}

fn connect(alice: &mut Peer, addr: SocketAddr) {
    alice.p.send_line(&format!("connect {addr}"));
    alice.p.expect_json("bob identified", |v| {
        v["event"] == "identified" && v["name"] == "bob"
    });
}

#[test]
fn a_tree_arrives_identical_and_only_once_complete() {
    let bob = filer("bob", "tree");
    let mut alice = filer("alice", "tree");
    let src = alice.dir.join("photos");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join("empty/inner")).unwrap();
    std::fs::create_dir_all(src.join("bulk")).unwrap();
    std::fs::write(src.join("a/b/c/deep.txt"), b"deep").unwrap();
    std::fs::write(src.join("été 日本.txt"), "non-ASCII".as_bytes()).unwrap();
    std::fs::write(src.join("a/big.bin"), random_bytes(3 << 20, 7)).unwrap();
    std::fs::write(src.join("a/zero"), b"").unwrap();
    for i in 0..2000 {
        std::fs::write(
            src.join(format!("bulk/f{i:04}.txt")),
            format!("file {i}\n").repeat(i % 7 + 1),
        )
        .unwrap();
    }
    // A symlink to a secret outside the tree: nothing of it is sent.
    let secret = alice.dir.join("secret.txt");
    std::fs::write(&secret, b"TOP SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, src.join("link")).unwrap();
    std::os::unix::fs::symlink(alice.dir.join("state"), src.join("dirlink")).unwrap();

    connect(&mut alice, bob.addr);
    let t0 = Instant::now();
    alice
        .p
        .send_line(&format!("sendfile {} '{}'", bob.addr, src.display()));
    // Polled during the transfer: only hidden entries until it is done.
    let mut polls = 0;
    let mut seen_staging = false;
    while !bob.p.out.all().iter().any(|l| {
        is_event_line(
            l,
            "transfer",
            &[("name", "photos".into()), ("state", "done".into())],
        )
    }) {
        assert!(t0.elapsed() < LONG, "{}", bob.p.out.tail(20));
        let v = visible(&bob.inbox);
        if !v.is_empty() {
            // The rename may have just happened, the event not yet read.
            assert_eq!(v, ["photos"]);
            break;
        }
        seen_staging |= bob.inbox.join(".sockmod-staging").exists();
        polls += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = ended(&bob.p, "recv", "photos");
    assert_eq!(v["state"], "done", "{v}");
    assert!(v["path"].as_str().unwrap().ends_with("inbox/photos"), "{v}");
    let s = ended(&alice.p, "send", "photos");
    assert_eq!(s["state"], "done", "{s}");
    figure("dirs_tree_2007_files_ms", t0.elapsed().as_millis());
    figure("dirs_polls_before_done", polls);
    assert!(seen_staging, "the staging folder was never seen");
    // Two notices, one per symlink.
    let notes = alice.p.out.count(|l| l.text.contains("a symlink"))
        + alice.p.err.count(|l| l.text.contains("a symlink"));
    assert_eq!(notes, 2, "{}", alice.p.out.tail(10));

    let mut want = digest_tree(&src);
    want.remove("link");
    want.remove("dirlink");
    let got = digest_tree(&bob.inbox.join("photos"));
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert!(got.contains_key("empty/inner/"));
    // The secret's bytes are nowhere in the inbox.
    assert!(
        !got.values()
            .any(|d| *d == blake3::hash(b"TOP SECRET").to_hex().to_string())
    );
    assert_eq!(visible(&bob.inbox), ["photos"]);
    assert!(dir_entries(&bob.inbox.join(".sockmod-staging")).is_empty());

    // Sent again: a new folder, never merged into the first.
    alice
        .p
        .send_line(&format!("sendfile {} '{}'", bob.addr, src.display()));
    let v = bob.p.expect_json_within(
        "second copy",
        |v| {
            v["event"] == "transfer"
                && v["name"] == "photos"
                && v["state"] == "done"
                && v["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("photos (1)"))
        },
        LONG,
    );
    assert_eq!(digest_tree(Path::new(v["path"].as_str().unwrap())), want);
}

fn offer(name: &str, path: &str, total: u64, t: u64) -> Header {
    let mut h = Header::new()
        .with("TP", "offer")
        .with("N", name)
        .with("L", total.to_string())
        .with("T", t.to_string());
    h.set("P", path);
    h.set("B", "0123abcd");
    h.set("F", "1");
    h.set("E", "0");
    h
}

#[test]
fn hostile_paths_create_nothing_outside_the_inbox() {
    let mut bob = filer("bob", "hostile");
    // The inbox's parent as it is before (the inbox made at start).
    assert!(wait_until(Duration::from_secs(10), || bob.inbox.exists()));
    let parent_before = dir_entries(&bob.dir);
    let mut c = Client::connect(bob.addr);
    let hostile = [
        "../x",
        "a/../../x",
        "/abs",
        "a//b",
        ".",
        "C:\\x",
        "a\u{202E}b/x",
        "a/\u{200B}/x",
        "../../../../tmp/sockmod-escape",
        "photos/../../x",
    ];
    for (i, p) in hostile.iter().enumerate() {
        c.send(&offer("x", p, 3, i as u64 + 1), b"");
        // The answer (liveness checks and replies to the earlier frames
        // may come first).
        let f = loop {
            let f = c.expect_frame();
            if f.header.get("TP") == Some("answer") {
                break f;
            }
        };
        assert_eq!(f.header.get("ok"), Some("no"), "{p}: {:?}", f.header);
        // Chunks sent anyway, with the path: stored flat, if at all.
        let mut h = Header::new()
            .with("TP", "file")
            .with("N", *p)
            .with("L", "3")
            .with("index", "-1");
        h.set("P", *p);
        c.send(&h, b"abc");
        // And empty folders.
        let mut d = Header::new()
            .with("TP", "dir")
            .with("N", "x")
            .with("L", "0");
        d.set("P", format!("{p}/"));
        d.set("B", "0123abcd");
        d.set("F", "0");
        d.set("E", "1");
        c.send(&d, b"");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(bob.p.is_running());
    assert_eq!(dir_entries(&bob.dir), parent_before);
    assert!(!Path::new("/tmp/sockmod-escape").exists());
    assert!(!bob.dir.parent().unwrap().join("x").exists());
    // Whatever was stored is a plain file right in the inbox.
    for n in visible(&bob.inbox) {
        let m = std::fs::symlink_metadata(bob.inbox.join(&n)).unwrap();
        assert!(m.is_file(), "{n}");
    }
    let staged = bob.inbox.join(".sockmod-staging");
    for e in dir_entries(&staged) {
        let inside = dir_entries(&staged.join(&e));
        assert!(inside.is_empty(), "something staged: {e}/{inside:?}");
    }
}

#[test]
fn a_folder_is_one_line_and_cancel_stops_it() {
    let bob = filer("bob", "cancel");
    let mut alice = filer("alice", "cancel");
    let src = alice.dir.join("many");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("f{i:02}.bin")), random_bytes(4 << 20, i)).unwrap();
    }
    // The link is held after 8 MiB, so the folder is mid-way when cancelled.
    let go: &'static std::sync::atomic::AtomicBool =
        Box::leak(Box::new(std::sync::atomic::AtomicBool::new(false)));
    let r = relay(bob.addr, Some((8 << 20, Then::Hold(go))));
    connect(&mut alice, r.addr);
    alice
        .p
        .send_line(&format!("sendfile {} '{}'", r.addr, src.display()));
    assert!(wait_until(TIMEOUT, || r.forwarded.load(Ordering::Relaxed) >= 8 << 20));
    alice.p.send_line("transfers");
    let v = alice
        .p
        .expect_json("transfers list", |v| v["event"] == "transfers");
    let list = v["transfers"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["name"], "many");
    assert_eq!(list[0]["files"], 40);
    let id = list[0]["transfer"].as_u64().unwrap();
    alice.p.send_line(&format!("transfers t{id}"));
    let v = alice
        .p
        .expect_json("expanded", |v| v["event"] == "transfers");
    assert_eq!(v["transfers"].as_array().unwrap().len(), 41, "{v}");
    alice.p.send_line(&format!("cancel t{id}"));
    let v = ended(&alice.p, "send", "many");
    assert_eq!(v["state"], "failed");
    assert_eq!(v["reason"], "cancelled");
    go.store(true, Ordering::Release);
    let v = ended(&bob.p, "recv", "many");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(visible(&bob.inbox).is_empty());
    alice.p.send_line("transfers");
    let v = alice
        .p
        .expect_json("transfers after", |v| v["event"] == "transfers");
    let list = v["transfers"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["state"], "failed");
}

#[test]
fn a_folder_cut_mid_way_and_sent_again_sends_only_what_is_missing() {
    const FILES: u64 = 20;
    const SIZE: u64 = 1 << 20;
    // Small files too (sent with `go:yes` once the folder is taken, §5.7):
    // those held are answered `have:yes` and their chunks dropped.
    const SMALL: u64 = 40;
    const SMALL_SIZE: u64 = 4096;
    let total = FILES * SIZE + SMALL * SMALL_SIZE;
    let bob = filer("bob", "again");
    let mut alice = filer("alice", "again");
    let src = alice.dir.join("album");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..FILES {
        let at = if i % 2 == 0 { "" } else { "sub/" };
        std::fs::write(
            src.join(format!("{at}f{i:02}.bin")),
            random_bytes(SIZE as usize, 100 + i),
        )
        .unwrap();
    }
    std::fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..SMALL {
        let name = src.join(format!("small/s{i:02}.txt"));
        std::fs::write(name, random_bytes(SMALL_SIZE as usize, 300 + i)).unwrap();
    }

    // The connection is cut once about half the folder went through.
    let first_relay = relay(bob.addr, Some((total / 2, Then::Cut)));
    let (r1, first) = (first_relay.addr, first_relay.forwarded);
    connect(&mut alice, r1);
    alice
        .p
        .send_line(&format!("sendfile {r1} '{}'", src.display()));
    let v = ended(&alice.p, "send", "album");
    assert_eq!(v["state"], "failed", "{v}");
    let v = ended(&bob.p, "recv", "album");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(visible(&bob.inbox).is_empty());
    let staged = bob.inbox.join(".sockmod-staging");
    let batches = dir_entries(&staged);
    assert_eq!(batches.len(), 1, "{batches:?}");
    let done_list =
        std::fs::read_to_string(staged.join(&batches[0]).join(".sockmod-done")).unwrap_or_default();
    let held = done_list.lines().count() as u64;
    assert!((FILES / 4..FILES).contains(&held), "{held} files held");
    // Bytes held: the listed files' sizes.
    let held_bytes: u64 = done_list
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(_, rel)| {
            let rel = rel.strip_prefix("album/").unwrap_or(rel);
            std::fs::metadata(src.join(rel)).unwrap().len()
        })
        .sum();

    // Sent again through a counting relay: the files held are skipped.
    let second_relay = relay(bob.addr, None);
    let (r2, again) = (second_relay.addr, second_relay.forwarded);
    connect(&mut alice, r2);
    alice
        .p
        .send_line(&format!("sendfile {r2} '{}'", src.display()));
    let v = ended(&bob.p, "recv", "album");
    assert_eq!(v["state"], "done", "{v}");
    let path = PathBuf::from(v["path"].as_str().unwrap());
    assert_eq!(path, bob.inbox.join("album"));
    let s = ended(&alice.p, "send", "album");
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(digest_tree(&path), digest_tree(&src));
    assert_eq!(visible(&bob.inbox), ["album"]);
    assert!(dir_entries(&staged).is_empty());
    let again = again.load(Ordering::Relaxed);
    let missing = total - held_bytes;
    // What was missing, and no more than one file (the one cut mid-way,
    // resumed) besides the frames' headers.
    assert!(
        again <= missing + SIZE / 8,
        "{again} bytes for {missing} missing"
    );
    assert!(again < total * 3 / 4, "{again} of {total}");
    figure(
        "first try, bytes through the relay",
        first.load(Ordering::Relaxed),
    );
    figure("files held after the cut", format!("{held} of {FILES}"));
    figure(
        "bytes sent again (of the folder's)",
        format!("{again} of {total} ({}%)", again * 100 / total),
    );
}

#[test]
fn a_staging_folder_untouched_for_keep_partial_is_removed_at_start() {
    let dir = tmp_path("dirs-expire");
    let _ = std::fs::remove_dir_all(&dir);
    let inbox = dir.join("inbox");
    let staged = inbox.join(".sockmod-staging");
    let batch = staged.join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(batch.join("photos/a")).unwrap();
    std::fs::write(batch.join("photos/a/x.txt"), b"half a folder").unwrap();
    std::fs::write(batch.join(".sockmod-done"), b"").unwrap();
    let start = |extra: &[&str]| {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let mut cmd = lone_filer_command("bob", &inbox, &args);
        cmd.env("XDG_STATE_HOME", dir.join("state"));
        let p = Proc::spawn_cmd(cmd);
        p.listening_addr();
        p
    };
    // Under the default (a week), it is kept for a later send.
    let mut p = start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    p.kill();
    assert!(batch.join("photos/a/x.txt").exists());
    std::thread::sleep(Duration::from_millis(20));
    let mut p = start(&["--keep-partial", "10ms"]);
    assert!(
        wait_until(Duration::from_secs(10), || !staged.exists()),
        "{:?}",
        dir_entries(&staged)
    );
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
