//! Fuzz target `spec`: see `../checks/spec.rs` for what it checks. Run with `fuzz/run SECONDS spec` (stable) or
//! `cargo +nightly fuzz run spec`.
#![no_main]

#[path = "../checks/spec.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
