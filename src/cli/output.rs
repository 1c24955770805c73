//! Rendering for humans and machines: tables, YAML, JSON, names. Output is deterministic:
//! sorted keys (objects are BTreeMap-backed) and rows in the order the server sorted them.

use serde_json::{json, Value};

use crate::api::object;
use crate::protocol::{ApiResourceInfo, DepNode, DiffItem, Mode, RunSummary, ServerStatus};

/// Renders rows as a left-aligned table with columns separated by three spaces (kubectl style).
/// `choreo ids usage`: one row per pool.
pub fn ids_usage(list: &[crate::protocol::PoolUsage]) -> String {
    if list.is_empty() {
        return "no identifier pools\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            let backend = u.group.split('.').next().unwrap_or_default().to_uppercase();
            vec![
                u.namespace.clone(),
                u.index.clone(),
                backend,
                u.pool.clone(),
                u.size.clone(),
                u.used.clone(),
                u.free.clone(),
                format!("{:.1}%", u.used_percent),
                u.largest_free.clone(),
            ]
        })
        .collect();
    table(&["NAMESPACE", "INDEX", "BACKEND", "POOL", "SIZE", "USED", "FREE", "USED%", "LARGEST FREE"], &rows)
}

pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{:<w$}   ", cell, w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn yaml(v: &Value) -> String {
    crate::api::object::to_yaml(v).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}

pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// kubectl's `-o name` form: `kind.group/name`, lower-case kind.
pub fn object_name(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_lowercase();
    let (group, _) = object::split_api_version(obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""));
    let name = object::name(obj).unwrap_or("");
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

/// A duration in kubectl's short form: `45s`, `12m`, `5h`, `3d`.
pub use crate::api::object::age;

/// The default `get` table.
pub fn objects_table(items: &[Value], namespaced: bool) -> String {
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            let mut row = Vec::new();
            if namespaced {
                row.push(object::namespace(o).to_string());
            }
            row.push(object::name(o).unwrap_or("").to_string());
            row.push(object::condition_status(o, "Ready").unwrap_or("-").to_string());
            let created = object::metadata(o).and_then(|m| m.get("creationTimestamp")).and_then(Value::as_str);
            row.push(age(created, now));
            row
        })
        .collect();
    let header: &[&str] = if namespaced { &["NAMESPACE", "NAME", "READY", "AGE"] } else { &["NAME", "READY", "AGE"] };
    table(header, &rows)
}

pub fn api_resources_table(list: &[ApiResourceInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.resource.clone(),
                r.short_names.join(","),
                crate::api::object::api_version(&r.group, &r.version),
                r.namespaced.to_string(),
                r.kind.clone(),
            ]
        })
        .collect();
    table(&["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], &rows)
}

pub fn api_resources_json(list: &[ApiResourceInfo]) -> Value {
    Value::Array(
        list.iter()
            .map(|r| {
                json!({"resource": r.resource, "group": r.group, "version": r.version,
                       "kind": r.kind, "namespaced": r.namespaced})
            })
            .collect(),
    )
}

/// The JSON form of `server get` (SPEC §2).
pub fn status_json(s: &ServerStatus) -> Value {
    let c = &s.context;
    let context = if s.mode == Mode::Static {
        json!({"path": c.path})
    } else {
        json!({"url": c.url, "directory": c.directory, "ref": c.reference, "commit": c.commit, "branch": c.branch})
    };
    let last_run = s.last_run.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()).unwrap_or(Value::Null);
    json!({
        "mode": s.mode.as_str(), "production": s.production, "status": s.status.as_str(), "reason": s.reason,
        "context": context, "runner": s.runner.as_str(), "lastRun": last_run,
        "serverVersion": s.server_version, "pid": s.pid,
        "sdc": s.sdc, "metrics": s.metrics,
    })
}

pub fn status_text(s: &ServerStatus) -> String {
    let c = &s.context;
    let mut lines = vec![("mode", s.mode.to_string())];
    if s.mode == Mode::Dynamic {
        lines.push(("production", s.production.to_string()));
    }
    lines.push(("status", s.status.to_string()));
    let context = match &c.path {
        Some(p) => p.clone(),
        None => match &c.url {
            Some(url) => format!(
                "{url} {} {}{}",
                c.directory.as_deref().unwrap_or("."),
                c.reference.as_deref().unwrap_or("?"),
                c.branch.as_deref().map(|b| format!(" (branch {b})")).unwrap_or_default()
            ),
            None => "<none>".into(),
        },
    };
    lines.push(("context", context));
    if let Some(commit) = &c.commit {
        lines.push(("commit", commit.clone()));
    }
    if c.path.is_some() {
        if let Some(branch) = &c.branch {
            lines.push(("branch", branch.clone()));
        }
    }
    lines.push(("runner", s.runner.to_string()));
    if let Some(last) = s.last_run.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        let outcome = if last["success"] == true {
            "success".to_string()
        } else {
            // The first line: `server get` is a summary (`run result` has all of it).
            format!("failed: {}", last["message"].as_str().unwrap_or("").lines().next().unwrap_or(""))
        };
        lines.push((
            "last run",
            format!("{} at {}, {} reconciles", outcome, last["time"].as_str().unwrap_or("?"), last["reconciles"]),
        ));
    }
    if let Some(m) = &s.metrics {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        lines.push(("uptime", go_duration((m.uptime_secs * 1e6) as u64)));
        lines.push((
            "store",
            format!(
                "{} objects, {} on disk, {} snapshots",
                m.objects,
                crate::protocol::human_size(m.store_bytes as usize),
                m.snapshots
            ),
        ));
        lines.push((
            "counters",
            format!(
                "{} loads ({} failed), {} runs ({} failed), {} watch events, {} git fetches, queue {}",
                m.loads, m.load_failures, m.runs, m.run_failures, m.watch_events, m.git_fetches, m.queue_depth
            ),
        ));
        lines.push((
            "latest",
            format!("load {}, run {}, reconcile {}", ms(m.last_load_ms), ms(m.last_run_ms), ms(m.last_reconcile_ms)),
        ));
    }
    if let Some(sdc) = &s.sdc {
        lines.push((
            "configs",
            format!("{} of {} node(s) valid, {} error(s) at {}", sdc.valid, sdc.nodes, sdc.errors.len(), sdc.time),
        ));
    }
    let mut out = String::new();
    for (k, v) in lines {
        out.push_str(&format!("{k:<10} {v}\n"));
    }
    if let Some(m) = s.metrics.as_ref().filter(|m| !m.reconcilers.is_empty()) {
        out.push_str("reconcilers:\n");
        for (name, n, errors, last) in &m.reconcilers {
            out.push_str(&format!("  {name}: {n} reconciles, {errors} errors, last {last:.1} ms\n"));
        }
    }
    if let Some(m) = s.metrics.as_ref().filter(|m| !m.pools.is_empty()) {
        out.push_str("identifier pools:\n");
        for (pool, used, size) in &m.pools {
            out.push_str(&format!("  {pool}: {used} of {size} allocated\n"));
        }
    }
    if let Some(sdc) = s.sdc.as_ref().filter(|s| !s.errors.is_empty() || !s.warnings.is_empty()) {
        out.push_str("config errors:\n");
        for e in &sdc.errors {
            out.push_str(&format!("  {e}\n"));
        }
        for w in &sdc.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    if !s.reason.is_empty() {
        out.push_str("reason:\n");
        for l in s.reason.lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}

/// Columns padded to the widest cell, one space apart (the `run once` summary layout).
fn padded(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s =
            cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c, w = widths[i])).collect::<Vec<_>>().join(" ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Go's duration text for what a run took (`12.487ms`, `1.5s`).
fn go_duration(micros: u64) -> String {
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{}ms", trim_float(micros as f64 / 1_000.0))
    } else {
        format!("{}s", trim_float(micros as f64 / 1_000_000.0))
    }
}

fn trim_float(f: f64) -> String {
    let s = format!("{f:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The summary of a run, as upstream's CLI prints it.
pub fn run_summary(s: &RunSummary, format: super::SummaryFormat) -> String {
    use super::SummaryFormat;
    if format == SummaryFormat::Json {
        return json(&serde_json::to_value(s).unwrap_or(Value::Null));
    }
    if !s.success {
        return format!("execution failed\n  reason task {} message {}\n", s.task, s.message) + &sdc_lines(s);
    }
    let mut out = String::from("Run root summary\n");
    if !s.events.is_empty() {
        out.push_str(&format!("execution success, time(msec) {}\n", go_duration(s.elapsed_micros)));
    }
    let counts = |key: &dyn Fn(&crate::protocol::RunEvent) -> Vec<String>| {
        let mut map: std::collections::BTreeMap<Vec<String>, [u64; 4]> = std::collections::BTreeMap::new();
        for e in &s.events {
            let c = map.entry(key(e)).or_default();
            match e.operation.as_str() {
                "START" => c[0] += 1,
                "STOP" => c[1] += 1,
                "REQUEUE" => c[2] += 1,
                _ => c[3] += 1,
            }
        }
        let mut rows: Vec<Vec<String>> = map
            .into_iter()
            .map(|(mut k, c)| {
                k.extend(c.iter().map(u64::to_string));
                k
            })
            .collect();
        rows.sort_by_key(|r| r[0].to_lowercase());
        rows
    };
    match format {
        SummaryFormat::Reconciler | SummaryFormat::Json => {
            let rows = counts(&|e| vec![e.reconciler.clone()]);
            out.push_str(&padded(&["Reconciler", "Start", "Stop", "Requeue", "Error"], &rows));
        }
        SummaryFormat::Resource => {
            let rows = counts(&|e| vec![e.reconciler.clone(), e.resource.clone()]);
            out.push_str(&padded(&["Reconciler", "Resource", "Start", "Stop", "Requeue", "Error"], &rows));
        }
        SummaryFormat::Raw => {
            let rows: Vec<Vec<String>> = s
                .events
                .iter()
                .map(|e| {
                    let t = chrono::DateTime::parse_from_rfc3339(&e.time)
                        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
                        .unwrap_or_else(|_| e.time.clone());
                    vec![t, e.reconciler.clone(), e.resource.clone(), e.operation.clone(), e.message.clone()]
                })
                .collect();
            out.push_str(&padded(&["EventTime", "Reconciler", "Resource", "Operation", "Message"], &rows));
        }
    }
    out + &sdc_lines(s)
}

/// With `-s`: how the device configs fared (their errors are the run's message when it failed
/// because of them), and what was skipped.
fn sdc_lines(s: &RunSummary) -> String {
    let Some(sdc) = &s.sdc else { return String::new() };
    let mut out = format!(
        "config validation: {} of {} node(s) valid, {} error(s), time(msec) {}\n",
        sdc.valid,
        sdc.nodes,
        sdc.errors.len(),
        go_duration(sdc.elapsed_micros)
    );
    if s.success || s.task != "config validator" {
        for e in &sdc.errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    for w in &sdc.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out
}

/// `run diff`: `<symbol> <group/version>, Kind=<Kind> <name>` per object, details after.
pub fn diff(items: &[DiffItem]) -> String {
    let mut out = String::new();
    for i in items {
        let name = if i.namespace.is_empty() { i.name.clone() } else { format!("{}/{}", i.namespace, i.name) };
        out.push_str(&format!("{} {}, Kind={} {}\n", i.symbol, i.api_version, i.kind, name));
        if let Some(d) = &i.details {
            out.push_str(d);
            if !d.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// `config blame`: each leaf with its value and origin, as a table or JSON.
pub fn blame(rows: &[crate::protocol::BlameRow], as_json: bool) -> String {
    if as_json {
        return json(&serde_json::to_value(rows).unwrap_or(Value::Null));
    }
    let table: Vec<Vec<String>> =
        rows.iter().map(|r| vec![r.source.clone(), r.path.clone(), r.value.clone()]).collect();
    padded(&["SOURCE", "PATH", "VALUE"], &table)
}

/// `run deps`: one line per object, children indented under their owners with `+-`.
pub fn deps(nodes: &[DepNode]) -> String {
    let mut out = String::new();
    for n in nodes {
        if n.depth > 0 {
            out.push_str(&" ".repeat(2 * (n.depth - 1)));
            out.push_str("+-");
        }
        out.push_str(&format!("{}.{} {}\n", n.kind, n.api_version, n.name));
    }
    out
}

/// A branch log, as `git log` prints it.
pub fn git_log(log: &[crate::protocol::LogEntry]) -> String {
    let mut out = String::new();
    for c in log {
        out.push_str(&format!("commit {}\nAuthor: {} <{}>\nDate:   {}\n\n", c.id, c.author, c.email, c.date));
        for line in c.message.lines() {
            out.push_str(&format!("    {line}\n"));
        }
        out.push('\n');
    }
    out
}

/// ` <symbol> <path>` lines of a branch diff.
pub fn branch_diff(items: &[(String, String)]) -> String {
    items.iter().map(|(symbol, path)| format!("{symbol} {path}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_trims() {
        let t = table(&["NAME", "READY"], &[vec!["a-long-name".into(), "True".into()], vec!["b".into(), "-".into()]]);
        assert_eq!(t, "NAME          READY\na-long-name   True\nb             -\n");
    }

    #[test]
    fn names_and_ages() {
        let obj = json!({"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld", "metadata": {"name": "t"}});
        assert_eq!(object_name(&obj), "helloworld.example.com/t");
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(age(Some("2026-01-01T00:59:15Z"), now), "45s");
        assert_eq!(age(Some("2026-01-01T00:00:00Z"), now), "60m");
        assert_eq!(age(None, now), "<unknown>");
    }
}
