//! Git: dynamic mode (`server apply` in production and development, rollback, refusals),
//! branch commands, commit and push, and upstream refs — with local bare repositories made
//! here and a git configuration of the test's own (HOME), never the user's.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// A scratch area with its own git identity and configuration.
struct Git {
    tmp: tempfile::TempDir,
    home: PathBuf,
}

impl Git {
    fn new() -> Git {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = Tester\n\temail = tester@example.com\n[init]\n\tdefaultBranch = main\n",
        )
        .unwrap();
        Git { tmp, home }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn add_config(&self, text: &str) {
        let p = self.home.join(".gitconfig");
        let mut cfg = std::fs::read_to_string(&p).unwrap();
        cfg.push_str(text);
        std::fs::write(p, cfg).unwrap();
    }

    fn env(&self) -> Vec<(&'static str, &Path)> {
        vec![("HOME", self.home.as_path()), ("XDG_CONFIG_HOME", self.home.as_path())]
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_CONFIG_GLOBAL")
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A bare repository `name.git` and a work clone `name` whose directory `dir` holds the
    /// fixture; returns (bare, work, first commit).
    fn remote(&self, name: &str, fixture: &str, dir: &str) -> (PathBuf, PathBuf, String) {
        let bare = self.path(&format!("{name}.git"));
        let work = self.path(name);
        self.git(self.tmp.path(), &["init", "-q", "--bare", bare.to_str().unwrap()]);
        self.git(self.tmp.path(), &["init", "-q", work.to_str().unwrap()]);
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(fixture), &work.join(dir));
        let head = self.commit_all(&work, "initial");
        self.git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        self.git(&work, &["push", "-q", "origin", "main"]);
        (bare, work, head)
    }

    fn commit_all(&self, work: &Path, msg: &str) -> String {
        self.git(work, &["add", "-A"]);
        self.git(work, &["commit", "-q", "-m", msg]);
        self.git(work, &["rev-parse", "HEAD"])
    }

    fn edit(&self, file: &Path, from: &str, to: &str) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains(from), "{} lacks {from}", file.display());
        std::fs::write(file, text.replace(from, to)).unwrap();
    }

    /// A dynamic server with its own work directory.
    fn dynamic_server(&self) -> Server {
        let work_dir = self.path("state");
        Server::start_env(&self.path("s.sock"), &["--work-dir", work_dir.to_str().unwrap()], &self.env())
    }
}

/// Asserts that a command failed (exit 1) and said `needle`.
fn fails_with(r: Run, needle: &str) {
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(needle), "expected {needle:?} in: {}", r.stderr);
}

/// An `UpstreamRef` document; `None` leaves a field to its default.
fn upstream_ref(
    name: &str,
    url: &str,
    directory: &str,
    ref_type: Option<&str>,
    reference: &str,
    pkg_type: Option<&str>,
) -> String {
    let mut yaml =
        format!("apiVersion: choreo.kform.dev/v1alpha1\nkind: UpstreamRef\nmetadata:\n  name: {name}\nspec:\n");
    if let Some(t) = pkg_type {
        yaml.push_str(&format!("  type: {t}\n"));
    }
    yaml.push_str(&format!("  url: {url}\n  directory: {directory}\n  ref:\n"));
    if let Some(t) = ref_type {
        yaml.push_str(&format!("    type: {t}\n"));
    }
    yaml + &format!("    name: {reference}\n")
}

/// Removes these directories of `root`.
fn remove_dirs(root: &Path, dirs: &[&str]) {
    for d in dirs {
        std::fs::remove_dir_all(root.join(d)).unwrap();
    }
}

fn url(bare: &Path) -> String {
    format!("file://{}", bare.display())
}

fn status(s: &Server) -> Value {
    s.cli(&["server", "get", "-o", "json"]).ok().json()
}

fn welcome(s: &Server, name: &str) -> Option<String> {
    let r = s.cli(&["get", "welcomes", name, "-o", "json"]);
    (r.code == 0).then(|| r.json()["spec"]["text"].as_str().map(str::to_string)).flatten()
}

fn wait_welcome(s: &Server, name: &str, want: &str) {
    wait_for(&format!("welcome {name} = {want:?}"), 20, || (welcome(s, name).as_deref() == Some(want)).then_some(()));
}

#[test]
fn production_follows_the_applied_ref_and_rolls_back() {
    let g = Git::new();
    let (bare, work, first) = g.remote("intent", "greeter", "greeter");
    g.edit(&work.join("greeter/in/demo.choreo.dev.greeter.alice.yaml"), "greeting: hello", "greeting: hi");
    let second = g.commit_all(&work, "friendlier");
    g.git(&work, &["tag", "-a", "v2", "-m", "release 2"]);
    g.git(&work, &["push", "-q", "origin", "main", "--tags"]);

    let s = g.dynamic_server();
    assert_eq!(status(&s)["status"], "Initializing");
    let r = s.cli(&["get", "welcomes"]);
    assert_eq!(r.code, 1, "nothing is served before apply: {r:?}");
    assert!(r.stderr.contains("server apply"), "{}", r.stderr);

    let r = s.cli(&["server", "apply", &url(&bare), "greeter", "v2"]).ok();
    assert!(r.stderr.contains("cloning"), "clone progress is streamed: {}", r.stderr);
    let st = status(&s);
    assert_eq!(st["status"], "Ready", "{st}");
    assert_eq!(st["production"], true);
    assert_eq!(st["runner"], "Running");
    assert_eq!(st["context"]["ref"], "v2");
    assert_eq!(st["context"]["commit"], second.as_str());
    assert_eq!(st["context"]["branch"], Value::Null);
    wait_welcome(&s, "alice", "hi, Alice");

    // Roll back by the short hash of the first commit, then forward again.
    s.cli(&["server", "apply", &url(&bare), "greeter", &first[..10]]).ok();
    wait_welcome(&s, "alice", "hello, Alice");
    assert_eq!(status(&s)["context"]["commit"], first.as_str());
    s.cli(&["server", "apply", &url(&bare), "greeter", &second]).ok();
    wait_welcome(&s, "alice", "hi, Alice");
    let r = s.cli(&["server", "apply", &url(&bare), "greeter", &second]).ok();
    assert!(r.stdout.contains("unchanged"), "{}", r.stdout);

    // Production refuses what would change the pinned checkout.
    for args in [&["run", "commit", "nope"][..], &["run", "push"], &["run", "stop"], &["run", "once"]] {
        let r = s.cli(args);
        assert_eq!(r.code, 1, "{args:?} was accepted in production: {r:?}");
    }
    assert!(s.cli(&["run", "commit", "nope"]).stderr.contains("production"));
    let edit = "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: eve\n  namespace: default\nspec:\n  name: Eve\n";
    let r = crate::support::cli(&s.socket, &["apply", "-f", "-"], Some(edit));
    assert_eq!(r.code, 1, "production checkouts are edited through git: {r:?}");
    assert_eq!(status(&s)["runner"], "Running");

    // A restarted server (a service after a reboot) serves the last applied context again.
    drop(s);
    let s = g.dynamic_server();
    wait_for("the restarted server to serve the last context", 20, || (status(&s)["status"] == "Ready").then_some(()));
    let st = status(&s);
    assert_eq!(st["context"]["commit"], second.as_str(), "{st}");
    assert_eq!(st["runner"], "Running");
    wait_welcome(&s, "alice", "hi, Alice");

    // From production to development: the runner stops and runs on demand again.
    s.cli(&["server", "apply", &url(&bare), "greeter", "main", "dev"]).ok();
    let st = status(&s);
    assert_eq!((st["production"].as_bool(), st["runner"].as_str()), (Some(false), Some("Stopped")), "{st}");
    s.cli(&["run", "once"]).ok();
}

#[test]
fn development_branch_commit_and_push() {
    let g = Git::new();
    let (bare, _work, first) = g.remote("intent", "greeter", "greeter");
    let s = g.dynamic_server();
    s.cli(&["server", "apply", &url(&bare), "greeter", &first, "feature"]).ok();
    let st = status(&s);
    assert_eq!(st["production"], false, "{st}");
    assert_eq!(st["runner"], "Stopped");
    assert_eq!(st["context"]["branch"], "feature");
    s.cli(&["run", "once"]).ok();
    assert_eq!(welcome(&s, "alice").as_deref(), Some("hello, Alice"));

    let carol = "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: carol\n  namespace: default\nspec:\n  name: Carol\n  greeting: hey\n";
    crate::support::cli(&s.socket, &["apply", "-f", "-"], Some(carol)).ok();
    let r = s.cli(&["run", "commit", "add carol"]).ok();
    assert!(r.stdout.contains("committed"), "{}", r.stdout);
    assert_eq!(s.cli(&["run", "commit", "again"]).code, 1, "nothing left to commit");
    s.cli(&["run", "push"]).ok();
    assert_eq!(g.git(&bare, &["log", "--format=%s", "-1", "feature"]), "add carol");
    assert_eq!(g.git(&bare, &["log", "--format=%an", "-1", "feature"]), "Tester", "the user's identity");

    let r = s.cli(&["branch", "get"]).ok();
    assert!(r.stdout.lines().any(|l| l == "* feature"), "{}", r.stdout);
    let r = s.cli(&["branch", "get", "feature"]).ok();
    assert!(
        r.stdout.contains("    add carol") && r.stdout.contains("Author: Tester <tester@example.com>"),
        "{}",
        r.stdout
    );
    let r = s.cli(&["branch", "diff", "main", "feature"]).ok();
    assert_eq!(r.stdout.trim(), "+ greeter/in/demo.choreo.dev.greeter.carol.yaml");

    // Branches: create, fast-forward merge, refusals, delete.
    s.cli(&["branch", "create", "topic"]).ok();
    assert_eq!(s.cli(&["branch", "create", "topic"]).code, 1);
    let r = s.cli(&["branch", "merge", "feature", "main"]).ok();
    assert!(r.stdout.contains("fast-forwarded"), "{}", r.stdout);
    assert_eq!(s.cli(&["branch", "delete", "feature"]).code, 1, "the checked-out branch stays");
    s.cli(&["branch", "checkout", "topic"]).ok();
    assert_eq!(status(&s)["context"]["branch"], "topic");
    s.cli(&["branch", "delete", "feature"]).ok();

    // A new development server on the same remote branch tracks it (fresh work dir).
    drop(s);
    let work_dir = g.path("state2");
    let s2 = Server::start_env(&g.path("s2.sock"), &["--work-dir", work_dir.to_str().unwrap()], &g.env());
    s2.cli(&["server", "apply", &url(&bare), "greeter", "main", "feature"]).ok();
    s2.cli(&["run", "once"]).ok();
    assert_eq!(welcome(&s2, "carol").as_deref(), Some("hey, Carol"), "the pushed branch was checked out");
}

#[test]
fn refusals_leave_the_previous_context_serving() {
    let g = Git::new();
    let (bare, work, first) = g.remote("intent", "greeter", "greeter");
    g.edit(&work.join("greeter/in/demo.choreo.dev.greeter.alice.yaml"), "greeting: hello", "greeting: hi");
    let second = g.commit_all(&work, "friendlier");
    g.git(&work, &["push", "-q", "origin", "main"]);
    g.git(&work, &["checkout", "-q", "-b", "broken"]);
    std::fs::write(
        work.join("greeter/in/bad.yaml"),
        "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata: {name: bad\n",
    )
    .unwrap();
    g.commit_all(&work, "a file that does not parse");
    g.git(&work, &["push", "-q", "origin", "broken"]);
    let s = g.dynamic_server();

    // A first apply at a ref where the project does not load: Failed, with the file named.
    fails_with(s.cli(&["server", "apply", &url(&bare), "greeter", "broken"]), "in/bad.yaml:");
    let st = status(&s);
    assert_eq!(st["status"], "Failed", "{st}");
    assert!(st["reason"].as_str().unwrap().contains("in/bad.yaml"), "{st}");

    // An unreachable URL without a clone: the server says why and stays Initializing-failed.
    fails_with(
        s.cli(&["server", "apply", &format!("file://{}", g.path("missing.git").display()), "greeter", "main"]),
        "cannot clone",
    );
    assert_eq!(status(&s)["status"], "Failed");

    s.cli(&["server", "apply", &url(&bare), "greeter", &first, "dev"]).ok();
    s.cli(&["run", "once"]).ok();

    // An unknown ref changes nothing.
    fails_with(s.cli(&["server", "apply", &url(&bare), "greeter", "no-such-ref"]), "unknown ref");
    assert_eq!(status(&s)["context"]["branch"], "dev");

    // A ref where the project does not load: the previous context stays, checkout included.
    let r = s.cli(&["server", "apply", &url(&bare), "greeter", "broken"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("previous context is still served") && r.stderr.contains("in/bad.yaml:"), "{}", r.stderr);
    let st = status(&s);
    assert_eq!((st["status"].as_str(), st["context"]["branch"].as_str()), (Some("Ready"), Some("dev")), "{st}");
    assert_eq!(st["context"]["commit"], first.as_str());
    s.cli(&["run", "once"]).ok();

    // A directory that is not in the repository changes nothing either.
    fails_with(s.cli(&["server", "apply", &url(&bare), "nowhere", &second]), "nowhere");
    assert_eq!(status(&s)["context"]["directory"], "greeter");
    assert_eq!(status(&s)["status"], "Ready");

    // Uncommitted work in the clone is never discarded by a switch.
    let dave = "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: dave\n  namespace: default\nspec:\n  name: Dave\n";
    crate::support::cli(&s.socket, &["apply", "-f", "-"], Some(dave)).ok();
    let r = s.cli(&["server", "apply", &url(&bare), "greeter", &second]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("uncommitted changes") && r.stderr.contains("dave"), "{}", r.stderr);
    assert_eq!(status(&s)["context"]["branch"], "dev");
    s.cli(&["branch", "stash"]).ok();

    // Offline: the remote is gone, the existing clone is used with a warning.
    std::fs::rename(&bare, g.path("moved.git")).unwrap();
    let r = s.cli(&["server", "apply", &url(&bare), "greeter", &second]).ok();
    assert!(r.stderr.contains("warning") && r.stderr.contains("existing clone"), "{}", r.stderr);
    wait_welcome(&s, "alice", "hi, Alice");

    // A development branch created at a ref that fails to load is not left behind: the same
    // branch at a good ref is created there.
    assert_eq!(s.cli(&["server", "apply", &url(&bare), "greeter", "broken", "fix"]).code, 1);
    let r = s.cli(&["server", "apply", &url(&bare), "greeter", &second, "fix"]).ok();
    assert!(!r.stderr.contains("exists"), "{}", r.stderr);
    let st = status(&s);
    assert_eq!(
        (st["context"]["branch"].as_str(), st["context"]["commit"].as_str()),
        (Some("fix"), Some(second.as_str())),
        "{st}"
    );
    // An existing branch with a REF that names nothing is refused too.
    fails_with(s.cli(&["server", "apply", &url(&bare), "greeter", "no-such-ref", "fix"]), "unknown ref");
    // A relative path means nothing to the server.
    fails_with(s.cli(&["server", "apply", "no/such/relative/repo", "greeter", "main"]), "relative path");

    // Static mode on a plain directory: git commands say what is missing.
    let p = TestProject::new("greeter");
    let _st = p.start();
    fails_with(p.cli(&["branch", "get"]), "not a git repository");
    fails_with(p.cli(&["server", "apply", &url(&bare), "greeter", "main"]), "static mode");
}

#[test]
fn upstream_refs_nested_two_deep_at_their_pinned_commits() {
    let g = Git::new();
    // Deepest package: the Greeter API and its reconciler. A later commit breaks the
    // reconciler; the pinned (first) commit must be what is loaded.
    let (bare_b, work_b, pinned_b) = g.remote("pkg-b", "greeter", "greeter");
    std::fs::remove_dir_all(work_b.join("greeter/in")).unwrap();
    std::fs::remove_file(work_b.join("greeter/crds/demo.choreo.dev_welcomes.yaml")).unwrap();
    let b_without_in = g.commit_all(&work_b, "package: no data, no Welcome API");
    g.edit(&work_b.join("greeter/reconcilers/demo.choreo.dev.greeters.welcome.star"), "\", \"", "\" BROKEN \"");
    g.commit_all(&work_b, "breaks the reconciler");
    g.git(&work_b, &["push", "-q", "origin", "main"]);

    // Middle package: the Welcome API, and a ref to pkg-b through a URL that only an insteadOf
    // rule makes reachable.
    let (bare_a, work_a, _) = g.remote("pkg-a", "greeter", "a");
    remove_dirs(&work_a.join("a"), &["in", "reconcilers", "libs"]);
    std::fs::remove_file(work_a.join("a/crds/demo.choreo.dev_greeters.yaml")).unwrap();
    std::fs::create_dir_all(work_a.join("a/refs")).unwrap();
    let mirrored = "https://mirror.invalid/pkg-b.git";
    std::fs::write(
        work_a.join("a/refs/pkg-b.yaml"),
        upstream_ref("pkg-b", mirrored, "greeter", Some("hash"), &b_without_in, None),
    )
    .unwrap();
    g.commit_all(&work_a, "package a");
    g.git(&work_a, &["tag", "v1"]);
    g.git(&work_a, &["push", "-q", "origin", "main", "--tags"]);
    g.add_config(&format!("[url \"{}\"]\n\tinsteadOf = {mirrored}\n", url(&bare_b)));

    // The project: only data and a ref to pkg-a by tag.
    let p = TestProject::new("greeter");
    remove_dirs(&p.dir, &["crds", "reconcilers", "libs"]);
    p.write("refs/pkg-a.yaml", &upstream_ref("pkg-a", &url(&bare_a), "a", Some("tag"), "v1", None));
    let s = Server::start_env(&p.socket, &[p.dir.to_str().unwrap()], &g.env());
    let st = status(&s);
    assert_eq!(st["status"], "Ready", "{st}");
    s.cli(&["run", "once"]).ok();
    assert_eq!(welcome(&s, "alice").as_deref(), Some("hello, Alice"), "pkg-b's reconciler at the pinned commit");
    let refs = s.cli(&["get", "upstreamrefs", "-o", "name"]).ok();
    assert!(refs.stdout.contains("pkg-a"), "{}", refs.stdout);

    // A second ref to the same package at another commit is a conflict, named.
    p.write("refs/pkg-b-too.yaml", &upstream_ref("pkg-b-too", mirrored, "greeter", Some("hash"), &pinned_b, None));
    fails_with(s.cli(&["run", "load"]), "pins it at");
}

#[test]
fn static_mode_commits_on_the_users_repository() {
    let g = Git::new();
    let p = TestProject::new("greeter");
    g.git(&p.dir, &["init", "-q"]);
    g.commit_all(&p.dir, "project");
    let s = Server::start_env(&p.socket, &[p.dir.to_str().unwrap()], &g.env());
    let carol = "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: carol\n  namespace: default\nspec:\n  name: Carol\n";
    crate::support::cli(&s.socket, &["apply", "-f", "-"], Some(carol)).ok();
    // Files outside the project's directories are the user's business, not choreo's commit.
    std::fs::write(p.path("notes.txt"), "mine").unwrap();
    s.cli(&["run", "commit", "carol"]).ok();
    assert_eq!(g.git(&p.dir, &["log", "--format=%s", "-1"]), "carol");
    assert_eq!(g.git(&p.dir, &["status", "--porcelain"]), "?? notes.txt");
    assert_eq!(s.cli(&["branch", "get"]).ok().stdout, "* main\n");
    let st = s.cli(&["server", "get"]).ok().stdout;
    assert!(st.contains("branch") && st.contains("main"), "{st}");
    // No remote: push says so.
    fails_with(s.cli(&["run", "push"]), "no remote");
}

#[test]
fn upstream_data_of_type_all_loads_and_goes_with_its_ref() {
    let g = Git::new();
    let (bare, _work, commit) = g.remote("pkg", "greeter", "greeter");
    let p = TestProject::new("greeter");
    remove_dirs(&p.dir, &["crds", "reconcilers", "libs", "in"]);
    let r#ref = |kind: &str| upstream_ref("pkg", &url(&bare), "greeter", None, &commit, Some(kind));
    p.write("refs/pkg.yaml", &r#ref("all"));
    let s = Server::start_env(&p.socket, &[p.dir.to_str().unwrap()], &g.env());
    s.cli(&["run", "once"]).ok();
    assert_eq!(welcome(&s, "bob").as_deref(), Some("welcome, Bob"));
    let alice = s.cli(&["get", "greeters", "alice", "-o", "json"]).ok().json();
    let origin = alice["metadata"]["annotations"]["api.choreo.kform.dev/origin"].as_str().unwrap().to_string();
    assert!(origin.contains("\"kind\":\"Upstream\"") && origin.contains("\"directory\":\"greeter\""), "{origin}");
    assert!(p.path(".choreo/upstream").is_dir(), "the package is cached in the project's .choreo/");

    // The project's own definition wins; when its file goes, the package's takes over again.
    p.write("in/alice.yaml", "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: alice\n  namespace: default\nspec:\n  name: Alice\n  greeting: howdy\n");
    s.cli(&["run", "once"]).ok();
    assert_eq!(welcome(&s, "alice").as_deref(), Some("howdy, Alice"));
    p.remove("in/alice.yaml");
    s.cli(&["run", "once"]).ok();
    assert_eq!(welcome(&s, "alice").as_deref(), Some("hello, Alice"), "the package's alice, not a deleted one");

    // Type crd: the package's data is no longer part of the project.
    p.write("refs/pkg.yaml", &r#ref("crd"));
    // The greeters carry the reconciler's finalizer: the run that follows the load lets them go.
    s.cli(&["run", "once"]).ok();
    assert_eq!(s.cli(&["get", "greeters", "alice"]).code, 1, "the package's data went with its type");
    assert_eq!(s.cli(&["get", "welcomes", "bob"]).code, 1, "and so did the children");
}

#[test]
fn upstream_fetches_of_an_apply_stream_to_the_cli() {
    let g = Git::new();
    let (pkg, _pw, pinned) = g.remote("pkg", "greeter", "greeter");
    let (proj, work, _) = g.remote("proj", "greeter", "p");
    remove_dirs(&work.join("p"), &["crds", "reconcilers", "libs", "in"]);
    std::fs::create_dir_all(work.join("p/refs")).unwrap();
    std::fs::write(
        work.join("p/refs/pkg.yaml"),
        upstream_ref("pkg", &url(&pkg), "greeter", None, &pinned, Some("all")),
    )
    .unwrap();
    g.commit_all(&work, "only a ref");
    g.git(&work, &["push", "-q", "origin", "main"]);
    let s = g.dynamic_server();
    let r = s.cli(&["server", "apply", &url(&proj), "p", "main", "dev"]).ok();
    assert!(r.stderr.contains(&format!("fetching {}", url(&pkg))), "{}", r.stderr);
    s.cli(&["run", "once"]).ok();
    assert_eq!(welcome(&s, "alice").as_deref(), Some("hello, Alice"));
    assert!(g.path("state/upstream").is_dir(), "dynamic mode caches packages in its work directory");
}

#[test]
fn a_development_clone_with_uncommitted_work_is_served_again_after_a_restart() {
    let g = Git::new();
    let (bare, _work, first) = g.remote("intent", "greeter", "greeter");
    let s = g.dynamic_server();
    s.cli(&["server", "apply", &url(&bare), "greeter", &first, "dev"]).ok();
    let carol = "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: carol\n  namespace: default\nspec:\n  name: Carol\n";
    crate::support::cli(&s.socket, &["apply", "-f", "-"], Some(carol)).ok();
    s.cli(&["branch", "create", "other"]).ok();
    s.cli(&["branch", "checkout", "other"]).ok();
    drop(s);

    // The uncommitted file does not stop the restarted server from serving its own clone, on
    // the branch checked out last.
    let s = g.dynamic_server();
    wait_for("the restarted server to serve its clone", 20, || (status(&s)["status"] == "Ready").then_some(()));
    let st = status(&s);
    assert_eq!(st["context"]["branch"], "other", "{st}");
    assert_eq!(s.cli(&["get", "greeters", "carol"]).code, 0, "the uncommitted object is served");
    s.cli(&["run", "commit", "carol"]).ok();
    assert_eq!(
        g.git(
            &g.path("state/repos").read_dir().unwrap().next().unwrap().unwrap().path(),
            &["log", "--format=%s", "-1"]
        ),
        "carol"
    );
}

#[test]
fn symbolic_links_out_of_the_repository_are_refused() {
    let g = Git::new();
    let (bare, work, first) = g.remote("intent", "greeter", "greeter");
    // A project outside the repository, and links to it committed on branch `evil`: DIR
    // through a link, and an input file through a link.
    let outside = g.path("outside");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("greeter"), &outside.join("project"));
    let mallory = "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: mallory\n  namespace: default\nspec:\n  name: Mallory\n";
    std::fs::write(outside.join("mallory.yaml"), mallory).unwrap();
    g.git(&work, &["checkout", "-q", "-b", "evil"]);
    std::os::unix::fs::symlink(&outside, work.join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.join("mallory.yaml"), work.join("greeter/in/mallory.yaml")).unwrap();
    g.commit_all(&work, "links out of the repository");
    g.git(&work, &["push", "-q", "origin", "evil"]);

    let s = g.dynamic_server();
    s.cli(&["server", "apply", &url(&bare), "greeter", &first, "dev"]).ok();

    // DIR is text inside the repository, but the checked-out link takes it out.
    let r = s.cli(&["server", "apply", &url(&bare), "evil/project", "evil", "dev2"]);
    fails_with(r, "DIR evil/project leads to ");
    let r = s.cli(&["server", "apply", &url(&bare), "evil/project", "evil", "dev2"]);
    assert!(
        r.stderr.contains("outside the repository") && r.stderr.contains("previous context is still served"),
        "{}",
        r.stderr
    );
    let st = status(&s);
    assert_eq!((st["status"].as_str(), st["context"]["directory"].as_str()), (Some("Ready"), Some("greeter")), "{st}");
    assert_eq!(st["context"]["commit"], first.as_str());

    // An input file linked from outside the clone fails the load, naming the file.
    let r = s.cli(&["server", "apply", &url(&bare), "greeter", "evil", "dev3"]);
    fails_with(r, "in/mallory.yaml: symbolic link to ");
    let r = s.cli(&["server", "apply", &url(&bare), "greeter", "evil", "dev3"]);
    assert!(r.stderr.contains(", outside "), "{}", r.stderr);
    let st = status(&s);
    assert_eq!((st["status"].as_str(), st["context"]["branch"].as_str()), (Some("Ready"), Some("dev")), "{st}");
    assert_eq!(s.cli(&["get", "greeters", "mallory"]).code, 1, "nothing from outside was loaded");
    s.cli(&["get", "greeters", "alice"]).ok();
}

/// `plan --ref` in production: previews a rollback and a roll-forward to a commit pushed after
/// the apply (the clone is fetched), changing neither the checkout, nor the store, nor what is
/// served; the apply then makes exactly the planned changes.
#[test]
fn plan_at_a_ref_previews_a_context_switch_without_making_it() {
    let g = Git::new();
    let (bare, work, first) = g.remote("intent", "greeter", "greeter");
    g.edit(&work.join("greeter/in/demo.choreo.dev.greeter.alice.yaml"), "greeting: hello", "greeting: hi");
    let second = g.commit_all(&work, "friendlier");
    g.git(&work, &["push", "-q", "origin", "main"]);
    let s = g.dynamic_server();
    let r = s.cli(&["plan"]);
    assert_eq!(r.code, 1, "nothing served, nothing to plan: {r:?}");
    fails_with(s.cli(&["plan", "--ref", "main"]), "server apply");
    s.cli(&["server", "apply", &url(&bare), "greeter", "main"]).ok();
    wait_welcome(&s, "alice", "hi, Alice");
    let served = status(&s)["context"].clone();

    // Pushed after the apply: carol arrives, bob leaves.
    std::fs::remove_file(work.join("greeter/in/demo.choreo.dev.greeter.bob.yaml")).unwrap();
    std::fs::write(
        work.join("greeter/in/demo.choreo.dev.greeter.carol.yaml"),
        "apiVersion: demo.choreo.dev/v1alpha1\nkind: Greeter\nmetadata:\n  name: carol\n  namespace: default\nspec:\n  name: Carol\n",
    )
    .unwrap();
    let third = g.commit_all(&work, "carol in, bob out");
    g.git(&work, &["push", "-q", "origin", "main"]);

    let back = s.cli(&["plan", "--ref", &first[..10], "--exit-code", "-a"]);
    assert_eq!(back.code, 4, "{back:?}");
    assert!(back.stdout.contains("~ demo.choreo.dev/v1alpha1, Kind=Greeter default/alice"), "{}", back.stdout);
    assert!(back.stdout.contains("~ demo.choreo.dev/v1alpha1, Kind=Welcome default/alice"), "{}", back.stdout);
    assert!(back.stdout.contains("-  greeting: hi\n+  greeting: hello"), "{}", back.stdout);
    assert!(back.stdout.ends_with("Plan: 0 to create, 2 to change, 0 to delete.\n"), "{}", back.stdout);
    assert!(back.stderr.contains(&format!("planning greeter at {} ({first})", &first[..10])), "{}", back.stderr);

    let ahead = s.cli(&["plan", "--ref", "main"]).ok();
    for line in [
        "+ demo.choreo.dev/v1alpha1, Kind=Greeter default/carol",
        "+ demo.choreo.dev/v1alpha1, Kind=Welcome default/carol",
        "- demo.choreo.dev/v1alpha1, Kind=Greeter default/bob",
        "- demo.choreo.dev/v1alpha1, Kind=Welcome default/bob",
    ] {
        assert!(ahead.stdout.contains(line), "{line} in {}", ahead.stdout);
    }
    assert!(ahead.stderr.contains("fetching"), "the clone is fetched first: {}", ahead.stderr);
    fails_with(s.cli(&["plan", "--ref", "no-such-ref"]), "unknown ref");

    // Nothing moved: the same context and commit, a clean clone, the same objects.
    assert_eq!(status(&s)["context"], served);
    assert_eq!(served["commit"], second.as_str());
    let clone = std::fs::read_dir(g.path("state/repos")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(g.git(&clone, &["status", "--porcelain"]), "");
    assert_eq!(g.git(&clone, &["rev-parse", "HEAD"]), second);
    assert!(welcome(&s, "bob").is_some() && welcome(&s, "carol").is_none());
    let leftovers = plan_copies(&g.path("state"));
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The switch makes what the plan said.
    s.cli(&["server", "apply", &url(&bare), "greeter", "main"]).ok();
    assert_eq!(status(&s)["context"]["commit"], third.as_str());
    wait_welcome(&s, "carol", "welcome, Carol");
    wait_for("bob's welcome to go", 20, || welcome(&s, "bob").is_none().then_some(()));
    let r = s.cli(&["plan", "--ref", "main", "--exit-code"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// `plan --ref` in static mode: any revision of the user's repository, resolved as git does.
#[test]
fn plan_at_a_revision_of_the_users_repository() {
    let g = Git::new();
    let p = TestProject::new("greeter");
    g.git(&p.dir, &["init", "-q"]);
    g.commit_all(&p.dir, "project");
    g.edit(&p.path("in/demo.choreo.dev.greeter.alice.yaml"), "greeting: hello", "greeting: hey");
    g.commit_all(&p.dir, "hey");
    let s = Server::start_env(&p.socket, &[p.dir.to_str().unwrap()], &g.env());
    s.cli(&["run", "once"]).ok();
    let files = p.in_files();
    let r = s.cli(&["plan", "--ref", "HEAD~1"]).ok();
    assert!(r.stdout.contains("~ demo.choreo.dev/v1alpha1, Kind=Welcome default/alice"), "{}", r.stdout);
    assert!(r.stdout.ends_with("Plan: 0 to create, 2 to change, 0 to delete.\n"), "{}", r.stdout);
    assert!(s.cli(&["plan", "--ref", "HEAD"]).ok().stdout.contains("No changes"));
    assert_eq!(p.in_files(), files);
    assert_eq!(g.git(&p.dir, &["status", "--porcelain"]), "");
    assert_eq!(g.git(&p.dir, &["log", "--format=%s", "-1"]), "hey");
}
