//! The `choreo` binary: parses the command line, then either runs the server (`server start`)
//! or a client command. This is the only place that wires `cli` and `server` together and the
//! only place that installs the logger.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use choreo::cli::{self, Cli, CliError, Command, ServerCommand, ServerStartArgs};
use choreo::engine::Mode;
use choreo::project::Layout;
use choreo::server::{self, ServerConfig};

fn main() -> ExitCode {
    // A shell asking for completions (`COMPLETE=bash choreo -- …`) is answered, then we exit.
    cli::complete::answer_if_asked();
    let cli = Cli::parse();
    if let Command::ReconcileWorker(args) = &cli.command {
        // The worker logs through its pipe to the server, never on its own.
        let args = choreo::reconcile::worker::WorkerArgs {
            memory_mib: args.memory_mib,
            log_level: args.log_level,
            parent: args.parent,
        };
        return match choreo::reconcile::worker::serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("choreo reconcile worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let level = if cli.debug { "debug" } else { "info" };
    let format = match &cli.command {
        Command::Server(ServerCommand::Start(args)) => args.log_format,
        _ => choreo::logging::LogFormat::Text,
    };
    choreo::logging::init(level, format);
    let result = match &cli.command {
        Command::Server(ServerCommand::Start(args)) => start_server(cli.socket.clone(), args.clone()),
        _ => cli::run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// `-s`'s flags; the directories must stay inside the project.
fn sdc_options(args: &ServerStartArgs) -> Result<choreo::engine::sdc::SdcOptions, CliError> {
    if !cfg!(feature = "sdc") {
        return Err(CliError::Usage("this choreo was built without the `sdc` feature: -s is not available".into()));
    }
    for (flag, dir) in [("--schemas", &args.schemas), ("--running-configs", &args.running_configs)] {
        let inside = dir.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || dir.as_os_str().is_empty() {
            return Err(CliError::Usage(format!(
                "{flag} {}: must be a directory inside the project (a relative path without `..`)",
                dir.display()
            )));
        }
    }
    let (kind, group) =
        args.sdc_node_api.split_once('.').filter(|(k, g)| !k.is_empty() && !g.is_empty()).ok_or_else(|| {
            CliError::Usage(format!("--sdc-node-api {}: expected KIND.GROUP (Node.infra.kuid.dev)", args.sdc_node_api))
        })?;
    Ok(choreo::engine::sdc::SdcOptions {
        schemas: args.schemas.clone(),
        running_configs: args.running_configs.clone(),
        node_group: group.to_string(),
        node_kind: kind.to_string(),
        provider_field: args.sdc_provider_field.clone(),
        version_field: args.sdc_version_field.clone(),
    })
}

fn start_server(socket: Option<PathBuf>, args: ServerStartArgs) -> Result<(), CliError> {
    // The directory names of the flags; the root is the project (static) or each checkout.
    let mut names = Layout::new(PathBuf::new());
    names.apis = args.apis.clone();
    names.input = args.input.clone();
    names.refs = args.refs.clone();
    let (mode, state_dir, project) = match &args.dir {
        Some(dir) => {
            let root = std::fs::canonicalize(dir)
                .map_err(|e| CliError::Usage(format!("invalid project directory {}: {e}", dir.display())))?;
            if !root.is_dir() {
                return Err(CliError::Usage(format!("invalid project directory {}: not a directory", dir.display())));
            }
            let layout = names.with_root(root.clone());
            let state = layout.state_dir();
            (Mode::Static { layout }, state, Some(root))
        }
        None => {
            let work_dir = args.work_dir.clone().unwrap_or_else(default_work_dir);
            (Mode::Dynamic { work_dir: work_dir.clone(), template: names }, work_dir, None)
        }
    };
    let socket_group = match &args.socket_group {
        None => None,
        Some(g) => Some(resolve_group(g)?),
    };
    let config = ServerConfig {
        mode,
        state_dir,
        socket: cli::server_socket(socket.as_deref(), project.as_deref()),
        socket_group,
        metrics_listen: args.metrics_listen,
        engine: choreo::engine::Options {
            isolation: match args.reconciler_isolation {
                cli::IsolationArg::Process => choreo::reconcile::worker::Isolation::process(args.worker_memory_mib),
                cli::IsolationArg::Thread => choreo::reconcile::worker::Isolation::Thread,
            },
            internal_reconcilers: args.internal_reconcilers,
            sdc: match args.sdc {
                false => None,
                true => Some(sdc_options(&args)?),
            },
        },
    };
    server::run(config).map_err(|e| CliError::Failed(e.to_string()))
}

fn default_work_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(state).join("choreo");
    }
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        return PathBuf::from("/var/lib/choreo");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/choreo"),
        None => PathBuf::from("/tmp/choreo-state"),
    }
}

fn resolve_group(g: &str) -> Result<u32, CliError> {
    if let Ok(gid) = g.parse() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(g).map_err(|_| CliError::Usage(format!("invalid group name {g:?}")))?;
    // SAFETY: getgrnam reads a NUL-terminated name; the result is only read before any other
    // call that could overwrite its static buffer.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(CliError::Usage(format!("unknown group {g:?}")));
    }
    // SAFETY: `entry` is non-null and points to a valid group record.
    Ok(unsafe { (*entry).gr_gid })
}
