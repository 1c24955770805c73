//! `-s`: device configuration checked against the devices' YANG models, with libyang.
//!
//! After the reconcilers ran, the configuration snippets they produced for a device are merged
//! onto its running configuration, validated against the device's YANG schema and the final
//! intended configuration is generated. This module holds the pieces of that pipeline: `schema`
//! finds a project's schemas (`schemas/<provider>/<version>/**.yang`, narrowed by a `manifest`)
//! and compiles each into a libyang context, `normalize` turns lenient JSON into the RFC 7951
//! form libyang reads, `path` places a Config entry at its path, `pipeline` merges, validates and
//! attributes per device, and `log` gathers every message libyang reports while a piece of work
//! runs (libyang keeps only its last error otherwise).
//!
//! Architecture invariant: no store, engine or reconciler knowledge: it takes paths and JSON
//! and returns typed results; the engine decides what to read and what to write.

mod log;
pub mod manifest;
pub mod normalize;
pub mod path;
pub mod pipeline;
pub mod schema;

pub use log::Diagnostic;
