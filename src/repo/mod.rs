//! Git repositories: the clone the server manages in dynamic mode, the user's repository in
//! static mode, and the caches of upstream packages.
//!
//! Everything goes through `git2` (libgit2, vendored). Network operations take the URL through
//! git's `url.<base>.insteadOf` rewriting first (so mirrors and offline tests work) and get
//! credentials from ssh-agent, git credential helpers and the user's git configuration — never
//! from anything hard-coded. Nothing here discards work silently: a checkout that would lose
//! uncommitted changes is refused ([`RepoError::Dirty`]), local branches only ever move by
//! fast-forward, and a stash keeps what it takes.
//!
//! Architecture invariant: depends on no other choreo module; it knows git, not projects.

mod upstream;

pub use git2::Oid;
pub use upstream::{export_commit, fetch_commit};

use std::path::{Path, PathBuf};

use git2::{BranchType, Repository};

/// Where a transfer reports its progress, and the flag that stops it: raised (by the server as
/// it stops), a clone or fetch in progress ends at its next progress callback instead of holding
/// the shutdown up for as long as a large clone takes. libgit2 offers no way to interrupt a push.
pub struct Progress<'a> {
    pub report: &'a mut dyn FnMut(String),
    pub cancel: &'a std::sync::atomic::AtomicBool,
}

impl Progress<'_> {
    pub(crate) fn say(&mut self, line: String) {
        (self.report)(line);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The same sink and flag, borrowed again.
    pub(crate) fn again(&mut self) -> Progress<'_> {
        Progress { report: &mut *self.report, cancel: self.cancel }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{} is not inside a git repository", path.display())]
    NotARepo { path: PathBuf },
    #[error("{what}: {}", source.message())]
    Git { what: String, source: git2::Error },
    #[error("unknown ref {reference:?} in {url}: not a branch, tag or commit of the repository")]
    UnknownRef { reference: String, url: String },
    #[error("{} has uncommitted changes ({}); commit them (`choreo run commit MSG`) or stash them (`choreo branch stash`) first", root.display(), list(files))]
    Dirty { root: PathBuf, files: Vec<String> },
    #[error("{0}")]
    Refused(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn list(files: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = files.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if files.len() > SHOWN {
        text.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    text
}

/// Adds what was being done to a git2 error.
trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, RepoError>;
}

impl<T> Context<T> for Result<T, git2::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, RepoError> {
        self.map_err(|source| RepoError::Git { what: what(), source })
    }
}

/// One commit of a branch log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub author: String,
    pub email: String,
    /// Seconds since the epoch and the author's offset in minutes.
    pub time: i64,
    pub offset_minutes: i32,
    pub message: String,
}

/// A local branch and whether it is checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchInfo {
    pub name: String,
    pub checked_out: bool,
}

/// What HEAD points at, to go back to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Branch(String),
    Detached(Oid),
}

/// A repository with a work tree.
pub struct Repo {
    git: Repository,
    root: PathBuf,
    /// Where checkouts report their progress ([`Repo::report_to`]).
    progress: std::cell::RefCell<Option<ProgressSink>>,
}

/// A receiver of progress lines.
pub type ProgressSink = Box<dyn FnMut(String) + Send>;

/// Checkouts of fewer files than this finish too fast to be worth a progress line.
const CHECKOUT_PROGRESS_MIN_FILES: usize = 200;

/// Makes libgit2 fsync the objects, packs, refs and index it writes (it does not by default),
/// so that an acknowledged `run commit`, checkout or fetch survives a power loss like every
/// other acknowledged write. Work-tree files are not affected. Called once at server start.
pub fn enable_fsync() {
    libgit2_sys::init();
    // SAFETY: ENABLE_FSYNC_GITDIR takes one int argument and only sets a global flag.
    let rc = unsafe {
        libgit2_sys::git_libgit2_opts(libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as libc::c_int, 1 as libc::c_int)
    };
    if rc != 0 {
        log::warn!("libgit2 refused to enable fsync ({rc}); git writes are not synced to disk");
    }
}

/// A directory name for a clone of `url`: every character that is not safe in a file name
/// becomes `-` (as upstream does for `/` and `:`).
pub fn cache_name(url: &str) -> String {
    let readable: String = url
        .trim_end_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    // Different URLs can sanitise alike (`group/sub-proj`, `group-sub/proj`): a hash of the
    // exact URL keeps their clones apart.
    let hash = xxhash_rust::xxh3::xxh3_64(url.as_bytes()) as u32;
    format!("{}-{hash:08x}", readable.trim_start_matches(['.', '-']))
}

/// Whether `dir`, a directory named inside a repository, stays inside it (relative, no `..`).
pub fn stays_inside(dir: &str) -> bool {
    !Path::new(dir).is_absolute() && !dir.split('/').any(|c| c == "..")
}

/// `url` rewritten by the longest matching `url.<base>.insteadOf` (or, for pushes,
/// `pushInsteadOf`) of the user's git configuration.
pub fn rewrite_url(url: &str, push: bool) -> String {
    match git2::Config::open_default() {
        Ok(cfg) => rewrite_with(&cfg, url, push),
        Err(_) => url.to_string(),
    }
}

fn rewrite_with(cfg: &git2::Config, url: &str, push: bool) -> String {
    // The (prefix, base) with the longest prefix that `url` starts with.
    let best = |pattern: &str| -> Option<(String, String)> {
        let mut best: Option<(String, String)> = None;
        let Ok(mut entries) = cfg.entries(Some(pattern)) else { return None };
        while let Some(Ok(entry)) = entries.next() {
            let (Some(name), Some(prefix)) = (entry.name(), entry.value()) else { continue };
            // name = url.<base>.insteadof
            let Some(base) = name.strip_prefix("url.").and_then(|rest| rest.rsplit_once('.')).map(|(b, _)| b) else {
                continue;
            };
            if url.starts_with(prefix) && best.as_ref().is_none_or(|(p, _)| prefix.len() > p.len()) {
                best = Some((prefix.to_string(), base.to_string()));
            }
        }
        best
    };
    let found = if push { best(r"^url\..*\.pushinsteadof$") } else { None };
    match found.or_else(|| best(r"^url\..*\.insteadof$")) {
        Some((prefix, base)) => format!("{base}{}", &url[prefix.len()..]),
        None => url.to_string(),
    }
}

/// Callbacks that report transfer progress and answer credential requests.
fn callbacks<'a>(progress: Progress<'a>, what: &'a str) -> git2::RemoteCallbacks<'a> {
    let mut cb = git2::RemoteCallbacks::new();
    let mut last_percent = u32::MAX;
    let Progress { report, cancel } = progress;
    let cancelled = move || cancel.load(std::sync::atomic::Ordering::SeqCst);
    cb.transfer_progress(move |stats| {
        if cancelled() {
            return false;
        }
        if stats.total_objects() > 0 {
            let percent = (stats.received_objects() * 100 / stats.total_objects()) as u32;
            // Report every 10 %, and the end.
            if percent / 10 != last_percent / 10 || (percent == 100 && last_percent != 100) {
                last_percent = percent;
                report(format!(
                    "{}{what}: {percent}% ({}/{} objects, {} KiB)",
                    crate::protocol::TRANSIENT,
                    stats.received_objects(),
                    stats.total_objects(),
                    stats.received_bytes() / 1024
                ));
            }
        }
        true
    });
    cb.sideband_progress(move |_| !cancelled());
    // libgit2 asks again after a refusal: each kind of credential is offered once, then the
    // refusal is reported with what was tried.
    let (mut ssh_tries, mut helper_tries, mut default_tries) = (0, 0, 0);
    cb.credentials(move |url, username, allowed| {
        let user = username.unwrap_or("git");
        let fail = |msg: String| Err(git2::Error::from_str(&msg));
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            ssh_tries += 1;
            if ssh_tries > 1 {
                return fail(format!("{url} refused the keys of ssh-agent for user {user} (is the key loaded? `ssh-add -l`)"));
            }
            return git2::Cred::ssh_key_from_agent(user)
                .or_else(|e| fail(format!("cannot use ssh-agent for {url}: {}", e.message())));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            helper_tries += 1;
            if helper_tries > 1 {
                return fail(format!("{url} refused the credentials of the git credential helper"));
            }
            let helper = git2::Config::open_default().and_then(|cfg| git2::Cred::credential_helper(&cfg, url, username));
            return helper.or_else(|_| {
                fail(format!("no credentials for {url}: configure a git credential helper (`git config --global credential.helper ...`)"))
            });
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(user);
        }
        default_tries += 1;
        if default_tries > 1 {
            return fail(format!("{url} refused the default credentials"));
        }
        git2::Cred::default()
    });
    cb
}

const FETCH_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"];

/// Fetch options for every transfer: progress, credentials, all tags.
fn fetch_options<'a>(progress: Progress<'a>, what: &'a str) -> git2::FetchOptions<'a> {
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(callbacks(progress, what));
    fo.download_tags(git2::AutotagOption::All);
    fo
}

/// Fetches `refspecs` of `url` (rewritten by `insteadOf`) into `git`. Errors name the URL as
/// given, and the one used when a rule rewrote it.
fn fetch_into(
    git: &Repository,
    url: &str,
    refspecs: &[&str],
    prune: bool,
    mut progress: Progress<'_>,
) -> Result<(), RepoError> {
    let actual = rewrite_url(url, false);
    let shown = if actual == url { url.to_string() } else { format!("{url} (as {actual})") };
    let mut remote = git.remote_anonymous(&actual).ctx(|| format!("cannot use remote {shown}"))?;
    let what = format!("fetching {url}");
    let mut fo = fetch_options(progress.again(), &what);
    if prune {
        fo.prune(git2::FetchPrune::On);
    }
    remote.fetch(refspecs, Some(&mut fo), None).ctx(|| format!("cannot fetch {shown}"))
}

/// Where a directory is built before it is renamed into place at `dest`.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

impl Repo {
    /// Opens the repository that contains `path` (searching upwards).
    pub fn discover(path: &Path) -> Result<Repo, RepoError> {
        let git = Repository::discover(path).map_err(|source| match source.code() {
            git2::ErrorCode::NotFound => RepoError::NotARepo { path: path.to_path_buf() },
            // A repository that exists but cannot be opened: say why.
            _ => RepoError::Git { what: format!("cannot open the repository of {}", path.display()), source },
        })?;
        let root = git
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| RepoError::Refused(format!("{} is a bare repository", path.display())))?;
        Ok(Repo { git, root, progress: std::cell::RefCell::new(None) })
    }

    /// Opens `dest` and fetches `url` into it, or clones `url` there when it does not exist.
    /// A failed fetch of an existing clone is a warning (returned), not an error: the clone is
    /// used as it is.
    pub fn clone_or_fetch(
        url: &str,
        dest: &Path,
        mut progress: Progress<'_>,
    ) -> Result<(Repo, Option<String>), RepoError> {
        if dest.join(".git").exists() {
            let repo = Repo::discover(dest)?;
            progress.say(format!("fetching {url}"));
            match fetch_into(&repo.git, url, &FETCH_REFSPECS, true, progress.again()) {
                Ok(()) => Ok((repo, None)),
                Err(_) if progress.cancelled() => {
                    Err(RepoError::Refused(format!("fetching {url} was cancelled: the server is stopping")))
                }
                Err(e) => Ok((
                    repo,
                    Some(format!("cannot fetch {url} ({e}); using the existing clone at {}", dest.display())),
                )),
            }
        } else {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|source| RepoError::Io { path: parent.to_path_buf(), source })?;
            }
            progress.say(format!("cloning {url} into {}", dest.display()));
            // Clone into a temporary sibling and rename, so an interrupted clone leaves nothing
            // that looks like a usable clone.
            let tmp = partial_path(dest);
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|source| RepoError::Io { path: tmp.clone(), source })?;
            }
            let what = format!("cloning {url}");
            let git = git2::build::RepoBuilder::new()
                .fetch_options(fetch_options(progress.again(), &what))
                .clone(&rewrite_url(url, false), &tmp)
                .map_err(|source| {
                    let _ = std::fs::remove_dir_all(&tmp);
                    RepoError::Git { what: format!("cannot clone {url}"), source }
                })?;
            drop(git);
            std::fs::rename(&tmp, dest).map_err(|source| RepoError::Io { path: dest.to_path_buf(), source })?;
            let repo = Repo::discover(dest)?;
            // Remember the URL as given, so later insteadOf changes take effect.
            repo.git.remote_set_url("origin", url).ctx(|| "cannot record the origin URL".into())?;
            // Every remote branch is fetched; the clone's own default branch is not needed.
            Ok((repo, None))
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The tip of local branch `name`.
    fn local_tip(&self, name: &str) -> Option<Oid> {
        self.git.refname_to_id(&format!("refs/heads/{name}")).ok()
    }

    /// The tip of `origin/name` as last fetched.
    fn remote_tip(&self, name: &str) -> Option<Oid> {
        self.git.refname_to_id(&format!("refs/remotes/origin/{name}")).ok()
    }

    /// Whether branch `name` exists locally or on origin.
    pub fn has_branch(&self, name: &str) -> bool {
        self.local_tip(name).is_some() || self.remote_tip(name).is_some()
    }

    /// Whether `commit` is `tip` or one of its ancestors.
    fn reaches(&self, tip: Oid, commit: Oid) -> bool {
        tip == commit || self.git.graph_descendant_of(tip, commit).unwrap_or(false)
    }

    /// The branch HEAD names, even before it has a commit (a fresh `git init`).
    fn head_branch_name(&self) -> Option<String> {
        let head = self.git.find_reference("HEAD").ok()?;
        head.symbolic_target().and_then(|t| t.strip_prefix("refs/heads/")).map(str::to_string)
    }

    /// The URL of `origin`, if any.
    pub fn origin_url(&self) -> Option<String> {
        self.git.find_remote("origin").ok().and_then(|r| r.url().map(str::to_string))
    }

    /// Resolves a branch (of origin first, then local), a tag (annotated too), a full or short
    /// commit hash, or any revision git understands, to a commit.
    pub fn resolve(&self, reference: &str) -> Result<Oid, RepoError> {
        let candidates = [
            format!("refs/remotes/origin/{reference}"),
            format!("refs/tags/{reference}"),
            format!("refs/heads/{reference}"),
            reference.to_string(),
        ];
        for spec in &candidates {
            if let Ok(obj) = self.git.revparse_single(spec) {
                if let Ok(commit) = obj.peel_to_commit() {
                    return Ok(commit.id());
                }
            }
        }
        Err(RepoError::UnknownRef {
            reference: reference.to_string(),
            url: self.origin_url().unwrap_or_else(|| self.root.display().to_string()),
        })
    }

    /// A commit named as git names revisions (`main`, `v1.2`, `HEAD~2`, `origin/main`, a SHA):
    /// what a user of their own repository means by a ref.
    pub fn resolve_rev(&self, rev: &str) -> Result<Oid, RepoError> {
        self.git
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .map_err(|_| RepoError::UnknownRef { reference: rev.to_string(), url: self.root.display().to_string() })
    }

    /// Files with uncommitted changes (modified, added, deleted or untracked, not ignored),
    /// relative to the repository root; choreo's own `.choreo/` directories do not count.
    pub fn dirty_files(&self) -> Result<Vec<String>, RepoError> {
        let mut opts = git2::StatusOptions::new();
        opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false).exclude_submodules(true);
        let statuses =
            self.git.statuses(Some(&mut opts)).ctx(|| format!("cannot read the status of {}", self.root.display()))?;
        let mut files: Vec<String> = statuses
            .iter()
            .filter(|e| e.status() != git2::Status::CURRENT && !e.status().contains(git2::Status::IGNORED))
            .filter_map(|e| e.path().map(str::to_string))
            .filter(|p| !p.split('/').any(|c| c == ".choreo"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Refuses with [`RepoError::Dirty`] when there is uncommitted work.
    pub fn ensure_clean(&self) -> Result<(), RepoError> {
        let files = self.dirty_files()?;
        if files.is_empty() {
            Ok(())
        } else {
            Err(RepoError::Dirty { root: self.root.clone(), files })
        }
    }

    pub fn head(&self) -> Result<Head, RepoError> {
        let head = self.git.head().ctx(|| "cannot read HEAD".into())?;
        if self.git.head_detached().unwrap_or(false) {
            let oid = head.target().ok_or_else(|| RepoError::Refused("HEAD does not point at a commit".into()))?;
            Ok(Head::Detached(oid))
        } else {
            Ok(Head::Branch(head.shorthand().unwrap_or_default().to_string()))
        }
    }

    /// The commit HEAD points at.
    pub fn head_commit(&self) -> Option<Oid> {
        self.git.head().ok().and_then(|h| h.target())
    }

    /// The checked-out branch, if HEAD is not detached.
    pub fn current_branch(&self) -> Option<String> {
        match self.head() {
            Ok(Head::Branch(b)) => Some(b),
            Ok(Head::Detached(_)) => None,
            // An unborn branch: HEAD names it before it has a commit.
            Err(_) => self.head_branch_name(),
        }
    }

    /// Whether a development checkout of `name` would change nothing: HEAD is on it and
    /// origin/`name` has nothing it lacks.
    pub fn is_current_development(&self, name: &str) -> bool {
        if self.current_branch().as_deref() != Some(name) {
            return false;
        }
        match (self.local_tip(name), self.remote_tip(name)) {
            // Equal, ahead or diverged: a checkout would not move the local branch.
            (Some(l), Some(r)) => !self.reaches(r, l) || l == r,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Whether HEAD is detached at `oid`.
    pub fn is_detached_at(&self, oid: Oid) -> bool {
        matches!(self.head(), Ok(Head::Detached(h)) if h == oid)
    }

    /// Goes back to a HEAD recorded earlier (used to undo a context switch that failed).
    pub fn restore(&self, head: &Head) -> Result<(), RepoError> {
        match head {
            Head::Detached(oid) => self.checkout_detached(*oid),
            Head::Branch(b) => self.switch_branch(b, true),
        }
    }

    /// Sends the progress of later checkouts (large ones: a transient line every 10 %) to
    /// `report`.
    pub fn report_to(&self, report: ProgressSink) {
        *self.progress.borrow_mut() = Some(report);
    }

    /// Checkout options that report progress as `what` (see [`Repo::report_to`]).
    fn checkout_builder(&self, what: String) -> git2::build::CheckoutBuilder<'_> {
        let mut cb = git2::build::CheckoutBuilder::new();
        // From 10 % on: the start says nothing the line before it did not.
        let mut last_tenth = 0;
        cb.progress(move |_, done, total| {
            if total < CHECKOUT_PROGRESS_MIN_FILES {
                return;
            }
            let tenth = done * 10 / total;
            if tenth != last_tenth {
                last_tenth = tenth;
                if let Some(report) = self.progress.borrow_mut().as_mut() {
                    report(format!("{}{what}: {}% ({done}/{total} files)", crate::protocol::TRANSIENT, tenth * 10));
                }
            }
        });
        cb
    }

    /// Checks out `oid` with a detached HEAD, replacing the work tree (callers check that it is
    /// clean first).
    pub fn checkout_detached(&self, oid: Oid) -> Result<(), RepoError> {
        let commit = self.git.find_commit(oid).ctx(|| format!("cannot find commit {oid}"))?;
        self.git
            .checkout_tree(commit.as_object(), Some(self.checkout_builder(format!("checking out {oid}")).force()))
            .ctx(|| format!("cannot check out {oid}"))?;
        self.git.set_head_detached(oid).ctx(|| format!("cannot move HEAD to {oid}"))
    }

    /// Writes the files of commit `oid` into `dest` (a new directory), as a checkout would
    /// (symbolic links as links), without touching HEAD, the index or the work tree: what
    /// `plan --ref` loads to preview a context switch.
    pub fn export_tree(&self, oid: Oid, dest: &Path) -> Result<(), RepoError> {
        let commit = self.git.find_commit(oid).ctx(|| format!("cannot find commit {oid}"))?;
        std::fs::create_dir_all(dest).map_err(|source| RepoError::Io { path: dest.to_path_buf(), source })?;
        let mut opts = self.checkout_builder(format!("writing the files of {oid}"));
        opts.target_dir(dest).force().recreate_missing(true).update_index(false);
        self.git.checkout_tree(commit.as_object(), Some(&mut opts)).ctx(|| format!("cannot write the files of {oid}"))
    }

    /// Development checkout: the local branch `name`, tracking `origin/name` when that exists
    /// (fast-forwarded to it when the local branch is behind; local commits are kept), else
    /// created at `reference`. Returns a note for the user when something needs attention, and
    /// whether the local branch was created (so a failed switch can remove it again).
    pub fn checkout_development(&self, name: &str, reference: &str) -> Result<(Option<String>, bool), RepoError> {
        let (local, remote) = (self.local_tip(name), self.remote_tip(name));
        let mut note = None;
        let created = local.is_none();
        match (local, remote) {
            (None, Some(r)) => {
                let commit = self.git.find_commit(r).ctx(|| format!("cannot find commit {r}"))?;
                let mut b = self.git.branch(name, &commit, false).ctx(|| format!("cannot create branch {name}"))?;
                b.set_upstream(Some(&format!("origin/{name}"))).ctx(|| format!("cannot track origin/{name}"))?;
            }
            (None, None) => {
                let oid = self.resolve(reference)?;
                let commit = self.git.find_commit(oid).ctx(|| format!("cannot find commit {oid}"))?;
                self.git.branch(name, &commit, false).ctx(|| format!("cannot create branch {name}"))?;
                // Pushing creates origin/<name>; record where it goes now.
                let mut cfg = self.git.config().ctx(|| "cannot open the repository configuration".into())?;
                cfg.set_str(&format!("branch.{name}.remote"), "origin")
                    .ctx(|| "cannot set the branch remote".into())?;
                cfg.set_str(&format!("branch.{name}.merge"), &format!("refs/heads/{name}"))
                    .ctx(|| "cannot set the branch upstream".into())?;
            }
            (Some(l), Some(r)) if l != r => {
                if self.reaches(r, l) {
                    self.git
                        .reference(&format!("refs/heads/{name}"), r, true, "choreo: fast-forward to origin")
                        .ctx(|| format!("cannot fast-forward {name}"))?;
                } else if self.reaches(l, r) {
                    note = Some(format!("branch {name} has local commits that origin/{name} does not have; push them with `choreo run push`"));
                } else {
                    note = Some(format!(
                        "branch {name} and origin/{name} have diverged; the local branch is kept as it is (merge them with git)"
                    ));
                }
            }
            (Some(_), _) => {}
        }
        if let Err(e) = self.switch_branch(name, true) {
            if created {
                let _ = self.delete_branch(name, true);
            }
            return Err(e);
        }
        Ok((note, created))
    }

    /// Checks out the existing local branch `name`. With `replace` the work tree is replaced
    /// (callers made sure it is clean); otherwise local changes are kept and a conflicting
    /// checkout is refused.
    pub fn switch_branch(&self, name: &str, replace: bool) -> Result<(), RepoError> {
        let refname = format!("refs/heads/{name}");
        let oid = self.branch_tip(name)?;
        let commit = self.git.find_commit(oid).ctx(|| format!("cannot find commit {oid}"))?;
        let mut cb = self.checkout_builder(format!("checking out {name}"));
        if replace {
            cb.force();
        } else {
            cb.safe();
        }
        self.git.checkout_tree(commit.as_object(), Some(&mut cb)).ctx(|| format!("cannot check out branch {name}"))?;
        self.git.set_head(&refname).ctx(|| format!("cannot move HEAD to {name}"))
    }

    pub fn branches(&self) -> Result<Vec<BranchInfo>, RepoError> {
        let mut out = Vec::new();
        for b in self.git.branches(Some(BranchType::Local)).ctx(|| "cannot list branches".into())? {
            let (b, _) = b.ctx(|| "cannot read a branch".into())?;
            let name = b.name().ok().flatten().unwrap_or_default().to_string();
            out.push(BranchInfo { name, checked_out: b.is_head() });
        }
        // An unborn branch (a new repository) has no ref yet but is what HEAD names.
        if let Some(name) = self.head_branch_name() {
            if !out.iter().any(|b| b.name == name) {
                out.push(BranchInfo { name, checked_out: true });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn branch_tip(&self, name: &str) -> Result<Oid, RepoError> {
        self.local_tip(name).ok_or_else(|| RepoError::Refused(format!("branch {name} does not exist")))
    }

    /// The commits reachable from branch `name`, newest first.
    pub fn log(&self, name: &str, limit: usize) -> Result<Vec<CommitInfo>, RepoError> {
        let tip = self.branch_tip(name)?;
        let mut walk = self.git.revwalk().ctx(|| "cannot walk the history".into())?;
        walk.push(tip).ctx(|| "cannot walk the history".into())?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME).ctx(|| "cannot walk the history".into())?;
        let mut out = Vec::new();
        for oid in walk.take(limit) {
            let oid = oid.ctx(|| "cannot walk the history".into())?;
            let c = self.git.find_commit(oid).ctx(|| format!("cannot read commit {oid}"))?;
            let author = c.author();
            out.push(CommitInfo {
                id: oid.to_string(),
                author: author.name().unwrap_or_default().to_string(),
                email: author.email().unwrap_or_default().to_string(),
                time: author.when().seconds(),
                offset_minutes: author.when().offset_minutes(),
                message: c.message().unwrap_or_default().trim_end().to_string(),
            });
        }
        Ok(out)
    }

    /// Creates branch `name` at HEAD without checking it out.
    pub fn create_branch(&self, name: &str) -> Result<(), RepoError> {
        if self.local_tip(name).is_some() {
            return Err(RepoError::Refused(format!("branch {name} already exists")));
        }
        let head =
            self.head_commit().ok_or_else(|| RepoError::Refused("HEAD has no commit yet; commit first".into()))?;
        let commit = self.git.find_commit(head).ctx(|| format!("cannot find commit {head}"))?;
        self.git.branch(name, &commit, false).ctx(|| format!("cannot create branch {name}"))?;
        Ok(())
    }

    /// Deletes branch `name`. The checked-out branch is never deleted; a branch with commits
    /// that neither HEAD nor its upstream has is deleted only with `force`.
    pub fn delete_branch(&self, name: &str, force: bool) -> Result<(), RepoError> {
        let mut b = self
            .git
            .find_branch(name, BranchType::Local)
            .map_err(|_| RepoError::Refused(format!("branch {name} does not exist")))?;
        if b.is_head() {
            return Err(RepoError::Refused(format!("cannot delete branch {name}: it is checked out")));
        }
        let tip = b.get().target().ok_or_else(|| RepoError::Refused(format!("branch {name} has no commit")))?;
        if !force {
            let mut homes = vec![self.head_commit()];
            homes.push(b.upstream().ok().and_then(|u| u.get().target()));
            let merged = homes.into_iter().flatten().any(|h| self.reaches(h, tip));
            if !merged {
                return Err(RepoError::Refused(format!(
                    "branch {name} has commits that are not merged into HEAD or its upstream; delete it with --force to lose them"
                )));
            }
        }
        b.delete().ctx(|| format!("cannot delete branch {name}"))
    }

    /// What differs between the tips of two branches within `within` (relative to the
    /// repository root; empty = everything): (symbol `+ - ~`, path).
    pub fn diff(&self, src: &str, dst: &str, within: &Path) -> Result<Vec<(char, String)>, RepoError> {
        let tree = |name: &str| -> Result<git2::Tree<'_>, RepoError> {
            let oid = match self.branch_tip(name) {
                Ok(o) => o,
                Err(_) => self.resolve(name)?,
            };
            self.git.find_commit(oid).and_then(|c| c.tree()).ctx(|| format!("cannot read the tree of {name}"))
        };
        let (a, b) = (tree(src)?, tree(dst)?);
        let mut opts = git2::DiffOptions::new();
        if !within.as_os_str().is_empty() {
            opts.pathspec(within);
        }
        let diff = self
            .git
            .diff_tree_to_tree(Some(&a), Some(&b), Some(&mut opts))
            .ctx(|| format!("cannot diff {src} and {dst}"))?;
        let mut out = Vec::new();
        for d in diff.deltas() {
            let symbol = match d.status() {
                git2::Delta::Added | git2::Delta::Copied => '+',
                git2::Delta::Deleted => '-',
                _ => '~',
            };
            let path = d.new_file().path().or(d.old_file().path()).map(|p| p.display().to_string()).unwrap_or_default();
            out.push((symbol, path));
        }
        out.sort_by(|x, y| x.1.cmp(&y.1));
        Ok(out)
    }

    /// Stashes the uncommitted work (untracked files included); `git stash pop` brings it back.
    pub fn stash(&mut self, message: &str) -> Result<Oid, RepoError> {
        if self.dirty_files()?.is_empty() {
            return Err(RepoError::Refused("nothing to stash: the work tree is clean".into()));
        }
        let sig = self.signature()?;
        self.git
            .stash_save(&sig, message, Some(git2::StashFlags::INCLUDE_UNTRACKED))
            .ctx(|| "cannot stash the changes".into())
    }

    /// Fast-forwards branch `dst` to `src`; refuses anything else.
    pub fn merge(&self, src: &str, dst: &str) -> Result<String, RepoError> {
        let from = match self.branch_tip(src) {
            Ok(o) => o,
            Err(_) => self.resolve(src)?,
        };
        let to = self.branch_tip(dst)?;
        if self.reaches(to, from) {
            return Ok(format!("{dst} is already up to date with {src}"));
        }
        if !self.reaches(from, to) {
            return Err(RepoError::Refused(format!(
                "cannot merge {src} into {dst}: not a fast-forward ({dst} has commits {src} lacks); merge them with git"
            )));
        }
        let is_head = self.current_branch().as_deref() == Some(dst);
        if is_head {
            // Move the work tree first: a conflict with local changes refuses before any ref moves.
            let commit = self.git.find_commit(from).ctx(|| format!("cannot find commit {from}"))?;
            self.git
                .checkout_tree(commit.as_object(), Some(git2::build::CheckoutBuilder::new().safe()))
                .ctx(|| format!("cannot update the work tree to {src}"))?;
        }
        self.git
            .reference(&format!("refs/heads/{dst}"), from, true, &format!("choreo: fast-forward {dst} to {src}"))
            .ctx(|| format!("cannot move {dst}"))?;
        Ok(format!("{dst} fast-forwarded to {src} ({})", &from.to_string()[..12]))
    }

    fn signature(&self) -> Result<git2::Signature<'static>, RepoError> {
        match self.git.signature() {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                git2::Signature::now("choreo", "choreo@localhost").ctx(|| "cannot make a commit signature".into())
            }
        }
    }

    /// Stages everything under `paths` (relative to the repository root; deletions too) and
    /// commits it on the checked-out branch. `Ok(None)`: nothing to commit.
    pub fn commit(&self, paths: &[PathBuf], message: &str) -> Result<Option<Oid>, RepoError> {
        let branch = self
            .current_branch()
            .ok_or_else(|| RepoError::Refused("HEAD is detached: check out a branch before committing".into()))?;
        let mut index = self.git.index().ctx(|| "cannot open the index".into())?;
        let specs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        index
            .add_all(specs.iter(), git2::IndexAddOption::DEFAULT, None)
            .ctx(|| "cannot stage the project files".into())?;
        index.update_all(specs.iter(), None).ctx(|| "cannot stage removed files".into())?;
        index.write().ctx(|| "cannot write the index".into())?;
        let tree_id = index.write_tree().ctx(|| "cannot write the tree".into())?;
        let parent = match self.head_commit() {
            Some(oid) => Some(self.git.find_commit(oid).ctx(|| format!("cannot find commit {oid}"))?),
            None => None,
        };
        if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
            return Ok(None);
        }
        let tree = self.git.find_tree(tree_id).ctx(|| "cannot read the tree".into())?;
        let sig = self.signature()?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let oid = self
            .git
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .ctx(|| format!("cannot commit on {branch}"))?;
        Ok(Some(oid))
    }

    /// Pushes the checked-out branch to its remote (origin by default) under the same name.
    pub fn push(&self, mut progress: Progress<'_>) -> Result<String, RepoError> {
        let branch = self
            .current_branch()
            .ok_or_else(|| RepoError::Refused("HEAD is detached: there is no branch to push".into()))?;
        let refname = format!("refs/heads/{branch}");
        let remote_name = self
            .git
            .branch_upstream_remote(&refname)
            .ok()
            .and_then(|b| b.as_str().map(str::to_string))
            .unwrap_or_else(|| "origin".to_string());
        let url = self
            .git
            .find_remote(&remote_name)
            .ok()
            .and_then(|r| r.pushurl().or(r.url()).map(str::to_string))
            .ok_or_else(|| RepoError::Refused(format!("the repository has no remote {remote_name} to push to")))?;
        let actual = rewrite_url(&url, true);
        let mut remote = self.git.remote_anonymous(&actual).ctx(|| format!("cannot use remote {url}"))?;
        let what = format!("pushing {branch} to {url}");
        progress.say(what.clone());
        let mut rejected: Option<String> = None;
        {
            let mut cb = callbacks(progress.again(), &what);
            cb.push_update_reference(|name, status| {
                if let Some(s) = status {
                    rejected = Some(format!("{name}: {s}"));
                }
                Ok(())
            });
            let mut po = git2::PushOptions::new();
            po.remote_callbacks(cb);
            remote
                .push(&[format!("{refname}:{refname}")], Some(&mut po))
                .ctx(|| format!("cannot push {branch} to {url}"))?;
        }
        if let Some(r) = rejected {
            return Err(RepoError::Refused(format!("the remote rejected the push of {branch}: {r}")));
        }
        let tip = self.branch_tip(&branch)?;
        self.git
            .reference(&format!("refs/remotes/{remote_name}/{branch}"), tip, true, "choreo: push")
            .ctx(|| "cannot record the pushed branch".into())?;
        let mut cfg = self.git.config().ctx(|| "cannot open the repository configuration".into())?;
        if cfg.get_string(&format!("branch.{branch}.remote")).is_err() {
            cfg.set_str(&format!("branch.{branch}.remote"), &remote_name)
                .ctx(|| "cannot set the branch remote".into())?;
            cfg.set_str(&format!("branch.{branch}.merge"), &refname).ctx(|| "cannot set the branch upstream".into())?;
        }
        Ok(format!("pushed {branch} ({}) to {url}", &tip.to_string()[..12]))
    }
}

#[cfg(test)]
mod tests;
