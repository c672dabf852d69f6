//! A source file that changes while it is sent (docs/PROTOCOL.md §5.4):
//! rewritten in the middle, appended to, or replaced by a new file under its
//! name, the transfer fails on both sides with `changed while being sent`,
//! and the receiver keeps nothing of it (no file, no part file), through the
//! real binary on loopback. The link is held by a relay after the first
//! MiBs, so the change lands before the sender reads that far.

mod common;

use common::relay::{Then, relay};
use common::*;
use serde_json::Value;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);
const SIZE: usize = 64 << 20;

struct Peer {
    p: Proc,
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
    let dir = tmp_path(&format!("changes-{tag}-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let inbox = dir.join("inbox");
    let mut cmd = lone_filer_command(id, &inbox, &["--json", "--accept-files", "yes"]);
    cmd.env("XDG_STATE_HOME", dir.join("state"));
    Peer {
        p: Proc::spawn_cmd(cmd),
        dir,
        inbox,
    }
}

fn ended(p: &Proc, dir: &str) -> Value {
    p.expect_json_within(
        &format!("{dir} transfer ends"),
        |v| {
            v["event"] == "transfer"
                && v["dir"] == dir
                && (v["state"] == "done" || v["state"] == "failed")
        },
        LONG,
    )
}

/// Files in `dir` and below (hidden ones too), as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// Sends a 64 MiB file from alice to bob through a relay held after 4 MiB,
/// applies `change` to the source while held, releases, and checks both
/// sides fail with `changed while being sent` and bob keeps nothing.
fn changed_while_sent(tag: &str, change: impl FnOnce(&Path)) {
    let bob = filer("bob", tag);
    let mut alice = filer("alice", tag);
    let src = alice.dir.join("data.bin");
    std::fs::write(&src, random_bytes(SIZE, 7)).unwrap();
    let go: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let r = relay(bob.p.listening_addr(), Some((4 << 20, Then::Hold(go))));
    alice.p.send_line(&format!("connect {}", r.addr));
    alice.p.expect_json("bob identified", |v| {
        v["event"] == "identified" && v["name"] == "bob"
    });
    alice
        .p
        .send_line(&format!("sendfile {} '{}'", r.addr, src.display()));
    assert!(
        wait_until(LONG, || r.forwarded.load(Ordering::Relaxed) >= 4 << 20),
        "the relay never reached 4 MiB\n{}",
        alice.p.context()
    );
    change(&src);
    go.store(true, Ordering::Release);
    let a = ended(&alice.p, "send");
    assert_eq!(a["state"], "failed", "{a}");
    let why = a["reason"].as_str().unwrap_or_default();
    assert!(why.contains("changed while being sent"), "{a}");
    let b = ended(&bob.p, "recv");
    assert_eq!(b["state"], "failed", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("changed while being sent"),
        "{b}"
    );
    // Nothing of it is kept: no file, no part file, no meta.
    assert!(
        wait_until(LONG, || files_under(&bob.inbox).is_empty()),
        "bob kept {:?}",
        files_under(&bob.inbox)
    );
}

#[test]
fn a_file_rewritten_in_the_middle_fails() {
    changed_while_sent("middle", |src| {
        let mut f = std::fs::OpenOptions::new().write(true).open(src).unwrap();
        f.seek(SeekFrom::Start(48 << 20)).unwrap();
        f.write_all(&random_bytes(1 << 20, 8)).unwrap();
    });
}

#[test]
fn a_file_appended_to_fails() {
    changed_while_sent("append", |src| {
        let mut f = std::fs::OpenOptions::new().append(true).open(src).unwrap();
        f.write_all(b"one more line\n").unwrap();
    });
}

#[test]
fn a_file_replaced_under_its_name_fails() {
    changed_while_sent("replace", |src| {
        let new = src.with_extension("new");
        std::fs::write(&new, random_bytes(SIZE, 9)).unwrap();
        std::fs::rename(&new, src).unwrap();
    });
}
