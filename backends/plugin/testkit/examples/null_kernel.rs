//! A malformed table: the matmul function pointer is null.

mod common;

use common::Mode;
use rbees_core::plugin_abi::PluginTable;

const MODE: Mode = Mode::Fail;

static TABLE: PluginTable = PluginTable {
    matmul: None,
    ..common::table(rbees_core::plugin_cstr!("null-kernel"))
};

#[no_mangle]
pub extern "C" fn rbees_plugin_entry() -> *const PluginTable {
    &TABLE
}
