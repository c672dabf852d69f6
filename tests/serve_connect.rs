//! End-to-end tests of `sockmod serve` and `sockmod connect` through the real
//! binary, on 127.0.0.1 with system-chosen ports (README: "The modes",
//! "Command language", "Events and `--json`" and "Wire protocol").

mod common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use sockmod::protocol::{Header, encode};
use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

fn is_event(v: &Value, event: &str, peer: u64) -> bool {
    v["event"] == event && v["peer"] == peer
}

#[test]
fn serve_routes_broadcast_multicast_send_list_and_close() {
    let (mut srv, addr) = serve(&[]);
    let mut c = [
        Client::connect(addr),
        Client::connect(addr),
        Client::connect(addr),
    ];
    // Connected one after the other, so ids follow the order of connection.
    let mut ids = Vec::new();
    for cl in &c {
        ids.push(srv.expect_connected(cl));
    }
    assert_eq!(ids, [1, 2, 3], "ids in order of appearance");

    srv.send_line("broadcast hello all");
    for cl in &mut c {
        let m = cl.expect_frame();
        assert_eq!(info(&m), "hello all");
        assert!(m.body.is_empty());
    }

    srv.send_line("multicast 1,3 -H k=v -b body13");
    for i in [0, 2] {
        let m = c[i].expect_frame();
        assert_eq!(m.header.get("k"), Some("v"));
        assert_eq!(m.body, b"body13");
    }
    c[1].expect_silence(QUIET);

    srv.send_line("send 2 only two");
    assert_eq!(info(&c[1].expect_frame()), "only two");
    c[0].expect_silence(QUIET);
    c[2].expect_silence(QUIET);

    // Per-connection order is kept, so a marker broadcast proves nothing extra was
    // queued for anyone before it.
    srv.send_line("bc marker");
    for cl in &mut c {
        assert_eq!(info(&cl.expect_frame()), "marker");
    }

    // With --json, `list` answers with one JSON line.
    srv.send_line("list");
    let v = srv.expect_json("list", |v| v["event"] == "list");
    let conns = v["conns"].as_array().expect("conns array");
    assert_eq!(conns.len(), 3, "{v}");
    for (cl, id) in c.iter().zip(&ids) {
        let a = cl.local_addr().to_string();
        let row = conns
            .iter()
            .find(|r| r["addr"] == a.as_str())
            .unwrap_or_else(|| panic!("no list row for {a}: {v}"));
        assert_eq!(row["peer"], *id, "{row}");
        assert_eq!(row["dir"], "in", "{row}");
        assert_eq!(row["state"], "open", "{row}");
    }

    srv.send_line("close 2");
    let v = srv.expect_json("closed #2", |v| is_event(v, "closed", 2));
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .contains("closed by user"),
        "{v}"
    );
    assert_eq!(v["alive"], 2, "{v}");
    assert!(c[1].wait_closed(TIMEOUT), "#2 should see EOF after close 2");

    srv.send_line("bc after close");
    for i in [0, 2] {
        assert_eq!(info(&c[i].expect_frame()), "after close");
    }
    assert_eq!(
        srv.out
            .count(|l| l.json.as_ref().is_some_and(|v| v["event"] == "closed")),
        1,
        "only #2 closed\n{}",
        srv.context()
    );
    assert!(srv.is_running());
}

#[test]
fn ten_mib_binary_body_from_a_client_arrives_intact() {
    let (srv, addr) = serve(&["--body-format", "base64"]);
    let mut cl = Client::connect(addr);
    let id = srv.expect_connected(&cl);
    let body = random_bytes(10 << 20, 1);
    cl.send(&Header::new().with("name", "blob.bin"), &body);
    let v = srv.expect_json_within(
        "10 MiB message",
        |v| is_event(v, "message", id),
        Duration::from_secs(30),
    );
    assert_eq!(v["body_len"], 10 << 20);
    assert_eq!(v["header"], json!({"name": "blob.bin"}));
    let got = base64::engine::general_purpose::STANDARD
        .decode(v["body_base64"].as_str().expect("body_base64"))
        .expect("valid base64");
    assert!(got == body, "body differs (got {} bytes)", got.len());
}

#[test]
fn ten_mib_file_sent_with_send_f_arrives_intact() {
    let (mut srv, addr) = serve(&[]);
    let mut cl = Client::connect(addr);
    let id = srv.expect_connected(&cl);
    let body = random_bytes(10 << 20, 2);
    let path = tmp_path("ten-mib.bin");
    std::fs::write(&path, &body).expect("write temp file");
    srv.send_line(&format!("send {id} -H name=f -f {}", path.display()));
    let m = cl.expect_frames(1, Duration::from_secs(30)).remove(0);
    let _ = std::fs::remove_file(&path);
    assert_eq!(m.header.get("name"), Some("f"));
    assert_eq!(m.body.len(), body.len());
    assert!(m.body == body, "file body differs");
    assert_eq!(
        srv.err.count(|l| l.text.starts_with("error")),
        0,
        "{}",
        srv.context()
    );
}

#[test]
fn split_frames_and_coalesced_frames_both_decode() {
    let (srv, addr) = serve(&[]);
    let mut a = Client::connect(addr);
    let ida = srv.expect_connected(&a);
    let mut b = Client::connect(addr);
    let idb = srv.expect_connected(&b);

    // One frame, one byte per write (nodelay): the server sees it in pieces.
    let frame = encode(
        &Header::new().with("info", "split").with("k", "v"),
        b"hello",
    )
    .unwrap();
    for byte in &frame {
        a.stream.write_all(std::slice::from_ref(byte)).unwrap();
        a.stream.flush().unwrap();
        // Spread the bytes out so reads really are partial (not a synchronisation).
        std::thread::sleep(Duration::from_millis(2));
    }
    let v = srv.expect_json("split frame", |v| is_event(v, "message", ida));
    assert_eq!(v["header"], json!({"info": "split", "k": "v"}));
    assert_eq!(v["body"], "hello");
    assert_eq!(v["body_len"], 5);

    // Many frames in one write.
    const N: usize = 300;
    let mut all = Vec::new();
    for i in 0..N {
        all.extend(
            encode(
                &Header::new().with("n", i.to_string()),
                format!("b{i}").as_bytes(),
            )
            .unwrap(),
        );
    }
    b.send_raw(&all);
    for i in 0..N {
        let v = srv.expect_json(&format!("coalesced frame {i}"), |v| {
            is_event(v, "message", idb)
        });
        assert_eq!(v["header"]["n"], i.to_string(), "frames in order");
        assert_eq!(v["body"], format!("b{i}"));
    }
    assert_eq!(
        srv.out
            .count(|l| l.json.as_ref().is_some_and(|v| v["event"] == "message")),
        N + 1
    );
}

#[test]
fn invalid_frame_closes_only_its_sender() {
    let (mut srv, addr) = serve(&[]);
    let mut bad = Client::connect(addr);
    let idbad = srv.expect_connected(&bad);
    let mut good = Client::connect(addr);
    let idgood = srv.expect_connected(&good);

    bad.send_raw(b"\x06\x00CL:abc");
    let v = srv.expect_json("closed bad client", |v| is_event(v, "closed", idbad));
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(reason.contains("protocol error"), "reason: {reason:?}");
    assert_eq!(v["alive"], 1);
    assert!(bad.wait_closed(TIMEOUT), "bad client should see EOF");

    srv.send_line("bc still here");
    assert_eq!(info(&good.expect_frame()), "still here");
    good.send_info("me too");
    let m = srv.expect_json("message from good client", |v| {
        is_event(v, "message", idgood)
    });
    assert_eq!(m["header"]["info"], "me too");
    assert!(
        srv.out
            .all()
            .iter()
            .filter_map(|l| l.json.as_ref())
            .all(|v| !is_event(v, "closed", idgood)),
        "good client must stay\n{}",
        srv.context()
    );
}

/// `--max-queue 64KiB`: client A never reads, client B reads everything. The
/// commands are paced by B's reception (each `bc` is sent once B got the previous
/// one), so B's queue never holds more than one frame; A's grows once the kernel
/// buffers are full and A is dropped. B gets every frame, in order.
#[test]
fn slow_consumer_is_dropped_and_a_reading_client_gets_everything() {
    // Commands wait while the slow client's queue is over 3/4 of --max-queue,
    // until --write-timeout drops it.
    let (mut srv, addr) = serve(&["--max-queue", "64KiB", "--write-timeout", "1s"]);
    let slow = Client::connect(addr); // never reads
    let idslow = srv.expect_connected(&slow);
    let mut fast = Client::connect(addr);
    let idfast = srv.expect_connected(&fast);

    const BODY: usize = 8 << 10;
    // Enough to fill any loopback buffers (32 MiB); in practice A goes far sooner.
    const MAX: usize = 4096;
    let text = "x".repeat(BODY);
    let closed_slow = |l: &Line| {
        l.json
            .as_ref()
            .is_some_and(|v| is_event(v, "closed", idslow))
    };
    let mut sent = 0;
    let mut after_drop = 0;
    while sent < MAX && after_drop < 50 {
        srv.send_line(&format!("bc -H n={sent} -b {text}"));
        let m = fast.expect_frame();
        assert_eq!(m.header.get("n"), Some(sent.to_string().as_str()));
        assert_eq!(m.body.len(), BODY);
        sent += 1;
        if srv.out.count(closed_slow) > 0 {
            after_drop += 1;
        }
    }
    let v = srv.expect_json("slow consumer dropped", |v| is_event(v, "closed", idslow));
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(reason.contains("slow consumer"), "reason: {reason:?}");
    assert_eq!(v["alive"], 1, "{v}");
    assert_eq!(
        srv.out.count(|l| l
            .json
            .as_ref()
            .is_some_and(|v| is_event(v, "closed", idfast))),
        0,
        "the reading client must stay\n{}",
        srv.context()
    );
    assert!(srv.is_running());
    drop(slow);
}

/// The same with the commands piped in one burst (as a script would): the reading
/// client must still get every frame.
#[test]
fn slow_consumer_burst_of_broadcasts_keeps_the_reading_client() {
    let (mut srv, addr) = serve(&["--max-queue", "64KiB", "--write-timeout", "1s"]);
    let slow = Client::connect(addr); // never reads
    let idslow = srv.expect_connected(&slow);
    let mut fast = Client::connect(addr);
    let idfast = srv.expect_connected(&fast);

    // 24 MiB in all: far more than the kernel's loopback buffers can hide.
    const N: usize = 400;
    const BODY: usize = 60 << 10;
    let reader = std::thread::spawn(move || {
        let got = fast.read_frames(N, Duration::from_secs(30));
        (fast, got)
    });
    let text = "x".repeat(BODY);
    let mut script = String::new();
    for i in 0..N {
        script.push_str(&format!("bc -H n={i} -b {text}\n"));
    }
    srv.write_stdin(script.as_bytes());

    let v = srv.expect_json("slow consumer dropped", |v| is_event(v, "closed", idslow));
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(reason.contains("slow consumer"), "reason: {reason:?}");

    let (_fast, got) = reader.join().expect("reader thread");
    let fast_closed = srv
        .out
        .all()
        .iter()
        .filter_map(|l| l.json.clone())
        .find(|v| is_event(v, "closed", idfast));
    assert!(
        fast_closed.is_none(),
        "the reading client was dropped too, after {} of {N} frames: {fast_closed:?}",
        got.len()
    );
    assert_eq!(got.len(), N, "fast client got {} of {N} frames", got.len());
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.header.get("n"), Some(i.to_string().as_str()));
        assert_eq!(m.body.len(), BODY);
    }
    drop(slow);
}

#[test]
fn piped_connect_sends_and_exits_0() {
    let (srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&["connect", &addr.to_string()]);
    cli.send_line("send * hi");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 0, "{}", cli.context());
    let v = srv.expect_event("message", &[]);
    assert_eq!(v["header"], json!({"info": "hi"}));
    assert_eq!(v["dir"], "in");
    assert_eq!(v["body_len"], 0);
}

#[test]
fn connect_to_a_refused_port_exits_1() {
    let addr = refused_addr();
    let mut cli = Proc::spawn(&["connect", &addr.to_string()]);
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    let err = cli.err.texts().join("\n");
    assert!(err.contains("connection refused"), "stderr: {err}");
}

#[test]
fn a_bad_dial_target_is_named_in_the_error() {
    // The command line refuses such a port (exit 2); so does the `connect`
    // command, before dialling anything (not a late "cannot resolve").
    let (mut cli, _) = serve(&[]);
    cli.send_line("connect 127.0.0.1:99999");
    cli.expect_err_line("the error on stderr", |l| {
        l == r#"error: connect: "127.0.0.1:99999": the port must be a number from 0 to 65535"#
    });
    cli.send_line("connect nonsense");
    cli.expect_err_line("the error on stderr", |l| {
        l == r#"error: connect: "nonsense" is not HOST:PORT"#
    });
    assert_eq!(
        cli.count_events("connect_failed", &[]),
        0,
        "{}",
        cli.context()
    );
    cli.send_line("quit");
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
}

#[test]
fn connect_unknown_command_errors_sends_nothing_and_exits_1() {
    let (srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&["connect", &addr.to_string()]);
    cli.send_line("frobnicate");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    let err = cli.err.texts().join("\n");
    assert!(
        err.contains("error") && err.contains("unknown command") && err.contains("frobnicate"),
        "stderr: {err}"
    );
    // The server saw the connection come and go, and no message.
    let v = srv.expect_event("connected", &[]);
    let id = v["peer"].as_u64().unwrap();
    srv.expect_json("closed", |v| is_event(v, "closed", id));
    assert_eq!(
        srv.out
            .count(|l| l.json.as_ref().is_some_and(|v| v["event"] == "message")),
        0,
        "{}",
        srv.context()
    );
}

fn check_json_lines(p: &Proc) -> Vec<Value> {
    let mut events = Vec::new();
    for l in p.out.all() {
        let v = l
            .json
            .unwrap_or_else(|| panic!("stdout line is not JSON: {:?}\n{}", l.text, p.context()));
        assert!(v["event"].is_string(), "no event field: {v}");
        events.push(v);
    }
    events
}

#[test]
fn json_output_is_one_event_object_per_line() {
    let (mut srv, addr) = serve(&[]);
    let mut cl = Client::connect(addr);
    let id = srv.expect_connected(&cl);
    cl.send(
        &Header::new().with("info", "hello").with("x", "a:b;c"),
        b"text body",
    );
    cl.send(&Header::new().with("kind", "bin"), &[0xff, 0x00, 0xfe]);
    let mut cli = Proc::spawn(&["connect", "--json", &addr.to_string()]);
    cli.send_line("send * -H k=v -b from-connect");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 0, "{}", cli.context());
    srv.send_line(&format!("close {id}"));
    // Two closes: the piped client and the raw one.
    assert_eq!(
        srv.out.wait_count(
            |l| l.json.as_ref().is_some_and(|v| v["event"] == "closed"),
            2,
            TIMEOUT
        ),
        2,
        "{}",
        srv.context()
    );
    assert_eq!(
        srv.out.wait_count(
            |l| l.json.as_ref().is_some_and(|v| v["event"] == "message"),
            3,
            TIMEOUT
        ),
        3,
        "{}",
        srv.context()
    );

    let events = check_json_lines(&srv);
    let by = |e: &str| {
        events
            .iter()
            .filter(|v| v["event"] == e)
            .collect::<Vec<_>>()
    };
    assert_eq!(by("listening").len(), 1);
    assert_eq!(by("listening")[0]["addr"], addr.to_string());
    let connected = by("connected");
    assert_eq!(connected.len(), 2);
    for (n, v) in connected.iter().enumerate() {
        assert!(v["peer"].is_u64(), "{v}");
        assert!(
            v["addr"]
                .as_str()
                .is_some_and(|a| a.parse::<std::net::SocketAddr>().is_ok()),
            "{v}"
        );
        assert_eq!(v["dir"], "in", "{v}");
        assert_eq!(v["alive"], n as u64 + 1, "{v}");
    }
    for v in by("closed") {
        assert!(
            v["peer"].is_u64() && v["addr"].is_string() && v["dir"] == "in",
            "{v}"
        );
        assert!(v["reason"].is_string() && v["alive"].is_u64(), "{v}");
    }
    let msgs = by("message");
    for v in &msgs {
        assert!(
            v["peer"].is_u64() && v["addr"].is_string() && v["dir"] == "in",
            "{v}"
        );
        assert!(
            v["header"].is_object() && v["header"].get("CL").is_none(),
            "{v}"
        );
        assert!(v["body_len"].is_u64(), "{v}");
    }
    let text = msgs
        .iter()
        .find(|v| v["header"]["info"] == "hello")
        .expect("text message");
    assert_eq!(text["header"], json!({"info": "hello", "x": "a:b;c"}));
    assert_eq!(text["body"], "text body");
    assert_eq!(text["body_len"], 9);
    let bin = msgs
        .iter()
        .find(|v| v["header"]["kind"] == "bin")
        .expect("binary message");
    assert_eq!(bin["body_len"], 3);
    assert_eq!(bin["body_base64"], "/wD+");
    assert!(bin.get("body").is_none(), "{bin}");
    let fc = msgs
        .iter()
        .find(|v| v["header"]["k"] == "v")
        .expect("connect's message");
    assert_eq!(fc["body"], "from-connect");

    // The connect side's JSON too.
    let cev = check_json_lines(&cli);
    let c = cev
        .iter()
        .find(|v| v["event"] == "connected")
        .expect("connected on the client");
    assert_eq!(c["dir"], "out");
    assert_eq!(c["addr"], addr.to_string());
    assert_eq!(c["alive"], 1);
    assert!(c["peer"].is_u64());
}

#[test]
fn sigterm_stops_serve_cleanly_and_clients_see_eof() {
    let (mut srv, addr) = serve(&[]);
    let mut a = Client::connect(addr);
    srv.expect_connected(&a);
    let mut b = Client::connect(addr);
    srv.expect_connected(&b);
    let t0 = Instant::now();
    srv.sigterm();
    let code = srv.expect_exit(TIMEOUT);
    assert_eq!(code, 0, "{}", srv.context());
    // A speed bound: checked only with SOCKMOD_TIMING=1 (see `timing_checked`).
    if timing_checked() {
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
    assert!(a.wait_closed(TIMEOUT), "client a should see EOF");
    assert!(b.wait_closed(TIMEOUT), "client b should see EOF");
}

#[test]
fn idle_timeout_closes_silent_clients_but_not_heartbeating_ones() {
    let (silent_srv, silent_addr) = serve(&["--idle-timeout", "500ms"]);
    let (hb_srv, hb_addr) = serve(&["--idle-timeout", "500ms"]);

    let mut silent = Client::connect(silent_addr);
    let t0 = Instant::now();
    let id = silent_srv.expect_connected(&silent);

    let mut hb = Proc::spawn(&[
        "connect",
        "--heartbeat",
        "100ms",
        "--stay",
        &hb_addr.to_string(),
    ]);
    hb.close_stdin();
    let v = hb_srv.expect_event("connected", &[]);
    let hb_id = v["peer"].as_u64().unwrap();
    let hb_t0 = Instant::now();

    let v = silent_srv.expect_json("idle close", |v| is_event(v, "closed", id));
    let elapsed = t0.elapsed();
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(reason.contains("idle"), "reason: {reason:?}");
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed too early: {elapsed:?}"
    );
    assert!(silent.wait_closed(TIMEOUT));

    // The heartbeating client stays well past three idle timeouts.
    let left = Duration::from_millis(1600).saturating_sub(hb_t0.elapsed());
    let closed = hb_srv.wait_json(|v| is_event(v, "closed", hb_id), left);
    assert!(
        closed.is_none(),
        "heartbeating client was closed: {closed:?}"
    );
    assert!(hb.is_running(), "connect --stay exited\n{}", hb.context());
    // TP:Check probes are never shown as messages.
    assert_eq!(
        hb_srv
            .out
            .count(|l| l.json.as_ref().is_some_and(|v| v["event"] == "message")),
        0,
        "{}",
        hb_srv.context()
    );
    hb.sigterm();
    assert_eq!(hb.expect_exit(TIMEOUT), 0, "{}", hb.context());
}

#[test]
fn version_prints_and_exits_0() {
    let mut p = Proc::spawn(&["--version"]);
    assert_eq!(p.expect_exit(TIMEOUT), 0);
    let out = p.out.texts().join("\n");
    assert!(
        out.contains(&format!("sockmod {}", env!("CARGO_PKG_VERSION"))),
        "stdout: {out:?}"
    );
}

#[test]
fn unknown_option_is_a_usage_error() {
    let mut p = Proc::spawn(&["serve", "--bogus"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(err.contains("--bogus"), "stderr: {err}");
}

#[test]
fn bind_on_a_port_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut p = Proc::spawn(&["serve", "--bind", &addr]);
    assert_eq!(p.expect_exit(TIMEOUT), 1, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(
        err.contains("error") && err.contains(&addr) && err.contains("address in use"),
        "stderr: {err}"
    );
    drop(taken);
}

#[test]
fn alive_counts_are_taken_when_each_event_happens() {
    let (mut srv, addr) = serve(&[]);
    // Stopped, the server cannot accept: the three clients wait in the backlog and
    // are all accepted in one turn once it continues.
    srv.signal(libc::SIGSTOP);
    let clients: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    srv.signal(libc::SIGCONT);
    let mut alive: Vec<u64> = clients
        .iter()
        .map(|c| {
            let v = srv.expect_event("connected", &[("addr", c.local_addr().to_string().into())]);
            v["alive"].as_u64().unwrap()
        })
        .collect();
    alive.sort();
    assert_eq!(alive, vec![1, 2, 3], "{}", srv.context());
    srv.sigterm();
    assert_eq!(srv.expect_exit(TIMEOUT), 0, "{}", srv.context());
    let mut closed: Vec<u64> = srv
        .out
        .all()
        .iter()
        .filter_map(|l| l.json.clone())
        .filter(|v| v["event"] == "closed")
        .map(|v| v["alive"].as_u64().unwrap())
        .collect();
    closed.sort();
    assert_eq!(closed, vec![0, 1, 2], "{}", srv.context());
}

#[test]
fn a_peer_closing_mid_frame_is_told_apart_from_a_clean_close() {
    let (srv, addr) = serve(&[]);
    // What a netcat user sends: plain text, not a frame.
    let mut nc = Client::connect(addr);
    srv.expect_connected(&nc);
    nc.send_raw(b"hello\n");
    drop(nc);
    let v = srv.expect_event("closed", &[]);
    assert_eq!(
        v["reason"],
        "peer closed mid-frame: \"hello\\n\" looks like plain text, not sockmod framing (a 2-byte header length first)",
        "{v}"
    );
    let clean = Client::connect(addr);
    srv.expect_connected(&clean);
    drop(clean);
    let v = srv.expect_event("closed", &[]);
    assert_eq!(v["reason"], "peer closed", "{v}");
}

#[test]
fn a_malformed_listening_address_is_a_usage_error() {
    for (args, says) in [
        (&["serve", "--bind", "127.0.0.1:99999"][..], "0 to 65535"),
        (&["serve", "foo"][..], "is not HOST:PORT or PORT"),
        (
            &["ipserver", "--bind", "127.0.0.1"][..],
            "is not HOST:PORT or PORT",
        ),
        (&["connect", "127.0.0.1:70000"][..], "0 to 65535"),
    ] {
        let mut p = Proc::spawn(args);
        assert_eq!(p.expect_exit(TIMEOUT), 2, "{}", p.context());
        let err = p.err.texts().join("\n");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn serve_takes_its_address_as_a_positional_argument_too() {
    let p = Proc::spawn(&["serve", "127.0.0.1:0"]);
    let addr = p.listening_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
}

#[test]
fn limits_that_would_refuse_everything_are_usage_errors() {
    for (args, says) in [
        (
            &["serve", "--max-conns", "0", "127.0.0.1:0"][..],
            "at least 1 connection",
        ),
        (
            &["serve", "--max-queue", "0", "127.0.0.1:0"][..],
            "at least 1 byte",
        ),
        (
            &["connect", "--max-queue", "0B", "127.0.0.1:1"][..],
            "at least 1 byte",
        ),
        (
            &["ipserver", "--max-conns", "lots", "127.0.0.1:0"][..],
            "not a count",
        ),
    ] {
        let mut p = Proc::spawn(args);
        assert_eq!(p.expect_exit(TIMEOUT), 2, "{}", p.context());
        let err = p.err.texts().join("\n");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The smallest allowed values start normally.
    let p = Proc::spawn(&[
        "serve",
        "--max-conns",
        "1",
        "--max-queue",
        "1",
        "127.0.0.1:0",
    ]);
    assert!(p.listening_addr().port() != 0);
}
