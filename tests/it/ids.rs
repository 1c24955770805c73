//! `-r`: the identifier backends served by the real server: their APIs exist only with the
//! flag, claims get their addresses through `choreo apply`, a claim that cannot be satisfied is
//! refused with nothing written, and allocations stay put across a restart.

use crate::support::*;

fn claim(name: &str, family: &str) -> String {
    format!(
        "apiVersion: ipam.be.kuid.dev/v1alpha1\nkind: IPClaim\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  index: lab\n  selector:\n    matchLabels:\n      ipam.be.kuid.dev/address-family: {family}\n"
    )
}

fn address(p: &TestProject, name: &str) -> String {
    let c = p.cli(&["get", "ipclaims", name, "-n", "default", "-o", "json"]).ok().json();
    c["status"]["address"].as_str().unwrap_or_default().to_string()
}

#[test]
fn without_r_the_backend_apis_do_not_exist() {
    let p = TestProject::new("lab");
    let _s = Server::start(&p.socket, &[p.dir.to_str().unwrap()]);
    let status = p.cli(&["server", "get", "-o", "json"]).ok().json();
    assert_eq!(status["status"], "Failed", "{status}");
    assert!(status["reason"].as_str().unwrap_or_default().contains("IPIndex"), "{status}");
    let resources = p.cli(&["api-resources"]).ok();
    assert!(!resources.stdout.contains("ipclaims"), "{}", resources.stdout);
}

#[test]
fn claims_are_allocated_on_apply_refused_when_full_and_kept_across_a_restart() {
    let p = TestProject::new("lab");
    let args = [p.dir.to_str().unwrap(), "-r"];
    let mut s = Server::start(&p.socket, &args);
    let resources = p.cli(&["api-resources"]).ok().stdout;
    for plural in ["ipindices", "ipclaims", "ipentries", "vlanclaims", "asindexes", "genidentries", "extcommindices"] {
        assert!(resources.contains(plural), "{plural} in {resources}");
    }
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        p.cli_stdin(&["apply", "-f", "-"], &claim(name, "ipv4")).ok();
        assert_eq!(address(&p, name), format!("10.0.0.{i}/32"));
    }
    // The /30 is full: the fifth claim is refused, naming itself, the index and why, and
    // nothing of it is written.
    let before = p.in_files();
    let full = p.cli_stdin(&["apply", "-f", "-"], &claim("e", "ipv4"));
    assert_eq!(full.code, 1, "{full:?}");
    assert!(full.stderr.contains("IPClaim.ipam.be.kuid.dev default/e"), "{}", full.stderr);
    assert!(full.stderr.contains("no free address left in 10.0.0.0/30 of index default.lab"), "{}", full.stderr);
    assert_eq!(p.in_files(), before);
    // IPv6 by its family label.
    p.cli_stdin(&["apply", "-f", "-"], &claim("v6", "ipv6")).ok();
    assert_eq!(address(&p, "v6"), "2001:db8::/128");
    // Delete frees at once; a restart keeps every allocation where it was.
    p.cli(&["delete", "ipclaims", "b", "-n", "default"]).ok();
    drop(s.cli(&["server", "stop"]));
    s.wait();
    let _s = Server::start(&p.socket, &args);
    for (name, want) in [("a", "10.0.0.0/32"), ("c", "10.0.0.2/32"), ("d", "10.0.0.3/32"), ("v6", "2001:db8::/128")] {
        assert_eq!(address(&p, name), want, "{name} after the restart");
    }
    p.cli_stdin(&["apply", "-f", "-"], &claim("e", "ipv4")).ok();
    assert_eq!(address(&p, "e"), "10.0.0.1/32");
    let entries = p.cli(&["get", "ipentries", "-n", "default", "-o", "name"]).ok().stdout;
    assert!(entries.contains("default.lab.10.0.0.1-32"), "{entries}");
}

#[test]
fn ids_usage_and_free_show_the_pools() {
    let p = TestProject::new("lab");
    let _s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "-r"]);
    p.cli_stdin(&["apply", "-f", "-"], &claim("a", "ipv4")).ok();
    let table = p.cli(&["ids", "usage"]).ok().stdout;
    assert!(table.lines().next().unwrap_or_default().starts_with("NAMESPACE"), "{table}");
    assert!(table.contains("10.0.0.0/30") && table.contains("2001:db8::/64"), "{table}");
    let json = p.cli(&["ids", "usage", "lab", "-o", "json"]).ok().json();
    let v4 = json.as_array().unwrap().iter().find(|u| u["pool"] == "10.0.0.0/30").unwrap().clone();
    assert_eq!(
        (v4["size"].as_str(), v4["used"].as_str(), v4["largest_free"].as_str()),
        (Some("4"), Some("1"), Some("10.0.0.2/31"))
    );
    let next = p.cli(&["ids", "free", "lab", "--count", "3"]).ok().stdout;
    assert_eq!(next, "10.0.0.1/32\n10.0.0.2/32\n10.0.0.3/32\n");
    let v6 =
        p.cli(&["ids", "free", "lab", "--prefix-length", "127", "-l", "ipam.be.kuid.dev/address-family=ipv6"]).ok();
    assert_eq!(v6.stdout, "2001:db8::/127\n");
    let missing = p.cli(&["ids", "free", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no index nope in namespace default"), "{}", missing.stderr);
}

#[test]
fn ids_commands_need_r() {
    let p = TestProject::new("greeter");
    let _s = p.start();
    let r = p.cli(&["ids", "usage"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no identifier backends") && r.stderr.contains("-r"), "{}", r.stderr);
}

#[test]
fn sixteen_clients_claiming_at_once_get_distinct_addresses() {
    let p = TestProject::new("lab");
    p.write(
        "in/ipam.be.kuid.dev.ipindices.lab.yaml",
        "apiVersion: ipam.be.kuid.dev/v1alpha1\nkind: IPIndex\nmetadata:\n  name: lab\n  namespace: default\nspec:\n  prefixes:\n  - prefix: 10.1.0.0/24\n",
    );
    let _s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "-r"]);
    let files: Vec<std::path::PathBuf> = (0..16)
        .map(|i| {
            let f = p.tmp.path().join(format!("c{i}.yaml"));
            std::fs::write(&f, claim(&format!("c{i}"), "ipv4")).unwrap();
            f
        })
        .collect();
    // All sixteen processes start before any is waited for.
    let children: Vec<std::process::Child> = files
        .iter()
        .map(|f| {
            std::process::Command::new(BIN)
                .arg("--socket")
                .arg(&p.socket)
                .args(["apply", "-f"])
                .arg(f)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut got: Vec<String> = (0..16).map(|i| address(&p, &format!("c{i}"))).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 16, "{got:?}");
    assert!(got.iter().all(|a| a.starts_with("10.1.0.") && a.ends_with("/32")), "{got:?}");
}

#[test]
fn the_idfabric_fixture_claims_loopbacks_p2p_links_vlans_and_as_numbers() {
    let p = TestProject::new("idfabric");
    let _s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "-r"]);
    p.cli(&["run", "once"]).ok();
    let spine = p.cli(&["get", "nodeconfigs", "spine1", "-n", "default", "-o", "json"]).ok().json();
    let links = spine["spec"]["links"].as_array().unwrap();
    assert_eq!(links.len(), 2, "{spine}");
    assert_eq!(links[0]["prefix"], "10.1.0.0/31");
    assert_eq!(links[1]["prefix"], "10.1.0.2/31");
    assert_eq!((links[0]["vlan"].as_u64(), links[1]["vlan"].as_u64()), (Some(100), Some(101)));
    let mut loopbacks: Vec<String> = ["leaf1", "leaf2", "spine1"]
        .iter()
        .map(|n| {
            let c = p.cli(&["get", "nodeconfigs", n, "-n", "default", "-o", "json"]).ok().json();
            assert!(c["spec"]["asn"].as_u64().is_some_and(|a| (65000..=65099).contains(&a)), "{c}");
            c["spec"]["loopback"].as_str().unwrap().to_string()
        })
        .collect();
    loopbacks.dedup();
    assert_eq!(loopbacks, ["10.0.0.0/32", "10.0.0.1/32", "10.0.0.2/32"]);
    // A second run changes nothing.
    let again = p.cli(&["run", "once", "-o", "json"]).ok().json();
    assert_eq!(again["success"], true, "{again}");
}

#[test]
fn a_kill_9_during_a_stream_of_claims_loses_no_acknowledged_claim_and_leaves_nothing_half_done() {
    let p = TestProject::new("lab");
    p.write(
        "in/ipam.be.kuid.dev.ipindices.lab.yaml",
        "apiVersion: ipam.be.kuid.dev/v1alpha1\nkind: IPIndex\nmetadata:\n  name: lab\n  namespace: default\nspec:\n  prefixes:\n  - prefix: 10.2.0.0/16\n",
    );
    let args = [p.dir.to_str().unwrap(), "-r"];
    let mut s = Server::start(&p.socket, &args);
    // Batches of claims, one apply each, until the server is killed under them.
    let socket = p.socket.clone();
    let tmp = p.tmp.path().to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for batch in 0..200 {
            let text: String = (0..10).map(|i| claim(&format!("b{batch}-{i}"), "ipv4") + "---\n").collect();
            let f = tmp.join(format!("batch{batch}.yaml"));
            std::fs::write(&f, text).unwrap();
            let run = cli(&socket, &["apply", "-f", f.to_str().unwrap()], None);
            if run.code != 0 {
                break;
            }
            acked.push(batch);
        }
        acked
    });
    wait_for("some claims", 30, || {
        let r = p.cli(&["get", "ipclaims", "-n", "default", "-o", "name"]);
        (r.code == 0 && r.stdout.lines().count() > 40).then_some(())
    });
    s.signal(libc::SIGKILL);
    s.wait();
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());
    let _s = Server::start(&p.socket, &args);
    let claims = p.cli(&["get", "ipclaims", "-n", "default", "-o", "json"]).ok().json();
    let entries = p.cli(&["get", "ipentries", "-n", "default", "-o", "json"]).ok().json();
    let entry_names: std::collections::BTreeSet<String> = entries["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut addresses = std::collections::BTreeSet::new();
    let mut by_name = std::collections::BTreeMap::new();
    for c in claims["items"].as_array().unwrap() {
        let name = c["metadata"]["name"].as_str().unwrap().to_string();
        if name.starts_with("lab.") {
            continue;
        }
        // Whatever is stored is whole: an address, unique, with its entry.
        let addr = c["status"]["address"].as_str().unwrap_or_else(|| panic!("{name} without an address: {c}"));
        assert!(addresses.insert(addr.to_string()), "{addr} twice");
        let entry = format!("default.lab.{}", addr.replace(['/', ':'], "-"));
        assert!(entry_names.contains(&entry), "{name}: no entry {entry}");
        by_name.insert(name, addr.to_string());
    }
    for batch in acked {
        for i in 0..10 {
            assert!(by_name.contains_key(&format!("b{batch}-{i}")), "acknowledged claim b{batch}-{i} lost");
        }
    }
    // Allocations went on where they were: the next claim does not reuse a stored address.
    p.cli_stdin(&["apply", "-f", "-"], &claim("after", "ipv4")).ok();
    assert!(!addresses.contains(&address(&p, "after")));
}
