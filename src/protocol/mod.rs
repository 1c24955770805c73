//! The wire protocol between the `choreo` CLI and the server.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of bincode (standard
//! configuration). A connection starts with [`ClientMessage::Hello`] carrying
//! [`PROTOCOL_VERSION`]; the server answers with its own hello or an error, then serves
//! [`Request`]s one at a time. Each request gets zero or more [`ServerMessage::Progress`] frames
//! and exactly one final frame ([`ServerMessage::Reply`] or [`ServerMessage::Error`]).
//!
//! bincode is not self-describing, so KRM objects never travel as `serde_json::Value`: they are
//! JSON text inside the fixed-shape records defined here. Frames above [`MAX_FRAME_LEN`] are
//! refused before their body is read. Architecture invariant: this module depends on no other
//! choreo module; changing any type here means bumping [`PROTOCOL_VERSION`].

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version both ends must speak; bumped on any change to the types below.
pub const PROTOCOL_VERSION: u32 = 2;
/// The largest frame either end accepts (64 MiB).
pub const MAX_FRAME_LEN: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// What a client sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientMessage {
    Hello { protocol: u32, client_version: String },
    Request(Request),
}

/// What the server sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerMessage {
    Hello { protocol: u32, server_version: String },
    /// A progress line of a long operation; more frames follow.
    Progress(String),
    /// The final answer to a request.
    Reply(Reply),
    /// The request failed; this is the final frame.
    Error(ErrorReport),
}

impl ServerMessage {
    /// Whether this frame ends the answer to a request.
    pub fn is_final(&self) -> bool {
        matches!(self, ServerMessage::Reply(_) | ServerMessage::Error(_))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Mode, status, context and runner state.
    ServerStatus,
    /// Stop the server gracefully (durable flush, socket removed).
    ServerStop,
    ApiResources,
    Get(GetRequest),
    Apply(ApplyRequest),
    Delete(DeleteRequest),
    /// Reload the project from its files.
    RunLoad,
    /// Load, then reconcile until nothing changes; streams progress, ends with the summary.
    RunOnce(RunOnceRequest),
    /// Start the continuous runner: every change is reconciled as it is loaded.
    RunStart,
    /// Stop the continuous runner.
    RunStop,
    /// The summary of the last run.
    RunResult,
    /// Every stored snapshot, newest first.
    RunList,
    /// What changed between the last two snapshots.
    RunDiff(RunDiffRequest),
    /// The ownership tree of the current objects.
    RunDeps(RunDepsRequest),
    /// Dynamic mode: clone or fetch a repository and serve one of its directories at a ref.
    ServerApply(ServerApplyRequest),
    /// Commit the project's files on the checked-out branch.
    RunCommit { message: String },
    /// Push the checked-out branch.
    RunPush,
    /// Branch commands on the project's repository.
    Branch(BranchRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerApplyRequest {
    pub url: String,
    /// The project directory inside the repository (`.` for its root).
    pub directory: String,
    /// A branch, tag or (short) commit hash.
    pub reference: String,
    /// None: production (REF detached, continuous runner). Some: development on this branch.
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BranchRequest {
    /// Every local branch, or the log of one.
    Get { name: Option<String> },
    Create { name: String },
    Delete { name: String, force: bool },
    Checkout { name: String },
    Diff { src: String, dst: String },
    Stash,
    Merge { src: String, dst: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BranchEntry {
    pub name: String,
    pub checked_out: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    pub id: String,
    pub author: String,
    pub email: String,
    /// RFC 3339 in the author's time zone.
    pub date: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOnceRequest {
    pub timeout_secs: u64,
    /// Reconcile only what changed since the last run instead of every object.
    pub changed_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDiffRequest {
    pub show_choreo_apis: bool,
    pub show_managed_fields: bool,
    /// Include a unified diff of each changed object's YAML.
    pub details: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDepsRequest {
    pub show_choreo_apis: bool,
}

/// The outcome of a run, as `run once` and `run result` print it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RunSummary {
    /// The snapshot this run left.
    pub snapshot: String,
    pub success: bool,
    /// The failing task (`reconciler.Kind.group.name`) and why.
    pub task: String,
    pub message: String,
    pub elapsed_micros: u64,
    /// In chronological order.
    pub events: Vec<RunEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEvent {
    /// RFC 3339 with microseconds, UTC.
    pub time: String,
    pub reconciler: String,
    pub resource: String,
    /// START, STOP, REQUEUE or ERROR.
    pub operation: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub time: String,
    pub success: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffItem {
    /// `+` added, `-` deleted, `~` modified, `=` equal.
    pub symbol: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Unified diff of the YAML, when asked for and the object changed.
    pub details: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepNode {
    pub depth: usize,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Request {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::ServerStatus => "server-status",
            Request::ServerStop => "server-stop",
            Request::ApiResources => "api-resources",
            Request::Get(_) => "get",
            Request::Apply(_) => "apply",
            Request::Delete(_) => "delete",
            Request::RunLoad => "run-load",
            Request::RunOnce(_) => "run-once",
            Request::RunResult => "run-result",
            Request::RunStart => "run-start",
            Request::RunStop => "run-stop",
            Request::RunList => "run-list",
            Request::RunDiff(_) => "run-diff",
            Request::RunDeps(_) => "run-deps",
            Request::ServerApply(_) => "server-apply",
            Request::RunCommit { .. } => "run-commit",
            Request::RunPush => "run-push",
            Request::Branch(_) => "branch",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRequest {
    /// `plural[.group]`, a kind or a short name.
    pub resource: String,
    pub name: Option<String>,
    /// `None`: every namespace for a list, `default` for one object.
    pub namespace: Option<String>,
    pub show_managed_fields: bool,
}

/// One object as the user wrote it, with where it came from (a path or `-`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub source: String,
    /// The object as JSON text.
    pub json: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub documents: Vec<Document>,
    pub force: bool,
    /// Validate only; write nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DeleteTarget {
    Named { resource: String, name: String, namespace: Option<String> },
    Object(Document),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub targets: Vec<DeleteTarget>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Status(ServerStatus),
    ApiResources(Vec<ApiResourceInfo>),
    /// One object, as JSON text.
    Object(String),
    /// Objects of one kind, sorted by namespace and name, each as JSON text.
    List { api_version: String, kind: String, namespaced: bool, items: Vec<String> },
    /// Per-object outcomes of apply or delete; the request fails only as a whole in `Error`.
    Items(Vec<ItemResult>),
    Run(RunSummary),
    Snapshots(Vec<SnapshotInfo>),
    Diff(Vec<DiffItem>),
    Deps(Vec<DepNode>),
    Branches(Vec<BranchEntry>),
    Log(Vec<LogEntry>),
    /// `(symbol, path)` pairs: `+` added, `-` removed, `~` changed.
    BranchDiff(Vec<(String, String)>),
    /// A one-line outcome for the user.
    Message(String),
    Done,
}

/// The outcome for one object of a multi-object request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemResult {
    /// The object as `Kind.group namespace/name` (or the source when it has no identity).
    pub object: String,
    /// `created`, `configured`, `unchanged`, `deleted`, `deleting`, or empty on error.
    pub outcome: String,
    /// Where the object was written to or removed from, relative to the project.
    pub file: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ServerStatus {
    /// `static` or `dynamic`.
    pub mode: String,
    pub production: bool,
    /// `Initializing`, `Ready` or `Failed`.
    pub status: String,
    pub reason: String,
    pub context: StatusContext,
    /// `Stopped`, `Once` or `Running`.
    pub runner: String,
    /// The last run's summary as JSON text, if any.
    pub last_run: Option<String>,
    pub server_version: String,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StatusContext {
    pub path: Option<String>,
    pub url: Option<String>,
    pub directory: Option<String>,
    pub reference: Option<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiResourceInfo {
    pub resource: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub builtin: bool,
}

/// A structured error, printed by the CLI like a local one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub message: String,
    pub causes: Vec<String>,
    pub hints: Vec<String>,
}

impl ErrorReport {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReport { kind, message: message.into(), causes: Vec::new(), hints: Vec::new() }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    pub fn with_causes(mut self, causes: Vec<String>) -> Self {
        self.causes = causes;
        self
    }
}

impl std::fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.causes {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// Validation or apply failed; nothing was written.
    Invalid,
    /// Another field manager owns the field (apply without force).
    Conflict,
    /// The server cannot do this now (e.g. no project loaded).
    Unavailable,
    /// The peer is not allowed to talk to this server.
    PermissionDenied,
    /// The frame or handshake was wrong.
    Protocol,
    Internal,
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN} bytes (64 MiB)")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let body = bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. `Ok(None)` is a clean end of stream before a frame started.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len_buf[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame header",
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let (msg, used) = bincode::serde::decode_from_slice(&body, config())
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != len {
        return Err(FrameError::Decode(format!("{} trailing bytes after the message", len - used)));
    }
    Ok(Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = ClientMessage::Request(Request::Get(GetRequest {
            resource: "helloworlds.example.com".into(),
            name: Some("test".into()),
            namespace: None,
            show_managed_fields: true,
        }));
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        let back: ClientMessage = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert!(matches!(back, ClientMessage::Request(Request::Get(g)) if g.name.as_deref() == Some("test")));
    }

    #[test]
    fn clean_eof_is_none_and_partial_header_is_error() {
        let none: Option<ClientMessage> = read_frame(&mut [].as_slice()).unwrap();
        assert!(none.is_none());
        let err = read_frame::<_, ClientMessage>(&mut [0u8, 0].as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Io(_)));
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused() {
        let huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        let err = read_frame::<_, ClientMessage>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");
        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
        let err = read_frame::<_, ClientMessage>(&mut garbage.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }
}
