//! Tests of the Starlark runtime against an in-memory client that records every write.
//!
//! The scripts follow the shapes of upstream's examples (a spec-setting reconciler, one that
//! creates a child through library helpers, a library that loads another) but are written
//! for these tests.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::{Libraries, StarlarkRuntime};
use crate::api::object;
use crate::reconcile::fake_client::{FakeClient, NOW};
use crate::reconcile::{Client, ClientError, Outcome, ReconcilerConfig, Runtime};

fn config(script: &str, extra: Json) -> Arc<ReconcilerConfig> {
    let mut spec = json!({
        "for": {"group": "example.com", "version": "v1alpha1", "kind": "HelloWorld", "selector": {}},
        "owns": [{"group": "example.com", "version": "v1alpha1", "kind": "Note"}],
        "type": "starlark",
        "code": {"reconciler.star": script},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let obj = json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Reconciler",
                     "metadata": {"name": "hello.reconciler"}, "spec": spec});
    Arc::new(ReconcilerConfig::from_object(&obj).expect("test config is valid"))
}

fn libraries(libs: &[(&str, &str)]) -> Arc<Libraries> {
    Arc::new(Libraries::new(libs.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect()))
}

fn compile(script: &str, extra: Json, libs: &[(&str, &str)]) -> Result<StarlarkRuntime, String> {
    StarlarkRuntime::compile(config(script, extra), libraries(libs))
}

fn runtime(script: &str, extra: Json, libs: &[(&str, &str)]) -> StarlarkRuntime {
    compile(script, extra, libs).unwrap_or_else(|e| panic!("compile failed: {e}"))
}

fn hello(spec: Json) -> Json {
    json!({"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld",
           "metadata": {"name": "test", "namespace": "default", "uid": "u-hello"}, "spec": spec})
}

/// Runs one reconcile of the stored HelloWorld `default/test`.
fn reconcile(rt: &StarlarkRuntime, client: &mut FakeClient) -> Outcome {
    let live = client.object("HelloWorld", "default", "test").cloned().expect("the HelloWorld exists");
    let interrupt = crate::reconcile::Interrupt::default();
    rt.reconcile(&live, client, &crate::reconcile::Budget::start(rt.cfg.limits, None, &interrupt))
}

/// A 6-argument-less script body run under `limits` (and `run_deadline`).
fn run_limited(body: &str, limits: Json) -> Outcome {
    let script = format!("def reconcile(self):\n{body}\n  return reconcile_result(self, False, 0, \"\", False)\n");
    let rt = runtime(&script, json!({"limits": limits}), &[]);
    let mut client = FakeClient::with(&[hello(json!({}))]);
    reconcile(&rt, &mut client)
}

fn error_of(o: Outcome) -> String {
    match o {
        Outcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_reconcile_stuck_inside_builtins_stops_at_its_timeout() {
    // Each iteration is one step but a long scan: the step limit is far away, the clock is not.
    let started = std::time::Instant::now();
    let e = error_of(run_limited(
        "  big = list(range(200000))\n  n = 0\n  for i in range(100000000):\n    if -1 in big:\n      n += 1",
        json!({"timeoutSeconds": 1}),
    ));
    assert!(e.contains("longer than its limit of 1s") && e.contains("spec.limits.timeoutSeconds"), "{e}");
    assert!(e.starts_with("reconciler.star:"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn the_step_and_heap_limits_fail_the_reconcile_naming_the_limit() {
    let e = error_of(run_limited("  for i in range(100000000):\n    pass", json!({"steps": 10000})));
    assert!(e.contains("limit of 10000 steps") && e.contains("spec.limits.steps"), "{e}");
    let e = error_of(run_limited(
        "  keep = []\n  for i in range(10000000):\n    keep.append(\"x%d\" % i)",
        json!({"memoryMiB": 16}),
    ));
    assert!(e.contains("limit of 16 MiB") && e.contains("spec.limits.memoryMiB"), "{e}");
}

#[test]
fn a_cancelled_reconcile_stops_in_the_middle() {
    let script = "def reconcile(self):\n  for i in range(100000000):\n    pass\n  return reconcile_result(self, False, 0, \"\", False)\n";
    let rt = runtime(script, json!({}), &[]);
    let mut client = FakeClient::with(&[hello(json!({}))]);
    let live = client.object("HelloWorld", "default", "test").cloned().unwrap();
    let interrupt = crate::reconcile::Interrupt::default();
    interrupt.shutdown();
    let e =
        error_of(rt.reconcile(&live, &mut client, &crate::reconcile::Budget::start(rt.cfg.limits, None, &interrupt)));
    assert!(e.contains("cancelled"), "{e}");
}

/// A 5-argument script whose `reconcile` stores `expr` (a Starlark expression over `self`) in
/// `status.out`; returns what was applied there.
fn eval_in_status(expr: &str) -> Result<Json, Outcome> {
    let script = format!(
        "def reconcile(self):\n  self[\"status\"] = {{\"out\": {expr}}}\n  return reconcile_result(self, False, 0, \"\", False)\n"
    );
    let rt = runtime(&script, json!({}), &[]);
    let mut client = FakeClient::with(&[hello(json!({"n": 3}))]);
    match reconcile(&rt, &mut client) {
        Outcome::Done => {
            Ok(client.object("HelloWorld", "default", "test").expect("still there")["status"]["out"].clone())
        }
        other => Err(other),
    }
}

const OBJECT_LIB: &str = r#"
def meta(obj):
  return obj.get("metadata", {})

def name_of(obj):
  return meta(obj).get("name", "")

def namespace_of(obj):
  return meta(obj).get("namespace", "default")

def deleting(obj):
  return meta(obj).get("deletionTimestamp", None) != None

def put_finalizer(obj, f):
  m = meta(obj)
  fins = m.get("finalizers", [])
  if f not in fins:
    fins.append(f)
  m["finalizers"] = fins
  obj["metadata"] = m

def drop_finalizer(obj, f):
  m = meta(obj)
  m["finalizers"] = [x for x in m.get("finalizers", []) if x != f]
"#;

const NOTE_LIB: &str = r#"
load("object.lib.star", "name_of", "namespace_of")

def note_for(obj, default_text):
  return {
    "apiVersion": "example.com/v1alpha1",
    "kind": "Note",
    "metadata": {"name": name_of(obj), "namespace": namespace_of(obj)},
    "spec": {"text": obj.get("spec", {}).get("greeting", default_text)},
  }
"#;

const CHILD_SCRIPT: &str = r#"
load("object.lib.star", "deleting", "put_finalizer", "drop_finalizer")
load("note.lib.star", "note_for")

fin = "notes.example.com/owned"
cond = "Ready"

def reconcile(self):
  if deleting(self):
    rsp = client_delete()
    if rsp["error"] != None:
      return reconcile_result(self, True, 0, cond, rsp["error"], rsp["fatal"])
    drop_finalizer(self, fin)
    return reconcile_result(self, False, 0, cond, "", False)

  put_finalizer(self, fin)
  rsp = client_create(note_for(self, "a default note"))
  if rsp["error"] != None:
    return reconcile_result(self, True, 0, cond, rsp["error"], rsp["fatal"])
  rsp = client_apply()
  if rsp["error"] != None:
    return reconcile_result(self, True, 0, cond, rsp["error"], rsp["fatal"])
  return reconcile_result(self, False, 0, cond, "", False)
"#;

fn child_libs() -> Vec<(&'static str, &'static str)> {
    vec![("object.lib.star", OBJECT_LIB), ("note.lib.star", NOTE_LIB)]
}

#[test]
fn runtimes_and_libraries_can_move_to_the_engine_thread() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<StarlarkRuntime>();
    send::<Libraries>();
    sync::<Libraries>();
}

#[test]
fn six_argument_result_applies_the_object_with_its_condition() {
    let script = r#"
marker = "unused.example.com/x"
cond = "Ready"

def reconcile(self):
  spec = self.get("spec", {})
  spec["greeting"] = "hello from a test"
  self["spec"] = spec
  return reconcile_result(self, False, 0, cond, "", False)
"#;
    let rt = runtime(script, json!({}), &[]);
    let mut client = FakeClient::with(&[hello(json!({}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert_eq!(client.writes(), ["apply HelloWorld.example.com default/test as hello.reconciler"]);
    let stored = client.object("HelloWorld", "default", "test").expect("stored");
    assert_eq!(stored["spec"]["greeting"], "hello from a test");
    assert_eq!(
        stored["status"]["conditions"],
        json!([{"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": NOW}])
    );
    assert!(object::finalizers(stored).is_empty());
    // The runtime is reusable: a second reconcile sees the first one's result and converges.
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
}

#[test]
fn six_argument_children_need_client_apply_and_get_a_controller_reference() {
    let rt = runtime(CHILD_SCRIPT, json!({}), &child_libs());
    let mut client = FakeClient::with(&[hello(json!({"greeting": "hi note"}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    let note = client.object("Note", "default", "test").expect("child applied");
    assert_eq!(note["spec"]["text"], "hi note");
    assert_eq!(
        note["metadata"]["ownerReferences"],
        json!([{"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld", "name": "test", "uid": "u-hello", "controller": true}])
    );
    let parent = client.object("HelloWorld", "default", "test").expect("parent");
    assert_eq!(object::finalizers(parent), ["notes.example.com/owned"]);
    assert_eq!(object::condition_status(parent, "Ready"), Some("True"));

    // Without client_apply() a created child is never written in this contract.
    let lazy = CHILD_SCRIPT.replace("rsp = client_apply()", "rsp = {\"error\": None}");
    let rt = runtime(&lazy, json!({}), &child_libs());
    let mut client = FakeClient::with(&[hello(json!({}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert!(client.object("Note", "default", "test").is_none());
}

#[test]
fn six_argument_deletion_is_the_scripts_business() {
    let rt = runtime(CHILD_SCRIPT, json!({}), &child_libs());
    let mut client = FakeClient::with(&[hello(json!({}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert!(client.object("Note", "default", "test").is_some());
    client.delete("example.com/v1alpha1", "HelloWorld", "default", "test").expect("fake delete");
    assert!(client.object("HelloWorld", "default", "test").is_some(), "the finalizer holds it");
    client.calls.clear();
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert!(client.object("Note", "default", "test").is_none(), "client_delete() removed the child");
    assert!(client.object("HelloWorld", "default", "test").is_none(), "its last finalizer went");
    assert_eq!(
        client.writes(),
        ["delete Note default/test", "apply HelloWorld.example.com default/test as hello.reconciler"]
    );
}

#[test]
fn libraries_load_libraries_and_are_compiled_once() {
    let libs = libraries(&[
        ("a.star", "load(\"b.star\", \"b\")\ndef a():\n  return b() + 1\n"),
        ("b.star", "def b():\n  return 41\n"),
    ]);
    let script = "load(\"a.star\", \"a\")\ndef reconcile(self):\n  self[\"status\"] = {\"v\": a()}\n  return reconcile_result(self, False, 0, \"\", False)\n";
    let first = StarlarkRuntime::compile(config(script, json!({})), libs.clone()).expect("compiles");
    // A second reconciler of the same load reuses the frozen libraries.
    let second = StarlarkRuntime::compile(config(script, json!({})), libs.clone()).expect("compiles");
    assert_eq!(libs.compiled(), 2);
    for rt in [&first, &second] {
        let mut client = FakeClient::with(&[hello(json!({}))]);
        let interrupt = crate::reconcile::Interrupt::default();
        let budget = crate::reconcile::Budget::unbounded(&interrupt);
        assert_eq!(rt.reconcile(&hello(json!({})), &mut client, &budget), Outcome::Done);
        assert_eq!(client.object("HelloWorld", "default", "test").expect("applied")["status"]["v"], 42);
    }
}

#[test]
fn load_errors_name_the_module() {
    let cyclic =
        [("a.star", "load(\"b.star\", \"b\")\nx = 1\n"), ("b.star", "load(\"a.star\", \"x\")\ndef b():\n  return x\n")];
    let e = compile("load(\"a.star\", \"x\")\ndef reconcile(self):\n  pass\n", json!({}), &cyclic).unwrap_err();
    assert!(e.contains("cycle in load graph: a.star -> b.star -> a.star"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let e = compile("load(\"nope.star\", \"x\")\ndef reconcile(self):\n  pass\n", json!({}), &[]).unwrap_err();
    assert_eq!(e, "reconciler.star:1:1: module nope.star not found in library");

    let broken = [("bad.star", "def f():\n  return 1 +\n")];
    let e = compile("load(\"bad.star\", \"f\")\ndef reconcile(self):\n  pass\n", json!({}), &broken).unwrap_err();
    assert!(e.starts_with("bad.star:2:"), "{e}");
}

#[test]
fn compile_errors_carry_line_and_column() {
    let e = compile("def reconcile(self)\n  return 1\n", json!({}), &[]).unwrap_err();
    assert!(e.starts_with("reconciler.star:1:"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let e = compile("def reconcile(self):\n  return undefined_thing\n", json!({}), &[]).unwrap_err();
    assert!(e.starts_with("reconciler.star:2:10: "), "{e}");
    assert!(e.contains("undefined_thing"), "{e}");

    let e = compile("def other(self):\n  pass\n", json!({}), &[]).unwrap_err();
    assert_eq!(e, "reconciler.star: no function reconcile(self) defined");

    // Store builtins need a reconcile; calling one while a module loads is an error.
    let e = compile("x = client_apply()\ndef reconcile(self):\n  pass\n", json!({}), &[]).unwrap_err();
    assert!(e.starts_with("reconciler.star:1:5: client_apply() can only be called while reconciling"), "{e}");
}

#[test]
fn runtime_errors_point_at_the_failing_line() {
    let rt =
        runtime("def reconcile(self):\n  spec = self[\"spec\"]\n  x = spec[\"missing\"]\n  return x\n", json!({}), &[]);
    let mut client = FakeClient::with(&[hello(json!({}))]);
    let Outcome::Error(e) = reconcile(&rt, &mut client) else { panic!("expected an error") };
    assert!(e.starts_with("reconciler.star:3:7: "), "{e}");
    assert!(e.contains("missing"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    // A builtin's error is reported at the call.
    let rt = runtime("def reconcile(self):\n  return is_ipv4(\"not an address\")\n", json!({}), &[]);
    let Outcome::Error(e) = reconcile(&rt, &mut client) else { panic!("expected an error") };
    assert!(e.starts_with("reconciler.star:2:10: invalid prefix \"not an address\""), "{e}");

    // An error inside a library names the library and the reconciler line that called it.
    // (Two statements, so that the optimiser does not inline the call.)
    let libs = [("lib.star", "def boom(x):\n  y = x.get(\"spec\")\n  return y[\"nope\"]\n")];
    let rt = runtime("load(\"lib.star\", \"boom\")\ndef reconcile(self):\n  return boom(self)\n", json!({}), &libs);
    let Outcome::Error(e) = reconcile(&rt, &mut client) else { panic!("expected an error") };
    assert!(e.starts_with("lib.star:3:10: "), "{e}");
    assert!(e.ends_with("(called from reconciler.star:3:10)"), "{e}");

    let rt = runtime("def reconcile(self):\n  return 1\n", json!({}), &[]);
    assert_eq!(
        reconcile(&rt, &mut client),
        Outcome::Error("reconcile must return reconcile_result(...), got int".into())
    );

    // An endless loop is stopped rather than hanging the engine.
    let rt = runtime("def reconcile(self):\n  for i in range(1000000000):\n    pass\n", json!({}), &[]);
    let Outcome::Error(e) = reconcile(&rt, &mut client) else { panic!("expected an error") };
    assert!(e.contains("limit of 10000000 steps"), "{e}");
}

const HEAD_SCRIPT: &str = r#"
def reconcile(self):
  self["spec"]["ignored"] = "not applied without specUpdate"
  self["status"] = {"phase": "done"}
  rsp = client_create({"apiVersion": "example.com/v1alpha1", "kind": "Note",
                       "metadata": {"name": "made-by-head"}, "spec": {"text": "t"}})
  if rsp["error"] != None:
    return reconcile_result(self, True, 0, rsp["error"], rsp["fatal"])
  return reconcile_result(self, False, 0, "", False)
"#;

#[test]
fn five_argument_result_lets_choreo_apply_status_finalizer_condition_and_children() {
    let rt = runtime(HEAD_SCRIPT, json!({"conditionType": "Ready"}), &[]);
    let mut client = FakeClient::with(&[hello(json!({"greeting": "g"}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert_eq!(
        client.writes(),
        [
            "apply Note.example.com default/made-by-head as hello.reconciler",
            "apply HelloWorld.example.com default/test as hello.reconciler"
        ]
    );
    let note = client.object("Note", "default", "made-by-head").expect("child applied automatically");
    assert_eq!(note["metadata"]["ownerReferences"][0]["uid"], "u-hello");
    let parent = client.object("HelloWorld", "default", "test").expect("parent");
    assert_eq!(parent["status"]["phase"], "done");
    assert_eq!(object::condition_status(parent, "Ready"), Some("True"));
    assert_eq!(object::finalizers(parent), ["hello.reconciler"]);
    assert_eq!(parent["spec"], json!({"greeting": "g"}), "spec is the script's only with specUpdate");

    let rt = runtime(HEAD_SCRIPT, json!({"conditionType": "Ready", "specUpdate": true}), &[]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    let parent = client.object("HelloWorld", "default", "test").expect("parent");
    assert_eq!(parent["spec"]["ignored"], "not applied without specUpdate");
}

#[test]
fn five_argument_errors_set_the_condition_and_requeue_or_fail() {
    let script =
        "def reconcile(self):\n  return reconcile_result(self, False, 0, \"no capacity\", self[\"spec\"][\"fatal\"])\n";
    let rt = runtime(script, json!({"conditionType": "Ready"}), &[]);
    let mut client = FakeClient::with(&[hello(json!({"fatal": false}))]);
    assert_eq!(
        reconcile(&rt, &mut client),
        Outcome::Requeue { after: None, message: "reconcile failed no capacity".into() }
    );
    let parent = client.object("HelloWorld", "default", "test").expect("parent");
    assert_eq!(parent["status"]["conditions"][0]["status"], "False");
    assert_eq!(parent["status"]["conditions"][0]["reason"], "Failed");
    assert_eq!(parent["status"]["conditions"][0]["message"], "reconcile failed no capacity");

    let mut client = FakeClient::with(&[hello(json!({"fatal": true}))]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Error("reconcile failed no capacity".into()));
}

#[test]
fn five_argument_deletion_is_choreos_business() {
    // The script would fail if it ran: without specUpdate it must not.
    let script =
        "def reconcile(self):\n  fail(\"ran on delete\")\n  return reconcile_result(self, False, 0, \"\", False)\n";
    let rt = runtime(script, json!({"conditionType": "Ready"}), &[]);
    let mut deleting = hello(json!({}));
    deleting["metadata"]["deletionTimestamp"] = json!(NOW);
    deleting["metadata"]["finalizers"] = json!(["hello.reconciler"]);
    let child = json!({"apiVersion": "example.com/v1alpha1", "kind": "Note", "metadata": {"name": "c", "namespace": "default",
        "ownerReferences": [{"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld", "name": "test", "uid": "u-hello", "controller": true}]}});
    let mut client = FakeClient::with(&[deleting.clone(), child.clone()]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert_eq!(
        client.writes(),
        ["delete Note default/c", "apply HelloWorld.example.com default/test as hello.reconciler"]
    );
    assert!(client.objects.is_empty(), "child deleted, finalizer dropped, object gone");

    // With specUpdate the script runs first (here it looks something up), then the same.
    let script = "def reconcile(self):\n  client_get(\"x\", \"default\", get_resource(\"example.com/v1alpha1\", \"Note\"))\n  return reconcile_result(self, False, 0, \"\", False)\n";
    let rt = runtime(script, json!({"specUpdate": true}), &[]);
    let mut client = FakeClient::with(&[deleting, child]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    assert_eq!(client.calls.first().map(String::as_str), Some("get Note default/x"));
    assert!(client.objects.is_empty());
}

#[test]
fn client_get_and_list_read_the_store() {
    let item = |name: &str, color: &str| json!({"apiVersion": "example.com/v1alpha1", "kind": "Note", "metadata": {"name": name, "namespace": "default"}, "spec": {"color": color}});
    let script = r#"
def reconcile(self):
  note = get_resource("example.com/v1alpha1", "Note")["resource"]
  reds = client_list(note, {"spec.color": "red"})
  missing = client_get("nope", "default", note)
  found = client_get("b", "default", note)
  self["status"] = {
    "kind": reds["resource"]["kind"],
    "reds": [i["metadata"]["name"] for i in reds["resource"]["items"]],
    "all": len(client_list(note, None)["resource"]["items"]),
    "missing": [missing["resource"], missing["error"], missing["fatal"]],
    "found": found["resource"]["spec"]["color"],
  }
  return reconcile_result(self, False, 0, "", False)
"#;
    let rt = runtime(script, json!({}), &[]);
    let mut client = FakeClient::with(&[hello(json!({})), item("a", "red"), item("b", "blue"), item("c", "red")]);
    assert_eq!(reconcile(&rt, &mut client), Outcome::Done);
    let status = &client.object("HelloWorld", "default", "test").expect("parent")["status"];
    assert_eq!(status["kind"], "NoteList");
    assert_eq!(status["reds"], json!(["a", "c"]));
    assert_eq!(status["all"], 3);
    assert_eq!(status["missing"], json!([null, "Note.example.com default/nope not found", false]));
    assert_eq!(status["found"], "blue");
}

#[test]
fn ip_builtins_answer_under_both_spellings() {
    let out = eval_in_status(
        "[is_ipv4(\"10.0.0.1/24\"), isIPv4(\"10.0.0.1\"), is_ipv6(\"1000::1/32\"), isIPv6(\"10.0.0.1/24\"), \
          get_address(\"10.0.0.1/24\"), get_prefixlength(\"10.0.0.1/24\"), get_prefixlength(\"2001:db8::1\"), \
          get_subnetname(\"10.0.0.7/24\"), get_subnetname(\"1000::1/32\")]",
    )
    .expect("evaluates");
    assert_eq!(out, json!([true, true, true, false, "10.0.0.1", 24, 128, "10.0.0.0-24", "1000---32"]));
    let Err(Outcome::Error(e)) = eval_in_status("isIPv6(\"10.0.0.1/40\")") else { panic!("expected an error") };
    assert!(e.contains("prefix length out of range"), "{e}");
}

#[test]
fn numbers_keep_their_type() {
    let out =
        eval_in_status("[str(self[\"spec\"][\"n\"]), self[\"spec\"][\"n\"] + 1, self[\"spec\"][\"n\"] / 2, None]")
            .expect("evaluates");
    assert_eq!(out, json!(["3", 4, 1.5, null]));
}

#[test]
fn finalizer_and_condition_helpers() {
    let out = eval_in_status(
        "[add_finalizer(self, \"f\")[\"resource\"][\"metadata\"][\"finalizers\"], \
          del_finalizer(add_finalizer(self, \"f\")[\"resource\"], \"f\")[\"resource\"][\"metadata\"][\"finalizers\"], \
          \"finalizers\" in self[\"metadata\"], \
          is_conditionready({\"status\": {\"conditions\": [{\"type\": \"Ready\", \"status\": \"True\"}]}}, \"Ready\"), \
          is_conditionready(self, \"Ready\")]",
    )
    .expect("evaluates");
    assert_eq!(out, json!([["f"], [], false, true, false]));
}

#[test]
fn result_arguments_map_to_outcomes() {
    let cases: [(&str, Outcome); 8] = [
        (
            "self, False, 7, \"\", \"\", False",
            Outcome::Requeue { after: Some(Duration::from_secs(7)), message: String::new() },
        ),
        ("self, True, 0, \"\", \"\", False", Outcome::Requeue { after: None, message: String::new() }),
        (
            "self, False, 0, \"\", \"boom\", False",
            Outcome::Requeue { after: None, message: "reconcile failed boom".into() },
        ),
        ("self, False, 0, \"\", \"boom\", True", Outcome::Error("reconcile failed boom".into())),
        (
            "self, requeue=True, requeueAfter=5",
            Outcome::Requeue { after: Some(Duration::from_secs(5)), message: String::new() },
        ),
        ("obj=self, conditionType=\"\", msg=\"\"", Outcome::Done),
        (
            "self, False, 0, \"\", False, wrong=1",
            Outcome::Error("error: reconcile_result: unexpected keyword argument \"wrong\", msg: ".into()),
        ),
        (
            "self, \"no\", 0, \"\", False",
            Outcome::Error("error: reconcile_result: for parameter requeue: got string, want bool, msg: ".into()),
        ),
    ];
    for (args, want) in cases {
        let rt = runtime(&format!("def reconcile(self):\n  return reconcile_result({args})\n"), json!({}), &[]);
        let mut client = FakeClient::with(&[hello(json!({}))]);
        assert_eq!(reconcile(&rt, &mut client), want, "reconcile_result({args})");
    }
}

#[test]
fn six_argument_apply_errors_surface_verbatim() {
    let rt = runtime("def reconcile(self):\n  self[\"spec\"] = {\"greetings\": \"x\"}\n  return reconcile_result(self, False, 0, \"Ready\", \"\", False)\n", json!({}), &[]);
    let message = ".spec.greetings: field not declared in schema";
    let mut client = FakeClient::with(&[hello(json!({}))]);
    client.fail_apply = Some(ClientError::fatal(message));
    assert_eq!(reconcile(&rt, &mut client), Outcome::Error(message.into()));
    // The object vanished meanwhile: try again later instead of failing.
    client.fail_apply = Some(ClientError::fatal("HelloWorld default/test not found"));
    assert_eq!(
        reconcile(&rt, &mut client),
        Outcome::Requeue { after: None, message: "HelloWorld default/test not found".into() }
    );
}

#[test]
fn the_deepest_value_a_script_can_build_does_not_overflow_the_reconcile_stack() {
    // Starlark's str(), repr(), % formatting and hashing recurse natively over nested values;
    // the memory limit bounds the nesting, and Limits::STACK is sized for the worst case. Build
    // values as deep as the largest memory limit allows (one-element tuples are the cheapest
    // level) on a thread with the engine's stack, and format and hash them.
    let worker = std::thread::Builder::new()
        .stack_size(crate::reconcile::Limits::STACK)
        .spawn(|| {
            let max = crate::reconcile::Limits::MAX_MEMORY_MIB;
            // Heap bytes a level costs (measured); build to 70% of the limit, so the value is
            // complete and its text still fits when it is formatted.
            let cases = [
                ("(x,)", 32, "str(x)"),
                ("(x,)", 32, "len({x: 1})"),
                ("[x]", 64, "\"%s\" % [x]"),
                ("{\"a\": x}", 72, "repr(x)"),
            ];
            for (level, cost, op) in cases {
                let levels = (max << 20) / cost * 7 / 10;
                let body = format!("  x = 0\n  for i in range({levels}):\n    x = {level}\n  s = {op}");
                assert_eq!(
                    run_limited(&body, json!({"memoryMiB": max, "timeoutSeconds": 3600})),
                    Outcome::Done,
                    "{level} {op}"
                );
            }
        })
        .unwrap();
    worker.join().expect("no stack overflow");
}
