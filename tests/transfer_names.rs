//! Transfers are named `tN`, apart from connections, and both sides of one
//! transfer name it alike (the first chunk carries the sender's number, `T`).

mod common;

use common::*;
use std::net::SocketAddr;

struct Peer {
    p: Proc,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.p.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn filer(id: &str) -> Peer {
    let dir = tmp_path(&format!("names-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = Proc::spawn_cmd(lone_filer_command(
        id,
        &dir.join("inbox"),
        &["--accept-files", "yes"],
    ));
    let addr = p.listening_addr();
    Peer { p, addr, dir }
}

fn link(from: &mut Peer, to: &Peer, name: &str) {
    from.p.send_line(&format!("connect {}", to.addr));
    let want = format!(" is {name}");
    from.p
        .expect_line("identified", |l| l.starts_with("= #") && l.ends_with(&want));
}

#[test]
fn both_sides_name_a_transfer_alike_and_cancel_takes_the_name() {
    let mut alice = filer("alice");
    let mut bob = filer("bob");
    let carol = filer("carol");
    let small = alice.dir.join("small.txt");
    std::fs::write(&small, b"hello").unwrap();
    // Alice's t1 and t2 go to carol: bob has numbered nothing yet.
    link(&mut alice, &carol, "carol");
    alice.p.send_line(&format!(
        "sendfile carol '{}' '{}'",
        small.display(),
        small.display()
    ));
    alice
        .p
        .expect_line("t2 done", |l| l.starts_with("~ transfer t2 done"));
    // Alice's t3 goes to bob, who is stopped, so it stays in flight.
    let big = alice.dir.join("big.bin");
    std::fs::write(&big, random_bytes(48 << 20, 7)).unwrap();
    link(&mut alice, &bob, "bob");
    bob.p.signal(libc::SIGSTOP);
    alice
        .p
        .send_line(&format!("sendfile bob '{}'", big.display()));
    alice.p.expect_line("t3 started", |l| {
        l.starts_with("~ transfer t3 sending \"big.bin\"")
    });
    alice.p.send_line("transfers");
    alice.p.expect_line("alice's row", |l| {
        l.starts_with("t3 ") && l.contains("send") && l.contains("bob")
    });
    // Alice stops too, mid-file, so bob's cancel reaches her before the end.
    alice.p.signal(libc::SIGSTOP);
    bob.p.signal(libc::SIGCONT);
    bob.p.expect_line("bob's t3", |l| {
        l.starts_with("~ transfer t3 receiving \"big.bin\"")
    });
    bob.p.send_line("transfers");
    bob.p.expect_line("bob's row", |l| {
        l.starts_with("t3 ") && l.contains("recv") && l.contains("alice")
    });
    // The receiver cancels by the name; the sender hears of it under the same.
    bob.p.send_line("cancel t3");
    bob.p
        .expect_line("bob's failed", |l| l.starts_with("~ transfer t3 failed"));
    alice.p.signal(libc::SIGCONT);
    alice.p.expect_line("alice's failed", |l| {
        l.starts_with("~ transfer t3 failed") && l.contains("receiver: cancelled")
    });
}
