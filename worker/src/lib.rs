//! rbees-worker: configuration, backend selection and the commands behind
//! the `rbees` command line and the `rbees-workerd` daemon.

pub mod bandwidth;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod plugins;
