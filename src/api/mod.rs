//! The KRM object model: identities, CRDs and the API registry, structural schemas with
//! validation and defaulting, and server-side apply with field managers.
//!
//! Architecture invariant: `api` does no I/O, spawns no threads and knows nothing of sled,
//! sockets or the project layout. Everything here is a pure function of its inputs, which is
//! what lets the store, the loader and the CLI share it and lets it be tested exhaustively.

pub mod apply;
pub(crate) mod builtin;
pub(crate) mod cel;
pub mod crd;
pub mod explain;
pub mod jsonpath;
pub(crate) mod meta;
pub mod object;
pub mod schema;
pub mod selectors;
pub(crate) mod validate;
