//! A valid plugin whose every kernel panics (caught at its edge by `guard`).

mod common;

use common::Mode;
use rbees_core::plugin_abi::PluginTable;

const MODE: Mode = Mode::Panic;

static TABLE: PluginTable = common::table(rbees_core::plugin_cstr!("kernel-panics"));

#[no_mangle]
pub extern "C" fn rbees_plugin_entry() -> *const PluginTable {
    &TABLE
}
