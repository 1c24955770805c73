//! The sdcio APIs `-s` writes when the project does not define them: `Config` and
//! `RunningConfig` of `config.sdcio.dev/v1alpha1`, written from sdcio's field lists.
//!
//! They are registered as ordinary (not built-in) APIs, so a project that ships its own CRD for
//! either kind (upstream's examples ship the Config CRD) replaces them.
//!
//! Invariant: data only.
#![cfg_attr(not(feature = "sdc"), allow(dead_code))]

use serde_json::{json, Value};

use crate::api::crd::{ApiResource, CrdError};

pub(crate) const GROUP: &str = "config.sdcio.dev";
pub(crate) const VERSION: &str = "v1alpha1";
pub(crate) const CONFIG: &str = "Config";
pub(crate) const RUNNING_CONFIG: &str = "RunningConfig";

fn crd(kind: &str, plural: &str, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": kind.to_lowercase(), "categories": ["sdc"]},
            "versions": [{
                "name": VERSION, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status
                    }
                }}
            }]
        }
    })
}

fn open_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// The two CRDs.
pub(crate) fn crds() -> Vec<Value> {
    vec![
        crd(
            CONFIG,
            "configs",
            json!({
                "type": "object",
                "required": ["config"],
                "properties": {
                    // Lower is stronger; the final config of a device has 10.
                    "priority": {"type": "integer", "format": "int64"},
                    "config": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["value"],
                            "properties": {
                                "path": {"type": "string"},
                                "value": open_object()
                            }
                        }
                    },
                    "lifecycle": open_object()
                }
            }),
            open_object(),
        ),
        crd(
            RUNNING_CONFIG,
            "runningconfigs",
            json!({"type": "object"}),
            json!({"type": "object", "properties": {"value": open_object()}}),
        ),
    ]
}

pub(crate) fn resources() -> Result<Vec<ApiResource>, CrdError> {
    crds().iter().map(ApiResource::from_crd).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_register_as_replaceable_apis() {
        let res = super::resources().unwrap();
        let names: Vec<String> = res.iter().map(|r| format!("{}.{}", r.plural, r.group)).collect();
        assert_eq!(names, ["configs.config.sdcio.dev", "runningconfigs.config.sdcio.dev"]);
        assert!(res.iter().all(|r| !r.builtin && r.namespaced));
    }
}
