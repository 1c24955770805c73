//! Template reconcilers: `gotemplate` (Go's text/template, through `gotmpl`) and
//! `jinjatemplate` (Jinja2 through `minijinja`, accepting the pongo2 dialect upstream's templates
//! are written in).
//!
//! Both share one contract, the one upstream gives them, extended: the for-object goes in, the
//! rendered text is YAML whose documents are the children (upstream took exactly one), each of
//! a kind the reconciler `owns`. choreo stamps the controller owner reference, deletes the
//! children the template no longer renders, applies the new ones, then puts the reconciler's
//! finalizer (and `conditionType` condition, when configured) on the for-object. When the
//! for-object is being deleted the template is not rendered: its children are deleted and the
//! finalizer removed. A failed render is an error of the reconcile, recorded on the condition.
//!
//! Templates are compiled once per load ([`compile`]); a reconcile only renders. Printing a
//! missing value is an error that names the template place and the path (Go would print
//! `<no value>`, pongo2 an empty string); testing a missing value (`if`, `with`, `default`,
//! `is defined`) works as in Go and Jinja2.
//!
//! Invariant: like every runtime, this module only talks to the store through [`Client`]; it
//! knows nothing of files, the engine or the worker process.

mod data;
mod gotemplate;
mod jinja;
mod output;
mod pongo2;

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde_json::Value;

use super::children::{self, client_outcome, Children};
use super::{Budget, Client, Lang, Outcome, ReconcilerConfig, Runtime};
use crate::api::object;

/// One template engine's compiled set: renders the main template with an object as its data.
trait Engine: Send {
    /// The rendered text, or an error that starts with `file:line:column` where known.
    fn render(&self, object: &Value, budget: &Budget<'_>) -> Result<String, String>;
}

/// Compiles a template reconciler's code files (parsed once, here).
pub(crate) fn compile(cfg: Arc<ReconcilerConfig>) -> Result<TemplateRuntime, String> {
    let engine: Box<dyn Engine> = match cfg.lang {
        Lang::GoTemplate => Box::new(gotemplate::GoTemplate::compile(&cfg.code, cfg.limits.steps)?),
        Lang::Jinja => Box::new(jinja::Jinja::compile(&cfg.code, cfg.limits.steps)?),
        Lang::Starlark => return Err("not a template reconciler".into()),
    };
    Ok(TemplateRuntime { cfg, engine })
}

/// Where the quoted literal (`"…"` or `'…'`, with backslash escapes) starting at `start` ends:
/// the index just after its closing quote, `None` when it is not closed. Both dialects' scanners
/// use it to step over literals that may contain delimiters.
fn quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = *bytes.get(start)?;
    let mut i = start + 1;
    while i < bytes.len() && bytes[i] != quote {
        if bytes[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    (i < bytes.len()).then_some(i + 1)
}

/// The 1-based line and column (in characters) of byte `offset` of `src`.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |i| before[i + 1..].chars().count()) + 1;
    (line, column)
}

/// A reconciler's templates compiled for rendering text only, outside a reconcile (the
/// benchmarks measure the engines through it).
pub struct Renderer {
    engine: Box<dyn Engine>,
    limits: super::Limits,
}

impl Renderer {
    /// Compiles a `gotemplate` or `jinjatemplate` reconciler's code.
    pub fn new(cfg: &ReconcilerConfig) -> Result<Renderer, String> {
        let runtime = compile(Arc::new(cfg.clone()))?;
        Ok(Renderer { engine: runtime.engine, limits: cfg.limits })
    }

    /// The main template rendered with `object`, under the reconciler's limits.
    pub fn render(&self, object: &Value) -> Result<String, String> {
        let interrupt = super::Interrupt::default();
        self.engine.render(object, &Budget::start(self.limits, None, &interrupt))
    }
}

/// A compiled template reconciler.
pub struct TemplateRuntime {
    cfg: Arc<ReconcilerConfig>,
    engine: Box<dyn Engine>,
}

impl std::fmt::Debug for TemplateRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateRuntime").field("reconciler", &self.cfg.name).finish_non_exhaustive()
    }
}

/// The rendered text as children: every non-empty YAML document, each a mapping of a kind the
/// reconciler owns. Errors name the line of the rendered output and show it.
fn parse_children(cfg: &ReconcilerConfig, text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let json: Value = serde::Deserialize::deserialize(doc).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let shown = line
                .and_then(|l| text.lines().nth(l.saturating_sub(1)))
                .map(|l| format!(" (the line reads {:?})", l.trim_end()))
                .unwrap_or_default();
            let message = object::yaml_message(&e);
            match line {
                Some(l) => format!("the rendered output is not valid YAML: line {l}: {message}{shown}"),
                None => format!("the rendered output is not valid YAML (document {n}): {message}"),
            }
        })?;
        if json.is_null() {
            continue;
        }
        if !json.is_object() {
            return Err(format!("rendered document {n} is not a mapping (an object with apiVersion and kind)"));
        }
        let api_version = json.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = json.get("kind").and_then(Value::as_str).unwrap_or("");
        if api_version.is_empty() || kind.is_empty() {
            return Err(format!("rendered document {n} has no apiVersion or kind"));
        }
        let (group, _) = object::split_api_version(api_version);
        if !cfg.owns.iter().any(|o| o.group == group && o.kind == kind) {
            let owned: Vec<String> = cfg.owns.iter().map(|o| o.to_string()).collect();
            return Err(format!(
                "rendered document {n} is a {kind}.{api_version}, which the reconciler does not own (spec.owns: {})",
                if owned.is_empty() { "none".to_string() } else { owned.join(", ") }
            ));
        }
        out.push(json);
    }
    Ok(out)
}

impl Runtime for TemplateRuntime {
    fn reconcile(&self, live: &Value, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome {
        let cfg = &*self.cfg;
        if object::deletion_timestamp(live).is_some() {
            return children::finish_delete(cfg, live, client);
        }
        let rendered = self.engine.render(live, budget).and_then(|text| parse_children(cfg, &text));
        let docs = match rendered {
            Ok(docs) => docs,
            Err(message) => {
                children::record_failure(cfg, live, client, &message);
                return Outcome::Error(message);
            }
        };
        let mut children = Children::new(live);
        for doc in docs {
            if let Err(e) = children.create(doc) {
                children::record_failure(cfg, live, client, &e.message);
                return Outcome::Error(e.message);
            }
        }
        if let Err(e) = children.apply(cfg, client) {
            return client_outcome(e);
        }
        if children::marks_in_place(cfg, live) {
            return Outcome::Done;
        }
        let applied = children::intent(live, &cfg.name).and_then(|mut intent| {
            // Only the finalizer and the condition are this reconciler's on the for-object.
            if let Some(map) = intent.as_object_mut() {
                map.remove("spec");
                if cfg.condition_type.is_none() {
                    map.remove("status");
                }
            }
            children::apply_with_marks(cfg, intent, live, client)
        });
        match applied {
            Ok(()) => Outcome::Done,
            Err(e) => client_outcome(e),
        }
    }
}
