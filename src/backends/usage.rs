//! Seeing the pools: `choreo ids usage` (size, use and largest free block per index prefix,
//! id pool and range) and `choreo ids free` (what an index would hand out next, without
//! claiming it). Both read the pools as last committed.
//!
//! Invariant: read-only.

use super::{Backends, IndexKey, Pool};
use crate::ids::pool::IdPool;
use crate::ids::rib::{self, Net, Rib};
use crate::ids::space::{count, Space};
use crate::protocol::{IdsFreeRequest, IdsUsageRequest, PoolUsage};

/// An index of id pools more than this full says so in a condition.
pub(crate) const NEARLY_FULL_PERCENT: f64 = 90.0;

fn percent(used: u128, size: u128) -> f64 {
    if size == 0 {
        100.0
    } else {
        used as f64 * 100.0 / size as f64
    }
}

fn usage(k: &IndexKey, pool: String, size: u128, free: u128, largest: String) -> PoolUsage {
    let used = size.saturating_sub(free);
    PoolUsage {
        group: k.group.clone(),
        namespace: k.namespace.clone(),
        index: k.name.clone(),
        pool,
        size: size.to_string(),
        used: used.to_string(),
        free: free.to_string(),
        largest_free: largest,
        used_percent: percent(used, size),
    }
}

fn largest_prefix(space: &Space) -> String {
    space.largest_free().map(|b| Net { start: b.start, len: 128 - b.log }.text()).unwrap_or_default()
}

fn largest_ids(space: &Space) -> String {
    space.largest_free().map(|b| format!("{}-{}", b.start, b.end())).unwrap_or_default()
}

/// The index's own prefixes (the net routes of its index-owned claims).
fn index_prefixes(rib: &Rib) -> impl Iterator<Item = (&Net, &Space)> {
    rib.holders()
        .filter(|(n, r)| r.index_entry && !n.is_host() && r.subnet == **n)
        .filter_map(move |(n, _)| rib.space(n).map(|s| (n, s)))
}

/// The use of an IPAM index over its own prefixes, as (used, size).
pub(crate) fn rib_use(rib: &Rib) -> (u128, u128) {
    index_prefixes(rib).fold((0u128, 0u128), |(u, s), (_, space)| {
        (u.saturating_add(space.size().saturating_sub(space.free())), s.saturating_add(space.size()))
    })
}

fn is_reserved(name: &str) -> bool {
    name.ends_with(".rangereservedmin") || name.ends_with(".rangereservedmax")
}

/// The first and last id of an id pool that its reserved ranges leave.
fn usable_bounds(pool: &IdPool) -> (u128, u128) {
    let mut lo = 0;
    let mut hi = pool.max();
    for (name, t) in pool.ranges() {
        if name.ends_with(".rangereservedmin") {
            lo = lo.max(t.space.hi().saturating_add(1));
        }
        if name.ends_with(".rangereservedmax") {
            hi = hi.min(t.space.lo().saturating_sub(1));
        }
    }
    (lo, hi)
}

/// The size of an id pool without its reserved ranges, and its free ids.
pub(crate) fn id_pool_use(pool: &IdPool) -> (u128, u128) {
    // The reserved ranges' tables span exactly their blocks.
    let reserved: u128 = pool.ranges().iter().filter(|(n, _)| is_reserved(n)).map(|(_, t)| t.space.size()).sum();
    (count(0, pool.max()).saturating_sub(reserved), pool.main().space.free())
}

fn pool_usage(k: &IndexKey, pool: &Pool) -> Vec<PoolUsage> {
    let mut out = Vec::new();
    match pool {
        Pool::Ip { rib, .. } => {
            for (net, space) in index_prefixes(rib) {
                out.push(usage(k, net.text(), space.size(), space.free(), largest_prefix(space)));
            }
            for (name, t) in rib.ranges() {
                let what =
                    format!("range {name} ({}-{})", rib::addr_plain(t.space.lo()), rib::addr_plain(t.space.hi()));
                out.push(usage(k, what, t.space.size(), t.space.free(), String::new()));
            }
        }
        Pool::Id { pool, .. } => {
            let (size, free) = id_pool_use(pool);
            let (lo, hi) = usable_bounds(pool);
            out.push(usage(k, format!("ids {lo}-{hi}"), size, free, largest_ids(&pool.main().space)));
            for (name, t) in pool.ranges().iter().filter(|(n, _)| !is_reserved(n)) {
                let what = format!("range {name} ({}-{})", t.space.lo(), t.space.hi());
                out.push(usage(k, what, t.space.size(), t.space.free(), largest_ids(&t.space)));
            }
        }
    }
    out
}

impl Backends {
    /// The use of every pool the request selects, by group, namespace and index.
    pub fn usage(&self, req: &IdsUsageRequest) -> Vec<PoolUsage> {
        self.committed_view(|pools| {
            pools
                .iter()
                .filter(|(k, _)| req.namespace.as_ref().is_none_or(|n| *n == k.namespace))
                .filter(|(k, _)| req.index.as_ref().is_none_or(|i| *i == k.name))
                .flat_map(|(k, p)| pool_usage(k, p))
                .collect()
        })
    }

    /// What the index would hand out next (see [`IdsFreeRequest`]).
    pub fn free(&self, req: &IdsFreeRequest) -> Result<Vec<String>, String> {
        let n = req.count.max(1) as usize;
        self.committed_view(|pools| {
            let backend = req.backend.clone().or_else(|| req.prefix_length.map(|_| "ipam".to_string()));
            let wanted =
                |group: &str| backend.as_deref().is_none_or(|b| group == b || group.split('.').next() == Some(b));
            let found: Vec<(&IndexKey, &Pool)> = pools
                .iter()
                .filter(|(k, _)| k.namespace == req.namespace && k.name == req.index && wanted(&k.group))
                .collect();
            let (_, pool) = match found.as_slice() {
                [one] => *one,
                [] => return Err(format!("no index {} in namespace {}", req.index, req.namespace)),
                _ => {
                    let groups: Vec<&str> = found.iter().map(|(k, _)| k.group.as_str()).collect();
                    return Err(format!(
                        "index {} exists in several backends ({}): say which with --backend",
                        req.index,
                        groups.join(", ")
                    ));
                }
            };
            match pool {
                Pool::Ip { rib, .. } => {
                    if req.range.is_some() {
                        return Err("--range is for id pools; an IPAM range is selected by its claim".into());
                    }
                    let mut out = Vec::new();
                    let parents: Vec<(&Net, &Space)> = if req.selector.is_empty() {
                        index_prefixes(rib).collect()
                    } else {
                        rib.holders()
                            .filter(|(n, r)| {
                                let l = rib::route_labels(n, r);
                                req.selector.iter().all(|(k, v)| l.get(k) == Some(v))
                            })
                            .filter_map(|(n, _)| rib.space(n).map(|s| (n, s)))
                            .collect()
                    };
                    for (net, space) in parents {
                        let want = match req.prefix_length {
                            Some(l) if net.is_v4() => l.saturating_add(96),
                            Some(l) => l,
                            None => 128,
                        };
                        if want <= net.len || want > 128 {
                            continue;
                        }
                        for b in space.next_fits(128 - want, n - out.len()) {
                            out.push(Net { start: b.start, len: want }.text());
                        }
                        if out.len() >= n {
                            break;
                        }
                    }
                    Ok(out)
                }
                Pool::Id { pool, .. } => {
                    if req.prefix_length.is_some() {
                        return Err("--prefix-length is for IPAM indexes".into());
                    }
                    match &req.range {
                        Some(r) => match pool.ranges().get(r) {
                            Some(t) => Ok(t.space.next_lowest(n).iter().map(u128::to_string).collect()),
                            None => Err(format!("index {} has no range {r}", req.index)),
                        },
                        None => Ok(pool.main().space.next_fits(0, n).iter().map(|b| b.start.to_string()).collect()),
                    }
                }
            }
        })
    }
}
