//! `apply` and `delete` edit the user's files: they never clobber what the user wrote since the
//! last load, and files and store change together or not at all — across failures and crashes.

use crate::support::*;

const SITE: &str =
    "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: {name}\nspec:\n  region: {region}\n";

fn site(name: &str, region: &str) -> String {
    SITE.replace("{name}", name).replace("{region}", region)
}

/// The user's edit in progress: a new document in front of the two sites, and a broken file
/// elsewhere, so the project is `Failed` and the last good load's positions are all stale.
fn edit_in_progress(p: &TestProject) -> String {
    let edited = format!(
        "# the user's new site first\n{}---\n{}",
        site("lon1", "eu-north"),
        std::fs::read_to_string(p.path("in/sites.yaml")).unwrap().replacen(
            "# Two sites in one file: multi-document input.\n",
            "",
            1
        )
    );
    p.write("in/sites.yaml", &edited);
    p.write("in/broken.yaml", "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata: [\n");
    wait_for("the project to fail on broken.yaml", 30, || {
        let s = p.cli(&["server", "get", "-o", "json"]).ok().json();
        (s["status"] == "Failed").then_some(())
    });
    edited
}

#[test]
fn apply_while_the_user_edits_a_file_replaces_the_right_document() {
    let p = TestProject::new("network");
    let _s = p.start();
    edit_in_progress(&p);
    // ams1 was document 0 at the last good load; lon1 is document 0 now.
    let run = p.cli_stdin(&["apply", "-f", "-"], &site("ams1", "eu-central"));
    // The files are written; the project still fails on the user's broken file.
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("the files were updated") && run.stderr.contains("broken.yaml"), "{}", run.stderr);
    let text = std::fs::read_to_string(p.path("in/sites.yaml")).unwrap();
    assert!(text.contains("name: lon1") && text.contains("region: eu-north"), "the user's document is kept: {text}");
    assert!(text.contains("name: ams1") && text.contains("region: eu-central"), "ams1 is replaced: {text}");
    assert!(!text.contains("region: eu-west"), "{text}");
    assert!(text.contains("name: nyc1"), "{text}");
}

#[test]
fn delete_while_the_user_edits_a_file_cuts_the_named_object() {
    let p = TestProject::new("network");
    let _s = p.start();
    edit_in_progress(&p);
    // nyc1 was document 1 at the last good load; ams1 is document 1 now.
    let run = p.cli(&["delete", "sites", "nyc1"]);
    assert!(run.stderr.contains("the files were updated"), "{} {}", run.stdout, run.stderr);
    let text = std::fs::read_to_string(p.path("in/sites.yaml")).unwrap();
    assert!(!text.contains("name: nyc1"), "{text}");
    assert!(text.contains("name: ams1") && text.contains("name: lon1"), "the other documents stay: {text}");
}

#[test]
fn an_object_moved_out_of_its_file_is_refused_naming_the_file() {
    let p = TestProject::new("network");
    let _s = p.start();
    // The user moves nyc1 to a file of its own while the server is stopped from reloading
    // (the next load has not happened when the apply arrives: the edit must not trust it).
    let text = std::fs::read_to_string(p.path("in/sites.yaml")).unwrap();
    let without = text.split("---\n").next().unwrap().to_string();
    p.write("in/sites.yaml", &without);
    p.write("in/broken.yaml", "metadata: [\n");
    wait_for("the project to fail", 30, || {
        (p.cli(&["server", "get", "-o", "json"]).ok().json()["status"] == "Failed").then_some(())
    });
    let run = p.cli_stdin(&["apply", "-f", "-"], &site("nyc1", "us-west"));
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("in/sites.yaml no longer defines Site.net.example.org nyc1"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(p.path("in/sites.yaml")).unwrap(), without, "nothing written");
}

#[test]
fn an_apply_that_cannot_commit_leaves_no_file_behind() {
    let p = TestProject::new("network");
    let mut s = p.start();
    let before = p.in_files();
    // The server's state directory goes away under it: the edit cannot be recorded durably.
    std::fs::remove_dir_all(p.path(".choreo/db")).unwrap();
    let run = p.cli_stdin(&["apply", "-f", "-"], &site("par1", "eu-west"));
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    assert_eq!(p.in_files(), before, "the rejected object's file is not written");
    s.signal(libc::SIGKILL);
    s.wait();
    // A new server (a new store) loads exactly the files: no par1.
    let _s = p.start();
    let got = p.cli(&["get", "sites", "par1"]);
    assert_eq!(got.code, 1, "{}", got.stdout);
}

#[test]
fn an_edit_interrupted_by_a_crash_is_undone_at_the_next_start() {
    let p = TestProject::new("network");
    let mut s = p.start();
    s.cli(&["server", "stop"]).ok();
    s.wait();
    // What a kill -9 between writing the files and committing leaves: the intent record, the
    // new files of the unacknowledged request, an edited file, and an older version's temporary.
    let sites = p.path("in/sites.yaml");
    let original = std::fs::read_to_string(&sites).unwrap();
    let created = p.path("in/net.example.org.site.half.yaml");
    {
        let store = choreo::store::Store::open(&p.path(".choreo/db")).unwrap();
        let intent = serde_json::json!({"files": [[sites, original], [created, null]]});
        store.record_intent(intent.to_string().as_bytes()).unwrap();
    }
    p.write("in/sites.yaml", &site("ams1", "clobbered"));
    p.write("in/net.example.org.site.half.yaml", &site("half", "eu-west"));
    p.write("in/.net.example.org.site.x.yaml.4242.tmp", "partial");
    let _s = p.start();
    assert_eq!(std::fs::read_to_string(&sites).unwrap(), original, "the edited file is restored");
    assert!(!created.exists(), "the unacknowledged new file is removed");
    assert!(!p.in_files().iter().any(|f| f.ends_with(".tmp")), "{:?}", p.in_files());
    assert_eq!(p.cli(&["get", "sites", "half"]).code, 1);
    assert_eq!(p.cli(&["get", "sites", "ams1", "-o", "json"]).ok().json()["spec"]["region"], "eu-west");
}

#[test]
fn long_object_names_get_short_file_names_and_a_batch_succeeds() {
    let p = TestProject::new("network");
    let _s = p.start();
    let long = format!("a{}", "b".repeat(240));
    let mut batch = String::new();
    for i in 0..6 {
        let name = if i % 2 == 0 { format!("{}{i}", &long[..long.len() - 1]) } else { format!("short{i}") };
        batch.push_str(&site(&name, "eu-west"));
        batch.push_str("---\n");
    }
    let run = p.cli_stdin(&["apply", "-f", "-"], &batch).ok();
    assert_eq!(run.stdout.matches(" created ").count(), 6, "{}", run.stdout);
    for f in p.in_files() {
        assert!(f.len() <= 200, "{f}");
    }
    // The same object applied again lands in the same file.
    let name = format!("{}0", &long[..long.len() - 1]);
    let again = p.cli_stdin(&["apply", "-f", "-"], &site(&name, "us-east")).ok();
    assert!(again.stdout.contains("configured"), "{}", again.stdout);
    assert_eq!(p.in_files().len(), 9, "{:?}", p.in_files());
    assert_eq!(p.cli(&["get", "sites", &name, "-o", "json"]).ok().json()["spec"]["region"], "us-east");
}

#[test]
fn the_socket_path_is_removed_only_when_it_is_a_socket() {
    let p = TestProject::new("network");
    let notes = p.tmp.path().join("notes.txt");
    std::fs::write(&notes, "my notes").unwrap();
    let (mut s, listening) = Server::spawn(&notes, &[p.dir.to_str().unwrap()]);
    assert!(!listening);
    assert_ne!(s.wait(), 0);
    assert!(s.log().contains("notes.txt exists and is not a socket"), "{}", s.log());
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
}
