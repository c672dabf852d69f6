//! The prompt on a pseudo-terminal: Tab completes the `HOST:PORT` of current
//! connections; each mode keeps its own history file.

mod common;

use common::pty::{Pty, Term};
use common::*;

const TERM: Term = Term {
    rows: 40,
    cols: 120,
    keep_blank_rows: false,
};

#[test]
fn tab_completes_the_address_of_a_connection_and_history_is_per_mode() {
    let mut t = Pty::spawn(TERM, &["serve", "--bind", "127.0.0.1:0"]);
    let rows = t.wait("the first prompt", |r| {
        r.first().is_some_and(|l| l.starts_with("listening on "))
            && r.last().is_some_and(|l| l == "serve>")
    });
    let addr: std::net::SocketAddr = rows[0]
        .strip_prefix("listening on ")
        .and_then(|a| a.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let mut c = Client::connect(addr);
    let peer = c.local_addr().to_string();
    t.wait("the connection", |r| {
        r.iter().any(|l| l.starts_with("+ #1 in"))
    });
    // Tab after the start of the address completes the whole of it.
    t.keys("send 127.0.0.");
    t.keys("\t");
    let want = format!("serve> send {peer}");
    t.wait("the completed address", |r| {
        r.last().is_some_and(|l| l.trim_end() == want)
    });
    t.keys(" hello\r");
    assert_eq!(info(&c.expect_frame()), "hello");
    let file = t.state.join("sockmod").join("history-serve");
    let ok = wait_until(TIMEOUT, || {
        std::fs::read_to_string(&file).is_ok_and(|h| h.contains("hello"))
    });
    assert!(ok, "no history in {}", file.display());
    assert!(!t.state.join("sockmod").join("history").exists());
}
