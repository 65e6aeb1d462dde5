//! Fuzz target `idmap`: see `../checks/idmap.rs` for what it checks. Run with `fuzz/run SECONDS idmap` (stable) or
//! `cargo +nightly fuzz run idmap`.
#![no_main]

#[path = "../checks/idmap.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
