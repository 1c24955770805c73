//! libyang's messages, gathered per piece of work.
//!
//! libyang reports through one process-wide callback and keeps only the last error in the
//! context, which is often a follow-on ("Parsing module failed") that hides the cause. The
//! callback installed here appends every message to the calling thread's collector while
//! [`capture`] runs, so concurrent work on other threads never mixes its messages in.
//!
//! Architecture invariant: knows libyang's logging only, nothing of schemas or data.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Once;

use yang3::context::Context;
use yang3::ffi;
use yang3::logging::LogCallback;

/// One message from libyang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// An error (otherwise a warning).
    pub error: bool,
    pub message: String,
    /// The data path the message is about, when it is about data.
    pub data_path: Option<String>,
    /// The schema path, when it is about a schema node.
    pub schema_path: Option<String>,
    /// The line of the input being parsed, 0 when none.
    pub line: u64,
}

thread_local! {
    static COLLECTOR: RefCell<Option<Vec<Diagnostic>>> = const { RefCell::new(None) };
}

struct Collect;

impl LogCallback for Collect {
    fn log<'a>(
        &'a self,
        level: ffi::LY_LOG_LEVEL::Type,
        msg: Option<Cow<'a, str>>,
        data_path: Option<Cow<'a, str>>,
        schema_path: Option<Cow<'a, str>>,
        line: u64,
    ) {
        if level > ffi::LY_LOG_LEVEL::LY_LLWRN {
            return;
        }
        let d = Diagnostic {
            error: level == ffi::LY_LOG_LEVEL::LY_LLERR,
            message: msg.map(Cow::into_owned).unwrap_or_default(),
            data_path: data_path.map(Cow::into_owned),
            schema_path: schema_path.map(Cow::into_owned),
            line,
        };
        COLLECTOR.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.push(d);
            }
        });
    }
}

/// Installs the callback once; it needs a context to exist (the first context's creation
/// resets libyang's log options), which `ctx` is.
pub(crate) fn install(ctx: &Context) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Only this module installs a logger, so it cannot be set already.
        let _ = ctx.init_logger(Collect);
        ctx.set_log_level_warn();
        // Every message to the callback; the context keeps only the last error (storing all
        // of them would grow without bound: nothing here reads them back).
        unsafe { ffi::ly_log_options(ffi::LY_LOLOG | ffi::LY_LOSTORE_LAST) };
    });
}

/// Runs `f` and returns its result with the messages libyang logged on this thread meanwhile.
pub(crate) fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<Diagnostic>) {
    /// Puts the enclosing collector back however `f` ends (a panic included), so a thread
    /// never keeps gathering messages nobody takes.
    struct Restore(Option<Vec<Diagnostic>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COLLECTOR.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let restore = Restore(COLLECTOR.with(|c| c.borrow_mut().replace(Vec::new())));
    let out = f();
    let got = COLLECTOR.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (out, got)
}
