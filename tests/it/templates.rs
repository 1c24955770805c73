//! Template reconcilers (`gotemplate`, `jinjatemplate`) through the real server: rendering
//! children, errors with their template place, the layouts they load from.

use crate::support::*;

#[test]
fn the_idfabric_fixture_renders_each_node_as_a_config_tree_and_as_cli_text() {
    let p = TestProject::new("idfabric");
    let _s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "-r"]);
    p.cli(&["run", "once"]).ok();
    let srl = p.cli(&["get", "deviceconfigs", "spine1.srl", "-n", "default", "-o", "json"]).ok().json();
    let interfaces = srl["spec"]["config"]["interface"].as_array().expect("interfaces");
    assert_eq!(interfaces.len(), 3, "two links and the loopback: {srl}");
    assert_eq!(interfaces[0]["name"], "ethernet-1/1");
    assert_eq!(interfaces[0]["subinterface"][0]["vlan"]["encap"]["single-tagged"]["vlan-id"], 100);
    assert_eq!(interfaces[1]["subinterface"][0]["ipv4"]["address"][0]["ip-prefix"], "10.1.0.2/31");
    assert_eq!(srl["metadata"]["ownerReferences"][0]["kind"], "NodeConfig");
    let cli = p.cli(&["get", "deviceconfigs", "spine1.cli", "-n", "default", "-o", "json"]).ok().json();
    let text = cli["spec"]["text"].as_str().expect("text");
    assert!(text.starts_with("hostname spine1\n! managed by choreo\n"), "{text}");
    assert!(
        text.contains("interface ethernet-1/2\n  description leaf2-spine1\n  vlan 101 ipv4 address 10.1.0.2/31\n"),
        "{text}"
    );
    assert!(text.contains("router-id 10.0.0."), "{text}");
    // Both reconcilers own DeviceConfigs of the same NodeConfig, and neither takes the other's
    // children for garbage: a second run changes nothing.
    let again = p.cli(&["run", "once", "-o", "json"]).ok().json();
    assert_eq!(again["success"], true, "{again}");
    let configs = p.cli(&["get", "deviceconfigs", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(configs["items"].as_array().map(Vec::len), Some(6), "{configs}");
    let node = p.cli(&["get", "nodeconfigs", "leaf1", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(node["status"]["conditions"][0]["type"], "Rendered");
    assert_eq!(node["status"]["conditions"][0]["status"], "True");
}

const GO_CONFIG: &str = "apiVersion: net.example.org/v1alpha1
kind: DeviceConfig
metadata:
  name: {{ .metadata.name }}
spec:
  hostname: {{ .spec.hostname }}
  asn: {{ .spec.asn }}
  {{- with .spec.interfaces }}
  lines:
  {{- range . }}
  - {{ printf \"interface %s mtu %v\" .name (or .mtu 9000) }}
  {{- end }}
  {{- end }}
";

#[test]
fn a_go_template_renders_children_and_a_missing_value_fails_naming_its_place() {
    let p = TestProject::new("fabric");
    p.remove("reconcilers/device-config/config.star");
    p.write("reconcilers/device-config/main.tpl", GO_CONFIG);
    let _s = p.start();
    // spine1 has no hostname: printing it is an error, where Go would print "<no value>".
    let run = p.cli(&["run", "once"]);
    assert_ne!(run.code, 0, "{run:?}");
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("main.tpl:6:13: .spec.hostname: no such key"), "{out}");
    let leaf = p.cli(&["get", "deviceconfigs", "leaf1", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(
        leaf["spec"]["lines"],
        serde_json::json!(["interface ethernet-1/1 mtu 9000", "interface ethernet-1/2 mtu 1500"])
    );
    assert_eq!(leaf["spec"]["asn"], 65101);
    // Fixing the input fixes the run.
    let devices = std::fs::read_to_string(p.path("in/devices.yaml")).unwrap();
    p.write("in/devices.yaml", &devices.replace("spec:\n  asn: 64601", "spec:\n  hostname: spine1\n  asn: 64601"));
    p.cli(&["run", "once"]).ok();
    let spine = p.cli(&["get", "deviceconfigs", "spine1", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(spine["spec"]["hostname"], "spine1");
}

#[test]
fn a_jinja_template_in_the_flat_layout_renders_with_pongo2_filters() {
    let p = TestProject::new("fabric");
    let config = std::fs::read_to_string(p.path("reconcilers/device-config/config.yaml")).unwrap();
    std::fs::remove_dir_all(p.path("reconcilers/device-config")).unwrap();
    p.write("reconcilers/net.example.org.devices.config.yaml", &config);
    p.write(
        "reconcilers/net.example.org.devices.config.main.jinja2",
        "{%- import 'lines.jinja2' lines -%}
apiVersion: net.example.org/v1alpha1
kind: DeviceConfig
metadata:
  name: {{ metadata.name }}
spec:
  hostname: {{ spec.hostname|default:metadata.name }}
  asn: {{ spec.asn }}
{%- if spec.interfaces is defined %}
  lines:
{{ lines(spec.interfaces) }}
{%- endif %}
",
    );
    p.write(
        "reconcilers/net.example.org.devices.config.lines.jinja2",
        "{%- macro lines(interfaces) export -%}
{%- for i in interfaces %}
  - interface {{ i.name }} mtu {{ i.mtu|default:9000 }}{{ loop.last|yesno:\" (last),\" }}
{%- endfor %}
{%- endmacro %}",
    );
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    let spine = p.cli(&["get", "deviceconfigs", "spine1", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(spine["spec"]["hostname"], "spine1", "{spine}");
    let leaf = p.cli(&["get", "deviceconfigs", "leaf1", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(
        leaf["spec"]["lines"],
        serde_json::json!(["interface ethernet-1/1 mtu 9000", "interface ethernet-1/2 mtu 1500 (last)"])
    );
}

const NODE_CONFIG: &str = "apiVersion: net.example.org/v1alpha1
kind: NodeConfig
metadata:
  name: leaf9
spec:
  loopback: 10.0.0.9/32
  routerId: 10.0.0.9
  asn: 65009
  links:
  - {link: leaf9-spine1, port: 1, vlan: 109, prefix: 10.1.0.18/31}
";

#[test]
fn dev_render_prints_the_children_of_one_object_without_a_server() {
    let p = TestProject::new("idfabric");
    let dir = p.dir.to_str().unwrap();
    let cli = p.cli_stdin(&["dev", "render", dir, "net.example.org.nodeconfigs.cli", "-f", "-"], NODE_CONFIG).ok();
    assert!(cli.stdout.contains("name: leaf9.cli"), "{}", cli.stdout);
    assert!(cli.stdout.contains("    vlan 109 ipv4 address 10.1.0.18/31\n"), "{}", cli.stdout);
    let srl = p
        .cli_stdin(&["dev", "render", dir, "net.example.org.nodeconfigs.srl", "-f", "-", "-o", "json"], NODE_CONFIG)
        .ok();
    let children = srl.json();
    assert_eq!(children[0]["spec"]["config"]["network-instance"][0]["protocols"]["bgp"]["autonomous-system"], 65009);
    assert_eq!(children[0]["metadata"]["ownerReferences"][0]["name"], "leaf9");
    // An error names the object's file place and the template's.
    let broken = p.cli_stdin(
        &["dev", "render", dir, "net.example.org.nodeconfigs.srl", "-f", "-"],
        &NODE_CONFIG.replace("  asn: 65009\n", ""),
    );
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(broken.stderr.contains("main.tpl:23:30: .spec.asn: no such key"), "{}", broken.stderr);
    // A Starlark reconciler renders the same way.
    let node = "apiVersion: net.example.org/v1alpha1\nkind: Node\nmetadata:\n  name: leaf9\nspec:\n  role: leaf\n";
    let ids = p.cli_stdin(&["dev", "render", dir, "net.example.org.nodes.ids", "-f", "-"], node).ok();
    assert!(ids.stdout.contains("kind: IPClaim"), "{}", ids.stdout);
    // Objects that cannot be read, or are not what the reconciler reconciles, are named.
    let bad = p.cli_stdin(&["dev", "render", dir, "net.example.org.nodes.ids", "-f", "-"], "kind: [\n");
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("<stdin>:"), "{}", bad.stderr);
    let other = p.cli_stdin(
        &["dev", "render", dir, "net.example.org.nodes.ids", "-f", "-"],
        &node.replace("net.example.org/v1alpha1", "other.example.org/v1alpha1"),
    );
    assert_eq!(other.code, 1, "{other:?}");
    assert!(
        other.stderr.contains("<stdin>:1:1: a Node of group \"other.example.org\" is not what"),
        "{}",
        other.stderr
    );
    let unknown = p.cli_stdin(&["dev", "render", dir, "nope", "-f", "-"], node);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("no reconciler named \"nope\""), "{}", unknown.stderr);
}

#[test]
fn an_error_about_the_for_object_names_it_once() {
    let p = TestProject::new("fabric");
    // Things have no status in their schema, so the reconciler's condition cannot be stored.
    p.write("crds/things.yaml", &crd("example.org", "v1", "Thing", "size", "integer"));
    p.write(
        "in/thing.yaml",
        "apiVersion: example.org/v1\nkind: Thing\nmetadata:\n  name: t1\n  namespace: default\nspec:\n  size: 3\n",
    );
    p.write(
        "reconcilers/things/config.yaml",
        "apiVersion: choreo.kform.dev/v1alpha1\nkind: Reconciler\nmetadata:\n  name: things\nspec:\n  conditionType: Ready\n  for: {group: example.org, version: v1, kind: Thing, selector: {}}\n  owns:\n  - {group: example.org, version: v1, kind: Thing}\n",
    );
    p.write("reconcilers/things/main.tpl", "");
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_ne!(run.code, 0, "{run:?}");
    let out = format!("{}{}", run.stdout, run.stderr);
    let key = "Thing.example.org default/t1: ";
    assert!(out.contains(&format!("{key}.status")), "{out}");
    assert!(!out.contains(&format!("{key}{key}")), "{out}");
}

#[test]
fn a_go_template_that_builds_a_huge_value_fails_its_reconcile_and_the_server_lives_on() {
    let p = TestProject::new("fabric");
    p.remove("reconcilers/device-config/config.star");
    // Six nested ranges over two interfaces double a string 64 times: far past any memory
    // limit. Only the worker process can stop that; the server must not die with it.
    let nested = (0..6).fold(String::from("{{ $x = printf \"%s%s\" $x $x }}"), |inner, _| {
        format!("{{{{ range $.spec.interfaces }}}}{inner}{{{{ end }}}}")
    });
    p.write(
        "reconcilers/device-config/main.tpl",
        &format!("{{{{ $x := \"0123456789abcdef0123456789abcdef\" }}}}{nested}kind: x\n"),
    );
    let s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "--worker-memory-mib", "256"]);
    let run = p.cli(&["run", "once"]);
    assert_ne!(run.code, 0, "{run:?}");
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("the reconcile worker died") && out.contains("--worker-memory-mib"), "{out}");
    // The server answers, and the next run works once the template is fixed.
    p.write("reconcilers/device-config/main.tpl", GO_CONFIG);
    let devices = std::fs::read_to_string(p.path("in/devices.yaml")).unwrap();
    p.write("in/devices.yaml", &devices.replace("spec:\n  asn: 64601", "spec:\n  hostname: spine1\n  asn: 64601"));
    p.cli(&["run", "once"]).ok();
    assert!(s.log().len() < 1_000_000);
}
