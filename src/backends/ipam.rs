//! IPAM admission: `IPIndex` writes create the index's RIB and its own prefix claims;
//! `IPClaim` writes run kuid's syntax checks and allocate (static or dynamic prefix, address or
//! range), fill the status and `Ready`, and keep the claim's `IPEntry` objects in step;
//! deletes release at once.
//!
//! Invariant: the allocation rules are `ids::rib`'s; this file maps objects onto them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::common::{claims_of, index_key, labels, readmit, replace_entries, spec, str_field, waiting};
use super::crds::Backend;
use super::{owner_of, set_condition, Backends, IndexKey, Pool, MANAGER};
use crate::api::object::{self, GroupKind, ObjectKey};
use crate::ids::pool::Owner;
use crate::ids::rib::{self, IpClaimType, IpGrant, Net, PrefixType, Rib, RibError};
use crate::store::{ApplyOptions, Txn};

/// kuid's prefix types, with the example-era `pool` and `aggregate` meaning `regular`.
fn prefix_type(v: &Value) -> PrefixType {
    match str_field(v, "prefixType") {
        Some("network") => PrefixType::Network,
        _ => PrefixType::Regular,
    }
}

pub(super) fn on_delete(
    be: &Backends,
    b: &Backend,
    txn: &mut Txn<'_>,
    key: &ObjectKey,
    live: &Value,
) -> Result<(), String> {
    if key.kind == b.claim_kind() {
        let Some(index) = str_field(spec(live), "index") else { return Ok(()) };
        let ik = index_key(b, &key.namespace, index);
        let owner = owner_of(live);
        let orphans = be.with_rib(&ik, |rib, j| rib.release(j, &owner)).unwrap_or_default();
        sync_entries(be, b, txn, &ik, &owner)?;
        readmit(b, txn, &ik, orphans, clear_status);
        be.refresh_fullness(b, txn, &ik);
    } else if key.kind == b.index_kind() {
        let ik = index_key(b, &key.namespace, &key.name);
        // Every claim of the index loses its allocation; the index's own claims go with it
        // (they are its children), user claims stay and say the index is gone.
        let claims = claims_of(b, txn, &ik);
        for (ck, owner) in &claims {
            be.with_rib(&ik, |rib, j| rib.release(j, owner));
            sync_entries(be, b, txn, &ik, owner)?;
            let _ = ck;
        }
        be.remove_pool(&ik);
        readmit(b, txn, &ik, claims.into_iter().map(|(_, o)| o).collect(), clear_status);
    }
    Ok(())
}

pub(super) fn write_index(
    be: &Backends,
    b: &Backend,
    txn: &mut Txn<'_>,
    key: &ObjectKey,
    obj: &mut Value,
) -> Result<(), String> {
    let ik = index_key(b, &key.namespace, &key.name);
    let uid = object::uid(obj).unwrap_or_default().to_string();
    let prefixes = spec(obj).get("prefixes").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut wanted: Vec<Value> = Vec::new();
    for (i, p) in prefixes.iter().enumerate() {
        let text = str_field(p, "prefix").unwrap_or_default();
        let (addr, len) = rib::parse_cidr(text).map_err(|e| format!("spec.prefixes[{i}].prefix: {e}"))?;
        if len == 128 {
            return Err(format!("spec.prefixes[{i}].prefix: {text} is a single address, an index needs a prefix"));
        }
        let net = Net { start: addr & !rib::host_mask(len), len };
        let shown_len = if net.is_v4() { len - 96 } else { len };
        let mut claim = json!({
            "apiVersion": b.api_version(),
            "kind": b.claim_kind(),
            "metadata": {
                "name": format!("{}.{}", key.name, net.subnet_name()),
                "namespace": key.namespace,
                "ownerReferences": [{
                    "apiVersion": b.api_version(),
                    "kind": b.index_kind(),
                    "name": key.name,
                    "uid": uid,
                    "controller": true
                }]
            },
            "spec": {
                "index": key.name,
                "prefix": text,
                "prefixType": str_field(p, "prefixType").unwrap_or("regular"),
                "prefixLength": shown_len,
                "createPrefix": true
            }
        });
        let l = labels(p.get("labels"));
        if !l.is_empty() {
            claim["spec"]["labels"] = json!(l);
        }
        wanted.push(claim);
    }
    be.create_pool(&ik, Pool::Ip { rib: Rib::default(), journal: Default::default() });
    // The index's own claims: stale ones go first (their space may be what a new one needs).
    let gk = GroupKind::new(b.group, b.claim_kind());
    let names: Vec<String> = wanted.iter().filter_map(|c| object::name(c).map(str::to_string)).collect();
    let own: Vec<ObjectKey> = txn.owned_keys_where(&uid, |k| k.group == gk.group && k.kind == gk.kind);
    for k in own {
        if !names.contains(&k.name) {
            txn.delete(&k).map_err(|e| e.to_string())?;
        }
    }
    for c in &wanted {
        txn.apply(c, ApplyOptions { manager: MANAGER, force: true }).map_err(|e| e.to_string())?;
    }
    // Claims that waited for this index.
    let waiting = waiting(b, txn, &ik, &names);
    readmit(b, txn, &ik, waiting, clear_status);
    let now = txn.now().to_string();
    set_condition(obj, "Ready", true, "Ready", "", &now);
    if let Some((used, size)) = be.index_use(&ik) {
        super::set_fullness(obj, used, size, &now);
    }
    Ok(())
}

/// kuid's claim types and syntax checks (reference §3.7–3.8), refused with the field named.
fn claim_type(s: &Value) -> Result<IpClaimType, String> {
    let set: Vec<&str> = ["address", "prefix", "range"].into_iter().filter(|f| str_field(s, f).is_some()).collect();
    let t = match set.as_slice() {
        ["address"] => IpClaimType::StaticAddress,
        ["prefix"] => IpClaimType::StaticPrefix,
        ["range"] => IpClaimType::StaticRange,
        [] if s.get("createPrefix").is_some_and(|v| !v.is_null()) => IpClaimType::DynamicPrefix,
        [] => IpClaimType::DynamicAddress,
        more => {
            return Err(format!(
                "spec: a claim has one of address, prefix or range, this one has {}",
                more.join(" and ")
            ))
        }
    };
    let has = |f: &str| s.get(f).is_some_and(|v| !v.is_null());
    let dg = s.get("defaultGateway").and_then(Value::as_bool).unwrap_or(false);
    let refuse = |fields: &[&str]| -> Result<(), String> {
        match fields.iter().find(|f| has(f)) {
            Some(f) => Err(format!("spec.{f}: a {} claim cannot have it", t.as_str())),
            None => Ok(()),
        }
    };
    match t {
        IpClaimType::StaticPrefix => refuse(&["addressFamily", "idx"])?,
        IpClaimType::StaticAddress => refuse(&["createPrefix", "prefixLength", "addressFamily", "idx"])?,
        IpClaimType::StaticRange => {
            refuse(&["createPrefix", "prefixLength", "addressFamily", "idx"])?;
            if dg {
                return Err("spec.defaultGateway: a staticRange claim cannot have it".into());
            }
            if prefix_type(s) == PrefixType::Network {
                return Err("spec.prefixType: a range is always regular".into());
            }
        }
        IpClaimType::DynamicAddress => {
            refuse(&["createPrefix", "prefixLength"])?;
            if dg {
                return Err("spec.defaultGateway: a dynamicAddress claim cannot have it".into());
            }
        }
        IpClaimType::DynamicPrefix => {
            if dg {
                return Err("spec.defaultGateway: a dynamicPrefix claim cannot have it".into());
            }
            if !has("prefixLength") {
                return Err(
                    "spec.prefixLength: a dynamic prefix claim (createPrefix) must say how long a prefix".into()
                );
            }
        }
    }
    Ok(t)
}

pub(super) fn write_claim(
    be: &Backends,
    b: &Backend,
    txn: &mut Txn<'_>,
    key: &ObjectKey,
    obj: &mut Value,
) -> Result<(), String> {
    let s = spec(obj).clone();
    let t = claim_type(&s)?;
    let index = str_field(&s, "index").unwrap_or_default().to_string();
    let ik = index_key(b, &key.namespace, &index);
    let now = txn.now().to_string();
    if !be.has_pool(&ik) {
        clear_status(obj);
        let msg = format!("index {ik} does not exist: the claim is allocated once it does");
        set_condition(obj, "Ready", false, "IndexNotFound", &msg, &now);
        return Ok(());
    }
    let owner = owner_of(obj);
    let l = labels(s.get("labels"));
    let selector = s.pointer("/selector/matchLabels").map(|m| labels(Some(m))).unwrap_or_default();
    let status = obj.get("status").cloned().unwrap_or(Value::Null);
    let ptype = prefix_type(&s);
    let gw = s.get("defaultGateway").and_then(Value::as_bool).unwrap_or(false);
    let index_entry = object::owner_references(obj).iter().any(|o| o.kind == b.index_kind());
    let family = str_field(&s, "addressFamily").map(str::to_string);
    let result = be
        .with_rib(&ik, |rib, j| -> Result<IpGrant, String> {
            let parse = |f: &str| -> Result<(u128, u8), String> {
                rib::parse_cidr(str_field(&s, f).unwrap_or_default()).map_err(|e| format!("spec.{f}: {e}"))
            };
            let r = match t {
                IpClaimType::StaticPrefix => {
                    let (a, len) = parse("prefix")?;
                    check_static_prefix(a, len, ptype, gw)?;
                    rib.claim_static_prefix(j, &owner, a, len, ptype, gw, index_entry, &l)
                }
                IpClaimType::StaticAddress => {
                    let (a, len) = parse("address")?;
                    if len == 128 && gw {
                        return Err("spec.defaultGateway: a host address (/32, /128) cannot be a gateway".into());
                    }
                    rib.claim_static_address(j, &owner, a, len, gw, &l)
                }
                IpClaimType::StaticRange => {
                    let text = str_field(&s, "range").unwrap_or_default();
                    let (first, last) = rib::parse_range(text).map_err(|e| format!("spec.range: {e}"))?;
                    rib.claim_static_range(j, &owner, first, last, text, &l)
                }
                IpClaimType::DynamicAddress => {
                    let prefer = str_field(&status, "address").and_then(|a| rib::parse_cidr(a).ok());
                    let mut sel = selector.clone();
                    if let Some(f) = &family {
                        sel.insert("ipam.be.kuid.dev/address-family".into(), f.clone());
                    }
                    rib.claim_dynamic_address(j, &owner, &sel, prefer, &l)
                }
                IpClaimType::DynamicPrefix => {
                    let want = s.get("prefixLength").and_then(Value::as_u64).unwrap_or(0);
                    let mut sel = selector.clone();
                    if let Some(f) = &family {
                        sel.insert("ipam.be.kuid.dev/address-family".into(), f.clone());
                    }
                    let v4 = family.as_deref() == Some("ipv4") || (family.is_none() && first_family_v4(rib, &sel));
                    let len = if v4 { want.min(32) as u8 + 96 } else { want.min(128) as u8 };
                    let prefer = str_field(&status, "prefix").and_then(|p| rib::parse_cidr(p).ok()).map(|(a, _)| a);
                    rib.claim_dynamic_prefix(j, &owner, &sel, len, ptype, prefer, &l)
                }
            };
            r.map_err(|e| describe(e, &ik))
        })
        .unwrap_or_else(|| Err(format!("index {ik} does not exist")));
    let grant = result.map_err(|e| format!("cannot claim from index {ik}: {e}"))?;
    clear_status(obj);
    let st = &mut obj["status"];
    match t {
        IpClaimType::StaticPrefix | IpClaimType::DynamicPrefix => st["prefix"] = json!(grant.value),
        IpClaimType::StaticAddress | IpClaimType::DynamicAddress => st["address"] = json!(grant.value),
        IpClaimType::StaticRange => st["range"] = json!(grant.value),
    }
    if let Some(g) = grant.gateway {
        st["defaultGateway"] = json!(g);
    }
    set_condition(obj, "Ready", true, "Ready", "", &now);
    sync_entries(be, b, txn, &ik, &owner)?;
    be.refresh_fullness(b, txn, &ik);
    Ok(())
}

/// Whether the first route a selector picks is IPv4 (a dynamic prefix's length is given in
/// the family of the pool it comes from).
fn first_family_v4(rib: &Rib, sel: &BTreeMap<String, String>) -> bool {
    rib.holders()
        .filter(|(n, _)| !n.is_host())
        .find(|(n, r)| {
            let l = rib::route_labels(n, r);
            sel.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .is_some_and(|(n, _)| n.is_v4())
}

/// kuid's static prefix checks: no host-length prefix, host bits only on a network, a gateway
/// only on a network's inner address.
fn check_static_prefix(addr: u128, len: u8, ptype: PrefixType, gw: bool) -> Result<(), String> {
    let text = rib::addr_text(addr, len);
    if len == 128 {
        return Err(format!("spec.prefix: {text} is a single address: claim it as an address"));
    }
    let host = addr & rib::host_mask(len);
    if host != 0 && ptype != PrefixType::Network {
        return Err(format!(
            "spec.prefix: {text} has host bits set; only a network prefix may carry its gateway address"
        ));
    }
    if gw && (ptype != PrefixType::Network || host == 0 || host == rib::host_mask(len)) {
        return Err("spec.defaultGateway: only a network prefix with an inner address can be a gateway".into());
    }
    Ok(())
}

fn describe(e: RibError, ik: &IndexKey) -> String {
    match e {
        RibError::Exhausted { what, within } => format!("no free {what} left in {within} of index {ik}"),
        other => other.to_string(),
    }
}

fn clear_status(obj: &mut Value) {
    if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut) {
        for f in ["prefix", "address", "range", "defaultGateway"] {
            st.remove(f);
        }
    }
}

/// Writes the entries of `owner` as its allocations are now, and deletes the ones it no
/// longer has.
fn sync_entries(be: &Backends, b: &Backend, txn: &mut Txn<'_>, ik: &IndexKey, owner: &Owner) -> Result<(), String> {
    let api_version = b.api_version();
    let owner_ref = json!([{"apiVersion": api_version, "kind": b.claim_kind(), "name": owner.name, "uid": owner.uid}]);
    let entries: Vec<Value> = be
        .read_rib(ik, |rib| {
            let (routes, addrs) = rib.holdings(owner);
            let mut out = Vec::new();
            for (net, r) in routes {
                let name = format!("{}.{}.{}", ik.namespace, ik.name, net.subnet_name());
                out.push(entry(
                    b,
                    ik,
                    &name,
                    &owner_ref,
                    &net.text(),
                    r.claim_type,
                    r.prefix_type,
                    r.gateway,
                    r.index_entry,
                    net.is_v4(),
                    &r.labels,
                ));
            }
            for (range, addr, a) in addrs {
                let net = Net { start: addr, len: 128 };
                let name = format!("{}.{}.{}.{}", ik.namespace, ik.name, range, net.subnet_name());
                out.push(entry(
                    b,
                    ik,
                    &name,
                    &owner_ref,
                    &net.text(),
                    a.claim_type,
                    PrefixType::Regular,
                    false,
                    false,
                    net.is_v4(),
                    &a.labels,
                ));
            }
            out
        })
        .unwrap_or_default();
    replace_entries(b, txn, owner, entries)
}

#[allow(clippy::too_many_arguments)]
fn entry(
    b: &Backend,
    ik: &IndexKey,
    name: &str,
    owner_ref: &Value,
    prefix: &str,
    claim_type: IpClaimType,
    ptype: PrefixType,
    gateway: bool,
    index_entry: bool,
    v4: bool,
    labels: &BTreeMap<String, String>,
) -> Value {
    let mut e = json!({
        "apiVersion": b.api_version(),
        "kind": b.entry_kind(),
        "metadata": {"name": name, "namespace": ik.namespace, "ownerReferences": owner_ref},
        "spec": {
            "index": ik.name,
            "indexEntry": index_entry,
            "prefixType": ptype.as_str(),
            "claimType": claim_type.as_str(),
            "prefix": prefix,
            "defaultGateway": gateway,
            "addressFamily": if v4 { "ipv4" } else { "ipv6" }
        }
    });
    if !labels.is_empty() {
        e["spec"]["labels"] = json!(labels);
    }
    e
}
