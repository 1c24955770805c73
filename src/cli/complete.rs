//! Shell completion, dynamic: the shell asks `choreo` itself at each TAB (clap_complete's
//! `COMPLETE=$SHELL` protocol), so resource types and object names come from the server that
//! the command line would talk to (`--socket`, `$CHOREO_SOCKET`, the nearest project).
//!
//! `choreo completion bash` (or `COMPLETE=bash choreo`) prints the registration; sourcing it
//! once is enough, the candidates are never stale. The words typed so far tell which verb,
//! resource and namespace a name is completed for.
//!
//! Invariant: completing never prints an error nor waits long — a server that is down, slow,
//! stuck or refusing gives no candidates, after [`ASK_TIMEOUT`] at most (each question to the
//! server runs on its own thread and is abandoned at the deadline, connect included).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

use super::{Cli, Client};
use crate::protocol::{GetRequest, Reply, Request};

/// How long a completion waits for the server.
const ASK_TIMEOUT: Duration = Duration::from_millis(1500);

/// Answers a completion request and exits when the shell is asking (`COMPLETE` is set);
/// returns otherwise. Called first thing in `main`.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
}

/// The registration script for `shell`, as `COMPLETE=shell choreo` prints it.
pub(super) fn registration(shell: clap_complete::Shell) -> Result<String, super::CliError> {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let completer =
        shells.completer(&name).ok_or_else(|| super::CliError::Usage(format!("no dynamic completion for {name}")))?;
    let mut buf = Vec::new();
    completer
        .write_registration("COMPLETE", "choreo", "choreo", "choreo", &mut buf)
        .map_err(|e| super::CliError::Failed(format!("cannot write the completion script: {e}")))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Completes RESOURCE, NAME or RESOURCE/NAME, from the words before the cursor.
pub(super) fn objects() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let line = Line::from_env();
        let current = current.to_string_lossy();
        match (line.positionals.as_slice(), current.split_once('/')) {
            ([], Some((resource, prefix))) => {
                names(&line, resource, prefix).into_iter().map(|c| c.add_prefix(format!("{resource}/"))).collect()
            }
            ([], None) => resources(&line, &current),
            ([resource, ..], _) => names(&line, resource, &current),
        }
    })
}

/// Completes `explain`'s RESOURCE[.field.path]: a resource type, then, after a dot, the fields
/// of its CRD's schema (`devices.spec.int` → `devices.spec.interfaces`).
pub(super) fn explain_targets() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let line = Line::from_env();
        let current = current.to_string_lossy();
        match current.contains('.').then(|| fields(&line, &current)).flatten() {
            Some(found) => found,
            None => resources(&line, &current),
        }
    })
}

/// The fields completing `current` (RESOURCE.path.partial), from the schema of the CRD of the
/// longest leading RESOURCE the server knows; `None` when no prefix names a CRD-backed type.
fn fields(line: &Line, current: &str) -> Option<Vec<CompletionCandidate>> {
    let list = api_resources(line)?;
    let segments: Vec<&str> = current.split('.').collect();
    let (n, res) = (1..segments.len()).rev().find_map(|n| {
        let prefix = segments[..n].join(".");
        let res = list.iter().find(|r| {
            r.resource == prefix
                || r.kind.eq_ignore_ascii_case(&prefix)
                || r.short_names.contains(&prefix)
                || format!("{}.{}", r.resource, r.group) == prefix
        })?;
        Some((n, res.clone()))
    })?;
    let req = GetRequest {
        resource: "customresourcedefinitions".into(),
        name: Some(format!("{}.{}", res.resource, res.group)),
        namespace: None,
        show_managed_fields: false,
        label_selector: None,
        field_selector: None,
    };
    let Reply::Object(text) = ask(line, Request::Get(req))? else { return None };
    let crd: serde_json::Value = serde_json::from_str(&text).ok()?;
    let version = crd.pointer("/spec/versions")?.as_array()?.iter().find(|v| v["name"] == res.version.as_str())?;
    let (path, partial) = (&segments[n..segments.len() - 1], segments[segments.len() - 1]);
    let mut schema = version.pointer("/schema/openAPIV3Schema")?;
    for field in path {
        schema = properties(schema)?.get(*field)?;
    }
    let typed = segments[..segments.len() - 1].join(".");
    let props = properties(schema)?;
    Some(
        props
            .keys()
            .filter(|k| k.starts_with(partial))
            .map(|k| CompletionCandidate::new(format!("{typed}.{k}")))
            .collect(),
    )
}

/// Completes `-n`: the namespaces of the objects of the resource typed so far.
pub(super) fn namespaces() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| {
        let line = Line::from_env();
        let Some(resource) = line.positionals.first() else { return Vec::new() };
        let resource = resource.split('/').next().unwrap_or_default();
        let mut seen: Vec<String> = list(&line, resource, None).into_iter().filter_map(|(ns, _)| ns).collect();
        seen.sort();
        seen.dedup();
        let current = current.to_string_lossy();
        seen.into_iter().filter(|ns| ns.starts_with(current.as_ref())).map(CompletionCandidate::new).collect()
    })
}

/// What was typed before the word being completed.
#[derive(Debug, Default, Clone, PartialEq)]
struct Line {
    socket: Option<PathBuf>,
    namespace: Option<String>,
    /// The positional words after the verb.
    positionals: Vec<String>,
}

impl Line {
    /// The words the shell passed (after `--`), up to the one being completed.
    fn from_env() -> Line {
        let args: Vec<OsString> = std::env::args_os().collect();
        let words: Vec<String> = match args.iter().position(|a| a == "--") {
            Some(i) => args[i + 1..].iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            None => return Line::default(),
        };
        // bash, zsh and elvish say which word is being completed; fish passes the words up
        // to the cursor, then the current one.
        let index = std::env::var("_CLAP_COMPLETE_INDEX").ok().and_then(|i| i.parse().ok());
        let before = index.unwrap_or(words.len().saturating_sub(1)).min(words.len());
        Line::parse(words.get(1..before).unwrap_or_default())
    }

    /// Reads flags the way clap would (which ones take a value comes from the command
    /// definition), keeping the socket, the namespace and the words after the verb.
    fn parse(words: &[String]) -> Line {
        let words = rejoin(words);
        let root = Cli::command();
        let mut cmd = &root;
        let mut line = Line::default();
        let mut i = 0;
        while i < words.len() {
            let word = &words[i];
            i += 1;
            if word == "--" {
                line.positionals.extend(words[i..].iter().cloned());
                break;
            }
            if let Some(flag) = word.strip_prefix("--") {
                let (name, inline) = match flag.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (flag, None),
                };
                let takes = takes_value(&root, cmd, |a| a.get_long() == Some(name));
                let value = match (inline, takes) {
                    (Some(v), _) => Some(v),
                    (None, true) => words.get(i).inspect(|_| i += 1).cloned(),
                    (None, false) => None,
                };
                match (name, value) {
                    ("socket", Some(v)) => line.socket = Some(PathBuf::from(v)),
                    ("namespace", Some(v)) => line.namespace = Some(v),
                    _ => {}
                }
                continue;
            }
            if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
                // `-Aw`, `-n lab`, `-nlab`: the first short that takes a value ends the group.
                for (at, c) in shorts.char_indices() {
                    if takes_value(&root, cmd, |a| a.get_short() == Some(c)) {
                        let rest = &shorts[at + c.len_utf8()..];
                        let value =
                            if rest.is_empty() { words.get(i).inspect(|_| i += 1).cloned() } else { Some(rest.into()) };
                        if c == 'n' {
                            line.namespace = value;
                        }
                        break;
                    }
                }
                continue;
            }
            match cmd.find_subcommand(word) {
                Some(sub) => cmd = sub,
                None => line.positionals.push(word.clone()),
            }
        }
        line
    }

    fn client(&self) -> Option<Client> {
        let socket = super::client_socket(self.socket.as_deref());
        Client::connect_timeout(&socket, ASK_TIMEOUT).ok()
    }
}

/// bash splits the words at `=` and `:` (its COMP_WORDBREAKS): `--namespace=core` arrives as
/// `--namespace`, `=`, `core`. Those pieces are joined again.
fn rejoin(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut glue = false;
    for w in words {
        // A separator joins the word before it, and the word after it joins them.
        let separator = w == "=" || w == ":";
        match out.last_mut() {
            Some(last) if separator || glue => last.push_str(w),
            _ => out.push(w.clone()),
        }
        glue = separator;
    }
    out
}

/// Runs `ask` on its own thread and gives up at [`ASK_TIMEOUT`]: a connect to a server whose
/// backlog is full blocks without a bound, and each read has its own timeout.
fn within<T: Send + 'static>(ask: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("choreo-complete".into())
        .spawn(move || {
            let _ = tx.send(ask());
        })
        .ok()?;
    // An abandoned thread ends with the process, which exits right after answering the shell.
    rx.recv_timeout(ASK_TIMEOUT).ok()
}

/// Whether the option of `cmd` (or a global one) that `is` finds takes a value.
fn takes_value(root: &clap::Command, cmd: &clap::Command, is: impl Fn(&clap::Arg) -> bool) -> bool {
    cmd.get_arguments().chain(root.get_arguments()).find(|a| is(a)).is_some_and(|a| a.get_action().takes_values())
}

/// Resource types starting with `prefix`: plural names (as kubectl completes them), with the
/// kind as help.
fn resources(line: &Line, prefix: &str) -> Vec<CompletionCandidate> {
    let Some(list) = api_resources(line) else { return Vec::new() };
    let mut out: Vec<(String, String)> = list
        .into_iter()
        .filter(|r| r.resource.starts_with(prefix))
        .map(|r| (r.resource, format!("{} ({})", r.kind, r.group)))
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out.into_iter().map(|(name, help)| CompletionCandidate::new(name).help(Some(help.into()))).collect()
}

/// The fields of a schema (of its items, for a list).
fn properties(mut schema: &serde_json::Value) -> Option<&serde_json::Map<String, serde_json::Value>> {
    while schema.get("properties").is_none() {
        schema = schema.get("items")?;
    }
    schema.get("properties")?.as_object()
}

/// The server's answer to `request`, if it answers in time ([`within`]).
fn ask(line: &Line, request: Request) -> Option<Reply> {
    let line = line.clone();
    within(move || line.client()?.request(request, &mut |_| {}).ok()).flatten()
}

/// The server's resource types.
fn api_resources(line: &Line) -> Option<Vec<crate::protocol::ApiResourceInfo>> {
    match ask(line, Request::ApiResources)? {
        Reply::ApiResources(list) => Some(list),
        _ => None,
    }
}

/// Names of `resource`'s objects starting with `prefix`, in the namespace given with `-n`
/// (every namespace without it).
fn names(line: &Line, resource: &str, prefix: &str) -> Vec<CompletionCandidate> {
    let mut found: Vec<(String, Option<String>)> = list(line, resource, line.namespace.clone())
        .into_iter()
        .filter(|(_, name)| name.starts_with(prefix))
        .map(|(ns, name)| (name, ns))
        .collect();
    found.sort();
    found.dedup_by(|a, b| a.0 == b.0);
    found.into_iter().map(|(name, ns)| CompletionCandidate::new(name).help(ns.map(Into::into))).collect()
}

/// (namespace, name) of the objects of `resource`.
fn list(line: &Line, resource: &str, namespace: Option<String>) -> Vec<(Option<String>, String)> {
    let req = GetRequest {
        resource: resource.to_string(),
        name: None,
        namespace,
        show_managed_fields: false,
        label_selector: None,
        field_selector: None,
    };
    let Some(Reply::List { items, .. }) = ask(line, Request::Get(req)) else { return Vec::new() };
    items
        .iter()
        .filter_map(|text| {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            let name = v.pointer("/metadata/name")?.as_str()?.to_string();
            let ns = v.pointer("/metadata/namespace").and_then(|n| n.as_str()).map(str::to_string);
            Some((ns, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &str) -> Line {
        Line::parse(&words.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn the_words_before_the_cursor_say_what_to_complete() {
        assert_eq!(parse("get"), Line::default());
        assert_eq!(parse("get devices").positionals, ["devices"]);
        let l = parse("--socket /tmp/s.sock get -n lab -o wide devices");
        assert_eq!(l.socket.as_deref(), Some(std::path::Path::new("/tmp/s.sock")));
        assert_eq!(l.namespace.as_deref(), Some("lab"));
        assert_eq!(l.positionals, ["devices"]);
        let l = parse("describe -nlab --namespace=core devices");
        assert_eq!((l.namespace.as_deref(), l.positionals.as_slice()), (Some("core"), &["devices".to_string()][..]));
        // Flags without a value do not swallow the next word; -A then -l's value does.
        assert_eq!(parse("get -A --show-labels devices").positionals, ["devices"]);
        assert_eq!(parse("get -Al role=leaf devices").positionals, ["devices"]);
        assert_eq!(parse("wait --for condition=Ready devices").positionals, ["devices"]);
        assert_eq!(parse("delete --dry-run devices").positionals, ["devices"]);
        assert_eq!(parse("get -- -odd").positionals, ["-odd"]);
        // As bash splits them at `=` and `:`.
        let l = parse("get --namespace = core -l role = leaf --socket = /tmp/a : b devices");
        assert_eq!(l.namespace.as_deref(), Some("core"));
        assert_eq!(l.socket.as_deref(), Some(std::path::Path::new("/tmp/a:b")));
        assert_eq!(l.positionals, ["devices"]);
    }
}
