//! See `rbees_fuzz::tokenizer` (fuzz/src/lib.rs) for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbees_fuzz::tokenizer(data));
