//! The command line: argument types, socket resolution, requests and rendering.
//!
//! clap's derive structs are the "low" stage; each command turns them into a protocol
//! [`Request`] (paths made absolute, files read and parsed) before connecting. Only this module
//! and `main.rs` touch the terminal and the environment. Data goes to stdout, progress and
//! errors to stderr. Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 the server
//! cannot be reached.

mod client;
pub mod complete;
mod dev;
mod get;
mod input;
pub mod output;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::protocol::{
    ApplyRequest, BranchRequest, DeleteRequest, DeleteTarget, ErrorKind, ErrorReport, GetRequest, IdsFreeRequest,
    IdsUsageRequest, ItemOutcome, ItemResult, PlanRequest, Reply, Request, RunDepsRequest, RunDiffRequest,
    RunOnceRequest, ServerApplyRequest,
};
pub use client::Client;

const EXIT_CODES: &str =
    "Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 the server cannot be reached.";

/// choreo: a local, Kubernetes-style automation engine for network and infrastructure intent
#[derive(Debug, Parser)]
#[command(name = "choreo", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// Unix socket of the server. Default: $CHOREO_SOCKET, else the nearest
    /// `.choreo/choreo.sock` from the current directory upwards, else
    /// $XDG_RUNTIME_DIR/choreo/choreo.sock, else /tmp/choreo-<uid>/choreo.sock
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Log debug messages to stderr (RUST_LOG overrides)
    #[arg(short, long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the resource types the server knows
    ApiResources(ApiResourcesArgs),
    /// Show one object or a list of objects
    Get(GetArgs),
    /// Validate objects on the server and write them into the project's in/ files
    Apply(ApplyArgs),
    /// Remove objects from the project's in/ files (or from the store)
    Delete(DeleteArgs),
    /// Reconciler runs
    #[command(subcommand)]
    Run(RunCommand),
    /// Start, inspect and stop the server
    #[command(subcommand)]
    Server(ServerCommand),
    /// Branches of the project's git repository (the user's in static mode, the clone in
    /// dynamic mode)
    #[command(subcommand)]
    Branch(BranchCommand),
    /// Identifier pools of a server started with -r: how full they are, what comes next
    #[command(subcommand)]
    Ids(IdsCommand),
    /// Device configs of a server started with -s
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the server's metrics in the Prometheus text format (what --metrics-listen serves)
    Metrics,
    /// Show what a run over the current files would change, changing nothing: the load and
    /// every reconciler run on a copy of the store (identifier allocations included, released
    /// at the end), compared with the store: `+` create, `~` change, `-` delete. With
    /// --exit-code: 0 no changes, 4 changes, 1-3 as always (failed, usage, unreachable)
    Plan {
        /// A unified diff of each object that changes
        #[arg(short = 'a', long = "show-diff-details")]
        details: bool,
        /// Exit 4 when there are changes (0 when none), for CI gates
        #[arg(long)]
        exit_code: bool,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        timeout: u64,
        /// Preview the project as it is at this git ref instead of the current files: in
        /// dynamic mode what `server apply URL DIR REF` would change (the clone is fetched,
        /// nothing is checked out), e.g. `choreo plan --ref v1.2` before rolling back to v1.2;
        /// in static mode any revision of the project's repository (`main`, `HEAD~1`, a SHA)
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
    },
    /// Wait until an object meets a condition: `choreo wait devices leaf1 --for=condition=Ready`,
    /// `--for=delete`, `--for=jsonpath='{.status.phase}'=Done`; told by the server as the change
    /// commits (no polling). Exit 0 when met, 1 at the timeout
    Wait {
        /// RESOURCE NAME, or RESOURCE/NAME
        #[arg(add = complete::objects())]
        resource: String,
        #[arg(add = complete::objects())]
        name: Option<String>,
        /// condition=TYPE[=STATUS] (STATUS defaults to True), delete, or jsonpath=PATH[=VALUE]
        #[arg(long = "for", value_name = "CONDITION", value_parser = parse_wait_for)]
        until: crate::protocol::WaitFor,
        #[arg(short, long, add = complete::namespaces())]
        namespace: Option<String>,
        /// How long to wait: 30s, 5m, 500ms
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show one object for people: where it is defined, labels, finalizers, owners and
    /// children, its spec, conditions with ages, and the reconcilers that act on it with the
    /// outcome of their last reconcile of it
    Describe {
        /// RESOURCE NAME, or RESOURCE/NAME
        #[arg(add = complete::objects())]
        resource: String,
        #[arg(add = complete::objects())]
        name: Option<String>,
        #[arg(short, long, add = complete::namespaces())]
        namespace: Option<String>,
    },
    /// Document a resource type or one of its fields, from its CRD's schema: type,
    /// description, required fields, enums, defaults (`choreo explain devices.spec.interfaces`)
    Explain {
        /// RESOURCE[.field.path]: plural[.group], kind or short name, then field names
        #[arg(add = complete::explain_targets())]
        target: String,
    },
    /// Developer tools that work on a project directory without a server
    #[command(subcommand)]
    Dev(DevCommand),
    /// Print the shell completion script: `source <(choreo completion bash)` in ~/.bashrc
    /// (zsh alike; fish: `choreo completion fish | source`). Completion is dynamic: at each TAB
    /// the shell asks choreo, which asks the server for resource types, object names and
    /// namespaces (`choreo get dev<TAB>`, `choreo describe devices le<TAB>`, `-n <TAB>`)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the version of this binary and, if one answers, of the server
    Version,
    /// Wait until the server has nothing to do (for tests and scripts; watch events not yet
    /// reported are not waited for)
    #[command(name = "__quiesce", hide = true)]
    Quiesce {
        /// Give up after this many seconds (exit 1)
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// The reconcile worker the server starts (not for people)
    #[command(name = "__reconcile-worker", hide = true)]
    ReconcileWorker(WorkerArgs),
}

/// The arguments the server gives its reconcile worker.
#[derive(Debug, Args, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    pub memory_mib: u64,
    #[arg(long, default_value = "info")]
    pub log_level: log::LevelFilter,
    #[arg(long)]
    pub parent: u32,
}

/// Where reconcilers run (`server start --reconciler-isolation`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum IsolationArg {
    /// In a worker process that can die without the server
    Process,
    /// In the server's engine thread: faster (no pipe exchange per reconcile), but a
    /// reconciler that allocates more than the machine has, or hangs inside a builtin, takes
    /// the server down
    Thread,
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Load the project, then run the reconcilers until nothing changes
    ///
    /// Reconciles every object (with --changed: only what changed since the last run). Fails
    /// (exit 1) on the first reconcile error, naming the reconciler, the object and the message,
    /// or when the run does not settle in time.
    Once {
        /// Reconcile only the objects that changed since the last run (and everything of a
        /// reconciler whose code changed)
        #[arg(long)]
        changed: bool,
        /// Summary format
        #[arg(short, long, value_enum, default_value = "reconciler")]
        output: SummaryFormat,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        timeout: u64,
        /// Change nothing: show what the run would change (the same as `choreo plan`)
        #[arg(long)]
        dry_run: bool,
    },
    /// Start the continuous runner: every change to the project is loaded and reconciled as it
    /// happens (file edits, apply, delete), until `run stop`
    Start,
    /// Stop the continuous runner
    Stop,
    /// Show the summary of the last run
    Result {
        #[arg(short, long, value_enum, default_value = "reconciler")]
        output: SummaryFormat,
    },
    /// List the stored run snapshots, newest first
    List,
    /// Show what the last run changed (compared with the run before it)
    Diff {
        /// Show a unified diff of every changed object (with -c: every changed data path)
        #[arg(short = 'a', long = "show-diff-details")]
        details: bool,
        /// Compare each device's final config with its running config (server started with -s)
        #[arg(short = 'c', long = "show-final-config")]
        final_config: bool,
        /// Include choreo's own APIs (CRDs, reconcilers, libraries)
        #[arg(long)]
        show_choreo_apis: bool,
        /// Include metadata.managedFields in the details
        #[arg(long)]
        show_managed_fields: bool,
    },
    /// Show the ownership tree of the current objects
    Deps {
        #[arg(long)]
        show_choreo_apis: bool,
    },
    /// Reload the project from its files into the store
    Load,
    /// Commit the project's files (in/, crds/, reconcilers/, libs/, refs/) on the checked-out
    /// branch; refused in production
    Commit {
        /// The commit message
        message: String,
    },
    /// Push the checked-out branch to its remote (credentials: ssh-agent, git credential
    /// helpers, the user's git configuration); refused in production
    Push,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SummaryFormat {
    /// Start/Stop/Requeue/Error counts per reconciler
    Reconciler,
    /// Counts per reconciler and object
    Resource,
    /// Every event
    Raw,
    /// The whole summary as JSON
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Compile reconciler and library sources of a project into in/ as Reconciler and Library
    /// objects (in/choreo.kform.dev.reconciler.<name>.yaml, in/choreo.kform.dev.library.<file>.yaml)
    Parse {
        /// The project directory
        dir: PathBuf,
    },
    /// Run one reconciler on objects from a file, offline (no server, no store), and print the
    /// children it produces: `helm template` for choreo, while writing a template or script.
    /// Exits 1 with the error and its place (file:line:column) when the reconcile fails.
    Render {
        /// The project directory (reconcilers from sources or compiled in in/)
        dir: PathBuf,
        /// The reconciler's name (metadata.name of its config)
        reconciler: String,
        /// A YAML file with the for-object(s); every document is reconciled in turn ("-": stdin)
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
        output: DataFormat,
    },
}

// Parsed once per process: the size of the start arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the server in the foreground
    ///
    /// With DIR: static mode. DIR is the project (crds/, in/, ...), its state lives in
    /// DIR/.choreo/, and the socket defaults to DIR/.choreo/choreo.sock. Without DIR: dynamic
    /// mode, waiting for `choreo server apply`.
    ///
    /// As a systemd service: install dist/systemd/choreo.service, choreo.socket and
    /// choreo.sysusers (see the README), then `systemctl enable --now choreo.socket
    /// choreo.service`. Under systemd the server reports readiness (READY=1 once the socket
    /// answers and the project is served), its status and watchdog pings, and serves a socket
    /// passed by socket activation; `choreo server get --wait-ready` waits for it. Members of
    /// --socket-group (primary or supplementary) may use the socket.
    Start(ServerStartArgs),
    /// Show mode, status (with the reason of a failure), context and runner state
    ///
    /// With --wait-ready: wait until the server is Ready (exit 0), Failed (exit 1, with the
    /// reason) or, after --timeout, still unreachable (exit 3) or not ready (exit 1): for deploy
    /// scripts and CI, after `systemctl start choreo` or `server apply`.
    Get {
        #[arg(short, long, value_enum)]
        output: Option<DataFormat>,
        /// Wait for the server to be Ready (or Failed) before answering
        #[arg(long)]
        wait_ready: bool,
        /// How long --wait-ready waits: 90s, 5m, 500ms, or seconds
        #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "wait_ready")]
        timeout: std::time::Duration,
    },
    /// Stop the server gracefully: flush the database durably and remove the socket
    Stop,
    /// Dynamic mode: serve directory DIR of repository URL at REF
    ///
    /// Clones URL into the server's work directory (or fetches it when the clone exists; when
    /// the fetch fails the clone is used as it is, with a warning). Without BRANCH the server
    /// runs in production: REF (a branch, tag or commit hash) is checked out detached and
    /// reconciled continuously; applying an older REF rolls back. With BRANCH it runs in
    /// development: BRANCH is checked out, tracking origin/BRANCH when it exists, else created
    /// at REF; runs are on demand and commit/push are allowed. Applying the same context again
    /// does nothing; uncommitted changes in the clone make a switch fail rather than be lost.
    #[command(
        after_help = "Examples:\n  choreo server apply https://github.com/org/intent.git fabric v1.4.0\n  choreo server apply https://github.com/org/intent.git fabric main feature-x"
    )]
    Apply {
        url: String,
        /// The project directory inside the repository (`.` for its root)
        dir: String,
        /// A branch, tag or (short) commit hash
        #[arg(name = "REF")]
        reference: String,
        /// Work on this branch (development mode)
        branch: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdsCommand {
    /// Size, use and largest free block of each pool: every IPAM index prefix and range, every
    /// id pool (without its reserved minID/maxID ranges) and its ranges
    Usage {
        /// Only this index
        index: Option<String>,
        /// Only this namespace (default: every namespace)
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum)]
        output: Option<DataFormat>,
    },
    /// What INDEX would hand out next, in order, without claiming anything: addresses (or,
    /// with --prefix-length, prefixes) of an IPAM index; ids of an id index (or of one of its
    /// ranges with --range)
    Free {
        index: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// IPAM: prefixes of this length instead of addresses
        #[arg(long, value_name = "N")]
        prefix_length: Option<u8>,
        /// How many to list
        #[arg(long, default_value_t = 1, value_name = "N")]
        count: u32,
        /// Id indexes: inside this range claim's range
        #[arg(long, value_name = "CLAIM")]
        range: Option<String>,
        /// ipam, vlan, as, genid or extcomm, when indexes of several backends share the name
        /// (--prefix-length means ipam)
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
        /// IPAM: only from prefixes with these labels (KEY=VALUE,...), as a claim's selector
        /// would pick them (`purpose=p2p`, `ipam.be.kuid.dev/address-family=ipv6`)
        #[arg(short = 'l', long, value_name = "KEY=VALUE,...")]
        selector: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BranchCommand {
    /// List the local branches (* = checked out), or show the log of BRANCH
    Get { branch: Option<String> },
    /// Create BRANCH at the current commit (without checking it out)
    Create { branch: String },
    /// Delete BRANCH (never the checked-out one; unmerged commits need --force)
    Delete {
        branch: String,
        /// Delete even when its commits are merged nowhere
        #[arg(long)]
        force: bool,
    },
    /// Check out the existing local BRANCH, keeping uncommitted changes that do not conflict
    Checkout { branch: String },
    /// Show which project files differ between the tips of SRC and DST (+ added, - removed, ~ changed)
    Diff { src: String, dst: String },
    /// Put the uncommitted changes (untracked files too) on git's stash (`git stash pop` restores them)
    Stash,
    /// Fast-forward DST to SRC; anything but a fast-forward is refused
    Merge { src: String, dst: String },
}

/// kubectl's two spellings of one object: `RESOURCE NAME` and `RESOURCE/NAME`.
fn resource_and_name(verb: &str, resource: String, name: Option<String>) -> Result<(String, String), CliError> {
    match (resource.split_once('/'), name) {
        (Some((r, n)), None) => Ok((r.to_string(), n.to_string())),
        (None, Some(n)) => Ok((resource, n)),
        _ => Err(CliError::Usage(format!("{verb} RESOURCE NAME, or {verb} RESOURCE/NAME"))),
    }
}

/// `wait --for`: `condition=Ready`, `condition=Ready=False`, `delete`, `jsonpath={.a}=v`.
pub fn parse_wait_for(text: &str) -> Result<crate::protocol::WaitFor, String> {
    use crate::protocol::WaitFor;
    if text == "delete" {
        return Ok(WaitFor::Delete);
    }
    if let Some(c) = text.strip_prefix("condition=") {
        let (t, status) = c.split_once('=').unwrap_or((c, "True"));
        if t.is_empty() {
            return Err("condition= needs a condition type (condition=Ready)".into());
        }
        return Ok(WaitFor::Condition { type_: t.to_string(), status: status.to_string() });
    }
    if let Some(j) = text.strip_prefix("jsonpath=") {
        // The value follows the path's closing brace: `{.status.phase}=Done`.
        let (path, value) = match j.rfind('}') {
            Some(end) => {
                let rest = &j[end + 1..];
                (j[..=end].to_string(), rest.strip_prefix('=').map(str::to_string))
            }
            None => match j.split_once('=') {
                Some((p, v)) => (p.to_string(), Some(v.to_string())),
                None => (j.to_string(), None),
            },
        };
        crate::api::jsonpath::Template::parse(&path)?;
        return Ok(WaitFor::JsonPath { path, value });
    }
    Err(format!("--for={text}: expected condition=TYPE[=STATUS], delete or jsonpath=PATH[=VALUE]"))
}

/// `--metrics-listen`: `HOST:PORT`, or a bare port on loopback.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.trim().parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.trim().parse().map_err(|_| format!("{text:?} is not HOST:PORT (127.0.0.1:9464) or a port"))
}

/// A duration as `90s`, `5m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration (90s, 5m, 500ms)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m, h)")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// Asks for the status until the server is Ready or Failed, or `timeout` passes: unreachable
/// then is exit 3, anything else not ready exit 1.
fn wait_until_ready(
    connect: &dyn Fn() -> Result<Client, CliError>,
    timeout: std::time::Duration,
) -> Result<crate::protocol::ServerStatus, CliError> {
    use crate::protocol::ServerState;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // Why the server is not ready yet: the error to give if time runs out now.
        let why = match connect() {
            Ok(mut c) => match c.request(Request::ServerStatus, &mut |_| {})? {
                Reply::Status(s) if s.status != ServerState::Initializing => return Ok(s),
                Reply::Status(s) => CliError::Failed(format!(
                    "the server is not ready after {timeout:?}: {} {}",
                    s.status,
                    s.reason.lines().next().unwrap_or_default()
                )),
                other => return Err(unexpected(&other)),
            },
            Err(e @ CliError::Unreachable { .. }) => e,
            Err(e) => return Err(e),
        };
        if std::time::Instant::now() >= deadline {
            return Err(why);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// For every leaf of NODE's intended config, where its value comes from: `running`, a
    /// schema `default`, or the Config (namespace/name) that set it
    Blame {
        /// The target Node
        node: String,
        /// Only the leaves at or below this data path (`/interfaces/interface[name=e1]`;
        /// module prefixes optional)
        path: Option<String>,
        /// The Node's namespace, when several Nodes share its name
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: BlameFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BlameFormat {
    Table,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct ServerStartArgs {
    /// The project directory (static mode)
    pub dir: Option<PathBuf>,
    /// Where dynamic mode keeps clones and state [default: $XDG_STATE_HOME/choreo, or
    /// /var/lib/choreo for root]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Directory of CRDs, relative to the project
    #[arg(long, default_value = "crds", value_name = "DIR")]
    pub apis: PathBuf,
    /// Directory of input objects, relative to the project
    #[arg(long, default_value = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// Directory of upstream references, relative to the project
    #[arg(long, default_value = "refs", value_name = "DIR")]
    pub refs: PathBuf,
    /// Let members of this group (name or gid) use the server: the socket becomes 0660 and
    /// owned by the group. By default only the server's own user (and root) may connect
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Where reconcilers run. `process` (the default) runs them in a worker process whose
    /// memory is bounded; a reconcile that exhausts it, or overruns its timeout inside a
    /// builtin, fails with an error and the worker is restarted, while the server stays up
    #[arg(long, value_enum, default_value = "process", value_name = "WHERE", env = "CHOREO_RECONCILER_ISOLATION")]
    pub reconciler_isolation: IsolationArg,
    /// Memory the reconcile worker may use (MiB of address space, besides its 1 GiB stack)
    #[arg(long, default_value_t = crate::reconcile::worker::DEFAULT_WORKER_MEMORY_MIB, value_name = "MIB")]
    pub worker_memory_mib: u64,
    /// Serve the identifier backends (kuid's APIs under ipam/vlan/as/genid/extcomm.be.kuid.dev):
    /// writing an IPIndex or IPClaim (from in/, `choreo apply` or a reconciler) allocates in the
    /// same transaction, and the claim gets its prefix or address in `status`
    #[arg(short = 'r', long, env = "CHOREO_INTERNAL_RECONCILERS")]
    pub internal_reconcilers: bool,
    /// Validate device configs against YANG: after the reconcilers, every Config labelled
    /// `config.sdcio.dev/targetName: NODE` is merged (weakest `spec.priority` first) onto
    /// runningconfigs/NODE.json, the result is validated against the node's schema
    /// (schemas/PROVIDER/VERSION/**.yang, never fetched) and written as the final `Config NODE`
    /// when valid. `run once` fails on any error; in continuous mode `server get` and
    /// `run result` show them
    #[arg(short = 's', long, env = "CHOREO_SDC")]
    pub sdc: bool,
    /// Log lines as text (for people; under systemd without timestamps or colours, with the
    /// journal's priority prefix) or as JSON objects, one per line (timestamp, level, target,
    /// message and fields such as reconciler, object, run)
    #[arg(long, value_enum, default_value = "text", env = "CHOREO_LOG_FORMAT")]
    pub log_format: crate::logging::LogFormat,
    /// Serve the metrics at http://ADDR/metrics for a Prometheus scrape (off unless given; a
    /// bare PORT means 127.0.0.1:PORT). `choreo metrics` prints the same over the socket
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Directory of YANG schemas (PROVIDER/VERSION/...), relative to the project
    #[arg(long, default_value = "schemas", value_name = "DIR")]
    pub schemas: PathBuf,
    /// Directory of running configs (NODE.json), relative to the project
    #[arg(long, alias = "runningConfigs", default_value = "runningconfigs", value_name = "DIR")]
    pub running_configs: PathBuf,
    /// The API of the target devices for -s, as Kind.group
    #[arg(long, default_value = "Node.infra.kuid.dev", value_name = "KIND.GROUP")]
    pub sdc_node_api: String,
    /// Where a target's schema provider is, as a dotted path in the object
    #[arg(long, default_value = "spec.provider", value_name = "PATH")]
    pub sdc_provider_field: String,
    /// Where a target's schema version is; a provider with one schema version needs none
    #[arg(long, default_value = "spec.version", value_name = "PATH")]
    pub sdc_version_field: String,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DataFormat {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ApiResourcesArgs {
    /// Output format (default: a table)
    #[arg(short, long, value_enum)]
    pub output: Option<ApiResourcesFormat>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ApiResourcesFormat {
    Json,
    Name,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type: plural[.group], kind or short name (e.g. helloworlds.example.com)
    #[arg(add = complete::objects())]
    pub resource: String,
    /// Object name; without it, list every object of the type
    #[arg(add = complete::objects())]
    pub name: Option<String>,
    /// Namespace [default: all namespaces for a list, `default` for one object]
    #[arg(short, long, conflicts_with = "all_namespaces", add = complete::namespaces())]
    pub namespace: Option<String>,
    /// List across all namespaces (the default for lists; kubectl's habit)
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output: json, yaml, name, wide (every printer column), jsonpath=TEMPLATE
    /// (`jsonpath='{.items[*].metadata.name}'`, `{range .items[*]}{.metadata.name}{"\n"}{end}`)
    /// or custom-columns=NAME:PATH,… (`custom-columns=NAME:.metadata.name,ASN:.spec.asn`);
    /// default: a table with the CRD's printer columns
    #[arg(short, long, value_parser = get::parse_output, value_name = "FORMAT")]
    pub output: Option<get::GetOutput>,
    /// Only objects whose labels match: `role=leaf`, `site!=ams`, `tier in (1,2)`,
    /// `env notin (lab)`, `owner` (has the label), `!owner` (has not); comma = and
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Only objects whose fields match: `metadata.name=leaf1`, `status.phase!=Done`; comma = and
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Sort the list by a JSONPath (`.metadata.name`, `.spec.asn`; numbers sort as numbers)
    #[arg(long, value_name = "JSONPATH")]
    pub sort_by: Option<String>,
    /// Leave out the header line of tables
    #[arg(long)]
    pub no_headers: bool,
    /// Add a LABELS column to the table
    #[arg(long)]
    pub show_labels: bool,
    /// Include metadata.managedFields
    #[arg(long)]
    pub show_managed_fields: bool,
    /// After the list, print every change as it is committed, until interrupted
    /// (`choreo get devices -w -o name`); a watcher too slow to keep up is told so and ends
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: say what happened to each object (ADDED, MODIFIED, DELETED)
    #[arg(long, requires = "watch")]
    pub output_watch_events: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// File, directory or `-` for stdin (YAML or JSON, multi-document, `kind: List` flattened)
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Descend into sub-directories of directories given with -f
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Take over fields that another field manager owns instead of failing with a conflict
    #[arg(long)]
    pub force_conflicts: bool,
    /// Validate on the server but write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type, then the object name
    #[arg(num_args = 0..=2, value_names = ["RESOURCE", "NAME"], add = complete::objects())]
    pub target: Vec<String>,
    /// Delete the objects defined in these files instead
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace of a named object [default: default]
    #[arg(short, long, add = complete::namespaces())]
    pub namespace: Option<String>,
    /// Delete nothing: show what the next run would do without the objects
    #[arg(long)]
    pub dry_run: bool,
}

/// Errors of a CLI command, each with its exit code.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    /// No connection could be made: exit 3, with a hint to start a server.
    Unreachable {
        socket: PathBuf,
        reason: String,
    },
    /// The connection broke or carried something unreadable after it was made: exit 1.
    Connection {
        socket: PathBuf,
        reason: String,
    },
    Server(ErrorReport),
    Failed(String),
    /// Per-object errors were already printed; exit 1.
    Reported,
    /// `plan --exit-code`: the plan has changes (exit 4); nothing more to print.
    Changes,
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Connection { .. } | CliError::Server(_) | CliError::Failed(_) | CliError::Reported => 1,
            CliError::Changes => 4,
        }
    }

    /// Prints the error to stderr in the one format every command uses.
    pub fn print(&self) {
        end_progress_line();
        let mut err = std::io::stderr().lock();
        let _ = match self {
            CliError::Usage(m) => writeln!(err, "Error: {m}"),
            CliError::Unreachable { socket, reason } => writeln!(
                err,
                "Error: cannot reach the choreo server at {}: {reason}\nHint: start one with `choreo server start DIR`, or point --socket / CHOREO_SOCKET at a running one",
                socket.display()
            ),
            CliError::Connection { socket, reason } => {
                writeln!(err, "Error: the connection to the choreo server at {} failed: {reason}", socket.display())
            }
            CliError::Server(report) => {
                let mut r = writeln!(err, "Error: {}", report.message);
                for c in &report.causes {
                    r = r.and_then(|_| writeln!(err, "  {c}"));
                }
                for h in &report.hints {
                    r = r.and_then(|_| writeln!(err, "Hint: {h}"));
                }
                r
            }
            CliError::Failed(m) => writeln!(err, "Error: {m}"),
            CliError::Reported | CliError::Changes => Ok(()),
        };
    }
}

/// Finds the socket a client should use (SPEC §3).
pub fn client_socket(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("CHOREO_SOCKET").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join(".choreo").join("choreo.sock");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    default_socket()
}

/// The socket of a server started with `project` (static mode) or none (dynamic mode).
pub fn server_socket(flag: Option<&Path>, project: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("CHOREO_SOCKET").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    match project {
        Some(dir) => dir.join(".choreo").join("choreo.sock"),
        None => default_socket(),
    }
}

fn default_socket() -> PathBuf {
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(run).join("choreo").join("choreo.sock");
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/choreo-{uid}")).join("choreo.sock")
}

/// Writes command output to stdout; a closed pipe (`choreo get | head`) is not an error.
fn emit(text: &str) -> Result<(), CliError> {
    end_progress_line();
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::Failed(format!("cannot write to stdout: {e}"))),
    }
}

/// Whether a transient progress line is on the terminal, waiting to be replaced or ended.
static TRANSIENT_SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a progress line from the server to stderr. A line starting with
/// [`crate::protocol::TRANSIENT`] (a run's counts, a clone's percentage) replaces the previous
/// one on a terminal, as one updating line; piped, every line stays (the server sends them at
/// most once a second).
fn progress(line: &str) {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    let tty = std::io::stderr().is_terminal();
    match line.strip_prefix(crate::protocol::TRANSIENT) {
        Some(rest) if tty => {
            eprint!("\r\x1b[2K{rest}");
            TRANSIENT_SHOWN.store(true, Ordering::Relaxed);
        }
        Some(rest) => eprintln!("{rest}"),
        None => {
            end_progress_line();
            eprintln!("{line}");
        }
    }
}

/// Ends an updating progress line before anything else is written.
fn end_progress_line() {
    if TRANSIENT_SHOWN.swap(false, std::sync::atomic::Ordering::Relaxed) {
        eprintln!();
    }
}

/// Runs a client command (everything but `server start`).
pub fn run(cli: Cli) -> Result<(), CliError> {
    let socket = client_socket(cli.socket.as_deref());
    let connect = || Client::connect(&socket);
    match cli.command {
        Command::Server(ServerCommand::Start(_)) | Command::ReconcileWorker(_) => {
            Err(CliError::Usage("`server start` is not a client command".into()))
        }
        Command::Completion { shell } => emit(&complete::registration(shell)?),
        Command::Quiesce { timeout } => {
            let reply = connect()?.request(Request::Quiesce { timeout_secs: timeout }, &mut progress)?;
            match reply {
                Reply::Done => Ok(()),
                other => Err(unexpected(&other)),
            }
        }
        Command::Version => {
            let mut text =
                format!("choreo {} (protocol {})\n", env!("CARGO_PKG_VERSION"), crate::protocol::PROTOCOL_VERSION);
            if let Ok(mut c) = connect() {
                if let Ok(Reply::Status(s)) = c.request(Request::ServerStatus, &mut progress) {
                    text.push_str(&format!(
                        "server: choreo {} (pid {}) on {}\n",
                        s.server_version,
                        s.pid,
                        socket.display()
                    ));
                }
            }
            emit(&text)
        }
        Command::Server(ServerCommand::Get { output, wait_ready, timeout }) => {
            let s = if wait_ready {
                wait_until_ready(&connect, timeout)?
            } else {
                let reply = connect()?.request(Request::ServerStatus, &mut progress)?;
                let Reply::Status(s) = reply else { return Err(unexpected(&reply)) };
                s
            };
            match output {
                Some(DataFormat::Json) => emit(&output::json(&output::status_json(&s)))?,
                Some(DataFormat::Yaml) => emit(&output::yaml(&output::status_json(&s)))?,
                None => emit(&output::status_text(&s))?,
            }
            match (wait_ready, s.status) {
                (true, crate::protocol::ServerState::Failed) => {
                    Err(CliError::Failed(format!("the server failed: {}", s.reason.lines().next().unwrap_or_default())))
                }
                _ => Ok(()),
            }
        }
        Command::Server(ServerCommand::Stop) => {
            connect()?.request(Request::ServerStop, &mut progress)?;
            eprintln!("server stopped");
            Ok(())
        }
        Command::Dev(DevCommand::Parse { dir }) => dev::parse(&dir),
        Command::Dev(DevCommand::Render { dir, reconciler, file, output }) => {
            dev::render(&dir, &reconciler, &file, output)
        }
        Command::Server(ServerCommand::Apply { url, dir, reference, branch }) => {
            // A local path means the client's directory, not the server's.
            let url = match std::fs::canonicalize(&url) {
                Ok(abs) if !url.contains("://") => abs.display().to_string(),
                _ => url,
            };
            let req = ServerApplyRequest { url, directory: dir, reference, branch };
            message(connect()?.request(Request::ServerApply(req), &mut progress)?)
        }
        Command::Run(RunCommand::Commit { message: m }) => {
            message(connect()?.request(Request::RunCommit { message: m }, &mut progress)?)
        }
        Command::Run(RunCommand::Push) => message(connect()?.request(Request::RunPush, &mut progress)?),
        Command::Branch(cmd) => {
            let req = match cmd {
                BranchCommand::Get { branch } => BranchRequest::Get { name: branch },
                BranchCommand::Create { branch } => BranchRequest::Create { name: branch },
                BranchCommand::Delete { branch, force } => BranchRequest::Delete { name: branch, force },
                BranchCommand::Checkout { branch } => BranchRequest::Checkout { name: branch },
                BranchCommand::Diff { src, dst } => BranchRequest::Diff { src, dst },
                BranchCommand::Stash => BranchRequest::Stash,
                BranchCommand::Merge { src, dst } => BranchRequest::Merge { src, dst },
            };
            match connect()?.request(Request::Branch(req), &mut progress)? {
                Reply::Branches(list) => emit(
                    &list
                        .iter()
                        .map(|b| format!("{} {}\n", if b.checked_out { "*" } else { " " }, b.name))
                        .collect::<String>(),
                ),
                Reply::Log(log) => emit(&output::git_log(&log)),
                Reply::BranchDiff(items) => emit(&output::branch_diff(&items)),
                other => message(other),
            }
        }
        Command::Run(RunCommand::Once { dry_run: true, timeout, .. }) => {
            plan(connect()?, PlanRequest { timeout_secs: timeout, ..PlanRequest::default() }, false)
        }
        Command::Plan { details, exit_code, timeout, reference } => plan(
            connect()?,
            PlanRequest { timeout_secs: timeout, details, reference, ..PlanRequest::default() },
            exit_code,
        ),
        Command::Run(RunCommand::Once { output, timeout, changed, dry_run: false }) => {
            let reply = connect()?.request(
                Request::RunOnce(RunOnceRequest { timeout_secs: timeout, changed_only: changed }),
                &mut progress,
            )?;
            let Reply::Run(summary) = reply else { return Err(unexpected(&reply)) };
            emit(&output::run_summary(&summary, output))?;
            if summary.success {
                // JSON output stays one JSON document.
                if output == SummaryFormat::Json {
                    return Ok(());
                }
                emit("completed\n")
            } else {
                Err(CliError::Reported)
            }
        }
        Command::Run(RunCommand::Start) => {
            connect()?.request(Request::RunStart, &mut progress)?;
            eprintln!("runner started");
            Ok(())
        }
        Command::Run(RunCommand::Stop) => {
            connect()?.request(Request::RunStop, &mut progress)?;
            eprintln!("runner stopped");
            Ok(())
        }
        Command::Run(RunCommand::Result { output }) => {
            let reply = connect()?.request(Request::RunResult, &mut progress)?;
            let Reply::Run(summary) = reply else { return Err(unexpected(&reply)) };
            emit(&output::run_summary(&summary, output))
        }
        Command::Run(RunCommand::List) => {
            let reply = connect()?.request(Request::RunList, &mut progress)?;
            let Reply::Snapshots(list) = reply else { return Err(unexpected(&reply)) };
            emit(
                &list
                    .iter()
                    .map(|s| format!("{} {} {}\n", s.id, s.time, if s.success { "success" } else { "failed" }))
                    .collect::<String>(),
            )
        }
        Command::Run(RunCommand::Diff { details, final_config, show_choreo_apis, show_managed_fields }) => {
            let reply = connect()?.request(
                Request::RunDiff(RunDiffRequest { show_choreo_apis, show_managed_fields, details, final_config }),
                &mut progress,
            )?;
            let Reply::Diff(items) = reply else { return Err(unexpected(&reply)) };
            emit(&output::diff(&items))
        }
        Command::Run(RunCommand::Deps { show_choreo_apis }) => {
            let reply = connect()?.request(Request::RunDeps(RunDepsRequest { show_choreo_apis }), &mut progress)?;
            let Reply::Deps(nodes) = reply else { return Err(unexpected(&reply)) };
            emit(&output::deps(&nodes))
        }
        Command::Wait { resource, name, until, namespace, timeout } => {
            let (resource, name) = resource_and_name("wait", resource, name)?;
            let req = crate::protocol::WaitRequest {
                target: GetRequest { resource, name: Some(name), namespace, ..Default::default() },
                until,
                timeout_secs: timeout.as_secs().max(1),
            };
            message(connect()?.request(Request::Wait(req), &mut progress)?)
        }
        Command::Describe { resource, name, namespace } => {
            let (resource, name) = resource_and_name("describe", resource, name)?;
            let req = GetRequest { resource, name: Some(name), namespace, ..Default::default() };
            match connect()?.request(Request::Describe(req), &mut progress)? {
                Reply::Message(text) => emit(&format!("{text}\n")),
                other => Err(unexpected(&other)),
            }
        }
        Command::Explain { target } => match connect()?.request(Request::Explain { target }, &mut progress)? {
            Reply::Message(text) => emit(&text),
            other => Err(unexpected(&other)),
        },
        Command::Metrics => match connect()?.request(Request::Metrics, &mut progress)? {
            Reply::Metrics(text) => emit(&text),
            other => Err(unexpected(&other)),
        },
        Command::Config(ConfigCommand::Blame { node, path, namespace, output }) => {
            let reply = connect()?.request(
                Request::ConfigBlame(crate::protocol::ConfigBlameRequest { node, namespace, path }),
                &mut progress,
            )?;
            let Reply::Blame(rows) = reply else { return Err(unexpected(&reply)) };
            emit(&output::blame(&rows, output == BlameFormat::Json))
        }
        Command::Ids(IdsCommand::Usage { index, namespace, output }) => {
            let reply = connect()?.request(Request::IdsUsage(IdsUsageRequest { namespace, index }), &mut progress)?;
            let Reply::IdsUsage(list) = reply else { return Err(unexpected(&reply)) };
            match output {
                Some(DataFormat::Json) => emit(&output::json(&serde_json::to_value(&list).unwrap_or_default())),
                Some(DataFormat::Yaml) => emit(&output::yaml(&serde_json::to_value(&list).unwrap_or_default())),
                None => emit(&output::ids_usage(&list)),
            }
        }
        Command::Ids(IdsCommand::Free { index, namespace, prefix_length, count, range, backend, selector }) => {
            let mut labels = Vec::new();
            for pair in selector.iter().flat_map(|s| s.split(',')).filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--selector: {pair:?} is not KEY=VALUE")))?;
                labels.push((k.trim().to_string(), v.trim().to_string()));
            }
            let req = IdsFreeRequest { namespace, index, prefix_length, count, range, backend, selector: labels };
            let reply = connect()?.request(Request::IdsFree(req), &mut progress)?;
            let Reply::IdsFree(list) = reply else { return Err(unexpected(&reply)) };
            if list.is_empty() {
                return Err(CliError::Failed("nothing free".into()));
            }
            emit(&list.iter().map(|v| format!("{v}\n")).collect::<String>())
        }
        Command::Run(RunCommand::Load) => {
            connect()?.request(Request::RunLoad, &mut progress)?;
            eprintln!("project loaded");
            Ok(())
        }
        Command::ApiResources(args) => {
            let reply = connect()?.request(Request::ApiResources, &mut progress)?;
            let Reply::ApiResources(list) = reply else { return Err(unexpected(&reply)) };
            match args.output {
                Some(ApiResourcesFormat::Json) => emit(&output::json(&output::api_resources_json(&list))),
                Some(ApiResourcesFormat::Name) => {
                    emit(&list.iter().map(|r| format!("{}{}\n", r.resource, dot_group(&r.group))).collect::<String>())
                }
                None => emit(&output::api_resources_table(&list)),
            }
        }
        Command::Get(args) => get(connect()?, args),
        Command::Apply(args) => apply(connect, args),
        Command::Delete(args) => delete(connect, args),
    }
}

/// `plan`: the changes, a summary line, and with `exit_code` exit 4 when there are any.
fn plan(mut client: Client, req: PlanRequest, exit_code: bool) -> Result<(), CliError> {
    let Reply::Plan(plan) = client.request(Request::Plan(req), &mut progress)? else {
        return Err(CliError::Failed("unexpected reply to plan".into()));
    };
    if !plan.run.success {
        emit(&output::run_summary(&plan.run, SummaryFormat::Reconciler))?;
        return Err(CliError::Failed("the planned run fails: nothing would change until it succeeds".into()));
    }
    emit(&output::diff(&plan.changes))?;
    let count = |s: crate::protocol::DiffSymbol| plan.changes.iter().filter(|c| c.symbol == s).count();
    use crate::protocol::DiffSymbol as S;
    let (add, change, delete) = (count(S::Added), count(S::Modified), count(S::Deleted));
    if add + change + delete == 0 {
        emit("No changes: the store matches the files and the reconcilers.\n")?;
        return Ok(());
    }
    emit(&format!("Plan: {add} to create, {change} to change, {delete} to delete.\n"))?;
    if exit_code {
        Err(CliError::Changes)
    } else {
        Ok(())
    }
}

/// Prints a one-line outcome.
fn message(reply: Reply) -> Result<(), CliError> {
    match reply {
        Reply::Message(m) => emit(&format!("{m}\n")),
        Reply::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn dot_group(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    }
}

fn unexpected(reply: &Reply) -> CliError {
    CliError::Failed(format!("unexpected reply from the server: {reply:?}"))
}

fn parse_object(text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Failed(format!("the server sent an invalid object: {e}")))
}

fn get(client: Client, args: GetArgs) -> Result<(), CliError> {
    get::get(
        client,
        get::GetOptions {
            resource: args.resource,
            name: args.name,
            namespace: args.namespace,
            all_namespaces: args.all_namespaces,
            output: args.output.unwrap_or(get::GetOutput::Table),
            selector: args.selector,
            field_selector: args.field_selector,
            sort_by: args.sort_by,
            no_headers: args.no_headers,
            show_labels: args.show_labels,
            show_managed_fields: args.show_managed_fields,
            watch: args.watch,
            watch_events: args.output_watch_events,
        },
    )
}

/// Prints per-object results; returns `Reported` when any failed.
/// With `dry_run`, what would have been written says so.
fn report_items(items: &[ItemResult], dry_run: bool) -> Result<(), CliError> {
    let mut failed = false;
    let mut text = String::new();
    for item in items {
        match &item.error {
            Some(e) => {
                failed = true;
                eprintln!("Error: {e}");
            }
            None => {
                text.push_str(&format!("{} {}", item.object, item.outcome));
                if dry_run && matches!(item.outcome, ItemOutcome::Created | ItemOutcome::Configured) {
                    text.push_str(" (dry run)");
                }
                if let Some(f) = &item.file {
                    text.push_str(&format!(" ({f})"));
                }
                text.push('\n');
            }
        }
    }
    emit(&text)?;
    if failed {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

fn apply(connect: impl Fn() -> Result<Client, CliError>, args: ApplyArgs) -> Result<(), CliError> {
    let documents = input::read_documents(&args.files, args.recursive)?;
    if documents.is_empty() {
        return Err(CliError::Failed("no objects passed to apply".into()));
    }
    let preview_docs = args.dry_run.then(|| documents.clone());
    let reply = connect()?.request(
        Request::Apply(ApplyRequest { documents, force: args.force_conflicts, dry_run: args.dry_run }),
        &mut progress,
    )?;
    match reply {
        Reply::Items(items) => {
            report_items(&items, args.dry_run)?;
            // Valid: what the next run would do with it, reconcilers included.
            let Some(documents) = preview_docs else { return Ok(()) };
            let req = PlanRequest {
                timeout_secs: 30,
                apply: documents,
                force: args.force_conflicts,
                ..PlanRequest::default()
            };
            preview(connect()?, req, "With this change")
        }
        other => Err(unexpected(&other)),
    }
}

fn delete(connect: impl Fn() -> Result<Client, CliError>, args: DeleteArgs) -> Result<(), CliError> {
    let targets: Vec<DeleteTarget> = match (args.target.as_slice(), args.files.is_empty()) {
        ([resource, name], true) => vec![DeleteTarget::Named {
            resource: resource.clone(),
            name: name.clone(),
            namespace: args.namespace.clone(),
        }],
        ([], false) => {
            input::read_documents(&args.files, args.recursive)?.into_iter().map(DeleteTarget::Object).collect()
        }
        ([_], true) => {
            return Err(CliError::Usage("nothing to delete: give a resource type and a name, or -f FILE".into()))
        }
        ([], true) => return Err(CliError::Usage("nothing to delete: give RESOURCE NAME or -f FILE".into())),
        _ => return Err(CliError::Usage("give either RESOURCE NAME or -f FILE, not both".into())),
    };
    if targets.is_empty() {
        return Err(CliError::Failed("no objects passed to delete".into()));
    }
    if args.dry_run {
        let req = PlanRequest { timeout_secs: 30, delete: targets, ..PlanRequest::default() };
        return preview(connect()?, req, "Without these objects");
    }
    let reply = connect()?.request(Request::Delete(DeleteRequest { targets }), &mut progress)?;
    match reply {
        Reply::Items(items) => report_items(&items, false),
        other => Err(unexpected(&other)),
    }
}

/// What the next run would do after an edit that is not made (`--dry-run`).
fn preview(mut client: Client, req: PlanRequest, with: &str) -> Result<(), CliError> {
    let Reply::Plan(plan) = client.request(Request::Plan(req), &mut progress)? else {
        return Err(CliError::Failed("unexpected reply to the preview".into()));
    };
    if !plan.run.success {
        return emit(&format!(
            "{with} the next run would fail: {} {}\n",
            plan.run.task,
            plan.run.message.lines().next().unwrap_or_default()
        ));
    }
    emit(&format!("{with}, the next run would:\n"))?;
    emit(&output::diff(&plan.changes))
}

/// `dev parse DIR`: compiles the project's reconciler and library sources into `in/`.
/// An error report for a failure on the client side before anything was sent.
pub fn local_error(kind: ErrorKind, message: impl Into<String>) -> CliError {
    CliError::Server(ErrorReport::new(kind, message))
}
