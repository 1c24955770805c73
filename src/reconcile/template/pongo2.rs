//! The pongo2 dialect, read by a Jinja2 engine.
//!
//! Upstream choreo renders `jinjatemplate` reconcilers with pongo2, a Django-flavoured engine,
//! and its templates use pongo2 syntax that Jinja2 rejects. [`to_jinja`] rewrites it before
//! `minijinja` parses the template, without adding or removing lines (so error lines stay
//! right); plain Jinja2 passes through unchanged:
//!
//! - `{% import 'f' a, b %}` → `{% from 'f' import a, b %}` (`{% import 'f' as m %}` is Jinja's);
//! - `{% macro m(x) export %}` → `{% macro m(x) %}` (every Jinja macro can be imported);
//! - Django filter arguments `x|default:"y"` → `x|default("y")`;
//! - `{% ifequal a b %}` / `{% ifnotequal a b %}` → `{% if a == b %}` / `{% if a != b %}`, and
//!   their `end` tags → `{% endif %}`.
//!
//! [`add_filters`] registers pongo2's filters that Jinja2 lacks (`yesno`, `floatformat`,
//! `stringformat`, `default_if_none`, `cut`, `length_is`, `add`, `capfirst`, …).

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};

/// Rewrites pongo2 syntax in `src` to Jinja2 (see the module doc).
pub(super) fn to_jinja(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    let mut raw = false;
    while let Some(open) = next_open(rest) {
        out.push_str(&rest[..open]);
        let delim = &rest[open..open + 2];
        let close_delim = match delim {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let inner_start = open + 2;
        let Some(close) = block_end(&rest[inner_start..], close_delim) else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = &rest[inner_start..inner_start + close];
        let next = inner_start + close + 2;
        let rewritten = match delim {
            "{%" => {
                let word = first_word(inner);
                if raw {
                    if word == "endraw" {
                        raw = false;
                    }
                    inner.to_string()
                } else if word == "raw" {
                    raw = true;
                    inner.to_string()
                } else {
                    rewrite_tag(inner)
                }
            }
            "{{" if !raw => filter_arguments(inner),
            _ => inner.to_string(),
        };
        out.push_str(delim);
        out.push_str(&rewritten);
        out.push_str(close_delim);
        rest = &rest[next..];
    }
    out.push_str(rest);
    out
}

fn next_open(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..bytes.len().saturating_sub(1)).find(|&i| bytes[i] == b'{' && matches!(bytes[i + 1], b'{' | b'%' | b'#'))
}

/// The offset of `close` ending a block whose text starts at `s`, skipping string literals.
fn block_end(s: &str, close: &str) -> Option<usize> {
    if close == "#}" {
        return s.find("#}");
    }
    let bytes = s.as_bytes();
    let first = close.as_bytes()[0];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = super::quoted_end(bytes, i)?;
                continue;
            }
            c if c == first && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The tag name of a `{% … %}` block's text (after a `-` trim marker).
fn first_word(inner: &str) -> &str {
    let t = inner.trim_start_matches(['-', '+']).trim_start();
    let end = t.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(t.len());
    &t[..end]
}

/// Splits a tag's text into its leading marker and space, the body and the trailing space and
/// marker.
fn split_markers(inner: &str) -> (&str, &str, &str) {
    let lead_end = inner.len() - inner.trim_start_matches(['-', '+']).trim_start().len();
    let trail_start = inner.trim_end_matches(['-', '+']).trim_end().len().max(lead_end);
    (&inner[..lead_end], &inner[lead_end..trail_start], &inner[trail_start..])
}

fn rewrite_tag(inner: &str) -> String {
    let (lead, body, trail) = split_markers(inner);
    let word = first_word(body);
    let args = body[word.len()..].trim_start();
    let new_body = match word {
        // pongo2: import 'file' a, b   (Jinja: import 'file' as m — left alone)
        "import" => match split_string_literal(args) {
            Some((file, names)) if !names.trim_start().starts_with("as ") && !names.trim().is_empty() => {
                format!("from {file} import {}", names.trim())
            }
            _ => body.to_string(),
        },
        "macro" => match body.trim_end().strip_suffix("export") {
            Some(head) if head.ends_with([' ', ')']) => head.trim_end().to_string(),
            _ => body.to_string(),
        },
        "ifequal" | "ifnotequal" => match split_two_operands(args) {
            Some((a, b)) => {
                let op = if word == "ifequal" { "==" } else { "!=" };
                format!("if {} {op} {}", filter_arguments(a), filter_arguments(b))
            }
            None => body.to_string(),
        },
        "endifequal" | "endifnotequal" => "endif".to_string(),
        _ => filter_arguments(body),
    };
    format!("{lead}{new_body}{trail}")
}

/// A leading quoted string and what follows it.
fn split_string_literal(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let end = s[1..].find(quote)? + 2;
    Some((&s[..end], &s[end..]))
}

/// The two operands of `ifequal a b` (each a literal or a dotted name, possibly filtered).
fn split_two_operands(s: &str) -> Option<(&str, &str)> {
    let s = s.trim();
    let first_end =
        if s.starts_with(['"', '\'']) { split_string_literal(s)?.0.len() } else { s.find(char::is_whitespace)? };
    let (a, b) = s.split_at(first_end);
    let b = b.trim();
    (!b.is_empty()).then_some((a, b))
}

/// `x|name:arg` → `x|name(arg)`, outside string literals. The argument is a string literal, a
/// number or a (dotted) name.
fn filter_arguments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' || c == b'\'' {
            let end = super::quoted_end(bytes, i).unwrap_or(bytes.len());
            out.push_str(&text[i..end]);
            i = end;
            continue;
        }
        if c == b'|' {
            // |name:arg
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            let name_start = j;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if j > name_start && bytes.get(j) == Some(&b':') {
                let arg_start = j + 1;
                if let Some(arg_end) = argument_end(text, arg_start) {
                    out.push('|');
                    out.push_str(&text[name_start..j]);
                    out.push('(');
                    out.push_str(&text[arg_start..arg_end]);
                    out.push(')');
                    i = arg_end;
                    continue;
                }
            }
        }
        // Copy one whole character (every token looked at above is ASCII).
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Where a Django filter argument starting at `start` ends.
fn argument_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let first = *bytes.get(start)?;
    if first == b'"' || first == b'\'' {
        return super::quoted_end(bytes, start);
    }
    let mut i = start;
    if first == b'-' {
        i += 1;
    }
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.')) {
        i += 1;
    }
    (i > start).then_some(i)
}

/// Registers pongo2's filters that Jinja2 does not have.
pub(super) fn add_filters(env: &mut Environment<'static>) {
    // yesno:"yes,no,maybe"
    env.add_filter("yesno", |v: Value, choices: Option<String>| -> Result<String, Error> {
        let choices = choices.unwrap_or_else(|| "yes,no,maybe".to_string());
        let parts: Vec<&str> = choices.split(',').collect();
        if parts.len() < 2 {
            return Err(Error::new(ErrorKind::InvalidOperation, "yesno needs at least two choices: \"yes,no\""));
        }
        Ok(if v.is_none() || v.is_undefined() {
            parts.get(2).copied().unwrap_or(parts[1]).to_string()
        } else if v.is_true() {
            parts[0].to_string()
        } else {
            parts[1].to_string()
        })
    });
    // floatformat:N (negative N: only when there is a fraction; default -1)
    env.add_filter("floatformat", |v: Value, digits: Option<i64>| -> Result<String, Error> {
        let x = as_f64(&v)?;
        let n = digits.unwrap_or(-1);
        let places = n.unsigned_abs() as usize;
        if n < 0 && x.fract() == 0.0 {
            return Ok(format!("{x:.0}"));
        }
        Ok(format!("{x:.places$}"))
    });
    // stringformat:"03d" (a printf verb without the %)
    env.add_filter("stringformat", |v: Value, spec: String| -> Result<String, Error> { stringformat(&v, &spec) });
    env.add_filter("default_if_none", |v: Value, other: Value| -> Value {
        if v.is_none() {
            other
        } else {
            v
        }
    });
    env.add_filter("cut", |v: String, what: String| -> String { v.replace(&what, "") });
    env.add_filter("length_is", |v: Value, n: i64| -> Result<bool, Error> {
        Ok(v.len().map(|l| l as i64 == n).unwrap_or(false))
    });
    env.add_filter("add", |a: Value, b: Value| -> Result<Value, Error> {
        match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Ok(Value::from(x + y)),
            _ => match (as_f64(&a), as_f64(&b)) {
                (Ok(x), Ok(y)) => Ok(Value::from(x + y)),
                _ => Ok(Value::from(format!("{a}{b}"))),
            },
        }
    });
    env.add_filter("capfirst", |s: String| -> String {
        let mut c = s.chars();
        match c.next() {
            Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
            None => s,
        }
    });
    env.add_filter("divisibleby", |a: i64, b: i64| -> Result<bool, Error> {
        if b == 0 {
            return Err(Error::new(ErrorKind::InvalidOperation, "divisibleby: division by zero"));
        }
        Ok(a % b == 0)
    });
    env.add_filter("ljust", |s: String, width: usize| -> String { format!("{s:<width$}") });
    env.add_filter("rjust", |s: String, width: usize| -> String { format!("{s:>width$}") });
    env.add_filter("make_list", |s: String| -> Vec<String> { s.chars().map(String::from).collect() });
    env.add_filter("pluralize", |n: Value, suffix: Option<String>| -> String {
        let suffix = suffix.unwrap_or_else(|| "s".to_string());
        let (one, many) = match suffix.split_once(',') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (String::new(), suffix),
        };
        let count = n.as_i64().or_else(|| n.len().map(|l| l as i64)).unwrap_or(0);
        if count == 1 {
            one
        } else {
            many
        }
    });
    env.add_filter("wordcount", |s: String| -> usize { s.split_whitespace().count() });
    env.add_filter("truncatechars", |s: String, n: usize| -> String {
        if s.chars().count() <= n {
            s
        } else if n < 3 {
            "...".chars().take(n).collect()
        } else {
            s.chars().take(n - 3).collect::<String>() + "..."
        }
    });
    env.add_filter("truncatewords", |s: String, n: usize| -> String {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.len() <= n {
            words.join(" ")
        } else {
            words[..n].join(" ") + " ..."
        }
    });
    env.add_filter("addslashes", |s: String| -> String {
        s.replace('\\', "\\\\").replace('"', "\\\"").replace('\'', "\\'")
    });
    env.add_filter("integer", |v: Value| -> Result<i64, Error> { Ok(as_f64(&v)? as i64) });
    env.add_filter("get_digit", |v: i64, n: usize| -> Value {
        let digits = v.unsigned_abs().to_string();
        if n == 0 || n > digits.len() {
            return Value::from(v);
        }
        Value::from(i64::from(digits.as_bytes()[digits.len() - n] - b'0'))
    });
}

fn as_f64(v: &Value) -> Result<f64, Error> {
    if let Some(i) = v.as_i64() {
        return Ok(i as f64);
    }
    if let Ok(f) = f64::try_from(v.clone()) {
        return Ok(f);
    }
    if let Some(s) = v.as_str() {
        if let Ok(f) = s.trim().parse::<f64>() {
            return Ok(f);
        }
    }
    Err(Error::new(ErrorKind::InvalidOperation, format!("{v} is not a number")))
}

/// pongo2's `stringformat`: one printf verb (`d`, `03d`, `.2f`, `s`, `x`, `5s`, `-5s`, …).
fn stringformat(v: &Value, spec: &str) -> Result<String, Error> {
    let spec = spec.strip_prefix('%').unwrap_or(spec);
    let verb =
        spec.chars().last().ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "stringformat: empty format"))?;
    let flags = &spec[..spec.len() - verb.len_utf8()];
    let left = flags.starts_with('-');
    let flags = flags.trim_start_matches('-');
    let zero = flags.starts_with('0');
    let (width, precision) = match flags.split_once('.') {
        Some((w, p)) => (w.parse::<usize>().unwrap_or(0), p.parse::<usize>().ok()),
        None => (flags.parse::<usize>().unwrap_or(0), None),
    };
    let body = match verb {
        'd' => format!("{}", as_f64(v)? as i64),
        'f' => format!("{:.*}", precision.unwrap_or(6), as_f64(v)?),
        'x' => format!("{:x}", as_f64(v)? as i64),
        'X' => format!("{:X}", as_f64(v)? as i64),
        'o' => format!("{:o}", as_f64(v)? as i64),
        'b' => format!("{:b}", as_f64(v)? as i64),
        's' | 'v' => match precision {
            Some(p) => v.to_string().chars().take(p).collect(),
            None => v.to_string(),
        },
        'q' => format!("{:?}", v.to_string()),
        other => {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("stringformat: unsupported verb %{other}")))
        }
    };
    Ok(if body.chars().count() >= width {
        body
    } else if left {
        format!("{body:<width$}")
    } else if zero && verb != 's' {
        let (sign, digits) = body.strip_prefix('-').map_or(("", body.as_str()), |d| ("-", d));
        format!("{sign}{digits:0>w$}", w = width - sign.len())
    } else {
        format!("{body:>width$}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_pongo2_imports_macros_and_filter_arguments() {
        assert_eq!(to_jinja("{%- import 'i.jinja2' interface -%}"), "{%- from 'i.jinja2' import interface -%}");
        assert_eq!(to_jinja("{% import \"f\" a, b %}"), "{% from \"f\" import a, b %}");
        assert_eq!(to_jinja("{% import 'f' as m %}"), "{% import 'f' as m %}");
        assert_eq!(to_jinja("{%- macro m(spec) export -%}x{%- endmacro %}"), "{%- macro m(spec) -%}x{%- endmacro %}");
        assert_eq!(to_jinja("{{ x|default:\"y\" }}"), "{{ x|default(\"y\") }}");
        assert_eq!(to_jinja("{{ x|floatformat:2|upper }}"), "{{ x|floatformat(2)|upper }}");
        assert_eq!(to_jinja("{{ 'a|b:c' }}"), "{{ 'a|b:c' }}");
        assert_eq!(to_jinja("{% if x|length_is:3 %}"), "{% if x|length_is(3) %}");
        assert_eq!(to_jinja("{% ifequal a \"b\" %}1{% endifequal %}"), "{% if a == \"b\" %}1{% endif %}");
        assert_eq!(to_jinja("{% raw %}{{ x|y:1 }}{% endraw %}"), "{% raw %}{{ x|y:1 }}{% endraw %}");
        assert_eq!(to_jinja("é {{ x|cut:\"é\" }} ü"), "é {{ x|cut(\"é\") }} ü");
        assert_eq!(to_jinja("{{ {'a': 1}['a'] }} {{ x[1:2] }}"), "{{ {'a': 1}['a'] }} {{ x[1:2] }}");
        // Lines are kept.
        let src = "{% import 'f' a %}\n{{ x|default:1 }}\n";
        assert_eq!(to_jinja(src).lines().count(), src.lines().count());
    }

    #[test]
    fn formats_like_pongo2() {
        let v = |x: i64| Value::from(x);
        assert_eq!(stringformat(&v(7), "03d").unwrap(), "007");
        assert_eq!(stringformat(&v(-7), "04d").unwrap(), "-007");
        assert_eq!(stringformat(&Value::from(1.5), ".2f").unwrap(), "1.50");
        assert_eq!(stringformat(&Value::from("ab"), "-4s").unwrap(), "ab  ");
        assert_eq!(stringformat(&v(255), "x").unwrap(), "ff");
    }
}
