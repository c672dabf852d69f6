//! Replays the inputs kept under `tests/data/fuzz/TARGET/` (crashes the fuzzers
//! found, and seeds) through the same checks the fuzz targets run
//! (`fuzz/checks/*.rs`), so a fixed bug stays fixed without cargo-fuzz.

#[path = "../fuzz/checks/command.rs"]
mod command;
#[path = "../fuzz/checks/decoder.rs"]
mod decoder;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).expect("read input");
        let name = path.display().to_string();
        if let Err(e) = std::panic::catch_unwind(|| check(&data)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name}: {msg}");
        }
        n += 1;
    }
    n
}

#[test]
fn decoder_inputs_still_pass() {
    assert!(replay("decoder", decoder::check) > 0);
}

#[test]
fn command_inputs_still_pass() {
    assert!(replay("command", command::check) > 0);
}
