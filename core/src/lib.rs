//! rbees-core: the contract between the model and its kernel backends.
//!
//! The model crate is generic over [`Backend`]; it never names a concrete
//! backend. Backends register a [`BackendDescriptor`] with `inventory` so the
//! worker can list them and pick one by name from the configuration;
//! [`plugin_abi`] is the C ABI of backends loaded from shared libraries.

mod backend;
pub mod checks;
mod dtype;
mod error;
mod op;
pub mod plugin_abi;
mod registry;
mod rope;
mod weight;

pub use backend::{AttentionShape, Backend, BackendOptions, RopeVariant, SeqSpan};
pub use dtype::WeightDType;
pub use error::{BackendError, Result};
pub use op::{Op, Support};
pub use registry::{
    by_preference, descriptors, find_descriptor, BackendDescriptor, BuiltInBackend, AUTO_DEVICE,
};
pub use rope::rope_tables;
pub use weight::HostWeight;

/// Re-exported so backend crates can `inventory::submit!` without their own dependency.
pub use inventory;
