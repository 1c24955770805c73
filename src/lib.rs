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

/// jemalloc instead of glibc malloc. A reconcile allocates and frees thousands of small blocks
/// (`serde_json` maps, strings, Starlark heaps); past glibc's per-thread cache of seven blocks
/// per size, each one went through its bins and consolidation, ~40% of a 10k-object run.
///
/// The `heapprof` feature leaves the system allocator in place, so that heap profilers that
/// intercept malloc (heaptrack, valgrind) see every allocation:
/// `cargo build --release --features heapprof && heaptrack target/release/choreo server start …`.
#[cfg(not(feature = "heapprof"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: freed pages go back to the system at once
/// (`*_decay_ms:0`, so the resident size follows what is live, as `malloc_trim` made it for
/// glibc), and two arenas (the engine and everything else share memory rather than each of the
/// default eight per core keeping its own).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:2,dirty_decay_ms:0,muzzy_decay_ms:0\0";
