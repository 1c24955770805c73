//! The Starlark runtime: reconcilers written as a `reconcile(self)` function in
//! `reconciler.star`, with libraries loaded by name.
//!
//! A reconciler is compiled once per project load: parsed, its top level evaluated (which
//! loads and freezes its libraries) and frozen. Each reconcile then only builds `self` on a
//! fresh heap and calls the frozen `reconcile` function, where upstream re-parses the script and
//! re-executes every library each time.
//!
//! Two contracts exist, told apart by how the script calls `reconcile_result` (§0 of the
//! reconciler notes). With 6 arguments (the era of the examples) the builtin itself applies the
//! object with its condition, children are written only by `client_apply()`, and finalizers and
//! deletion are the script's business. With 5 arguments choreo does that work after the script
//! returns: it applies unapplied children, then the fetched for-object with the returned
//! `status` (and `spec` when `specUpdate`), the reconciler's finalizer and condition; on deletion
//! it deletes the children and drops its finalizer, without running the script unless
//! `specUpdate` asks for it. Since that decision precedes running the script, the form is read
//! from the code when it is compiled.

mod builtins;
mod convert;
mod libraries;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::sync::{Arc, OnceLock};

use serde_json::Value as Json;
use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::DictRef;
use starlark::values::{OwnedFrozenValue, Value};

pub use libraries::Libraries;

use super::children::{self, client_outcome, Children};
use super::{Budget, Client, Limits, Outcome, ReconcilerConfig, Runtime};
use crate::api::object;
use builtins::Ctx;
use libraries::{Loader, FORM_HEAD};

/// The file name of a reconciler's script, also its name in error locations.
const MAIN_FILE: &str = "reconciler.star";

/// Go starlark's default dialect, near enough: `def`, `lambda` and `load`, no top-level
/// `if`/`for`. Re-exporting loaded names is allowed (Go forbids it; harmless).
pub(crate) const DIALECT: Dialect = Dialect::Standard;

/// The builtins plus Starlark's standard functions, built once per process.
pub(crate) fn globals() -> &'static Globals {
    static GLOBALS: OnceLock<Globals> = OnceLock::new();
    GLOBALS.get_or_init(|| GlobalsBuilder::extended_by(&[LibraryExtension::Print]).with(builtins::builtins).build())
}

/// `print()` in scripts goes to the debug log, not to the engine's stdout.
struct LogPrint;

impl starlark::PrintHandler for LogPrint {
    fn println(&self, text: &str) -> starlark::Result<()> {
        log::debug!(target: "choreo::starlark", "{text}");
        Ok(())
    }
}

static LOG_PRINT: LogPrint = LogPrint;

/// Settings every evaluator gets, whether it loads a module or runs a reconcile: `print` to
/// the log, and the step and heap limits (a module's top level gets the defaults).
pub(crate) fn limit_evaluator(eval: &mut Evaluator, limits: &Limits) {
    eval.set_print_handler(&LOG_PRINT);
    // Only fail when a limit was already set, which never happens on a fresh evaluator.
    let _ = eval.set_max_tick_count(limits.steps);
    let _ = eval.set_max_heap_size(limits.memory);
}

/// The error of a script stopped by a limit, naming the limit; `None` for any other error.
fn limit_error(eval: &Evaluator, budget: &Budget<'_>) -> Option<String> {
    if let Some(why) = budget.exhausted() {
        return Some(why.to_string());
    }
    let limits = &budget.limits;
    if eval.get_total_tick_count() > limits.steps {
        return Some(format!(
            "the reconcile took more than its limit of {} steps (function calls and loop iterations; spec.limits.steps)",
            limits.steps
        ));
    }
    if eval.heap().peak_allocated_bytes() > limits.memory {
        return Some(format!(
            "the script's heap grew past its limit of {} MiB (spec.limits.memoryMiB)",
            limits.memory >> 20
        ));
    }
    None
}

/// A Starlark error as one line: `file:LINE:COL: message`, with the reconciler.star line that
/// led into a library when the error happened there.
pub(crate) fn error_line(e: &starlark::Error) -> String {
    let message = one_line(&format!("{:#}", e.without_diagnostic()));
    // Errors without a place (a resource limit) still say which file was running.
    let Some(span) = e.span() else {
        return format!("{MAIN_FILE}: {message}");
    };
    let mut out = format!("{}: {message}", location(span));
    if span.filename() != MAIN_FILE {
        let caller =
            e.call_stack().frames.iter().rev().filter_map(|f| f.location.as_ref()).find(|l| l.filename() == MAIN_FILE);
        if let Some(caller) = caller {
            out.push_str(&format!(" (called from {})", location(caller)));
        }
    }
    out
}

fn location(span: &starlark::codemap::FileSpan) -> String {
    let pos = span.resolve_span().begin;
    format!("{}:{}:{}", span.filename(), pos.line + 1, pos.column + 1)
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// A compiled Starlark reconciler (`reconciler.star` of its config), frozen once.
pub struct StarlarkRuntime {
    cfg: Arc<ReconcilerConfig>,
    /// Kept so the libraries' frozen modules outlive every reconciler that uses them (the frozen
    /// heaps reference each other anyway; this makes the ownership explicit).
    _libraries: Arc<Libraries>,
    _module: FrozenModule,
    reconcile: OwnedFrozenValue,
    /// Run the script for an object being deleted (6-argument contract, or `specUpdate`).
    script_on_delete: bool,
}

impl std::fmt::Debug for StarlarkRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StarlarkRuntime").field("reconciler", &self.cfg.name).finish_non_exhaustive()
    }
}

impl StarlarkRuntime {
    /// Parses and evaluates reconciler.star (resolving load() through `libraries`). Errors are
    /// one line: `reconciler.star:LINE:COL: message` (or `<library name>:LINE:COL: …` for an error
    /// inside a library, `cycle in load graph: a.star -> b.star -> a.star`, `module X not found in library`).
    pub fn compile(cfg: Arc<ReconcilerConfig>, libraries: Arc<Libraries>) -> Result<StarlarkRuntime, String> {
        let source = cfg.code.get(MAIN_FILE).ok_or_else(|| format!("{MAIN_FILE}: missing"))?;
        let ast = AstModule::parse(MAIN_FILE, source.clone(), &DIALECT).map_err(|e| error_line(&e))?;
        let loader = Loader::new(&libraries, Vec::new());
        loader.note(libraries::scan_forms(&ast));
        let module = libraries::evaluate(ast, &loader).map_err(|e| error_line(&e))?;
        let reconcile = module
            .get_option("reconcile")
            .ok()
            .flatten()
            .filter(|f| f.value().get_type() == "function")
            .ok_or_else(|| format!("{MAIN_FILE}: no function reconcile(self) defined"))?;
        // A script that only ever calls the 5-argument form leaves deletion to choreo. Without a
        // literal call to go by, a configured conditionType (a HEAD-only field) decides.
        let forms = loader.forms();
        let head_only = if forms == 0 { cfg.condition_type.is_some() } else { forms == FORM_HEAD };
        let script_on_delete = cfg.spec_update || !head_only;
        Ok(StarlarkRuntime { cfg, _libraries: libraries, _module: module, reconcile, script_on_delete })
    }

    /// Calls `reconcile(self)` and reads back what it returned.
    fn run(&self, object: &Json, ctx: &Ctx, budget: &Budget<'_>) -> Result<ScriptResult, String> {
        Module::with_temp_heap(|module| {
            let heap = module.heap();
            let this = convert::to_starlark(object, heap).map_err(|e| format!("{MAIN_FILE}: self: {e}"))?;
            let function = heap.access_owned_frozen_value(&self.reconcile);
            let mut eval = Evaluator::new(&module);
            eval.extra = Some(ctx);
            limit_evaluator(&mut eval, &budget.limits);
            // Checked every thousand steps inside the interpreter.
            eval.set_check_cancelled(Box::new(|| budget.exhausted().is_some()));
            let returned = match eval.eval_function(function, &[this], &[]) {
                Ok(v) => v,
                Err(e) => {
                    return Err(match limit_error(&eval, budget) {
                        // The place (file:line:col) the script was stopped at, if known.
                        Some(limit) => format!("{}: {limit}", e.span().map_or_else(|| MAIN_FILE.to_string(), location)),
                        None => error_line(&e),
                    });
                }
            };
            ScriptResult::read(returned)
        })
    }

    /// The 5-argument contract after the script returned.
    fn finish_head(
        &self,
        live: &Json,
        client: &mut dyn Client,
        children: &mut Children,
        children_applied: bool,
        res: ScriptResult,
    ) -> Outcome {
        let cfg = &*self.cfg;
        if let Some(error) = &res.error {
            // Record the failure on the object's condition, then report it.
            children::record_failure(cfg, live, client, error);
            return res.outcome();
        }
        if object::deletion_timestamp(live).is_some() {
            return children::finish_delete(&self.cfg, live, client);
        }
        if !children_applied {
            if let Err(e) = children.apply(cfg, client) {
                return client_outcome(e);
            }
        }
        let mut base = live.clone();
        let mut fields = vec!["status"];
        if cfg.spec_update {
            fields.push("spec");
        }
        if let (Some(map), Some(returned)) = (base.as_object_mut(), res.obj.as_ref()) {
            for field in fields {
                match returned.get(field) {
                    Some(v) => map.insert(field.to_string(), v.clone()),
                    None => map.remove(field),
                };
            }
        }
        let applied =
            children::intent(&base, &cfg.name).and_then(|intent| children::apply_with_marks(cfg, intent, live, client));
        match applied {
            Ok(_) => res.outcome(),
            Err(e) => client_outcome(e),
        }
    }
}

impl Runtime for StarlarkRuntime {
    fn reconcile(&self, object: &Json, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome {
        if object::deletion_timestamp(object).is_some() && !self.script_on_delete {
            return children::finish_delete(&self.cfg, object, client);
        }
        let ctx = Ctx {
            cfg: &self.cfg,
            live: object,
            client: RefCell::new(client),
            children: RefCell::new(Children::new(object)),
            children_applied: Cell::new(false),
        };
        let run = self.run(object, &ctx, budget);
        let Ctx { client, children, children_applied, .. } = ctx;
        let res = match run {
            Ok(res) => res,
            Err(message) => return Outcome::Error(message),
        };
        if res.legacy {
            return res.outcome();
        }
        self.finish_head(object, client.into_inner(), &mut children.into_inner(), children_applied.get(), res)
    }
}

/// What `reconcile` returned, read from the `reconcile_result` dict.
struct ScriptResult {
    /// The 6-argument form (the dict carries `conditionType`): everything was applied already.
    legacy: bool,
    /// The returned object (5-argument form only; the other never needs it).
    obj: Option<Json>,
    error: Option<String>,
    fatal: bool,
    requeue: bool,
    requeue_after: i64,
}

impl ScriptResult {
    fn read(returned: Value) -> Result<ScriptResult, String> {
        let wrong = || format!("reconcile must return reconcile_result(...), got {}", returned.get_type());
        let dict = DictRef::from_value(returned).ok_or_else(wrong)?;
        if dict.get_str("obj").is_none() || dict.get_str("fatal").is_none() {
            return Err(format!("{} without obj and fatal", wrong()));
        }
        let legacy = dict.get_str("conditionType").is_some();
        let error = dict
            .get_str("error")
            .filter(|v| !v.is_none())
            .map(|v| v.unpack_str().map_or_else(|| v.to_str(), str::to_string))
            .filter(|e| !e.is_empty());
        let flag = |key: &str| dict.get_str(key).and_then(|v| v.unpack_bool()).unwrap_or(false);
        let obj = match dict.get_str("obj") {
            Some(v) if !legacy && !v.is_none() => {
                let json = convert::to_json(v, "obj").map_err(|e| format!("reconcile_result: {e}"))?;
                if !json.is_object() {
                    return Err(format!("reconcile_result: obj: expected a dict, got {}", v.get_type()));
                }
                Some(json)
            }
            _ => None,
        };
        Ok(ScriptResult {
            legacy,
            obj,
            error,
            fatal: flag("fatal"),
            requeue: flag("requeue"),
            requeue_after: dict.get_str("requeueAfter").and_then(|v| v.unpack_i32()).map_or(0, i64::from),
        })
    }

    fn outcome(&self) -> Outcome {
        match &self.error {
            Some(e) if self.fatal => Outcome::Error(e.clone()),
            Some(e) => Outcome::Requeue { after: None, message: e.clone() },
            None if self.requeue_after > 0 => Outcome::Requeue {
                after: Some(std::time::Duration::from_secs(self.requeue_after.unsigned_abs())),
                message: String::new(),
            },
            None if self.requeue => Outcome::Requeue { after: None, message: String::new() },
            None => Outcome::Done,
        }
    }
}
