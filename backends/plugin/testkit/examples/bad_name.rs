//! An empty plugin name (it could not be selected as `kind`).

mod common;

use common::Mode;
use rbees_core::plugin_abi::PluginTable;

const MODE: Mode = Mode::Fail;

static TABLE: PluginTable = common::table(rbees_core::plugin_cstr!(""));

#[no_mangle]
pub extern "C" fn rbees_plugin_entry() -> *const PluginTable {
    &TABLE
}
