//! Fuzz target `mountinfo`: see `../checks/mountinfo.rs` for what it checks. Run with `fuzz/run SECONDS mountinfo` (stable) or
//! `cargo +nightly fuzz run mountinfo`.
#![no_main]

#[path = "../checks/mountinfo.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
