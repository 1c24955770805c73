//! `-s` in the engine: what the device-config pipeline reads from the store and the project,
//! and what it writes back (`pass`), the sdcio APIs it writes (`crds`) and its flags
//! (`options`).
//!
//! Invariant: knows the store and the project's files, not libyang (that is `crate::sdc`).

pub(crate) mod crds;
pub(crate) mod diff;
pub mod options;
#[cfg(feature = "sdc")]
pub(super) mod pass;

pub use options::SdcOptions;

/// The labels sdcio puts on Configs: which node they are for, and the final config of a node.
#[cfg(feature = "sdc")]
pub(crate) const TARGET_NAME: &str = "config.sdcio.dev/targetName";
#[cfg(feature = "sdc")]
pub(crate) const TARGET_NAMESPACE: &str = "config.sdcio.dev/targetNamespace";
pub(crate) const FINAL: &str = "config.sdcio.dev/finalconfig";

/// The error of a `-s` request to a server without it.
pub(crate) fn no_sdc() -> crate::protocol::ErrorReport {
    crate::protocol::ErrorReport::new(
        crate::protocol::ErrorKind::Invalid,
        "this server does not validate device configs",
    )
    .with_hint("start it with `choreo server start -s` (--sdc)")
}
