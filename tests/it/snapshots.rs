//! Snapshots of what users read: the help of the kubectl-style verbs and the tables of `get`,
//! `api-resources`, `explain` and `plan`. A change of wording or layout shows up as a diff of
//! `tests/it/snapshots/*.snap` (review with `cargo insta review`, or rerun with
//! `INSTA_UPDATE=always` and read the diff).

use crate::support::*;

/// `choreo ARGS` with a fixed terminal width, so help wraps the same everywhere.
fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).args(args).env("COLUMNS", "100").output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_texts() {
    for args in [
        &["--help"][..],
        &["get", "--help"],
        &["describe", "--help"],
        &["explain", "--help"],
        &["wait", "--help"],
        &["plan", "--help"],
        &["run", "once", "--help"],
        &["apply", "--help"],
        &["delete", "--help"],
        &["completion", "--help"],
    ] {
        let name = args[..args.len() - 1].join("-");
        let name = if name.is_empty() { "choreo".to_string() } else { name };
        insta::assert_snapshot!(format!("help-{name}"), help(args));
    }
}

/// Replaces the cells of column `header` (ages, which depend on the clock) with `*`, keeping
/// the layout.
fn mask_column(table: &str, header: &str) -> String {
    let mut lines = table.lines();
    let Some(head) = lines.next() else { return String::new() };
    let Some(start) = head.find(&format!("  {header}")).map(|i| i + 2) else { return table.to_string() };
    let end = head[start + header.len()..].find(|c: char| c != ' ').map(|i| start + header.len() + i);
    let mut out = format!("{head}\n");
    for line in lines {
        let (before, rest) = line.split_at(start.min(line.len()));
        match end {
            Some(end) if end <= line.len() => {
                out.push_str(&format!("{before}{:<w$}{}\n", "*", &line[end..], w = end - start))
            }
            _ => out.push_str(&format!("{before}{}\n", if rest.is_empty() { "" } else { "*" })),
        }
    }
    out
}

#[test]
fn tables() {
    let p = crate::kubectl::project();
    let _s = p.start();
    let get = |args: &[&str]| mask_column(&p.cli(args).ok().stdout, "AGE");
    insta::assert_snapshot!("get-devices", get(&["get", "devices"]));
    insta::assert_snapshot!("get-devices-wide-labels", get(&["get", "devices", "-o", "wide", "--show-labels"]));
    // Without headers, the age is the last word of each row.
    let rows = p.cli(&["get", "devices", "-n", "default", "--no-headers", "--sort-by", ".spec.asn"]).ok().stdout;
    let rows: String = rows.lines().map(|l| format!("{}*\n", l.trim_end_matches(|c: char| c != ' '))).collect();
    insta::assert_snapshot!("get-devices-namespace-no-headers", rows);
    insta::assert_snapshot!(
        "get-devices-custom-columns",
        get(&["get", "devices", "-o", "custom-columns=NAME:.metadata.name,SITE:.metadata.labels.site,ASN:.spec.asn"])
    );
    insta::assert_snapshot!("get-device-one", get(&["get", "devices", "leaf3", "-n", "lab"]));
    insta::assert_snapshot!("api-resources", p.cli(&["api-resources"]).ok().stdout);
    insta::assert_snapshot!("explain-devices-spec", p.cli(&["explain", "devices.spec"]).ok().stdout);
}

#[test]
fn plan_output() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    insta::assert_snapshot!("plan-fabric", p.cli(&["plan"]).ok().stdout);
}
