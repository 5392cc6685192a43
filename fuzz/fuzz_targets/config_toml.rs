//! See `rbees_fuzz::config_toml` (fuzz/src/lib.rs) for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbees_fuzz::config_toml(data));
