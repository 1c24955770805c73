//! Starlark libraries and `load()`.
//!
//! A library is addressed by its name (upstream's Library resource name, e.g.
//! `api.k8s.io.object.star`). Each is parsed, evaluated and frozen the first time anything loads
//! it and then shared by every reconciler of the same project load, where upstream re-executes
//! every library on every reconcile. Frozen values cannot be mutated, so sharing is invisible to
//! scripts (upstream freezes loaded globals too). Libraries may load libraries; a load that comes
//! back to a library still being evaluated is a cycle and reported with the whole path.
//!
//! While compiling, the loader also notes which `reconcile_result` form (5 or 6 arguments) the
//! code calls, so that the runtime knows before running a script whether deletion is the
//! script's business (6-argument contract) or choreo's (5-argument contract).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use starlark::environment::{FrozenModule, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::syntax::ast::{ArgumentP, AstExpr, ExprP};
use starlark::syntax::AstModule;

use super::{globals, limit_evaluator, DIALECT};

/// Which `reconcile_result` forms a piece of code calls, as bits.
pub(crate) type Forms = u8;
/// A 6-argument call, or a call naming `conditionType` (example-era contract).
pub(crate) const FORM_LEGACY: Forms = 1;
/// A call with at most 5 arguments and no `conditionType` (HEAD contract).
pub(crate) const FORM_HEAD: Forms = 2;

/// Starlark libraries of a project, by name (e.g. "api.k8s.io.object.star"), compiled and frozen
/// on first load and cached for the life of this value (one load of the project).
pub struct Libraries {
    sources: BTreeMap<String, String>,
    /// Frozen libraries. The lock is never held while a library evaluates, since evaluation
    /// loads other libraries through the same cache; two threads racing on one library both
    /// compile it and the first result is kept.
    cache: Mutex<HashMap<String, Loaded>>,
}

#[derive(Clone)]
struct Loaded {
    module: FrozenModule,
    /// Forms called by the library and everything it loads.
    forms: Forms,
}

impl Libraries {
    pub fn new(sources: BTreeMap<String, String>) -> Libraries {
        Libraries { sources, cache: Mutex::new(HashMap::new()) }
    }

    /// How many libraries are compiled (tests check that a second reconciler reuses them).
    #[cfg(test)]
    pub(crate) fn compiled(&self) -> usize {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    fn cached(&self, name: &str) -> Option<Loaded> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(name).cloned()
    }

    /// Loads `name` on behalf of the libraries in `chain` (outermost first), which are still
    /// being evaluated.
    fn load(&self, name: &str, chain: &[String]) -> starlark::Result<Loaded> {
        if let Some(pos) = chain.iter().position(|c| c == name) {
            let mut path: Vec<&str> = chain[pos..].iter().map(String::as_str).collect();
            path.push(name);
            return Err(other_error(format!("cycle in load graph: {}", path.join(" -> "))));
        }
        if let Some(loaded) = self.cached(name) {
            return Ok(loaded);
        }
        let Some(source) = self.sources.get(name) else {
            return Err(other_error(format!("module {name} not found in library")));
        };
        let ast = AstModule::parse(name, source.clone(), &DIALECT)?;
        let mut inner_chain = chain.to_vec();
        inner_chain.push(name.to_string());
        let loader = Loader::new(self, inner_chain);
        loader.note(scan_forms(&ast));
        let module = evaluate(ast, &loader)?;
        let loaded = Loaded { module, forms: loader.forms.get() };
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(cache.entry(name.to_string()).or_insert(loaded).clone())
    }
}

impl std::fmt::Debug for Libraries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libraries").field("names", &self.sources.keys().collect::<Vec<_>>()).finish()
    }
}

/// The `load()` hook of one module being compiled.
pub(crate) struct Loader<'l> {
    libraries: &'l Libraries,
    chain: Vec<String>,
    forms: Cell<Forms>,
}

impl<'l> Loader<'l> {
    pub(crate) fn new(libraries: &'l Libraries, chain: Vec<String>) -> Loader<'l> {
        Loader { libraries, chain, forms: Cell::new(0) }
    }

    pub(crate) fn note(&self, forms: Forms) {
        self.forms.set(self.forms.get() | forms);
    }

    /// The forms seen in the module and everything it loaded.
    pub(crate) fn forms(&self) -> Forms {
        self.forms.get()
    }
}

impl FileLoader for Loader<'_> {
    fn load(&self, name: &str) -> starlark::Result<FrozenModule> {
        let loaded = self.libraries.load(name, &self.chain)?;
        self.note(loaded.forms);
        Ok(loaded.module)
    }
}

/// Evaluates a module's top level with the builtins and `loader`, and freezes it.
pub(crate) fn evaluate(ast: AstModule, loader: &Loader) -> starlark::Result<FrozenModule> {
    Module::with_temp_heap(|module| {
        {
            let mut eval = Evaluator::new(&module);
            eval.set_loader(loader);
            limit_evaluator(&mut eval, &crate::reconcile::Limits::default());
            // A module's top level gets the default reconcile timeout too.
            let deadline = std::time::Instant::now() + crate::reconcile::Limits::DEFAULT_TIMEOUT;
            eval.set_check_cancelled(Box::new(move || std::time::Instant::now() >= deadline));
            eval.eval_module(ast, globals())?;
        }
        Ok(module.freeze()?)
    })
}

/// The `reconcile_result` forms called anywhere in a module (also inside functions).
pub(crate) fn scan_forms(ast: &AstModule) -> Forms {
    let mut forms = 0;
    ast.statement().visit_expr(|e| scan_expr(e, &mut forms));
    forms
}

fn scan_expr(expr: &AstExpr, forms: &mut Forms) {
    if let ExprP::Call(callee, args) = &expr.node {
        if matches!(&callee.node, ExprP::Identifier(id) if id.node.ident == "reconcile_result") {
            let mut positional = 0;
            let mut legacy = false;
            let mut dynamic = false;
            for arg in &args.args {
                match &arg.node {
                    ArgumentP::Positional(_) => positional += 1,
                    ArgumentP::Named(name, _) => {
                        legacy |= name.node == "conditionType" || name.node == "condition_type";
                    }
                    // `*args` / `**kwargs`: the form is only known at run time.
                    ArgumentP::Args(_) | ArgumentP::KwArgs(_) => dynamic = true,
                }
            }
            if legacy || positional == 6 {
                *forms |= FORM_LEGACY;
            } else if !dynamic {
                *forms |= FORM_HEAD;
            }
        }
    }
    expr.node.visit_expr(|e| scan_expr(e, forms));
}

pub(crate) fn other_error(message: String) -> starlark::Error {
    starlark::Error::new_other(anyhow::anyhow!(message))
}
