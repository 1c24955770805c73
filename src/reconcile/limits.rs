//! What one reconcile may use: wall-clock time, memory and interpreter steps.
//!
//! Every reconciler has [`Limits`] (defaults here, overridden per reconciler by
//! `spec.limits` of its `Reconciler` object). A run turns them into a [`Budget`] per reconcile:
//! the deadline is the earlier of the reconcile's own timeout and the run's, and a cancel flag
//! lets a shutdown stop a script in the middle. Runtimes check the budget inside the
//! interpreter, not only between reconciles, and fail the reconcile with an error naming the
//! limit. *Invariant:* pure data; knows no runtime and no engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The limits of each reconcile of one reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time of one reconcile.
    pub timeout: Duration,
    /// Bytes the script's heap may grow to.
    pub memory: usize,
    /// Interpreter steps (function calls plus loop iterations).
    pub steps: u64,
}

impl Limits {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MEMORY: usize = 128 << 20;
    pub const DEFAULT_STEPS: u64 = 10_000_000;
    /// Upper bounds of what `spec.limits` accepts: beyond them the protection is gone.
    const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
    /// The memory limit also bounds how deeply a script can nest values (a one-element tuple
    /// costs 32 bytes of heap a level), and Starlark's `str()`, `repr()` and hashing recurse
    /// natively over that nesting (about 130 bytes of stack a level for tuples, measured). At
    /// 192 MiB the deepest value a script can build needs about 800 MiB of stack: within
    /// [`Limits::STACK`].
    pub const MAX_MEMORY_MIB: u64 = 192;
    /// The stack reconciles run on (reserved address space; only what is used is memory).
    pub const STACK: usize = 1 << 30;

    /// Reads `spec.limits` (`timeoutSeconds`, `memoryMiB`, `steps`); a missing field keeps its
    /// default. Errors name the field.
    pub fn from_spec(limits: Option<&Value>) -> Result<Limits, String> {
        let mut out = Limits::default();
        let Some(limits) = limits.filter(|v| !v.is_null()) else { return Ok(out) };
        let map = limits.as_object().ok_or("spec.limits: Invalid value: must be an object")?;
        let number = |field: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
            match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                    _ => {
                        Err(format!("spec.limits.{field}: Invalid value: {v}: must be an integer from {min} to {max}"))
                    }
                },
            }
        };
        if let Some(s) = number("timeoutSeconds", 1, Self::MAX_TIMEOUT_SECONDS)? {
            out.timeout = Duration::from_secs(s);
        }
        if let Some(m) = number("memoryMiB", 1, Self::MAX_MEMORY_MIB)? {
            out.memory = (m as usize) << 20;
        }
        if let Some(s) = number("steps", 1000, u64::MAX)? {
            out.steps = s;
        }
        if let Some(field) = map.keys().find(|k| !["timeoutSeconds", "memoryMiB", "steps"].contains(&k.as_str())) {
            return Err(format!("spec.limits.{field}: field not declared in schema"));
        }
        Ok(out)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Self::DEFAULT_TIMEOUT, memory: Self::DEFAULT_MEMORY, steps: Self::DEFAULT_STEPS }
    }
}

/// Why a reconcile was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The reconcile's own timeout.
    Timeout(Duration),
    /// The run's deadline (`run once --timeout`).
    RunDeadline,
    /// The server is shutting down.
    ShuttingDown,
    /// `choreo run stop`.
    Stopped,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::Timeout(d) => write!(
                f,
                "the reconcile ran longer than its limit of {}s (spec.limits.timeoutSeconds)",
                d.as_secs_f64()
            ),
            Exhausted::RunDeadline => {
                f.write_str("the run's deadline passed during the reconcile (run once --timeout)")
            }
            Exhausted::ShuttingDown => f.write_str("the reconcile was cancelled (the server is stopping)"),
            Exhausted::Stopped => f.write_str("the reconcile was cancelled (`choreo run stop`)"),
        }
    }
}

/// Requests to stop work in progress, raised from other threads (a connection, the signal
/// handler) and seen by a reconcile at its next check inside the interpreter.
#[derive(Debug, Default)]
pub struct Interrupt {
    shutdown: AtomicBool,
    stop_run: AtomicBool,
}

impl Interrupt {
    /// The server is stopping: every reconcile from now on stops.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// The flag [`Interrupt::shutdown`] raises, for work that only needs to know that (git
    /// transfers).
    pub fn shutdown_flag(&self) -> &AtomicBool {
        &self.shutdown
    }

    /// `run stop`: the reconcile in progress stops; cleared once the stop is handled.
    pub fn stop_run(&self) {
        self.stop_run.store(true, Ordering::SeqCst);
    }

    pub fn clear_stop_run(&self) {
        self.stop_run.store(false, Ordering::SeqCst);
    }

    /// Why work must stop now, if it must.
    pub fn raised(&self) -> Option<Exhausted> {
        if self.shutdown.load(Ordering::Relaxed) {
            Some(Exhausted::ShuttingDown)
        } else if self.stop_run.load(Ordering::Relaxed) {
            Some(Exhausted::Stopped)
        } else {
            None
        }
    }
}

/// What one reconcile may still use.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    pub limits: Limits,
    /// The reconcile's own deadline.
    pub deadline: Option<Instant>,
    /// The run's deadline, if earlier than never.
    pub run_deadline: Option<Instant>,
    pub interrupt: &'a Interrupt,
}

impl<'a> Budget<'a> {
    /// The budget of a reconcile starting now.
    pub fn start(limits: Limits, run_deadline: Option<Instant>, interrupt: &'a Interrupt) -> Budget<'a> {
        Budget { limits, deadline: Instant::now().checked_add(limits.timeout), run_deadline, interrupt }
    }

    /// A budget with the default limits and nothing else (tests, tools).
    pub fn unbounded(interrupt: &'a Interrupt) -> Budget<'a> {
        Budget { limits: Limits::default(), deadline: None, run_deadline: None, interrupt }
    }

    /// Whether the reconcile must stop now, and why.
    pub fn exhausted(&self) -> Option<Exhausted> {
        if let Some(why) = self.interrupt.raised() {
            return Some(why);
        }
        let now = Instant::now();
        if self.run_deadline.is_some_and(|d| now >= d) {
            return Some(Exhausted::RunDeadline);
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return Some(Exhausted::Timeout(self.limits.timeout));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_default_and_override_per_field() {
        assert_eq!(Limits::from_spec(None).unwrap(), Limits::default());
        let l = Limits::from_spec(Some(&json!({"timeoutSeconds": 2, "memoryMiB": 64}))).unwrap();
        assert_eq!(l.timeout, Duration::from_secs(2));
        assert_eq!(l.memory, 64 << 20);
        assert_eq!(l.steps, Limits::DEFAULT_STEPS);
    }

    #[test]
    fn bad_limits_name_the_field() {
        for (spec, field) in [
            (json!({"timeoutSeconds": 0}), "spec.limits.timeoutSeconds"),
            (json!({"memoryMiB": "lots"}), "spec.limits.memoryMiB"),
            (json!({"steps": 10}), "spec.limits.steps"),
            (json!({"cpu": 1}), "spec.limits.cpu"),
            (json!([1]), "spec.limits"),
        ] {
            let e = Limits::from_spec(Some(&spec)).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn a_budget_reports_the_first_limit_reached() {
        let interrupt = Interrupt::default();
        let mut b = Budget::start(Limits::default(), None, &interrupt);
        assert_eq!(b.exhausted(), None);
        b.run_deadline = Some(Instant::now());
        assert_eq!(b.exhausted(), Some(Exhausted::RunDeadline));
        b.run_deadline = None;
        b.deadline = Some(Instant::now());
        assert!(matches!(b.exhausted(), Some(Exhausted::Timeout(_))));
        interrupt.stop_run();
        assert_eq!(b.exhausted(), Some(Exhausted::Stopped));
        interrupt.shutdown();
        assert_eq!(b.exhausted(), Some(Exhausted::ShuttingDown));
        // A timeout too large for the clock is no deadline at all, not a panic.
        let huge = Limits { timeout: Duration::from_secs(u64::MAX), ..Limits::default() };
        assert_eq!(Budget::start(huge, None, &Interrupt::default()).deadline, None);
    }
}
