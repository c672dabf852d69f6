//! Scripting: commands from `-c`, bodies from stdin (`-f -`), and the `error`
//! event of `--json` for a failed command.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn a_body_piped_on_stdin_is_sent_with_f_dash() {
    let (srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&["connect", &addr.to_string(), "-c", "send * -H TP=x -f -"]);
    cli.write_stdin(b"payload");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 0, "{}", cli.context());
    let v = srv.expect_event("message", &[]);
    assert_eq!(v["header"], json!({"TP": "x"}), "{v}");
    assert_eq!(v["body_len"], 7, "{v}");
    assert_eq!(v["body"], "payload", "{v}");
}

#[test]
fn several_c_commands_run_in_order_and_connect_exits_0() {
    let (srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&[
        "connect",
        &addr.to_string(),
        "-c",
        "send * one",
        "--command",
        "send * two",
    ]);
    // stdin is not read for commands: leaving it open does not hold the exit.
    assert_eq!(cli.expect_exit(TIMEOUT), 0, "{}", cli.context());
    let a = srv.expect_event("message", &[]);
    let b = srv.expect_event("message", &[]);
    assert_eq!(a["header"], json!({"info": "one"}));
    assert_eq!(b["header"], json!({"info": "two"}));
}

#[test]
fn f_dash_is_refused_when_stdin_holds_the_commands() {
    let (_srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&["connect", &addr.to_string()]);
    cli.send_line("send * -f -");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    cli.expect_err_line("the -f - error", |l| l.contains("stdin holds the commands"));
}

#[test]
fn serve_runs_c_commands_and_keeps_running_until_quit() {
    let mut p = Proc::spawn(&["serve", "--bind", "127.0.0.1:0", "--json", "-c", "list"]);
    p.expect_json("list output", |v| v["event"] == "list");
    assert!(p.is_running(), "{}", p.context());
    p.sigterm();
    assert_eq!(p.expect_exit(TIMEOUT), 0, "{}", p.context());
    let mut q = Proc::spawn(&["serve", "--bind", "127.0.0.1:0", "-c", "quit"]);
    assert_eq!(q.expect_exit(TIMEOUT), 0, "{}", q.context());
}

fn error_event(p: &Proc) -> Value {
    p.expect_json("error event", |v| v["event"] == "error")
}

#[test]
fn a_failed_piped_command_is_an_error_event_with_its_line_number() {
    let (_srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&["connect", "--json", &addr.to_string()]);
    cli.send_line("send 99 x");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    let v = error_event(&cli);
    assert_eq!(v["command"], "send", "{v}");
    assert_eq!(v["line"], 1, "{v}");
    assert!(v["message"].as_str().unwrap().contains("#99"), "{v}");
    // The human line stays on stderr.
    cli.expect_err_line("stderr error", |l| {
        l.starts_with("error: no connection #99")
    });
}

#[test]
fn error_events_count_lines_and_c_indexes() {
    let (_srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&["connect", "--json", &addr.to_string()]);
    cli.send_line("# a comment");
    cli.send_line("");
    cli.send_line("frobnicate");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    let v = error_event(&cli);
    assert_eq!(v["line"], 3, "{v}");
    assert_eq!(v["command"], Value::Null, "{v}");

    let mut cli = Proc::spawn(&[
        "connect",
        "--json",
        &addr.to_string(),
        "-c",
        "send * fine",
        "-c",
        "bc -Z",
    ]);
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    let v = error_event(&cli);
    assert_eq!(v["line"], 2, "{v}");
    assert_eq!(v["command"], "broadcast", "{v}");
}
