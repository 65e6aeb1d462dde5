//! Fuzz target `apply`: see `../checks/apply.rs` for what it checks. Run with `fuzz/run SECONDS apply` (stable) or
//! `cargo +nightly fuzz run apply`.
#![no_main]

#[path = "../checks/apply.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
