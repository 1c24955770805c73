//! TEMPORARY stub, replaced by the real server-side apply.
use serde_json::Value;
use super::schema::Schema;
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError { #[error("{0}")] Undeclared(String), #[error("conflicts")] Conflicts(Vec<Conflict>), #[error("{0}")] Invalid(String) }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict { pub manager: String, pub path: String }
pub struct ApplyRequest<'a> { pub schema: &'a Schema, pub live: Option<&'a Value>, pub applied: &'a Value, pub manager: &'a str, pub force: bool, pub now: &'a str }
pub fn apply(req: &ApplyRequest) -> Result<Value, ApplyError> {
    let mut out = req.live.cloned().unwrap_or(Value::Object(Default::default()));
    merge(&mut out, req.applied);
    Ok(out)
}
fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => for (k, v) in b { merge(a.entry(k.clone()).or_insert(Value::Null), v) },
        (a, b) => *a = b.clone(),
    }
}
