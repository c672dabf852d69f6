//! What the event lines look like, through the real binary on loopback: human
//! lines escape control characters a peer puts in its headers, and the JSON
//! `list` line starts with its event like every other line.

mod common;

use common::*;

/// A peer's header cannot forge event lines or send terminal escape sequences
/// through the human output: control characters in keys and values are escaped.
#[test]
fn human_lines_escape_control_characters_in_headers() {
    let (mut srv, addr) = spawn_listening(&["serve", "--bind", "127.0.0.1:0"]);
    let mut c = Client::connect(addr);
    let forged = "x\n+ #99 in 6.6.6.6:1 (1 alive)\n< y";
    c.send_raw(&raw_frame(&format!("CL:0;{forged}:v;k:\u{1b}[2J"), b""));
    c.send_info("marker");
    srv.expect_line("marker", |l| l.contains("info=marker"));
    let out = srv.out.texts();
    assert!(
        !out.iter()
            .any(|l| l.starts_with("+ #99") || l.starts_with("< y")),
        "a header forged an event line: {out:#?}"
    );
    assert!(
        !out.iter().any(|l| l.contains('\u{1b}')),
        "a header reached the terminal as an escape sequence: {out:#?}"
    );
    let shown = out
        .iter()
        .find(|l| l.contains("6.6.6.6"))
        .unwrap_or_else(|| panic!("the message is not shown: {out:#?}"));
    assert!(
        shown.starts_with("< #1 ") && shown.contains(r#"k="\u{1b}[2J""#),
        "{shown}"
    );
    srv.send_line("quit");
    assert_eq!(srv.expect_exit(TIMEOUT), 0, "{}", srv.context());
}

/// `list` with `--json` starts with `"event"` like every other event line (the
/// README shows `{"event":"list","conns":[...]}`).
#[test]
fn json_list_line_starts_with_its_event() {
    let (mut srv, addr) = serve(&[]);
    let c = Client::connect(addr);
    srv.expect_connected(&c);
    srv.send_line("list");
    let v = srv.expect_json("list", |v| v["event"] == "list");
    assert_eq!(v["conns"][0]["peer"], 1, "{v}");
    let texts = srv.out.texts();
    let line = texts
        .iter()
        .find(|l| l.contains(r#""list""#))
        .expect("list line");
    assert!(line.starts_with(r#"{"event":"list","conns":["#), "{line}");
}
