//! The builtins every reconciler script and library sees, and the per-reconcile context they
//! act on.
//!
//! Builtins keep upstream's names and positional order; keyword arguments are accepted as
//! well (upstream drops them and then fails on a missing argument). Where upstream renamed a
//! builtin (`isIPv4` → `is_ipv4`) both names exist, because the example libraries still call
//! the old ones and any global a script mentions must exist when it is compiled.
//!
//! `client_*` builtins report store errors in their result dict (`{"resource", "error",
//! "fatal"}`) so the script can decide; wrong arguments are Starlark errors. Builtins that talk
//! to the store reach it through [`Ctx`], which only exists while `reconcile` runs, so calling
//! them from a library's top level is an error rather than a silent no-op.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::anyhow;
use serde_json::{json, Value as Json};
use starlark::any::ProvidesStaticType;
use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::{AllocDict, DictRef};
use starlark::values::list::ListRef;
use starlark::values::tuple::UnpackTuple;
use starlark::values::{Heap, Value};

use super::convert::{to_json, to_starlark};
use crate::api::object::{self, GroupKind, ObjectKey};
use crate::reconcile::children::{self, Children};
use crate::reconcile::{Client, ClientError, ReconcilerConfig, Selector};

/// What builtins need during one reconcile; reached through `Evaluator::extra`.
#[derive(ProvidesStaticType)]
pub(crate) struct Ctx<'c> {
    pub cfg: &'c ReconcilerConfig,
    /// The for-object as fetched (for condition transition times).
    pub live: &'c Json,
    pub client: RefCell<&'c mut dyn Client>,
    pub children: RefCell<Children>,
    /// `client_apply()` succeeded and no child was recorded since.
    pub children_applied: Cell<bool>,
}

fn context<'a, 'e>(eval: &Evaluator<'_, 'a, 'e>, builtin: &str) -> anyhow::Result<&'a Ctx<'e>> {
    eval.extra
        .and_then(|e| e.downcast_ref::<Ctx<'e>>())
        .ok_or_else(|| anyhow!("{builtin}() can only be called while reconciling, not when a module is loaded"))
}

/// The `{"resource", "error", "fatal"}` dict of every `client_*` and finalizer builtin.
fn result<'v>(heap: Heap<'v>, resource: Value<'v>, error: Option<&ClientError>) -> Value<'v> {
    let error_v = match error {
        Some(e) => heap.alloc(e.message.as_str()),
        None => Value::new_none(),
    };
    heap.alloc(AllocDict([
        ("resource", resource),
        ("error", error_v),
        ("fatal", Value::new_bool(error.is_some_and(|e| e.fatal))),
    ]))
}

fn json_arg(value: Value, what: &str) -> anyhow::Result<Json> {
    let json = to_json(value, what).map_err(|e| anyhow!(e))?;
    if !json.is_object() {
        return Err(anyhow!("{what}: expected a dict, got {}", value.get_type()));
    }
    Ok(json)
}

fn alloc_json<'v>(heap: Heap<'v>, json: &Json) -> anyhow::Result<Value<'v>> {
    to_starlark(json, heap).map_err(|e| anyhow!(e))
}

/// An object's apiVersion and kind. Also takes a `get_resource()` result whole, since scripts
/// easily forget the `["resource"]`.
fn type_of(obj: Value) -> anyhow::Result<(String, String)> {
    let dict = DictRef::from_value(obj).ok_or_else(|| anyhow!("obj: expected a dict, got {}", obj.get_type()))?;
    let field = |d: &DictRef, f: &str| d.get_str(f).and_then(|v| v.unpack_str()).map(str::to_string);
    if let (Some(av), Some(kind)) = (field(&dict, "apiVersion"), field(&dict, "kind")) {
        return Ok((av, kind));
    }
    if let Some(inner) = dict.get_str("resource").and_then(DictRef::from_value) {
        if let (Some(av), Some(kind)) = (field(&inner, "apiVersion"), field(&inner, "kind")) {
            return Ok((av, kind));
        }
    }
    Err(anyhow!("obj: needs apiVersion and kind (as returned by get_resource(...)[\"resource\"])"))
}

/// Whether an apply error is worth a retry rather than a failure: the object is gone, or the
/// client itself calls the error transient. Anything else (e.g. a schema violation) is fatal.
fn is_retryable(e: &ClientError) -> bool {
    !e.fatal || e.message.to_ascii_lowercase().contains("not found")
}

/// The arguments of `reconcile_result`, in either form.
struct ResultArgs<'v> {
    obj: Value<'v>,
    requeue: bool,
    requeue_after: i64,
    /// `Some` in the 6-argument (example-era) form.
    condition_type: Option<String>,
    msg: String,
    fatal: bool,
}

const LEGACY_PARAMS: [&str; 6] = ["obj", "requeue", "requeueAfter", "conditionType", "msg", "fatal"];
const HEAD_PARAMS: [&str; 5] = ["obj", "requeue", "requeueAfter", "msg", "fatal"];

fn canonical_param(name: &str) -> &str {
    match name {
        "self" => "obj",
        "requeue_after" => "requeueAfter",
        "condition_type" => "conditionType",
        "err_msg" => "msg",
        other => other,
    }
}

/// Binds positional and keyword arguments. Six positional arguments, or a `conditionType`
/// keyword, select the 6-argument form; everything else is the 5-argument form. Arguments
/// after `obj` default to "no requeue, no error".
fn parse_result_args<'v>(pos: &[Value<'v>], named: &SmallMap<String, Value<'v>>) -> Result<ResultArgs<'v>, String> {
    let legacy = pos.len() == 6 || named.keys().any(|k| canonical_param(k) == "conditionType");
    let params: &[&str] = if legacy { &LEGACY_PARAMS } else { &HEAD_PARAMS };
    if pos.len() > params.len() {
        return Err(format!("reconcile_result: takes 5 or 6 arguments, got {}", pos.len()));
    }
    let mut slots: Vec<Option<Value<'v>>> = vec![None; params.len()];
    for (slot, v) in slots.iter_mut().zip(pos) {
        *slot = Some(*v);
    }
    for (name, v) in named {
        let canon = canonical_param(name);
        let Some(i) = params.iter().position(|p| *p == canon) else {
            return Err(format!("reconcile_result: unexpected keyword argument {name:?}"));
        };
        if slots[i].is_some() {
            return Err(format!("reconcile_result: got multiple values for argument {canon:?}"));
        }
        slots[i] = Some(*v);
    }
    let get = |name: &str| params.iter().position(|p| *p == name).and_then(|i| slots[i]);
    let obj = get("obj").ok_or("reconcile_result: missing argument for obj")?;
    let boolean = |name: &str| -> Result<bool, String> {
        match get(name) {
            None => Ok(false),
            Some(v) => v
                .unpack_bool()
                .ok_or_else(|| format!("reconcile_result: for parameter {name}: got {}, want bool", v.get_type())),
        }
    };
    let string = |name: &str| -> Result<String, String> {
        match get(name) {
            None => Ok(String::new()),
            Some(v) if v.is_none() => Ok(String::new()),
            Some(v) => v
                .unpack_str()
                .map(str::to_string)
                .ok_or_else(|| format!("reconcile_result: for parameter {name}: got {}, want string", v.get_type())),
        }
    };
    let requeue_after = match get("requeueAfter") {
        None => 0,
        Some(v) => {
            if let Some(i) = v.unpack_i32() {
                i64::from(i)
            } else {
                return Err(format!(
                    "reconcile_result: for parameter requeueAfter: got {}, want int (seconds)",
                    v.get_type()
                ));
            }
        }
    };
    Ok(ResultArgs {
        obj,
        requeue: boolean("requeue")?,
        requeue_after,
        condition_type: if legacy { Some(string("conditionType")?) } else { None },
        msg: string("msg")?,
        fatal: boolean("fatal")?,
    })
}

/// The example-era `reconcile_result`: apply `obj` (pruned to this reconciler's fields, with the
/// condition) right away.
fn apply_legacy(ctx: &Ctx, obj: Value, condition_type: &str, msg: &str) -> Result<(), ClientError> {
    let json = to_json(obj, "obj").map_err(ClientError::fatal)?;
    let mut intent = children::intent(&json, &ctx.cfg.name)?;
    let mut client = ctx.client.borrow_mut();
    if !condition_type.is_empty() {
        let now = client.now();
        children::set_condition(&mut intent, condition_type, msg, Some(ctx.live), &now);
    }
    client.apply(&intent, &ctx.cfg.name).map(drop)
}

// The IP helpers take "address/length" or a bare address, like Go's netip, whose text forms
// (RFC 5952 for IPv6) std::net shares.
fn parse_prefix(prefix: &str) -> anyhow::Result<(IpAddr, u8)> {
    let bad = |why: &str| anyhow!("invalid prefix {prefix:?}: {why}");
    let (addr, len) = match prefix.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (prefix, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => {
            // Go rejects signs and leading zeros, which u8::from_str would accept.
            if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || (l.len() > 1 && l.starts_with('0')) {
                return Err(bad("bad prefix length"));
            }
            l.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| bad("prefix length out of range"))?
        }
    };
    Ok((addr, len))
}

/// "10.0.0.7/24" → "10.0.0.0-24", "1000::1/32" → "1000---32".
pub(crate) fn subnet_name(prefix: &str) -> anyhow::Result<String> {
    let (addr, len) = parse_prefix(prefix)?;
    let network = match addr {
        IpAddr::V4(a) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    Ok(format!("{network}-{len}").replace(':', "-"))
}

#[starlark_module]
pub(crate) fn builtins(builder: &mut GlobalsBuilder) {
    /// `reconcile_result(obj, requeue, requeueAfter, [conditionType,] msg, fatal)`.
    fn reconcile_result<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let heap = eval.heap();
        let a = match parse_result_args(&args.items, &kwargs) {
            Ok(a) => a,
            Err(e) => {
                // Upstream turns a bad call into a fatal result rather than a Starlark error.
                let msg_at = if args.items.len() == 6 { 4 } else { 3 };
                let msg = args.items.get(msg_at).and_then(|v| v.unpack_str()).unwrap_or("");
                return Ok(heap.alloc(AllocDict([
                    ("obj", args.items.first().copied().unwrap_or_else(Value::new_none)),
                    ("fatal", Value::new_bool(true)),
                    ("error", heap.alloc(format!("error: {e}, msg: {msg}"))),
                    ("requeue", Value::new_bool(false)),
                    ("requeueAfter", heap.alloc(0)),
                ])));
            }
        };
        let mut error: Option<String> = None;
        let mut fatal = false;
        if let Some(condition_type) = &a.condition_type {
            let ctx = context(eval, "reconcile_result")?;
            if let Err(e) = apply_legacy(ctx, a.obj, condition_type, &a.msg) {
                fatal = !is_retryable(&e);
                error = Some(e.message);
            }
        }
        if error.is_none() && !a.msg.is_empty() {
            error = Some(format!("reconcile failed {}", a.msg));
            fatal = a.fatal;
        }
        let mut entries = vec![
            ("obj", a.obj),
            ("fatal", Value::new_bool(fatal)),
            ("error", error.map_or_else(Value::new_none, |e| heap.alloc(e))),
            ("requeue", Value::new_bool(a.requeue)),
            ("requeueAfter", heap.alloc(a.requeue_after)),
        ];
        if let Some(ct) = &a.condition_type {
            entries.push(("conditionType", heap.alloc(ct.as_str())));
        }
        Ok(heap.alloc(AllocDict(entries)))
    }

    /// Records a child; it gets a controller owner reference to the for-object.
    fn client_create<'v>(obj: Value<'v>, eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<Value<'v>> {
        let ctx = context(eval, "client_create")?;
        let heap = eval.heap();
        let child = json_arg(obj, "obj")?;
        let created = ctx.children.borrow_mut().create(child);
        match created {
            Ok(child) => {
                ctx.children_applied.set(false);
                Ok(result(heap, alloc_json(heap, &child)?, None))
            }
            Err(e) => Ok(result(heap, Value::new_none(), Some(&e))),
        }
    }

    /// Deletes the children no longer produced and applies the recorded ones, now.
    fn client_apply<'v>(eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<Value<'v>> {
        let ctx = context(eval, "client_apply")?;
        let mut client = ctx.client.borrow_mut();
        // The script learns now whether the children were written.
        let applied = ctx.children.borrow_mut().apply(ctx.cfg, &mut **client).and_then(|()| client.flush());
        if applied.is_ok() {
            ctx.children_applied.set(true);
        }
        Ok(result(eval.heap(), Value::new_none(), applied.err().as_ref()))
    }

    /// Deletes every child the for-object owns.
    fn client_delete<'v>(eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<Value<'v>> {
        let ctx = context(eval, "client_delete")?;
        let mut client = ctx.client.borrow_mut();
        let deleted = ctx.children.borrow().delete_all(ctx.cfg, &mut **client);
        Ok(result(eval.heap(), Value::new_none(), deleted.err().as_ref()))
    }

    /// One object of `obj`'s kind; a missing object is a non-fatal error.
    fn client_get<'v>(
        name: &str,
        namespace: &str,
        obj: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let ctx = context(eval, "client_get")?;
        let heap = eval.heap();
        let (api_version, kind) = type_of(obj)?;
        let got = ctx.client.borrow_mut().get(&api_version, &kind, namespace, name);
        match got {
            Ok(Some(o)) => Ok(result(heap, alloc_json(heap, &o)?, None)),
            Ok(None) => {
                let (group, _) = object::split_api_version(&api_version);
                let key = ObjectKey::new(&GroupKind::new(group, kind), namespace, name);
                let e = ClientError::transient(format!("{key} not found"));
                Ok(result(heap, Value::new_none(), Some(&e)))
            }
            Err(e) => Ok(result(heap, Value::new_none(), Some(&e))),
        }
    }

    /// Objects of `obj`'s kind matching `selector` (`{expression: value}`, as a `match` selector).
    fn client_list<'v>(
        obj: Value<'v>,
        selector: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let ctx = context(eval, "client_list")?;
        let heap = eval.heap();
        let (api_version, kind) = type_of(obj)?;
        let selector = match selector.filter(|s| !s.is_none()) {
            None => Selector::everything(),
            Some(s) => {
                let fields = json_arg(s, "fieldSelector")?;
                Selector::parse(Some(&json!({ "match": fields })), "fieldSelector").map_err(|e| anyhow!(e))?
            }
        };
        let listed = ctx.client.borrow_mut().list(&api_version, &kind, &selector);
        match listed {
            Ok(items) => {
                let list = json!({"apiVersion": api_version, "kind": format!("{kind}List"), "items": items});
                Ok(result(heap, alloc_json(heap, &list)?, None))
            }
            Err(e) => Ok(result(heap, Value::new_none(), Some(&e))),
        }
    }

    /// Applies `obj` now (pruned to this reconciler's fields); returns the stored object.
    fn client_update<'v>(obj: Value<'v>, eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<Value<'v>> {
        update(obj, eval, "client_update")
    }

    /// The same as `client_update` (upstream too: status is not a subresource here).
    fn client_update_status<'v>(obj: Value<'v>, eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<Value<'v>> {
        update(obj, eval, "client_update_status")
    }

    /// `{"resource": {"apiVersion", "kind"}, ...}`: a type handle for `client_get`/`client_list`.
    fn get_resource<'v>(api_version: &str, kind: &str, heap: Heap<'v>) -> anyhow::Result<Value<'v>> {
        let resource = heap.alloc(AllocDict([("apiVersion", api_version), ("kind", kind)]));
        Ok(result(heap, resource, None))
    }

    /// A copy of `obj` with `finalizer` added, in a result dict.
    fn add_finalizer<'v>(obj: Value<'v>, finalizer: &str, heap: Heap<'v>) -> anyhow::Result<Value<'v>> {
        let mut json = json_arg(obj, "obj")?;
        children::add_finalizer(&mut json, finalizer);
        Ok(result(heap, alloc_json(heap, &json)?, None))
    }

    /// A copy of `obj` without `finalizer`, in a result dict.
    fn del_finalizer<'v>(obj: Value<'v>, finalizer: &str, heap: Heap<'v>) -> anyhow::Result<Value<'v>> {
        let mut json = json_arg(obj, "obj")?;
        children::remove_finalizer(&mut json, finalizer);
        Ok(result(heap, alloc_json(heap, &json)?, None))
    }

    /// Whether `obj` has condition `conditionType` with status "True".
    fn is_conditionready<'v>(obj: Value<'v>, condition_type: &str) -> anyhow::Result<bool> {
        let field = |v: Value<'v>, f: &str| DictRef::from_value(v).and_then(|d| d.get_str(f));
        let Some(conditions) = field(obj, "status").and_then(|s| field(s, "conditions")) else {
            return Ok(false);
        };
        let Some(list) = ListRef::from_value(conditions) else {
            return Ok(false);
        };
        Ok(list.iter().any(|c| {
            field(c, "type").and_then(|t| t.unpack_str()) == Some(condition_type)
                && field(c, "status").and_then(|s| s.unpack_str()) == Some("True")
        }))
    }

    fn is_ipv4(prefix: &str) -> anyhow::Result<bool> {
        Ok(parse_prefix(prefix)?.0.is_ipv4())
    }

    fn is_ipv6(prefix: &str) -> anyhow::Result<bool> {
        Ok(parse_prefix(prefix)?.0.is_ipv6())
    }

    /// The example-era spelling of `is_ipv4`.
    #[allow(non_snake_case)]
    fn isIPv4(prefix: &str) -> anyhow::Result<bool> {
        Ok(parse_prefix(prefix)?.0.is_ipv4())
    }

    /// The example-era spelling of `is_ipv6`.
    #[allow(non_snake_case)]
    fn isIPv6(prefix: &str) -> anyhow::Result<bool> {
        Ok(parse_prefix(prefix)?.0.is_ipv6())
    }

    /// "10.0.0.1/24" → "10.0.0.1".
    fn get_address(prefix: &str) -> anyhow::Result<String> {
        Ok(parse_prefix(prefix)?.0.to_string())
    }

    /// "10.0.0.1/24" → 24; a bare address is a host prefix (32 or 128).
    fn get_prefixlength(prefix: &str) -> anyhow::Result<i32> {
        Ok(i32::from(parse_prefix(prefix)?.1))
    }

    /// "10.0.0.7/24" → "10.0.0.0-24".
    fn get_subnetname(prefix: &str) -> anyhow::Result<String> {
        subnet_name(prefix)
    }
}

fn update<'v>(obj: Value<'v>, eval: &mut Evaluator<'v, '_, '_>, builtin: &str) -> anyhow::Result<Value<'v>> {
    let ctx = context(eval, builtin)?;
    let heap = eval.heap();
    let json = json_arg(obj, "obj")?;
    let applied = children::intent(&json, &ctx.cfg.name).and_then(|intent| {
        let mut client = ctx.client.borrow_mut();
        client.apply(&intent, &ctx.cfg.name)
    });
    match applied {
        Ok(stored) => Ok(result(heap, alloc_json(heap, &stored)?, None)),
        Err(e) => Ok(result(heap, Value::new_none(), Some(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_like_go_netip() {
        assert_eq!(parse_prefix("10.0.0.1/24").unwrap(), ("10.0.0.1".parse().unwrap(), 24));
        assert_eq!(parse_prefix("10.0.0.1").unwrap().1, 32);
        assert_eq!(parse_prefix("2001:db8::1").unwrap().1, 128);
        for bad in ["10.0.0.1/33", "10.0.0.1/024", "10.0.0.1/+4", "10.0.0.1/", "nope", "1000::/129"] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
        assert_eq!(subnet_name("10.0.0.7/24").unwrap(), "10.0.0.0-24");
        assert_eq!(subnet_name("1000::1/32").unwrap(), "1000---32");
        assert_eq!(subnet_name("2001:db8:0:0:1::5/64").unwrap(), "2001-db8---64");
        assert_eq!(subnet_name("0.0.0.0/0").unwrap(), "0.0.0.0-0");
    }
}
