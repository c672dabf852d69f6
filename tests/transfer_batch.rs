//! `sendfile` at the prompt as a user types it, through the real binary:
//! `*` patterns expanded as a shell would (and one that matches nothing
//! refused), one summary line for a batch of files, and a command that fails
//! validation has no side effect (the roster peer is not even dialled).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn json_filer(id: &str, ips: std::net::SocketAddr, extra: &[&str]) -> Proc {
    let mut args = vec!["--accept-files", "yes"];
    args.extend_from_slice(extra);
    spawn_filer(id, ips, "200ms", &args).0
}

#[test]
fn patterns_expand_a_batch_ends_with_one_summary_and_a_bad_command_dials_nobody() {
    let (_ips, ips_addr) = spawn_ipserver("127.0.0.1:0", "200ms", &[]);
    let mut alice = json_filer("alice", ips_addr, &[]);
    let bob = json_filer("bob", ips_addr, &[]);
    alice.expect_json("bob online", |v| {
        v["event"] == "peer_online" && v["id"] == "bob"
    });
    let dir = tmp_path("batch-src");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, len) in [("a.txt", 10), ("b.txt", 2000), ("c.bin", 30)] {
        std::fs::write(dir.join(name), random_bytes(len, len as u64)).unwrap();
    }

    // A pattern that matches nothing, and a missing file: refused before
    // anything happens, bob not dialled.
    alice.send_line(&format!("sendfile bob {}/*.zzz", dir.display()));
    let e = alice.expect_json("no match", |v| v["event"] == "error");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("*.zzz") && msg.contains("no file matches"),
        "{e}"
    );
    alice.send_line(&format!("sendfile bob {}/missing.txt", dir.display()));
    let e = alice.expect_json("missing", |v| {
        v["event"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("missing.txt"))
    });
    assert_eq!(e["command"], "sendfile", "{e}");
    alice.send_line("list");
    let v = alice.expect_json("list", |v| v["event"] == "list");
    let to_bob = v["conns"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["name"] == "bob").count())
        .unwrap_or(0);
    assert_eq!(to_bob, 0, "a refused sendfile dialled bob: {v}");
    assert_eq!(
        bob.count_events("connected", &[]),
        0,
        "bob was dialled\n{}",
        bob.context()
    );

    // `*.txt` is the two text files, sent as one batch with one summary.
    alice.send_line(&format!("sendfile bob {}/*.txt", dir.display()));
    let b = alice.expect_json_within("the batch summary", |v| v["event"] == "batch", LONG);
    assert_eq!(b["files"], 2, "{b}");
    assert_eq!(b["sent"], 2, "{b}");
    assert_eq!(b["failed"], 0, "{b}");
    assert_eq!(b["bytes"], 2010, "{b}");
    for name in ["a.txt", "b.txt"] {
        bob.expect_json_within(
            &format!("{name} received"),
            |v| v["event"] == "transfer" && v["name"] == name && v["state"] == "done",
            LONG,
        );
    }
    let names: Vec<Value> = alice
        .out
        .all()
        .into_iter()
        .filter_map(|l| l.json)
        .filter(|v| v["event"] == "transfer" && v["state"] == "started")
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(names, ["a.txt", "b.txt"], "c.bin is not sent");
    let _ = std::fs::remove_dir_all(&dir);
}
