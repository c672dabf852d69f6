//! The command-language property shared by the `command` fuzz target and the
//! regression test `tests/fuzz_regressions.rs`: any line parses or gives a
//! short one-line error, never a panic; targets and access rules print back to
//! what they parse from.

use sockmod::command::{Command, Target, parse};
use sockmod::net::Cidr;

/// Longest error a bad line may produce (user words in it are clipped).
const MAX_ERROR: usize = 300;

fn check_error(e: &str, what: &str) {
    assert!(!e.is_empty(), "empty error for {what:?}");
    assert!(!e.contains('\n'), "multi-line error for {what:?}: {e}");
    assert!(e.len() <= MAX_ERROR, "error of {} bytes: {e}", e.len());
}

fn check_target(t: &Target) {
    let shown = t.to_string();
    assert_eq!(
        Target::parse(&shown).as_ref(),
        Ok(t),
        "target {t:?} shown as {shown:?} parses differently"
    );
}

/// Panics when the property does not hold for `data` (taken as UTF-8, lossily).
pub fn check(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    match parse(&line) {
        Ok(Some(
            Command::Send(t, _)
            | Command::Multicast(t, _)
            | Command::Close(t)
            | Command::SendFile(t, _),
        )) => check_target(&t),
        Ok(_) => {}
        Err(e) => check_error(&e, &line),
    }
    match Target::parse(&line) {
        Ok(t) => check_target(&t),
        Err(e) => check_error(&e, &line),
    }
    if let Ok(c) = line.parse::<Cidr>() {
        assert_eq!(c.to_string().parse::<Cidr>(), Ok(c), "rule {line:?}");
    }
}
