//! `choreo get` with kubectl's habits: selectors, namespaces, `-o wide|json|yaml|name|
//! jsonpath=…|custom-columns=…`, `--sort-by`, `--no-headers`, `--show-labels`, and the CRD's
//! printer columns in the table.
//!
//! Architecture invariant: client side only; the server filters by selector, everything else
//! (columns, sorting, templates) is rendered here from the objects it sends.

use serde_json::{json, Value};

use super::{emit, output, parse_object, progress, unexpected, CliError, Client};
use crate::api::jsonpath::Template;
use crate::protocol::{GetRequest, PrinterColumn, Reply, Request};

/// `-o` of `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutput {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
    JsonPath(String),
    /// (header, path) per column.
    CustomColumns(Vec<(String, String)>),
}

/// Parses `-o`: json, yaml, name, wide, jsonpath=TEMPLATE, custom-columns=NAME:PATH,….
pub fn parse_output(text: &str) -> Result<GetOutput, String> {
    Ok(match text {
        "json" => GetOutput::Json,
        "yaml" => GetOutput::Yaml,
        "name" => GetOutput::Name,
        "wide" => GetOutput::Wide,
        _ => {
            if let Some(t) = text.strip_prefix("jsonpath=") {
                Template::parse(t)?;
                GetOutput::JsonPath(t.to_string())
            } else if let Some(spec) = text.strip_prefix("custom-columns=") {
                let mut cols = Vec::new();
                for c in spec.split(',') {
                    let (name, path) = c
                        .split_once(':')
                        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                        .ok_or_else(|| format!("custom-columns: {c:?} is not NAME:.json.path"))?;
                    Template::parse(path)?;
                    cols.push((name.to_string(), path.to_string()));
                }
                GetOutput::CustomColumns(cols)
            } else {
                return Err(format!(
                    "unknown output format {text:?}: json, yaml, name, wide, jsonpath=TEMPLATE or custom-columns=NAME:PATH,…"
                ));
            }
        }
    })
}

/// What `get` was asked.
pub struct GetOptions {
    pub resource: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub output: GetOutput,
    pub selector: Option<String>,
    pub field_selector: Option<String>,
    pub sort_by: Option<String>,
    pub no_headers: bool,
    pub show_labels: bool,
    pub show_managed_fields: bool,
    /// `-w`: after the list, every change as it commits.
    pub watch: bool,
    /// With `-w`: say ADDED / MODIFIED / DELETED.
    pub watch_events: bool,
}

pub fn get(client: Client, o: GetOptions) -> Result<(), CliError> {
    if o.watch {
        return watch(client, o);
    }
    get_once(client, o)
}

/// `get -w`: the columns from one list request, then the watch's stream, one row or document
/// per event.
fn watch(mut client: Client, o: GetOptions) -> Result<(), CliError> {
    let namespace = if o.all_namespaces { None } else { o.namespace.clone() };
    let req = GetRequest {
        resource: o.resource.clone(),
        name: None,
        namespace: namespace.clone(),
        show_managed_fields: o.show_managed_fields,
        label_selector: o.selector.clone(),
        field_selector: o.field_selector.clone(),
    };
    // A list that matches nothing (no name holds a NUL): only its columns and scope.
    let (columns, namespaced) = match client.request(
        Request::Get(GetRequest { field_selector: Some("metadata.name=\u{0}".into()), ..req.clone() }),
        &mut progress,
    )? {
        Reply::List { columns, namespaced, .. } => (columns, namespaced),
        other => return Err(unexpected(&other)),
    };
    let watched = GetRequest { name: o.name.clone(), ..req };
    let table = TableOptions {
        namespace: namespaced && namespace.is_none(),
        wide: o.output == GetOutput::Wide,
        labels: o.show_labels,
        headers: !o.no_headers,
    };
    let mut first = true;
    let mut print = |e: crate::protocol::WatchEvent| -> Result<(), CliError> {
        let obj = parse_object(&e.object)?;
        let text = match &o.output {
            GetOutput::Table | GetOutput::Wide => {
                let t = objects_table(
                    std::slice::from_ref(&obj),
                    &columns,
                    TableOptions { headers: table.headers && first, ..table },
                )?;
                if o.watch_events {
                    let mut lines = t.lines();
                    let mut out = String::new();
                    if table.headers && first {
                        out.push_str(&format!("{:<10} {}\n", "EVENT", lines.next().unwrap_or_default()));
                    }
                    for l in lines {
                        out.push_str(&format!("{:<10} {l}\n", e.kind));
                    }
                    out
                } else {
                    t
                }
            }
            GetOutput::Json if o.watch_events => output::json(&json!({"type": e.kind, "object": obj})),
            GetOutput::Json => output::json(&obj),
            GetOutput::Yaml if o.watch_events => {
                format!("---\n{}", output::yaml(&json!({"type": e.kind, "object": obj})))
            }
            GetOutput::Yaml => format!("---\n{}", output::yaml(&obj)),
            GetOutput::Name => format!(
                "{}{}\n",
                if o.watch_events { format!("{} ", e.kind) } else { String::new() },
                output::object_name(&obj)
            ),
            GetOutput::JsonPath(t) => render_template(t, &obj)?,
            GetOutput::CustomColumns(cols) => custom_columns(cols, std::slice::from_ref(&obj), o.no_headers || !first)?,
        };
        first = false;
        emit(&text)
    };
    match client.stream(Request::Watch(watched), &mut progress, &mut print)? {
        Reply::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn get_once(mut client: Client, o: GetOptions) -> Result<(), CliError> {
    let table = matches!(o.output, GetOutput::Table | GetOutput::Wide);
    let sort_by = o.sort_by.as_deref().map(Template::parse).transpose().map_err(CliError::Usage)?;
    let namespace = if o.all_namespaces { None } else { o.namespace.clone() };
    // A named object in a table comes as a one-item list, with its columns.
    let (name, field_selector, namespace) = match (&o.name, table) {
        (Some(n), true) => {
            let by_name = format!("metadata.name={n}");
            let fs = Some(o.field_selector.clone().map_or(by_name.clone(), |f| format!("{f},{by_name}")));
            (None, fs, Some(namespace.unwrap_or_else(|| "default".into())))
        }
        _ => (o.name.clone(), o.field_selector.clone(), namespace),
    };
    let show_namespace = namespace.is_none();
    let requested_namespace = namespace.clone();
    let reply = client.request(
        Request::Get(GetRequest {
            resource: o.resource.clone(),
            name,
            namespace,
            show_managed_fields: o.show_managed_fields,
            label_selector: o.selector.clone(),
            field_selector,
        }),
        &mut progress,
    )?;
    match reply {
        Reply::Object(text) => {
            let obj = parse_object(&text)?;
            match &o.output {
                GetOutput::Json => emit(&output::json(&obj)),
                GetOutput::Yaml => emit(&output::yaml(&obj)),
                GetOutput::Name => emit(&format!("{}\n", output::object_name(&obj))),
                GetOutput::JsonPath(t) => emit(&render_template(t, &obj)?),
                GetOutput::CustomColumns(cols) => {
                    emit(&custom_columns(cols, std::slice::from_ref(&obj), o.no_headers)?)
                }
                GetOutput::Table | GetOutput::Wide => Err(CliError::Failed("a table of one object came as one".into())),
            }
        }
        Reply::List { api_version, kind, namespaced, items, columns } => {
            let mut items = items.into_iter().map(|t| parse_object(&t)).collect::<Result<Vec<_>, _>>()?;
            if let Some(key) = &sort_by {
                sort(&mut items, key);
            }
            if let (true, Some(name), true) = (table, &o.name, items.is_empty()) {
                // As the server says it of a named object.
                let group = match crate::api::object::split_api_version(&api_version).0 {
                    "" => String::new(),
                    g => format!(".{g}"),
                };
                let key = match (namespaced, &requested_namespace) {
                    (true, Some(ns)) => format!("{ns}/{name}"),
                    _ => name.clone(),
                };
                return Err(CliError::Server(crate::protocol::ErrorReport::new(
                    crate::protocol::ErrorKind::NotFound,
                    format!("{kind}{group} {key}: not found"),
                )));
            }
            let list = || json!({"apiVersion": "v1", "kind": "List", "items": items});
            match &o.output {
                GetOutput::Json => emit(&output::json(&list())),
                GetOutput::Yaml => emit(&output::yaml(&list())),
                GetOutput::Name => {
                    emit(&items.iter().map(|o| format!("{}\n", output::object_name(o))).collect::<String>())
                }
                GetOutput::JsonPath(t) => emit(&render_template(t, &list())?),
                GetOutput::CustomColumns(cols) => emit(&custom_columns(cols, &items, o.no_headers)?),
                GetOutput::Table | GetOutput::Wide if items.is_empty() => {
                    eprintln!("No {} found.", o.resource);
                    Ok(())
                }
                GetOutput::Table | GetOutput::Wide => emit(&objects_table(
                    &items,
                    &columns,
                    TableOptions {
                        namespace: namespaced && show_namespace,
                        wide: o.output == GetOutput::Wide,
                        labels: o.show_labels,
                        headers: !o.no_headers,
                    },
                )?),
            }
        }
        other => Err(unexpected(&other)),
    }
}

fn render_template(t: &str, v: &Value) -> Result<String, CliError> {
    let tpl = Template::parse(t).map_err(CliError::Usage)?;
    let mut out = tpl.render(v);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Sorts by the value at `key` in each object: numerically when every value is a number.
fn sort(items: &mut Vec<Value>, key: &Template) {
    let keys: Vec<String> = items.iter().map(|i| key.column(i)).collect();
    let numeric: Option<Vec<f64>> = keys.iter().map(|k| k.parse::<f64>().ok()).collect();
    let mut indexed: Vec<(usize, Value)> = std::mem::take(items).into_iter().enumerate().collect();
    match numeric {
        Some(n) => indexed.sort_by(|a, b| n[a.0].total_cmp(&n[b.0])),
        None => indexed.sort_by(|a, b| keys[a.0].cmp(&keys[b.0])),
    }
    *items = indexed.into_iter().map(|(_, v)| v).collect();
}

fn custom_columns(cols: &[(String, String)], items: &[Value], no_headers: bool) -> Result<String, CliError> {
    let tpls: Vec<Template> =
        cols.iter().map(|(_, p)| Template::parse(p)).collect::<Result<_, _>>().map_err(CliError::Usage)?;
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            tpls.iter()
                .map(|t| Some(t.column(o)).filter(|s| !s.is_empty()).unwrap_or_else(|| "<none>".into()))
                .collect()
        })
        .collect();
    let header: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    Ok(headless(output::table(&header, &rows), no_headers))
}

fn headless(table: String, no_headers: bool) -> String {
    if no_headers {
        table.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default()
    } else {
        table
    }
}

#[derive(Clone, Copy)]
struct TableOptions {
    namespace: bool,
    wide: bool,
    labels: bool,
    headers: bool,
}

/// The default table: NAMESPACE (across namespaces), NAME, the CRD's printer columns (all of
/// them with `-o wide`) or READY, then AGE, and LABELS with `--show-labels`.
fn objects_table(items: &[Value], columns: &[PrinterColumn], t: TableOptions) -> Result<String, CliError> {
    let shown: Vec<&PrinterColumn> = columns.iter().filter(|c| t.wide || c.priority == 0).collect();
    let tpls: Vec<Template> = shown
        .iter()
        .map(|c| Template::parse(&c.json_path).map_err(|e| CliError::Failed(format!("printer column {}: {e}", c.name))))
        .collect::<Result<_, _>>()?;
    let has_age = shown.iter().any(|c| c.name.eq_ignore_ascii_case("age"));
    let mut header: Vec<String> = Vec::new();
    if t.namespace {
        header.push("NAMESPACE".into());
    }
    header.push("NAME".into());
    if shown.is_empty() {
        header.push("READY".into());
    }
    header.extend(shown.iter().map(|c| c.name.to_uppercase()));
    if !has_age {
        header.push("AGE".into());
    }
    if t.labels {
        header.push("LABELS".into());
    }
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            let mut row = Vec::new();
            if t.namespace {
                row.push(crate::api::object::namespace(o).to_string());
            }
            row.push(crate::api::object::name(o).unwrap_or("").to_string());
            if shown.is_empty() {
                row.push(crate::api::object::condition_status(o, "Ready").unwrap_or("-").to_string());
            }
            for tpl in &tpls {
                let v = tpl.column(o);
                row.push(if v.is_empty() { "<none>".into() } else { v });
            }
            if !has_age {
                let created = o.pointer("/metadata/creationTimestamp").and_then(Value::as_str);
                row.push(output::age(created, now));
            }
            if t.labels {
                let labels = o
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                row.push(if labels.is_empty() { "<none>".into() } else { labels.join(",") });
            }
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    Ok(headless(output::table(&header, &rows), !t.headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        assert_eq!(parse_output("wide").unwrap(), GetOutput::Wide);
        assert_eq!(
            parse_output("jsonpath={.items[*].metadata.name}").unwrap(),
            GetOutput::JsonPath("{.items[*].metadata.name}".into())
        );
        assert_eq!(
            parse_output("custom-columns=NAME:.metadata.name,ASN:.spec.asn").unwrap(),
            GetOutput::CustomColumns(vec![
                ("NAME".into(), ".metadata.name".into()),
                ("ASN".into(), ".spec.asn".into())
            ])
        );
        assert!(parse_output("custom-columns=NAME").is_err());
        assert!(parse_output("jsonpath={.a").is_err());
        assert!(parse_output("tsv").unwrap_err().contains("unknown output format"));
    }

    #[test]
    fn sorting_is_numeric_when_every_key_is_a_number() {
        let mut items =
            vec![json!({"spec": {"asn": 100}}), json!({"spec": {"asn": 9}}), json!({"spec": {"asn": 65000}})];
        sort(&mut items, &Template::parse(".spec.asn").unwrap());
        let got: Vec<i64> = items.iter().map(|i| i["spec"]["asn"].as_i64().unwrap()).collect();
        assert_eq!(got, [9, 100, 65000]);
    }
}
