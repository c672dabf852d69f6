//! Fuzzes the command-line parser; the property is in `checks/command.rs`.
#![no_main]

#[path = "../checks/command.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
