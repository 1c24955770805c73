//! `get -w`: the objects of one kind, then every committed change to them, streamed to the
//! client on its connection's thread — never through the engine, which only publishes.
//!
//! The subscription is taken before the list is read, so no change falls between them (a change
//! may show twice: in the list and as an event). A watcher whose queue of changes fills up (a
//! slow client) is told it fell behind and ends; the engine never waits for it.
//!
//! Invariant: reads only.

use crate::api::object::GroupKind;
use crate::protocol::{ErrorKind, ErrorReport, GetRequest, Reply, ServerMessage, WaitFor, WaitRequest, WatchEvent};
use crate::store::{watchers, EventType, Reader};

use super::query::{resolve_error, without_managed_fields, Selection};

/// How often a watch or wait asks whether to stop (the server stopping, the client gone), busy
/// or idle.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// When the stop check is next due: at most every [`CHECK_EVERY`], however many changes pass.
struct StopChecks {
    next: std::time::Instant,
}

impl Default for StopChecks {
    fn default() -> Self {
        StopChecks { next: std::time::Instant::now() + CHECK_EVERY }
    }
}

impl StopChecks {
    fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if now < self.next {
            return false;
        }
        self.next = now + CHECK_EVERY;
        true
    }
}

/// Streams until the client goes (`emit` false), the server stops (`stopping`), or the watcher
/// falls behind; returns the final message to send, if any.
pub(super) fn watch(
    reader: &Reader,
    req: &GetRequest,
    emit: &mut dyn FnMut(ServerMessage) -> bool,
    stopping: &dyn Fn() -> bool,
) -> Option<ServerMessage> {
    let selection = match Selection::of(req) {
        Ok(s) => s,
        Err(e) => return Some(ServerMessage::Error(e)),
    };
    let res = match reader.with(|s| s.registry.resolve(&req.resource)) {
        Ok(r) => r,
        Err(e) => return Some(ServerMessage::Error(resolve_error(e))),
    };
    let gk = GroupKind::new(res.group.clone(), res.kind.clone());
    let namespace = if res.namespaced { req.namespace.clone() } else { None };
    let sub = reader.watch(gk.clone(), namespace.clone());
    let wanted = |v: &serde_json::Value| {
        req.name.as_deref().is_none_or(|n| crate::api::object::name(v) == Some(n)) && selection.matches(v)
    };
    let text = |v: &serde_json::Value| {
        if req.show_managed_fields {
            v.to_string()
        } else {
            without_managed_fields(v).to_string()
        }
    };
    for stored in reader.with(|s| s.list_stored(&gk, namespace.as_deref())) {
        let v = stored.value();
        if wanted(&v) && !emit(ServerMessage::Event(WatchEvent { kind: "ADDED".into(), object: text(&v) })) {
            return None;
        }
    }
    let mut checks = StopChecks::default();
    loop {
        if checks.due() && stopping() {
            return Some(ServerMessage::Reply(Reply::Done));
        }
        match sub.events.recv_timeout(CHECK_EVERY) {
            Ok(item) => {
                let Some(stored) = item.object else { continue };
                let v = stored.value();
                if !wanted(&v) {
                    continue;
                }
                let kind = match item.kind {
                    EventType::Added => "ADDED",
                    EventType::Modified => "MODIFIED",
                    EventType::Deleted => "DELETED",
                };
                if !emit(ServerMessage::Event(WatchEvent { kind: kind.into(), object: text(&v) })) {
                    return None;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Some(if sub.fell_behind() {
                    ServerMessage::Error(
                        ErrorReport::new(
                            ErrorKind::Unavailable,
                            format!("the watch fell behind: more than {} changes were waiting for it", watchers::QUEUE),
                        )
                        .with_hint("watch again (a narrower selector or namespace sends fewer changes)"),
                    )
                } else {
                    ServerMessage::Reply(Reply::Done)
                });
            }
        }
    }
}

/// Whether `obj` (`None`: gone) meets `until`.
fn met(until: &WaitFor, obj: Option<&serde_json::Value>, path: Option<&crate::api::jsonpath::Template>) -> bool {
    match (until, obj) {
        (WaitFor::Delete, o) => o.is_none(),
        (_, None) => false,
        (WaitFor::Condition { type_, status }, Some(o)) => {
            crate::api::object::condition_status(o, type_).is_some_and(|s| s.eq_ignore_ascii_case(status))
        }
        (WaitFor::JsonPath { value, .. }, Some(o)) => {
            let got = path.map(|t| t.column(o)).unwrap_or_default();
            match value {
                Some(v) => &got == v,
                None => !got.is_empty(),
            }
        }
    }
}

/// `wait`: looks at the object now, then at each committed change of it, until it meets the
/// condition (a reply naming it), the timeout passes or the server stops (errors).
pub(super) fn wait(reader: &Reader, req: &WaitRequest, stopping: &dyn Fn() -> bool) -> ServerMessage {
    let t = &req.target;
    let Some(name) = t.name.clone() else {
        return ServerMessage::Error(ErrorReport::new(ErrorKind::Invalid, "wait needs an object name"));
    };
    let res = match reader.with(|s| s.registry.resolve(&t.resource)) {
        Ok(r) => r,
        Err(e) => return ServerMessage::Error(resolve_error(e)),
    };
    let path = match &req.until {
        WaitFor::JsonPath { path, .. } => match crate::api::jsonpath::Template::parse(path) {
            Ok(p) => Some(p),
            Err(m) => return ServerMessage::Error(ErrorReport::new(ErrorKind::Invalid, m)),
        },
        _ => None,
    };
    let gk = GroupKind::new(res.group.clone(), res.kind.clone());
    let ns = if res.namespaced { t.namespace.clone().unwrap_or_else(|| "default".into()) } else { String::new() };
    let key = crate::api::object::ObjectKey::new(&gk, &ns, &name);
    let shown = format!("{}.{}/{}", res.kind.to_lowercase(), res.group, name);
    // Subscribed first: a change between the look and the subscription is not missed.
    let sub = reader.watch(gk, res.namespaced.then(|| ns.clone()));
    let now = reader.with(|s| s.objects.get(&key).map(|o| o.value()));
    if now.is_none() && req.until != WaitFor::Delete {
        return ServerMessage::Error(ErrorReport::new(ErrorKind::NotFound, format!("{key}: not found")));
    }
    if met(&req.until, now.as_deref(), path.as_ref()) {
        return ServerMessage::Reply(Reply::Message(format!("{shown} condition met")));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(req.timeout_secs);
    let mut checks = StopChecks::default();
    loop {
        if checks.due() && stopping() {
            return ServerMessage::Error(ErrorReport::new(ErrorKind::Unavailable, "the server is stopping"));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return ServerMessage::Error(ErrorReport::new(
                ErrorKind::Unavailable,
                format!("timed out after {}s waiting for {shown}", req.timeout_secs),
            ));
        }
        match sub.events.recv_timeout(left.min(CHECK_EVERY)) {
            Ok(item) if item.key == key => {
                let obj = match item.kind {
                    EventType::Deleted => None,
                    _ => item.object.map(|o| o.value()),
                };
                if met(&req.until, obj.as_deref(), path.as_ref()) {
                    return ServerMessage::Reply(Reply::Message(format!("{shown} condition met")));
                }
            }
            Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return ServerMessage::Error(ErrorReport::new(
                    ErrorKind::Unavailable,
                    "the wait fell behind; wait again",
                ))
            }
        }
    }
}
