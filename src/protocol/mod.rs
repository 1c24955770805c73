//! The wire protocol between the `choreo` CLI and the server.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of bincode (standard
//! configuration). A connection starts with [`ClientMessage::Hello`] carrying
//! [`PROTOCOL_VERSION`]; the server answers with its own hello or an error, then serves
//! [`Request`]s one at a time. Each request gets zero or more [`ServerMessage::Progress`] frames
//! and exactly one final message ([`ServerMessage::Reply`] or [`ServerMessage::Error`]).
//!
//! bincode is not self-describing, so KRM objects never travel as `serde_json::Value`: they are
//! JSON text inside the fixed-shape records defined here. Frames above [`MAX_FRAME_LEN`] are
//! refused: a writer measures the encoding before it writes anything, a reader checks the length
//! prefix before it reads the body. A client request must fit in one frame. A server message
//! whose encoding exceeds [`PART_LEN`] (a `get` of a large list, a long `run diff -a`) is cut
//! into [`ServerMessage::Part`] frames that [`read_message`] puts back together, so no answer
//! is limited by the frame size ([`write_message`]). Architecture invariant: this module depends
//! on no other choreo module; changing any type here means bumping [`PROTOCOL_VERSION`].

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version both ends must speak; bumped on any change to the types below.
pub const PROTOCOL_VERSION: u32 = 6;
/// The largest frame either end accepts (64 MiB).
pub const MAX_FRAME_LEN: usize = 64 << 20;
/// A server message whose encoding is larger than this (16 MiB) travels as [`ServerMessage::Part`]
/// frames of this many bytes each, the last one shorter.
pub const PART_LEN: usize = 16 << 20;
/// The largest server message put together from parts (4 GiB; 512 MiB on 32-bit targets): a bound
/// against a corrupt stream claiming an absurd length, far above any answer a server holds in
/// memory.
#[cfg(target_pointer_width = "64")]
pub const MAX_MESSAGE_LEN: usize = 4 << 30;
#[cfg(not(target_pointer_width = "64"))]
pub const MAX_MESSAGE_LEN: usize = 512 << 20;

/// bincode's decoding limit counts the memory of what it decodes (8 bytes for every varint
/// length, 4 for every enum tag), not the bytes read, so a message at the size limit claims a
/// little more than its size. The limit is there to refuse absurd lengths before allocating;
/// the length prefix bounds the bytes.
const CLAIM_FACTOR: usize = 4;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ CLAIM_FACTOR * MAX_FRAME_LEN }>()
}

/// The configuration of a message reassembled from parts: the same encoding, a larger bound.
fn message_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ CLAIM_FACTOR * MAX_MESSAGE_LEN }>()
}

/// A byte count for people: `512 bytes`, `64 MiB`, `70.2 MiB`, `4 GiB`.
pub fn human_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// What a client sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientMessage {
    Hello { protocol: u32, client_version: String },
    Request(Request),
}

/// What the server sends.
// A message lives only while it is encoded or decoded, one at a time per connection: boxing the
// large reply would cost an allocation per frame for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerMessage {
    Hello {
        protocol: u32,
        server_version: String,
    },
    /// A progress line of a long operation; more frames follow.
    Progress(String),
    /// The final answer to a request.
    Reply(Reply),
    /// The request failed; this is the final frame.
    Error(ErrorReport),
    /// One change of a watched kind (`get -w`); more frames follow.
    Event(WatchEvent),
    /// A piece of one message too large for a frame: the pieces in order, concatenated, are the
    /// message's encoding. Only [`write_message`] sends them and [`read_message`] consumes them;
    /// a reader never sees one.
    Part(Part),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanRequest {
    pub timeout_secs: u64,
    /// A unified diff of each changed object.
    pub details: bool,
    /// `apply -f … --dry-run`: objects applied (as `apply` would, files aside) before the run.
    #[serde(default)]
    pub apply: Vec<Document>,
    /// With `apply`: take over fields other managers own.
    #[serde(default)]
    pub force: bool,
    /// `delete --dry-run`: objects deleted before the run.
    #[serde(default)]
    pub delete: Vec<DeleteTarget>,
    /// `plan --ref`: the project as it is at this ref instead of the current files.
    #[serde(default)]
    pub reference: Option<String>,
}

/// `plan`'s answer: the changes and the run that would make them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// `+`, `~` and `-` only, sorted.
    pub changes: Vec<DiffItem>,
    pub run: RunSummary,
}

/// `wait --for=…`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum WaitFor {
    /// `condition=Ready` (status `True`), or `condition=Ready=False`.
    Condition { type_: String, status: String },
    /// `delete`: the object is gone.
    Delete,
    /// `jsonpath={.status.phase}=Running`, or without `=value`: the path has a value.
    JsonPath { path: String, value: Option<String> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitRequest {
    /// Resource and name (and namespace) of the object; selectors are not used.
    pub target: GetRequest,
    pub until: WaitFor,
    pub timeout_secs: u64,
}

/// The first character of a progress line that replaces the one before it on a terminal
/// (counts of a run in progress, a clone's percentage).
pub const TRANSIENT: char = '\r';

/// See [`ServerMessage::Event`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`; the initial list comes as `ADDED`.
    pub kind: String,
    /// The object as JSON text.
    pub object: String,
}

/// See [`ServerMessage::Part`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// The next bytes of the message's encoding (at most [`PART_LEN`]).
    pub bytes: Bytes,
    /// Whether these bytes end the message.
    pub last: bool,
}

/// Raw bytes, encoded as one length and the bytes (serde's default for `Vec<u8>` is a sequence,
/// decoded byte by byte).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

impl ServerMessage {
    /// Whether this frame ends the answer to a request.
    pub fn is_final(&self) -> bool {
        matches!(self, ServerMessage::Reply(_) | ServerMessage::Error(_))
    }

    /// A short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ServerMessage::Hello { .. } => "hello",
            ServerMessage::Progress(_) => "progress",
            ServerMessage::Reply(_) => "reply",
            ServerMessage::Error(_) => "error",
            ServerMessage::Part(_) => "part",
            ServerMessage::Event(_) => "event",
        }
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
    /// Answered once the engine has nothing to do (no run once, fetch or held request, no
    /// reconcile ready in the continuous runner), or with an error after `timeout_secs`. File
    /// changes the watcher has not reported yet are not waited for. For tests and scripts that
    /// would otherwise poll.
    Quiesce {
        timeout_secs: u64,
    },
    /// The summary of the last run.
    RunResult,
    /// Every stored snapshot, newest first.
    RunList,
    /// What changed between the last two snapshots.
    RunDiff(RunDiffRequest),
    ConfigBlame(ConfigBlameRequest),
    /// The metrics in the Prometheus text exposition format.
    Metrics,
    /// `get -w`: the list, then every change as it commits, until the client goes.
    Watch(GetRequest),
    /// `wait`: answered once the named object meets the condition, or at the timeout.
    Wait(WaitRequest),
    /// `describe RESOURCE NAME`.
    Describe(GetRequest),
    /// `plan` (`run once --dry-run`): what a run over the current files would change.
    Plan(PlanRequest),
    /// `explain RESOURCE[.field.path]`.
    Explain {
        target: String,
    },
    /// The ownership tree of the current objects.
    RunDeps(RunDepsRequest),
    /// Dynamic mode: clone or fetch a repository and serve one of its directories at a ref.
    ServerApply(ServerApplyRequest),
    /// Commit the project's files on the checked-out branch.
    RunCommit {
        message: String,
    },
    /// Push the checked-out branch.
    RunPush,
    /// Branch commands on the project's repository.
    Branch(BranchRequest),
    /// `-r`: size, use and largest free block of every identifier pool (or of the pools of
    /// one index).
    IdsUsage(IdsUsageRequest),
    /// `-r`: what an index would hand out next, without claiming it.
    IdsFree(IdsFreeRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdsUsageRequest {
    /// Only this namespace (every namespace when `None`).
    pub namespace: Option<String>,
    /// Only this index.
    pub index: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdsFreeRequest {
    pub namespace: String,
    pub index: String,
    /// IPAM: free prefixes of this length instead of addresses.
    pub prefix_length: Option<u8>,
    /// How many to list.
    pub count: u32,
    /// Id pools: inside this range claim's table instead of the main pool.
    pub range: Option<String>,
    /// The backend (`ipam`, `vlan`, `as`, `genid`, `extcomm`, or its group) when indexes of
    /// several backends share the name; `prefix_length` implies IPAM.
    pub backend: Option<String>,
    /// IPAM: only from the prefixes whose labels (system labels included) match, as a claim's
    /// `selector.matchLabels` would pick them.
    pub selector: Vec<(String, String)>,
}

/// The use of one pool of an index: an IPAM prefix of the index or range, an id pool or one
/// of its ranges. Counts are decimal text (IPv6 pools exceed 64 bits).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolUsage {
    /// The backend's group (`ipam.be.kuid.dev`, …).
    pub group: String,
    pub namespace: String,
    pub index: String,
    /// What is counted: `10.0.0.0/24`, `range r1 (10.0.0.10-10.0.0.100)`, `ids 0-4095`.
    pub pool: String,
    pub size: String,
    pub used: String,
    pub free: String,
    /// The largest free block: a prefix (IPAM) or `start-end` (ids); empty when full.
    pub largest_free: String,
    pub used_percent: f64,
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
    Get {
        name: Option<String>,
    },
    Create {
        name: String,
    },
    Delete {
        name: String,
        force: bool,
    },
    Checkout {
        name: String,
    },
    Diff {
        src: String,
        dst: String,
    },
    Stash,
    Merge {
        src: String,
        dst: String,
    },
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
    /// `-c`: each final device config against the device's running config (as the schema
    /// reads it) instead of the run against the one before; with `details`, per data path.
    #[serde(default)]
    pub final_config: bool,
}

/// What `server get` shows of the metrics.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct StatusMetrics {
    pub uptime_secs: f64,
    pub objects: u64,
    pub store_bytes: u64,
    pub snapshots: u64,
    pub loads: u64,
    pub load_failures: u64,
    pub runs: u64,
    pub run_failures: u64,
    pub queue_depth: u64,
    pub watch_events: u64,
    pub git_fetches: u64,
    /// Per reconciler: (name, reconciles, errors, last duration in ms).
    pub reconcilers: Vec<(String, u64, u64, f64)>,
    pub last_load_ms: Option<f64>,
    pub last_run_ms: Option<f64>,
    pub last_reconcile_ms: Option<f64>,
    /// Identifiers allocated per pool of `-r`: (namespace/index pool, used, size).
    pub pools: Vec<(String, f64, f64)>,
}

/// `config blame NODE [PATH]`: where each leaf of a device's intended configuration comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigBlameRequest {
    pub node: String,
    /// The Node's namespace; `None`: the only Node of that name.
    pub namespace: Option<String>,
    /// Only leaves at or below this data path (`/interfaces/interface[name=e1]`; module
    /// prefixes optional).
    pub path: Option<String>,
}

/// One leaf of a device's intended configuration and where its value comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlameRow {
    pub path: String,
    pub value: String,
    /// `running`, `default` or the Config as `namespace/name`.
    pub source: String,
}

/// The latest pass of `-s` (device configs merged and validated).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct SdcSummary {
    /// RFC 3339, UTC.
    pub time: String,
    pub nodes: u32,
    /// Nodes whose intended configuration is valid (a final Config was written).
    pub valid: u32,
    /// `node <name>: <data path>: <message> [config <namespace/name>]`, sorted.
    pub errors: Vec<String>,
    /// Configs or running configs that name no Node, and the like: skipped, not fatal.
    pub warnings: Vec<String>,
    pub elapsed_micros: u64,
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
    /// With `-s`: the device configs' validation after the reconcilers.
    #[serde(default)]
    pub sdc: Option<SdcSummary>,
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

/// Generates a plain enum with the word each variant is shown as.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The word users see (CLI output, JSON).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// How the server serves projects.
    #[derive(Default)]
    Mode {
        /// `server start DIR`: the user owns the directory.
        #[default]
        Static = "static",
        /// `server start` plus `server apply`: the server owns clones.
        Dynamic = "dynamic",
    }
}

words! {
    /// Whether the last load worked.
    #[derive(Default)]
    ServerState {
        /// Dynamic mode before the first `server apply`.
        #[default]
        Initializing = "Initializing",
        Ready = "Ready",
        /// The last load failed; the store keeps the last good state.
        Failed = "Failed",
    }
}

words! {
    /// What the reconciler runner is doing.
    #[derive(Default)]
    Runner {
        #[default]
        Stopped = "Stopped",
        /// A `run once` is in progress.
        Once = "Once",
        /// The continuous runner runs.
        Running = "Running",
    }
}

words! {
    /// What a multi-object request did to one object.
    ItemOutcome {
        Created = "created",
        Configured = "configured",
        Unchanged = "unchanged",
        Deleted = "deleted",
        /// Deletion started; finalizers hold the object.
        Deleting = "deleting",
        /// Nothing was done: see the item's error.
        Failed = "failed",
    }
}

words! {
    /// How an object differs between two snapshots.
    DiffSymbol {
        // In the order of their symbols, which is how a diff sorts.
        Added = "+",
        Deleted = "-",
        Equal = "=",
        Modified = "~",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffItem {
    pub symbol: DiffSymbol,
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
            Request::Quiesce { .. } => "quiesce",
            Request::RunList => "run-list",
            Request::RunDiff(_) => "run-diff",
            Request::ConfigBlame(_) => "config-blame",
            Request::Metrics => "metrics",
            Request::Explain { .. } => "explain",
            Request::Watch(_) => "watch",
            Request::Wait(_) => "wait",
            Request::Describe(_) => "describe",
            Request::Plan(_) => "plan",
            Request::RunDeps(_) => "run-deps",
            Request::ServerApply(_) => "server-apply",
            Request::RunCommit { .. } => "run-commit",
            Request::RunPush => "run-push",
            Request::Branch(_) => "branch",
            Request::IdsUsage(_) => "ids-usage",
            Request::IdsFree(_) => "ids-free",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GetRequest {
    /// `plural[.group]`, a kind or a short name.
    pub resource: String,
    pub name: Option<String>,
    /// `None`: every namespace for a list, `default` for one object.
    pub namespace: Option<String>,
    pub show_managed_fields: bool,
    /// `-l`: kubectl's label selector (`a=b,c!=d,e in (x,y),!f`).
    #[serde(default)]
    pub label_selector: Option<String>,
    /// `--field-selector`: `metadata.name=x,status.phase!=Done`.
    #[serde(default)]
    pub field_selector: Option<String>,
}

/// A column of a CRD's `additionalPrinterColumns`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    pub json_path: String,
    /// 0: in the default table; higher: only with `-o wide`.
    pub priority: i64,
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
    List {
        api_version: String,
        kind: String,
        namespaced: bool,
        items: Vec<String>,
        /// The CRD's `additionalPrinterColumns`.
        #[serde(default)]
        columns: Vec<PrinterColumn>,
    },
    /// Per-object outcomes of apply or delete; the request fails only as a whole in `Error`.
    Items(Vec<ItemResult>),
    Run(RunSummary),
    Snapshots(Vec<SnapshotInfo>),
    Diff(Vec<DiffItem>),
    Deps(Vec<DepNode>),
    Blame(Vec<BlameRow>),
    /// Prometheus text exposition format.
    Metrics(String),
    Plan(Box<Plan>),
    Branches(Vec<BranchEntry>),
    Log(Vec<LogEntry>),
    /// `(symbol, path)` pairs: `+` added, `-` removed, `~` changed.
    BranchDiff(Vec<(String, String)>),
    IdsUsage(Vec<PoolUsage>),
    /// What `ids free` found: prefixes, addresses or ids as text, in the order they would be
    /// handed out.
    IdsFree(Vec<String>),
    /// A one-line outcome for the user.
    Message(String),
    Done,
}

/// The outcome for one object of a multi-object request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemResult {
    /// The object as `Kind.group namespace/name` (or the source when it has no identity).
    pub object: String,
    pub outcome: ItemOutcome,
    /// Where the object was written to or removed from, relative to the project.
    pub file: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ServerStatus {
    pub mode: Mode,
    pub production: bool,
    pub status: ServerState,
    pub reason: String,
    pub context: StatusContext,
    pub runner: Runner,
    /// The last run's summary as JSON text, if any.
    pub last_run: Option<String>,
    /// With `-s`: the latest validation of the device configs.
    #[serde(default)]
    pub sdc: Option<SdcSummary>,
    /// Uptime, counters and latest latencies (filled in when asked for).
    #[serde(default)]
    pub metrics: Option<Box<StatusMetrics>>,
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
    #[error("a frame of {} exceeds the limit of {} per frame", human_size(*.0), human_size(MAX_FRAME_LEN))]
    TooLarge(usize),
    #[error("a message of {} exceeds the limit of {} per message", human_size(*.0), human_size(MAX_MESSAGE_LEN))]
    MessageTooLarge(usize),
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// A bincode writer that only counts.
struct Counter<'a>(&'a mut usize);

impl bincode::enc::write::Writer for Counter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        *self.0 += bytes.len();
        Ok(())
    }
}

/// The size of `msg`'s encoding, measured without encoding it.
pub fn encoded_len<T: Serialize>(msg: &T) -> Result<usize, FrameError> {
    let mut len = 0;
    bincode::serde::encode_into_writer(msg, Counter(&mut len), config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    Ok(len)
}

/// Writes one frame. A message over [`MAX_FRAME_LEN`] is refused before anything is written.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let len = encoded_len(msg)?;
    write_measured_frame(w, msg, len)
}

/// Writes one frame whose body is `len` bytes long.
fn write_measured_frame<W: Write, T: Serialize>(w: &mut W, msg: &T, len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge(len))?;
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&prefix.to_be_bytes());
    bincode::serde::encode_into_std_write(msg, &mut buf, config()).map_err(|e| FrameError::Encode(e.to_string()))?;
    if buf.len() != 4 + len {
        return Err(FrameError::Encode(format!("the message encoded to {} bytes, measured {len}", buf.len() - 4)));
    }
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
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed inside a frame of {}", human_size(len)),
        )),
        _ => FrameError::Io(e),
    })?;
    let (msg, used) =
        bincode::serde::decode_from_slice(&body, config()).map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != len {
        return Err(FrameError::Decode(format!("{} trailing bytes after the message", len - used)));
    }
    Ok(Some(msg))
}

/// Writes one server message: a single frame, or when its encoding exceeds [`PART_LEN`], a run
/// of [`ServerMessage::Part`] frames. A message over [`MAX_MESSAGE_LEN`] is refused before
/// anything is written, so the caller can still send an error in its place.
pub fn write_message<W: Write>(w: &mut W, msg: &ServerMessage) -> Result<(), FrameError> {
    write_message_in(w, msg, PART_LEN, MAX_MESSAGE_LEN)
}

fn write_message_in<W: Write>(
    w: &mut W,
    msg: &ServerMessage,
    part_len: usize,
    max_len: usize,
) -> Result<(), FrameError> {
    let len = encoded_len(msg)?;
    if len <= part_len {
        return write_measured_frame(w, msg, len);
    }
    if len > max_len {
        return Err(FrameError::MessageTooLarge(len));
    }
    let mut parts =
        PartWriter { out: w, buf: Vec::with_capacity(part_len), part_len, total: len, sent: 0, failed: None };
    let encoded = bincode::serde::encode_into_writer(msg, &mut parts, message_config());
    if let Some(e) = parts.failed.take() {
        return Err(e);
    }
    encoded.map_err(|e| FrameError::Encode(e.to_string()))?;
    if !parts.buf.is_empty() {
        parts.flush_part()?;
    }
    if parts.sent != len {
        return Err(FrameError::Encode(format!("the message encoded to {} bytes, measured {len}", parts.sent)));
    }
    Ok(())
}

/// Cuts an encoding into [`ServerMessage::Part`] frames as the encoder produces it, so a large
/// message is never held twice.
struct PartWriter<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    part_len: usize,
    /// The measured length of the whole encoding: the part that reaches it is the last.
    total: usize,
    sent: usize,
    /// Why writing stopped (bincode's own error type cannot carry it).
    failed: Option<FrameError>,
}

impl<W: Write> PartWriter<'_, W> {
    fn flush_part(&mut self) -> Result<(), FrameError> {
        let sent = self.sent + self.buf.len();
        let part = ServerMessage::Part(Part { bytes: Bytes(std::mem::take(&mut self.buf)), last: sent >= self.total });
        let written = write_frame(self.out, &part);
        if let ServerMessage::Part(Part { bytes: Bytes(mut buf), .. }) = part {
            buf.clear();
            self.buf = buf;
        }
        written?;
        self.sent = sent;
        Ok(())
    }
}

impl<W: Write> bincode::enc::write::Writer for PartWriter<'_, W> {
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        while !bytes.is_empty() {
            let take = bytes.len().min(self.part_len - self.buf.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == self.part_len {
                if let Err(e) = self.flush_part() {
                    self.failed = Some(e);
                    return Err(bincode::error::EncodeError::Other("cannot write a part of the message"));
                }
            }
        }
        Ok(())
    }
}

/// Reads one server message, putting [`ServerMessage::Part`] frames back together. `Ok(None)`
/// is a clean end of stream before a frame started.
pub fn read_message<R: Read>(r: &mut R) -> Result<Option<ServerMessage>, FrameError> {
    match read_frame::<_, ServerMessage>(r)? {
        Some(ServerMessage::Part(first)) => reassemble(r, first).map(Some),
        other => Ok(other),
    }
}

/// Decodes a message from its parts as they arrive: only one part is held at a time.
fn reassemble<R: Read>(r: &mut R, first: Part) -> Result<ServerMessage, FrameError> {
    let mut parts = PartReader { src: r, current: first.bytes.0, pos: 0, last: first.last, failed: None };
    let decoded: Result<ServerMessage, _> = bincode::serde::decode_from_std_read(&mut parts, message_config());
    if let Some(e) = parts.failed.take() {
        return Err(e);
    }
    let msg = decoded.map_err(|e| FrameError::Decode(format!("a message in parts: {e}")))?;
    if parts.pos != parts.current.len() || !parts.last {
        return Err(FrameError::Decode("a message in parts is followed by bytes that belong to none".into()));
    }
    if matches!(msg, ServerMessage::Part(_)) {
        return Err(FrameError::Decode("a message in parts is itself a part".into()));
    }
    Ok(msg)
}

/// The bytes of consecutive parts as one stream.
struct PartReader<'a, R: Read> {
    src: &'a mut R,
    current: Vec<u8>,
    pos: usize,
    /// Whether `current` is the last part.
    last: bool,
    /// Why reading stopped (bincode reports only that the stream ended).
    failed: Option<FrameError>,
}

impl<R: Read> Read for PartReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.last {
                return Ok(0);
            }
            let error = match read_frame::<_, ServerMessage>(self.src) {
                Ok(Some(ServerMessage::Part(part))) => {
                    self.current = part.bytes.0;
                    self.pos = 0;
                    self.last = part.last;
                    continue;
                }
                Ok(Some(other)) => {
                    FrameError::Decode(format!("expected the next part of a message, got a {} frame", other.name()))
                }
                Ok(None) => FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed between the parts of a message",
                )),
                Err(e) => e,
            };
            let text = error.to_string();
            self.failed = Some(error);
            return Err(io::Error::other(text));
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_states_show_their_words_and_diffs_sort_by_symbol() {
        assert_eq!(Runner::default().to_string(), "Stopped");
        assert_eq!(ServerState::Failed.as_str(), "Failed");
        assert_eq!(Mode::Dynamic.to_string(), "dynamic");
        assert_eq!(ItemOutcome::Configured.to_string(), "configured");
        let mut symbols = [DiffSymbol::Modified, DiffSymbol::Equal, DiffSymbol::Deleted, DiffSymbol::Added];
        symbols.sort();
        let words: Vec<&str> = symbols.iter().map(|s| s.as_str()).collect();
        let mut sorted = words.clone();
        sorted.sort();
        assert_eq!(words, sorted);
    }

    #[test]
    fn frames_round_trip() {
        let msg = ClientMessage::Request(Request::Get(GetRequest {
            resource: "helloworlds.example.com".into(),
            name: Some("test".into()),
            namespace: None,
            show_managed_fields: true,
            label_selector: Some("a=b".into()),
            field_selector: None,
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

    #[test]
    fn an_oversized_header_names_the_limit() {
        let header = ((100 << 20) as u32).to_be_bytes();
        let err = read_frame::<_, ClientMessage>(&mut header.as_slice()).unwrap_err();
        assert_eq!(err.to_string(), "a frame of 100 MiB exceeds the limit of 64 MiB per frame");
    }

    #[test]
    fn an_oversized_frame_is_measured_and_refused_before_anything_is_written() {
        let doc = Document { source: "big.yaml".into(), json: "x".repeat(MAX_FRAME_LEN) };
        let msg =
            ClientMessage::Request(Request::Apply(ApplyRequest { documents: vec![doc], force: false, dry_run: false }));
        let len = encoded_len(&msg).unwrap();
        assert!(len > MAX_FRAME_LEN);
        let mut out = Vec::new();
        let err = write_frame(&mut out, &msg).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(n) if n == len), "{err}");
        assert!(out.is_empty(), "nothing of a refused frame is written");
    }

    #[test]
    fn a_frame_at_the_limit_is_accepted() {
        // The envelope (variant tags, lengths) takes a few bytes of the frame.
        let envelope = encoded_len(&ServerMessage::Progress(String::new())).unwrap() + 4;
        let msg = ServerMessage::Progress("p".repeat(MAX_FRAME_LEN - envelope));
        assert_eq!(encoded_len(&msg).unwrap(), MAX_FRAME_LEN);
        let mut out = Vec::new();
        write_frame(&mut out, &msg).unwrap();
        let back: ServerMessage = read_frame(&mut out.as_slice()).unwrap().unwrap();
        assert!(matches!(back, ServerMessage::Progress(p) if p.len() == MAX_FRAME_LEN - envelope));
    }

    fn list(items: Vec<String>) -> ServerMessage {
        ServerMessage::Reply(Reply::List {
            api_version: "v1".into(),
            kind: "Blob".into(),
            namespaced: true,
            items,
            columns: Vec::new(),
        })
    }

    fn list_items(msg: ServerMessage) -> Vec<String> {
        match msg {
            ServerMessage::Reply(Reply::List { items, .. }) => items,
            other => panic!("expected a list, got {other:?}"),
        }
    }

    /// Splits a byte stream into its frames' decoded messages, without reassembling parts.
    fn frames(mut bytes: &[u8]) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Some(msg) = read_frame(&mut bytes).unwrap() {
            out.push(msg);
        }
        out
    }

    #[test]
    fn small_messages_stay_one_frame() {
        let mut by_message = Vec::new();
        write_message(&mut by_message, &ServerMessage::Reply(Reply::Done)).unwrap();
        let mut by_frame = Vec::new();
        write_frame(&mut by_frame, &ServerMessage::Reply(Reply::Done)).unwrap();
        assert_eq!(by_message, by_frame);
    }

    #[test]
    fn large_messages_travel_in_parts_and_come_back_whole() {
        let items: Vec<String> = (0..40).map(|i| format!("{i:02}-{}", "y".repeat(i * 7))).collect();
        let msg = list(items.clone());
        let len = encoded_len(&msg).unwrap();
        let mut out = Vec::new();
        write_message(&mut out, &ServerMessage::Progress("before".into())).unwrap();
        write_message_in(&mut out, &msg, 100, MAX_MESSAGE_LEN).unwrap();
        write_message(&mut out, &ServerMessage::Progress("after".into())).unwrap();

        let raw = frames(&out);
        let parts: Vec<&Part> =
            raw.iter().filter_map(|m| if let ServerMessage::Part(p) = m { Some(p) } else { None }).collect();
        assert_eq!(parts.len(), len.div_ceil(100));
        assert_eq!(raw.len(), parts.len() + 2);
        for (i, part) in parts.iter().enumerate() {
            let is_last = i == parts.len() - 1;
            assert_eq!(part.last, is_last, "part {i}");
            if !is_last {
                assert_eq!(part.bytes.0.len(), 100);
            }
        }
        assert_eq!(parts.iter().map(|p| p.bytes.0.len()).sum::<usize>(), len);

        let mut stream = out.as_slice();
        assert!(matches!(read_message(&mut stream).unwrap(), Some(ServerMessage::Progress(p)) if p == "before"));
        assert_eq!(list_items(read_message(&mut stream).unwrap().unwrap()), items);
        assert!(matches!(read_message(&mut stream).unwrap(), Some(ServerMessage::Progress(p)) if p == "after"));
        assert!(read_message(&mut stream).unwrap().is_none());
    }

    #[test]
    fn an_encoding_of_whole_parts_ends_with_a_full_last_part() {
        let msg = ServerMessage::Progress("z".repeat(200));
        let len = encoded_len(&msg).unwrap();
        let mut out = Vec::new();
        write_message_in(&mut out, &msg, len / 2, MAX_MESSAGE_LEN).unwrap_or_else(|e| panic!("{e}"));
        let raw = frames(&out);
        let expected = len.div_ceil(len / 2);
        assert_eq!(raw.len(), expected);
        assert!(matches!(raw.last(), Some(ServerMessage::Part(p)) if p.last));
        assert!(
            matches!(read_message(&mut out.as_slice()).unwrap(), Some(ServerMessage::Progress(p)) if p.len() == 200)
        );
    }

    #[test]
    fn a_reply_over_the_frame_limit_is_sent_in_parts() {
        // 5 items of 14 MiB: 70 MiB in all, more than one frame may carry.
        let items: Vec<String> = (0..5u8).map(|i| char::from(b'a' + i).to_string().repeat(14 << 20)).collect();
        let msg = list(items);
        let len = encoded_len(&msg).unwrap();
        assert!(len > MAX_FRAME_LEN);
        let mut out = Vec::new();
        write_message(&mut out, &msg).unwrap();
        drop(msg);
        let mut stream = out.as_slice();
        let mut frame_lens = Vec::new();
        while !stream.is_empty() {
            let n = u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]) as usize;
            assert!(n <= MAX_FRAME_LEN);
            frame_lens.push(n);
            stream = &stream[4 + n..];
        }
        assert_eq!(frame_lens.len(), len.div_ceil(PART_LEN));
        let back = list_items(read_message(&mut out.as_slice()).unwrap().unwrap());
        assert_eq!(back.len(), 5);
        for (i, item) in back.iter().enumerate() {
            let c = char::from(b'a' + i as u8);
            assert!(item.len() == 14 << 20 && item.chars().all(|x| x == c), "item {i}");
        }
    }

    #[test]
    fn a_message_over_the_message_limit_is_refused_before_anything_is_written() {
        let msg = list(vec!["w".repeat(1000)]);
        let mut out = Vec::new();
        let err = write_message_in(&mut out, &msg, 100, 500).unwrap_err();
        assert!(matches!(err, FrameError::MessageTooLarge(n) if n > 1000), "{err}");
        assert!(out.is_empty());
    }

    /// The encoding of `msg` cut into parts by hand.
    fn cut(msg: &ServerMessage, part_len: usize) -> Vec<Part> {
        let bytes = bincode::serde::encode_to_vec(msg, config()).unwrap();
        let chunks: Vec<&[u8]> = bytes.chunks(part_len).collect();
        let n = chunks.len();
        chunks.into_iter().enumerate().map(|(i, c)| Part { bytes: Bytes(c.to_vec()), last: i + 1 == n }).collect()
    }

    fn write_all(frames: &[ServerMessage]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            write_frame(&mut out, f).unwrap();
        }
        out
    }

    #[test]
    fn broken_part_streams_are_errors() {
        let msg = list(vec!["q".repeat(300), "r".repeat(300)]);
        let parts = cut(&msg, 128);
        assert!(parts.len() >= 4);
        let whole: Vec<ServerMessage> = parts.iter().cloned().map(ServerMessage::Part).collect();

        // The connection ends before the last part.
        let out = write_all(&whole[..2]);
        let err = read_message(&mut out.as_slice()).unwrap_err();
        assert!(err.to_string().contains("between the parts"), "{err}");

        // Another frame where the next part belongs.
        let mut mixed = whole[..2].to_vec();
        mixed.push(ServerMessage::Progress("interloper".into()));
        let err = read_message(&mut write_all(&mixed).as_slice()).unwrap_err();
        assert!(matches!(&err, FrameError::Decode(m) if m.contains("got a progress frame")), "{err}");

        // A part marked last before the message is complete.
        let mut early = whole[..2].to_vec();
        if let Some(ServerMessage::Part(p)) = early.last_mut() {
            p.last = true;
        }
        let err = read_message(&mut write_all(&early).as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");

        // Bytes after the message.
        let mut trailing = whole.clone();
        if let Some(ServerMessage::Part(p)) = trailing.last_mut() {
            p.bytes.0.extend_from_slice(b"junk");
        }
        let err = read_message(&mut write_all(&trailing).as_slice()).unwrap_err();
        assert!(matches!(&err, FrameError::Decode(m) if m.contains("belong to none")), "{err}");

        // More parts after the one marked last.
        let mut more = whole.clone();
        if let Some(ServerMessage::Part(p)) = more.get_mut(1) {
            p.last = true;
        }
        assert!(read_message(&mut write_all(&more).as_slice()).is_err());

        // A part that claims to be followed by nothing yet is not marked last.
        let mut unterminated = whole.clone();
        if let Some(ServerMessage::Part(p)) = unterminated.last_mut() {
            p.last = false;
        }
        let err = read_message(&mut write_all(&unterminated).as_slice()).unwrap_err();
        assert!(matches!(&err, FrameError::Decode(m) if m.contains("belong to none")), "{err}");

        // A part inside a part.
        let nested = ServerMessage::Part(Part { bytes: Bytes(vec![1, 2, 3]), last: true });
        let wrapped: Vec<ServerMessage> = cut(&nested, 2).into_iter().map(ServerMessage::Part).collect();
        let err = read_message(&mut write_all(&wrapped).as_slice()).unwrap_err();
        assert!(matches!(&err, FrameError::Decode(m) if m.contains("itself a part")), "{err}");

        // The intact stream still reads.
        assert_eq!(list_items(read_message(&mut write_all(&whole).as_slice()).unwrap().unwrap()).len(), 2);
    }

    #[test]
    fn bytes_are_encoded_as_one_length_and_the_bytes() {
        assert_eq!(encoded_len(&Bytes(vec![7; 1000])).unwrap(), 1003);
        let encoded = bincode::serde::encode_to_vec(Bytes(vec![1, 2, 3]), config()).unwrap();
        assert_eq!(encoded, [3, 1, 2, 3]);
        let (back, _): (Bytes, usize) = bincode::serde::decode_from_slice(&encoded, config()).unwrap();
        assert_eq!(back, Bytes(vec![1, 2, 3]));
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(2048), "2 KiB");
        assert_eq!(human_size(MAX_FRAME_LEN), "64 MiB");
        assert_eq!(human_size(73_600_000), "70.2 MiB");
        assert_eq!(human_size(MAX_MESSAGE_LEN), "4 GiB");
        assert_eq!(human_size(u32::MAX as usize), "4.0 GiB");
        assert_eq!(human_size(3 << 30), "3 GiB");
    }
}
