//! No lost wake-ups: an answer a peer writes at once is read at once, never
//! when some timer happens to wake the loop. The case that showed it: the first
//! `sendfile` to a freshly dialled filer, whose confirmation went unread until
//! a 2 s timer fired (9 of 10 first sends waited exactly 1,999 ms).

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;

fn lone(id: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let inbox = tmp_path(&format!("inbox-{id}"));
    let mut args = vec!["--json", "--accept-files", "yes"];
    args.extend_from_slice(extra);
    let p = Proc::spawn_cmd(lone_filer_command(id, &inbox, &args));
    let a = p.listening_addr();
    (p, a)
}

/// 20 first `sendfile`s of a small file, each to a freshly started and freshly
/// dialled filer, each complete on the receiver's confirmation (the `done` event
/// names the stored file, which only the confirmation carries). The elapsed time
/// is printed; with `SOCKMOD_TIMING=1` it must be under a second every time.
#[test]
fn first_sendfiles_to_fresh_peers_complete_on_the_confirmation() {
    let src = tmp_path("wakeup-small.txt");
    std::fs::write(&src, b"a small file, sent first thing on a fresh link\n").unwrap();
    let mut elapsed = Vec::new();
    for round in 0..20 {
        let (bob, bob_addr) = lone(&format!("bob{round}"), &[]);
        let (mut alice, _) = lone(&format!("alice{round}"), &[]);
        alice.send_line(&format!("connect {bob_addr}"));
        alice.send_line(&format!("sendfile {bob_addr} {}", src.display()));
        let done = alice.expect_json("alice's send ends", |v| {
            v["event"] == "transfer"
                && v["dir"] == "send"
                && (v["state"] == "done" || v["state"] == "failed")
        });
        assert_eq!(done["state"], "done", "round {round}: {done}");
        assert!(
            done["stored"].is_string(),
            "round {round}: done without the receiver's confirmation: {done}"
        );
        bob.expect_json("bob stored it", |v: &Value| {
            v["event"] == "transfer" && v["dir"] == "recv" && v["state"] == "done"
        });
        elapsed.push(done["elapsed_ms"].as_u64().unwrap_or(u64::MAX));
    }
    elapsed.sort_unstable();
    figure(
        "first sendfile to a fresh peer, done after (ms, sorted)",
        format!("{elapsed:?}"),
    );
    if timing_checked() {
        assert!(
            elapsed.iter().all(|ms| *ms < 1000),
            "a first send waited for a timer: {elapsed:?}"
        );
    }
}
