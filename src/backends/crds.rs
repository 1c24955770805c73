//! The APIs `-r` serves: Index, Claim and Entry for each of kuid's five backends, written as
//! CRDs from the field lists of reference/kuid.md (§3) and registered as built-in APIs.
//!
//! The schemas carry what can be said declaratively (required fields, enums, id bounds per
//! backend: VLAN ids to 4095, AS numbers to 2^32−1, GENID by type), so most bad input is
//! refused by validation with the field named; what depends on several fields is checked when a
//! claim is admitted (`backends::claims`).
//!
//! Invariant: data only: no allocation logic here.

use serde_json::{json, Value};

use crate::api::crd::{ApiResource, CrdError};

/// The served version of every backend API.
pub(crate) const VERSION: &str = "v1alpha1";

/// One backend: its group, kind prefix and plurals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backend {
    pub group: &'static str,
    /// `VLAN` for `VLANIndex`, `VLANClaim`, `VLANEntry`; `IP` for IPAM.
    pub prefix: &'static str,
    pub index_plural: &'static str,
    pub claim_plural: &'static str,
    pub entry_plural: &'static str,
    pub kind: BackendKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    Ipam,
    Vlan,
    As,
    Genid,
    Extcomm,
}

pub(crate) const BACKENDS: [Backend; 5] = [
    Backend {
        group: "ipam.be.kuid.dev",
        prefix: "IP",
        index_plural: "ipindices",
        claim_plural: "ipclaims",
        entry_plural: "ipentries",
        kind: BackendKind::Ipam,
    },
    Backend {
        group: "vlan.be.kuid.dev",
        prefix: "VLAN",
        index_plural: "vlanindices",
        claim_plural: "vlanclaims",
        entry_plural: "vlanentries",
        kind: BackendKind::Vlan,
    },
    Backend {
        group: "as.be.kuid.dev",
        prefix: "AS",
        index_plural: "asindexes",
        claim_plural: "asclaims",
        entry_plural: "asentries",
        kind: BackendKind::As,
    },
    Backend {
        group: "genid.be.kuid.dev",
        prefix: "GENID",
        index_plural: "genidindexes",
        claim_plural: "genidclaims",
        entry_plural: "genidentries",
        kind: BackendKind::Genid,
    },
    Backend {
        group: "extcomm.be.kuid.dev",
        prefix: "EXTCOMM",
        index_plural: "extcommindices",
        claim_plural: "extcommclaims",
        entry_plural: "extcommentries",
        kind: BackendKind::Extcomm,
    },
];

impl Backend {
    pub fn index_kind(&self) -> String {
        format!("{}Index", self.prefix)
    }

    pub fn claim_kind(&self) -> String {
        format!("{}Claim", self.prefix)
    }

    pub fn entry_kind(&self) -> String {
        format!("{}Entry", self.prefix)
    }

    pub fn api_version(&self) -> String {
        format!("{}/{VERSION}", self.group)
    }

    /// The largest id a claim may name in the schema (GENID and EXTCOMM depend on the
    /// index's type and are checked at admission).
    fn max_id(&self) -> Option<u64> {
        match self.kind {
            BackendKind::Vlan => Some(4095),
            BackendKind::As => Some(u64::from(u32::MAX)),
            _ => None,
        }
    }
}

fn string() -> Value {
    json!({"type": "string"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn labels() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

fn id(max: Option<u64>) -> Value {
    let mut v = json!({"type": "integer", "minimum": 0});
    if let Some(max) = max {
        v["maximum"] = json!(max);
    }
    v
}

/// A label selector; kuid honours `matchLabels` only, `matchExpressions` is accepted.
fn selector() -> Value {
    json!({
        "type": "object",
        "properties": {
            "matchLabels": labels(),
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": string(),
                        "operator": string(),
                        "values": {"type": "array", "items": string()}
                    }
                }
            }
        }
    })
}

fn conditions() -> Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": string(),
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "reason": string(),
                "message": string(),
                "lastTransitionTime": string(),
                "observedGeneration": {"type": "integer"}
            }
        }
    })
}

/// kuid's prefix types, plus `pool` and `aggregate` that upstream's examples were written with
/// (an older kuid; both mean `regular` here).
fn prefix_type() -> Value {
    json!({"type": "string", "enum": ["network", "regular", "pool", "aggregate"]})
}

fn index_spec(b: &Backend) -> Value {
    match b.kind {
        BackendKind::Ipam => json!({
            "type": "object",
            "properties": {
                "prefixes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["prefix"],
                        "properties": {"prefix": string(), "prefixType": prefix_type(), "labels": labels()}
                    }
                },
                "labels": labels()
            }
        }),
        BackendKind::Vlan | BackendKind::As => json!({
            "type": "object",
            "properties": {"minID": id(b.max_id()), "maxID": id(b.max_id()), "labels": labels()}
        }),
        BackendKind::Genid => json!({
            "type": "object",
            "required": ["type"],
            "properties": {
                "minID": id(None),
                "maxID": id(None),
                "type": {"type": "string", "enum": ["16bit", "32bit", "48bit", "64bit"]},
                "labels": labels()
            }
        }),
        BackendKind::Extcomm => json!({
            "type": "object",
            "required": ["type", "subType"],
            "properties": {
                "minID": id(None),
                "maxID": id(None),
                "transitive": boolean(),
                "type": {"type": "string", "enum": ["2byteAS", "4byteAS", "ipv4Address", "opaque"]},
                "subType": {"type": "string", "enum": ["target", "origin"]},
                "globalID": string(),
                "labels": labels()
            }
        }),
    }
}

fn index_status(b: &Backend) -> Value {
    match b.kind {
        BackendKind::Ipam => json!({
            "type": "object",
            "properties": {"conditions": conditions(), "prefixes": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
        }),
        _ => json!({
            "type": "object",
            "properties": {"conditions": conditions(), "minID": id(None), "maxID": id(None)}
        }),
    }
}

fn claim_spec(b: &Backend) -> Value {
    match b.kind {
        BackendKind::Ipam => json!({
            "type": "object",
            "required": ["index"],
            "properties": {
                "index": string(),
                "prefixType": prefix_type(),
                "prefix": string(),
                "address": string(),
                "range": string(),
                "defaultGateway": boolean(),
                "createPrefix": boolean(),
                "prefixLength": {"type": "integer", "minimum": 0, "maximum": 128},
                "addressFamily": {"type": "string", "enum": ["ipv4", "ipv6"]},
                "idx": {"type": "integer", "minimum": 0},
                "labels": labels(),
                "selector": selector()
            }
        }),
        _ => json!({
            "type": "object",
            "required": ["index"],
            "properties": {
                "index": string(),
                "id": id(b.max_id()),
                "range": string(),
                "labels": labels(),
                "selector": selector()
            }
        }),
    }
}

fn claim_status(b: &Backend) -> Value {
    match b.kind {
        BackendKind::Ipam => json!({
            "type": "object",
            "properties": {
                "conditions": conditions(),
                "range": string(),
                "address": string(),
                "prefix": string(),
                "defaultGateway": string(),
                "expiryTime": string()
            }
        }),
        _ => json!({
            "type": "object",
            "properties": {"conditions": conditions(), "id": id(None), "range": string(), "expiryTime": string()}
        }),
    }
}

fn entry_spec(b: &Backend) -> Value {
    match b.kind {
        BackendKind::Ipam => json!({
            "type": "object",
            "required": ["index"],
            "properties": {
                "index": string(),
                "indexEntry": boolean(),
                "prefixType": string(),
                "claimType": string(),
                "prefix": string(),
                "defaultGateway": boolean(),
                "addressFamily": string(),
                "labels": labels()
            }
        }),
        _ => json!({
            "type": "object",
            "required": ["index"],
            "properties": {
                "index": string(),
                "indexEntry": boolean(),
                "claimType": string(),
                "id": string(),
                "labels": labels(),
                "selector": selector()
            }
        }),
    }
}

fn crd(b: &Backend, kind: &str, plural: &str, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{}", b.group)},
        "spec": {
            "group": b.group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.to_lowercase(),
                "categories": ["kuid", "choreo-ids"]
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": string(),
                        "kind": string(),
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status
                    }
                }}
            }]
        }
    })
}

/// The fifteen CRDs.
pub(crate) fn crds() -> Vec<Value> {
    let mut out = Vec::new();
    for b in &BACKENDS {
        out.push(crd(b, &b.index_kind(), b.index_plural, index_spec(b), index_status(b)));
        out.push(crd(b, &b.claim_kind(), b.claim_plural, claim_spec(b), claim_status(b)));
        out.push(crd(
            b,
            &b.entry_kind(),
            b.entry_plural,
            entry_spec(b),
            json!({"type": "object", "properties": {"conditions": conditions()}}),
        ));
    }
    out
}

/// The fifteen APIs, marked built-in (a project cannot redefine them).
pub(crate) fn resources() -> Result<Vec<ApiResource>, CrdError> {
    crds()
        .iter()
        .map(|c| {
            let mut res = ApiResource::from_crd(c)?;
            res.builtin = true;
            Ok(res)
        })
        .collect()
}

/// The backend a group belongs to.
pub(crate) fn backend_of(group: &str) -> Option<&'static Backend> {
    BACKENDS.iter().find(|b| b.group == group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_apis_register_with_kuids_names() {
        let res = resources().unwrap();
        assert_eq!(res.len(), 15);
        assert!(res.iter().all(|r| r.builtin && r.namespaced && r.schema.is_some() && r.version == VERSION));
        let names: Vec<String> = res.iter().map(|r| format!("{}.{}", r.plural, r.group)).collect();
        for want in [
            "ipindices.ipam.be.kuid.dev",
            "vlanentries.vlan.be.kuid.dev",
            "asindexes.as.be.kuid.dev",
            "genidclaims.genid.be.kuid.dev",
            "extcommindices.extcomm.be.kuid.dev",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert_eq!(backend_of("vlan.be.kuid.dev").map(|b| b.claim_kind()), Some("VLANClaim".into()));
    }
}
