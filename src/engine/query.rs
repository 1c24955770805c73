//! Read-only requests, answered from a store snapshot on the caller's thread.
//!
//! These never queue behind the engine: a `get` during a long run is answered from the last
//! committed state.

use serde_json::Value;

use crate::api::crd::ResolveError;
use crate::api::object::{GroupKind, ObjectKey};
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::protocol::{ApiResourceInfo, ErrorKind, ErrorReport, GetRequest, Reply};
use crate::store::{State, Stored};

/// Every registered API, sorted by resource name then group.
pub fn api_resources(state: &State) -> Vec<ApiResourceInfo> {
    state
        .registry
        .sorted()
        .iter()
        .map(|r| ApiResourceInfo {
            resource: r.plural.clone(),
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            namespaced: r.namespaced,
            short_names: r.short_names.clone(),
            categories: r.categories.clone(),
            builtin: r.builtin,
        })
        .collect()
}

pub fn resolve_error(e: ResolveError) -> ErrorReport {
    let hint = match &e {
        ResolveError::Unknown(_) => "`choreo api-resources` lists the resource types the server knows",
        ResolveError::Ambiguous { .. } => "qualify the resource with its group, e.g. `widgets.example.com`",
    };
    ErrorReport::new(ErrorKind::NotFound, e.to_string()).with_hint(hint)
}

/// `get`: one object or a sorted list.
/// The first half of `get`, under the read lock: only the resource and the stored objects
/// (`Arc`s) are taken; [`render`] parses and renders them after the lock is let go, so a large
/// list never holds up a commit.
pub fn find(state: &State, req: &GetRequest) -> Result<Found, ErrorReport> {
    {
        let res = state.registry.resolve(&req.resource).map_err(resolve_error)?;
        let gk = GroupKind::new(res.group.clone(), res.kind.clone());
        let objects = match &req.name {
            Some(name) => {
                let ns = if res.namespaced { req.namespace.as_deref().unwrap_or("default") } else { "" };
                let key = ObjectKey::new(&gk, ns, name);
                let one = state
                    .objects
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| ErrorReport::new(ErrorKind::NotFound, format!("{key}: not found")))?;
                vec![one]
            }
            None => state.list_stored(&gk, if res.namespaced { req.namespace.as_deref() } else { None }),
        };
        let selection = Selection::of(req)?;
        let objects = if selection.is_everything() {
            objects
        } else {
            objects.into_iter().filter(|o| selection.matches(&o.value())).collect()
        };
        Ok(Found { res, objects })
    }
}

/// The second half of `get`, without any lock.
pub fn render(found: Found, req: &GetRequest) -> Reply {
    let render = |stored: &Stored| {
        let obj = stored.value();
        let text = if req.show_managed_fields {
            serde_json::to_string(&*obj)
        } else {
            serde_json::to_string(&without_managed_fields(&obj))
        };
        // Encoding a Value cannot fail.
        text.unwrap_or_default()
    };
    let Found { res, objects } = found;
    match &req.name {
        Some(_) => Reply::Object(objects.first().map(|o| render(o)).unwrap_or_default()),
        None => Reply::List {
            api_version: res.api_version(),
            kind: res.kind.clone(),
            namespaced: res.namespaced,
            items: objects.iter().map(|o| render(o)).collect(),
            columns: res
                .printer_columns
                .iter()
                .map(|(name, json_path, priority)| crate::protocol::PrinterColumn {
                    name: name.clone(),
                    json_path: json_path.clone(),
                    priority: *priority,
                })
                .collect(),
        },
    }
}

/// What `get` takes under the lock.
pub struct Found {
    res: std::sync::Arc<crate::api::crd::ApiResource>,
    objects: Vec<std::sync::Arc<Stored>>,
}

/// A copy of `obj` without `metadata.managedFields`, as reads show objects by default.
pub fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    out
}

/// The label and field selectors of a `get` (or `get -w`), parsed.
pub(super) struct Selection {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Selection {
    pub(super) fn of(req: &GetRequest) -> Result<Selection, ErrorReport> {
        let invalid = |m: String| ErrorReport::new(ErrorKind::Invalid, m);
        Ok(Selection {
            labels: req.label_selector.as_deref().map(LabelSelector::parse).transpose().map_err(invalid)?,
            fields: req.field_selector.as_deref().map(FieldSelector::parse).transpose().map_err(invalid)?,
        })
    }

    fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub(super) fn matches(&self, v: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches(v)) && self.fields.as_ref().is_none_or(|f| f.matches(v))
    }
}

/// `explain RESOURCE[.field.path]`: the longest dotted prefix that names a resource type
/// (`devices.net.example.org.spec` and `devices.spec` both work), then its fields.
pub fn explain(state: &State, target: &str) -> Result<Reply, ErrorReport> {
    let parts: Vec<&str> = target.split('.').collect();
    let mut last_error = None;
    for cut in (1..=parts.len()).rev() {
        match state.registry.resolve(&parts[..cut].join(".")) {
            Ok(res) => {
                return crate::api::explain::explain(&res, &parts[cut..])
                    .map(Reply::Message)
                    .map_err(|m| ErrorReport::new(ErrorKind::NotFound, m));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.map(resolve_error).unwrap_or_else(|| ErrorReport::new(ErrorKind::Invalid, "nothing to explain")))
}
