//! Differential tests: a corpus of templates rendered by our engines and by the reference
//! engines, compared byte for byte — Go's own text/template (`tests/differential/gotemplate.go`,
//! run with `go run`) and Python's Jinja2 (`tests/differential/jinja.py`). A case where the
//! reference fails must fail here too (messages differ). `.ci/run` installs both engines.
//!
//! Known, deliberate differences are not in the corpus but in the README: printing a missing
//! value (an error here), numbers that upstream hands over as float64.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::{gotemplate::GoTemplate, jinja::Jinja, Engine};
use crate::reconcile::{Budget, Interrupt, Limits};

fn data() -> Value {
    json!({
        "apiVersion": "net.example.org/v1alpha1",
        "kind": "Device",
        "metadata": {"name": "leaf1", "namespace": "default", "labels": {"role": "leaf", "site": "ams"}},
        "spec": {
            "hostname": "leaf1", "asn": 65001, "mtu": 9000, "ratio": 1.5, "enabled": true,
            "disabled": false, "empty": "", "zero": 0, "negative": -7,
            "interfaces": [
                {"name": "ethernet-1/1", "vlan": 10, "mtu": 1500},
                {"name": "ethernet-1/2", "vlan": 20},
                {"name": "lo0", "vlan": 0}
            ],
            "tags": ["a", "b", "c"],
            "peers": {"spine1": 65100, "spine2": 65101},
            "nested": {"a": {"b": {"c": "deep"}}},
            "loopback": "10.0.0.1/32", "routerId": "10.0.0.1",
            "links": [{"link": "leaf1-spine1", "port": 1, "vlan": 100, "prefix": "10.1.0.0/31"},
                      {"link": "leaf1-spine2", "port": 2, "vlan": 101, "prefix": "10.1.0.2/31"}],
            "nothing": null,
            "node": "leaf1", "name": "eth0", "description": "uplink", "address": "192.0.2.1", "prefixLength": 31
        }
    })
}

/// One case: the main template and any helper files (name, source).
type Case = (String, Vec<(String, String)>);

fn go_corpus() -> Vec<Case> {
    let one = |t: &'static str| vec![("main.tpl", t)];
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("field", one("{{ .metadata.name }}/{{ .metadata.labels.role }}")),
        ("integer", one("{{ .spec.asn }} {{ .spec.zero }} {{ .spec.negative }}")),
        ("float", one("{{ .spec.ratio }}")),
        ("bool", one("{{ .spec.enabled }} {{ .spec.disabled }}")),
        ("printf d", one("{{ printf \"%d\" .spec.asn }}")),
        ("printf widths", one("{{ printf \"%05d|%-6s|%6s|%x|%X|%o|%b\" .spec.asn .metadata.name .metadata.name .spec.asn .spec.asn .spec.mtu .spec.zero }}")),
        ("printf q v", one("{{ printf \"%q %v %v\" .metadata.name .spec.tags .spec.asn }}")),
        ("printf floats", one("{{ printf \"%.2f|%8.3f|%e|%g\" .spec.ratio .spec.ratio .spec.ratio .spec.ratio }}")),
        ("printf map", one("{{ printf \"%t %v\" .spec.enabled .spec.peers }}")),
        ("printf missing arg", one("{{ printf \"%v %d\" .spec.hostname }}")),
        ("printf nil", one("{{ printf \"%v\" .spec.nothing }}")),
        ("print list", one("{{ .spec.tags }}")),
        ("print map", one("{{ .spec.nested }}")),
        ("range", one("{{ range .spec.tags }}{{ . }},{{ end }}")),
        ("range index", one("{{ range $i, $v := .spec.tags }}{{ $i }}={{ $v }} {{ end }}")),
        ("range map", one("{{ range $k, $v := .spec.peers }}{{ $k }}:{{ $v }};{{ end }}")),
        ("range objects", one("{{ range .spec.interfaces }}{{ .name }}{{ if .mtu }} mtu {{ .mtu }}{{ end }}\n{{ end }}")),
        ("range else", one("{{ range .spec.missing }}x{{ else }}none{{ end }}")),
        ("range separator", one("{{ range $i, $e := .spec.interfaces }}{{ if $i }}, {{ end }}{{ $e.name }}{{ end }}")),
        ("with", one("{{ with .spec.nested.a.b }}{{ .c }}{{ end }}")),
        ("with else", one("{{ with .spec.missing }}yes{{ else }}no{{ end }}")),
        ("and", one("{{ if and .spec.enabled .spec.asn }}both{{ end }}")),
        ("or", one("{{ if or .spec.disabled .spec.empty }}one{{ else }}neither{{ end }}")),
        ("not", one("{{ if not .spec.disabled }}not{{ end }} {{ not .spec.zero }} {{ not .spec.empty }}")),
        ("and or values", one("{{ and .spec.asn .spec.mtu }} {{ or .spec.empty .spec.hostname }}")),
        ("eq ne", one("{{ if eq .spec.asn 65001 }}eq{{ end }} {{ if ne .metadata.name \"x\" }}ne{{ end }}")),
        ("lt le gt ge", one("{{ if lt .spec.mtu 10000 }}lt{{ end }}{{ if le 1 2 }}le{{ end }}{{ if gt .spec.asn 1 }}gt{{ end }}{{ if ge 2 2 }}ge{{ end }}")),
        ("eq many", one("{{ eq .metadata.name \"a\" \"leaf1\" \"b\" }}")),
        ("len", one("{{ len .spec.tags }} {{ len .spec.peers }} {{ len .metadata.name }}")),
        ("index", one("{{ index .spec.tags 1 }} {{ index .spec.peers \"spine2\" }} {{ index .spec.interfaces 0 \"name\" }}")),
        ("slice", one("{{ slice .spec.tags 1 }} {{ slice .spec.tags 0 2 }} {{ slice .metadata.name 1 3 }}")),
        ("assign", one("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}")),
        ("outer variable", one("{{ $name := .metadata.name }}{{ range .spec.tags }}{{ $name }}-{{ . }} {{ end }}")),
        ("dollar", one("{{ range .spec.tags }}{{ $.metadata.name }}{{ end }}")),
        ("break", one("{{ range .spec.tags }}{{ if eq . \"b\" }}{{ break }}{{ end }}{{ . }}{{ end }}")),
        ("continue", one("{{ range .spec.tags }}{{ if eq . \"b\" }}{{ continue }}{{ end }}{{ . }}{{ end }}")),
        ("trim", one("a  {{- .metadata.name -}}  b\n  {{- /* comment */ -}}\n  c")),
        ("comment", one("x{{/* a comment */}}y")),
        ("define template", vec![("main.tpl", "{{ template \"x\" .spec }}"), ("helper.tpl", "{{ define \"x\" }}[{{ .hostname }}]{{ end }}")]),
        ("define nested", vec![("main.tpl", "{{ template \"outer\" . }}"), ("h.tpl", "{{ define \"inner\" }}<{{ . }}>{{ end }}{{ define \"outer\" }}{{ range .spec.tags }}{{ template \"inner\" . }}{{ end }}{{ end }}")]),
        ("block", one("{{ block \"b\" .metadata }}{{ .name }}{{ end }}")),
        ("template pipeline", vec![("main.tpl", "{{ template \"x\" .spec.nested.a }}"), ("h.tpl", "{{ define \"x\" }}{{ .b.c }}{{ end }}")]),
        ("print println", one("{{ print \"a\" 1 2 \"b\" }}|{{ println \"x\" 3 }}|")),
        ("pipeline", one("{{ .spec.hostname | printf \"%s!\" }} {{ .spec.tags | len }} {{ slice .spec.tags 1 2 | len }}")),
        ("literals", one("{{ \"quoted \\\"str\\\"\" }} {{ `raw` }} {{ 'a' }} {{ 0x1F }} {{ 1e3 }} {{ 1.5 }} {{ -2 }}")),
        ("escapers", one("{{ html \"<a&b>\" }} {{ js \"it's\" }} {{ urlquery \"a b&c\" }}")),
        ("empty values", one("{{ .spec.zero }} [{{ .spec.empty }}] {{ if .spec.interfaces }}has{{ end }}")),
        ("if else chain", one("{{ if eq .spec.mtu 1500 }}std{{ else if gt .spec.mtu 1500 }}jumbo{{ else }}small{{ end }}")),
        ("yaml shape", one("interfaces:\n{{- range .spec.interfaces }}\n- name: {{ .name }}\n  vlan: {{ .vlan }}\n{{- end }}\n")),
        ("error field of string", one("{{ .spec.hostname.foo }}")),
        ("error index out of range", one("{{ index .spec.tags 5 }}")),
        ("error unknown function", one("{{ nosuchfunc 1 }}")),
        ("error unclosed", one("{{ if .spec.enabled }}x")),
        ("error stray end", one("x{{ end }}")),
        ("error unknown template", one("{{ template \"nope\" . }}")),
    ];
    owned(cases).into_iter().chain(fixture_cases("tpl")).collect()
}

fn jinja_corpus() -> Vec<Case> {
    let one = |t: &'static str| vec![("main.jinja2", t)];
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("field", one("{{ metadata.name }}/{{ metadata.labels.role }}")),
        ("arithmetic", one("{{ spec.asn + 1 }} {{ spec.asn * 2 }} {{ spec.mtu // 7 }} {{ spec.mtu % 7 }} {{ spec.mtu / 4 }} {{ spec.negative - 1 }}")),
        ("float", one("{{ spec.ratio }} {{ spec.ratio * 2 }} {{ 2.567|round(2) }}")),
        ("bool", one("{{ spec.enabled }} {{ spec.disabled }} {{ true }}")),
        ("loop vars", one("{% for t in spec.tags %}{{ loop.index }}:{{ t }}{% if not loop.last %},{% endif %}{% endfor %}")),
        ("loop more vars", one("{% for t in spec.tags %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.length }} {% endfor %}")),
        ("items", one("{% for k, v in spec.peers.items() %}{{ k }}={{ v }};{% endfor %}")),
        ("dict keys", one("{% for k in spec.peers %}{{ k }} {% endfor %}")),
        ("loop filter", one("{% for i in spec.interfaces if i.vlan %}{{ i.name }} {% endfor %}")),
        ("loop else", one("{% for x in spec.missing|default([]) %}x{% else %}empty{% endfor %}")),
        ("if elif", one("{% if spec.mtu > 1500 %}jumbo{% elif spec.mtu == 1500 %}std{% else %}small{% endif %}")),
        ("defined", one("{% if spec.missing is defined %}d{% else %}u{% endif %} {% if spec.asn is defined %}d{% endif %}")),
        ("default", one("{{ spec.missing|default(\"dflt\") }} {{ spec.empty|default(\"e\", true) }}")),
        ("set", one("{% set x = 3 %}{{ x * 2 }}{% set y %}block{% endset %}{{ y|upper }}")),
        ("macro", one("{% macro m(a, b=\"B\") %}{{ a }}-{{ b }}{% endmacro %}{{ m(1) }} {{ m(1, 2) }} {{ m(a=3, b=4) }}")),
        ("from import", vec![("main.jinja2", "{% from 'h.jinja2' import h %}{{ h(spec.hostname) }}"), ("h.jinja2", "{% macro h(x) %}<{{ x }}>{% endmacro %}")]),
        ("import as", vec![("main.jinja2", "{% import 'h.jinja2' as hh %}{{ hh.h(1) }}"), ("h.jinja2", "{% macro h(x) %}<{{ x }}>{% endmacro %}")]),
        ("include", vec![("main.jinja2", "a {% include 'i.jinja2' %} b"), ("i.jinja2", "inc {{ metadata.name }}")]),
        ("string filters", one("{{ metadata.name|upper }} {{ \"ABC\"|lower }} {{ \"hello world\"|title }} {{ \"hello\"|capitalize }}")),
        ("list filters", one("{{ spec.tags|join(\",\") }} {{ spec.tags|length }} {{ spec.tags|first }} {{ spec.tags|last }} {{ spec.tags|reverse|join }}")),
        ("map attribute", one("{{ spec.interfaces|map(attribute=\"name\")|join(\" \") }}")),
        ("selectattr", one("{{ spec.interfaces|selectattr(\"mtu\")|map(attribute=\"name\")|join }}")),
        ("sort", one("{{ spec.tags|sort(reverse=true)|join }}")),
        ("trim replace", one("{{ \"  x  \"|trim }}|{{ \"a-b-c\"|replace(\"-\", \"+\") }}")),
        ("conversions", one("{{ spec.asn|string }} {{ \"42\"|int + 1 }} {{ \"1.5\"|float * 2 }}")),
        ("abs", one("{{ spec.negative|abs }}")),
        ("batch", one("{{ spec.tags|batch(2)|list|length }}")),
        ("format", one("{{ \"%s-%d\"|format(\"a\", 3) }}")),
        ("concat", one("{{ spec.hostname ~ \"-\" ~ spec.asn }}")),
        ("in", one("{{ \"a\" in spec.tags }} {{ \"z\" not in spec.tags }}")),
        ("subscript", one("{{ spec.tags[0] }} {{ spec.tags[-1] }} {{ spec.tags[1:]|join }}")),
        ("dict subscript", one("{{ spec.peers[\"spine1\"] }} {{ spec.peers.spine2 }} {{ spec.nested[\"a\"][\"b\"][\"c\"] }}")),
        ("whitespace", one("a\n  {%- if true %}\n  b\n  {%- endif %}\nc\n")),
        ("trim blocks", one("{% for t in spec.tags -%}\n  {{ t }}\n{%- endfor %}")),
        ("range", one("{% for i in range(3) %}{{ i }}{% endfor %} {{ range(1, 10, 3)|list|join(\",\") }}")),
        ("break", one("{% for t in spec.tags %}{% if t == \"b\" %}{% break %}{% endif %}{{ t }}{% endfor %}")),
        ("continue", one("{% for t in spec.tags %}{% if t == \"b\" %}{% continue %}{% endif %}{{ t }}{% endfor %}")),
        ("sum", one("{{ spec.interfaces|sum(attribute=\"vlan\") }}")),
        ("unique", one("{{ spec.tags|unique|list|length }}")),
        ("filter block", one("{% filter upper %}abc{% endfilter %}")),
        ("conditional expression", one("{{ \"x\" if spec.enabled else \"y\" }}")),
        ("comment", one("{# comment #}kept")),
        ("raw", one("{% raw %}{{ not rendered }}{% endraw %}")),
        ("tests", one("{{ spec.mtu is divisibleby 3 }} {{ spec.asn is odd }} {{ spec.tags is sequence }} {{ spec.peers is mapping }} {{ spec.hostname is string }}")),
        ("dictsort", one("{{ spec.peers|dictsort|first|join(\"=\") }}")),
        ("nested loops", one("{% for i in spec.interfaces %}{% for t in spec.tags %}{{ i.vlan }}{{ t }}{% endfor %};{% endfor %}")),
        ("loop cycle", one("{% for t in spec.tags %}{{ loop.cycle(\"odd\", \"even\") }} {% endfor %}")),
        ("yaml shape", one("interfaces:\n{%- for i in spec.interfaces %}\n- name: {{ i.name }}\n  vlan: {{ i.vlan }}\n{%- endfor %}\n")),
        ("error undefined attribute", one("{{ spec.missing.deeper }}")),
        ("error syntax", one("{% if %}")),
        ("error unknown filter", one("{{ spec.hostname|nosuchfilter }}")),
        ("error missing template", one("{% include 'nope.jinja2' %}")),
    ];
    owned(cases).into_iter().chain(fixture_cases("jinja2")).collect()
}

fn owned(cases: Vec<(&str, Vec<(&str, &str)>)>) -> Vec<Case> {
    cases
        .into_iter()
        .map(|(name, files)| {
            (name.to_string(), files.into_iter().map(|(n, s)| (n.to_string(), s.to_string())).collect())
        })
        .collect()
}

/// Every template reconciler of the project fixtures whose files end in `.ext`, as a case
/// (rendered with the corpus data, which has the fields the fixtures' templates print).
fn fixture_cases(ext: &str) -> impl Iterator<Item = Case> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut cases = Vec::new();
    let mut dirs: Vec<_> = walk(&fixtures)
        .into_iter()
        .filter(|d| d.ends_with("reconcilers") || d.parent().is_some_and(|p| p.ends_with("reconcilers")))
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), std::fs::read_to_string(&p).ok()?)))
            // Fixtures may use the pongo2 dialect; Jinja2 reads it after our rewrite.
            .map(|(n, src)| if ext == "jinja2" { (n, super::pongo2::to_jinja(&src)) } else { (n, src) })
            .collect();
        files.sort();
        if files.iter().any(|(n, _)| n.starts_with("main.")) {
            cases.push((format!("fixture {}", dir.display()), files));
        }
    }
    cases.into_iter()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&entry.path()));
        }
    }
    out
}

/// Runs the reference program over every case; one result per case (`Ok(output)` or
/// `Err(message)`).
fn reference(program: &mut Command, cases: &[Case], data: &Value) -> Vec<Result<String, String>> {
    let input: Vec<Value> = cases.iter().map(|(_, files)| json!({"files": files_map(files), "data": data})).collect();
    let mut child = program
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the reference engine {program:?} ({e}); `.ci/run` installs it"));
    let stdin = serde_json::to_vec(&input).unwrap();
    child.stdin.take().unwrap().write_all(&stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the reference's answer");
    results
        .into_iter()
        .map(|r| match (r.get("output").and_then(Value::as_str), r.get("error").and_then(Value::as_str)) {
            (Some(o), _) => Ok(o.to_string()),
            (_, Some(e)) => Err(e.to_string()),
            _ => Err("no result".into()),
        })
        .collect()
}

fn files_map(files: &[(String, String)]) -> BTreeMap<String, String> {
    files.iter().cloned().collect()
}

fn compare(
    engine: &str,
    cases: &[Case],
    expected: Vec<Result<String, String>>,
    compile: impl Fn(&BTreeMap<String, String>) -> Result<Box<dyn Engine>, String>,
) {
    let interrupt = Interrupt::default();
    let budget = Budget::start(Limits::default(), None, &interrupt);
    let data = data();
    let mut differences = Vec::new();
    for ((name, files), want) in cases.iter().zip(expected) {
        let got = compile(&files_map(files)).and_then(|e| e.render(&data, &budget));
        match (&got, &want) {
            (Ok(g), Ok(w)) if g == w => {}
            (Err(_), Err(_)) => {}
            _ => differences.push(format!("{engine} case {name:?}: ours {got:?}, reference {want:?}")),
        }
    }
    assert!(differences.is_empty(), "{} difference(s):\n{}", differences.len(), differences.join("\n"));
}

fn differential_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential")
}

#[test]
fn go_templates_render_as_go_text_template_does() {
    let cases = go_corpus();
    assert!(cases.len() >= 40);
    assert!(cases.iter().any(|(n, _)| n.contains("srl-config")), "the fixtures' templates are in the corpus");
    let mut go = Command::new("go");
    go.arg("run").arg(differential_dir().join("gotemplate.go"));
    // A private cache: parallel-safe, and nothing needed from $HOME.
    let cache = tempfile::tempdir().unwrap();
    go.env("GOCACHE", cache.path()).env("GOFLAGS", "-mod=mod").env("GO111MODULE", "off");
    let expected = reference(&mut go, &cases, &data());
    compare("gotemplate", &cases, expected, |files| {
        GoTemplate::compile(files, Limits::DEFAULT_STEPS).map(|t| Box::new(t) as Box<dyn Engine>)
    });
}

#[test]
fn jinja_templates_render_as_python_jinja2_does() {
    let cases = jinja_corpus();
    assert!(cases.len() >= 40);
    assert!(cases.iter().any(|(n, _)| n.contains("cli-config")), "the fixtures' templates are in the corpus");
    let mut python = Command::new("python3");
    python.arg(differential_dir().join("jinja.py"));
    let expected = reference(&mut python, &cases, &data());
    compare("jinjatemplate", &cases, expected, |files| {
        Jinja::compile(files, Limits::DEFAULT_STEPS).map(|t| Box::new(t) as Box<dyn Engine>)
    });
}
