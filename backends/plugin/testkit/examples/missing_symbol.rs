//! A shared library without the entry symbol (a misspelt one instead).

#[no_mangle]
pub extern "C" fn rbees_plugin_entry_v0() -> u32 {
    0
}
