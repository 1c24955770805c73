//! choreo: a local, Kubernetes-style automation engine for network and infrastructure intent.
//!
//! The library holds everything but the command-line entry point; see `ARCHITECTURE.md` for the
//! module map and the rules on which module may depend on which.

pub mod api;
pub mod backends;
pub mod cli;
pub mod engine;
pub mod ids;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod project;
pub mod protocol;
pub mod reconcile;
pub mod repo;
#[cfg(feature = "sdc")]
pub mod sdc;
pub mod server;
pub mod store;
pub mod watch;
