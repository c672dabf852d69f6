//! Fuzzes the command language: any line must parse or give a one-line error,
//! never panic; targets, access rules and sizes print back to what they parse from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockmod::command::{Command, Target, parse};
use sockmod::net::Cidr;

fn check_error(e: &str, what: &str) {
    assert!(!e.is_empty(), "empty error for {what:?}");
    assert!(!e.contains('\n'), "multi-line error for {what:?}: {e}");
}

fn check_target(t: &Target) {
    let shown = t.to_string();
    assert_eq!(
        Target::parse(&shown).as_ref(),
        Ok(t),
        "target {t:?} shown as {shown:?} parses differently"
    );
}

fuzz_target!(|data: &[u8]| {
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
    match line.parse::<Cidr>() {
        Ok(c) => assert_eq!(c.to_string().parse::<Cidr>(), Ok(c), "rule {line:?}"),
        Err(e) => check_error(&e, &line),
    }
    if let Err(e) = sockmod::cli::parse_size(&line) {
        check_error(&e, &line);
    }
});
