//! Regressions found by the acceptance audit of the filer (discovery and file
//! transfer), through the real binary on 127.0.0.1.

mod common;

use common::*;
use serde_json::Value;
use sockmod::protocol::Header;
use std::net::TcpListener;

/// `peer_online ID` on filer `p`.
fn expect_online(p: &Proc, id: &str) -> Value {
    p.expect_json_within(
        &format!("peer_online {id}"),
        |v| v["event"] == "peer_online" && v["id"] == id,
        TIMEOUT,
    )
}

/// An original peer (Python/Qt Filer) in the roster never names itself and
/// never confirms a file: sending to it by name must finish once the bytes are
/// written, as it does when it is addressed by connection, and `quit` must not
/// wait for it forever.
#[test]
fn a_file_sent_by_name_to_an_original_peer_finishes() {
    let (_ips, ips_addr) = spawn_ipserver("127.0.0.1:0", "200ms", &[]);
    let (mut ann, _) = spawn_filer("ann", ips_addr, "200ms", &[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let x_port = listener.local_addr().unwrap().port();
    let mut x_link = Client::connect(ips_addr);
    x_link.send(
        &Header::new()
            .with("ID", "x")
            .with("Port", x_port.to_string()),
        b"",
    );
    expect_online(&ann, "x");

    let src = tmp_path("audit-orig-src.bin");
    std::fs::write(&src, random_bytes(700_000, 7)).unwrap();
    ann.send_line(&format!("sendfile x '{}'", src.display()));
    let mut x = accept_within(&listener, TIMEOUT);
    // x reads everything (identity, three chunks) and says nothing back.
    let frames = x.expect_frames(4, TIMEOUT);
    assert_eq!(frames[3].header.get("index"), Some("-1"));
    let done = ann.expect_json_within(
        "transfer to x done or failed",
        |v| {
            v["event"] == "transfer"
                && v["dir"] == "send"
                && (v["state"] == "done" || v["state"] == "failed")
        },
        TIMEOUT,
    );
    assert_eq!(done["state"], "done", "{done}");
    ann.send_line("quit");
    assert_eq!(ann.expect_exit(TIMEOUT), 0, "{}", ann.context());
    let _ = std::fs::remove_file(&src);
    drop(x_link);
}

/// The `transfers` table keeps its columns aligned on a terminal when a name
/// has wide (CJK) characters: each cell is padded by display columns, not by
/// characters.
#[test]
fn transfers_table_aligns_wide_names() {
    use unicode_width::UnicodeWidthStr;
    let inbox = tmp_path("audit-wide-inbox");
    let mut ann = Proc::spawn_cmd(lone_filer_command("ann", &inbox, &[]));
    let addr = ann.listening_addr();
    let mut c = Client::connect(addr);
    for name in ["日本語のファイル.txt", "plain.txt"] {
        let h = Header::new()
            .with("TP", "file")
            .with("N", name)
            .with("L", "3")
            .with("index", "-1");
        c.send(&h, b"abc");
        ann.expect_line("done line", |l| l.contains("done") && l.contains(name));
    }
    ann.send_line("transfers");
    // The header row, then one row per file (each row starts with `tN`).
    let rows: Vec<String> = ["size", "日本語", "plain.txt"]
        .iter()
        .map(|k| {
            ann.expect_line("table row", |l| {
                (l.starts_with('#') || l.starts_with('t')) && l.contains(k)
            })
        })
        .collect();
    // Where the `size` column starts, in terminal columns.
    let at = |row: &str, cell: &str| {
        let i = row
            .find(cell)
            .unwrap_or_else(|| panic!("no {cell:?} in {row:?}"));
        row[..i].width()
    };
    let size_col = at(&rows[0], "size");
    assert_eq!(at(&rows[1], "3 B"), size_col, "{rows:#?}");
    assert_eq!(at(&rows[2], "3 B"), size_col, "{rows:#?}");
    let _ = std::fs::remove_dir_all(&inbox);
}

/// A garbled roster entry of megabytes (from a broken or hostile ipserver) is
/// ignored with a notice of one short line, not one as long as the entry.
#[test]
fn a_huge_garbled_roster_entry_gives_a_short_notice() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let inbox = tmp_path("audit-roster-inbox");
    let ann = Proc::spawn_cmd(filer_command(
        "ann",
        &fake.local_addr().unwrap().to_string(),
        "5s",
        &inbox,
        &[],
    ));
    let mut ips = accept_within(&fake, TIMEOUT);
    let mut body = "a".repeat(2 << 20).into_bytes();
    body.extend_from_slice(b",1.2.3.4,5");
    ips.send(&Header::new().with("Broadcast", ""), &body);
    let notice = ann.expect_err_line("roster notice", |l| l.contains("ignored roster"));
    assert!(
        notice.len() < 300,
        "{} bytes: {}…",
        notice.len(),
        &notice[..200]
    );
    assert!(notice.contains("roster entry \"aaa"), "{notice}");
    // A bad report to an ipserver is clipped the same way.
    let (ipsrv, ips_addr) = spawn_ipserver("127.0.0.1:0", "5s", &[]);
    let mut c = Client::connect(ips_addr);
    c.send(
        &Header::new()
            .with("ID", "x")
            .with("Port", "9".repeat(60_000)),
        b"",
    );
    let notice = ipsrv.expect_err_line("report notice", |l| l.contains("ignored report"));
    assert!(notice.len() < 300, "{} bytes", notice.len());
    let _ = std::fs::remove_dir_all(&inbox);
}

/// A peer announcing a file name of 20,000 characters gets a safe stored name
/// and short human lines: the name is clipped where it is shown (JSON events
/// keep it whole).
#[test]
fn a_huge_file_name_is_clipped_in_human_lines() {
    let inbox = tmp_path("audit-longname-inbox");
    let mut ann = Proc::spawn_cmd(lone_filer_command("ann", &inbox, &[]));
    let mut c = Client::connect(ann.listening_addr());
    let name = format!("{}.txt", "n".repeat(20_000));
    let h = Header::new()
        .with("TP", "file")
        .with("N", name.as_str())
        .with("L", "3")
        .with("index", "-1");
    c.send(&h, b"abc");
    let done = ann.expect_line("done line", |l| l.contains("done: received"));
    assert!(done.len() < 600, "{} bytes", done.len());
    ann.send_line("transfers");
    let row = ann.expect_line("table row", |l| l.starts_with("t1 "));
    assert!(row.len() < 900, "{} bytes", row.len());
    assert_eq!(dir_entries(&inbox).len(), 1);
    assert!(dir_entries(&inbox)[0].len() <= 255);
    let _ = std::fs::remove_dir_all(&inbox);
}

/// An `--inbox` that exists but is not a directory is refused at start (it was
/// reported only when the first file arrived).
#[test]
fn an_inbox_that_is_a_file_is_refused_at_start() {
    let file = tmp_path("inbox-is-a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut p = Proc::spawn_cmd(lone_filer_command("ann", &file, &[]));
    assert_eq!(p.expect_exit(TIMEOUT), 1, "{}", p.context());
    let err = p.err.texts().join("\n");
    assert!(
        err.contains("cannot use inbox") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}
