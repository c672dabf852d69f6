//! Small traps closed: netcat's `HOST PORT`, unknown options, an address target
//! naming several connections, and a peer that speaks plain text.

mod common;

use common::*;

#[test]
fn netcats_host_port_form_suggests_host_colon_port() {
    let mut p = Proc::spawn(&["connect", "127.0.0.1", "63335"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(err.contains("try 127.0.0.1:63335"), "stderr: {err}");
    let mut p = Proc::spawn(&["connect", "::1", "9000"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(err.contains("try [::1]:9000"), "stderr: {err}");
}

#[test]
fn an_unknown_option_is_named_plainly_with_the_nearest_real_one() {
    let mut p = Proc::spawn(&["serve", "--ssl"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(
        err.starts_with("error: unknown option '--ssl'"),
        "stderr: {err}"
    );
    assert!(!err.contains("-- --ssl"), "stderr: {err}");
    let mut p = Proc::spawn(&["connect", "--jsn", "127.0.0.1:1"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(
        err.contains("unknown option '--jsn' (did you mean '--json'?)"),
        "stderr: {err}"
    );
}

#[test]
fn an_address_naming_several_connections_is_an_error_naming_them() {
    let (srv, addr) = serve(&[]);
    let a = addr.to_string();
    let mut cli = Proc::spawn(&["connect", &a, &a, "-c", &format!("send {a} x")]);
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    let e = cli.expect_err_line("the error", |l| l.starts_with("error:"));
    assert!(e.contains("names 2 connections (#1, #2)"), "{e}");
    assert_eq!(srv.out.count(|l| l.text.contains("\"message\"")), 0);
}

#[test]
fn a_peer_speaking_plain_text_is_told_so() {
    let (srv, addr) = serve(&[]);
    let mut nc = Client::connect(addr);
    srv.expect_connected(&nc);
    nc.send_raw(b"hi\n");
    drop(nc);
    let v = srv.expect_event("closed", &[]);
    assert_eq!(
        v["reason"],
        "peer closed mid-frame: \"hi\\n\" looks like plain text, not sockmod framing (a 2-byte header length first)",
        "{v}"
    );
}
