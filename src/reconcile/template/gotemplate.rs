//! `gotemplate` reconcilers: Go's text/template through `gotmpl`.
//!
//! As upstream, every code file is parsed into one template set and `main.tpl` is executed
//! with the for-object as dot; helper files contribute their `{{define}}`s (and, when they have
//! top-level content, a template named after the file). Only Go's built-in functions exist.
//!
//! Printing a missing value is an error here, where Go prints `<no value>`: before parsing,
//! every printing action `{{ PIPELINE }}` becomes `{{ PIPELINE | choreo_printed "LOC" "TEXT" }}`,
//! and that function fails on a missing (nil) value, naming the place and the pipeline. Actions
//! that only test a value (`if`, `with`, `range`, comparisons) are left alone, so templates that
//! check for optional fields render as in Go. The rewrite adds no lines, so Go's line numbers
//! in parse errors stay right.

use std::collections::BTreeMap;

use gotmpl::{MissingKey, Template, TemplateError, Value as GoValue};
use serde_json::Value;

use super::line_column;
use super::output::Output;
use super::Engine;
use crate::api::validate::go_quote;
use crate::reconcile::Budget;

const MAIN: &str = "main.tpl";
/// The check appended to printing actions. Not a name a template would use.
const PRINTED: &str = "choreo_printed";
/// Where the check's message starts inside gotmpl's error text.
const PRINTED_MARK: &str = "choreo: ";

pub(super) struct GoTemplate {
    set: Template,
}

fn base(name: &str, max_range: u64) -> Template {
    Template::new(name).missing_key(MissingKey::Invalid).max_range_iters(max_range).func(PRINTED, printed)
}

/// The check of a printing action: its value, unless there is none.
fn printed(args: &[GoValue]) -> gotmpl::Result<GoValue> {
    match args {
        [GoValue::String(loc), GoValue::String(text), GoValue::Nil] => {
            let text = text.trim();
            let what = if is_field_chain(text) {
                format!("{text}: no such key")
            } else {
                format!("{{{{ {text} }}}} has no value")
            };
            Err(TemplateError::Exec(format!(
                "{PRINTED_MARK}{loc}: {what} (a missing or null value is printed; Go would print \"<no value>\")"
            )))
        }
        [_, _, value] => Ok(value.clone()),
        _ => Err(TemplateError::Exec(format!("{PRINTED} takes 3 arguments"))),
    }
}

/// `.a.b`, `$x.a`, `$`: a path, not an expression.
fn is_field_chain(text: &str) -> bool {
    !text.is_empty()
        && (text.starts_with('.') || text.starts_with('$'))
        && text.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '$' | '-'))
}

impl GoTemplate {
    /// Parses every `.tpl` file into one set; `steps` bounds the iterations of `range`.
    pub(super) fn compile(code: &BTreeMap<String, String>, steps: u64) -> Result<GoTemplate, String> {
        let main = code.get(MAIN).ok_or_else(|| format!("{MAIN}: missing"))?;
        let mut set = base(MAIN, steps);
        // Helpers first, main last: the set's own body is main.tpl's.
        for (name, src) in code.iter().filter(|(n, _)| n.as_str() != MAIN && n.ends_with(".tpl")) {
            let checked = instrument(name, src)?;
            // Parsed alone first, so its errors carry its own file name.
            let own = base(name, steps).parse(&checked).map_err(|e| parse_error(&e))?;
            set = set.parse(&checked).map_err(|e| parse_error(&e))?;
            if let Some(tree) = own.lookup(name) {
                set = set.add_parse_tree(name, tree.clone());
            }
        }
        let set = set.parse(&instrument(MAIN, main)?).map_err(|e| parse_error(&e))?;
        Ok(GoTemplate { set })
    }
}

impl Engine for GoTemplate {
    fn render(&self, object: &Value, budget: &Budget<'_>) -> Result<String, String> {
        let data = super::data::to_go(object);
        let mut out = Output::new(budget);
        match self.set.execute_fmt(&mut out, &data) {
            Ok(()) => Ok(out.into_string()),
            Err(e) => Err(out.stopped().unwrap_or_else(|| exec_error(&e))),
        }
    }
}

/// Go's `template: main.tpl:3:5: msg` as `main.tpl:3:5: msg`.
fn parse_error(e: &TemplateError) -> String {
    let text = e.to_string();
    text.strip_prefix("template: ").map(str::to_string).unwrap_or(text)
}

fn exec_error(e: &TemplateError) -> String {
    let text = e.to_string();
    if let Some(i) = text.find(PRINTED_MARK) {
        return text[i + PRINTED_MARK.len()..].to_string();
    }
    let text = text.strip_prefix("template: ").unwrap_or(&text);
    format!("{MAIN}: {text}")
}

/// Rewrites every printing action of `src` to pass its value through [`printed`] with its
/// `file:line:column` and text. Comments, control actions (`if`, `range`, `end`, …) and
/// declarations are left as they are; so is everything outside actions.
///
/// It also checks that blocks are closed, which `gotmpl` does not (Go reports an `{{if}}`
/// without `{{end}}` as `unexpected EOF` and a stray `{{end}}` as `unexpected {{end}}`).
pub(super) fn instrument(file: &str, src: &str) -> Result<String, String> {
    let mut open_blocks: Vec<(&str, usize, usize)> = Vec::new();
    let mut out = String::with_capacity(src.len() + src.len() / 4);
    let mut rest = src;
    let mut consumed = 0;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let action_start = consumed + open;
        let inner_start = open + 2;
        let Some(close) = action_end(&rest[inner_start..]) else {
            // Unterminated: leave it to the parser to report.
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let inner = &rest[inner_start..inner_start + close];
        let (line, column) = line_column(src, action_start);
        match keyword(inner) {
            Some(k @ ("if" | "range" | "with" | "define" | "block")) => open_blocks.push((k, line, column)),
            Some("end") if open_blocks.pop().is_none() => {
                return Err(format!("{file}:{line}:{column}: unexpected {{{{end}}}}"));
            }
            Some("else") if !open_blocks.last().is_some_and(|(b, _, _)| matches!(*b, "if" | "range" | "with")) => {
                return Err(format!("{file}:{line}:{column}: unexpected {{{{else}}}}"));
            }
            Some(k @ ("break" | "continue")) if !open_blocks.iter().any(|(b, _, _)| *b == "range") => {
                return Err(format!("{file}:{line}:{column}: {{{{{k}}}}} outside {{{{range}}}}"));
            }
            _ => {}
        }
        out.push_str("{{");
        match printing_pipeline(inner) {
            Some((lead, body, trail)) => {
                // The check goes after the pipeline, before the space that a `-}}` needs.
                let pipeline = body.trim_end();
                out.push_str(lead);
                out.push_str(pipeline);
                out.push_str(&format!(
                    " | {PRINTED} {} {}",
                    go_quote(&format!("{file}:{line}:{column}")),
                    go_quote(body.trim())
                ));
                out.push_str(&body[pipeline.len()..]);
                out.push_str(trail);
            }
            None => out.push_str(inner),
        }
        out.push_str("}}");
        let next = inner_start + close + 2;
        consumed += next;
        rest = &rest[next..];
    }
    out.push_str(rest);
    if let Some((k, line, column)) = open_blocks.last() {
        return Err(format!("{file}:{line}:{column}: unexpected EOF: {{{{{k}}}}} has no {{{{end}}}}"));
    }
    Ok(out)
}

/// The keyword an action starts with (`if`, `end`, …), if any.
fn keyword(inner: &str) -> Option<&'static str> {
    let text = inner.trim_start_matches('-').trim_start();
    let word: String = text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    KEYWORDS.iter().copied().find(|k| *k == word)
}

const KEYWORDS: [&str; 10] = ["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"];

/// The offset of the `}}` that closes an action whose text starts at `s`, skipping string,
/// raw string and character literals and comments.
fn action_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let trimmed = s.trim_start_matches('-').trim_start();
    if trimmed.starts_with("/*") {
        let at = s.find("/*")?;
        let end = s[at + 2..].find("*/")? + at + 4;
        return s[end..].find("}}").map(|i| i + end);
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = super::quoted_end(bytes, i)?;
                continue;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits a printing action into its trim marker and spacing, the pipeline and its trailing
/// trim marker; `None` for comments, keywords and declarations.
fn printing_pipeline(inner: &str) -> Option<(&str, &str, &str)> {
    let lead_len = if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") { 1 } else { 0 };
    let trail_len = if inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-") { 1 } else { 0 };
    if inner.len() < lead_len + trail_len {
        return None;
    }
    let body = &inner[lead_len..inner.len() - trail_len];
    let text = body.trim();
    if text.is_empty() || text.starts_with("/*") {
        return None;
    }
    let word: String = text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    const KEYWORDS: [&str; 10] =
        ["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"];
    if KEYWORDS.contains(&word.as_str()) {
        return None;
    }
    if is_declaration(text) {
        return None;
    }
    Some((&inner[..lead_len], body, &inner[inner.len() - trail_len..]))
}

/// `$x := …`, `$x = …`, `$i, $v := …`.
fn is_declaration(text: &str) -> bool {
    let mut rest = text;
    loop {
        let Some(after) = rest.strip_prefix('$') else { return false };
        let name_len = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').map(char::len_utf8).sum();
        rest = after[name_len..].trim_start();
        if let Some(more) = rest.strip_prefix(',') {
            rest = more.trim_start();
            continue;
        }
        return rest.starts_with(":=") || (rest.starts_with('=') && !rest.starts_with("=="));
    }
}
