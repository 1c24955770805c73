//! Template reconcilers against an in-memory client: the shared contract (children, owner
//! references, garbage collection, finalizer, condition, deletion) and each engine's dialect
//! and errors.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{compile, TemplateRuntime};
use crate::reconcile::fake_client::FakeClient;
use crate::reconcile::{Budget, Interrupt, Outcome, ReconcilerConfig, Runtime};

fn config(kind: &str, files: &[(&str, &str)], extra: Value) -> Arc<ReconcilerConfig> {
    let mut spec = json!({
        "for": {"group": "net.example.org", "version": "v1alpha1", "kind": "Interface", "selector": {}},
        "owns": [{"group": "config.example.org", "version": "v1alpha1", "kind": "Config"}],
        "type": kind,
        "code": files.iter().map(|(n, s)| (n.to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let obj = json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Reconciler",
        "metadata": {"name": "if.config"}, "spec": spec});
    Arc::new(ReconcilerConfig::from_object(&obj).expect("test config"))
}

fn go(files: &[(&str, &str)]) -> Result<TemplateRuntime, String> {
    compile(config("gotemplate", files, json!({})))
}

fn jinja(files: &[(&str, &str)]) -> Result<TemplateRuntime, String> {
    compile(config("jinjatemplate", files, json!({})))
}

fn interface(spec: Value) -> Value {
    json!({"apiVersion": "net.example.org/v1alpha1", "kind": "Interface",
        "metadata": {"name": "e1", "namespace": "default", "uid": "u-if"}, "spec": spec})
}

fn reconcile(rt: &TemplateRuntime, client: &mut FakeClient) -> Outcome {
    let live = client.object("Interface", "default", "e1").cloned().expect("the for-object");
    let interrupt = Interrupt::default();
    rt.reconcile(&live, client, &Budget::start(rt.cfg.limits, None, &interrupt))
}

fn error_of(o: Outcome) -> String {
    match o {
        Outcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

const GO_MAIN: &str = "apiVersion: config.example.org/v1alpha1
kind: Config
metadata:
  name: {{ .metadata.name }}
spec:
  priority: 10
  value:
{{- template \"iface\" .spec }}
";

const GO_HELPER: &str = "{{- define \"iface\" }}
    name: {{ .name }}
    description: {{ printf \"%s.%d\" .name .id }}
    {{- if .mtu }}
    mtu: {{ .mtu }}
    {{- end }}
{{- end }}
";

#[test]
fn a_go_template_renders_one_owned_child_and_marks_the_for_object() {
    let rt = go(&[("main.tpl", GO_MAIN), ("iface.tpl", GO_HELPER)]).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"name": "ethernet-1/1", "id": 0}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    let child = client.object("Config", "default", "e1").expect("child created");
    assert_eq!(
        child["spec"],
        json!({"priority": 10, "value": {"name": "ethernet-1/1", "description": "ethernet-1/1.0"}})
    );
    assert_eq!(
        child["metadata"]["ownerReferences"],
        json!([{"apiVersion": "net.example.org/v1alpha1", "kind": "Interface", "name": "e1", "uid": "u-if", "controller": true}])
    );
    let owner = client.object("Interface", "default", "e1").unwrap();
    assert_eq!(owner["metadata"]["finalizers"], json!(["if.config"]));
    assert!(owner.get("status").is_none(), "no conditionType, no condition: {owner}");
}

#[test]
fn several_documents_are_several_children_and_a_child_no_longer_rendered_is_deleted() {
    let main = "{{ range .spec.names }}---
apiVersion: config.example.org/v1alpha1
kind: Config
metadata:
  name: {{ . }}
{{ end }}";
    let rt = go(&[("main.tpl", main)]).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"names": ["a", "b"]}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert!(client.object("Config", "default", "a").is_some() && client.object("Config", "default", "b").is_some());
    client.objects.values_mut().filter(|o| o["kind"] == "Interface").for_each(|o| o["spec"]["names"] = json!(["b"]));
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert!(client.object("Config", "default", "a").is_none(), "a is garbage now");
    assert!(client.object("Config", "default", "b").is_some());
}

#[test]
fn printing_a_missing_value_names_its_place_and_path_while_tests_of_it_work() {
    let main = "apiVersion: config.example.org/v1alpha1\nkind: Config\nmetadata:\n  name: x\n  annotations:\n    {{- if .spec.optional }}\n    a: {{ .spec.optional }}\n    {{- end }}\n    {{- with .spec.other }}b: {{ . }}{{ end }}\n    host: {{ .spec.hostnme }}\n";
    let rt = go(&[("main.tpl", main)]).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"hostname": "leaf1"}))]);
    let e = error_of(reconcile(&rt, &mut client));
    assert!(e.starts_with("main.tpl:10:11: .spec.hostnme: no such key"), "{e}");
    assert!(client.object("Config", "default", "x").is_none(), "nothing rendered is applied");
    // Printing the same path through a pipeline names the pipeline.
    let rt = go(&[("main.tpl", "{{ .spec.x | printf \"%v\" | len }}{{ .spec.y }}")]).unwrap();
    let e = error_of(reconcile(&rt, &mut client));
    assert!(e.contains("main.tpl:1:") && e.contains(".spec.y: no such key"), "{e}");
}

#[test]
fn go_parse_errors_name_the_file_they_are_in() {
    let e = go(&[("main.tpl", "ok"), ("helper.tpl", "line one\n{{ if .x }}")]).unwrap_err();
    assert!(e.starts_with("helper.tpl:"), "{e}");
    let e = go(&[("main.tpl", "a\n\nb {{ .x | }}")]).unwrap_err();
    assert!(e.starts_with("main.tpl:3:"), "{e}");
    // Block structure, which gotmpl alone does not check.
    let e = go(&[("main.tpl", "x\n  {{ end }}")]).unwrap_err();
    assert_eq!(e, "main.tpl:2:3: unexpected {{end}}");
    let e = go(&[("main.tpl", "{{ if .a }}{{ break }}{{ end }}")]).unwrap_err();
    assert!(e.contains("{{break}} outside {{range}}"), "{e}");
    let e = go(&[("main.tpl", "{{ else }}")]).unwrap_err();
    assert!(e.contains("unexpected {{else}}"), "{e}");
    let e = go(&[("main.tpl", "{{ range .a }}\n{{ with .b }}")]).unwrap_err();
    assert!(e.starts_with("main.tpl:2:1: unexpected EOF: {{with}} has no {{end}}"), "{e}");
    assert!(
        go(&[("main.tpl", "{{ range .a }}{{ if . }}{{ break }}{{ else }}{{ continue }}{{ end }}{{ end }}")]).is_ok()
    );
}

#[test]
fn a_child_of_a_kind_not_owned_or_not_yaml_is_an_error_recorded_on_the_condition() {
    let main = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n";
    let cfg = config("gotemplate", &[("main.tpl", main)], json!({"conditionType": "Ready"}));
    let rt = compile(cfg).unwrap();
    let mut client = FakeClient::with(&[interface(json!({}))]);
    let e = error_of(reconcile(&rt, &mut client));
    assert!(e.contains("ConfigMap.v1, which the reconciler does not own"), "{e}");
    let owner = client.object("Interface", "default", "e1").unwrap();
    assert_eq!(owner["status"]["conditions"][0]["status"], "False");
    assert!(owner["status"]["conditions"][0]["message"].as_str().unwrap().contains("does not own"));

    let rt = go(&[("main.tpl", "kind: [\n")]).unwrap();
    let e = error_of(reconcile(&rt, &mut client));
    assert!(e.starts_with("the rendered output is not valid YAML"), "{e}");
}

#[test]
fn the_condition_is_set_when_configured() {
    let cfg =
        config("gotemplate", &[("main.tpl", GO_MAIN), ("iface.tpl", GO_HELPER)], json!({"conditionType": "Ready"}));
    let rt = compile(cfg).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"name": "e", "id": 1}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    let owner = client.object("Interface", "default", "e1").unwrap();
    assert_eq!(owner["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(owner["status"]["conditions"][0]["status"], "True");
}

#[test]
fn deletion_deletes_the_children_and_drops_the_finalizer_without_rendering() {
    let rt = go(&[("main.tpl", GO_MAIN), ("iface.tpl", GO_HELPER)]).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"name": "e", "id": 1}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    use crate::reconcile::Client;
    client.delete("net.example.org/v1alpha1", "Interface", "default", "e1").unwrap();
    // The spec no longer renders; deletion must not need it.
    client.objects.values_mut().filter(|o| o["kind"] == "Interface").for_each(|o| o["spec"] = json!({}));
    assert_eq!(reconcile_deleting(&rt, &mut client), Outcome::Done);
    assert!(client.object("Config", "default", "e1").is_none());
    assert!(client.object("Interface", "default", "e1").is_none(), "finalizer gone, object gone");
}

fn reconcile_deleting(rt: &TemplateRuntime, client: &mut FakeClient) -> Outcome {
    let live = client.object("Interface", "default", "e1").cloned().expect("still held by the finalizer");
    assert!(live["metadata"]["deletionTimestamp"].is_string());
    let interrupt = Interrupt::default();
    rt.reconcile(&live, client, &Budget::start(rt.cfg.limits, None, &interrupt))
}

const JINJA_MAIN: &str = "{%- import 'iface.jinja2' iface -%}
apiVersion: config.example.org/v1alpha1
kind: Config
metadata:
  name: {{ metadata.name }}
spec:
  value:
    {{ iface(spec) -}}
";

const JINJA_HELPER: &str = "{%- macro iface(spec) export -%}
name: {{ spec.name }}
    description: k8s-{{ spec.name }}.{{ spec.id }}
    enabled: {{ spec.enabled|yesno:\"yes,no\" }}
    mtu: {{ spec.mtu|default:9000 }}
    {%- if spec.vlan is defined %}
    vlan: {{ spec.vlan }}
    {%- endif %}
{%- endmacro %}";

#[test]
fn a_pongo2_template_renders_unchanged() {
    let rt = jinja(&[("main.jinja2", JINJA_MAIN), ("iface.jinja2", JINJA_HELPER)]).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"name": "system", "id": 0, "enabled": true}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    let child = client.object("Config", "default", "e1").expect("child");
    assert_eq!(
        child["spec"]["value"],
        json!({"name": "system", "description": "k8s-system.0", "enabled": "yes", "mtu": 9000})
    );
}

#[test]
fn jinja_names_a_printed_undefined_value_and_its_place() {
    let main = "apiVersion: config.example.org/v1alpha1\nkind: Config\nmetadata:\n  name: x\n  labels:\n    {% if spec.missing %}a: b{% endif %}\n    host: {{ spec.hostnme }}\n";
    let rt = jinja(&[("main.jinja2", main)]).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"hostname": "leaf1"}))]);
    let e = error_of(reconcile(&rt, &mut client));
    assert!(e.starts_with("main.jinja2:7:"), "{e}");
    assert!(e.contains("spec.hostnme: undefined value"), "{e}");
}

#[test]
fn jinja_syntax_errors_name_file_and_line() {
    let e = jinja(&[("main.jinja2", "ok"), ("h.jinja2", "a\n{% if %}")]).unwrap_err();
    assert!(e.starts_with("h.jinja2:2"), "{e}");
    let e = jinja(&[("main.jinja2", "{% import 'nope.jinja2' x %}{{ x() }}")]).map(|rt| {
        let mut client = FakeClient::with(&[interface(json!({}))]);
        error_of(reconcile(&rt, &mut client))
    });
    let e = e.unwrap_or_else(|e| e);
    assert!(e.contains("nope.jinja2"), "{e}");
}

#[test]
fn output_is_not_html_escaped() {
    let main = "apiVersion: config.example.org/v1alpha1\nkind: Config\nmetadata:\n  name: x\n  annotations:\n    a: \"{{ spec.text }}\"\n";
    let rt = jinja(&[("main.jinja2", main)]).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"text": "a<b & 'c'"}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert_eq!(client.object("Config", "default", "x").unwrap()["metadata"]["annotations"]["a"], "a<b & 'c'");
}

#[test]
fn a_render_past_its_limits_stops_naming_the_limit() {
    // Output growth is bounded by the memory limit.
    let main = "{{ range .spec.n }}{{ range $.spec.n }}{{ range $.spec.n }}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{{ end }}{{ end }}{{ end }}";
    let cfg = config("gotemplate", &[("main.tpl", main)], json!({"limits": {"memoryMiB": 1}}));
    let rt = compile(cfg).unwrap();
    let n: Vec<u32> = (0..200).collect();
    let mut client = FakeClient::with(&[interface(json!({"n": n}))]);
    let e = error_of(reconcile(&rt, &mut client));
    assert!(e.contains("limit of 1 MiB"), "{e}");
    // A loop that writes nothing is bounded by steps.
    let cfg = config(
        "jinjatemplate",
        &[(
            "main.jinja2",
            "{% for i in spec.n %}{% for j in spec.n %}{% for k in spec.n %}{% endfor %}{% endfor %}{% endfor %}",
        )],
        json!({"limits": {"steps": 10000}}),
    );
    let rt = compile(cfg).unwrap();
    let e = error_of(reconcile(&rt, &mut client));
    assert!(e.contains("spec.limits.steps"), "{e}");
}

#[test]
fn a_for_object_that_already_carries_the_marks_is_not_applied_again() {
    let cfg =
        config("gotemplate", &[("main.tpl", GO_MAIN), ("iface.tpl", GO_HELPER)], json!({"conditionType": "Ready"}));
    let rt = compile(cfg).unwrap();
    let mut client = FakeClient::with(&[interface(json!({"name": "e", "id": 1}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    let applies = |c: &FakeClient| c.writes().iter().filter(|w| w.starts_with("apply Interface")).count();
    assert_eq!(applies(&client), 1, "the first reconcile marks the for-object");
    // The fake replaces what it is applied with; the server would have merged the spec in.
    let respec = |c: &mut FakeClient| {
        c.objects
            .values_mut()
            .filter(|o| o["kind"] == "Interface")
            .for_each(|o| o["spec"] = json!({"name": "e", "id": 1}));
    };
    respec(&mut client);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert_eq!(applies(&client), 1, "the second finds the marks in place: {:?}", client.writes());
    // A failed condition is not "in place": the next good render sets it ready again.
    client.objects.values_mut().filter(|o| o["kind"] == "Interface").for_each(|o| {
        o["status"]["conditions"][0]["status"] = json!("False");
    });
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert_eq!(applies(&client), 2);
    respec(&mut client);
}
