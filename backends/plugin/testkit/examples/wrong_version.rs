//! A table from a future ABI version.

mod common;

use common::Mode;
use rbees_core::plugin_abi::PluginTable;

const MODE: Mode = Mode::Fail;

static TABLE: PluginTable = PluginTable {
    abi_version: 999,
    ..common::table(rbees_core::plugin_cstr!("wrong-version"))
};

#[no_mangle]
pub extern "C" fn rbees_plugin_entry() -> *const PluginTable {
    &TABLE
}
