//! CRDs turned into registered APIs, and the registry that resolves names to them.
//!
//! [`ApiResource::from_crd`] applies the registration rules (one storage version, versions named
//! like Kubernetes versions are served, an internal storage version may sit behind exactly one
//! external version) and parses the storage version's schema once. [`Registry`] maps group/kind
//! to resources and resolves the names a user types (`helloworlds.example.com`, `helloworld`,
//! `HelloWorld`, short names) the way kubectl does.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::object::GroupKind;
use super::schema::Schema;

/// A registered API: what discovery shows and what validation and apply need.
#[derive(Debug, Clone)]
pub struct ApiResource {
    pub group: String,
    /// The served (external) version; objects are read and written with this version.
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// The storage version's schema; `None` when the CRD declares no schema (anything goes).
    pub schema: Option<Arc<Schema>>,
    /// Built into choreo (CRDs, reconcilers, libraries, upstream refs).
    pub builtin: bool,
    /// The served version's `additionalPrinterColumns`: (name, jsonPath, priority).
    pub printer_columns: Vec<(String, String, i64)>,
}

impl ApiResource {
    pub(crate) fn group_kind(&self) -> GroupKind {
        GroupKind::new(self.group.clone(), self.kind.clone())
    }

    pub(crate) fn api_version(&self) -> String {
        super::object::api_version(&self.group, &self.version)
    }

    /// `plural.group`, the name `get` and `api-resources` use.
    pub(crate) fn full_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Builds a resource from a `CustomResourceDefinition` object.
    pub(crate) fn from_crd(crd: &Value) -> Result<ApiResource, CrdError> {
        let name =
            crd.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("<unnamed>").to_string();
        let err = |message: String| CrdError { crd: name.clone(), message };
        let spec = crd.get("spec").ok_or_else(|| err("spec: Required value".into()))?;
        let group = req_str(spec, "group").map_err(|m| err(format!("spec.{m}")))?;
        let names = spec.get("names").ok_or_else(|| err("spec.names: Required value".into()))?;
        let kind = req_str(names, "kind").map_err(|m| err(format!("spec.names.{m}")))?;
        let plural = req_str(names, "plural").map_err(|m| err(format!("spec.names.{m}")))?;
        let singular =
            names.get("singular").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
        let list_kind = format!("{kind}List");
        let short_names = str_list(names.get("shortNames"));
        let categories = str_list(names.get("categories"));
        let namespaced = match spec.get("scope").and_then(Value::as_str) {
            Some("Namespaced") | None => true,
            Some("Cluster") => false,
            Some(other) => {
                return Err(err(format!(
                    "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                )))
            }
        };
        let expected_name = format!("{plural}.{group}");
        if name != expected_name {
            return Err(err(format!("metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group ({expected_name:?})")));
        }
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| err("spec.versions: Required value: must have at least one version".into()))?;

        // Registration rules: exactly one storage version; at most one external (Kubernetes-style)
        // version; a non-Kubernetes-style (internal) version must be the storage version.
        let mut storage: Option<(String, &Value)> = None;
        let mut external: Option<String> = None;
        for (i, v) in versions.iter().enumerate() {
            let vname = req_str(v, "name").map_err(|m| err(format!("spec.versions[{i}].{m}")))?;
            let is_storage = v.get("storage").and_then(Value::as_bool).unwrap_or(false);
            if is_storage {
                if storage.is_some() {
                    return Err(err("a crd can only have 1 storage version".into()));
                }
                storage = Some((vname.clone(), v));
            }
            if is_kube_version(&vname) {
                if external.is_some() {
                    return Err(err(format!(
                        "a crd can only have 1 external version, got {} and {vname}",
                        external.unwrap_or_default()
                    )));
                }
                external = Some(vname);
            } else if !is_storage {
                return Err(err(format!("an internal version {vname} needs to be the storage version")));
            }
        }
        let (storage_name, storage_version) =
            storage.ok_or_else(|| err("a crd needs exactly 1 storage version, found none".into()))?;
        let version = external
            .ok_or_else(|| {
                err(format!("no external version: {storage_name} is not a served version name like v1 or v1alpha1"))
            })?
            .to_string();
        let schema = match storage_version.get("schema").and_then(|s| s.get("openAPIV3Schema")) {
            None | Some(Value::Null) => None,
            Some(s) => {
                let in_version =
                    |e: super::schema::SchemaError| err(format!("spec.versions[{storage_name}].schema.{e}"));
                let schema = Schema::parse(s, "openAPIV3Schema").map_err(in_version)?;
                // Rules that could run for minutes are refused here, as Kubernetes does.
                super::cel::check_costs(&schema, "openAPIV3Schema").map_err(in_version)?;
                Some(Arc::new(schema))
            }
        };
        // Columns of the served version (where kubectl reads them).
        let printer_columns = versions
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(version.as_str()))
            .and_then(|v| v.get("additionalPrinterColumns"))
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        let name = c.get("name")?.as_str()?.to_string();
                        let path = c.get("jsonPath")?.as_str()?.to_string();
                        Some((name, path, c.get("priority").and_then(Value::as_i64).unwrap_or(0)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ApiResource {
            printer_columns,
            group,
            version,
            kind,
            list_kind,
            plural,
            singular,
            short_names,
            categories,
            namespaced,
            schema,
            builtin: false,
        })
    }
}

/// A CRD that cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid crd {crd}: {message}")]
pub struct CrdError {
    pub crd: String,
    pub message: String,
}

fn req_str(v: &Value, field: &str) -> Result<String, String> {
    match v.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(format!("{field}: Required value")),
        Some(other) => Err(format!("{field}: Invalid value: {other}: must be a string")),
    }
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether `v` is a Kubernetes-style version name (`v1`, `v1alpha1`, `v2beta3`).
pub(crate) fn is_kube_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || rest.starts_with('0') {
        return false;
    }
    let rest = &rest[digits..];
    if rest.is_empty() {
        return true;
    }
    let tail = rest.strip_prefix("alpha").or_else(|| rest.strip_prefix("beta"));
    match tail {
        Some(t) => !t.is_empty() && !t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// The registered APIs, keyed by group/kind.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_gk: BTreeMap<GroupKind, Arc<ApiResource>>,
}

/// A resource name the user typed that does not resolve to exactly one API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("the server doesn't have a resource type \"{0}\"")]
    Unknown(String),
    #[error("resource type \"{name}\" is ambiguous: {}", candidates.join(", "))]
    Ambiguous { name: String, candidates: Vec<String> },
}

impl Registry {
    pub(crate) fn insert(&mut self, res: ApiResource) {
        self.by_gk.insert(res.group_kind(), Arc::new(res));
    }

    pub(crate) fn remove(&mut self, gk: &GroupKind) -> Option<Arc<ApiResource>> {
        self.by_gk.remove(gk)
    }

    pub(crate) fn get(&self, gk: &GroupKind) -> Option<&Arc<ApiResource>> {
        self.by_gk.get(gk)
    }

    /// Every resource, sorted by plural name then group (the order of `api-resources`).
    pub(crate) fn sorted(&self) -> Vec<Arc<ApiResource>> {
        let mut all: Vec<_> = self.by_gk.values().cloned().collect();
        all.sort_by(|a, b| (&a.plural, &a.group).cmp(&(&b.plural, &b.group)));
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.by_gk.len()
    }

    /// Resolves `NAME[.GROUP]` where NAME is a plural, singular, kind or short name
    /// (case-insensitive), as kubectl does.
    pub(crate) fn resolve(&self, input: &str) -> Result<Arc<ApiResource>, ResolveError> {
        let lower = input.to_lowercase();
        let matches_name = |r: &ApiResource, n: &str| {
            r.plural == n
                || r.singular == n
                || r.kind.to_lowercase() == n
                || r.short_names.iter().any(|s| s.to_lowercase() == n)
        };
        // Exact `name.group` first, then a bare name in any group.
        let mut found: Vec<&Arc<ApiResource>> = self
            .by_gk
            .values()
            .filter(|r| {
                lower
                    .strip_suffix(&r.group.to_lowercase())
                    .and_then(|n| n.strip_suffix('.'))
                    .is_some_and(|n| !r.group.is_empty() && matches_name(r, n))
            })
            .collect();
        if found.is_empty() {
            found = self.by_gk.values().filter(|r| matches_name(r, &lower)).collect();
        }
        match found.len() {
            0 => Err(ResolveError::Unknown(input.to_string())),
            1 => Ok(found[0].clone()),
            _ => Err(ResolveError::Ambiguous {
                name: input.to_string(),
                candidates: found.iter().map(|r| r.full_name()).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(versions: Value) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "helloworlds.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"kind": "HelloWorld", "plural": "helloworlds", "singular": "helloworld", "shortNames": ["hw"]},
                     "versions": versions}
        })
    }

    #[test]
    fn registers_single_version_crd() {
        let r = ApiResource::from_crd(&crd(json!([{"name": "v1alpha1", "served": true, "storage": true,
            "schema": {"openAPIV3Schema": {"type": "object"}}}])))
        .unwrap();
        assert_eq!(r.full_name(), "helloworlds.example.com");
        assert_eq!(r.api_version(), "example.com/v1alpha1");
        assert!(r.namespaced && r.schema.is_some());
    }

    #[test]
    fn costly_rules_are_refused_naming_crd_path_and_rule() {
        let version = |max_items: Option<u64>| {
            let mut list = json!({"type": "array", "items": {"type": "string"},
                "x-kubernetes-validations": [{"rule": "self.all(x, self.exists_one(y, x == y))"}]});
            if let Some(m) = max_items {
                // Comparing strings costs by their length: bounded too.
                list["maxItems"] = json!(m);
                list["items"]["maxLength"] = json!(63);
            }
            json!([{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {"names": list}}}}}}])
        };
        let e = ApiResource::from_crd(&crd(version(None))).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "invalid crd helloworlds.example.com: spec.versions[v1].schema.openAPIV3Schema.properties.spec.properties.names\
                 .x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x"
            ),
            "{e}"
        );
        assert!(e.ends_with("\"self.all(x, self.exists_one(y, x == y))\""), "{e}");
        ApiResource::from_crd(&crd(version(Some(64)))).unwrap();
    }

    #[test]
    fn internal_storage_version_behind_one_external_version() {
        let r = ApiResource::from_crd(&crd(json!([
            {"name": "ipam", "storage": true}, {"name": "v1alpha1", "storage": false}
        ])))
        .unwrap();
        assert_eq!(r.version, "v1alpha1");
    }

    #[test]
    fn registration_rules_reject_bad_version_sets() {
        let two_storage = crd(json!([{"name": "v1", "storage": true}, {"name": "v2", "storage": true}]));
        assert!(ApiResource::from_crd(&two_storage).unwrap_err().message.contains("1 storage"));
        let none = crd(json!([{"name": "v1", "storage": false}]));
        assert!(ApiResource::from_crd(&none).unwrap_err().message.contains("storage"));
        let two_ext = crd(json!([{"name": "v1", "storage": true}, {"name": "v2"}]));
        assert!(ApiResource::from_crd(&two_ext).unwrap_err().message.contains("external"));
        let internal_not_storage = crd(json!([{"name": "v1", "storage": true}, {"name": "x"}]));
        assert!(ApiResource::from_crd(&internal_not_storage).is_err());
    }

    #[test]
    fn kube_versions() {
        for ok in ["v1", "v1alpha1", "v2beta3", "v10"] {
            assert!(is_kube_version(ok), "{ok}");
        }
        for bad in ["v0", "1", "v1alpha", "v1gamma1", "ipam", "v01"] {
            assert!(!is_kube_version(bad), "{bad}");
        }
    }

    #[test]
    fn resolves_like_kubectl() {
        let mut reg = Registry::default();
        reg.insert(ApiResource::from_crd(&crd(json!([{"name": "v1alpha1", "storage": true}]))).unwrap());
        for name in
            ["helloworlds.example.com", "helloworlds", "helloworld", "HelloWorld", "hw", "HelloWorld.example.com"]
        {
            assert_eq!(reg.resolve(name).unwrap().kind, "HelloWorld", "{name}");
        }
        assert!(matches!(reg.resolve("nope"), Err(ResolveError::Unknown(_))));
    }
}
