//! TEMPORARY placeholder until the Starlark runtime lands.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Client, Outcome, ReconcilerConfig, Runtime};

pub struct Libraries;
impl Libraries {
    pub fn new(_sources: BTreeMap<String, String>) -> Libraries {
        Libraries
    }
}
pub struct StarlarkRuntime;
impl StarlarkRuntime {
    pub fn compile(_cfg: Arc<ReconcilerConfig>, _libraries: Arc<Libraries>) -> Result<StarlarkRuntime, String> {
        Err("the Starlark runtime is not built yet".into())
    }
}
impl Runtime for StarlarkRuntime {
    fn reconcile(&self, _object: &Value, _client: &mut dyn Client) -> Outcome {
        Outcome::Done
    }
}
