//! How `-s` finds its inputs: the server flags, as plain data (built with or without the `sdc`
//! feature).

use std::path::PathBuf;

/// How `-s` finds its inputs (server flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdcOptions {
    /// The schemas directory, relative to the project (`schemas`).
    pub schemas: PathBuf,
    /// The running configs directory, relative to the project (`runningconfigs`).
    pub running_configs: PathBuf,
    /// The target API (`Node` of `infra.kuid.dev`).
    pub node_group: String,
    pub node_kind: String,
    /// Dotted paths in a Node to its schema's provider and version.
    pub provider_field: String,
    pub version_field: String,
}

impl Default for SdcOptions {
    fn default() -> Self {
        SdcOptions {
            schemas: "schemas".into(),
            running_configs: "runningconfigs".into(),
            node_group: "infra.kuid.dev".into(),
            node_kind: "Node".into(),
            provider_field: "spec.provider".into(),
            version_field: "spec.version".into(),
        }
    }
}
