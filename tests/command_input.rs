//! How commands are read, through the real binary on loopback: a piped script
//! (`quit` ends it, a failed dial fails it, a dial at the end of input is waited
//! for, a line runs before the next one is complete) and a terminal on stdin
//! while stdout goes to a file or a pipe.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

fn messages(p: &Proc) -> Vec<Value> {
    p.out
        .all()
        .into_iter()
        .filter_map(|l| l.json)
        .filter(|v| v["event"] == "message")
        .collect()
}

/// `quit` ends a piped script: the lines after it are not run (in a shell,
/// nothing after `exit` runs either).
#[test]
fn piped_commands_after_quit_are_not_run() {
    let (srv, addr) = serve(&[]);
    let mut cli = Proc::spawn(&["connect", &addr.to_string()]);
    cli.send_line("send * before");
    cli.send_line("quit");
    cli.send_line("send * after");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 0, "{}", cli.context());
    srv.expect_event("closed", &[]);
    std::thread::sleep(QUIET);
    let infos: Vec<Value> = messages(&srv)
        .into_iter()
        .map(|v| v["header"]["info"].clone())
        .collect();
    assert_eq!(infos, ["before"], "{}", srv.context());

    // The same in serve: `quit` then a broadcast that must not go out.
    let (mut srv2, addr2) = serve(&[]);
    let mut c = Client::connect(addr2);
    srv2.expect_connected(&c);
    srv2.send_line("quit\nbroadcast after quit");
    assert_eq!(srv2.expect_exit(TIMEOUT), 0, "{}", srv2.context());
    assert!(c.wait_closed(TIMEOUT), "serve did not close the client");
    assert_eq!(c.pending(), 0, "a frame was sent after quit");
}

/// A message sent to a connection whose dial then fails is lost: a piped
/// session says so and exits 1, as for a failed command.
#[test]
fn piped_message_to_a_failed_dial_exits_1() {
    let (_srv, addr) = serve(&[]);
    let refused = refused_addr();
    let mut cli = Proc::spawn(&["connect", &addr.to_string()]);
    cli.send_line(&format!("connect {refused}"));
    cli.send_line("send 2 lost");
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 1, "{}", cli.context());
    cli.expect_err_line("the loss on stderr", |l| {
        l.contains(&format!("cannot connect to {refused}: connection refused"))
            && l.contains("the message sent to it was dropped")
    });
}

/// End of piped input right after `connect ADDR` waits for that dial: its
/// outcome is reported, not cut short as "shutting down".
#[test]
fn piped_connect_command_at_end_of_input_is_waited_for() {
    let (srv, addr) = serve(&[]);
    let refused = refused_addr();
    let mut cli = Proc::spawn(&["connect", "--json", &addr.to_string()]);
    cli.expect_json("first dial", |v| v["event"] == "connected");
    srv.expect_event("connected", &[]);
    cli.send_line(&format!("connect {addr}"));
    cli.send_line(&format!("connect {refused}"));
    cli.close_stdin();
    assert_eq!(cli.expect_exit(TIMEOUT), 0, "{}", cli.context());
    let v = cli.expect_json("connected #2", |v| {
        v["event"] == "connected" && v["peer"] == 2
    });
    assert_eq!(v["addr"], addr.to_string());
    let v = cli.expect_json("failed #3", |v| {
        v["event"] == "connect_failed" && v["peer"] == 3
    });
    assert_eq!(v["reason"], "connection refused", "{}", cli.context());
    // The server saw the second connection.
    assert!(
        srv.out.wait_count(
            |l| l.json.as_ref().is_some_and(|v| v["event"] == "connected"),
            2,
            TIMEOUT
        ) >= 2,
        "{}",
        srv.context()
    );
}

#[test]
fn a_piped_command_runs_while_the_next_line_is_still_incomplete() {
    // Piped input wakes the loop once per burst of whole lines; a line followed
    // by half of the next must still run at once, not wait for the rest.
    let (mut srv, addr) = serve(&["--quiet"]);
    let mut c = Client::connect(addr);
    let id = srv.expect_connected(&c);
    srv.write_stdin(format!("send {id} first\nsend {id} sec").as_bytes());
    assert_eq!(info(&c.expect_frame()), "first");
    c.expect_silence(Duration::from_millis(100));
    srv.write_stdin(b"ond\n");
    assert_eq!(info(&c.expect_frame()), "second");
}

/// Typing at a terminal while stdout goes to a file or a pipe
/// (`sockmod serve --json > events.jsonl`, `sockmod serve | tee log`) works:
/// lines are read from the terminal and events go to stdout. It failed with
/// "cannot start the prompt: ENOTTY" and exit 1.
#[test]
fn a_terminal_on_stdin_with_stdout_redirected_reads_commands() {
    use std::io::{Read, Write};

    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};

    let (master, slave) = open_pty(24, 80);
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--json"])
        .env("XDG_STATE_HOME", tmp_path("redirected-state"))
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockmod");
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // The terminal echoes what is typed; drain it so the pty never fills.
    let mut echo = std::fs::File::from(master.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(echo.read(&mut buf), Ok(n) if n > 0) {}
    });
    let text = || out.lock().unwrap().clone();
    let listening = wait_until(TIMEOUT, || text().contains(r#""event":"listening""#));
    if !listening {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("no listening event on stdout: {:?}; stderr: {err}", text());
    }
    let line = text();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let addr: std::net::SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    let mut c = Client::connect(addr);
    assert!(wait_until(TIMEOUT, || text().contains(r#""event":"connected""#)));
    let mut input = std::fs::File::from(master);
    input.write_all(b"send 1 typed\n").unwrap();
    assert_eq!(info(&c.expect_frame()), "typed");
    input.write_all(b"quit\n").unwrap();
    assert!(
        wait_until(TIMEOUT, || child.try_wait().unwrap().is_some()),
        "still running after quit: {}",
        text()
    );
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", text());
}
