use std::path::Path;

use super::*;

static NEVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Progress to `report`, never cancelled.
fn p(report: &mut dyn FnMut(String)) -> Progress<'_> {
    Progress { report, cancel: &NEVER }
}

/// A bare "remote" with one commit on `main` (`file.txt` = `one`) and the work clone it came
/// from.
fn remote(tmp: &Path) -> (PathBuf, Repository) {
    let work_path = tmp.join("seed");
    let work = Repository::init_opts(&work_path, git2::RepositoryInitOptions::new().initial_head("main")).unwrap();
    commit_file(&work, "file.txt", "one", "first");
    let bare = tmp.join("remote.git");
    Repository::init_bare(&bare).unwrap();
    work.remote("origin", bare.to_str().unwrap()).unwrap();
    push_main(&work);
    (bare, work)
}

fn commit_file(repo: &Repository, name: &str, text: &str, msg: &str) -> Oid {
    let root = repo.workdir().unwrap();
    std::fs::create_dir_all(root.join(name).parent().unwrap()).unwrap();
    std::fs::write(root.join(name), text).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new(name)).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.target()).map(|o| repo.find_commit(o).unwrap());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents).unwrap()
}

fn push_main(repo: &Repository) {
    repo.find_remote("origin").unwrap().push(&["refs/heads/main:refs/heads/main"], None).unwrap();
}

fn url(bare: &Path) -> String {
    format!("file://{}", bare.display())
}

#[test]
fn cache_names_are_file_names() {
    let name = cache_name("https://github.com/kform-dev/choreo-examples.git");
    assert!(name.starts_with("https---github.com-kform-dev-choreo-examples.git-"), "{name}");
    assert!(cache_name("file:///tmp/x/remote.git/").starts_with("file----tmp-x-remote.git-"));
    assert!(!cache_name("../../etc").contains('/'));
    assert_ne!(
        cache_name("https://gitlab.com/group/sub-proj"),
        cache_name("https://gitlab.com/group-sub/proj"),
        "URLs that sanitise alike get their own clones"
    );
}

#[test]
fn instead_of_takes_the_longest_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config");
    std::fs::write(
        &path,
        "[url \"file:///mirror/\"]\n\tinsteadOf = https://example.com/\n[url \"file:///special/\"]\n\tinsteadOf = https://example.com/team/\n[url \"ssh://push/\"]\n\tpushInsteadOf = https://example.com/\n",
    )
    .unwrap();
    let cfg = git2::Config::open(&path).unwrap();
    assert_eq!(rewrite_with(&cfg, "https://example.com/a.git", false), "file:///mirror/a.git");
    assert_eq!(rewrite_with(&cfg, "https://example.com/team/b.git", false), "file:///special/b.git");
    assert_eq!(rewrite_with(&cfg, "https://example.com/a.git", true), "ssh://push/a.git");
    assert_eq!(rewrite_with(&cfg, "https://other.org/a.git", false), "https://other.org/a.git");
}

#[test]
fn clone_resolve_and_production_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, work) = remote(tmp.path());
    let first = work.head().unwrap().target().unwrap();
    let second = commit_file(&work, "file.txt", "two", "second");
    push_main(&work);
    let c = work.find_commit(first).unwrap();
    work.tag("v1", c.as_object(), &git2::Signature::now("t", "t@x").unwrap(), "annotated", false).unwrap();
    work.find_remote("origin").unwrap().push(&["refs/tags/v1:refs/tags/v1"], None).unwrap();

    let mut lines = Vec::new();
    let dest = tmp.path().join("clone");
    let (repo, warning) = Repo::clone_or_fetch(&url(&bare), &dest, p(&mut |l| lines.push(l))).unwrap();
    assert!(warning.is_none());
    assert!(lines.iter().any(|l| l.starts_with("cloning")), "{lines:?}");
    assert_eq!(repo.resolve("main").unwrap(), second);
    assert_eq!(repo.resolve("v1").unwrap(), first, "annotated tags peel to their commit");
    assert_eq!(repo.resolve(&first.to_string()[..8]).unwrap(), first, "short hashes");
    assert!(matches!(repo.resolve("nope"), Err(RepoError::UnknownRef { .. })));

    repo.checkout_detached(first).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("file.txt")).unwrap(), "one");
    assert_eq!(repo.head().unwrap(), Head::Detached(first));
    assert!(repo.current_branch().is_none());

    // Uncommitted work is reported; choreo's own state is not.
    std::fs::create_dir_all(dest.join(".choreo")).unwrap();
    std::fs::write(dest.join(".choreo/x"), "state").unwrap();
    repo.ensure_clean().unwrap();
    std::fs::write(dest.join("file.txt"), "edited").unwrap();
    std::fs::write(dest.join("new.txt"), "new").unwrap();
    match repo.ensure_clean() {
        Err(RepoError::Dirty { files, .. }) => assert_eq!(files, vec!["file.txt", "new.txt"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fetching_an_unreachable_remote_keeps_the_clone() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, _work) = remote(tmp.path());
    let dest = tmp.path().join("clone");
    Repo::clone_or_fetch(&url(&bare), &dest, p(&mut |_| {})).unwrap();
    std::fs::rename(&bare, tmp.path().join("gone.git")).unwrap();
    let (_, warning) = Repo::clone_or_fetch(&url(&bare), &dest, p(&mut |_| {})).unwrap();
    assert!(warning.unwrap().contains("using the existing clone"));
    let err = Repo::clone_or_fetch(&url(&bare), &tmp.path().join("other"), p(&mut |_| {})).err().unwrap();
    assert!(err.to_string().contains("cannot clone"), "{err}");
    assert!(!tmp.path().join("other").exists() && !tmp.path().join("other.partial").exists());
}

#[test]
fn development_branch_commit_push_and_fast_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, work) = remote(tmp.path());
    let dest = tmp.path().join("clone");
    let (repo, _) = Repo::clone_or_fetch(&url(&bare), &dest, p(&mut |_| {})).unwrap();
    assert_eq!(repo.checkout_development("feature", "main").unwrap(), (None, true));
    assert!(repo.is_current_development("feature"));
    assert_eq!(repo.current_branch().as_deref(), Some("feature"));

    std::fs::create_dir_all(dest.join("proj/in")).unwrap();
    std::fs::write(dest.join("proj/in/a.yaml"), "a: 1\n").unwrap();
    std::fs::write(dest.join("outside.txt"), "not staged").unwrap();
    let oid = repo.commit(&[PathBuf::from("proj/in")], "add a").unwrap().unwrap();
    assert!(repo.commit(&[PathBuf::from("proj/in")], "again").unwrap().is_none(), "nothing left to commit");
    assert_eq!(repo.dirty_files().unwrap(), vec!["outside.txt"]);
    std::fs::remove_file(dest.join("outside.txt")).unwrap();

    let mut lines = Vec::new();
    repo.push(p(&mut |l| lines.push(l))).unwrap();
    let remote_repo = Repository::open_bare(&bare).unwrap();
    assert_eq!(remote_repo.refname_to_id("refs/heads/feature").unwrap(), oid);
    let log = repo.log("feature", 10).unwrap();
    assert_eq!(log[0].message, "add a");
    assert_eq!(log.len(), 2);

    // Someone else moves main; a development checkout of main fast-forwards the local branch.
    repo.checkout_development("main", "main").unwrap();
    let newer = commit_file(&work, "file.txt", "three", "third");
    push_main(&work);
    Repo::clone_or_fetch(&url(&bare), &dest, p(&mut |_| {})).unwrap();
    repo.switch_branch("feature", false).unwrap();
    repo.checkout_development("main", "main").unwrap();
    assert_eq!(repo.head_commit(), Some(newer));

    // feature and main diverged: merging is refused, never forced.
    let err = repo.merge("feature", "main").unwrap_err();
    assert!(err.to_string().contains("not a fast-forward"), "{err}");
    assert!(repo.delete_branch("main", false).unwrap_err().to_string().contains("checked out"));
    let diff = repo.diff("main", "feature", Path::new("")).unwrap();
    assert!(diff.contains(&('+', "proj/in/a.yaml".to_string())), "{diff:?}");
    assert!(diff.contains(&('~', "file.txt".to_string())), "{diff:?}");
}

#[test]
fn fast_forward_merge_and_stash() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, _work) = remote(tmp.path());
    let dest = tmp.path().join("clone");
    let (mut repo, _) = Repo::clone_or_fetch(&url(&bare), &dest, p(&mut |_| {})).unwrap();
    repo.checkout_development("main", "main").unwrap();
    repo.create_branch("topic").unwrap();
    assert!(repo.create_branch("topic").is_err());
    repo.switch_branch("topic", false).unwrap();
    std::fs::write(dest.join("file.txt"), "topic").unwrap();
    let tip = repo.commit(&[PathBuf::from("file.txt")], "topic work").unwrap().unwrap();
    repo.switch_branch("main", false).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("file.txt")).unwrap(), "one");
    assert!(repo.merge("topic", "main").unwrap().contains("fast-forwarded"));
    assert_eq!(repo.head_commit(), Some(tip));
    assert_eq!(std::fs::read_to_string(dest.join("file.txt")).unwrap(), "topic");

    std::fs::write(dest.join("file.txt"), "wip").unwrap();
    repo.stash("wip").unwrap();
    assert!(repo.dirty_files().unwrap().is_empty());
    assert!(repo.stash("again").is_err());
    repo.delete_branch("topic", false).unwrap();
}

#[test]
fn upstream_packages_are_read_at_the_pinned_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, work) = remote(tmp.path());
    let first = work.head().unwrap().target().unwrap();
    commit_file(&work, "pkg/crds/a.yaml", "kind: A\n", "pkg");
    push_main(&work);
    let cache = tmp.path().join("cache");
    let mut lines = Vec::new();
    let (path, oid) = fetch_commit(&url(&bare), "hash", &first.to_string(), &cache, p(&mut |l| lines.push(l))).unwrap();
    assert_eq!(oid, first);
    let fetches = |lines: &[String]| lines.iter().filter(|l| l.contains(" for hash ")).count();
    assert_eq!(fetches(&lines), 1, "fetched once: {lines:?}");
    let (_, again) = fetch_commit(&url(&bare), "hash", &first.to_string(), &cache, p(&mut |l| lines.push(l))).unwrap();
    assert_eq!(again, first);
    assert_eq!(fetches(&lines), 1, "the second lookup is local: {lines:?}");
    let dest = cache.join("export");
    export_commit(&path, oid, &dest).unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("file.txt")).unwrap(), "one");
    assert!(!dest.join("pkg").exists(), "the newer commit's files are not there");
    let err = fetch_commit(&url(&bare), "tag", "v9", &cache, p(&mut |_| {})).unwrap_err();
    assert!(matches!(err, RepoError::UnknownRef { .. }), "{err}");
}

#[test]
fn the_first_commit_of_a_new_repository() {
    let tmp = tempfile::tempdir().unwrap();
    Repository::init_opts(tmp.path(), git2::RepositoryInitOptions::new().initial_head("main")).unwrap();
    std::fs::create_dir_all(tmp.path().join("in")).unwrap();
    std::fs::write(tmp.path().join("in/a.yaml"), "a: 1\n").unwrap();
    let repo = Repo::discover(tmp.path()).unwrap();
    assert_eq!(repo.current_branch().as_deref(), Some("main"), "an unborn branch is still the branch");
    let oid = repo.commit(&[PathBuf::from("in")], "first").unwrap().unwrap();
    assert_eq!(repo.head_commit(), Some(oid));
}

#[test]
fn an_upstream_branch_ref_stays_where_it_was_first_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, work) = remote(tmp.path());
    let first = work.head().unwrap().target().unwrap();
    let cache = tmp.path().join("cache");
    let (_, oid) = fetch_commit(&url(&bare), "branch", "main", &cache, p(&mut |_| {})).unwrap();
    assert_eq!(oid, first);
    // main moves on and another ref of the same URL makes the cache fetch again.
    let second = commit_file(&work, "file.txt", "two", "second");
    push_main(&work);
    let (_, again) = fetch_commit(&url(&bare), "hash", &second.to_string(), &cache, p(&mut |_| {})).unwrap();
    assert_eq!(again, second);
    let (_, still) = fetch_commit(&url(&bare), "branch", "main", &cache, p(&mut |_| {})).unwrap();
    assert_eq!(still, first);
}

/// `export_tree` writes an older commit's files elsewhere, links as links, and leaves HEAD, the
/// index and the work tree as they were.
#[test]
fn export_tree_writes_a_commit_without_touching_the_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let (_bare, work) = remote(tmp.path());
    let first = work.head().unwrap().target().unwrap();
    let root = work.workdir().unwrap().to_path_buf();
    std::os::unix::fs::symlink("file.txt", root.join("link")).unwrap();
    let mut index = work.index().unwrap();
    index.add_path(Path::new("link")).unwrap();
    index.write().unwrap();
    let second = commit_file(&work, "dir/new.txt", "two", "second");
    let repo = Repo::discover(&root).unwrap();

    let old = tmp.path().join("old");
    repo.export_tree(first, &old).unwrap();
    assert_eq!(std::fs::read_to_string(old.join("file.txt")).unwrap(), "one");
    assert!(!old.join("dir").exists() && !old.join("link").exists());
    let new = tmp.path().join("new");
    repo.export_tree(second, &new).unwrap();
    assert_eq!(std::fs::read_to_string(new.join("dir/new.txt")).unwrap(), "two");
    assert_eq!(std::fs::read_link(new.join("link")).unwrap(), Path::new("file.txt"));

    assert_eq!(repo.head_commit(), Some(second));
    assert!(repo.dirty_files().unwrap().is_empty(), "{:?}", repo.dirty_files());
    assert!(!old.join(".git").exists());
}

/// A large checkout reports its progress as transient lines, every 10 %; a small one says
/// nothing.
#[test]
fn large_checkouts_report_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (_bare, work) = remote(tmp.path());
    let small = work.head().unwrap().target().unwrap();
    let root = work.workdir().unwrap().to_path_buf();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collect = |repo: &Repo| {
        let sink = lines.clone();
        repo.report_to(Box::new(move |l| sink.lock().unwrap().push(l)));
    };
    let repo = Repo::discover(&root).unwrap();
    collect(&repo);
    repo.export_tree(small, &tmp.path().join("small")).unwrap();
    assert!(lines.lock().unwrap().is_empty(), "{:?}", lines.lock().unwrap());

    let mut index = work.index().unwrap();
    for i in 0..300 {
        let name = format!("many/f{i:03}.txt");
        std::fs::create_dir_all(root.join("many")).unwrap();
        std::fs::write(root.join(&name), format!("{i}")).unwrap();
        index.add_path(Path::new(&name)).unwrap();
    }
    index.write().unwrap();
    let large = commit_file(&work, "last.txt", "x", "many files");
    let repo = Repo::discover(&root).unwrap();
    collect(&repo);
    repo.export_tree(large, &tmp.path().join("large")).unwrap();
    let got = lines.lock().unwrap().clone();
    assert!(got.iter().all(|l| l.starts_with(crate::protocol::TRANSIENT)), "{got:?}");
    assert_eq!(got.len(), 10, "{got:?}");
    assert!(got[0].contains(&format!("writing the files of {large}: 10% (")), "{got:?}");
    assert!(got[9].ends_with(": 100% (302/302 files)"), "{got:?}");
    assert_eq!(std::fs::read_dir(tmp.path().join("large/many")).unwrap().count(), 300);
}

/// Loads running side by side (the engine's and a plan's) fetch and export one package at the
/// same time: each gets the whole, one fetch and one export happen.
#[test]
fn concurrent_fetches_and_exports_of_one_package_are_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, work) = remote(tmp.path());
    for i in 0..50 {
        commit_file(&work, &format!("pkg/f{i}.yaml"), &format!("n: {i}\n"), "more");
    }
    push_main(&work);
    let head = work.head().unwrap().target().unwrap().to_string();
    let cache = tmp.path().join("cache");
    let url = url(&bare);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (cache, url, head) = (cache.clone(), url.clone(), head.clone());
            std::thread::spawn(move || {
                let mut lines = Vec::new();
                let (path, oid) = fetch_commit(&url, "hash", &head, &cache.join("git"), p(&mut |l| lines.push(l)))?;
                let dest = cache.join("exports").join(&head);
                export_commit(&path, oid, &dest)?;
                Ok::<_, RepoError>((lines, dest))
            })
        })
        .collect();
    let mut fetches = 0;
    for t in threads {
        let (lines, dest) = t.join().unwrap().unwrap();
        fetches += lines.iter().filter(|l| l.contains(" for hash ")).count();
        for i in 0..50 {
            assert_eq!(std::fs::read_to_string(dest.join(format!("pkg/f{i}.yaml"))).unwrap(), format!("n: {i}\n"));
        }
    }
    assert_eq!(fetches, 1, "the others found the commit fetched");
}
