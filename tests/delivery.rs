//! Messages arrive whole, in order and counted, through the real binary on
//! loopback, along the optimised hot paths (see `cargo bench`): frames from
//! several peers handed on in small batches with the right addresses (the JSON
//! renderer's per-peer address cache), `--quiet` formatting nothing yet counting
//! every message, and many broadcasts queued per connection per turn. No
//! timings here: only what must stay true.

mod common;

use common::*;
use serde_json::Value;
use sockmod::protocol::{Header, encode};
use std::io::Write;
use std::time::Duration;

fn messages_from(p: &Proc, peer: u64) -> Vec<Value> {
    p.out
        .all()
        .into_iter()
        .filter_map(|l| l.json)
        .filter(|v| v["event"] == "message" && v["peer"] == peer)
        .collect()
}

/// `n` frames `seq:I` with bodies of varied length, with a bare `TP:Check` probe
/// after every tenth (probes are never messages).
fn burst(tag: &str, n: usize) -> Vec<u8> {
    let mut all = Vec::new();
    for i in 0..n {
        let h = Header::new().with("seq", i.to_string()).with("tag", tag);
        all.extend(encode(&h, format!("{tag}{i}").repeat(i % 4).as_bytes()).unwrap());
        if i % 10 == 9 {
            all.extend(encode(&Header::new().with("TP", "Check"), b"").unwrap());
        }
    }
    all
}

#[test]
fn bursts_from_two_peers_arrive_whole_in_order_with_the_right_addresses() {
    let (mut srv, addr) = serve(&[]);
    let mut a = Client::connect(addr);
    let ida = srv.expect_connected(&a);
    let mut b = Client::connect(addr);
    let idb = srv.expect_connected(&b);
    const N: usize = 3000;
    let (fa, fb) = (burst("a", N), burst("b", N));
    // Interleave the two peers in chunks that cut frames anywhere, so batches of
    // decoded frames alternate between peers and frames span reads.
    let mut pa = 0;
    let mut pb = 0;
    let mut step = 1;
    while pa < fa.len() || pb < fb.len() {
        step = step * 7 % 4093 + 1;
        let ea = (pa + step).min(fa.len());
        a.stream.write_all(&fa[pa..ea]).unwrap();
        pa = ea;
        let eb = (pb + step * 3).min(fb.len());
        b.stream.write_all(&fb[pb..eb]).unwrap();
        pb = eb;
    }
    for (id, client, tag) in [(ida, &a, "a"), (idb, &b, "b")] {
        assert!(
            wait_until(TIMEOUT, || messages_from(&srv, id).len() >= N),
            "peer {id} got {} of {N}\n{}",
            messages_from(&srv, id).len(),
            srv.context()
        );
        let want_addr = client.local_addr().to_string();
        for (i, v) in messages_from(&srv, id).iter().enumerate() {
            assert_eq!(v["header"]["seq"], i.to_string(), "order of {tag}: {v}");
            assert_eq!(v["header"]["tag"], tag, "{v}");
            assert_eq!(v["addr"], want_addr.as_str(), "address of {tag}: {v}");
            assert_eq!(v["body"], format!("{tag}{i}").repeat(i % 4), "{v}");
        }
        assert_eq!(
            messages_from(&srv, id).len(),
            N,
            "no probe shown as message"
        );
    }
    srv.send_line("list");
    let v = srv.expect_json("list", |v| v["event"] == "list");
    for row in v["conns"].as_array().unwrap() {
        assert_eq!(row["msgs_in"], N as u64, "{row}");
    }
}

#[test]
fn quiet_mode_shows_no_message_but_list_counts_every_one() {
    let (mut srv, addr) = serve(&["--quiet"]);
    let mut c = Client::connect(addr);
    let id = srv.expect_connected(&c);
    const N: usize = 2000;
    c.send_raw(&burst("q", N));
    let counted = |srv: &mut Proc| {
        srv.send_line("list");
        let v = srv.expect_json("list", |v| v["event"] == "list");
        v["conns"][0]["msgs_in"].as_u64().unwrap_or(0)
    };
    let mut last = 0;
    assert!(
        wait_until(TIMEOUT, || {
            last = counted(&mut srv);
            last == N as u64
        }),
        "list counted {last} of {N}"
    );
    assert!(messages_from(&srv, id).is_empty(), "{}", srv.context());
    // And the connection still works both ways.
    srv.send_line(&format!("send {id} still here"));
    assert_eq!(info(&c.expect_frame()), "still here");
}

#[test]
fn many_broadcasts_reach_every_client_whole_and_in_order() {
    let (mut srv, addr) = serve(&["--quiet"]);
    let mut clients: Vec<Client> = (0..25).map(|_| Client::connect(addr)).collect();
    for c in &clients {
        srv.expect_connected(c);
    }
    // One write of many commands: the loop takes them in one turn, so each client
    // has many frames queued before it is written (each connection once per turn).
    const K: usize = 150;
    let mut cmds = String::new();
    for i in 0..K {
        cmds.push_str(&format!(
            "bc -H n={i} -b {}\n",
            "x".repeat(i * 13 % 3000 + 1)
        ));
        if i % 50 == 0 {
            cmds.push_str("send 3 extra\n");
        }
    }
    srv.write_stdin(cmds.as_bytes());
    for (ci, c) in clients.iter_mut().enumerate() {
        let extra = if ci == 2 { K.div_ceil(50) } else { 0 };
        let frames = c.expect_frames(K + extra, TIMEOUT);
        let mut n = 0;
        for m in frames {
            if info(&m) == "extra" {
                continue;
            }
            assert_eq!(
                m.header.get("n"),
                Some(n.to_string().as_str()),
                "client {ci}"
            );
            assert_eq!(m.body.len(), n * 13 % 3000 + 1, "client {ci}, frame {n}");
            n += 1;
        }
        assert_eq!(n, K);
        c.expect_silence(Duration::from_millis(50));
    }
}

/// A filer's listener tells a plaintext peer from a TLS one by its first bytes;
/// the peer's `connected` event still comes before its first message, even when
/// both arrive in one write.
#[test]
fn a_plaintext_peer_is_connected_before_its_first_message() {
    for round in 0..5 {
        let inbox = tmp_path(&format!("inbox-order-{round}"));
        let p = Proc::spawn_cmd(lone_filer_command("ann", &inbox, &["--json"]));
        let addr = p.listening_addr();
        let mut c = Client::connect(addr);
        let mut both = raw_frame("CL:0;TP:Check", b"");
        both.extend(raw_frame("CL:0;info:first words", b""));
        c.send_raw(&both);
        p.expect_json("the message", |v| {
            v["event"] == "message" && v["header"]["info"] == "first words"
        });
        let events: Vec<String> = p
            .out
            .all()
            .into_iter()
            .filter_map(|l| l.json)
            .filter_map(|v| v["event"].as_str().map(str::to_string))
            .filter(|e| e == "connected" || e == "message")
            .collect();
        assert_eq!(events, ["connected", "message"], "round {round}");
    }
}
