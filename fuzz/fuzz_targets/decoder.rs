//! Fuzzes the frame decoder; the property is in `checks/decoder.rs`.
#![no_main]

#[path = "../checks/decoder.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
