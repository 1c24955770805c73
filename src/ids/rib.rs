//! One IPAM index (reference/kuid.md §3.7–3.8): a routing table of the prefixes, addresses and
//! range blocks its claims hold, IPv4 and IPv6 together (IPv4 mapped into `::ffff:0:0/96`, as
//! kuid's RIB does), plus one address table per range claim.
//!
//! Each prefix route keeps the free space left by the routes inside it ([`Space`]), so a
//! dynamic address or prefix is a best-fit query on its parent, not a listing of the parent's
//! children. The nesting rules, the network expansion (net, gateway, first and last address;
//! none for /31 and /127) and the default gateway follow kuid. Where kuid is loose we are
//! strict, and say so: a status address is reused only when it is free and inside a parent the
//! claim may use, a prefix's owner can be changed only by releasing it, an address laid on a
//! range's last block goes into the range table (kuid dropped it silently).
//!
//! As in [`super::pool`], every change is one of two primitives that journal their inverse.
//!
//! Invariant: pure data: knows claims only as owner identities, nothing of objects or storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::pool::Owner;
use super::space::{aligned_blocks, mask, Space};

/// IPv4 addresses live at `::ffff:a.b.c.d`.
const V4_BASE: u128 = 0xffff << 32;

/// A prefix in the mapped 128-bit space: `start` is masked to `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct Net {
    pub start: u128,
    pub len: u8,
}

impl Net {
    pub fn end(&self) -> u128 {
        self.start | host_mask(self.len)
    }

    pub fn contains(&self, other: &Net) -> bool {
        other.len >= self.len && other.start & !host_mask(self.len) == self.start
    }

    pub fn is_v4(&self) -> bool {
        self.len >= 96 && self.start & !host_mask(96) == V4_BASE
    }

    pub fn is_host(&self) -> bool {
        self.len == 128
    }

    /// The prefix as a user writes it: `10.0.0.0/24`, `2001:db8::/64`.
    pub fn text(&self) -> String {
        let (ip, len) = display(self.start, self.len);
        format!("{ip}/{len}")
    }

    /// kuid's subnet name: the prefix with `/` and `:` replaced by `-` (`10.0.0.0-24`,
    /// `2001-db8---64`).
    pub fn subnet_name(&self) -> String {
        self.text().replace(['/', ':'], "-")
    }
}

/// The host bits of a prefix of length `len` (mapped space).
pub(crate) fn host_mask(len: u8) -> u128 {
    mask(128 - len.min(128))
}

/// An address and a prefix length in the mapped space, for display in the user's family.
fn display(addr: u128, len: u8) -> (IpAddr, u8) {
    if len >= 96 && addr & !host_mask(96) == V4_BASE {
        (IpAddr::V4(Ipv4Addr::from((addr & 0xffff_ffff) as u32)), len - 96)
    } else {
        (IpAddr::V6(Ipv6Addr::from(addr)), len)
    }
}

/// An address with a length (`10.0.0.1/24`) as a user writes it.
pub(crate) fn addr_text(addr: u128, len: u8) -> String {
    let (ip, len) = display(addr, len);
    format!("{ip}/{len}")
}

/// An address without a length (`10.0.0.1`, `2001:db8::1`).
pub(crate) fn addr_plain(addr: u128) -> String {
    display(addr, 128).0.to_string()
}

/// The mapped form of an address.
pub(crate) fn map_addr(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => V4_BASE | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// `10.0.0.1/24` → (address, length) in the mapped space; an address without a length is a
/// host (`/32`, `/128`).
pub(crate) fn parse_cidr(text: &str) -> Result<(u128, u8), String> {
    let text = text.trim();
    if let Some((ip, len)) = text.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| format!("{text:?} is not an IP prefix"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 =
            len.parse().ok().filter(|l| *l <= max).ok_or_else(|| format!("{text:?} has an invalid prefix length"))?;
        Ok((map_addr(ip), if ip.is_ipv4() { len + 96 } else { len }))
    } else {
        let ip: IpAddr = text.parse().map_err(|_| format!("{text:?} is not an IP address"))?;
        Ok((map_addr(ip), 128))
    }
}

/// `a.b.c.d-e.f.g.h` → mapped first and last address, same family.
pub(crate) fn parse_range(text: &str) -> Result<(u128, u128), String> {
    let (a, b) = text.split_once('-').ok_or_else(|| format!("{text:?} is not a range: want FIRST-LAST"))?;
    let a: IpAddr = a.trim().parse().map_err(|_| format!("{text:?}: {a:?} is not an IP address"))?;
    let b: IpAddr = b.trim().parse().map_err(|_| format!("{text:?}: {b:?} is not an IP address"))?;
    if a.is_ipv4() != b.is_ipv4() {
        return Err(format!("{text:?} mixes IPv4 and IPv6"));
    }
    let (a, b) = (map_addr(a), map_addr(b));
    if a > b {
        return Err(format!("{text:?} ends before it starts"));
    }
    Ok((a, b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum PrefixType {
    Network,
    Regular,
}

impl PrefixType {
    pub fn as_str(self) -> &'static str {
        match self {
            PrefixType::Network => "network",
            PrefixType::Regular => "regular",
        }
    }
}

/// kuid's detailed claim types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum IpClaimType {
    StaticPrefix,
    StaticAddress,
    StaticRange,
    DynamicPrefix,
    DynamicAddress,
}

impl IpClaimType {
    pub fn as_str(self) -> &'static str {
        match self {
            IpClaimType::StaticPrefix => "staticPrefix",
            IpClaimType::StaticAddress => "staticAddress",
            IpClaimType::StaticRange => "staticRange",
            IpClaimType::DynamicPrefix => "dynamicPrefix",
            IpClaimType::DynamicAddress => "dynamicAddress",
        }
    }

    /// kuid's summary type: prefix, address or range.
    pub fn summary(self) -> Summary {
        match self {
            IpClaimType::StaticPrefix | IpClaimType::DynamicPrefix => Summary::Prefix,
            IpClaimType::StaticAddress | IpClaimType::DynamicAddress => Summary::Address,
            IpClaimType::StaticRange => Summary::Range,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Summary {
    Prefix,
    Address,
    Range,
}

impl Summary {
    pub fn as_str(self) -> &'static str {
        match self {
            Summary::Prefix => "prefix",
            Summary::Address => "address",
            Summary::Range => "range",
        }
    }
}

/// One route of the RIB and the claim it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Route {
    pub owner: Owner,
    pub claim_type: IpClaimType,
    pub prefix_type: PrefixType,
    /// The user's labels (addresses also carry their parent prefix's).
    pub labels: BTreeMap<String, String>,
    pub gateway: bool,
    /// The claim is one of the index's own prefixes.
    pub index_entry: bool,
    /// The subnet of the claim that made this route (the network's, for its first, last and
    /// gateway routes).
    pub subnet: Net,
}

/// An address handed out inside a range table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RangeAddr {
    pub owner: Owner,
    pub claim_type: IpClaimType,
    pub labels: BTreeMap<String, String>,
}

/// The addresses of one range claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeTable {
    pub space: Space,
    pub addrs: BTreeMap<u128, RangeAddr>,
}

#[derive(Debug, Clone)]
enum Undo {
    Route { net: Net, prev: Option<Route> },
    Addr { range: String, addr: u128, prev: Option<RangeAddr> },
    Table { range: String, prev: Option<(u128, u128)> },
}

/// The inverse of every change since it was created.
#[derive(Debug, Default, Clone)]
pub(crate) struct RibJournal {
    undo: Vec<Undo>,
}

impl RibJournal {
    pub fn len(&self) -> usize {
        self.undo.len()
    }

    /// The routes and range addresses this journal's changes touched.
    pub fn touched(&self) -> (Vec<Net>, Vec<(String, u128)>) {
        let mut routes = Vec::new();
        let mut addrs = Vec::new();
        for u in &self.undo {
            match u {
                Undo::Route { net, .. } => routes.push(*net),
                Undo::Addr { range, addr, .. } => addrs.push((range.clone(), *addr)),
                Undo::Table { .. } => {}
            }
        }
        routes.sort();
        routes.dedup();
        addrs.sort();
        addrs.dedup();
        (routes, addrs)
    }
}

/// Why an IP claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RibError {
    #[error("{what} is already claimed by claim {by}")]
    Owned { what: String, by: String },
    #[error("no prefix of the index holds {what}")]
    NoParent { what: String },
    #[error("{what} cannot be a {kind} inside {parent}, a {parent_kind}")]
    Nesting { what: String, kind: &'static str, parent: String, parent_kind: &'static str },
    #[error("network {what} cannot hold the prefix {child} of claim {by}")]
    NetworkChild { what: String, child: String, by: String },
    #[error("{what} cannot hold {child} of claim {by}: an address or range has no children")]
    HasChildren { what: String, child: String, by: String },
    #[error("range {what} has to fit in one prefix: it spans {a} and {b}")]
    RangeSpans { what: String, a: String, b: String },
    #[error("{what} is already handed out in range {range} to claim {by}")]
    RangeTaken { what: String, range: String, by: String },
    #[error("no free {what} left in {within}")]
    Exhausted { what: String, within: String },
    #[error("no route of the index matches the selector {selector}")]
    NoCandidates { selector: String },
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpGrant {
    /// `status.prefix`, `status.address` or `status.range` as kuid writes it.
    pub value: String,
    /// `status.defaultGateway`, for claims inside a network.
    pub gateway: Option<String>,
}

/// The system labels of a route that selectors may use, with the user's.
pub(crate) fn route_labels(net: &Net, r: &Route) -> BTreeMap<String, String> {
    let mut l = r.labels.clone();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_string(), v);
    };
    put("ipam.be.kuid.dev/ipprefix-type", r.prefix_type.as_str().into());
    put("ipam.be.kuid.dev/claim-summary-type", r.claim_type.summary().as_str().into());
    put("be.kuid.dev/claim-type", r.claim_type.as_str().into());
    put("be.kuid.dev/owner-kind", "IPClaim".into());
    put("be.kuid.dev/claim-name", r.owner.name.clone());
    put("be.kuid.dev/claim-uid", r.owner.uid.clone());
    put("ipam.be.kuid.dev/address-family", if net.is_v4() { "ipv4" } else { "ipv6" }.into());
    put("ipam.be.kuid.dev/subnet", r.subnet.subnet_name());
    put("be.kuid.dev/index-entry", r.index_entry.to_string());
    if r.gateway {
        put("ipam.be.kuid.dev/default-gateway", "true".into());
    }
    l
}

/// A claim's routes and its addresses in range tables.
pub(crate) type Holdings<'a> = (Vec<(Net, &'a Route)>, Vec<(String, u128, &'a RangeAddr)>);

/// One IPAM index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rib {
    /// Routes by (start, length): ascending addresses, parents before their children.
    routes: BTreeMap<Net, Route>,
    /// The free space inside every route that can hold others (all but hosts).
    spaces: HashMap<Net, Space>,
    /// How many routes have each length, so a parent lookup tries only lengths in use.
    lens: BTreeMap<u8, usize>,
    ranges: BTreeMap<String, RangeTable>,
    /// The routes and range addresses of each claim, so a claim finds what it holds without
    /// a scan.
    owned: HashMap<Owner, BTreeSet<Net>>,
    owned_addrs: HashMap<Owner, BTreeSet<(String, u128)>>,
    /// The routes a dynamic claim can take from (prefixes and range blocks), in RIB order.
    holders: BTreeSet<Net>,
}

impl Rib {
    pub fn routes(&self) -> &BTreeMap<Net, Route> {
        &self.routes
    }

    /// The routes that can hold others (prefixes and range blocks), in RIB order: a handful
    /// however many addresses are out.
    pub fn holders(&self) -> impl Iterator<Item = (&Net, &Route)> {
        self.holders.iter().filter_map(|n| self.routes.get_key_value(n))
    }

    pub fn ranges(&self) -> &BTreeMap<String, RangeTable> {
        &self.ranges
    }

    pub fn space(&self, net: &Net) -> Option<&Space> {
        self.spaces.get(net)
    }

    /// The most specific route strictly covering `net`.
    pub fn parent(&self, net: &Net) -> Option<(Net, &Route)> {
        for &len in self.lens.range(..net.len).rev().map(|(l, _)| l) {
            let p = Net { start: net.start & !host_mask(len), len };
            if let Some(r) = self.routes.get(&p) {
                return Some((p, r));
            }
        }
        None
    }

    /// Routes strictly inside `net`.
    fn inside(&self, net: &Net) -> impl Iterator<Item = (&Net, &Route)> {
        let n = *net;
        // A host holds nothing: its range would start past its end.
        let (from, to) = if n.is_host() {
            (Net { start: n.start, len: 128 }, Net { start: n.start, len: 128 })
        } else {
            (Net { start: n.start, len: n.len + 1 }, Net { start: n.end(), len: 128 })
        };
        self.routes.range(from..=to).filter(move |(k, _)| n.contains(k) && **k != n)
    }

    /// The address of `range` at `addr`, if handed out.
    pub fn range_addr(&self, range: &str, addr: u128) -> Option<&RangeAddr> {
        self.ranges.get(range).and_then(|t| t.addrs.get(&addr))
    }

    /// What `owner` holds: its routes and its addresses in range tables.
    pub fn holdings(&self, owner: &Owner) -> Holdings<'_> {
        let (routes, addrs) = self.held(owner);
        let routes = routes.into_iter().filter_map(|n| self.routes.get(&n).map(|r| (n, r))).collect();
        let addrs =
            addrs.into_iter().filter_map(|(name, a)| self.range_addr(&name, a).map(|v| (name.clone(), a, v))).collect();
        (routes, addrs)
    }

    /// Rebuilds a RIB from its persisted routes and range addresses (routes in key order,
    /// parents first); range tables take their bounds from their range routes.
    pub fn restore(routes: Vec<(Net, Route)>, addrs: Vec<(String, u128, RangeAddr)>) -> Rib {
        let mut rib = Rib::default();
        let j = &mut RibJournal::default();
        let mut bounds: BTreeMap<String, (u128, u128)> = BTreeMap::new();
        for (net, route) in routes {
            if route.claim_type.summary() == Summary::Range {
                let b = bounds.entry(route.owner.name.clone()).or_insert((net.start, net.end()));
                b.0 = b.0.min(net.start);
                b.1 = b.1.max(net.end());
            }
            rib.put(j, net, route);
        }
        for (name, b) in bounds {
            rib.set_table(j, &name, Some(b));
        }
        for (range, addr, a) in addrs {
            if let Err(e) = rib.put_addr(j, &range, addr, a) {
                log::warn!("dropping a stored address of range {range}: {e}");
            }
        }
        rib
    }

    // -- primitives -----------------------------------------------------------------------------

    fn put(&mut self, j: &mut RibJournal, net: Net, route: Route) {
        if let Some(prev) = self.routes.get(&net).cloned() {
            // Same place: only what the route says changes.
            self.unindex(&net, &prev);
            self.index(net, &route);
            self.routes.insert(net, route);
            j.undo.push(Undo::Route { net, prev: Some(prev) });
            return;
        }
        if !net.is_host() {
            let mut space = Space::new(net.start, net.end());
            let inside: Vec<Net> = self.inside(&net).map(|(k, _)| *k).collect();
            for c in inside {
                if space.is_free(c.start, c.end()) {
                    let _ = space.take(c.start, c.end());
                }
            }
            self.spaces.insert(net, space);
        }
        if let Some((p, _)) = self.parent(&net) {
            if let Some(ps) = self.spaces.get_mut(&p) {
                let free: Vec<(u128, u128)> = ps
                    .free_runs()
                    .filter(|(s, e)| *e >= net.start && *s <= net.end())
                    .map(|(s, e)| (s.max(net.start), e.min(net.end())))
                    .collect();
                for (s, e) in free {
                    let _ = ps.take(s, e);
                }
            }
        }
        self.index(net, &route);
        self.routes.insert(net, route);
        *self.lens.entry(net.len).or_default() += 1;
        j.undo.push(Undo::Route { net, prev: None });
    }

    fn index(&mut self, net: Net, route: &Route) {
        self.owned.entry(route.owner.clone()).or_default().insert(net);
        let summary = route.claim_type.summary();
        if (!net.is_host() || summary == Summary::Range) && summary != Summary::Address {
            self.holders.insert(net);
        }
    }

    fn unindex(&mut self, net: &Net, route: &Route) {
        if let Some(set) = self.owned.get_mut(&route.owner) {
            set.remove(net);
            if set.is_empty() {
                self.owned.remove(&route.owner);
            }
        }
        self.holders.remove(net);
    }

    fn drop_route(&mut self, j: &mut RibJournal, net: Net) -> Option<Route> {
        let route = self.routes.remove(&net)?;
        self.unindex(&net, &route);
        if let Some(n) = self.lens.get_mut(&net.len) {
            *n -= 1;
            if *n == 0 {
                self.lens.remove(&net.len);
            }
        }
        // What the route held free becomes its parent's; what its children hold stays taken.
        let freed: Vec<(u128, u128)> = match self.spaces.remove(&net) {
            Some(space) => space.free_runs().collect(),
            None => vec![(net.start, net.end())],
        };
        if let Some((p, _)) = self.parent(&net) {
            if let Some(ps) = self.spaces.get_mut(&p) {
                for (s, e) in freed {
                    let _ = ps.give(s, e);
                }
            }
        }
        j.undo.push(Undo::Route { net, prev: Some(route.clone()) });
        Some(route)
    }

    fn put_addr(&mut self, j: &mut RibJournal, range: &str, addr: u128, a: RangeAddr) -> Result<(), RibError> {
        let t = self.ranges.get_mut(range).ok_or_else(|| RibError::NoParent { what: addr_text(addr, 128) })?;
        if let Some(prev) = t.addrs.get(&addr) {
            if prev.owner != a.owner {
                return Err(RibError::RangeTaken {
                    what: addr_text(addr, 128),
                    range: range.into(),
                    by: prev.owner.name.clone(),
                });
            }
            let prev = t.addrs.insert(addr, a);
            j.undo.push(Undo::Addr { range: range.into(), addr, prev });
            return Ok(());
        }
        t.space.take(addr, addr).map_err(|_| RibError::NoParent { what: addr_text(addr, 128) })?;
        self.owned_addrs.entry(a.owner.clone()).or_default().insert((range.to_string(), addr));
        t.addrs.insert(addr, a);
        j.undo.push(Undo::Addr { range: range.into(), addr, prev: None });
        Ok(())
    }

    fn drop_addr(&mut self, j: &mut RibJournal, range: &str, addr: u128) {
        if let Some(t) = self.ranges.get_mut(range) {
            if let Some(prev) = t.addrs.remove(&addr) {
                let _ = t.space.give(addr, addr);
                if let Some(set) = self.owned_addrs.get_mut(&prev.owner) {
                    set.remove(&(range.to_string(), addr));
                    if set.is_empty() {
                        self.owned_addrs.remove(&prev.owner);
                    }
                }
                j.undo.push(Undo::Addr { range: range.into(), addr, prev: Some(prev) });
            }
        }
    }

    fn set_table(&mut self, j: &mut RibJournal, range: &str, bounds: Option<(u128, u128)>) {
        let prev = self.ranges.get(range).map(|t| (t.space.lo(), t.space.hi()));
        if prev == bounds {
            return;
        }
        let old = self.ranges.remove(range);
        if let Some((lo, hi)) = bounds {
            let mut t = RangeTable { space: Space::new(lo, hi), addrs: BTreeMap::new() };
            for (a, v) in old.map(|o| o.addrs).unwrap_or_default() {
                let _ = t.space.take(a, a);
                t.addrs.insert(a, v);
            }
            self.ranges.insert(range.to_string(), t);
        }
        j.undo.push(Undo::Table { range: range.to_string(), prev });
    }

    /// Undoes the journal back to `len` entries.
    pub fn rollback(&mut self, j: &mut RibJournal, len: usize) {
        while j.undo.len() > len {
            let Some(u) = j.undo.pop() else { break };
            let scratch = &mut RibJournal::default();
            match u {
                Undo::Route { net, prev } => {
                    match prev {
                        Some(r) if self.routes.contains_key(&net) => {
                            self.routes.insert(net, r);
                        }
                        Some(r) => self.put(scratch, net, r),
                        None => {
                            self.drop_route(scratch, net);
                        }
                    };
                }
                Undo::Addr { range, addr, prev } => {
                    self.drop_addr(scratch, &range, addr);
                    if let Some(a) = prev {
                        let _ = self.put_addr(scratch, &range, addr, a);
                    }
                }
                Undo::Table { range, prev } => self.set_table(scratch, &range, prev),
            }
        }
    }

    fn atomic<T>(
        &mut self,
        j: &mut RibJournal,
        f: impl FnOnce(&mut Self, &mut RibJournal) -> Result<T, RibError>,
    ) -> Result<T, RibError> {
        let mark = j.len();
        let r = f(self, j);
        if r.is_err() {
            self.rollback(j, mark);
        }
        r
    }

    /// The routes and range addresses `owner` holds.
    fn held(&self, owner: &Owner) -> (Vec<Net>, Vec<(String, u128)>) {
        let routes = self.owned.get(owner).map(|s| s.iter().copied().collect()).unwrap_or_default();
        let addrs = self.owned_addrs.get(owner).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        (routes, addrs)
    }

    /// The default gateway of `subnet`: the address of the route labelled as gateway in it.
    fn gateway_of(&self, subnet: &Net) -> Option<String> {
        self.inside(subnet)
            .chain(self.routes.get_key_value(subnet))
            .find(|(n, r)| r.gateway && r.subnet == *subnet && n.is_host())
            .map(|(n, _)| addr_plain(n.start))
    }

    // -- claims ---------------------------------------------------------------------------------

    /// Releases everything `owner` holds. A prefix takes every route inside it with it, and a
    /// range its addresses (kuid's cascade); the owners that lost something are returned.
    pub fn release(&mut self, j: &mut RibJournal, owner: &Owner) -> Vec<Owner> {
        let (routes, addrs) = self.held(owner);
        let mut orphaned: Vec<Owner> = Vec::new();
        for (range, a) in addrs {
            self.drop_addr(j, &range, a);
        }
        // Children first, so every route leaves its space to a parent that still exists.
        for net in routes.iter().rev() {
            if !net.is_host() {
                let inside: Vec<(Net, Owner)> = self.inside(net).map(|(k, r)| (*k, r.owner.clone())).collect();
                for (c, o) in inside.into_iter().rev() {
                    if o != *owner && !orphaned.contains(&o) {
                        orphaned.push(o);
                    }
                    self.drop_route(j, c);
                }
            }
            self.drop_route(j, *net);
        }
        if let Some(t) = self.ranges.get(&owner.name) {
            let inside: Vec<(u128, Owner)> = t.addrs.iter().map(|(a, v)| (*a, v.owner.clone())).collect();
            for (a, o) in inside {
                self.drop_addr(j, &owner.name, a);
                if !orphaned.contains(&o) {
                    orphaned.push(o);
                }
            }
            self.set_table(j, &owner.name, None);
        }
        orphaned
    }

    /// Releases what `owner` holds except `keep`.
    fn release_except(&mut self, j: &mut RibJournal, owner: &Owner, keep: &[Net]) {
        let (routes, addrs) = self.held(owner);
        for (range, a) in addrs {
            self.drop_addr(j, &range, a);
        }
        for net in routes.into_iter().rev().filter(|n| !keep.contains(n)) {
            self.drop_route(j, net);
        }
    }

    /// The routes a prefix claim consists of: the net route, and for a network (not /31,
    /// /127) its gateway (the address part, when it is neither first nor last), first and last
    /// address.
    fn prefix_routes(addr: u128, len: u8, ptype: PrefixType, gateway: bool) -> Vec<(Net, bool)> {
        let net = Net { start: addr & !host_mask(len), len };
        let mut out = vec![(net, false)];
        if ptype == PrefixType::Network && len < 127 {
            let (first, last) = (net.start, net.end());
            if addr != first && addr != last {
                out.push((Net { start: addr, len: 128 }, gateway));
            }
            out.push((Net { start: first, len: 128 }, false));
            out.push((Net { start: last, len: 128 }, false));
        }
        out
    }

    /// A static prefix (`10.0.0.0/24`; a network may carry its gateway's host part,
    /// `10.0.0.1/24`).
    #[allow(clippy::too_many_arguments)]
    pub fn claim_static_prefix(
        &mut self,
        j: &mut RibJournal,
        owner: &Owner,
        addr: u128,
        len: u8,
        ptype: PrefixType,
        gateway: bool,
        index_entry: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<IpGrant, RibError> {
        self.atomic(j, |rib, j| {
            let net = Net { start: addr & !host_mask(len), len };
            rib.insert_prefix(j, owner, net, addr, ptype, gateway, index_entry, IpClaimType::StaticPrefix, labels)?;
            Ok(IpGrant { value: addr_text(addr, len), gateway: rib.network_gateway(&net, ptype) })
        })
    }

    fn network_gateway(&self, net: &Net, ptype: PrefixType) -> Option<String> {
        (ptype == PrefixType::Network).then(|| self.gateway_of(net)).flatten()
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_prefix(
        &mut self,
        j: &mut RibJournal,
        owner: &Owner,
        net: Net,
        addr: u128,
        ptype: PrefixType,
        gateway: bool,
        index_entry: bool,
        claim_type: IpClaimType,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RibError> {
        if let Some(r) = self.routes.get(&net) {
            if r.owner != *owner {
                return Err(RibError::Owned { what: net.text(), by: r.owner.name.clone() });
            }
        }
        let wanted = Self::prefix_routes(addr, net.len, ptype, gateway);
        let keep: Vec<Net> = wanted.iter().map(|(n, _)| *n).collect();
        self.release_except(j, owner, &keep);
        if let Some((p, pr)) = self.parent(&net) {
            // Nothing nests in an address, a network in neither a range nor a network, and a
            // regular prefix not in a network.
            let bad = matches!(
                (ptype, pr.claim_type.summary(), pr.prefix_type),
                (_, Summary::Address, _) | (PrefixType::Network, Summary::Range, _) | (_, _, PrefixType::Network)
            );
            if bad {
                return Err(RibError::Nesting {
                    what: net.text(),
                    kind: if ptype == PrefixType::Network { "network" } else { "prefix" },
                    parent: p.text(),
                    parent_kind: kind_of(pr),
                });
            }
        }
        if let Some((c, cr)) = self.inside(&net).find(|(_, r)| r.owner != *owner) {
            if ptype == PrefixType::Network && cr.claim_type.summary() == Summary::Prefix {
                return Err(RibError::NetworkChild { what: net.text(), child: c.text(), by: cr.owner.name.clone() });
            }
        }
        for (n, gw) in wanted {
            if let Some(r) = self.routes.get(&n) {
                if r.owner != *owner {
                    return Err(RibError::Owned { what: n.text(), by: r.owner.name.clone() });
                }
            }
            let route = Route {
                owner: owner.clone(),
                claim_type,
                prefix_type: ptype,
                labels: labels.clone(),
                gateway: gw,
                index_entry,
                subnet: net,
            };
            if self.routes.get(&n) != Some(&route) {
                self.put(j, n, route);
            }
        }
        Ok(())
    }

    /// A static address: a host (`10.0.0.1`, `/32`) in a regular prefix or a range, or an
    /// address with its network's length (`10.0.0.2/24`) in a network.
    pub fn claim_static_address(
        &mut self,
        j: &mut RibJournal,
        owner: &Owner,
        addr: u128,
        len: u8,
        gateway: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<IpGrant, RibError> {
        self.atomic(j, |rib, j| {
            let host = Net { start: addr, len: 128 };
            rib.release_except(j, owner, &[host]);
            let what = addr_text(addr, len);
            // The range (if any) whose block holds the address.
            let (p, pr) = match rib.routes.get(&host) {
                Some(r) if r.claim_type.summary() == Summary::Range => (host, r.clone()),
                Some(r) if r.owner != *owner => return Err(RibError::Owned { what, by: r.owner.name.clone() }),
                _ => match rib.parent(&host) {
                    Some((p, r)) => (p, r.clone()),
                    None => return Err(RibError::NoParent { what }),
                },
            };
            if len == 128 {
                return match (pr.claim_type.summary(), pr.prefix_type) {
                    (Summary::Range, _) => {
                        let a = RangeAddr {
                            owner: owner.clone(),
                            claim_type: IpClaimType::StaticAddress,
                            labels: labels.clone(),
                        };
                        rib.put_addr(j, &pr.owner.name, addr, a)?;
                        Ok(IpGrant { value: what, gateway: None })
                    }
                    (_, PrefixType::Network) => Err(RibError::Nesting {
                        what,
                        kind: "host address",
                        parent: p.text(),
                        parent_kind: "network (claim an address with the network's length)",
                    }),
                    (Summary::Address, _) => {
                        Err(RibError::HasChildren { what: p.text(), child: what, by: owner.name.clone() })
                    }
                    _ => {
                        let route = Route {
                            owner: owner.clone(),
                            claim_type: IpClaimType::StaticAddress,
                            prefix_type: PrefixType::Regular,
                            labels: with_parent_labels(labels, &pr),
                            gateway: false,
                            index_entry: false,
                            subnet: host,
                        };
                        if rib.routes.get(&host) != Some(&route) {
                            rib.put(j, host, route);
                        }
                        Ok(IpGrant { value: what, gateway: None })
                    }
                };
            }
            if pr.prefix_type != PrefixType::Network || p.len != len {
                return Err(RibError::Nesting {
                    what,
                    kind: "network address",
                    parent: p.text(),
                    parent_kind: kind_of(&pr),
                });
            }
            let route = Route {
                owner: owner.clone(),
                claim_type: IpClaimType::StaticAddress,
                prefix_type: PrefixType::Network,
                labels: with_parent_labels(labels, &pr),
                gateway,
                index_entry: false,
                subnet: p,
            };
            if rib.routes.get(&host) != Some(&route) {
                rib.put(j, host, route);
            }
            Ok(IpGrant { value: what, gateway: rib.gateway_of(&p) })
        })
    }

    /// A static range `first-last`: its aligned blocks as routes (one common parent, no
    /// children) and an address table of its own.
    pub fn claim_static_range(
        &mut self,
        j: &mut RibJournal,
        owner: &Owner,
        first: u128,
        last: u128,
        text: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<IpGrant, RibError> {
        self.atomic(j, |rib, j| {
            let blocks: Vec<Net> =
                aligned_blocks(first, last).into_iter().map(|b| Net { start: b.start, len: 128 - b.log }).collect();
            let keep = blocks.clone();
            rib.release_except(j, owner, &keep);
            if let Some(t) = rib.ranges.get(&owner.name) {
                if let Some((a, v)) = t.addrs.iter().find(|(a, _)| **a < first || **a > last) {
                    return Err(RibError::RangeTaken {
                        what: addr_text(*a, 128),
                        range: text.into(),
                        by: v.owner.name.clone(),
                    });
                }
            }
            let mut parent: Option<Net> = None;
            for b in &blocks {
                let p = match rib.parent(b) {
                    Some((p, r)) if r.owner != *owner => p,
                    _ => return Err(RibError::NoParent { what: b.text() }),
                };
                match parent {
                    Some(q) if q != p => {
                        return Err(RibError::RangeSpans { what: text.into(), a: q.text(), b: p.text() });
                    }
                    _ => parent = Some(p),
                }
                if let Some((c, cr)) = rib.inside(b).find(|(_, r)| r.owner != *owner) {
                    return Err(RibError::HasChildren {
                        what: text.into(),
                        child: c.text(),
                        by: cr.owner.name.clone(),
                    });
                }
                if let Some(r) = rib.routes.get(b) {
                    if r.owner != *owner {
                        return Err(RibError::Owned { what: b.text(), by: r.owner.name.clone() });
                    }
                }
            }
            for b in blocks {
                let route = Route {
                    owner: owner.clone(),
                    claim_type: IpClaimType::StaticRange,
                    prefix_type: PrefixType::Regular,
                    labels: labels.clone(),
                    gateway: false,
                    index_entry: false,
                    subnet: b,
                };
                if rib.routes.get(&b) != Some(&route) {
                    rib.put(j, b, route);
                }
            }
            rib.set_table(j, &owner.name, Some((first, last)));
            Ok(IpGrant { value: text.to_string(), gateway: None })
        })
    }

    /// The prefix and range routes a selector picks, in RIB order.
    fn candidates<'a>(&'a self, selector: &'a BTreeMap<String, String>) -> impl Iterator<Item = (Net, &'a Route)> + 'a {
        self.holders
            .iter()
            .filter_map(|n| self.routes.get_key_value(n))
            .filter(move |(n, r)| {
                let l = route_labels(n, r);
                selector.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .map(|(n, r)| (*n, r))
    }

    /// A dynamic address from the first route the selector picks that has one free: the
    /// lowest free address of a range, or best fit in a prefix (with the network's length in a
    /// network). The owner keeps what it holds; `prefer` (its status) is reused when free.
    pub fn claim_dynamic_address(
        &mut self,
        j: &mut RibJournal,
        owner: &Owner,
        selector: &BTreeMap<String, String>,
        prefer: Option<(u128, u8)>,
        labels: &BTreeMap<String, String>,
    ) -> Result<IpGrant, RibError> {
        self.atomic(j, |rib, j| {
            // Held already: the route or range address at the status address.
            if let Some((addr, len)) = prefer {
                let host = Net { start: addr, len: 128 };
                if rib.routes.get(&host).is_some_and(|r| r.owner == *owner) {
                    rib.release_except(j, owner, &[host]);
                    let subnet = rib.routes.get(&host).map(|r| r.subnet).unwrap_or(host);
                    return Ok(IpGrant { value: addr_text(addr, len), gateway: rib.gateway_of(&subnet) });
                }
                let in_range = rib.ranges.iter().find(|(_, t)| t.addrs.get(&addr).is_some_and(|a| a.owner == *owner));
                if let Some((name, _)) = in_range {
                    let name = name.clone();
                    let (_, held) = rib.held(owner);
                    for (r, a) in held.into_iter().filter(|(r, a)| !(*r == name && *a == addr)) {
                        rib.drop_addr(j, &r, a);
                    }
                    return Ok(IpGrant { value: addr_text(addr, 128), gateway: None });
                }
            }
            rib.release_except(j, owner, &[]);
            let candidates: Vec<(Net, Route)> = rib.candidates(selector).map(|(n, r)| (n, r.clone())).collect();
            if candidates.is_empty() {
                return Err(RibError::NoCandidates { selector: format!("{selector:?}") });
            }
            for (p, pr) in &candidates {
                let pick = if pr.claim_type.summary() == Summary::Range {
                    let name = &pr.owner.name;
                    let Some(t) = rib.ranges.get(name) else { continue };
                    let wanted = prefer.map(|(a, _)| a).filter(|a| t.space.is_free(*a, *a));
                    match wanted.or_else(|| t.space.lowest_free()) {
                        Some(a) => {
                            let v = RangeAddr {
                                owner: owner.clone(),
                                claim_type: IpClaimType::DynamicAddress,
                                labels: labels.clone(),
                            };
                            let name = name.clone();
                            rib.put_addr(j, &name, a, v)?;
                            return Ok(IpGrant { value: addr_text(a, 128), gateway: None });
                        }
                        None => continue,
                    }
                } else {
                    let Some(space) = rib.spaces.get(p) else { continue };
                    let wanted = prefer
                        .map(|(a, _)| a)
                        .filter(|a| p.contains(&Net { start: *a, len: 128 }) && space.is_free(*a, *a));
                    match wanted.or_else(|| space.best_fit(0).map(|b| b.start)) {
                        Some(a) => a,
                        None => continue,
                    }
                };
                let network = pr.prefix_type == PrefixType::Network;
                let route = Route {
                    owner: owner.clone(),
                    claim_type: IpClaimType::DynamicAddress,
                    prefix_type: pr.prefix_type,
                    labels: with_parent_labels(labels, pr),
                    gateway: false,
                    index_entry: false,
                    subnet: if network { *p } else { Net { start: pick, len: 128 } },
                };
                rib.put(j, Net { start: pick, len: 128 }, route);
                let (value, gateway) =
                    if network { (addr_text(pick, p.len), rib.gateway_of(p)) } else { (addr_text(pick, 128), None) };
                return Ok(IpGrant { value, gateway });
            }
            let within: Vec<String> = candidates.iter().map(|(n, _)| n.text()).collect();
            Err(RibError::Exhausted { what: "address".into(), within: within.join(", ") })
        })
    }

    /// A dynamic prefix of length `len` (mapped) from the first route the selector picks
    /// that has a free block: best fit. The owner keeps its prefix; `prefer` (its status) is
    /// reused when free.
    #[allow(clippy::too_many_arguments)]
    pub fn claim_dynamic_prefix(
        &mut self,
        j: &mut RibJournal,
        owner: &Owner,
        selector: &BTreeMap<String, String>,
        len: u8,
        ptype: PrefixType,
        prefer: Option<u128>,
        labels: &BTreeMap<String, String>,
    ) -> Result<IpGrant, RibError> {
        self.atomic(j, |rib, j| {
            let (held, _) = rib.held(owner);
            let mine = held.into_iter().find(|n| {
                n.len == len && rib.routes.get(n).is_some_and(|r| r.claim_type == IpClaimType::DynamicPrefix)
            });
            let candidates: Vec<(Net, Route)> =
                rib.candidates(selector).filter(|(n, _)| n.len < len).map(|(n, r)| (n, r.clone())).collect();
            let mut pick = mine;
            if pick.is_none() {
                // Release first: a changed claim may get its old space back.
                rib.release_except(j, owner, &[]);
                let preferred = prefer.map(|a| Net { start: a & !host_mask(len), len }).filter(|n| {
                    candidates
                        .iter()
                        .any(|(p, _)| p.contains(n) && rib.spaces.get(p).is_some_and(|s| s.is_free(n.start, n.end())))
                });
                pick = preferred.or_else(|| {
                    candidates.iter().find_map(|(p, _)| {
                        rib.spaces.get(p).and_then(|s| s.best_fit(128 - len)).map(|b| Net { start: b.start, len })
                    })
                });
            }
            let Some(net) = pick else {
                if candidates.is_empty() {
                    return Err(RibError::NoCandidates { selector: format!("{selector:?} with room for a /{len}") });
                }
                let within: Vec<String> = candidates.iter().map(|(n, _)| n.text()).collect();
                let (_, shown) = display(0, len);
                let what = if candidates.first().is_some_and(|(n, _)| n.is_v4()) { len - 96 } else { shown };
                return Err(RibError::Exhausted { what: format!("/{what}"), within: within.join(", ") });
            };
            rib.insert_prefix(j, owner, net, net.start, ptype, false, false, IpClaimType::DynamicPrefix, labels)?;
            Ok(IpGrant { value: net.text(), gateway: rib.network_gateway(&net, ptype) })
        })
    }
}

fn kind_of(r: &Route) -> &'static str {
    match (r.claim_type.summary(), r.prefix_type) {
        (Summary::Address, _) => "address",
        (Summary::Range, _) => "range",
        (_, PrefixType::Network) => "network",
        _ => "regular prefix",
    }
}

/// An address's labels: its parent prefix's user labels, then its own.
fn with_parent_labels(labels: &BTreeMap<String, String>, parent: &Route) -> BTreeMap<String, String> {
    let mut l = parent.labels.clone();
    l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    l
}

#[cfg(test)]
mod tests;
