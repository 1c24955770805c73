//! How the pools persist: one sled record per pool header, route and range address, keyed so
//! that a pool's records are contiguous and its routes come parents first.
//!
//! Keys: `group \0 namespace \0 index \0` then `H` (the header: the kind of pool and, for id
//! pools, the largest id), `R` + start (16 bytes, big endian) + length (an IPAM route), `A` +
//! range name + `\0` + address (16 bytes; an address in an IPAM range), or `I` + table name
//! (empty: the main table) + `\0` + start (16 bytes; an item of an id pool). Values are JSON. A
//! commit writes the final state of every key its journal touched.
//!
//! Invariant: encoding only; which records exist is decided by the pools.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{IndexKey, Inner, Pool, Step};
use crate::api::object::{GroupKind, ObjectKey};
use crate::ids::pool::{IdPool, Item, Owner, TableRef};
use crate::ids::rib::{Net, RangeAddr, Rib, Route};
use crate::store::Record;

fn prefix(k: &IndexKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(k.group.len() + k.namespace.len() + k.name.len() + 3);
    for part in [&k.group, &k.namespace, &k.name] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

fn header_key(k: &IndexKey) -> Vec<u8> {
    let mut out = prefix(k);
    out.push(b'H');
    out
}

fn route_key(k: &IndexKey, net: &Net) -> Vec<u8> {
    let mut out = prefix(k);
    out.push(b'R');
    out.extend_from_slice(&net.start.to_be_bytes());
    out.push(net.len);
    out
}

fn item_key(k: &IndexKey, table: &TableRef, start: u128) -> Vec<u8> {
    let mut out = prefix(k);
    out.push(b'I');
    if let TableRef::Range(name) = table {
        out.extend_from_slice(name.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&start.to_be_bytes());
    out
}

fn addr_key(k: &IndexKey, range: &str, addr: u128) -> Vec<u8> {
    let mut out = prefix(k);
    out.push(b'A');
    out.extend_from_slice(range.as_bytes());
    out.push(0);
    out.extend_from_slice(&addr.to_be_bytes());
    out
}

/// What a key names.
enum Parsed {
    Header(IndexKey),
    Route(IndexKey, Net),
    Addr(IndexKey, String, u128),
    Item(IndexKey, TableRef, u128),
}

fn parse_key(key: &[u8]) -> Option<Parsed> {
    let mut parts = key.splitn(4, |b| *b == 0);
    let group = std::str::from_utf8(parts.next()?).ok()?;
    let namespace = std::str::from_utf8(parts.next()?).ok()?;
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let rest = parts.next()?;
    let k = IndexKey { group: group.into(), namespace: namespace.into(), name: name.into() };
    match rest.split_first()? {
        (b'H', []) => Some(Parsed::Header(k)),
        (b'R', tail) if tail.len() == 17 => {
            let start = u128::from_be_bytes(tail[..16].try_into().ok()?);
            Some(Parsed::Route(k, Net { start, len: tail[16] }))
        }
        (b'A', tail) if tail.len() > 17 => {
            let (range, addr) = tail.split_at(tail.len() - 16);
            let range = std::str::from_utf8(range.strip_suffix(&[0])?).ok()?;
            Some(Parsed::Addr(k, range.into(), u128::from_be_bytes(addr.try_into().ok()?)))
        }
        (b'I', tail) if tail.len() >= 17 => {
            let (table, start) = tail.split_at(tail.len() - 16);
            let table = std::str::from_utf8(table.strip_suffix(&[0])?).ok()?;
            let table = if table.is_empty() { TableRef::Main } else { TableRef::Range(table.into()) };
            Some(Parsed::Item(k, table, u128::from_be_bytes(start.try_into().ok()?)))
        }
        _ => None,
    }
}

fn json_bytes<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(v).ok()
}

/// Every key of a pool.
fn all_keys(k: &IndexKey, pool: &Pool) -> Vec<Vec<u8>> {
    let mut out = vec![header_key(k)];
    match pool {
        Pool::Ip { rib, .. } => {
            out.extend(rib.routes().keys().map(|n| route_key(k, n)));
            for (name, t) in rib.ranges() {
                out.extend(t.addrs.keys().map(|a| addr_key(k, name, *a)));
            }
        }
        Pool::Id { pool, .. } => {
            out.extend(pool.main().items.keys().map(|s| item_key(k, &TableRef::Main, *s)));
            for (name, t) in pool.ranges() {
                let table = TableRef::Range(name.clone());
                out.extend(t.items.keys().map(|s| item_key(k, &table, *s)));
            }
        }
    }
    out
}

fn header(pool: &Pool) -> serde_json::Value {
    match pool {
        Pool::Ip { .. } => json!({"kind": "ipam"}),
        Pool::Id { pool, .. } => json!({"kind": "id", "max": pool.max().to_string()}),
    }
}

/// The records the steps since the last commit touched, in their current state.
pub(super) fn touched(inner: &Inner) -> Vec<Record> {
    let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut changed: BTreeSet<&IndexKey> = BTreeSet::new();
    for step in &inner.steps {
        match step {
            Step::Created(k) => {
                keys.insert(header_key(k));
                changed.insert(k);
            }
            Step::Removed(k, pool) => keys.extend(all_keys(k, pool)),
            Step::Changed(k, _) => {
                changed.insert(k);
            }
        }
    }
    for k in changed {
        match inner.pools.get(k) {
            Some(Pool::Ip { journal, .. }) => {
                let (routes, addrs) = journal.touched();
                keys.extend(routes.iter().map(|n| route_key(k, n)));
                keys.extend(addrs.iter().map(|(r, a)| addr_key(k, r, *a)));
            }
            Some(Pool::Id { journal, .. }) => {
                let (slots, _) = journal.touched();
                keys.extend(slots.iter().map(|(t, s)| item_key(k, t, *s)));
            }
            None => {}
        }
    }
    keys.into_iter()
        .map(|key| {
            let value = match parse_key(&key) {
                Some(Parsed::Header(k)) => inner.pools.get(&k).and_then(|p| json_bytes(&header(p))),
                Some(Parsed::Route(k, net)) => match inner.pools.get(&k) {
                    Some(Pool::Ip { rib, .. }) => rib.routes().get(&net).and_then(json_bytes),
                    _ => None,
                },
                Some(Parsed::Addr(k, range, addr)) => match inner.pools.get(&k) {
                    Some(Pool::Ip { rib, .. }) => rib.range_addr(&range, addr).and_then(json_bytes),
                    _ => None,
                },
                Some(Parsed::Item(k, table, start)) => match inner.pools.get(&k) {
                    Some(Pool::Id { pool, .. }) => {
                        pool.table(&table).and_then(|t| t.items.get(&start)).and_then(json_bytes)
                    }
                    _ => None,
                },
                None => None,
            };
            (key, value)
        })
        .collect()
}

/// The claim object an owner is, for the orphan check.
fn claim_key(k: &IndexKey, owner: &Owner) -> Option<ObjectKey> {
    let b = super::crds::backend_of(&k.group)?;
    Some(ObjectKey::new(&GroupKind::new(k.group.clone(), b.claim_kind()), &k.namespace, &owner.name))
}

/// Rebuilds the pools from their records; records of owners that are no longer stored (with
/// that uid) are left out and returned for deletion.
pub(super) fn restore(
    inner: &mut Inner,
    records: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>,
    uid_of: &dyn Fn(&ObjectKey) -> Option<String>,
) -> Result<Vec<Vec<u8>>, String> {
    type Loaded = (Vec<(Net, Route)>, Vec<(String, u128, RangeAddr)>);
    type LoadedIds = (u128, Vec<(u128, Item)>, Vec<(String, u128, Item)>);
    let mut pools: BTreeMap<IndexKey, Loaded> = BTreeMap::new();
    let mut id_pools: BTreeMap<IndexKey, LoadedIds> = BTreeMap::new();
    let mut stale = Vec::new();
    let alive =
        |k: &IndexKey, owner: &Owner| claim_key(k, owner).and_then(|c| uid_of(&c)).is_some_and(|uid| uid == owner.uid);
    for (key, value) in records {
        let bad = |what: &str| format!("record {:?}: {what}", String::from_utf8_lossy(&key).replace('\0', "/"));
        match parse_key(&key) {
            Some(Parsed::Header(k)) => {
                let h: serde_json::Value = serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
                if h["kind"] == "id" {
                    let max = h["max"].as_str().and_then(|m| m.parse::<u128>().ok()).ok_or_else(|| bad("no max"))?;
                    id_pools.entry(k).or_insert_with(|| (max, Vec::new(), Vec::new())).0 = max;
                } else {
                    pools.entry(k).or_default();
                }
            }
            Some(Parsed::Item(k, table, start)) => {
                let item: Item = serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
                let Some(p) = id_pools.get_mut(&k) else { return Err(bad("an item before its pool's header")) };
                if !alive(&k, &item.owner) {
                    stale.push(key);
                } else {
                    match table {
                        TableRef::Main => p.1.push((start, item)),
                        TableRef::Range(name) => p.2.push((name, start, item)),
                    }
                }
            }
            Some(Parsed::Route(k, net)) => {
                let route: Route = serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
                if alive(&k, &route.owner) {
                    pools.entry(k).or_default().0.push((net, route));
                } else {
                    stale.push(key);
                }
            }
            Some(Parsed::Addr(k, range, addr)) => {
                let a: RangeAddr = serde_json::from_slice(&value).map_err(|e| bad(&e.to_string()))?;
                if alive(&k, &a.owner) {
                    pools.entry(k).or_default().1.push((range, addr, a));
                } else {
                    stale.push(key);
                }
            }
            None => return Err(bad("unknown key")),
        }
    }
    for (k, (routes, addrs)) in pools {
        let rib = Rib::restore(routes, addrs);
        inner.pools.insert(k, Pool::Ip { rib, journal: Default::default() });
    }
    for (k, (max, main, ranges)) in id_pools {
        inner.pools.insert(k, Pool::Id { pool: IdPool::restore(max, main, ranges), journal: Default::default() });
    }
    if !stale.is_empty() {
        log::warn!("dropped {} identifier allocations whose claims are gone", stale.len());
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = IndexKey { group: "ipam.be.kuid.dev".into(), namespace: "default".into(), name: "a.b".into() };
        let net = Net { start: 7 << 100, len: 40 };
        assert!(matches!(parse_key(&header_key(&k)), Some(Parsed::Header(x)) if x == k));
        assert!(matches!(parse_key(&route_key(&k, &net)), Some(Parsed::Route(x, n)) if x == k && n == net));
        assert!(matches!(parse_key(&addr_key(&k, "r.1", 5)), Some(Parsed::Addr(x, r, 5)) if x == k && r == "r.1"));
        // Routes of a pool sort parents first.
        assert!(route_key(&k, &Net { start: 0, len: 8 }) < route_key(&k, &Net { start: 0, len: 24 }));
    }
}
