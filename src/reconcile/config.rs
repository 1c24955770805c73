//! A reconciler's configuration, parsed and checked from its `Reconciler` object.

use std::collections::BTreeMap;

use serde_json::Value;

use super::selector::Selector;
use crate::api::object::GroupKind;

/// The language of a reconciler's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Starlark,
    GoTemplate,
    Jinja,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Starlark => "starlark",
            Lang::GoTemplate => "gotemplate",
            Lang::Jinja => "jinjatemplate",
        }
    }

    /// The code file a reconciler of this language must have.
    pub fn main_file(self) -> &'static str {
        match self {
            Lang::Starlark => "reconciler.star",
            Lang::GoTemplate => "main.tpl",
            Lang::Jinja => "main.jinja2",
        }
    }
}

/// A group/version/kind a reconciler refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceRef {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl ResourceRef {
    pub fn group_kind(&self) -> GroupKind {
        GroupKind::new(self.group.clone(), self.kind.clone())
    }

    pub fn api_version(&self) -> String {
        crate::api::object::api_version(&self.group, &self.version)
    }
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.kind, self.api_version())
    }
}

/// A checked reconciler configuration.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub name: String,
    pub for_: ResourceRef,
    pub for_selector: Selector,
    pub owns: Vec<ResourceRef>,
    pub watches: Vec<(ResourceRef, Selector)>,
    /// The condition choreo maintains on the for-object (5-argument contract), if any.
    pub condition_type: Option<String>,
    /// Also apply `spec` of the returned object, and run the code on deletion.
    pub spec_update: bool,
    pub lang: Lang,
    /// File name → source.
    pub code: BTreeMap<String, String>,
    /// What each reconcile may use (`spec.limits`).
    pub limits: super::Limits,
}

impl ReconcilerConfig {
    /// Parses a `Reconciler` object. Every problem is reported with its field path.
    pub fn from_object(obj: &Value) -> Result<ReconcilerConfig, String> {
        let name = obj
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("metadata.name: Required value")?
            .to_string();
        let spec = obj.get("spec").and_then(Value::as_object).ok_or("spec: Required value")?;
        let resource = |v: &Value, path: &str| -> Result<ResourceRef, String> {
            let field = |f: &str| {
                v.get(f)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty() || f == "group")
                    .map(str::to_string)
                    .ok_or_else(|| format!("{path}.{f}: Required value"))
            };
            Ok(ResourceRef { group: field("group")?, version: field("version")?, kind: field("kind")? })
        };
        let for_v = spec.get("for").ok_or("spec.for: Required value")?;
        let for_ = resource(for_v, "spec.for")?;
        let for_selector = Selector::parse(for_v.get("selector"), "spec.for.selector")?;
        let mut owns = Vec::new();
        for (i, o) in spec.get("owns").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let path = format!("spec.owns[{i}]");
            if o.get("selector").is_some_and(|s| !s.is_null()) {
                return Err(format!("{path}.selector: Forbidden: owns takes no selector"));
            }
            owns.push(resource(o, &path)?);
        }
        let mut watches = Vec::new();
        for (i, w) in spec.get("watches").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let path = format!("spec.watches[{i}]");
            let r = resource(w, &path)?;
            let sel = Selector::parse(w.get("selector"), &format!("{path}.selector"))?;
            if sel.matches_nothing() {
                return Err(format!("{path}.selector: Required value: a watch needs a selector"));
            }
            if !sel.only_match() {
                return Err(format!("{path}.selector: Forbidden: a watch selector may only use match"));
            }
            watches.push((r, sel));
        }
        let code: BTreeMap<String, String> = match spec.get("code") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str().map(|s| (k.clone(), s.to_string())).ok_or(format!("spec.code[{k}]: must be a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("spec.code: must be a map of file name to source".into()),
        };
        let lang = match spec.get("type").and_then(Value::as_str) {
            Some("starlark") => Lang::Starlark,
            Some("gotemplate") => Lang::GoTemplate,
            Some("jinjatemplate") => Lang::Jinja,
            Some(other) => return Err(format!("spec.type: Unsupported value: {other:?}: supported values: \"starlark\", \"gotemplate\", \"jinjatemplate\"")),
            None => return Err("spec.type: Required value: the reconciler has no code (no .star, .tpl or .jinja2 file)".into()),
        };
        if !code.contains_key(lang.main_file()) {
            return Err(format!(
                "spec.code: Required value: a {} reconciler needs {}",
                lang.as_str(),
                lang.main_file()
            ));
        }
        Ok(ReconcilerConfig {
            name,
            for_,
            for_selector,
            owns,
            watches,
            condition_type: spec
                .get("conditionType")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            spec_update: spec.get("specUpdate").and_then(Value::as_bool).unwrap_or(false),
            lang,
            code,
            limits: super::Limits::from_spec(spec.get("limits"))?,
        })
    }

    /// Every kind the reconciler refers to (for, owns, watches).
    pub fn referenced(&self) -> impl Iterator<Item = &ResourceRef> {
        std::iter::once(&self.for_).chain(self.owns.iter()).chain(self.watches.iter().map(|(r, _)| r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reconciler(spec: Value) -> Value {
        json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Reconciler", "metadata": {"name": "r"}, "spec": spec})
    }

    #[test]
    fn parses_a_complete_reconciler() {
        let c = ReconcilerConfig::from_object(&reconciler(json!({
            "for": {"group": "example.com", "version": "v1alpha1", "kind": "HelloWorld", "selector": {}},
            "owns": [{"group": "example.com", "version": "v1alpha1", "kind": "Greeting"}],
            "watches": [{"group": "example.com", "version": "v1alpha1", "kind": "Other", "selector": {"match": {"metadata.name": "x"}}}],
            "type": "starlark", "code": {"reconciler.star": "def reconcile(self): pass"}, "conditionType": "Ready"
        })))
        .unwrap();
        assert_eq!(c.for_.to_string(), "HelloWorld.example.com/v1alpha1");
        assert_eq!(c.owns.len(), 1);
        assert_eq!(c.condition_type.as_deref(), Some("Ready"));
        assert_eq!(c.referenced().count(), 3);
    }

    #[test]
    fn reports_missing_code_and_bad_watches() {
        let base = json!({"for": {"group": "g", "version": "v1", "kind": "K", "selector": {}}});
        let e = ReconcilerConfig::from_object(&reconciler(base.clone())).unwrap_err();
        assert!(e.contains("has no code"), "{e}");
        let mut no_main = base.clone();
        no_main["type"] = json!("starlark");
        no_main["code"] = json!({"other.star": ""});
        assert!(ReconcilerConfig::from_object(&reconciler(no_main)).unwrap_err().contains("reconciler.star"));
        let mut watch = base;
        watch["type"] = json!("starlark");
        watch["code"] = json!({"reconciler.star": ""});
        watch["watches"] = json!([{"group": "g", "version": "v1", "kind": "W"}]);
        assert!(ReconcilerConfig::from_object(&reconciler(watch))
            .unwrap_err()
            .contains("spec.watches[0].selector: Required"));
    }
}
