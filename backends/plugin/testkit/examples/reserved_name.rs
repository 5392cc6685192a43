//! A plugin that calls itself `plugin`, the kind that selects a library by path.

mod common;

use common::Mode;
use rbees_core::plugin_abi::PluginTable;

const MODE: Mode = Mode::Fail;

static TABLE: PluginTable = common::table(rbees_core::plugin_cstr!("plugin"));

#[no_mangle]
pub extern "C" fn rbees_plugin_entry() -> *const PluginTable {
    &TABLE
}
