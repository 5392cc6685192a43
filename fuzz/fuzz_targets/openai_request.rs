//! See `rbees_fuzz::openai_request` (fuzz/src/lib.rs) for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbees_fuzz::openai_request(data));
