//! See `rbees_fuzz::gguf_load` (fuzz/src/lib.rs) for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbees_fuzz::gguf_load(data));
