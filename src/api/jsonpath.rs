//! kubectl's JSONPath templates: `-o jsonpath='{.items[*].metadata.name}'`,
//! `{range .items[*]}{.metadata.name}{"\n"}{end}`, and the `jsonPath` of a CRD's
//! `additionalPrinterColumns` and of `-o custom-columns`.
//!
//! A template is text with `{…}` actions: a path (`.a.b`, `.items[*]`, `..name`,
//! `[?(@.type=="Ready")]`, `['app.kubernetes.io/name']`, `a\.b` escaped dots), a quoted string
//! (`{"\t"}`), or `range PATH` … `end`. Paths are translated to RFC 9535 JSONPath and evaluated
//! with `serde_json_path`; inside a range, paths start at the current item. Several results
//! print separated by a space, strings without quotes, anything else as JSON.
//!
//! Architecture invariant: a pure function of the template and the JSON.

use serde_json::Value;
use serde_json_path::JsonPath;

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Path(JsonPath),
    Range(JsonPath, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template(Vec<Node>);

/// A kubectl path (`.a.b[0]`, `a.b`, `$.a`, `..x`) in RFC 9535 form (`$.a.b[0]`).
pub fn to_rfc9535(path: &str) -> Result<JsonPath, String> {
    let p = path.trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut out = String::from("$");
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    // Names start after `.`; a leading name without a dot is allowed (`metadata.name`).
    let mut expect_name = !p.starts_with('.') && !p.starts_with('[') && !p.is_empty();
    while i < chars.len() || expect_name {
        if expect_name {
            let mut name = String::new();
            while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    name.push(chars[i + 1]);
                    i += 2;
                } else {
                    name.push(chars[i]);
                    i += 1;
                }
            }
            if name == "*" {
                out.push_str("[*]");
            } else if !name.is_empty() {
                out.push_str(&format!("['{}']", name.replace('\\', "\\\\").replace('\'', "\\'")));
            }
            expect_name = false;
            continue;
        }
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                out.push_str("..");
                i += 2;
                // `..name` or `..[…]`
                if chars.get(i).is_some_and(|c| *c != '[') {
                    let mut name = String::new();
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        name.push(chars[i]);
                        i += 1;
                    }
                    out.push_str(if name == "*" { "*" } else { &name });
                }
            }
            '.' => {
                i += 1;
                expect_name = i < chars.len() && chars[i] != '[';
            }
            '[' => {
                // Copy the bracket verbatim, with its nesting and quotes.
                let start = i;
                let mut depth = 0;
                let mut quote: Option<char> = None;
                while i < chars.len() {
                    let c = chars[i];
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '\'' || c == '"' => quote = Some(c),
                        None if c == '[' => depth += 1,
                        None if c == ']' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        None => {}
                    }
                    i += 1;
                }
                if depth != 0 {
                    return Err(format!("unclosed `[` in {path:?}"));
                }
                let bracket: String = chars[start..i].iter().collect();
                out.push_str(&bracket);
            }
            c => return Err(format!("unexpected {c:?} in {path:?}")),
        }
    }
    JsonPath::parse(&out).map_err(|e| format!("{path:?} is not a JSONPath: {e}"))
}

fn unquote(s: &str) -> Option<String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl Template {
    /// Parses `text`; a bare path without braces is taken as one action (`.metadata.name`).
    pub fn parse(text: &str) -> Result<Template, String> {
        let text = if text.contains('{') { text.to_string() } else { format!("{{{text}}}") };
        let mut stack: Vec<(Option<JsonPath>, Vec<Node>)> = vec![(None, Vec::new())];
        let mut rest = text.as_str();
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    push(&mut stack, Node::Text(rest.to_string()));
                    break;
                }
                Some(open) => {
                    if open > 0 {
                        push(&mut stack, Node::Text(rest[..open].to_string()));
                    }
                    let after = &rest[open + 1..];
                    let close = closing(after).ok_or_else(|| format!("unclosed `{{` in {text:?}"))?;
                    let action = after[..close].trim();
                    rest = &after[close + 1..];
                    if let Some(path) = action.strip_prefix("range ") {
                        stack.push((Some(to_rfc9535(path)?), Vec::new()));
                    } else if action == "end" {
                        let (path, body) =
                            stack.pop().filter(|_| !stack.is_empty()).ok_or("`{end}` without `{range}`")?;
                        let path = path.ok_or("`{end}` without `{range}`")?;
                        push(&mut stack, Node::Range(path, body));
                    } else if let Some(lit) = unquote(action) {
                        push(&mut stack, Node::Text(lit));
                    } else {
                        let node = Node::Path(to_rfc9535(action)?);
                        push(&mut stack, node);
                    }
                }
            }
        }
        if stack.len() != 1 {
            return Err("`{range}` without `{end}`".into());
        }
        Ok(Template(stack.pop().map(|s| s.1).unwrap_or_default()))
    }

    /// The template applied to `value`.
    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        render(&self.0, value, &mut out);
        out
    }

    /// The results of a single-path template (for columns), as text joined by commas.
    pub fn column(&self, value: &Value) -> String {
        match self.0.as_slice() {
            [Node::Path(p)] => p.query(value).all().into_iter().map(text).collect::<Vec<_>>().join(","),
            _ => self.render(value),
        }
    }
}

/// Adds `node` to the innermost open block.
fn push(stack: &mut [(Option<JsonPath>, Vec<Node>)], node: Node) {
    if let Some(top) = stack.last_mut() {
        top.1.push(node);
    }
}

/// Where the `}` closing an action is, skipping quoted text.
fn closing(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => return Some(i),
            _ => {}
        }
    }
    None
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn render(nodes: &[Node], value: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Path(p) => out.push_str(&p.query(value).all().into_iter().map(text).collect::<Vec<_>>().join(" ")),
            Node::Range(p, body) => {
                for item in p.query(value).all() {
                    render(body, item, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// kubectl's documented JSONPath examples, on its documented input.
    #[test]
    fn kubectls_documented_examples() {
        let input = json!({
          "kind": "List",
          "items": [
            {"kind": "None", "metadata": {"name": "127.0.0.1", "labels": {"kubernetes.io/hostname": "127.0.0.1"}},
             "status": {"capacity": {"cpu": "4"}, "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.1"}]}},
            {"kind": "None", "metadata": {"name": "127.0.0.2"},
             "status": {"capacity": {"cpu": "8"}, "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.2"}, {"type": "another", "address": "127.0.0.3"}]}}
          ],
          "users": [{"name": "myself", "user": {}}, {"name": "e2e", "user": {"username": "admin", "password": "secret"}}]
        });
        let cases = [
            ("{.kind}", "List"),
            ("{['kind']}", "List"),
            ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
            ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
            ("{.users[0].name}", "myself"),
            ("{.items[-1:].metadata.name}", "127.0.0.2"),
            ("{.users[?(@.name==\"e2e\")].user.password}", "secret"),
            ("{.items[0].metadata.labels.kubernetes\\.io/hostname}", "127.0.0.1"),
            ("{range .items[*]}[{.metadata.name}, {.status.capacity.cpu}] {end}", "[127.0.0.1, 4] [127.0.0.2, 8] "),
            ("{range .items[*]}{.metadata.name}{\"\\t\"}{end}", "127.0.0.1\t127.0.0.2\t"),
            ("{.items[*].status.addresses[?(@.type=='LegacyHostIP')].address}", "127.0.0.1 127.0.0.2"),
            ("{.items[0].status.capacity}", "{\"cpu\":\"4\"}"),
            (".kind", "List"),
            ("kind: {.kind}!", "kind: List!"),
        ];
        for (t, want) in cases {
            let tpl = Template::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(tpl.render(&input), want, "{t}");
        }
        for bad in ["{.items[0}", "{range .items[*]}x", "{end}", "{.a"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn printer_column_paths() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}, "spec": {"ports": [1, 2]}});
        assert_eq!(Template::parse(".status.conditions[?(@.type=='Ready')].status").unwrap().column(&o), "True");
        assert_eq!(Template::parse(".spec.ports[*]").unwrap().column(&o), "1,2");
        assert_eq!(Template::parse(".spec.missing").unwrap().column(&o), "");
    }
}
