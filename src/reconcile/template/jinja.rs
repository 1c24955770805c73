//! `jinjatemplate` reconcilers: Jinja2 through `minijinja`, with the pongo2 dialect of
//! upstream's templates accepted as written (see [`super::pongo2`]).
//!
//! Every code file is a template named by its file name, compiled once; `main.jinja2` renders
//! with the for-object's fields as top-level variables (`metadata.name`, `spec.x`). Undefined
//! values are semi-strict: printing or iterating one is an error naming it, testing one (`if`,
//! `default`, `is defined`) works as in Jinja2. Nothing is HTML-escaped (the output is YAML).

use std::collections::BTreeMap;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use super::output::Output;
use super::{pongo2, Engine};
use crate::reconcile::Budget;

const MAIN: &str = "main.jinja2";

pub(super) struct Jinja {
    env: Environment<'static>,
}

impl Jinja {
    pub(super) fn compile(code: &BTreeMap<String, String>, steps: u64) -> Result<Jinja, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_fuel(Some(steps));
        // Keep the text as written: YAML does not mind, and `dev render` shows what is rendered.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .map_err(|e| format!("{MAIN}: {e}"))?,
        );
        // Python's methods on values (`peers.items()`, `name.split("-")`), which Jinja2 has.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        pongo2::add_filters(&mut env);
        for (name, src) in code.iter().filter(|(n, _)| n.ends_with(".jinja2") || n.ends_with(".j2")) {
            let jinja = pongo2::to_jinja(src);
            env.add_template_owned(name.clone(), jinja).map_err(|e| describe(&e, None))?;
        }
        env.get_template(MAIN).map_err(|e| describe(&e, None))?;
        Ok(Jinja { env })
    }
}

impl Engine for Jinja {
    fn render(&self, object: &Value, budget: &Budget<'_>) -> Result<String, String> {
        let template = self.env.get_template(MAIN).map_err(|e| describe(&e, None))?;
        let mut out = Output::new(budget);
        match template.render_captured_to(super::data::to_jinja(object), &mut out) {
            Ok(_) => Ok(out.into_string()),
            Err(e) => Err(out.stopped().unwrap_or_else(|| describe(&e, Some(&self.env)))),
        }
    }
}

/// A minijinja error as one line: `file:line:column: what`, naming the expression of an
/// undefined value.
fn describe(e: &minijinja::Error, env: Option<&Environment<'static>>) -> String {
    let name = e.name().unwrap_or(MAIN);
    let source = e
        .template_source()
        .map(str::to_string)
        .or_else(|| env.and_then(|env| env.get_template(name).ok()).map(|t| t.source().to_string()));
    let mut place = name.to_string();
    let mut expression = None;
    if let Some(line) = e.line() {
        place.push_str(&format!(":{line}"));
        if let (Some(range), Some(src)) = (e.range(), source.as_deref()) {
            if range.start <= range.end && range.end <= src.len() && src.is_char_boundary(range.start) {
                place.push_str(&format!(":{}", super::line_column(src, range.start).1));
                if src.is_char_boundary(range.end) {
                    expression = Some(src[range.start..range.end].trim().to_string()).filter(|x| !x.is_empty());
                }
            }
        }
    }
    let detail = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
    match (e.kind(), expression) {
        (ErrorKind::UndefinedError, Some(x)) => format!(
            "{place}: {x}: undefined value (printing or iterating a missing value is an error; pongo2 would print \"\")"
        ),
        (ErrorKind::UndefinedError, None) => format!("{place}: {detail}"),
        (ErrorKind::OutOfFuel, _) => {
            format!("{place}: the render took more than its limit of steps (spec.limits.steps)")
        }
        (_, _) if e.detail().is_some() => format!("{place}: {}: {detail}", e.kind()),
        _ => format!("{place}: {detail}"),
    }
}
